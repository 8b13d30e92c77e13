//! The consumer: assign partitions, seek, and poll with long-poll fetches.

use super::cluster::Cluster;
use super::error::ClientError;
use crate::record::{BatchHeader, BatchIter, Header, MarkerKind, decode_batch_records, marker_of};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::AbortedTransaction;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Where to start when a partition has no valid position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log start.
    Earliest,
    /// The high watermark.
    Latest,
    /// Fail the poll.
    None,
}

/// Which records a consumer may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Everything below the high watermark.
    ReadUncommitted,
    /// Only committed transactional data, below the last stable offset.
    ReadCommitted,
}

/// Consumer settings. Every limit is named with its unit.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Longest a fetch waits for data, in milliseconds.
    pub fetch_max_wait_ms: i32,
    /// Bytes a fetch waits for.
    pub fetch_min_bytes: i32,
    /// Largest fetch response, in bytes.
    pub fetch_max_bytes: i32,
    /// Largest amount of one partition per fetch, in bytes.
    pub partition_fetch_bytes_max: i32,
    /// Records returned by one poll, at most.
    pub max_poll_records: usize,
    /// Where to start without a valid position.
    pub auto_offset_reset: OffsetReset,
    /// Isolation level.
    pub isolation: Isolation,
    /// Cap on the decompressed size of one batch, in bytes.
    pub batch_decompressed_bytes_max: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            fetch_max_wait_ms: 500,
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            partition_fetch_bytes_max: 1024 * 1024,
            max_poll_records: 500,
            auto_offset_reset: OffsetReset::Earliest,
            isolation: Isolation::ReadUncommitted,
            batch_decompressed_bytes_max: 64 * 1024 * 1024,
        }
    }
}

/// A consumed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp.
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
}

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// A consumer with manually assigned partitions.
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    /// Next offset to fetch per assigned partition; `None` until reset. Records fetched but
    /// not yet returned by `poll` wait in `buffered`.
    positions: BTreeMap<TopicPartition, Option<i64>>,
    buffered: VecDeque<ConsumerRecord>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl Consumer {
    /// A consumer on `cluster` with nothing assigned.
    pub fn new(cluster: Arc<Cluster>, config: ConsumerConfig) -> Self {
        Self {
            cluster,
            config,
            positions: BTreeMap::new(),
            buffered: VecDeque::new(),
        }
    }

    /// Replaces the assignment. Positions of partitions kept are kept; new ones start unset.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) {
        let old = std::mem::take(&mut self.positions);
        for tp in partitions {
            let pos = old.get(&tp).copied().flatten();
            self.positions.insert(tp, pos);
        }
        self.buffered
            .retain(|r| self.positions.contains_key(&(r.topic.clone(), r.partition)));
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    /// Sets the next offset to fetch for `tp`.
    pub fn seek(&mut self, tp: TopicPartition, offset: i64) -> Result<(), ClientError> {
        let pos = self
            .positions
            .get_mut(&tp)
            .ok_or_else(|| ClientError::Invalid(format!("{}-{} is not assigned", tp.0, tp.1)))?;
        *pos = Some(offset);
        self.buffered
            .retain(|r| (r.topic.as_str(), r.partition) != (tp.0.as_str(), tp.1));
        Ok(())
    }

    /// The offset of the next record `poll` will return for `tp`, if known.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        let buffered = self
            .buffered
            .iter()
            .find(|r| r.partition == tp.1 && r.topic == tp.0)
            .map(|r| r.offset);
        buffered.or_else(|| self.positions.get(tp).copied().flatten())
    }

    /// Looks up offsets with ListOffsets: -2 earliest, -1 latest, otherwise by timestamp.
    pub async fn list_offset(
        &self,
        tp: &TopicPartition,
        timestamp: i64,
    ) -> Result<i64, ClientError> {
        let leader = self.cluster.leader(&tp.0, tp.1).await?;
        let conn = self.cluster.node(leader.leader).await?;
        let v = conn.version(ApiKey::ListOffsets)?;
        let part = ListOffsetsPartition::default()
            .with_partition_index(tp.1)
            .with_timestamp(timestamp);
        let topic = ListOffsetsTopic::default()
            .with_name(TopicName(s(&tp.0)))
            .with_partitions(vec![part]);
        let isolation = if self.config.isolation == Isolation::ReadCommitted {
            1
        } else {
            0
        };
        let req = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_isolation_level(isolation)
            .with_topics(vec![topic]);
        let resp: ListOffsetsResponse = conn.send(ApiKey::ListOffsets, v, &req).await?;
        let p = resp
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == tp.1)
            .ok_or_else(|| {
                ClientError::Protocol("ListOffsets answered another partition".into())
            })?;
        if let Some(e) = ClientError::kafka(p.error_code, format!("list offsets {}-{}", tp.0, tp.1))
        {
            if matches!(
                e.code(),
                Some(ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition)
            ) {
                self.cluster.forget(&tp.0).await;
            }
            return Err(e);
        }
        Ok(p.offset)
    }

    async fn reset(&mut self, tp: &TopicPartition) -> Result<(), ClientError> {
        let ts = match self.config.auto_offset_reset {
            OffsetReset::Earliest => -2,
            OffsetReset::Latest => -1,
            OffsetReset::None => {
                return Err(ClientError::Kafka {
                    code: ResponseError::OffsetOutOfRange,
                    context: format!("{}-{} has no valid position", tp.0, tp.1),
                });
            }
        };
        let offset = self.list_offset(tp, ts).await?;
        self.positions.insert(tp.clone(), Some(offset));
        Ok(())
    }

    /// Returns buffered records, or fetches once from every leader (waiting up to `timeout` for
    /// data) and returns what arrived. An empty result means no data arrived in time.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        if self.buffered.is_empty() {
            self.fetch(timeout).await?;
        }
        let n = self.buffered.len().min(self.config.max_poll_records);
        Ok(self.buffered.drain(..n).collect())
    }

    async fn fetch(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let unset: Vec<TopicPartition> = self
            .positions
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in unset {
            self.reset(&tp).await?;
        }
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64, i32)>> = BTreeMap::new();
        for (tp, pos) in &self.positions {
            let info = self.cluster.leader(&tp.0, tp.1).await?;
            by_leader.entry(info.leader).or_default().push((
                tp.clone(),
                pos.expect("reset above"),
                info.leader_epoch,
            ));
        }
        let wait_ms = i32::try_from(timeout.as_millis())
            .unwrap_or(i32::MAX)
            .min(self.config.fetch_max_wait_ms)
            .max(0);
        let mut tasks = tokio::task::JoinSet::new();
        for (leader, parts) in by_leader {
            let cluster = Arc::clone(&self.cluster);
            let cfg = self.config.clone();
            tasks.spawn(async move { fetch_from(&cluster, &cfg, leader, parts, wait_ms).await });
        }
        let mut first_err = None;
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined
                .map_err(|e| ClientError::Protocol(e.to_string()))
                .and_then(|r| r)
            {
                Ok(r) => results.push(r),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        // Apply in leader order so the outcome does not depend on which fetch finished first.
        results.sort_by_key(|(leader, _)| *leader);
        for (_, resp) in results {
            if let Err(e) = self.absorb(resp).await {
                first_err = first_err.or(Some(e));
            }
        }
        match first_err {
            Some(e) if self.buffered.is_empty() => Err(e),
            _ => Ok(()),
        }
    }

    async fn absorb(&mut self, resp: FetchResponse) -> Result<(), ClientError> {
        if let Some(e) = ClientError::kafka(resp.error_code, "fetch") {
            return Err(e);
        }
        let mut first_err = None;
        for t in resp.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let tp = (topic.clone(), p.partition_index);
                let Some(Some(pos)) = self.positions.get(&tp).copied() else {
                    continue;
                };
                if p.error_code != 0 {
                    let code = ResponseError::try_from_code(p.error_code).expect("nonzero");
                    match code {
                        ResponseError::OffsetOutOfRange => {
                            self.positions.insert(tp.clone(), None);
                            if self.config.auto_offset_reset == OffsetReset::None {
                                first_err = first_err.or(ClientError::kafka(
                                    p.error_code,
                                    format!("fetch {topic}-{} at {pos}", p.partition_index),
                                ));
                            }
                        }
                        _ => {
                            self.cluster.forget(&topic).await;
                            first_err = first_err.or(ClientError::kafka(
                                p.error_code,
                                format!("fetch {topic}-{}", p.partition_index),
                            ));
                        }
                    }
                    continue;
                }
                let records = p.records.unwrap_or_default();
                let mut next = pos;
                let mut aborts = AbortFilter::new(
                    self.config.isolation,
                    p.aborted_transactions.as_deref().unwrap_or_default(),
                );
                for item in BatchIter::new(&records) {
                    let batch = match item {
                        Ok((_, bytes)) => records.slice_ref(bytes),
                        Err(e) => {
                            first_err = first_err.or(Some(corrupt(&tp, next, e.to_string())));
                            break;
                        }
                    };
                    match decode_batch_records(&batch, self.config.batch_decompressed_bytes_max) {
                        Ok((h, recs)) => {
                            let keep = aborts.keeps(&h, &batch);
                            for r in recs.into_iter().filter(|r| keep && r.offset >= next) {
                                self.buffered.push_back(ConsumerRecord {
                                    topic: topic.clone(),
                                    partition: p.partition_index,
                                    offset: r.offset,
                                    timestamp: r.timestamp,
                                    key: r.key,
                                    value: r.value,
                                    headers: r.headers,
                                });
                            }
                            next = next.max(h.next_offset());
                        }
                        Err(e) => {
                            first_err = first_err.or(Some(corrupt(&tp, next, e.to_string())));
                            break;
                        }
                    }
                }
                self.positions.insert(tp, Some(next));
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Drops the records of aborted transactions for a read_committed consumer, from the fetch
/// answer's aborted-transactions list and the abort markers in the batches.
struct AbortFilter {
    /// (first offset, producer id), soonest last.
    upcoming: Vec<(i64, i64)>,
    /// Producers whose batches are aborted until their abort marker.
    active: BTreeSet<i64>,
}

impl AbortFilter {
    fn new(isolation: Isolation, listed: &[AbortedTransaction]) -> Self {
        let mut upcoming: Vec<(i64, i64)> = if isolation == Isolation::ReadCommitted {
            listed
                .iter()
                .map(|a| (a.first_offset, a.producer_id.0))
                .collect()
        } else {
            Vec::new()
        };
        upcoming.sort_unstable_by(|a, b| b.cmp(a));
        Self {
            upcoming,
            active: BTreeSet::new(),
        }
    }

    /// Whether the records of the batch `h` (whole bytes `batch`) are to be delivered.
    fn keeps(&mut self, h: &BatchHeader, batch: &[u8]) -> bool {
        while self
            .upcoming
            .last()
            .is_some_and(|(first, _)| *first <= h.last_offset())
        {
            let (_, pid) = self.upcoming.pop().expect("checked");
            self.active.insert(pid);
        }
        if h.is_control() {
            if let Ok(Some(m)) = marker_of(batch)
                && m.kind == MarkerKind::Abort
            {
                self.active.remove(&h.producer_id);
            }
            return false;
        }
        !(h.is_transactional() && self.active.contains(&h.producer_id))
    }
}

fn corrupt(tp: &TopicPartition, offset: i64, reason: String) -> ClientError {
    ClientError::Corrupt {
        topic: tp.0.clone(),
        partition: tp.1,
        offset,
        reason,
    }
}

async fn fetch_from(
    cluster: &Cluster,
    cfg: &ConsumerConfig,
    leader: i32,
    parts: Vec<(TopicPartition, i64, i32)>,
    wait_ms: i32,
) -> Result<(i32, FetchResponse), ClientError> {
    let conn = cluster.node(leader).await?;
    let v = conn.version(ApiKey::Fetch)?;
    let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
    for ((topic, partition), offset, epoch) in parts {
        let mut fp = FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(cfg.partition_fetch_bytes_max);
        if v >= 9 {
            fp = fp.with_current_leader_epoch(epoch);
        }
        topics.entry(topic).or_default().push(fp);
    }
    let topics = topics
        .into_iter()
        .map(|(t, ps)| {
            FetchTopic::default()
                .with_topic(TopicName(s(&t)))
                .with_partitions(ps)
        })
        .collect();
    let isolation = if cfg.isolation == Isolation::ReadCommitted {
        1
    } else {
        0
    };
    let req = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(cfg.fetch_min_bytes)
        .with_max_bytes(cfg.fetch_max_bytes)
        .with_isolation_level(isolation)
        .with_session_epoch(-1)
        .with_topics(topics);
    let resp: FetchResponse = conn.send(ApiKey::Fetch, v, &req).await?;
    Ok((leader, resp))
}

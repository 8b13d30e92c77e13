//! The consumer: assign partitions, seek, and poll with long-poll fetches.
//!
//! Positions are validated against the current leader, as KIP-320 has it: a position remembers
//! the leader epoch of the last batch consumed below it, and after a leader change seen in the
//! metadata, a `NOT_LEADER_OR_FOLLOWER` / `FENCED_LEADER_EPOCH` answer or an
//! `OFFSET_OUT_OF_RANGE` answer, the consumer refreshes its metadata and asks the current leader
//! where that epoch ends (OffsetsForLeaderEpoch; [`position`] has the rules). An end below the
//! position means the log was truncated under the consumer: it goes on from that end. The
//! reset policy applies only once the current leader, the position validated against it,
//! still answers out of range; a former leader that missed the records the consumer read
//! cannot send the consumer back to the start. Fetches and ListOffsets name the leader epoch
//! the metadata shows, so that a former leader refuses them with `FENCED_LEADER_EPOCH`.

mod fetch;
mod position;
mod validate;

use super::cluster::Cluster;
use super::error::ClientError;
use bytes::Bytes;
use fetch::Planned;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use position::{Checked, PartState};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use weir_wire::record::Header;

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

/// A ListOffsets answer.
struct Listed {
    offset: i64,
    /// The epoch the leader gave for the offset, if any.
    epoch: Option<i32>,
    /// The leader epoch (from the metadata) the request was fenced with.
    leader_epoch: i32,
}

/// A consumer with manually assigned partitions.
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    /// Position per assigned partition. Records fetched but not yet returned by `poll` wait in
    /// `buffered`.
    positions: BTreeMap<TopicPartition, PartState>,
    buffered: VecDeque<ConsumerRecord>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn unassigned(tp: &TopicPartition) -> ClientError {
    ClientError::Invalid(format!("{}-{} is not assigned", tp.0, tp.1))
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
            let state = old.get(&tp).copied().unwrap_or_default();
            self.positions.insert(tp, state);
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
        let state = self.positions.get_mut(&tp).ok_or_else(|| unassigned(&tp))?;
        *state = PartState::at(offset, None);
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
        buffered.or_else(|| self.positions.get(tp).and_then(|p| p.offset))
    }

    /// Looks up offsets with ListOffsets: -2 earliest, -1 latest, otherwise by timestamp.
    pub async fn list_offset(
        &self,
        tp: &TopicPartition,
        timestamp: i64,
    ) -> Result<i64, ClientError> {
        self.list_offset_in(tp, timestamp).await.map(|l| l.offset)
    }

    /// ListOffsets, fenced by the leader epoch the metadata shows.
    async fn list_offset_in(
        &self,
        tp: &TopicPartition,
        timestamp: i64,
    ) -> Result<Listed, ClientError> {
        let leader = self.cluster.leader(&tp.0, tp.1).await?;
        let conn = self.cluster.node(leader.leader).await?;
        let v = conn.version(ApiKey::ListOffsets)?;
        let mut part = ListOffsetsPartition::default()
            .with_partition_index(tp.1)
            .with_timestamp(timestamp);
        if v >= 4 {
            part = part.with_current_leader_epoch(leader.leader_epoch);
        }
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
                Some(
                    ResponseError::NotLeaderOrFollower
                        | ResponseError::UnknownTopicOrPartition
                        | ResponseError::FencedLeaderEpoch
                        | ResponseError::UnknownLeaderEpoch
                )
            ) {
                self.cluster.forget(&tp.0).await;
            }
            return Err(e);
        }
        Ok(Listed {
            offset: p.offset,
            epoch: (v >= 4 && p.leader_epoch >= 0).then_some(p.leader_epoch),
            leader_epoch: leader.leader_epoch,
        })
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
        let listed = self.list_offset_in(tp, ts).await?;
        tracing::debug!(topic = %tp.0, partition = tp.1, offset = listed.offset, policy = ?self.config.auto_offset_reset, "position reset");
        let state = self.positions.get_mut(tp).ok_or_else(|| unassigned(tp))?;
        *state = PartState {
            leader_epoch: Some(listed.leader_epoch),
            ..PartState::at(listed.offset, listed.epoch)
        };
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

    /// Validates or resets the position of `tp` as needed, and says where to fetch it from;
    /// `None` while its position awaits validation.
    async fn prepare(&mut self, tp: &TopicPartition) -> Result<Option<Planned>, ClientError> {
        let state = self.state(tp)?;
        if state.offset.is_some() && state.epoch.is_some() && !state.awaiting_validation {
            let info = self.cluster.leader(&tp.0, tp.1).await?;
            if state.leader_changed(info.leader_epoch) {
                tracing::debug!(topic = %tp.0, partition = tp.1, from = ?state.leader_epoch, to = info.leader_epoch, "leader changed; validating the position");
                self.mark_for_validation(tp);
            }
        }
        if self.state(tp)?.awaiting_validation {
            self.validate_position(tp).await?;
        }
        if self.state(tp)?.offset.is_none() {
            self.reset(tp).await?;
        }
        let state = self.state(tp)?;
        let Some(offset) = state.offset.filter(|_| !state.awaiting_validation) else {
            return Ok(None);
        };
        let info = self.cluster.leader(&tp.0, tp.1).await?;
        Ok(Some(Planned {
            tp: tp.clone(),
            leader: info.leader,
            offset,
            leader_epoch: info.leader_epoch,
        }))
    }

    fn state(&self, tp: &TopicPartition) -> Result<PartState, ClientError> {
        self.positions
            .get(tp)
            .copied()
            .ok_or_else(|| unassigned(tp))
    }

    fn mark_for_validation(&mut self, tp: &TopicPartition) {
        if let Some(p) = self.positions.get_mut(tp) {
            p.awaiting_validation = true;
        }
    }

    /// Checks the position of `tp` against the current leader (see [`position`]). On an error
    /// the position still awaits validation, and the next poll tries again.
    async fn validate_position(&mut self, tp: &TopicPartition) -> Result<(), ClientError> {
        let state = self.state(tp)?;
        if state.offset.is_none() {
            return Ok(());
        }
        let answer = validate::validate(&self.cluster, tp, state.epoch).await?;
        let reset_policy = self.config.auto_offset_reset != OffsetReset::None;
        let checked = self
            .positions
            .get_mut(tp)
            .ok_or_else(|| unassigned(tp))?
            .validated(answer, reset_policy);
        let (topic, partition, epoch) = (&tp.0, tp.1, state.epoch);
        match checked {
            Checked::Passed => {}
            Checked::Truncated { from, to } => {
                tracing::info!(%topic, partition, offset = from, ?epoch, to, "truncation detected: the position moves to the first offset known to diverge");
                self.buffered
                    .retain(|r| r.topic != tp.0 || r.partition != tp.1 || r.offset < to);
            }
            Checked::Unknown { from } => {
                tracing::info!(%topic, partition, offset = from, ?epoch, "truncation detected; the leader has no epoch at or before the position's: resetting the position");
            }
            Checked::Refused { from, diverges_at } => {
                tracing::warn!(%topic, partition, offset = from, ?epoch, ?diverges_at, "truncation detected, but no reset policy is set");
                return Err(ClientError::Kafka {
                    code: ResponseError::OffsetOutOfRange,
                    context: format!(
                        "log truncation under {topic}-{partition} at offset {from}; the leader's log diverges at {diverges_at:?}"
                    ),
                });
            }
        }
        Ok(())
    }

    async fn fetch(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let mut first_err = None;
        let mut by_leader: BTreeMap<i32, Vec<Planned>> = BTreeMap::new();
        for tp in self.assignment() {
            match self.prepare(&tp).await {
                Ok(Some(p)) => by_leader.entry(p.leader).or_default().push(p),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let wait_ms = i32::try_from(timeout.as_millis())
            .unwrap_or(i32::MAX)
            .min(self.config.fetch_max_wait_ms)
            .max(0);
        let mut tasks = tokio::task::JoinSet::new();
        for (leader, parts) in by_leader {
            let cluster = Arc::clone(&self.cluster);
            let cfg = self.config.clone();
            tasks.spawn(
                async move { fetch::fetch_from(&cluster, &cfg, leader, parts, wait_ms).await },
            );
        }
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(r) => results.push(r),
                Err(e) => first_err = first_err.or(Some(ClientError::Protocol(e.to_string()))),
            }
        }
        // Apply in leader order so the outcome does not depend on which fetch finished first.
        results.sort_by_key(|(leader, _, _)| *leader);
        for (_, parts, resp) in results {
            let outcome = match resp {
                Ok(resp) => self.absorb(resp, &parts).await,
                Err(e) => {
                    if matches!(
                        e,
                        ClientError::Connection { .. } | ClientError::Timeout { .. }
                    ) {
                        // The leader may be gone: look it up again before the next fetch.
                        let topics: BTreeSet<&str> =
                            parts.iter().map(|p| p.tp.0.as_str()).collect();
                        for t in topics {
                            self.cluster.forget(t).await;
                        }
                    }
                    Err(e)
                }
            };
            if let Err(e) = outcome {
                first_err = first_err.or(Some(e));
            }
        }
        match first_err {
            Some(e) if self.buffered.is_empty() => Err(e),
            _ => Ok(()),
        }
    }

    /// An `OFFSET_OUT_OF_RANGE` answer to `sent`: validate the position first, unless it was
    /// validated against this very leader epoch already, when the reset policy applies.
    fn out_of_range(&mut self, sent: &Planned) -> Option<ClientError> {
        let (tp, pos, leader_epoch) = (&sent.tp, sent.offset, sent.leader_epoch);
        let (topic, partition) = (&tp.0, tp.1);
        if !self.positions.get_mut(tp)?.out_of_range(leader_epoch) {
            tracing::debug!(%topic, partition, offset = pos, leader_epoch, "fetch position out of range; validating it against the current leader");
            return None;
        }
        tracing::info!(%topic, partition, offset = pos, leader_epoch, policy = ?self.config.auto_offset_reset, "fetch position out of range on the current leader; resetting it");
        (self.config.auto_offset_reset == OffsetReset::None).then(|| ClientError::Kafka {
            code: ResponseError::OffsetOutOfRange,
            context: format!("fetch {topic}-{partition} at {pos}"),
        })
    }

    async fn absorb(&mut self, resp: FetchResponse, parts: &[Planned]) -> Result<(), ClientError> {
        if let Some(e) = ClientError::kafka(resp.error_code, "fetch") {
            return Err(e);
        }
        let mut first_err = None;
        for t in resp.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let Some(sent) = parts
                    .iter()
                    .find(|x| x.tp.1 == p.partition_index && x.tp.0 == topic)
                else {
                    continue;
                };
                let Some(state) = self.positions.get(&sent.tp).copied() else {
                    continue;
                };
                if state.offset != Some(sent.offset) || state.awaiting_validation {
                    continue;
                }
                let code = ResponseError::try_from_code(p.error_code);
                match code {
                    None => {}
                    Some(ResponseError::OffsetOutOfRange) => {
                        first_err = first_err.or(self.out_of_range(sent));
                        continue;
                    }
                    Some(code) => {
                        let leader_moved = matches!(
                            code,
                            ResponseError::NotLeaderOrFollower | ResponseError::FencedLeaderEpoch
                        );
                        if leader_moved && state.epoch.is_some() {
                            self.mark_for_validation(&sent.tp);
                        }
                        self.cluster.forget(&topic).await;
                        first_err = first_err.or(Some(ClientError::Kafka {
                            code,
                            context: format!("fetch {topic}-{}", p.partition_index),
                        }));
                        continue;
                    }
                }
                let decoded = fetch::decode(sent, p, &self.config);
                first_err = first_err.or(decoded.error);
                self.buffered.extend(decoded.records);
                if let Some(st) = self.positions.get_mut(&sent.tp) {
                    st.fetched(sent.leader_epoch, decoded.next, decoded.epoch);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

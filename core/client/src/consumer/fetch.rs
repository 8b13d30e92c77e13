//! One Fetch request to one leader, and the decoding of a partition's answer into records.

use super::{ConsumerConfig, ConsumerRecord, Isolation, TopicPartition};
use crate::cluster::Cluster;
use crate::error::ClientError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{AbortedTransaction, PartitionData};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, BTreeSet};
use weir_wire::record::{BatchHeader, BatchIter, MarkerKind, decode_batch_records, marker_of};

/// One partition of a fetch: where, from which leader, in which of its epochs.
#[derive(Clone, Debug)]
pub(super) struct Planned {
    pub tp: TopicPartition,
    pub leader: i32,
    pub offset: i64,
    pub leader_epoch: i32,
}

/// Fetches `parts` from `leader`; returns them with the answer.
pub(super) async fn fetch_from(
    cluster: &Cluster,
    cfg: &ConsumerConfig,
    leader: i32,
    parts: Vec<Planned>,
    wait_ms: i32,
) -> (i32, Vec<Planned>, Result<FetchResponse, ClientError>) {
    let resp = fetch_parts(cluster, cfg, leader, &parts, wait_ms).await;
    (leader, parts, resp)
}

/// One Fetch request, each partition fenced by the leader epoch the metadata shows, so that a
/// former leader answers `FENCED_LEADER_EPOCH` rather than serving.
async fn fetch_parts(
    cluster: &Cluster,
    cfg: &ConsumerConfig,
    leader: i32,
    parts: &[Planned],
    wait_ms: i32,
) -> Result<FetchResponse, ClientError> {
    let conn = cluster.fetch_node(leader).await?;
    let v = conn.version(ApiKey::Fetch)?;
    let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
    for p in parts {
        let mut fp = FetchPartition::default()
            .with_partition(p.tp.1)
            .with_fetch_offset(p.offset)
            .with_partition_max_bytes(cfg.partition_fetch_bytes_max);
        if v >= 9 {
            fp = fp.with_current_leader_epoch(p.leader_epoch);
        }
        topics.entry(p.tp.0.clone()).or_default().push(fp);
    }
    let topics = topics
        .into_iter()
        .map(|(t, ps)| {
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(t)))
                .with_partitions(ps)
        })
        .collect();
    let isolation = if cfg.isolation == Isolation::ReadCommitted {
        1
    } else {
        0
    };
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(cfg.fetch_min_bytes)
        .with_max_bytes(cfg.fetch_max_bytes)
        .with_isolation_level(isolation)
        .with_session_epoch(-1)
        .with_topics(topics);
    conn.send(ApiKey::Fetch, v, &req).await
}

/// The records of one partition's answer.
pub(super) struct Decoded {
    /// The records at or after the fetch position, aborted transactions left out.
    pub records: Vec<ConsumerRecord>,
    /// The offset after the last whole batch.
    pub next: i64,
    /// The leader epoch of the last batch, if any carried one.
    pub epoch: Option<i32>,
    /// What stopped the decoding early.
    pub error: Option<ClientError>,
}

/// Decodes the batches of `data`, the answer to `sent`.
pub(super) fn decode(sent: &Planned, data: PartitionData, cfg: &ConsumerConfig) -> Decoded {
    let tp = &sent.tp;
    let bytes = data.records.unwrap_or_default();
    let mut out = Decoded {
        records: Vec::new(),
        next: sent.offset,
        epoch: None,
        error: None,
    };
    let mut aborts = AbortFilter::new(
        cfg.isolation,
        data.aborted_transactions.as_deref().unwrap_or_default(),
    );
    for item in BatchIter::new(&bytes) {
        let batch = match item {
            Ok((_, b)) => bytes.slice_ref(b),
            Err(e) => {
                out.error = Some(corrupt(tp, out.next, e.to_string()));
                break;
            }
        };
        let (h, recs) = match decode_batch_records(&batch, cfg.batch_decompressed_bytes_max) {
            Ok(d) => d,
            Err(e) => {
                out.error = Some(corrupt(tp, out.next, e.to_string()));
                break;
            }
        };
        let keep = aborts.keeps(&h, &batch);
        let next = out.next;
        out.records.extend(
            recs.into_iter()
                .filter(|r| keep && r.offset >= next)
                .map(|r| ConsumerRecord {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                }),
        );
        if h.next_offset() > out.next {
            out.next = h.next_offset();
            if h.partition_leader_epoch >= 0 {
                out.epoch = Some(h.partition_leader_epoch);
            }
        }
    }
    out
}

fn corrupt(tp: &TopicPartition, offset: i64, reason: String) -> ClientError {
    ClientError::Corrupt {
        topic: tp.0.clone(),
        partition: tp.1,
        offset,
        reason,
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

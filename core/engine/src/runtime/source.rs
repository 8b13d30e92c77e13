//! The broker side of a distributed job's topic source: one subtask's share of a topic's
//! partitions, read under read_committed, with the offsets saved at each barrier and the end
//! markers of bounded input. The typed side (deserializing, event time, watermarks) is the
//! source operator's.

use super::metrics::TaskSample;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_client::{
    ClientError, Cluster, Consumer, ConsumerConfig, ConsumerRecord, Isolation, OffsetReset,
};

/// Longest one poll waits for records.
const POLL_WAIT_MS: u64 = 50;
/// Records one poll hands over, at most: a barrier waits for at most this many.
const POLL_RECORDS_MAX: usize = 200;

/// One partition's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    /// The next offset to read.
    next_offset: i64,
    /// Its end marker was read.
    ended: bool,
}

/// A record, with the partition and offset it was read at.
#[derive(Clone, Debug)]
pub(crate) struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub timestamp: i64,
}

/// What one read found: records, and the partitions whose end marker came.
#[derive(Default)]
pub(crate) struct Found {
    pub records: Vec<Read>,
    pub ended: Vec<i32>,
}

/// A source subtask's reader.
pub(crate) struct BrokerSource {
    consumer: Consumer,
    topic: String,
    progress: BTreeMap<i32, Progress>,
    end_marker: Option<Bytes>,
}

impl BrokerSource {
    /// Reads the partitions `p` of `topic` with `p mod parallelism == subtask`, from
    /// `restored` offsets if given, else from the earliest.
    pub fn new(
        cluster: Arc<Cluster>,
        (topic, partitions): (&str, i32),
        (subtask, parallelism): (u32, u32),
        end_marker: Option<Bytes>,
        restored: Option<&[u8]>,
    ) -> Result<Self, String> {
        let mine: Vec<i32> = (0..partitions)
            .filter(|p| *p as u32 % parallelism == subtask)
            .collect();
        let mut progress: BTreeMap<i32, Progress> = mine
            .iter()
            .map(|p| {
                let fresh = Progress {
                    next_offset: 0,
                    ended: false,
                };
                (*p, fresh)
            })
            .collect();
        if let Some(bytes) = restored {
            let saved: BTreeMap<i32, Progress> =
                serde_json::from_slice(bytes).map_err(|e| format!("source state: {e}"))?;
            if saved.keys().ne(progress.keys()) {
                return Err(format!(
                    "source state holds partitions {:?}, this subtask reads {:?}",
                    saved.keys().collect::<Vec<_>>(),
                    mine
                ));
            }
            progress = saved;
        }
        let mut consumer = Consumer::new(
            cluster,
            ConsumerConfig {
                fetch_max_wait_ms: POLL_WAIT_MS as i32,
                max_poll_records: POLL_RECORDS_MAX,
                auto_offset_reset: OffsetReset::Earliest,
                isolation: Isolation::ReadCommitted,
                ..ConsumerConfig::default()
            },
        );
        consumer.assign(mine.iter().map(|p| (topic.to_string(), *p)));
        for (p, prog) in &progress {
            consumer
                .seek((topic.to_string(), *p), prog.next_offset)
                .map_err(|e| e.to_string())?;
        }
        Ok(Self {
            consumer,
            topic: topic.to_string(),
            progress,
            end_marker,
        })
    }

    /// The partitions this subtask reads.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.progress.keys().copied()
    }

    /// Whether `partition` has reached its end marker.
    pub fn partition_ended(&self, partition: i32) -> bool {
        self.progress.get(&partition).is_some_and(|p| p.ended)
    }

    /// Whether every partition of this subtask has reached its end marker (true at once for a
    /// subtask without partitions).
    pub fn ended(&self) -> bool {
        self.progress.values().all(|p| p.ended)
    }

    /// Reads what is there, waiting briefly.
    pub async fn poll(&mut self) -> Result<Found, ClientError> {
        if self.ended() {
            tokio::time::sleep(Duration::from_millis(POLL_WAIT_MS)).await;
            return Ok(Found::default());
        }
        let records = self
            .consumer
            .poll(Duration::from_millis(POLL_WAIT_MS))
            .await?;
        Ok(self.take(records, None))
    }

    /// Keeps the records this subtask has not read yet (and, in a batch, those before their
    /// partition's end), noting each partition's progress.
    fn take(&mut self, records: Vec<ConsumerRecord>, ends: Option<&BTreeMap<i32, i64>>) -> Found {
        let mut found = Found::default();
        for r in records {
            let Some(prog) = self.progress.get_mut(&r.partition) else {
                continue;
            };
            let past_end =
                ends.is_some_and(|e| e.get(&r.partition).is_none_or(|end| r.offset >= *end));
            if prog.ended || r.offset < prog.next_offset || past_end {
                continue;
            }
            prog.next_offset = r.offset + 1;
            let value = r.value.unwrap_or_default();
            if self.end_marker.as_ref() == Some(&value) {
                prog.ended = true;
                found.ended.push(r.partition);
                continue;
            }
            found.records.push(Read {
                partition: r.partition,
                offset: r.offset,
                key: r.key,
                value,
                timestamp: r.timestamp,
            });
        }
        found
    }

    /// Micro-batch: where each partition of this subtask that has not ended ends in the next
    /// batch: its last stable offset (as a read_committed reader sees it), unless that would
    /// take more than `offsets_max` offsets over all of them. Then the batch stops short,
    /// each partition's share of `offsets_max` in proportion to what it has waiting, so that
    /// a backlog is read in bounded batches rather than all in the first.
    pub async fn plan(&self, offsets_max: u64) -> Result<BTreeMap<i32, i64>, ClientError> {
        let mut spans = BTreeMap::new();
        for (p, prog) in self.progress.iter().filter(|(_, prog)| !prog.ended) {
            let end = self
                .consumer
                .list_offset(&(self.topic.clone(), *p), -1)
                .await?;
            spans.insert(*p, (prog.next_offset, end.max(prog.next_offset)));
        }
        Ok(bounded(&spans, offsets_max))
    }

    /// Micro-batch: starts a batch ending at `ends`, reading each partition on from its saved
    /// position (the reader may have fetched past the last batch's end).
    pub fn start_batch(&mut self, ends: &BTreeMap<i32, i64>) -> Result<(), String> {
        if let Some(p) = ends.keys().find(|p| !self.progress.contains_key(p)) {
            return Err(format!(
                "the batch names partition {p}, which this subtask does not read"
            ));
        }
        for (p, prog) in &self.progress {
            if !prog.ended {
                self.consumer
                    .seek((self.topic.clone(), *p), prog.next_offset)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Micro-batch: reads what is there before the batch's ends, waiting briefly.
    pub async fn poll_batch(&mut self, ends: &BTreeMap<i32, i64>) -> Result<Found, ClientError> {
        let records = self
            .consumer
            .poll(Duration::from_millis(POLL_WAIT_MS))
            .await?;
        Ok(self.take(records, Some(ends)))
    }

    /// Micro-batch: whether every partition has read up to its end (or ended). Once it has,
    /// each position is the end: what lies between (aborted records, transaction markers) was
    /// skipped by the reader.
    pub fn batch_read(&mut self, ends: &BTreeMap<i32, i64>) -> bool {
        let read = self.progress.iter().all(|(p, prog)| {
            let Some(end) = ends.get(p) else {
                return true;
            };
            prog.ended
                || prog.next_offset >= *end
                || self
                    .consumer
                    .position(&(self.topic.clone(), *p))
                    .is_some_and(|at| at >= *end)
        });
        if read {
            for (p, prog) in &mut self.progress {
                if let Some(end) = ends.get(p)
                    && !prog.ended
                {
                    prog.next_offset = prog.next_offset.max(*end);
                }
            }
        }
        read
    }

    /// Kafka Streams model: resumes each partition of `committed` from its offset (the
    /// others from the earliest).
    pub fn resume_from(&mut self, committed: &BTreeMap<i32, i64>) -> Result<(), String> {
        for (p, offset) in committed {
            let Some(prog) = self.progress.get_mut(p) else {
                return Err(format!(
                    "offsets are committed for partition {p}, which this subtask does not read"
                ));
            };
            prog.next_offset = *offset;
            self.consumer
                .seek((self.topic.clone(), *p), *offset)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Kafka Streams model: the offsets to commit. An ended partition's is its end marker's,
    /// so that a restarted subtask reads the marker again and knows the partition ended.
    pub fn commit_offsets(&self) -> BTreeMap<i32, i64> {
        self.progress
            .iter()
            .map(|(p, prog)| {
                let at = if prog.ended {
                    prog.next_offset - 1
                } else {
                    prog.next_offset
                };
                (*p, at)
            })
            .collect()
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The offsets to resume from, for a snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.progress).expect("offsets serialize")
    }

    /// Each partition's next offset, or `None` once it has ended: what the lag probe needs.
    pub fn positions(&self) -> Vec<(i32, Option<i64>)> {
        self.progress
            .iter()
            .map(|(p, prog)| (*p, (!prog.ended).then_some(prog.next_offset)))
            .collect()
    }
}

/// Where a source stands, shared with its lag probe.
pub(crate) type Positions = Arc<Mutex<Vec<(i32, Option<i64>)>>>;

/// Measures a source's consumer lag every `interval_ms` on its own, so that the figure stays
/// current while the source itself waits on backpressure: the records between each partition's
/// position and its end (the last stable offset, under read_committed).
pub(crate) async fn lag_probe(
    cluster: Arc<Cluster>,
    topic: String,
    positions: Positions,
    sample: Arc<Mutex<TaskSample>>,
    interval_ms: u64,
) {
    let consumer = Consumer::new(
        cluster,
        ConsumerConfig {
            isolation: Isolation::ReadCommitted,
            ..ConsumerConfig::default()
        },
    );
    loop {
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        let now: Vec<(i32, Option<i64>)> =
            positions.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut lag = 0u64;
        let mut known = true;
        for (p, next) in now {
            let Some(next) = next else { continue };
            match consumer.list_offset(&(topic.clone(), p), -1).await {
                Ok(end) => lag += u64::try_from(end - next).unwrap_or(0),
                Err(_) => known = false,
            }
        }
        if known {
            sample.lock().unwrap_or_else(|e| e.into_inner()).lag_records = Some(lag);
        }
    }
}

/// Each partition's batch end, from its span (position, last stable offset), brought back so
/// that the batch spans at most `offsets_max` offsets: the floors of shares in proportion to
/// each partition's lag, then what they leave, one partition at a time, so that a batch that
/// stops short holds exactly `offsets_max` and always moves on.
fn bounded(spans: &BTreeMap<i32, (i64, i64)>, offsets_max: u64) -> BTreeMap<i32, i64> {
    assert!(offsets_max > 0, "a batch must be able to read something");
    let lag = |(from, end): (i64, i64)| -> u64 {
        u64::try_from(end - from).expect("an end is never before its position")
    };
    let total: u64 = spans.values().map(|s| lag(*s)).sum();
    if total <= offsets_max {
        return spans.iter().map(|(p, (_, end))| (*p, *end)).collect();
    }
    let mut shares: BTreeMap<i32, u64> = spans
        .iter()
        .map(|(p, s)| {
            let share = u128::from(lag(*s)) * u128::from(offsets_max) / u128::from(total);
            (
                *p,
                u64::try_from(share).expect("a share is at most its lag"),
            )
        })
        .collect();
    let mut left = offsets_max - shares.values().sum::<u64>();
    for (p, share) in &mut shares {
        let more = (lag(spans[p]) - *share).min(left);
        *share += more;
        left -= more;
    }
    assert_eq!(left, 0, "the lags add up to more than the bound");
    shares
        .into_iter()
        .map(|(p, share)| {
            let from = spans[&p].0;
            (
                p,
                from + i64::try_from(share).expect("a share fits an offset"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::bounded;
    use std::collections::BTreeMap;

    fn spans(s: &[(i32, i64, i64)]) -> BTreeMap<i32, (i64, i64)> {
        s.iter().map(|(p, from, end)| (*p, (*from, *end))).collect()
    }

    #[test]
    fn a_batch_within_the_bound_reads_to_the_ends() {
        let s = spans(&[(0, 10, 20), (1, 0, 5)]);
        assert_eq!(bounded(&s, 15), BTreeMap::from([(0, 20), (1, 5)]));
    }

    #[test]
    fn a_backlog_is_cut_in_proportion_to_each_partitions_lag() {
        // Lags 300, 100 and 0 against a bound of 100: shares 75, 25 and 0.
        let s = spans(&[(0, 1_000, 1_300), (1, 0, 100), (2, 7, 7)]);
        assert_eq!(
            bounded(&s, 100),
            BTreeMap::from([(0, 1_075), (1, 25), (2, 7)])
        );
    }

    #[test]
    fn what_the_floors_leave_still_moves_the_batch_on() {
        // Three partitions with a lag of 10 each and a bound of 2: every floor is 0.
        let s = spans(&[(0, 0, 10), (1, 0, 10), (2, 0, 10)]);
        let ends = bounded(&s, 2);
        let read: i64 = ends.values().sum();
        assert_eq!(read, 2);
        assert!(ends.values().all(|e| (0..=10).contains(e)));
    }
}

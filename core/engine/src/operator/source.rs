//! Sources: where records enter a job. A source subtask reads its splits (a topic's
//! partitions, or its share of values the job holds), turns each input into a typed record
//! with an event time, and puts it on its port, followed by the watermark, so that where a
//! record falls relative to the watermark depends only on the order it was read in.

use super::tuples::Tuples;
use super::{AnyPort, Build, DropCounters, DropReason, OperatorMutation, Outputs};
use crate::element::{Element, Timestamp};
use crate::port::PortRef;
use crate::runtime::source::{BrokerSource, Found, Read};
use crate::state::{StateError, decode, encode};
use crate::tag::SidePorts;
use crate::watermark::{SourceTime, SplitWatermarks, WatermarkStrategy};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_client::{ClientError, Cluster};
use weir_seams::clock::Clock;

/// A boxed future borrowed from its owner.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Values a collection source hands over per poll, at most.
const COLLECTION_POLL_VALUES_MAX: usize = 200;
/// How long a source that has nothing more to read waits per poll.
const ENDED_POLL_WAIT_MS: u64 = 50;

/// One input record, as a source's deserializer sees it.
#[derive(Clone, Copy, Debug)]
pub struct SourceInput<'a> {
    /// The record's key.
    pub key: Option<&'a [u8]>,
    /// The record's value.
    pub value: &'a [u8],
    /// The record's timestamp.
    pub timestamp: Option<Timestamp>,
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// An input a source could not deserialize, as its dead-letter side output carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Vec<u8>,
    /// Why it did not deserialize.
    pub error: String,
}

/// Storm model: a record a source emitted as the root of a tuple tree.
pub(crate) struct Rooted {
    /// The tree's root and the record's tuple's edge in it.
    pub root: (u64, u64),
    /// The record, to emit again if the tree times out.
    pub read: Read,
}

/// Turns an input record into a value, or says why it cannot.
pub(crate) type Deserializer<T> = Rc<dyn Fn(&SourceInput<'_>) -> Result<T, String>>;

/// Builds one source subtask's reader.
pub(crate) trait SourceFactory {
    /// Makes the reader of `b`'s subtask and its output ports.
    fn create(&self, b: &mut Build<'_>) -> Result<(Box<dyn SourceReader>, Outputs), String>;
}

/// One source subtask, as the task drives it.
pub(crate) trait SourceReader {
    /// Connects: a topic source learns its partitions and seeks to its positions.
    fn open<'a>(
        &'a mut self,
        cluster: Option<&'a Arc<Cluster>>,
    ) -> BoxFuture<'a, Result<(), ClientError>>;
    /// Reads what is there, waiting briefly, and puts it on the port; returns the records read.
    fn poll(&mut self) -> BoxFuture<'_, Result<usize, ClientError>>;
    /// Where it stands, for a checkpoint.
    fn snapshot(&self) -> Result<Vec<u8>, StateError>;
    /// Whether every split has ended.
    fn ended(&self) -> bool;
    /// The topic it reads, if it reads one.
    fn topic(&self) -> Option<&str>;
    /// Each split's next offset, or `None` once it ended (for the lag probe).
    fn positions(&self) -> Vec<(i32, Option<i64>)>;
    /// Its watermarks, for the models that do not let them follow the records.
    fn watermarks(&mut self) -> &mut dyn WatermarkControl;
    /// Micro-batch: where each split that has not ended ends in the next batch, taking at
    /// most `offsets_max` offsets over all of them.
    fn plan(&self, offsets_max: u64) -> BoxFuture<'_, Result<BTreeMap<i32, i64>, ClientError>>;
    /// Micro-batch: starts a batch ending at `ends`.
    fn start_batch(&mut self, ends: &BTreeMap<i32, i64>) -> Result<(), String>;
    /// Micro-batch: reads what is there before the batch's ends.
    fn poll_batch<'a>(
        &'a mut self,
        ends: &'a BTreeMap<i32, i64>,
    ) -> BoxFuture<'a, Result<usize, ClientError>>;
    /// Micro-batch: whether every split has read up to its end.
    fn batch_read(&mut self, ends: &BTreeMap<i32, i64>) -> bool;
    /// Kafka Streams model: resumes each split from a committed offset.
    fn resume_from(&mut self, committed: &BTreeMap<i32, i64>) -> Result<(), String>;
    /// Kafka Streams model: the offsets to commit.
    fn commit_offsets(&self) -> BTreeMap<i32, i64>;
    /// Storm model: the records emitted as roots since the last call.
    fn take_rooted(&mut self) -> Vec<Rooted> {
        Vec::new()
    }
    /// Storm model: emits `read` again, as the root of a new tree.
    fn replay(&mut self, read: Read) -> Result<(), String> {
        let _ = read;
        Err("this source does not replay records".into())
    }
}

/// How the micro-batch and Kafka Streams models drive a source's watermarks.
pub(crate) trait WatermarkControl {
    /// From now on, watermarks wait for [`WatermarkControl::release`] or
    /// [`WatermarkControl::put`].
    fn hold(&mut self);
    /// Kafka Streams model: puts watermark `w` on the port (stream time less the grace).
    fn put(&mut self, w: Timestamp);
    /// The largest event time read on any split.
    fn max_timestamp(&self) -> Option<Timestamp>;
    /// Micro-batch: puts the watermark as of everything read so far on the port.
    fn release(&mut self);
}

/// A source's watermarks, as its reader emits them.
struct Marks<T> {
    strategy: WatermarkStrategy<T>,
    splits: SplitWatermarks,
    port: PortRef<T>,
    clock: Clock,
    held: bool,
}

impl<T: Clone + 'static> Marks<T> {
    /// Notes a record of `split` and puts it on the port, then the watermark.
    fn record(&mut self, split: u32, value: T, source_ts: Option<Timestamp>) {
        let ts = self.strategy.timestamp(&value, source_ts);
        self.splits.on_record(split, ts, self.clock.now_ms());
        self.port.record(value, ts);
        self.emit(false);
    }

    /// Puts what the splits say about time on the port: after each record, and after each
    /// read (when idleness is checked too).
    fn emit(&mut self, check_idle: bool) {
        if check_idle {
            self.splits.check_idle(self.clock.now_ms());
        }
        if self.held {
            return;
        }
        self.release();
    }
}

impl<T: Clone + 'static> WatermarkControl for Marks<T> {
    fn hold(&mut self) {
        self.held = true;
    }

    fn put(&mut self, w: Timestamp) {
        self.port.emit(Element::Watermark(w));
    }

    fn max_timestamp(&self) -> Option<Timestamp> {
        self.splits.max_timestamps().into_values().flatten().max()
    }

    fn release(&mut self) {
        match self.splits.current() {
            SourceTime::Watermark(w) => self.port.emit(Element::Watermark(w)),
            SourceTime::Idle => self.port.emit(Element::Idle),
            SourceTime::Nothing => {}
        }
    }
}

/// What a topic source saves: its offsets and its splits' largest event times.
#[derive(Serialize, Deserialize)]
struct TopicSnapshot {
    offsets: Vec<u8>,
    max_ts: BTreeMap<u32, Option<Timestamp>>,
}

/// Reads a topic.
pub(crate) struct TopicSourceFactory<T> {
    pub topic: String,
    pub deserializer: Deserializer<T>,
    pub strategy: WatermarkStrategy<T>,
    pub end_marker: Option<Bytes>,
    /// The side output that takes inputs that do not deserialize, if any.
    pub dead_letters: Option<&'static str>,
}

struct TopicReader<T> {
    topic: String,
    subtask: (u32, u32),
    restored: Option<TopicSnapshot>,
    end_marker: Option<Bytes>,
    deserializer: Deserializer<T>,
    raw: Option<BrokerSource>,
    marks: Marks<T>,
    dead: Option<PortRef<DeadLetter>>,
    drops: DropCounters,
    take_max: bool,
    /// Storm model: the subtask's tuple trees, and the roots emitted since they were taken.
    tuples: Option<(Tuples, Vec<Rooted>)>,
}

impl<T: Clone + 'static> SourceFactory for TopicSourceFactory<T> {
    fn create(&self, b: &mut Build<'_>) -> Result<(Box<dyn SourceReader>, Outputs), String> {
        let restored = b
            .restored
            .map(decode::<TopicSnapshot>)
            .transpose()
            .map_err(|e| format!("restore {}: {e}", b.uid))?;
        let port = PortRef::new();
        let sides = SidePorts::default();
        let take_max = b.mutated(OperatorMutation::MaxWatermark);
        let reader = TopicReader {
            topic: self.topic.clone(),
            subtask: (b.subtask, b.parallelism),
            restored,
            end_marker: self.end_marker.clone(),
            deserializer: Rc::clone(&self.deserializer),
            raw: None,
            marks: Marks {
                strategy: self.strategy.clone(),
                splits: SplitWatermarks::new(&self.strategy, &[], b.clock.now_ms(), take_max),
                port: port.clone(),
                clock: b.clock,
                held: false,
            },
            dead: self.dead_letters.map(|name| sides.port_named(name)),
            drops: b.drops.clone(),
            take_max,
            tuples: b.tuples.clone().map(|t| (t, Vec::new())),
        };
        Ok((
            Box::new(reader),
            Outputs {
                main: Box::new(port),
                sides,
            },
        ))
    }
}

impl<T: Clone + 'static> TopicReader<T> {
    fn raw(&self) -> &BrokerSource {
        self.raw
            .as_ref()
            .expect("a topic source is opened before it is read")
    }

    fn raw_mut(&mut self) -> &mut BrokerSource {
        self.raw
            .as_mut()
            .expect("a topic source is opened before it is read")
    }

    /// Puts what one read found on the port; under the Storm model, each record as the root
    /// of a tree.
    fn push(&mut self, found: Found) -> usize {
        let n = found.records.len();
        for r in found.records {
            self.push_rooted(r);
        }
        for p in found.ended {
            self.marks.splits.end(p as u32);
        }
        self.marks.emit(true);
        n
    }

    fn push_rooted(&mut self, r: Read) {
        let Some((tuples, rooted)) = &mut self.tuples else {
            return self.push_one(r);
        };
        let tuples = tuples.clone();
        let root = tuples.root();
        rooted.push(Rooted {
            root,
            read: r.clone(),
        });
        tuples.begin(vec![root]);
        self.push_one(r);
        tuples.end();
    }

    fn push_one(&mut self, r: Read) {
        {
            let input = SourceInput {
                key: r.key.as_deref(),
                value: &r.value,
                timestamp: Some(r.timestamp),
                partition: r.partition,
                offset: r.offset,
            };
            match (self.deserializer)(&input) {
                Ok(value) => self
                    .marks
                    .record(r.partition as u32, value, Some(r.timestamp)),
                Err(error) => {
                    self.drops.add(DropReason::Unparseable);
                    if let Some(dead) = &self.dead {
                        let letter = DeadLetter {
                            partition: r.partition,
                            offset: r.offset,
                            key: r.key.as_ref().map(|k| k.to_vec()),
                            value: r.value.to_vec(),
                            error,
                        };
                        dead.record(letter, Some(r.timestamp));
                    }
                }
            }
        }
    }
}

impl<T: Clone + 'static> SourceReader for TopicReader<T> {
    fn open<'a>(
        &'a mut self,
        cluster: Option<&'a Arc<Cluster>>,
    ) -> BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(async move {
            let Some(cluster) = cluster else {
                return Err(ClientError::Invalid(format!(
                    "a source of topic {} needs brokers, and the job has no bootstrap addresses",
                    self.topic
                )));
            };
            let partitions = cluster.partitions(&self.topic).await?;
            if partitions.is_empty() {
                return Err(ClientError::Kafka {
                    code: ResponseError::UnknownTopicOrPartition,
                    context: format!("topic {} has no partitions yet", self.topic),
                });
            }
            let count = partitions.len() as i32;
            let offsets = self.restored.as_ref().map(|s| s.offsets.as_slice());
            let raw = BrokerSource::new(
                Arc::clone(cluster),
                (&self.topic, count),
                self.subtask,
                self.end_marker.clone(),
                offsets,
            )
            .map_err(ClientError::Invalid)?;
            let saved = self.restored.as_ref().map(|s| &s.max_ts);
            let splits: Vec<(u32, Option<Timestamp>)> = raw
                .partitions()
                .map(|p| {
                    (
                        p as u32,
                        saved.and_then(|m| m.get(&(p as u32)).copied().flatten()),
                    )
                })
                .collect();
            let now = self.marks.clock.now_ms();
            self.marks.splits =
                SplitWatermarks::new(&self.marks.strategy, &splits, now, self.take_max);
            for p in raw.partitions().filter(|p| raw.partition_ended(*p)) {
                self.marks.splits.end(p as u32);
            }
            self.raw = Some(raw);
            Ok(())
        })
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<usize, ClientError>> {
        Box::pin(async move {
            let found = self.raw_mut().poll().await?;
            Ok(self.push(found))
        })
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        encode(&TopicSnapshot {
            offsets: self.raw().snapshot(),
            max_ts: self.marks.splits.max_timestamps(),
        })
    }

    fn ended(&self) -> bool {
        self.raw().ended()
    }

    fn topic(&self) -> Option<&str> {
        Some(&self.topic)
    }

    fn positions(&self) -> Vec<(i32, Option<i64>)> {
        self.raw().positions()
    }

    fn watermarks(&mut self) -> &mut dyn WatermarkControl {
        &mut self.marks
    }

    fn plan(&self, offsets_max: u64) -> BoxFuture<'_, Result<BTreeMap<i32, i64>, ClientError>> {
        Box::pin(self.raw().plan(offsets_max))
    }

    fn start_batch(&mut self, ends: &BTreeMap<i32, i64>) -> Result<(), String> {
        self.raw_mut().start_batch(ends)
    }

    fn poll_batch<'a>(
        &'a mut self,
        ends: &'a BTreeMap<i32, i64>,
    ) -> BoxFuture<'a, Result<usize, ClientError>> {
        Box::pin(async move {
            let found = self.raw_mut().poll_batch(ends).await?;
            Ok(self.push(found))
        })
    }

    fn batch_read(&mut self, ends: &BTreeMap<i32, i64>) -> bool {
        self.raw_mut().batch_read(ends)
    }

    fn resume_from(&mut self, committed: &BTreeMap<i32, i64>) -> Result<(), String> {
        self.raw_mut().resume_from(committed)
    }

    fn commit_offsets(&self) -> BTreeMap<i32, i64> {
        self.raw().commit_offsets()
    }

    fn take_rooted(&mut self) -> Vec<Rooted> {
        self.tuples
            .as_mut()
            .map(|(_, rooted)| std::mem::take(rooted))
            .unwrap_or_default()
    }

    fn replay(&mut self, read: Read) -> Result<(), String> {
        self.push_rooted(read);
        self.marks.emit(false);
        Ok(())
    }
}

/// Reads values the job holds. Without splits, subtask `s` of `p` takes every value whose index
/// is `s` mod `p`, in order, as its one split `s`. With them, value `i` is on split
/// `splits[i]`, and subtask `s` reads, in order, the values of the splits `s` mod `p`, each
/// split with its own watermark, as a topic's partitions would be read.
pub(crate) struct CollectionSourceFactory<T> {
    pub values: Rc<Vec<T>>,
    /// Every split, and the split of each value.
    pub splits: Option<(Vec<u32>, Rc<Vec<u32>>)>,
    pub strategy: WatermarkStrategy<T>,
}

struct CollectionReader<T> {
    values: Rc<Vec<T>>,
    /// This subtask's values (indexes into `values`) and the split of each.
    mine: Vec<(usize, u32)>,
    /// This subtask's splits.
    own: Vec<u32>,
    next: usize,
    marks: Marks<T>,
    ended_marked: bool,
}

/// What a collection source saves.
#[derive(Serialize, Deserialize)]
struct CollectionSnapshot {
    next: usize,
    max_ts: BTreeMap<u32, Option<Timestamp>>,
}

impl<T: Clone + 'static> SourceFactory for CollectionSourceFactory<T> {
    fn create(&self, b: &mut Build<'_>) -> Result<(Box<dyn SourceReader>, Outputs), String> {
        let restored = b
            .restored
            .map(decode::<CollectionSnapshot>)
            .transpose()
            .map_err(|e| format!("restore {}: {e}", b.uid))?;
        let split_of = |i: usize| match &self.splits {
            Some((_, of)) => of[i],
            None => b.subtask,
        };
        let owner = |i: usize| match &self.splits {
            Some((_, of)) => of[i] % b.parallelism,
            None => i as u32 % b.parallelism,
        };
        let mine: Vec<(usize, u32)> = (0..self.values.len())
            .filter(|i| owner(*i) == b.subtask)
            .map(|i| (i, split_of(i)))
            .collect();
        let own: Vec<u32> = match &self.splits {
            Some((all, _)) => all
                .iter()
                .copied()
                .filter(|s| s % b.parallelism == b.subtask)
                .collect(),
            None => vec![b.subtask],
        };
        let next = restored.as_ref().map_or(0, |r| r.next);
        if next > mine.len() {
            return Err(format!(
                "restore {}: position {next} is past the {} values of this subtask",
                b.uid,
                mine.len()
            ));
        }
        let port = PortRef::new();
        let saved = restored.map(|r| r.max_ts).unwrap_or_default();
        let marks: Vec<(u32, Option<Timestamp>)> = own
            .iter()
            .map(|s| (*s, saved.get(s).copied().flatten()))
            .collect();
        let splits = SplitWatermarks::new(
            &self.strategy,
            &marks,
            b.clock.now_ms(),
            b.mutated(OperatorMutation::MaxWatermark),
        );
        let reader = CollectionReader {
            values: Rc::clone(&self.values),
            mine,
            own,
            next,
            marks: Marks {
                strategy: self.strategy.clone(),
                splits,
                port: port.clone(),
                clock: b.clock,
                held: false,
            },
            ended_marked: false,
        };
        Ok((
            Box::new(reader),
            Outputs {
                main: Box::new(port) as AnyPort,
                sides: SidePorts::default(),
            },
        ))
    }
}

impl<T: Clone + 'static> CollectionReader<T> {
    /// Puts values up to index `end` of this subtask's share on the port, a poll's worth.
    fn read_to(&mut self, end: usize) -> usize {
        let upto = end.min(self.next + COLLECTION_POLL_VALUES_MAX);
        let n = upto.saturating_sub(self.next);
        while self.next < upto {
            let (i, split) = self.mine[self.next];
            self.next += 1;
            self.marks.record(split, self.values[i].clone(), None);
        }
        if self.next >= self.mine.len() && !self.ended_marked {
            self.ended_marked = true;
            for s in &self.own {
                self.marks.splits.end(*s);
            }
        }
        self.marks.emit(true);
        n
    }
}

impl<T: Clone + 'static> SourceReader for CollectionReader<T> {
    fn open<'a>(
        &'a mut self,
        _cluster: Option<&'a Arc<Cluster>>,
    ) -> BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(async { Ok(()) })
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<usize, ClientError>> {
        Box::pin(async move {
            if self.ended() {
                tokio::time::sleep(Duration::from_millis(ENDED_POLL_WAIT_MS)).await;
            }
            Ok(self.read_to(self.mine.len()))
        })
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        encode(&CollectionSnapshot {
            next: self.next,
            max_ts: self.marks.splits.max_timestamps(),
        })
    }

    fn ended(&self) -> bool {
        self.ended_marked
    }

    fn topic(&self) -> Option<&str> {
        None
    }

    fn positions(&self) -> Vec<(i32, Option<i64>)> {
        vec![(0, (!self.ended()).then_some(self.next as i64))]
    }

    fn watermarks(&mut self) -> &mut dyn WatermarkControl {
        &mut self.marks
    }

    fn plan(&self, offsets_max: u64) -> BoxFuture<'_, Result<BTreeMap<i32, i64>, ClientError>> {
        let end = (self.next as u64)
            .saturating_add(offsets_max)
            .min(self.mine.len() as u64);
        Box::pin(async move { Ok(BTreeMap::from([(0, end as i64)])) })
    }

    fn start_batch(&mut self, ends: &BTreeMap<i32, i64>) -> Result<(), String> {
        match ends.get(&0) {
            Some(end) if (*end as usize) < self.next => Err(format!(
                "the batch ends at {end}, before this subtask's position {}",
                self.next
            )),
            _ => Ok(()),
        }
    }

    fn poll_batch<'a>(
        &'a mut self,
        ends: &'a BTreeMap<i32, i64>,
    ) -> BoxFuture<'a, Result<usize, ClientError>> {
        let end = ends.get(&0).map_or(self.next, |e| *e as usize);
        Box::pin(async move { Ok(self.read_to(end.min(self.mine.len()))) })
    }

    fn batch_read(&mut self, ends: &BTreeMap<i32, i64>) -> bool {
        ends.get(&0).is_none_or(|e| self.next as i64 >= *e)
    }

    fn resume_from(&mut self, _committed: &BTreeMap<i32, i64>) -> Result<(), String> {
        Err("a collection source has no committed offsets to resume from".into())
    }

    fn commit_offsets(&self) -> BTreeMap<i32, i64> {
        BTreeMap::new()
    }
}

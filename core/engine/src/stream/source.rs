//! Sources: where records enter a job. A source has splits (partitions), and reports its
//! position so that a snapshot can resume it.

use super::state::{decode, encode};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use weir_client::{ClientError, Cluster, Consumer, ConsumerConfig, ConsumerRecord};

/// A boxed future borrowed from its owner.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A record read by a source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceRecord<T> {
    /// The split it came from.
    pub split: u32,
    /// The value.
    pub value: T,
    /// The source's timestamp for it, if any.
    pub timestamp: Option<i64>,
}

/// What one poll of a source found.
#[derive(Debug)]
pub enum SourcePoll<T> {
    /// Records, in the order read.
    Records(Vec<SourceRecord<T>>),
    /// Nothing yet.
    Idle,
    /// No more records, ever.
    End,
}

/// Why a source failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// The broker client failed with an error retrying cannot fix.
    #[error("source: {0}")]
    Client(#[from] ClientError),
    /// A saved position could not be restored.
    #[error("source position: {0}")]
    Position(String),
}

/// A source of records of type `T`.
pub trait Source<T> {
    /// The splits the source reads.
    fn splits(&self) -> Vec<u32>;
    /// Reads what is available, waiting a bounded time for it.
    fn poll(&mut self) -> BoxFuture<'_, Result<SourcePoll<T>, SourceError>>;
    /// Where the source is, for a snapshot.
    fn position(&self) -> Vec<u8>;
    /// Resumes from a snapshot's position.
    fn restore_position(&mut self, bytes: &[u8]) -> Result<(), SourceError>;
}

/// Records held in memory, read in order, a batch at a time: for tests and benches.
pub struct BoundedSource<T> {
    items: Vec<SourceRecord<T>>,
    next: usize,
    batch: usize,
    splits: Vec<u32>,
}

impl<T: Clone> BoundedSource<T> {
    /// The values, in order, on split 0 without timestamps.
    pub fn new(values: impl IntoIterator<Item = T>) -> Self {
        let items = values
            .into_iter()
            .map(|value| SourceRecord {
                split: 0,
                value,
                timestamp: None,
            })
            .collect();
        Self {
            items,
            next: 0,
            batch: 256,
            splits: vec![0],
        }
    }

    /// Records interleaved across `splits` in the order given.
    pub fn from_records(items: Vec<SourceRecord<T>>, splits: Vec<u32>) -> Self {
        Self {
            items,
            next: 0,
            batch: 256,
            splits,
        }
    }

    /// Reads `n` records per poll.
    pub fn with_batch(mut self, n: usize) -> Self {
        assert!(n > 0);
        self.batch = n;
        self
    }
}

impl<T: Clone> Source<T> for BoundedSource<T> {
    fn splits(&self) -> Vec<u32> {
        self.splits.clone()
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<SourcePoll<T>, SourceError>> {
        let end = (self.next + self.batch).min(self.items.len());
        let out = if self.next == self.items.len() {
            SourcePoll::End
        } else {
            let batch = self.items[self.next..end].to_vec();
            self.next = end;
            SourcePoll::Records(batch)
        };
        Box::pin(async move { Ok(out) })
    }

    fn position(&self) -> Vec<u8> {
        encode(&(self.next as u64)).expect("an integer encodes")
    }

    fn restore_position(&mut self, bytes: &[u8]) -> Result<(), SourceError> {
        let next: u64 = decode(bytes).map_err(|e| SourceError::Position(e.to_string()))?;
        self.next = usize::try_from(next)
            .unwrap_or(usize::MAX)
            .min(self.items.len());
        Ok(())
    }
}

/// Turns a consumed record into a value, or `None` to skip it (counted as invalid).
pub type Deserializer<T> = Box<dyn FnMut(&ConsumerRecord) -> Option<T>>;

/// Sees every record a source reads.
pub type Observer = Box<dyn FnMut(&ConsumerRecord)>;

/// Reads partitions of a broker topic from given offsets, each partition a split.
pub struct BrokerTopicSource<T> {
    consumer: Consumer,
    topic: String,
    partitions: Vec<i32>,
    stop_at: Option<BTreeMap<i32, i64>>,
    deserialize: Deserializer<T>,
    observer: Option<Observer>,
    poll_timeout: Duration,
    invalid: u64,
}

/// How long a source waits after a retriable client error, in milliseconds.
const SOURCE_RETRY_MS: u64 = 50;

impl<T> BrokerTopicSource<T> {
    /// Reads `topic` from `(partition, offset)` starts.
    pub fn new(
        cluster: Arc<Cluster>,
        topic: &str,
        starts: &[(i32, i64)],
        config: ConsumerConfig,
        deserialize: Deserializer<T>,
    ) -> Self {
        let poll_timeout =
            Duration::from_millis(u64::try_from(config.fetch_max_wait_ms).unwrap_or(0));
        let mut consumer = Consumer::new(cluster, config);
        consumer.assign(starts.iter().map(|(p, _)| (topic.to_string(), *p)));
        for (p, offset) in starts {
            consumer
                .seek((topic.to_string(), *p), *offset)
                .expect("just assigned");
        }
        Self {
            consumer,
            topic: topic.to_string(),
            partitions: starts.iter().map(|(p, _)| *p).collect(),
            stop_at: None,
            deserialize,
            observer: None,
            poll_timeout,
            invalid: 0,
        }
    }

    /// Ends the source once every partition reaches its offset here (exclusive).
    pub fn stop_at(mut self, offsets: BTreeMap<i32, i64>) -> Self {
        self.set_stop_at(offsets);
        self
    }

    /// Sets where the source ends, while it runs: for an input whose end is learned late.
    pub fn set_stop_at(&mut self, offsets: BTreeMap<i32, i64>) {
        self.stop_at = Some(offsets);
    }

    /// Calls `f` on every record read, in read order, before it is deserialized.
    pub fn with_observer(mut self, f: impl FnMut(&ConsumerRecord) + 'static) -> Self {
        self.observer = Some(Box::new(f));
        self
    }

    /// Records the deserializer refused.
    pub fn invalid_records(&self) -> u64 {
        self.invalid
    }

    fn finished(&self) -> bool {
        let Some(stop) = &self.stop_at else {
            return false;
        };
        self.partitions.iter().all(|p| {
            let end = stop.get(p).copied().unwrap_or(0);
            self.consumer
                .position(&(self.topic.clone(), *p))
                .is_some_and(|pos| pos >= end)
        })
    }

    async fn poll_once(&mut self) -> Result<SourcePoll<T>, SourceError> {
        if self.finished() {
            return Ok(SourcePoll::End);
        }
        let records = match self.consumer.poll(self.poll_timeout).await {
            Ok(r) => r,
            Err(e) if e.is_retriable() => {
                tokio::time::sleep(Duration::from_millis(SOURCE_RETRY_MS)).await;
                return Ok(SourcePoll::Idle);
            }
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            if self
                .stop_at
                .as_ref()
                .is_some_and(|s| r.offset >= s.get(&r.partition).copied().unwrap_or(0))
            {
                continue;
            }
            if let Some(obs) = &mut self.observer {
                obs(&r);
            }
            match (self.deserialize)(&r) {
                Some(value) => out.push(SourceRecord {
                    split: r.partition as u32,
                    value,
                    timestamp: Some(r.timestamp),
                }),
                None => self.invalid += 1,
            }
        }
        Ok(if out.is_empty() {
            SourcePoll::Idle
        } else {
            SourcePoll::Records(out)
        })
    }
}

impl<T> Source<T> for BrokerTopicSource<T> {
    fn splits(&self) -> Vec<u32> {
        self.partitions.iter().map(|p| *p as u32).collect()
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<SourcePoll<T>, SourceError>> {
        Box::pin(self.poll_once())
    }

    fn position(&self) -> Vec<u8> {
        let positions: Vec<(i32, Option<i64>)> = self
            .partitions
            .iter()
            .map(|p| (*p, self.consumer.position(&(self.topic.clone(), *p))))
            .collect();
        encode(&positions).expect("positions encode")
    }

    fn restore_position(&mut self, bytes: &[u8]) -> Result<(), SourceError> {
        let positions: Vec<(i32, Option<i64>)> =
            decode(bytes).map_err(|e| SourceError::Position(e.to_string()))?;
        for (p, pos) in positions {
            if let Some(offset) = pos {
                self.consumer
                    .seek((self.topic.clone(), p), offset)
                    .map_err(|e| SourceError::Position(e.to_string()))?;
            }
        }
        Ok(())
    }
}

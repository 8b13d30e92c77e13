//! Where a job's records come from and go to: broker topics, tables and, for tests, memory.

use crate::element::{Data, StreamRecord};
use crate::graph::SinkTarget;
use crate::operator::sink::{CollectStore, RowSinkFactory, Serializer, SinkFactory};
use crate::operator::source::{DeadLetter, Deserializer, SourceInput, TopicSourceFactory};
use crate::tag::OutputTag;
use crate::watermark::WatermarkStrategy;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

/// A topic's record as it is: its key and value bytes (its timestamp is the stream record's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KafkaRecord {
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Vec<u8>,
}

impl KafkaSource<KafkaRecord> {
    /// Reads `topic` as it is, for a job that parses (and counts what fails to) itself.
    pub fn raw(topic: &str) -> Self {
        Self::new(topic, |input| {
            Ok(KafkaRecord {
                key: input.key.map(<[u8]>::to_vec),
                value: input.value.to_vec(),
            })
        })
    }
}

/// Reads a broker topic under read_committed. Partition `p` goes to source subtask
/// `p mod parallelism`; each partition keeps its own watermark.
pub struct KafkaSource<T> {
    topic: String,
    deserializer: Deserializer<T>,
    end_marker: Option<Bytes>,
    dead_letters: Option<&'static str>,
}

impl<T: Data> KafkaSource<T> {
    /// Reads `topic`, turning each record into a value with `deserializer`; a record it
    /// refuses is dropped and counted as unparseable.
    pub fn new(
        topic: &str,
        deserializer: impl Fn(&SourceInput<'_>) -> Result<T, String> + 'static,
    ) -> Self {
        Self {
            topic: topic.to_string(),
            deserializer: Rc::new(deserializer),
            end_marker: None,
            dead_letters: None,
        }
    }

    /// Reads `topic`, whose values are JSON documents of `T`.
    pub fn json(topic: &str) -> Self
    where
        T: DeserializeOwned,
    {
        Self::new(topic, |input| {
            serde_json::from_slice(input.value).map_err(|e| e.to_string())
        })
    }

    /// Makes the input bounded: a record whose value is `marker` ends its partition, and the
    /// job finishes once every partition has ended and the output is committed.
    pub fn bounded_by_marker(mut self, marker: &str) -> Self {
        self.end_marker = Some(Bytes::from(marker.to_string()));
        self
    }

    /// Sends the records that do not deserialize to the side output `tag` of the source, as
    /// well as counting them.
    pub fn dead_letters(mut self, tag: &OutputTag<DeadLetter>) -> Self {
        self.dead_letters = Some(tag.name());
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub(crate) fn into_factory(
        self,
        strategy: WatermarkStrategy<T>,
    ) -> Rc<dyn crate::operator::source::SourceFactory> {
        Rc::new(TopicSourceFactory {
            topic: self.topic,
            deserializer: self.deserializer,
            strategy,
            end_marker: self.end_marker,
            dead_letters: self.dead_letters,
        })
    }
}

/// Whether a sink's output is exactly once or at least once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// Two-phase commit over broker transactions, committed when each checkpoint completes;
    /// readers see it with isolation level read_committed.
    ExactlyOnce,
    /// Plain idempotent sends, flushed at each checkpoint: a restart may write a record again.
    AtLeastOnce,
}

/// A sink as a stream's `sink_to` takes it.
pub struct SinkSpec<T> {
    pub(crate) name: &'static str,
    pub(crate) target: SinkTarget,
    pub(crate) factory: Rc<dyn SinkFactory>,
    _t: PhantomData<fn(T)>,
}

fn spec<T: Data>(
    name: &'static str,
    target: SinkTarget,
    serializer: Serializer<T>,
    collector: Option<Arc<CollectStore>>,
) -> SinkSpec<T> {
    SinkSpec {
        name,
        target,
        factory: Rc::new(RowSinkFactory {
            serializer,
            collector,
            _t: PhantomData,
        }),
        _t: PhantomData,
    }
}

/// Writes a broker topic, keyed by what `serializer` gives each record.
pub struct KafkaSink<T> {
    topic: String,
    serializer: Serializer<T>,
    guarantee: DeliveryGuarantee,
}

impl<T: Data> KafkaSink<T> {
    /// Writes to `topic` the key and value `serializer` makes of each record, exactly once.
    pub fn new(
        topic: &str,
        serializer: impl Fn(&T) -> Result<(Option<Vec<u8>>, Vec<u8>), String> + 'static,
    ) -> Self {
        Self {
            topic: topic.to_string(),
            serializer: Rc::new(serializer),
            guarantee: DeliveryGuarantee::ExactlyOnce,
        }
    }

    /// Writes each record to `topic` as a JSON document, keyed by `key`.
    pub fn json(topic: &str, key: impl Fn(&T) -> Option<Vec<u8>> + 'static) -> Self
    where
        T: Serialize,
    {
        Self::new(topic, move |t| {
            let value = serde_json::to_vec(t).map_err(|e| e.to_string())?;
            Ok((key(t), value))
        })
    }

    /// Sets the delivery guarantee.
    pub fn delivery_guarantee(mut self, guarantee: DeliveryGuarantee) -> Self {
        self.guarantee = guarantee;
        self
    }
}

impl<T: Data> From<KafkaSink<T>> for SinkSpec<T> {
    fn from(s: KafkaSink<T>) -> Self {
        let target = SinkTarget::Topic {
            topic: s.topic,
            exactly_once: s.guarantee == DeliveryGuarantee::ExactlyOnce,
        };
        spec("kafka-sink", target, s.serializer, None)
    }
}

/// Upserts into a table of the task managers (SQLite, PostgreSQL or the simulator's table
/// host), exactly once: each key's value is the last record written under it.
pub struct TableSink<T> {
    table: String,
    serializer: Serializer<T>,
}

impl<T: Data> TableSink<T> {
    /// Upserts into `table` the key and value `row` makes of each record.
    pub fn new(table: &str, row: impl Fn(&T) -> (String, String) + 'static) -> Self {
        Self {
            table: table.to_string(),
            serializer: Rc::new(move |t| {
                let (key, value) = row(t);
                Ok((Some(key.into_bytes()), value.into_bytes()))
            }),
        }
    }
}

impl<T: Data> From<TableSink<T>> for SinkSpec<T> {
    fn from(s: TableSink<T>) -> Self {
        let target = SinkTarget::Table { table: s.table };
        spec("table-sink", target, s.serializer, None)
    }
}

/// Collects every record in memory, committed with the checkpoints, so that a test reads
/// exactly the output a real sink would have committed. It works where the job's subtasks
/// share one process: the simulator and local runs.
pub struct CollectSink<T> {
    store: Arc<CollectStore>,
    _t: PhantomData<fn(T)>,
}

/// What a [`CollectSink`] committed.
pub struct Collected<T> {
    store: Arc<CollectStore>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Collected<T> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            _t: PhantomData,
        }
    }
}

impl<T: Data> CollectSink<T> {
    /// A sink and the handle that reads what it committed.
    pub fn new() -> (Self, Collected<T>) {
        let store = Arc::new(CollectStore::default());
        let handle = Collected {
            store: Arc::clone(&store),
            _t: PhantomData,
        };
        (
            Self {
                store,
                _t: PhantomData,
            },
            handle,
        )
    }
}

impl<T: Data> Collected<T> {
    /// Every committed record with its event time, in commit order.
    pub fn records(&self) -> Vec<StreamRecord<T>> {
        self.store
            .values()
            .iter()
            .map(|(v, ts)| StreamRecord {
                value: serde_json::from_str(v).expect("collected records are this sink's JSON"),
                timestamp: Some(*ts),
            })
            .collect()
    }

    /// Every committed record, in commit order.
    pub fn values(&self) -> Vec<T> {
        self.records().into_iter().map(|r| r.value).collect()
    }

    /// How many records were committed.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether nothing was committed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets what was collected, for a fresh run of the same job.
    pub fn clear(&self) {
        self.store.clear();
    }
}

impl<T: Data> From<CollectSink<T>> for SinkSpec<T> {
    fn from(s: CollectSink<T>) -> Self {
        let serializer: Serializer<T> = Rc::new(|t: &T| {
            serde_json::to_vec(t)
                .map(|v| (None, v))
                .map_err(|e| e.to_string())
        });
        spec(
            "collect-sink",
            SinkTarget::Collect,
            serializer,
            Some(s.store),
        )
    }
}

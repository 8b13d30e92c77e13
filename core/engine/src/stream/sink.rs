//! Sinks: where records leave a job.

use super::element::StreamRecord;
use super::source::BoxFuture;
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use weir_client::{ClientError, Delivery, Producer, Record};

/// Why a sink failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SinkError {
    /// The broker client failed for good.
    #[error("sink: {0}")]
    Client(#[from] ClientError),
}

/// What `flush` and `finish` return.
pub type BoxFutureSink<'a> = BoxFuture<'a, Result<(), SinkError>>;

/// A destination for records of type `T`.
pub trait Sink<T> {
    /// Takes one record. Must not block: real work happens in `flush`.
    fn write(&mut self, value: T, timestamp: Option<i64>);
    /// Sends what was written, called after every step of the job.
    fn flush(&mut self) -> BoxFutureSink<'_>;
    /// Waits until everything written is durable at the destination.
    fn finish(&mut self) -> BoxFutureSink<'_>;
}

/// Counts what reaches it and keeps nothing, as a blackhole sink does: what benchmarks end
/// a job with, so that they do not measure collecting results.
#[derive(Clone, Default)]
pub struct Blackhole(Rc<std::cell::Cell<u64>>);

impl Blackhole {
    /// Records written so far (shared by every clone).
    pub fn count(&self) -> u64 {
        self.0.get()
    }
}

impl<T> Sink<T> for Blackhole {
    fn write(&mut self, _: T, _: Option<i64>) {
        self.0.set(self.0.get() + 1);
    }
    fn flush(&mut self) -> BoxFutureSink<'_> {
        Box::pin(async { Ok(()) })
    }
    fn finish(&mut self) -> BoxFutureSink<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// Records a sink collected, shared with whoever reads them.
pub struct Collected<T>(Rc<RefCell<Vec<StreamRecord<T>>>>);

impl<T> Clone for Collected<T> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<T: Clone> Collected<T> {
    /// The values, in arrival order.
    pub fn values(&self) -> Vec<T> {
        self.0.borrow().iter().map(|r| r.value.clone()).collect()
    }

    /// The records with their timestamps.
    pub fn records(&self) -> Vec<StreamRecord<T>> {
        self.0.borrow().clone()
    }

    /// How many were collected.
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps every record in memory: for tests and the simulator.
pub struct CollectSink<T>(Collected<T>);

/// A collecting sink and the handle to read what it collects.
pub fn collect_sink<T>() -> (CollectSink<T>, Collected<T>) {
    let c = Collected(Rc::new(RefCell::new(Vec::new())));
    (CollectSink(c.clone()), c)
}

impl<T> Sink<T> for CollectSink<T> {
    fn write(&mut self, value: T, timestamp: Option<i64>) {
        self.0
            .0
            .borrow_mut()
            .push(StreamRecord { value, timestamp });
    }

    fn flush(&mut self) -> BoxFutureSink<'_> {
        Box::pin(async { Ok(()) })
    }

    fn finish(&mut self) -> BoxFutureSink<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// Turns a value into a record key and value.
pub type Serializer<T> = Box<dyn Fn(&T) -> (Option<Bytes>, Bytes)>;

/// Writes to a broker topic at least once: a record is acknowledged (acks=all) before the job
/// finishes, and a producer retry may write it twice.
pub struct BrokerTopicSink<T> {
    producer: Producer,
    topic: String,
    serialize: Serializer<T>,
    pending: VecDeque<(Option<Bytes>, Bytes, Option<i64>)>,
    in_flight: VecDeque<Delivery>,
    in_flight_max: usize,
}

impl<T> BrokerTopicSink<T> {
    /// A sink writing to `topic` through `producer`.
    pub fn new(producer: Producer, topic: &str, serialize: Serializer<T>) -> Self {
        Self {
            producer,
            topic: topic.to_string(),
            serialize,
            pending: VecDeque::new(),
            in_flight: VecDeque::new(),
            in_flight_max: 10_000,
        }
    }

    async fn send_pending(&mut self) -> Result<(), SinkError> {
        while let Some((key, value, ts)) = self.pending.pop_front() {
            let record = Record {
                topic: self.topic.clone(),
                key,
                value: Some(value),
                timestamp: ts,
                ..Default::default()
            };
            self.in_flight.push_back(self.producer.send(record).await?);
            while self.in_flight.len() > self.in_flight_max {
                self.in_flight
                    .pop_front()
                    .expect("non-empty")
                    .wait()
                    .await?;
            }
        }
        Ok(())
    }
}

impl<T> Sink<T> for BrokerTopicSink<T> {
    fn write(&mut self, value: T, timestamp: Option<i64>) {
        let (key, bytes) = (self.serialize)(&value);
        self.pending.push_back((key, bytes, timestamp));
    }

    fn flush(&mut self) -> BoxFutureSink<'_> {
        Box::pin(self.send_pending())
    }

    fn finish(&mut self) -> BoxFutureSink<'_> {
        Box::pin(async move {
            self.send_pending().await?;
            while let Some(d) = self.in_flight.pop_front() {
                d.wait().await?;
            }
            Ok(())
        })
    }
}

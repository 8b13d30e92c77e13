//! Streams: the records an operator emits, and the operators that take them.

use super::connected::{ConnectedStreams, JoinedStreams};
use super::connectors::SinkSpec;
use super::keyed::KeyedStream;
use super::{Feed, Origin, StreamEnv, VertexCode};
use crate::element::Data;
use crate::function::Context;
use crate::graph::{Ship, VertexKind};
use crate::operator::OperatorFactory;
use crate::operator::edge::Codec;
use crate::operator::stateless::ProcessFactory;
use crate::state::encode;
use crate::tag::OutputTag;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::rc::Rc;

/// A stream of `T`.
pub struct DataStream<T> {
    pub(crate) env: StreamEnv,
    pub(crate) origins: Vec<Origin>,
    pub(crate) ship: Ship,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        Self {
            env: self.env.clone(),
            origins: self.origins.clone(),
            ship: self.ship,
            _t: PhantomData,
        }
    }
}

impl<T: Data> DataStream<T> {
    /// The main output of vertex `v`.
    pub(crate) fn from_vertex(env: StreamEnv, v: u32) -> Self {
        Self {
            env,
            origins: vec![(v, None)],
            ship: Ship::Forward,
            _t: PhantomData,
        }
    }

    /// The vertex that made this stream, for the settings that name it.
    fn vertex(&self) -> u32 {
        match self.origins.as_slice() {
            [(v, None)] => *v,
            _ => panic!(
                "uid, name and parallelism belong to the operator that made a stream; a union \
                 or a side output has none of its own"
            ),
        }
    }

    /// Names the operator that made this stream with a uid that stays stable from one version
    /// of the job to the next: checkpoints and savepoints restore state by uid.
    pub fn uid(self, uid: &str) -> Self {
        self.env.edit(self.vertex(), |v| v.uid = uid.to_string());
        self
    }

    /// Runs the operator that made this stream in `parallelism` subtasks.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        assert!(parallelism >= 1, "parallelism is at least 1");
        self.env
            .edit(self.vertex(), |v| v.parallelism = parallelism);
        self
    }

    /// The feed of a new operator from this stream, with `codec`.
    pub(crate) fn feed(&self, codec: Codec<T>) -> Feed {
        Feed {
            origins: self.origins.clone(),
            ship: self.ship,
            codec: Rc::new(codec),
        }
    }

    /// Adds a one-input operator reading this stream.
    pub(crate) fn one_input<O: Data>(
        &self,
        name: &str,
        keyed: bool,
        factory: Rc<dyn OperatorFactory>,
        feed: Feed,
    ) -> DataStream<O> {
        let v = self.env.add(
            name,
            VertexKind::Operator { keyed },
            VertexCode::Operator(factory),
            vec![feed],
        );
        DataStream::from_vertex(self.env.clone(), v)
    }

    /// Runs `f` on every record; it may emit any number of records, write to side outputs and
    /// count records it drops. Each subtask runs its own clone of `f`.
    pub fn process<O: Data>(
        &self,
        f: impl FnMut(T, &mut Context<'_, O>) + Clone + 'static,
    ) -> DataStream<O> {
        let factory = Rc::new(ProcessFactory {
            f,
            _t: PhantomData::<fn(T) -> O>,
        });
        self.one_input("process", false, factory, self.feed(Codec::plain()))
    }

    /// Applies `f` to every record.
    pub fn map<O: Data>(&self, f: impl Fn(T) -> O + Clone + 'static) -> DataStream<O> {
        self.named_process("map", move |v, ctx| ctx.emit(f(v)))
    }

    /// Keeps the records for which `f` is true.
    pub fn filter(&self, f: impl Fn(&T) -> bool + Clone + 'static) -> DataStream<T> {
        self.named_process("filter", move |v, ctx| {
            if f(&v) {
                ctx.emit(v);
            }
        })
    }

    /// Replaces every record with zero or more records.
    pub fn flat_map<O: Data, I: IntoIterator<Item = O>>(
        &self,
        f: impl Fn(T) -> I + Clone + 'static,
    ) -> DataStream<O> {
        self.named_process("flat-map", move |v, ctx| {
            for o in f(v) {
                ctx.emit(o);
            }
        })
    }

    fn named_process<O: Data>(
        &self,
        name: &str,
        f: impl FnMut(T, &mut Context<'_, O>) + Clone + 'static,
    ) -> DataStream<O> {
        let factory = Rc::new(ProcessFactory {
            f,
            _t: PhantomData::<fn(T) -> O>,
        });
        self.one_input(name, false, factory, self.feed(Codec::plain()))
    }

    /// Merges this stream with `others` into one; its watermark is the least of theirs.
    pub fn union(&self, others: &[&DataStream<T>]) -> DataStream<T> {
        let mut origins = self.origins.clone();
        for o in others {
            assert!(
                Rc::ptr_eq(&o.env.0, &self.env.0),
                "a union takes streams of one job"
            );
            origins.extend(o.origins.iter().cloned());
        }
        Self {
            origins,
            ..self.clone()
        }
    }

    /// Spreads the records round robin over the next operator's subtasks.
    pub fn rebalance(&self) -> DataStream<T> {
        Self {
            ship: Ship::Rebalance,
            ..self.clone()
        }
    }

    /// Sends every record to every subtask of the next operator.
    pub fn broadcast(&self) -> DataStream<T> {
        Self {
            ship: Ship::Broadcast,
            ..self.clone()
        }
    }

    /// Partitions the stream by the key `f` gives each record: every record of a key reaches
    /// the same subtask, and keyed state is scoped to it.
    pub fn key_by<K>(&self, f: impl Fn(&T) -> K + 'static) -> KeyedStream<K, T>
    where
        K: Clone + Serialize + DeserializeOwned + 'static,
    {
        KeyedStream::new(self.clone(), Rc::new(f))
    }

    /// The side output `tag` of the operator that made this stream.
    pub fn side_output<S: Data>(&self, tag: &OutputTag<S>) -> DataStream<S> {
        let v = self.vertex();
        DataStream {
            env: self.env.clone(),
            origins: vec![(v, Some(tag.name().to_string()))],
            ship: Ship::Forward,
            _t: PhantomData,
        }
    }

    /// Pairs this stream with `other`, for an operator that takes both.
    pub fn connect<U: Data>(&self, other: &DataStream<U>) -> ConnectedStreams<T, U> {
        ConnectedStreams::new(self.clone(), other.clone())
    }

    /// Joins this stream with `other` in windows: see [`JoinedStreams`].
    pub fn join<U: Data>(&self, other: &DataStream<U>) -> JoinedStreams<T, U> {
        JoinedStreams::new(self.clone(), other.clone())
    }

    /// Writes every record to `sink`.
    pub fn sink_to(&self, sink: impl Into<SinkSpec<T>>) -> SinkHandle {
        let spec = sink.into();
        let v = self.env.add(
            spec.name,
            VertexKind::Sink(spec.target),
            VertexCode::Sink(spec.factory),
            vec![self.feed(Codec::plain())],
        );
        SinkHandle {
            env: self.env.clone(),
            vertex: v,
        }
    }
}

/// A sink just added, to name it.
pub struct SinkHandle {
    env: StreamEnv,
    vertex: u32,
}

impl SinkHandle {
    /// Names the sink with a stable uid (its pending transactions are saved under it).
    pub fn uid(self, uid: &str) -> Self {
        self.env.edit(self.vertex, |v| v.uid = uid.to_string());
        self
    }

    /// Runs the sink in `parallelism` subtasks.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        assert!(parallelism >= 1, "parallelism is at least 1");
        self.env.edit(self.vertex, |v| v.parallelism = parallelism);
        self
    }
}

/// The routing key of a record keyed by `key`: the key's serialized bytes.
pub(crate) fn key_bytes<T: 'static, K: Serialize + 'static>(
    key: Rc<dyn Fn(&T) -> K>,
) -> crate::operator::edge::KeyBytes<T> {
    Rc::new(move |t| encode(&key(t)).map_err(|e| e.to_string()))
}

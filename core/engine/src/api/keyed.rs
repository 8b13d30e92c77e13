//! Keyed streams and their windows.

use super::connected::IntervalJoin;
use super::stream::{DataStream, key_bytes};
use crate::element::Data;
use crate::function::KeyedProcessFunction;
use crate::operator::edge::Codec;
use crate::operator::keyed::{KeyFn, KeyedProcessFactory};
use crate::state::AggregateFunction;
use crate::tag::OutputTag;
use crate::window::{
    AggregateLogic, ProcessLogic, ReduceLogic, TimeWindow, Trigger, WindowAssigner, WindowFactory,
    WindowLogic, WindowSpec, Windowed,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

/// A stream partitioned by key.
pub struct KeyedStream<K, T> {
    pub(crate) stream: DataStream<T>,
    pub(crate) key: KeyFn<T, K>,
}

impl<K, T> Clone for KeyedStream<K, T> {
    fn clone(&self) -> Self {
        Self {
            stream: self.stream.clone(),
            key: Rc::clone(&self.key),
        }
    }
}

impl<K, T> KeyedStream<K, T>
where
    K: Clone + Serialize + DeserializeOwned + 'static,
    T: Data,
{
    pub(crate) fn new(stream: DataStream<T>, key: KeyFn<T, K>) -> Self {
        Self { stream, key }
    }

    /// The feed of a keyed operator: a hash exchange by the key.
    pub(crate) fn feed(&self) -> super::Feed {
        super::Feed {
            ship: crate::graph::Ship::Hash,
            ..self
                .stream
                .feed(Codec::keyed(key_bytes(Rc::clone(&self.key))))
        }
    }

    /// Runs a keyed process function: per key, with keyed state and timers. Each subtask runs
    /// its own clone of `f`.
    pub fn process<O: Data>(
        &self,
        f: impl KeyedProcessFunction<K, T, O> + Clone + 'static,
    ) -> DataStream<O> {
        let factory = Rc::new(KeyedProcessFactory {
            key_fn: Rc::clone(&self.key),
            f,
            _t: PhantomData::<fn(T) -> O>,
        });
        self.stream
            .one_input("keyed-process", true, factory, self.feed())
    }

    /// Groups the stream into windows per key.
    pub fn window(&self, assigner: WindowAssigner) -> WindowedStream<K, T> {
        let trigger = (assigner != WindowAssigner::Global).then_some(Trigger::EventTime);
        WindowedStream {
            keyed: self.clone(),
            assigner,
            trigger,
            lateness_ms: 0,
            late: None,
        }
    }

    /// Joins every record of this stream with the records of `other` of the same key whose
    /// event time lies in a window around it: see [`IntervalJoin`].
    pub fn interval_join<U: Data>(&self, other: &KeyedStream<K, U>) -> IntervalJoin<K, T, U> {
        IntervalJoin::new(self.clone(), other.clone())
    }
}

/// A keyed stream cut into windows.
pub struct WindowedStream<K, T> {
    keyed: KeyedStream<K, T>,
    assigner: WindowAssigner,
    trigger: Option<Trigger>,
    lateness_ms: i64,
    late: Option<&'static str>,
}

impl<K, T> WindowedStream<K, T>
where
    K: Clone + Serialize + DeserializeOwned + 'static,
    T: Data,
{
    /// Fires by this trigger instead of the assigner's default.
    pub fn trigger(mut self, trigger: Trigger) -> Self {
        self.trigger = Some(trigger);
        self
    }

    /// Keeps each window's state this long past its end; a late record within it fires the
    /// window again with the updated result.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness_ms = i64::try_from(lateness.as_millis()).expect("lateness fits in i64 ms");
        self
    }

    /// Sends records that arrive after their windows' allowed lateness to the side output
    /// `tag` (otherwise they are dropped, and counted as late).
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late = Some(tag.name());
        self
    }

    fn build<L: WindowLogic<K, T> + 'static>(self, logic: L) -> DataStream<L::Out>
    where
        L::Out: Data,
    {
        let trigger = self
            .trigger
            .unwrap_or_else(|| panic!("global windows need a trigger, such as Trigger::Count"));
        assert!(
            !(self.assigner.is_merging() && matches!(trigger, Trigger::Count(_))),
            "count triggers do not merge: use them with tumbling, sliding or global windows"
        );
        let spec = WindowSpec {
            key_fn: Rc::clone(&self.keyed.key),
            assigner: self.assigner,
            trigger,
            lateness: self.lateness_ms,
            late: self.late,
        };
        let factory = Rc::new(WindowFactory { spec, logic });
        self.keyed
            .stream
            .one_input("window", true, factory, self.keyed.feed())
    }

    /// Aggregates each window incrementally with `agg`.
    pub fn aggregate<A>(self, agg: A) -> DataStream<Windowed<K, A::Out>>
    where
        A: AggregateFunction<T> + 'static,
        A::Out: Data,
    {
        self.build(AggregateLogic::new(agg))
    }

    /// Reduces each window's records with `f`.
    pub fn reduce(self, f: impl Fn(T, T) -> T + 'static) -> DataStream<Windowed<K, T>> {
        self.build(ReduceLogic::new(f))
    }

    /// Runs `f` on every record of a window when it fires, with the key and the window.
    pub fn process<O: Data>(
        self,
        f: impl FnMut(&K, &TimeWindow, Vec<T>) -> Vec<O> + Clone + 'static,
    ) -> DataStream<O> {
        self.build(ProcessLogic::new(f))
    }
}

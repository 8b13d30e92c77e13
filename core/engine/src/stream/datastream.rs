//! The DataStream API: streams, keyed streams and windowed streams.

use super::element::{Element, StreamRecord};
use super::env::StreamEnv;
use super::mutation::Mutation;
use super::output::{OutputTag, SidePorts};
use super::port::PortRef;
use super::process::{KeyedProcessFunction, KeyedProcessOperator};
use super::sink::{Collected, Sink, collect_sink};
use super::state::AggregateFunction;
use super::window::{
    AggregateLogic, ProcessLogic, ReduceLogic, TimeWindow, Trigger, WindowAssigner, WindowLogic,
    WindowOperator, WindowSpec, Windowed,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// A stream of `T`.
pub struct DataStream<T> {
    env: StreamEnv,
    port: PortRef<T>,
    sides: SidePorts,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        Self {
            env: self.env.clone(),
            port: self.port.clone(),
            sides: self.sides.clone(),
        }
    }
}

/// What a (non-keyed) process function sees.
pub struct Context<'a, O> {
    timestamp: Option<i64>,
    out: &'a PortRef<O>,
    sides: &'a SidePorts,
}

impl<O: Clone + 'static> Context<'_, O> {
    /// The record's timestamp.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// Emits `value` with the record's timestamp.
    pub fn emit(&self, value: O) {
        self.out.record(value, self.timestamp);
    }

    /// Emits `value` to the side output `tag`.
    pub fn side_output<S: Clone + 'static>(&self, tag: &OutputTag<S>, value: S) {
        self.sides.port(tag).record(value, self.timestamp);
    }
}

impl<T: Clone + 'static> DataStream<T> {
    pub(crate) fn from_port(env: StreamEnv, port: PortRef<T>) -> Self {
        Self {
            env,
            port,
            sides: SidePorts::default(),
        }
    }

    fn stateless<U: Clone + 'static>(
        &self,
        mut f: impl FnMut(StreamRecord<T>, &PortRef<U>) + 'static,
    ) -> DataStream<U> {
        let out: PortRef<U> = PortRef::new();
        let o = out.clone();
        self.port.subscribe(Box::new(move |el| match el {
            Element::Record(r) => f(r, &o),
            Element::Watermark(w) => o.emit(Element::Watermark(w)),
        }));
        DataStream::from_port(self.env.clone(), out)
    }

    /// Applies `f` to every value.
    pub fn map<U: Clone + 'static>(&self, mut f: impl FnMut(T) -> U + 'static) -> DataStream<U> {
        self.stateless(move |r, out| out.record(f(r.value), r.timestamp))
    }

    /// Keeps the values for which `f` is true.
    pub fn filter(&self, mut f: impl FnMut(&T) -> bool + 'static) -> DataStream<T> {
        self.stateless(move |r, out| {
            if f(&r.value) {
                out.emit(Element::Record(r));
            }
        })
    }

    /// Replaces every value with zero or more values.
    pub fn flat_map<U: Clone + 'static, I: IntoIterator<Item = U>>(
        &self,
        mut f: impl FnMut(T) -> I + 'static,
    ) -> DataStream<U> {
        self.stateless(move |r, out| {
            for v in f(r.value) {
                out.record(v, r.timestamp);
            }
        })
    }

    /// Runs `f` on every value; it may emit any number of values and write to side outputs.
    pub fn process<O: Clone + 'static>(
        &self,
        mut f: impl FnMut(T, &mut Context<'_, O>) + 'static,
    ) -> DataStream<O> {
        let out: PortRef<O> = PortRef::new();
        let sides = SidePorts::default();
        let (o, s) = (out.clone(), sides.clone());
        self.port.subscribe(Box::new(move |el| match el {
            Element::Record(r) => f(
                r.value,
                &mut Context {
                    timestamp: r.timestamp,
                    out: &o,
                    sides: &s,
                },
            ),
            Element::Watermark(w) => o.emit(Element::Watermark(w)),
        }));
        DataStream {
            env: self.env.clone(),
            port: out,
            sides,
        }
    }

    /// Merges this stream with `others`. The merged watermark is the minimum of the inputs'.
    pub fn union(&self, others: &[&DataStream<T>]) -> DataStream<T> {
        let out: PortRef<T> = PortRef::new();
        let inputs: Vec<&DataStream<T>> = std::iter::once(self)
            .chain(others.iter().copied())
            .collect();
        let marks = Rc::new(RefCell::new(vec![i64::MIN; inputs.len()]));
        let take_max = self.env.mutation() == Some(Mutation::MaxWatermark);
        for (i, input) in inputs.iter().enumerate() {
            let (o, m) = (out.clone(), Rc::clone(&marks));
            input.port.subscribe(Box::new(move |el| match el {
                Element::Record(r) => o.emit(Element::Record(r)),
                Element::Watermark(w) => {
                    let combined = {
                        let mut m = m.borrow_mut();
                        m[i] = m[i].max(w);
                        if take_max {
                            *m.iter().max().expect("inputs")
                        } else {
                            *m.iter().min().expect("inputs")
                        }
                    };
                    o.emit(Element::Watermark(combined));
                }
            }));
        }
        DataStream::from_port(self.env.clone(), out)
    }

    /// Partitions the stream by key.
    pub fn key_by<K>(&self, f: impl Fn(&T) -> K + 'static) -> KeyedStream<K, T> {
        KeyedStream {
            stream: self.clone(),
            key_fn: Rc::new(f),
            uid: None,
        }
    }

    /// The side output `tag` of the operator that produced this stream.
    pub fn side_output<S: Clone + 'static>(&self, tag: &OutputTag<S>) -> DataStream<S> {
        DataStream::from_port(self.env.clone(), self.sides.port(tag))
    }

    /// Sends every record to `sink`.
    pub fn sink(&self, sink: impl Sink<T> + 'static) {
        let buffer = self.env.add_sink(Box::new(sink));
        self.port.subscribe(Box::new(move |el| {
            if let Element::Record(r) = el {
                buffer.borrow_mut().push((r.value, r.timestamp));
            }
        }));
    }

    /// Collects every record in memory.
    pub fn collect(&self) -> Collected<T> {
        let (sink, handle) = collect_sink();
        self.sink(sink);
        handle
    }
}

/// A stream partitioned by key.
pub struct KeyedStream<K, T> {
    stream: DataStream<T>,
    key_fn: Rc<dyn Fn(&T) -> K>,
    uid: Option<String>,
}

impl<K, T> KeyedStream<K, T>
where
    K: Clone + Serialize + DeserializeOwned + 'static,
    T: Clone + 'static,
{
    /// Names the next stateful operator built from this stream (for snapshots).
    pub fn uid(mut self, uid: &str) -> Self {
        self.uid = Some(uid.to_string());
        self
    }

    /// Runs a keyed process function.
    pub fn process<O: Clone + 'static>(
        self,
        f: impl KeyedProcessFunction<K, T, O> + 'static,
    ) -> DataStream<O> {
        let env = self.stream.env.clone();
        let out: PortRef<O> = PortRef::new();
        let sides = SidePorts::default();
        let uid = env.uid("process", self.uid);
        let op = Rc::new(RefCell::new(KeyedProcessOperator::new(
            uid,
            self.key_fn,
            f,
            env.new_store(),
            env.clock(),
            out.clone(),
            sides.clone(),
        )));
        env.register(op.clone());
        let e = env.clone();
        self.stream.port.subscribe(Box::new(move |el| {
            if e.failed() {
                return;
            }
            if let Err(err) = op.borrow_mut().on_element(el) {
                e.fail(err);
            }
        }));
        DataStream {
            env,
            port: out,
            sides,
        }
    }

    /// Groups the stream into windows per key.
    pub fn window(self, assigner: WindowAssigner) -> WindowedStream<K, T> {
        let trigger = if assigner == WindowAssigner::Global {
            None
        } else {
            Some(Trigger::EventTime)
        };
        WindowedStream {
            keyed: self,
            assigner,
            trigger,
            lateness_ms: 0,
            late: None,
        }
    }
}

/// A keyed stream cut into windows.
pub struct WindowedStream<K, T> {
    keyed: KeyedStream<K, T>,
    assigner: WindowAssigner,
    trigger: Option<Trigger>,
    lateness_ms: i64,
    late: Option<OutputTag<T>>,
}

impl<K, T> WindowedStream<K, T>
where
    K: Clone + Serialize + DeserializeOwned + 'static,
    T: Clone + 'static,
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

    /// Sends records that arrive after their windows' allowed lateness to the side output `tag`.
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late = Some(*tag);
        self
    }

    fn build<L: WindowLogic<K, T> + 'static>(self, logic: L) -> DataStream<L::Out> {
        let env = self.keyed.stream.env.clone();
        let trigger = self
            .trigger
            .unwrap_or_else(|| panic!("global windows need a trigger, such as Trigger::Count"));
        assert!(
            !(self.assigner.is_merging() && matches!(trigger, Trigger::Count(_))),
            "count triggers do not merge: use them with tumbling, sliding or global windows"
        );
        let out: PortRef<L::Out> = PortRef::new();
        let sides = SidePorts::default();
        let late = self.late.map(|tag| sides.port(&tag));
        let spec = WindowSpec {
            uid: env.uid("window", self.keyed.uid),
            key_fn: self.keyed.key_fn,
            assigner: self.assigner,
            trigger,
            lateness: self.lateness_ms,
            off_by_one: env.mutation() == Some(Mutation::WindowOffByOne),
        };
        let op = Rc::new(RefCell::new(WindowOperator::new(
            spec,
            logic,
            env.new_store(),
            out.clone(),
            late,
        )));
        env.register(op.clone());
        let e = env.clone();
        self.keyed.stream.port.subscribe(Box::new(move |el| {
            if e.failed() {
                return;
            }
            if let Err(err) = op.borrow_mut().on_element(el) {
                e.fail(err);
            }
        }));
        DataStream {
            env,
            port: out,
            sides,
        }
    }

    /// Aggregates each window incrementally with `agg`.
    pub fn aggregate<A>(self, agg: A) -> DataStream<Windowed<K, A::Out>>
    where
        A: AggregateFunction<T> + 'static,
        A::Out: Clone + 'static,
    {
        self.build(AggregateLogic::new(agg))
    }

    /// Reduces each window's values with `f`.
    pub fn reduce(self, f: impl Fn(T, T) -> T + 'static) -> DataStream<Windowed<K, T>>
    where
        T: Serialize + DeserializeOwned,
    {
        self.build(ReduceLogic::new(f))
    }

    /// Runs `f` on every element of a window when it fires, with the key and the window.
    pub fn process<O: Clone + 'static>(
        self,
        f: impl FnMut(&K, &TimeWindow, Vec<T>) -> Vec<O> + 'static,
    ) -> DataStream<O>
    where
        T: Serialize + DeserializeOwned,
    {
        self.build(ProcessLogic::new(f))
    }
}

//! Process functions: user code with access to keyed state, timers and side outputs.

use super::JobError;
use super::element::{Element, MIN_WATERMARK, StreamRecord};
use super::operator::StatefulOperator;
use super::output::{OutputTag, SidePorts};
use super::port::PortRef;
use super::state::{
    AggregatingState, AggregatingStateDescriptor, KeyedStore, ListState, ListStateDescriptor,
    MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor, StateError,
    StoreSnapshot, ValueState, ValueStateDescriptor, decode, encode,
};
use super::timers::{TimeDomain, TimerService};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::rc::Rc;
use weir_seams::clock::Clock;

/// What a keyed process function sees while it handles a record or a timer.
pub struct KeyedContext<'a, K, O> {
    key: &'a K,
    key_bytes: &'a [u8],
    timestamp: Option<i64>,
    watermark: i64,
    now: i64,
    store: &'a mut KeyedStore,
    timers: &'a mut TimerService,
    out: &'a PortRef<O>,
    sides: &'a SidePorts,
}

impl<K, O: Clone + 'static> KeyedContext<'_, K, O> {
    /// The current key.
    pub fn key(&self) -> &K {
        self.key
    }

    /// The timestamp of the record (or the time of the timer) being handled.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The operator's current watermark.
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// Processing time, in milliseconds since the epoch.
    pub fn current_processing_time(&self) -> i64 {
        self.now
    }

    /// Fires `on_timer` for this key when the watermark reaches `at`.
    pub fn register_event_time_timer(&mut self, at: i64) {
        self.timers
            .register(TimeDomain::EventTime, at, self.key_bytes, b"");
    }

    /// Fires `on_timer` for this key when processing time reaches `at`.
    pub fn register_processing_time_timer(&mut self, at: i64) {
        self.timers
            .register(TimeDomain::ProcessingTime, at, self.key_bytes, b"");
    }

    /// Cancels an event-time timer of this key.
    pub fn delete_event_time_timer(&mut self, at: i64) {
        self.timers
            .delete(TimeDomain::EventTime, at, self.key_bytes, b"");
    }

    /// Cancels a processing-time timer of this key.
    pub fn delete_processing_time_timer(&mut self, at: i64) {
        self.timers
            .delete(TimeDomain::ProcessingTime, at, self.key_bytes, b"");
    }

    /// Emits `value` with the current timestamp.
    pub fn emit(&self, value: O) {
        self.out.record(value, self.timestamp);
    }

    /// Emits `value` with timestamp `ts`.
    pub fn emit_at(&self, value: O, ts: i64) {
        self.out.record(value, Some(ts));
    }

    /// Emits `value` to the side output `tag`.
    pub fn side_output<S: Clone + 'static>(&self, tag: &OutputTag<S>, value: S) {
        self.sides.port(tag).record(value, self.timestamp);
    }

    /// A value state of this key.
    pub fn value<T: Serialize + DeserializeOwned>(
        &mut self,
        d: &ValueStateDescriptor<T>,
    ) -> Result<ValueState<'_, T>, StateError> {
        self.store.value(d, b"")
    }

    /// A list state of this key.
    pub fn list<T: Serialize + DeserializeOwned>(
        &mut self,
        d: &ListStateDescriptor<T>,
    ) -> Result<ListState<'_, T>, StateError> {
        self.store.list(d, b"")
    }

    /// A map state of this key.
    pub fn map<MK: Serialize + DeserializeOwned, MV: Serialize + DeserializeOwned>(
        &mut self,
        d: &MapStateDescriptor<MK, MV>,
    ) -> Result<MapState<'_, MK, MV>, StateError> {
        self.store.map(d, b"")
    }

    /// A reducing state of this key.
    pub fn reducing<'b, T: Serialize + DeserializeOwned>(
        &'b mut self,
        d: &'b ReducingStateDescriptor<T>,
    ) -> Result<ReducingState<'b, T>, StateError> {
        self.store.reducing(d, b"")
    }

    /// An aggregating state of this key.
    pub fn aggregating<'b, I, A: Serialize + DeserializeOwned + Clone, R>(
        &'b mut self,
        d: &'b AggregatingStateDescriptor<I, A, R>,
    ) -> Result<AggregatingState<'b, I, A, R>, StateError> {
        self.store.aggregating(d, b"")
    }
}

/// User logic per key, with state and timers.
pub trait KeyedProcessFunction<K, I, O> {
    /// Handles one record.
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), StateError>;

    /// Handles a timer that fired.
    fn on_timer(
        &mut self,
        timestamp: i64,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), StateError> {
        let _ = (timestamp, domain, ctx);
        Ok(())
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    store: StoreSnapshot,
    timers: TimerService,
    watermark: i64,
}

/// Runs a keyed process function.
pub(crate) struct KeyedProcessOperator<K, I, O, F> {
    uid: String,
    key_fn: Rc<dyn Fn(&I) -> K>,
    f: F,
    store: KeyedStore,
    timers: TimerService,
    watermark: i64,
    clock: Clock,
    out: PortRef<O>,
    sides: SidePorts,
}

impl<K, I, O, F> KeyedProcessOperator<K, I, O, F>
where
    K: Serialize + DeserializeOwned + 'static,
    O: Clone + 'static,
    F: KeyedProcessFunction<K, I, O>,
{
    pub fn new(
        uid: String,
        key_fn: Rc<dyn Fn(&I) -> K>,
        f: F,
        store: KeyedStore,
        clock: Clock,
        out: PortRef<O>,
        sides: SidePorts,
    ) -> Self {
        Self {
            uid,
            key_fn,
            f,
            store,
            timers: TimerService::default(),
            watermark: MIN_WATERMARK,
            clock,
            out,
            sides,
        }
    }

    /// Handles one element from upstream.
    pub fn on_element(&mut self, el: Element<I>) -> Result<(), JobError> {
        match el {
            Element::Record(r) => self.process(r),
            Element::Watermark(w) => {
                self.watermark = self.watermark.max(w);
                self.fire(TimeDomain::EventTime, self.watermark)?;
                self.out.emit(Element::Watermark(w));
                Ok(())
            }
        }
    }

    fn process(&mut self, r: StreamRecord<I>) -> Result<(), JobError> {
        let key = (self.key_fn)(&r.value);
        let key_bytes = encode(&key)?;
        self.store.set_key(key_bytes.clone());
        let mut ctx = KeyedContext {
            key: &key,
            key_bytes: &key_bytes,
            timestamp: r.timestamp,
            watermark: self.watermark,
            now: self.clock.now_ms(),
            store: &mut self.store,
            timers: &mut self.timers,
            out: &self.out,
            sides: &self.sides,
        };
        self.f.process_element(r.value, &mut ctx)?;
        Ok(())
    }

    fn fire(&mut self, domain: TimeDomain, upto: i64) -> Result<(), JobError> {
        while let Some((at, key_bytes, _)) = self.timers.pop_due(domain, upto) {
            let key: K = decode(&key_bytes)?;
            self.store.set_key(key_bytes.clone());
            let timestamp = match domain {
                TimeDomain::EventTime => Some(at),
                TimeDomain::ProcessingTime => None,
            };
            let mut ctx = KeyedContext {
                key: &key,
                key_bytes: &key_bytes,
                timestamp,
                watermark: self.watermark,
                now: self.clock.now_ms(),
                store: &mut self.store,
                timers: &mut self.timers,
                out: &self.out,
                sides: &self.sides,
            };
            self.f.on_timer(at, domain, &mut ctx)?;
        }
        Ok(())
    }
}

impl<K, I, O, F> StatefulOperator for KeyedProcessOperator<K, I, O, F>
where
    K: Serialize + DeserializeOwned + 'static,
    O: Clone + 'static,
    F: KeyedProcessFunction<K, I, O>,
{
    fn uid(&self) -> &str {
        &self.uid
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        encode(&Snapshot {
            store: self.store.snapshot()?,
            timers: self.timers.clone(),
            watermark: self.watermark,
        })
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let s: Snapshot = decode(bytes)?;
        self.store.restore(s.store)?;
        self.timers = s.timers;
        self.watermark = s.watermark;
        Ok(())
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.timers.next_processing()
    }

    fn on_processing_time(&mut self, now: i64) -> Result<(), JobError> {
        self.fire(TimeDomain::ProcessingTime, now)
    }

    fn state_bytes(&self) -> u64 {
        self.store.size_bytes()
    }
}

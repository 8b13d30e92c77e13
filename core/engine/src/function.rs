//! The functions users write: process functions with their contexts, keyed and connected.
//!
//! A function is plain Rust in the user's crate. Each subtask runs its own clone of it, made
//! from the job's copy when the subtask starts (and again after every restart), so a field of
//! the function is per subtask and lost on failure: state that must survive goes through the
//! context's managed state, which checkpoints save.

use crate::element::Timestamp;
use crate::operator::{DropCounters, DropReason};
use crate::port::PortRef;
use crate::state::{
    AggregatingState, AggregatingStateDescriptor, KeyedStore, ListState, ListStateDescriptor,
    MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor, StateError, ValueState,
    ValueStateDescriptor,
};
use crate::tag::{OutputTag, SidePorts};
use crate::timers::{TimeDomain, TimerService};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a process function sees while it handles a record: where to emit, its timestamp, and
/// the side outputs.
pub struct Context<'a, O> {
    pub(crate) timestamp: Option<Timestamp>,
    pub(crate) watermark: Timestamp,
    pub(crate) out: &'a PortRef<O>,
    pub(crate) sides: &'a SidePorts,
    pub(crate) drops: &'a DropCounters,
}

impl<O: Clone + 'static> Context<'_, O> {
    /// The record's timestamp.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.timestamp
    }

    /// The operator's current watermark.
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// Emits `value` with the record's timestamp.
    pub fn emit(&self, value: O) {
        self.out.record(value, self.timestamp);
    }

    /// Emits `value` with timestamp `ts`.
    pub fn emit_at(&self, value: O, ts: Timestamp) {
        self.out.record(value, Some(ts));
    }

    /// Emits `value` to the side output `tag`.
    pub fn side_output<S: Clone + 'static>(&self, tag: &OutputTag<S>, value: S) {
        self.sides.port(tag).record(value, self.timestamp);
    }

    /// Counts the record as dropped for `reason`; jobs report these counts.
    pub fn dropped(&self, reason: DropReason) {
        self.drops.add(reason);
    }
}

/// What a keyed process function sees while it handles a record or a timer: the key, state
/// scoped to it, timers, and where to emit.
pub struct KeyedContext<'a, K, O> {
    pub(crate) key: &'a K,
    pub(crate) key_bytes: &'a [u8],
    pub(crate) now: Timestamp,
    pub(crate) store: &'a mut KeyedStore,
    pub(crate) timers: &'a mut TimerService,
    pub(crate) base: Context<'a, O>,
}

impl<K, O: Clone + 'static> KeyedContext<'_, K, O> {
    /// The current key.
    pub fn key(&self) -> &K {
        self.key
    }

    /// The timestamp of the record (or the time of the event-time timer) being handled.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.base.timestamp
    }

    /// The operator's current watermark.
    pub fn current_watermark(&self) -> Timestamp {
        self.base.watermark
    }

    /// Processing time, in milliseconds since the epoch.
    pub fn current_processing_time(&self) -> Timestamp {
        self.now
    }

    /// Calls `on_timer` for this key once the watermark reaches `at`.
    pub fn register_event_time_timer(&mut self, at: Timestamp) {
        self.timers
            .register(TimeDomain::EventTime, at, self.key_bytes, b"");
    }

    /// Calls `on_timer` for this key once processing time reaches `at`.
    pub fn register_processing_time_timer(&mut self, at: Timestamp) {
        self.timers
            .register(TimeDomain::ProcessingTime, at, self.key_bytes, b"");
    }

    /// Cancels an event-time timer of this key.
    pub fn delete_event_time_timer(&mut self, at: Timestamp) {
        self.timers
            .delete(TimeDomain::EventTime, at, self.key_bytes, b"");
    }

    /// Cancels a processing-time timer of this key.
    pub fn delete_processing_time_timer(&mut self, at: Timestamp) {
        self.timers
            .delete(TimeDomain::ProcessingTime, at, self.key_bytes, b"");
    }

    /// Emits `value` with the current timestamp.
    pub fn emit(&self, value: O) {
        self.base.emit(value);
    }

    /// Emits `value` with timestamp `ts`.
    pub fn emit_at(&self, value: O, ts: Timestamp) {
        self.base.emit_at(value, ts);
    }

    /// Emits `value` to the side output `tag`.
    pub fn side_output<S: Clone + 'static>(&self, tag: &OutputTag<S>, value: S) {
        self.base.side_output(tag, value);
    }

    /// Counts the record as dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) {
        self.base.dropped(reason);
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

/// User logic per key, with state and timers (`KeyedStream::process`).
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
        timestamp: Timestamp,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), StateError> {
        let _ = (timestamp, domain, ctx);
        Ok(())
    }
}

/// User logic over two keyed streams that share a key type, with state and timers shared
/// between both inputs (`ConnectedStreams::key_by(...).process`).
pub trait KeyedCoProcessFunction<K, I1, I2, O> {
    /// Handles a record of the first input.
    fn process_element1(
        &mut self,
        value: I1,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), StateError>;

    /// Handles a record of the second input.
    fn process_element2(
        &mut self,
        value: I2,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), StateError>;

    /// Handles a timer that fired.
    fn on_timer(
        &mut self,
        timestamp: Timestamp,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), StateError> {
        let _ = (timestamp, domain, ctx);
        Ok(())
    }
}

/// User logic over two streams, without keyed state (`ConnectedStreams::process`).
pub trait CoProcessFunction<I1, I2, O> {
    /// Handles a record of the first input.
    fn process_element1(&mut self, value: I1, ctx: &mut Context<'_, O>);
    /// Handles a record of the second input.
    fn process_element2(&mut self, value: I2, ctx: &mut Context<'_, O>);
}

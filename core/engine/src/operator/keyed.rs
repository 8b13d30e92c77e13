//! Keyed operators: user functions with keyed state and timers, on one input
//! ([`KeyedProcessFunction`]) or two ([`KeyedCoProcessFunction`]).

use super::{
    AnyPort, Build, DropCounters, Failure, OperatorFactory, OperatorMutation, Outputs,
    StatefulOperator, port_of,
};
use crate::element::{Element, MIN_WATERMARK, StreamRecord, Timestamp};
use crate::function::{Context, KeyedCoProcessFunction, KeyedContext, KeyedProcessFunction};
use crate::port::{Merged, PortRef, WatermarkMerger};
use crate::state::{KeyedStore, StateError, StoreSnapshot, decode, encode};
use crate::tag::SidePorts;
use crate::timers::{TimeDomain, TimerService};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use weir_seams::clock::Clock;

/// Extracts a record's key.
pub(crate) type KeyFn<T, K> = Rc<dyn Fn(&T) -> K>;

/// What a keyed operator saves.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    store: StoreSnapshot,
    timers: TimerService,
    watermark: Timestamp,
}

/// What every keyed operator holds: its state, timers, watermark and outputs.
pub(crate) struct KeyedCore<O> {
    uid: String,
    store: KeyedStore,
    timers: TimerService,
    watermark: Timestamp,
    inputs: WatermarkMerger,
    clock: Clock,
    out: PortRef<O>,
    sides: SidePorts,
    drops: DropCounters,
    failure: Failure,
}

impl<O: Clone + 'static> KeyedCore<O> {
    /// A core for `b`'s vertex with `inputs` inputs, restored from `b`'s state if it has one.
    pub fn new(b: &mut Build<'_>, inputs: usize) -> Result<Self, String> {
        let mut core = Self {
            uid: b.uid.to_string(),
            store: b.new_store(),
            timers: TimerService::default(),
            watermark: MIN_WATERMARK,
            inputs: WatermarkMerger::new(inputs, b.mutated(OperatorMutation::MaxWatermark)),
            clock: b.clock,
            out: PortRef::new(),
            sides: SidePorts::default(),
            drops: b.drops.clone(),
            failure: b.failure.clone(),
        };
        if let Some(bytes) = b.restored {
            let s: Snapshot = decode(bytes).map_err(|e| format!("restore {}: {e}", b.uid))?;
            core.store
                .restore(s.store)
                .map_err(|e| format!("restore {}: {e}", b.uid))?;
            core.timers = s.timers;
            core.watermark = s.watermark;
        }
        Ok(core)
    }

    /// The operator's outputs.
    pub fn outputs(&self) -> Outputs {
        Outputs {
            main: Box::new(self.out.clone()),
            sides: self.sides.clone(),
        }
    }

    /// Calls `f` with the context of `key` (serialized as `key_bytes`) at `timestamp`.
    pub fn with_key<K, R>(
        &mut self,
        key: &K,
        key_bytes: &[u8],
        timestamp: Option<Timestamp>,
        f: impl FnOnce(&mut KeyedContext<'_, K, O>) -> Result<R, StateError>,
    ) -> Option<R> {
        self.store.set_key(key_bytes.to_vec());
        let mut ctx = KeyedContext {
            key,
            key_bytes,
            now: self.clock.now_ms(),
            store: &mut self.store,
            timers: &mut self.timers,
            base: Context {
                timestamp,
                watermark: self.watermark,
                out: &self.out,
                sides: &self.sides,
                drops: &self.drops,
            },
        };
        match f(&mut ctx) {
            Ok(r) => Some(r),
            Err(e) => {
                self.failure.set(format!("{}: {e}", self.uid));
                None
            }
        }
    }

    /// Fires the timers of `domain` due at `upto`, each with its key, through `on_timer`.
    pub fn fire<K: DeserializeOwned>(
        &mut self,
        domain: TimeDomain,
        upto: Timestamp,
        mut on_timer: impl FnMut(&mut Self, &K, &[u8], Timestamp),
    ) {
        while let Some((at, key_bytes, _)) = self.timers.pop_due(domain, upto) {
            match decode::<K>(&key_bytes) {
                Ok(key) => on_timer(self, &key, &key_bytes, at),
                Err(e) => self.failure.set(format!("{}: timer key: {e}", self.uid)),
            }
        }
    }

    /// Takes input `input`'s watermark or idleness mark; returns the new watermark if the
    /// operator's advanced (event-time timers are then due), after passing on what changed.
    pub fn mark(&mut self, input: usize, el: &Element<()>) -> Option<Timestamp> {
        let merged = match el {
            Element::Watermark(w) => self.inputs.watermark(input, *w),
            Element::Idle => self.inputs.idle(input),
            Element::Record(_) => self.inputs.record(input),
        };
        match merged {
            Merged::Watermark(w) if w > self.watermark => {
                self.watermark = w;
                Some(w)
            }
            Merged::Idle => {
                self.out.emit(Element::Idle);
                None
            }
            Merged::Watermark(_) | Merged::Nothing => None,
        }
    }

    /// Passes the operator's watermark on, once its timers have fired.
    pub fn forward_watermark(&self) {
        self.out.emit(Element::Watermark(self.watermark));
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        encode(&Snapshot {
            store: self.store.snapshot()?,
            timers: self.timers.clone(),
            watermark: self.watermark,
        })
    }

    /// The key of `value` by `key_fn`, serialized.
    pub fn key_of<I, K: Serialize>(&self, key_fn: &KeyFn<I, K>, value: &I) -> Option<(K, Vec<u8>)> {
        let key = key_fn(value);
        match encode(&key) {
            Ok(bytes) => Some((key, bytes)),
            Err(e) => {
                self.failure.set(format!("{}: key: {e}", self.uid));
                None
            }
        }
    }
}

/// A keyed operator over one or two inputs, running user function `F`.
struct Keyed<K, O, F> {
    core: KeyedCore<O>,
    f: F,
    _k: PhantomData<fn() -> K>,
}

impl<K, O: Clone + 'static, F> StatefulOperator for Keyed<K, O, F>
where
    F: TimerHandler<K, O>,
    K: DeserializeOwned,
{
    fn uid(&self) -> &str {
        &self.core.uid
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        self.core.snapshot()
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.core.timers.next_processing()
    }

    fn on_processing_time(&mut self, now: i64) {
        let f = &mut self.f;
        self.core
            .fire::<K>(TimeDomain::ProcessingTime, now, |core, key, bytes, at| {
                core.with_key(key, bytes, None, |ctx| {
                    f.on_timer(at, TimeDomain::ProcessingTime, ctx)
                });
            });
    }

    fn state_bytes(&self) -> u64 {
        self.core.store.size_bytes()
    }
}

/// The part of a keyed function that timers call.
trait TimerHandler<K, O> {
    fn on_timer(
        &mut self,
        at: Timestamp,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), StateError>;
}

/// A one-input keyed function, as [`Keyed`] runs it.
struct One<F, I>(F, PhantomData<fn(I)>);

impl<K, I, O, F: KeyedProcessFunction<K, I, O>> TimerHandler<K, O> for One<F, I> {
    fn on_timer(
        &mut self,
        at: Timestamp,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), StateError> {
        self.0.on_timer(at, domain, ctx)
    }
}

/// A two-input keyed function, as [`Keyed`] runs it.
struct Two<F, I1, I2>(F, PhantomData<fn(I1, I2)>);

impl<K, I1, I2, O, F: KeyedCoProcessFunction<K, I1, I2, O>> TimerHandler<K, O> for Two<F, I1, I2> {
    fn on_timer(
        &mut self,
        at: Timestamp,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), StateError> {
        self.0.on_timer(at, domain, ctx)
    }
}

impl<K: DeserializeOwned, O: Clone + 'static, F: TimerHandler<K, O>> Keyed<K, O, F> {
    /// Handles what input `input`'s element says about time (a record wakes an idle input): fires
    /// the event-time timers a watermark makes due, then passes the watermark on.
    fn on_mark(&mut self, input: usize, el: &Element<()>) {
        if let Some(w) = self.core.mark(input, el) {
            let f = &mut self.f;
            self.core
                .fire::<K>(TimeDomain::EventTime, w, |core, key, bytes, at| {
                    core.with_key(key, bytes, Some(at), |ctx| {
                        f.on_timer(at, TimeDomain::EventTime, ctx)
                    });
                });
            self.core.forward_watermark();
        }
    }
}

/// The mark an element carries, without its record.
pub(crate) fn mark_of<T>(el: &Element<T>) -> Element<()> {
    match el {
        Element::Record(r) => Element::Record(StreamRecord {
            value: (),
            timestamp: r.timestamp,
        }),
        Element::Watermark(w) => Element::Watermark(*w),
        Element::Idle => Element::Idle,
    }
}

/// Builds [`KeyedProcessFunction`] operators.
pub(crate) struct KeyedProcessFactory<K, I, O, F> {
    pub key_fn: KeyFn<I, K>,
    pub f: F,
    pub _t: PhantomData<fn(I) -> O>,
}

impl<K, I, O, F> OperatorFactory for KeyedProcessFactory<K, I, O, F>
where
    K: Serialize + DeserializeOwned + 'static,
    I: Clone + 'static,
    O: Clone + 'static,
    F: KeyedProcessFunction<K, I, O> + Clone + 'static,
{
    fn create(&self, b: &mut Build<'_>, inputs: Vec<AnyPort>) -> Result<Outputs, String> {
        let core = KeyedCore::new(b, 1)?;
        let outputs = core.outputs();
        let op = Rc::new(RefCell::new(Keyed {
            core,
            f: One(self.f.clone(), PhantomData::<fn(I)>),
            _k: PhantomData::<fn() -> K>,
        }));
        let key_fn = Rc::clone(&self.key_fn);
        let o = Rc::clone(&op);
        port_of::<I>(&inputs[0]).subscribe(Box::new(move |el| {
            let mut op = o.borrow_mut();
            let op = &mut *op;
            op.on_mark(0, &mark_of(&el));
            let Element::Record(r) = el else { return };
            let Some((key, bytes)) = op.core.key_of(&key_fn, &r.value) else {
                return;
            };
            let f = &mut op.f.0;
            op.core.with_key(&key, &bytes, r.timestamp, |ctx| {
                f.process_element(r.value, ctx)
            });
        }));
        b.register(op);
        Ok(outputs)
    }
}

/// Builds [`KeyedCoProcessFunction`] operators.
pub(crate) struct KeyedCoProcessFactory<K, I1, I2, O, F> {
    pub keys: (KeyFn<I1, K>, KeyFn<I2, K>),
    pub f: F,
    pub _t: PhantomData<fn(I1, I2) -> O>,
}

impl<K, I1, I2, O, F> OperatorFactory for KeyedCoProcessFactory<K, I1, I2, O, F>
where
    K: Serialize + DeserializeOwned + 'static,
    I1: Clone + 'static,
    I2: Clone + 'static,
    O: Clone + 'static,
    F: KeyedCoProcessFunction<K, I1, I2, O> + Clone + 'static,
{
    fn create(&self, b: &mut Build<'_>, inputs: Vec<AnyPort>) -> Result<Outputs, String> {
        let core = KeyedCore::new(b, 2)?;
        let outputs = core.outputs();
        let op = Rc::new(RefCell::new(Keyed {
            core,
            f: Two(self.f.clone(), PhantomData::<fn(I1, I2)>),
            _k: PhantomData::<fn() -> K>,
        }));
        let (k1, k2) = (Rc::clone(&self.keys.0), Rc::clone(&self.keys.1));
        let o = Rc::clone(&op);
        port_of::<I1>(&inputs[0]).subscribe(Box::new(move |el| {
            let mut op = o.borrow_mut();
            let op = &mut *op;
            op.on_mark(0, &mark_of(&el));
            let Element::Record(r) = el else { return };
            let Some((key, bytes)) = op.core.key_of(&k1, &r.value) else {
                return;
            };
            let f = &mut op.f.0;
            op.core.with_key(&key, &bytes, r.timestamp, |ctx| {
                f.process_element1(r.value, ctx)
            });
        }));
        let o = Rc::clone(&op);
        port_of::<I2>(&inputs[1]).subscribe(Box::new(move |el| {
            let mut op = o.borrow_mut();
            let op = &mut *op;
            op.on_mark(1, &mark_of(&el));
            let Element::Record(r) = el else { return };
            let Some((key, bytes)) = op.core.key_of(&k2, &r.value) else {
                return;
            };
            let f = &mut op.f.0;
            op.core.with_key(&key, &bytes, r.timestamp, |ctx| {
                f.process_element2(r.value, ctx)
            });
        }));
        b.register(op);
        Ok(outputs)
    }
}

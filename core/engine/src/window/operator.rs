//! The window operator: assigns records to windows per key, keeps their contents in keyed
//! state, fires them by trigger, lets late records within the allowed lateness fire a window
//! again, sends records beyond it to the late-data side output (or counts them dropped as
//! late), and frees a window's state once the watermark passes its end plus the allowed
//! lateness.

use super::{TimeWindow, Trigger, WindowAssigner, WindowLogic};
use crate::element::{Element, MIN_WATERMARK, StreamRecord};
use crate::operator::keyed::KeyFn;
use crate::operator::tuples::Tuples;
use crate::operator::{
    AnyPort, Build, DropCounters, DropReason, Failure, OperatorFactory, OperatorMutation, Outputs,
    StatefulOperator, port_of,
};
use crate::port::PortRef;
use crate::state::{
    KeyedStore, MapStateDescriptor, StateError, StoreSnapshot, ValueStateDescriptor, decode, encode,
};
use crate::tag::SidePorts;
use crate::timers::{TimeDomain, TimerService};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Per key: each session window and the window whose namespace holds its state.
const MERGING: MapStateDescriptor<TimeWindow, TimeWindow> =
    MapStateDescriptor::new("window-merging");
/// Per window: records seen since the last firing of a count trigger.
const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("window-count");

#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    store: StoreSnapshot,
    timers: TimerService,
    watermark: i64,
}

/// The window operator of one keyed stream.
pub(crate) struct WindowOperator<K, T, L: WindowLogic<K, T>> {
    uid: String,
    key_fn: KeyFn<T, K>,
    assigner: WindowAssigner,
    trigger: Trigger,
    lateness: i64,
    logic: L,
    store: KeyedStore,
    timers: TimerService,
    watermark: i64,
    out: PortRef<L::Out>,
    late: Option<PortRef<T>>,
    off_by_one: bool,
    drops: DropCounters,
    failure: Failure,
    fired: Vec<L::Out>,
    /// Storm model: the subtask's tuple trees, and the tuples each open window holds, by
    /// (end, key, start).
    tuples: Option<(Tuples, BTreeMap<WindowId, Vec<u64>>)>,
}

/// A window of one key, ordered as windows fire: (end, key, start).
type WindowId = (i64, Vec<u8>, i64);

/// Settings of a window operator.
pub(crate) struct WindowSpec<K, T> {
    pub key_fn: KeyFn<T, K>,
    pub assigner: WindowAssigner,
    pub trigger: Trigger,
    pub lateness: i64,
    /// The name of the late-data side output, if it has one.
    pub late: Option<&'static str>,
}

impl<K, T> Clone for WindowSpec<K, T> {
    fn clone(&self) -> Self {
        Self {
            key_fn: Rc::clone(&self.key_fn),
            ..*self
        }
    }
}

/// Builds window operators.
pub(crate) struct WindowFactory<K, T, L> {
    pub spec: WindowSpec<K, T>,
    pub logic: L,
}

impl<K, T, L> WindowOperator<K, T, L>
where
    K: Clone + Serialize + DeserializeOwned + 'static,
    T: Clone + 'static,
    L: WindowLogic<K, T>,
{
    fn new(b: &Build<'_>, spec: WindowSpec<K, T>, logic: L, sides: &SidePorts) -> Self {
        Self {
            uid: b.uid.to_string(),
            key_fn: spec.key_fn,
            assigner: spec.assigner,
            trigger: spec.trigger,
            lateness: spec.lateness,
            logic,
            store: b.new_store(),
            timers: TimerService::default(),
            watermark: MIN_WATERMARK,
            out: PortRef::new(),
            late: spec.late.map(|name| sides.port_named(name)),
            off_by_one: b.mutated(OperatorMutation::WindowOffByOne),
            drops: b.drops.clone(),
            failure: b.failure.clone(),
            fired: Vec::new(),
            tuples: b.tuples.clone().map(|t| (t, BTreeMap::new())),
        }
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let s: Snapshot = decode(bytes)?;
        self.store.restore(s.store)?;
        self.timers = s.timers;
        self.watermark = s.watermark;
        Ok(())
    }

    fn cleanup_time(&self, w: &TimeWindow) -> i64 {
        if w.is_global() {
            i64::MAX
        } else {
            w.max_timestamp().saturating_add(self.lateness)
        }
    }

    fn window_is_late(&self, w: &TimeWindow) -> bool {
        self.cleanup_time(w) <= self.watermark
    }

    fn element_is_late(&self, ts: i64) -> bool {
        ts.saturating_add(self.lateness) <= self.watermark
    }

    /// Handles one element from upstream.
    fn on_element(&mut self, el: Element<T>) {
        let done = match el {
            Element::Record(r) => self.process(r),
            Element::Watermark(w) => self.advance(w),
            Element::Idle => {
                self.out.emit(Element::Idle);
                Ok(())
            }
        };
        if let Err(e) = done {
            self.failure.set(format!("{}: {e}", self.uid));
        }
    }

    fn emit_fired(&mut self, window: &TimeWindow) {
        for v in self.fired.drain(..) {
            self.out.record(v, Some(window.max_timestamp()));
        }
    }

    fn fire(&mut self, key: &K, window: &TimeWindow, ns: &[u8]) -> Result<(), StateError> {
        self.logic
            .fire(&mut self.store, key, window, ns, &mut self.fired)?;
        let Some((tuples, holds)) = &mut self.tuples else {
            self.emit_fired(window);
            return Ok(());
        };
        let members = holds
            .remove(&(window.end, self.store.key().to_vec(), window.start))
            .unwrap_or_default();
        let tuples = tuples.clone();
        tuples.firing(members);
        self.emit_fired(window);
        tuples.fired();
        Ok(())
    }

    /// Storm model: the tuple being processed waits in the windows of `ts` it joins.
    fn hold(&mut self, ts: i64, key: &[u8]) {
        let joined: Vec<TimeWindow> = self
            .assigner
            .assign(ts, self.off_by_one)
            .into_iter()
            .filter(|w| !self.window_is_late(w))
            .collect();
        let Some((tuples, holds)) = &mut self.tuples else {
            return;
        };
        let windows = u32::try_from(joined.len()).expect("windows per record are bounded");
        if let Some(id) = tuples.hold(windows) {
            for w in joined {
                holds
                    .entry((w.end, key.to_vec(), w.start))
                    .or_default()
                    .push(id);
            }
        }
    }

    /// Merges `window` into the key's sessions; returns the merged window and the window whose
    /// namespace holds its state, or `None` if the merged window is already late.
    fn merge_session(
        &mut self,
        key: &[u8],
        window: TimeWindow,
    ) -> Result<Option<(TimeWindow, TimeWindow)>, StateError> {
        let sessions = self.store.map(&MERGING, b"")?.entries()?;
        let overlapping: Vec<(TimeWindow, TimeWindow)> = sessions
            .into_iter()
            .filter(|(w, _)| w.intersects(&window))
            .collect();
        let merged = overlapping.iter().fold(window, |acc, (w, _)| acc.cover(w));
        if self.window_is_late(&merged) {
            return Ok(None);
        }
        let Some(&(_, target)) = overlapping.first() else {
            self.store.map(&MERGING, b"")?.put(&window, &window)?;
            return Ok(Some((window, window)));
        };
        let target_ns = encode(&target)?;
        for (w, state_window) in &overlapping {
            self.store.map(&MERGING, b"")?.remove(w)?;
            let ns = encode(w)?;
            self.timers
                .delete(TimeDomain::EventTime, w.max_timestamp(), key, &ns);
            self.timers
                .delete(TimeDomain::EventTime, self.cleanup_time(w), key, &ns);
            if *state_window != target {
                let from = encode(state_window)?;
                self.logic.merge(&mut self.store, &target_ns, &from)?;
            }
        }
        self.store.map(&MERGING, b"")?.put(&merged, &target)?;
        Ok(Some((merged, target)))
    }

    fn process(&mut self, r: StreamRecord<T>) -> Result<(), StateError> {
        let ts = r.timestamp.ok_or_else(|| {
            StateError::Codec("event-time windows need timestamps, and a record had none".into())
        })?;
        let key = (self.key_fn)(&r.value);
        let key_bytes = encode(&key)?;
        self.store.set_key(key_bytes.clone());
        self.hold(ts, &key_bytes);
        let mut skipped = true;
        for assigned in self.assigner.assign(ts, self.off_by_one) {
            let (window, state_window) = if self.assigner.is_merging() {
                match self.merge_session(&key_bytes, assigned)? {
                    Some(pair) => pair,
                    None => continue,
                }
            } else {
                if self.window_is_late(&assigned) {
                    continue;
                }
                (assigned, assigned)
            };
            skipped = false;
            let ns = encode(&window)?;
            let state_ns = if state_window == window {
                ns.clone()
            } else {
                encode(&state_window)?
            };
            let first = self.logic.add(&mut self.store, &state_ns, &r.value)?;
            // A window's timers are set with its first record (or whenever sessions merge, which
            // moves them); later records find them set.
            let set_timers = first || self.assigner.is_merging();
            match self.trigger {
                Trigger::EventTime => {
                    if window.max_timestamp() <= self.watermark {
                        self.fire(&key, &window, &state_ns)?;
                    } else if set_timers {
                        self.timers.register(
                            TimeDomain::EventTime,
                            window.max_timestamp(),
                            &key_bytes,
                            &ns,
                        );
                    }
                }
                Trigger::Count(n) => {
                    let mut count = self.store.value(&COUNT, &state_ns)?;
                    let seen = count.get()?.unwrap_or(0) + 1;
                    if seen >= n {
                        count.clear()?;
                        self.fire(&key, &window, &state_ns)?;
                        self.logic.clear(&mut self.store, &state_ns)?;
                    } else {
                        count.update(&seen)?;
                    }
                }
            }
            let cleanup = self.cleanup_time(&window);
            let fire_timer_covers_cleanup =
                self.trigger == Trigger::EventTime && cleanup == window.max_timestamp();
            if set_timers && !window.is_global() && !fire_timer_covers_cleanup {
                self.timers
                    .register(TimeDomain::EventTime, cleanup, &key_bytes, &ns);
            }
        }
        if skipped && self.element_is_late(ts) {
            match &self.late {
                Some(port) => port.record(r.value, Some(ts)),
                None => self.drops.add(DropReason::Late),
            }
        }
        Ok(())
    }

    fn advance(&mut self, wm: i64) -> Result<(), StateError> {
        self.watermark = self.watermark.max(wm);
        while let Some((at, key_bytes, ns)) =
            self.timers.pop_due(TimeDomain::EventTime, self.watermark)
        {
            self.store.set_key(key_bytes.clone());
            let window: TimeWindow = decode(&ns)?;
            let state_window = if self.assigner.is_merging() {
                match self.store.map(&MERGING, b"")?.get(&window)? {
                    Some(sw) => sw,
                    // Merged into a larger session since the timer was set.
                    None => continue,
                }
            } else {
                window
            };
            let state_ns = encode(&state_window)?;
            if at == window.max_timestamp() && self.trigger == Trigger::EventTime {
                let key: K = decode(&key_bytes)?;
                self.fire(&key, &window, &state_ns)?;
            }
            if at == self.cleanup_time(&window) {
                self.store.clear_namespace(&state_ns)?;
                if self.assigner.is_merging() {
                    self.store.map(&MERGING, b"")?.remove(&window)?;
                }
            }
        }
        self.out.emit(Element::Watermark(wm));
        Ok(())
    }
}

impl<K, T, L> StatefulOperator for WindowOperator<K, T, L>
where
    K: Clone + Serialize + DeserializeOwned + 'static,
    T: Clone + 'static,
    L: WindowLogic<K, T>,
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

    fn next_processing_timer(&self) -> Option<i64> {
        None
    }

    fn on_processing_time(&mut self, _now: i64) {}

    fn state_bytes(&self) -> u64 {
        self.store.size_bytes()
    }
}

impl<K, T, L> OperatorFactory for WindowFactory<K, T, L>
where
    K: Clone + Serialize + DeserializeOwned + 'static,
    T: Clone + 'static,
    L: WindowLogic<K, T> + 'static,
{
    fn create(&self, b: &mut Build<'_>, inputs: Vec<AnyPort>) -> Result<Outputs, String> {
        if b.tuples.is_some() && self.spec.assigner.is_merging() {
            return Err(format!(
                "{}: under the Storm model windows are tumbling, sliding or global, not \
                 sessions",
                b.uid
            ));
        }
        let sides = SidePorts::default();
        let mut op = WindowOperator::new(b, self.spec.clone(), self.logic.clone(), &sides);
        if let Some(bytes) = b.restored {
            op.restore(bytes)
                .map_err(|e| format!("restore {}: {e}", b.uid))?;
        }
        let main: AnyPort = Box::new(op.out.clone());
        let op = Rc::new(RefCell::new(op));
        let o = Rc::clone(&op);
        port_of::<T>(&inputs[0]).subscribe(Box::new(move |el| o.borrow_mut().on_element(el)));
        b.register(op);
        Ok(Outputs { main, sides })
    }
}

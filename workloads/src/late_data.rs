//! The late-data workload: keyed events with designed disorder, a tumbling-window count/sum job
//! with allowed lateness and a late-data side output, and an oracle for it.
//!
//! Events are generated in the order they are written. Each one is built to land in one of
//! three places relative to the watermark a single reader will have when it reads it:
//! - **on time**: within the out-of-orderness bound of the largest timestamp so far, so never late;
//! - **late, within lateness**: its window has fired but is not yet cleaned up, so the window
//!   fires again with a corrected result;
//! - **too late**: beyond the bound plus the allowed lateness, so it goes to the side output.
//!
//! The oracle is written separately from the engine, in the plainest way: it replays records in
//! read order, tracks the watermark per split, and says exactly what the job must emit.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use weir_engine::state::CountSum;
use weir_engine::{DataStream, OutputTag, WindowAssigner, Windowed};

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id.
    pub id: u64,
    /// Key.
    pub key: u32,
    /// Event time, in milliseconds.
    pub ts: i64,
    /// Value summed by the job.
    pub amount: i64,
    /// What the generator designed it to be.
    pub kind: Kind,
}

/// The designed lateness of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// Within the out-of-orderness bound.
    OnTime,
    /// After its window fired, within the allowed lateness.
    LateWithinLateness,
    /// Beyond the bound plus the allowed lateness.
    TooLate,
}

/// Window and watermark settings, shared by the job, the generator and the oracle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Tumbling window size, in milliseconds.
    pub window_ms: i64,
    /// Out-of-orderness bound, in milliseconds.
    pub bound_ms: i64,
    /// Allowed lateness, in milliseconds.
    pub lateness_ms: i64,
}

/// A window result of the job: key, window, (count, sum).
pub type WindowResult = Windowed<u32, (u64, i64)>;
/// Firings per (key, window start), each a (count, sum), in order.
pub type Firings = BTreeMap<(u32, i64), Vec<(u64, i64)>>;

/// The side output for events beyond the allowed lateness.
pub const LATE: OutputTag<Event> = OutputTag::new("late-events");

/// The job: key by `key`, tumbling windows with allowed lateness, count and sum, late events to
/// [`LATE`]. Returns the window results and the late events.
pub fn job(events: &DataStream<Event>, t: Timing) -> (DataStream<WindowResult>, DataStream<Event>) {
    let windows = events
        .key_by(|e: &Event| e.key)
        .window(WindowAssigner::tumbling(Duration::from_millis(
            t.window_ms as u64,
        )))
        .allowed_lateness(Duration::from_millis(t.lateness_ms as u64))
        .side_output_late_data(&LATE)
        .aggregate(CountSum::new(|e: &Event| e.amount))
        .uid("late-data-windows");
    let late = windows.side_output(&LATE);
    (windows, late)
}

fn window_start(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

/// Generates `n` events for one reader, in write order, starting at event time `t0`.
pub fn generate<R: Rng + ?Sized>(
    rng: &mut R,
    t: Timing,
    n: usize,
    keys: u32,
    t0: i64,
) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    let mut frontier = t0;
    let mut max_ts: Option<i64> = None;
    for id in 0..n as u64 {
        frontier += rng.random_range(0..=t.window_ms / 20);
        let wm = max_ts.map_or(i64::MIN, |m| m - t.bound_ms - 1);
        let key = rng.random_range(0..keys);
        let amount = rng.random_range(1..=100);
        let roll = rng.random_range(0..100);
        // The newest window that has fired; late designs pick from it or older ones.
        let fired_end = if wm == i64::MIN {
            None
        } else {
            Some(window_start(wm + 1, t.window_ms))
        };
        let designed = match (roll, fired_end) {
            (0..=9, Some(end)) if end - 1 + t.lateness_ms > wm => {
                // Window [end - size, end) has fired (end - 1 <= wm) and is not cleaned up.
                Some((
                    Kind::LateWithinLateness,
                    rng.random_range(end - t.window_ms..end),
                ))
            }
            (10..=17, Some(_)) => {
                // A window whose cleanup time (end - 1 + lateness) is at or below the watermark.
                let newest_clean_end = window_start(wm - t.lateness_ms + 1, t.window_ms);
                let end = newest_clean_end - t.window_ms * rng.random_range(0..3);
                Some((Kind::TooLate, rng.random_range(end - t.window_ms..end)))
            }
            _ => None,
        };
        let (kind, ts) = designed.unwrap_or_else(|| {
            // On time: never below the largest timestamp minus the bound. Every tenth lands
            // exactly on a window boundary, where off-by-one mistakes show.
            let floor = max_ts
                .map_or(frontier, |m| m - t.bound_ms)
                .max(frontier - t.bound_ms);
            let ts = if id % 10 == 0 {
                let b = window_start(frontier, t.window_ms);
                if b >= floor { b } else { frontier }
            } else {
                rng.random_range(floor..=frontier.max(floor))
            };
            (Kind::OnTime, ts)
        });
        max_ts = Some(max_ts.map_or(ts, |m| m.max(ts)));
        out.push(Event {
            id,
            key,
            ts,
            amount,
            kind,
        });
    }
    out
}

/// What the job must emit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Per (key, window start): every firing's (count, sum), in order.
    pub firings: Firings,
    /// Ids of events sent to the late side output.
    pub late: BTreeSet<u64>,
    /// Ids of events that were late when read (watermark at or past their timestamp).
    pub arrived_late: BTreeSet<u64>,
}

/// Computes the exact output of [`job`] for records read in the order given, as
/// `(split, event)`, from a source with `splits`.
pub fn oracle(t: Timing, splits: &[u32], reads: &[(u32, Event)]) -> Expected {
    let mut exp = Expected::default();
    let mut split_max: BTreeMap<u32, Option<i64>> = splits.iter().map(|s| (*s, None)).collect();
    let mut wm = i64::MIN;
    // Live windows: (key, start) -> (count, sum, fired on time yet).
    let mut live: BTreeMap<(u32, i64), (u64, i64, bool)> = BTreeMap::new();
    let advance = |to: i64,
                   wm: &mut i64,
                   live: &mut BTreeMap<(u32, i64), (u64, i64, bool)>,
                   exp: &mut Expected| {
        if to <= *wm {
            return;
        }
        *wm = to;
        for ((key, start), (count, sum, fired)) in live.iter_mut() {
            let max_ts = start + t.window_ms - 1;
            if !*fired && max_ts <= to {
                *fired = true;
                exp.firings
                    .entry((*key, *start))
                    .or_default()
                    .push((*count, *sum));
            }
        }
        live.retain(|(_, start), _| start + t.window_ms - 1 + t.lateness_ms > to);
    };
    for (split, e) in reads {
        if e.ts <= wm {
            exp.arrived_late.insert(e.id);
        }
        let start = window_start(e.ts, t.window_ms);
        let max_ts = start + t.window_ms - 1;
        if max_ts + t.lateness_ms <= wm {
            exp.late.insert(e.id);
        } else {
            let w = live.entry((e.key, start)).or_insert((0, 0, false));
            w.0 += 1;
            w.1 += e.amount;
            if max_ts <= wm {
                w.2 = true;
                let (c, s) = (w.0, w.1);
                exp.firings.entry((e.key, start)).or_default().push((c, s));
            }
        }
        let m = split_max.entry(*split).or_insert(None);
        *m = Some(m.map_or(e.ts, |x| x.max(e.ts)));
        let next = split_max
            .values()
            .map(|m| m.map_or(i64::MIN, |x| x - t.bound_ms - 1))
            .min()
            .unwrap_or(i64::MIN);
        advance(next, &mut wm, &mut live, &mut exp);
    }
    advance(i64::MAX, &mut wm, &mut live, &mut exp);
    exp
}

/// Groups what the job emitted the way [`Expected`] does.
pub fn observed(results: &[WindowResult], late: &[Event]) -> (Firings, BTreeSet<u64>) {
    let mut firings: Firings = BTreeMap::new();
    for w in results {
        firings
            .entry((w.key, w.window.start))
            .or_default()
            .push(w.value);
    }
    (firings, late.iter().map(|e| e.id).collect())
}

/// Differences between what the job emitted and what the oracle expects, as sentences.
pub fn compare(exp: &Expected, results: &[WindowResult], late: &[Event]) -> Vec<String> {
    let mut out = Vec::new();
    let (firings, late_ids) = observed(results, late);
    for (k, want) in &exp.firings {
        match firings.get(k) {
            None => out.push(format!(
                "window key {} start {}: expected firings {want:?}, got none",
                k.0, k.1
            )),
            Some(got) if got != want => out.push(format!(
                "window key {} start {}: expected firings {want:?}, got {got:?}",
                k.0, k.1
            )),
            Some(_) => {}
        }
    }
    for (k, got) in &firings {
        if !exp.firings.contains_key(k) {
            out.push(format!(
                "window key {} start {}: unexpected firings {got:?}",
                k.0, k.1
            ));
        }
    }
    for id in exp.late.difference(&late_ids) {
        out.push(format!(
            "event {id} should have gone to the late side output"
        ));
    }
    for id in late_ids.difference(&exp.late) {
        out.push(format!(
            "event {id} went to the late side output but is within the allowed lateness"
        ));
    }
    out
}

/// Events whose designed lateness did not hold for the order they were read in.
pub fn check_design(exp: &Expected, reads: &[(u32, Event)]) -> Vec<String> {
    let mut out = Vec::new();
    for (_, e) in reads {
        let arrived_late = exp.arrived_late.contains(&e.id);
        let dropped = exp.late.contains(&e.id);
        let broken = match e.kind {
            Kind::OnTime => arrived_late,
            Kind::LateWithinLateness => !arrived_late || dropped,
            Kind::TooLate => !dropped,
        };
        if broken {
            out.push(format!(
                "event {} designed {:?} was read late={arrived_late}, dropped={dropped}",
                e.id, e.kind
            ));
        }
    }
    out
}

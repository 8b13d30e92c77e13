//! Keyed event-time windows (tumbling, sliding or session) with the built-in aggregates a
//! job's functions build on: count, sum, and the least and greatest value, each with the
//! payload of the row that holds it.
//!
//! A row entering a window has the value `<integer>` or `<integer> <payload>`. The integer is
//! summed and compared; the payload rides along with the extremes, so that a job can ask which
//! bid was the highest, or which person a join found. Rows whose integer does not parse are
//! counted, and reported as malformed. Ties between extremes go to the smaller payload, so that
//! a result does not depend on the order rows arrive in.

use super::element::Row;
use crate::stream::window::{TimeWindow, WindowAssigner};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// The most windows one row may fall in (sliding windows' size over slide).
pub const WINDOWS_PER_ROW_MAX: i64 = 1_000;

/// An extreme value of a window and the payload of the row it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extreme {
    /// The value.
    pub value: i64,
    /// The payload of its row (empty when the row had none).
    pub of: String,
}

/// One key's aggregate in one window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Rows.
    pub count: u64,
    /// Sum of their values.
    pub sum: i64,
    /// The least value.
    pub min: Option<Extreme>,
    /// The greatest value.
    pub max: Option<Extreme>,
}

impl Stats {
    /// Folds in one value; `None` is a row whose value did not parse: counted only.
    fn add(&mut self, value: Option<(i64, &str)>) {
        self.count += 1;
        let Some((value, of)) = value else { return };
        self.sum = self.sum.wrapping_add(value);
        self.offer(value, of);
    }

    /// Folds in another window's aggregate (sessions that merge).
    fn merge(&mut self, other: Stats) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
        for e in other.min.iter().chain(other.max.iter()) {
            self.offer(e.value, &e.of);
        }
    }

    /// Keeps `value` as the least or greatest value if it is; a tie goes to the smaller
    /// payload. The payload is copied only when it is kept.
    fn offer(&mut self, value: i64, of: &str) {
        let kept = |e: &mut Option<Extreme>, better: bool| {
            if better {
                *e = Some(Extreme {
                    value,
                    of: of.to_string(),
                });
            }
        };
        let least = self
            .min
            .as_ref()
            .is_none_or(|m| (value, of) < (m.value, m.of.as_str()));
        kept(&mut self.min, least);
        let greatest = self
            .max
            .as_ref()
            .is_none_or(|m| (Reverse(value), of) < (Reverse(m.value), m.of.as_str()));
        kept(&mut self.max, greatest);
    }
}

/// The result of one window for one key, as the operator emits it: a JSON value under the
/// key, stamped with the window's last millisecond.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowResult {
    /// Window start, inclusive, in ms.
    pub start: i64,
    /// Window end, exclusive, in ms.
    pub end: i64,
    /// Rows in the window.
    pub count: u64,
    /// Sum of their values.
    pub sum: i64,
    /// The least value and its row's payload.
    pub min: Option<Extreme>,
    /// The greatest value and its row's payload.
    pub max: Option<Extreme>,
}

/// Counters of a window operator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCounters {
    /// Rows at or below the watermark on arrival, dropped: a window they belong to may have
    /// fired.
    pub late_dropped: u64,
    /// Rows whose value does not start with a decimal integer; counted, not summed.
    pub malformed: u64,
    /// Windows fired.
    pub fired: u64,
}

/// Why an assigner cannot run in the distributed runtime.
pub fn check_assigner(assigner: &WindowAssigner) -> Result<(), String> {
    match *assigner {
        WindowAssigner::Tumbling { size, .. } if size > 0 => Ok(()),
        WindowAssigner::Sliding { size, slide, .. }
            if slide > 0 && size >= slide && size / slide <= WINDOWS_PER_ROW_MAX =>
        {
            Ok(())
        }
        WindowAssigner::Session { gap } if gap > 0 => Ok(()),
        WindowAssigner::Global => Err("global windows need a count trigger, which the \
                                       distributed runtime does not run"
            .into()),
        other => Err(format!(
            "{other:?}: lengths must be positive, and a row may fall in at most \
             {WINDOWS_PER_ROW_MAX} sliding windows"
        )),
    }
}

/// The operator. Open windows are held by (end, key, start), so that the watermark fires
/// them in event-time order; sessions are also indexed by key, to find the ones a row merges.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyedWindows {
    assigner: WindowAssigner,
    open: BTreeMap<(i64, Vec<u8>, i64), Stats>,
    sessions: BTreeMap<Vec<u8>, Vec<TimeWindow>>,
    watermark: i64,
    counters: WindowCounters,
    /// Entries changed since the last [`KeyedWindows::take_changes`], when changes are logged
    /// (the Kafka Streams model's changelog); at most the open windows plus those fired since.
    changed: Option<BTreeSet<WindowKey>>,
}

/// An open window's place: (end, key, start).
type WindowKey = (i64, Vec<u8>, i64);

/// One change to a window operator's state, as its changelog holds it: the entry's key, and its
/// aggregate or, for a window that closed or merged away, `None`.
pub type WindowChange = (Vec<u8>, Option<Vec<u8>>);

impl KeyedWindows {
    /// An operator assigning rows with `assigner`, which [`check_assigner`] accepts.
    pub fn new(assigner: WindowAssigner) -> Self {
        assert_eq!(check_assigner(&assigner), Ok(()));
        Self {
            assigner,
            open: BTreeMap::new(),
            sessions: BTreeMap::new(),
            watermark: i64::MIN,
            counters: WindowCounters::default(),
            changed: None,
        }
    }

    /// Records which entries change from now on, for [`KeyedWindows::take_changes`].
    pub fn log_changes(&mut self) {
        self.changed.get_or_insert_with(BTreeSet::new);
    }

    fn touched(&mut self, key: &WindowKey) {
        if let Some(changed) = &mut self.changed {
            changed.insert(key.clone());
        }
    }

    /// The entries changed since the last call, each with its aggregate now (or `None` if it
    /// is gone), in key order; empty unless changes are logged.
    pub fn take_changes(&mut self) -> Vec<WindowChange> {
        let Some(changed) = &mut self.changed else {
            return Vec::new();
        };
        std::mem::take(changed)
            .into_iter()
            .map(|k| {
                let value = self
                    .open
                    .get(&k)
                    .map(|s| serde_json::to_vec(s).expect("window state serializes"));
                (
                    serde_json::to_vec(&k).expect("window keys serialize"),
                    value,
                )
            })
            .collect()
    }

    /// Applies one change read back from a changelog (the last one for an entry wins).
    pub fn apply_change(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let k: WindowKey =
            serde_json::from_slice(key).map_err(|e| format!("changelog key: {e}"))?;
        let (end, ref row_key, start) = k;
        if start >= end {
            return Err(format!("an empty window [{start}, {end}) in the changelog"));
        }
        let merging = self.assigner.is_merging();
        match value {
            Some(v) => {
                let stats: Stats =
                    serde_json::from_slice(v).map_err(|e| format!("changelog value: {e}"))?;
                if merging && !self.open.contains_key(&k) {
                    let w = TimeWindow::new(start, end);
                    self.sessions.entry(row_key.clone()).or_default().push(w);
                }
                self.open.insert(k, stats);
            }
            None => {
                if self.open.remove(&k).is_some() && merging {
                    self.forget_session(row_key, start, end);
                }
            }
        }
        Ok(())
    }

    fn forget_session(&mut self, key: &[u8], start: i64, end: i64) {
        if let Some(sessions) = self.sessions.get_mut(key) {
            sessions.retain(|s| (s.start, s.end) != (start, end));
            if sessions.is_empty() {
                self.sessions.remove(key);
            }
        }
    }

    /// Adds a row to its windows, unless the watermark has passed it.
    pub fn add(&mut self, row: &Row) {
        if row.ts <= self.watermark {
            self.counters.late_dropped += 1;
            return;
        }
        let parsed = parse_value(&row.value);
        if parsed.is_none() {
            self.counters.malformed += 1;
        }
        let value = parsed.as_ref().map(|(v, of)| (*v, &**of));
        if let WindowAssigner::Session { gap } = self.assigner {
            let window = self.merge_session(&row.key, TimeWindow::new(row.ts, row.ts + gap));
            self.stats(&row.key, window).add(value);
            return;
        }
        for window in self.assigner.assign(row.ts, false) {
            self.stats(&row.key, window).add(value);
        }
    }

    fn stats(&mut self, key: &[u8], w: TimeWindow) -> &mut Stats {
        let k = (w.end, key.to_vec(), w.start);
        self.touched(&k);
        self.open.entry(k).or_default()
    }

    /// Merges `window` with the key's sessions it touches, and returns the session that
    /// covers them all, whose aggregate holds theirs.
    fn merge_session(&mut self, key: &[u8], window: TimeWindow) -> TimeWindow {
        let sessions = self.sessions.entry(key.to_vec()).or_default();
        let mut cover = window;
        let mut merged = Stats::default();
        let mut kept = Vec::with_capacity(sessions.len() + 1);
        for s in sessions.drain(..) {
            if s.intersects(&window) {
                cover = cover.cover(&s);
                let k = (s.end, key.to_vec(), s.start);
                let stats = self
                    .open
                    .remove(&k)
                    .expect("every session has an open window");
                if let Some(changed) = &mut self.changed {
                    changed.insert(k);
                }
                merged.merge(stats);
            } else {
                kept.push(s);
            }
        }
        kept.push(cover);
        *sessions = kept;
        self.stats(key, cover).merge(merged);
        cover
    }

    /// Advances the watermark and returns the windows it closes, oldest end first.
    pub fn advance(&mut self, watermark: i64) -> Vec<Row> {
        if watermark <= self.watermark {
            return Vec::new();
        }
        self.watermark = watermark;
        let mut fired = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            let (end, _, _) = entry.key();
            // A window is complete once no row at or below its last millisecond can come.
            if *end - 1 > watermark {
                break;
            }
            let (k, stats) = entry.remove_entry();
            self.touched(&k);
            let (end, key, start) = k;
            self.forget_session(&key, start, end);
            let result = WindowResult {
                start,
                end,
                count: stats.count,
                sum: stats.sum,
                min: stats.min,
                max: stats.max,
            };
            fired.push(Row {
                key: Bytes::from(key),
                value: Bytes::from(serde_json::to_vec(&result).expect("results serialize")),
                ts: end - 1,
            });
        }
        self.counters.fired += fired.len() as u64;
        fired
    }

    /// Counters so far.
    pub fn counters(&self) -> WindowCounters {
        self.counters
    }

    /// Bytes of state held (keys, bounds, aggregates and payloads).
    pub fn state_bytes(&self) -> u64 {
        self.open
            .iter()
            .map(|((_, k, _), s)| (k.len(), s))
            .map(|(k, s)| {
                let payloads = s.min.as_ref().map_or(0, |m| m.of.len())
                    + s.max.as_ref().map_or(0, |m| m.of.len());
                (k + 16 + std::mem::size_of::<Stats>() + payloads) as u64
            })
            .sum()
    }

    /// The open windows, for a snapshot. The watermark is not saved: after a restore the
    /// replayed input brings it back, as in any restart from a checkpoint.
    pub fn snapshot(&self) -> Vec<u8> {
        let saved = Saved {
            assigner: self.assigner,
            open: self
                .open
                .iter()
                .map(|((end, key, start), s)| (*start, *end, key.clone(), s.clone()))
                .collect(),
            counters: self.counters,
        };
        serde_json::to_vec(&saved).expect("window state serializes")
    }

    /// An operator restored from [`KeyedWindows::snapshot`], which must have been taken with
    /// `assigner`: a job cannot change its windows under saved state.
    pub fn restore(assigner: WindowAssigner, bytes: &[u8]) -> Result<Self, String> {
        let saved: Saved = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if saved.assigner != assigner {
            return Err(format!(
                "the snapshot's windows are {:?}, the job's are {assigner:?}",
                saved.assigner
            ));
        }
        let mut windows = Self::new(assigner);
        windows.counters = saved.counters;
        for (start, end, key, stats) in saved.open {
            if start >= end {
                return Err(format!("an empty window [{start}, {end}) in the snapshot"));
            }
            if assigner.is_merging() {
                windows
                    .sessions
                    .entry(key.clone())
                    .or_default()
                    .push(TimeWindow::new(start, end));
            }
            windows.open.insert((end, key, start), stats);
        }
        Ok(windows)
    }
}

#[derive(Serialize, Deserialize)]
struct Saved {
    assigner: WindowAssigner,
    open: Vec<(i64, i64, Vec<u8>, Stats)>,
    counters: WindowCounters,
}

/// A row value's integer and payload: `<integer>[ <payload>]`; the payload is borrowed unless
/// it is not UTF-8.
pub(crate) fn parse_value(value: &[u8]) -> Option<(i64, Cow<'_, str>)> {
    let (number, payload) = match value.iter().position(|b| *b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &[][..]),
    };
    let v = std::str::from_utf8(number).ok()?.parse::<i64>().ok()?;
    Some((v, String::from_utf8_lossy(payload)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(key: &str, value: &str, ts: i64) -> Row {
        Row::text(key, value, ts)
    }

    fn results(rows: &[Row]) -> Vec<(String, WindowResult)> {
        rows.iter()
            .map(|r| {
                (
                    String::from_utf8(r.key.to_vec()).unwrap(),
                    serde_json::from_slice(&r.value).unwrap(),
                )
            })
            .collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn tumbling_windows_fire_in_order_when_the_watermark_passes_and_late_rows_drop() {
        let mut w = KeyedWindows::new(WindowAssigner::tumbling(ms(100)));
        w.add(&row("a", "2", 5));
        w.add(&row("a", "3 x", 99));
        w.add(&row("b", "x", 150));
        w.add(&row("a", "1", -1));
        let fired = results(&w.advance(98));
        assert_eq!(fired.len(), 1, "only [-100, 0) is complete");
        assert_eq!((fired[0].1.start, fired[0].1.end), (-100, 0));
        let fired = results(&w.advance(99));
        assert_eq!(fired[0].0, "a");
        let r = &fired[0].1;
        assert_eq!((r.start, r.count, r.sum), (0, 2, 5));
        assert_eq!(
            r.max.as_ref().map(|m| (m.value, m.of.as_str())),
            Some((3, "x"))
        );
        assert_eq!(
            r.min.as_ref().map(|m| (m.value, m.of.as_str())),
            Some((2, ""))
        );
        w.add(&row("a", "7", 50));
        assert_eq!(w.counters().late_dropped, 1);
        let fired = results(&w.advance(i64::MAX));
        assert_eq!((fired[0].0.as_str(), fired[0].1.count), ("b", 1));
        assert_eq!((fired[0].1.min.clone(), fired[0].1.sum), (None, 0));
        assert_eq!(w.counters().malformed, 1);
    }

    #[test]
    fn extremes_break_ties_by_payload_whatever_the_arrival_order() {
        let rows = [row("k", "5 b", 1), row("k", "5 a", 2), row("k", "1 c", 3)];
        let mut forward = KeyedWindows::new(WindowAssigner::tumbling(ms(10)));
        let mut backward = KeyedWindows::new(WindowAssigner::tumbling(ms(10)));
        rows.iter().for_each(|r| forward.add(r));
        rows.iter().rev().for_each(|r| backward.add(r));
        let (f, b) = (forward.advance(i64::MAX), backward.advance(i64::MAX));
        assert_eq!(f, b);
        let r = &results(&f)[0].1;
        assert_eq!(r.max.as_ref().unwrap().of, "a");
        assert_eq!(r.min.as_ref().unwrap().of, "c");
    }

    #[test]
    fn sliding_windows_count_a_row_in_each_window_that_covers_it() {
        let mut w = KeyedWindows::new(WindowAssigner::sliding(ms(30), ms(10)));
        w.add(&row("k", "1", 25));
        w.add(&row("k", "2", 31));
        let fired: Vec<_> = results(&w.advance(i64::MAX))
            .into_iter()
            .map(|(_, r)| (r.start, r.end, r.count, r.sum))
            .collect();
        assert_eq!(
            fired,
            vec![
                (0, 30, 1, 1),
                (10, 40, 2, 3),
                (20, 50, 2, 3),
                (30, 60, 1, 2)
            ]
        );
    }

    #[test]
    fn sessions_merge_rows_within_the_gap_and_fire_after_it() {
        let mut w = KeyedWindows::new(WindowAssigner::session(ms(10)));
        w.add(&row("k", "1", 0));
        w.add(&row("k", "2", 25));
        w.add(&row("j", "9", 3));
        // Bridges [0, 10) and [25, 35): [12, 22) touches neither, then 20 joins both ends.
        w.add(&row("k", "3", 12));
        assert_eq!(w.sessions[b"k".as_slice()].len(), 3);
        w.add(&row("k", "4", 20));
        assert_eq!(w.sessions[b"k".as_slice()].len(), 2);
        w.add(&row("k", "5", 10));
        let fired: Vec<_> = results(&w.advance(i64::MAX))
            .into_iter()
            .map(|(k, r)| (k, r.start, r.end, r.count, r.sum))
            .collect();
        assert_eq!(
            fired,
            vec![("j".into(), 3, 13, 1, 9), ("k".into(), 0, 35, 5, 15)]
        );
        assert!(w.sessions.is_empty() && w.open.is_empty());
    }

    #[test]
    fn snapshots_restore_open_windows_and_refuse_other_assigners() {
        for assigner in [
            WindowAssigner::tumbling(ms(10)),
            WindowAssigner::sliding(ms(20), ms(10)),
            WindowAssigner::session(ms(5)),
        ] {
            let mut w = KeyedWindows::new(assigner);
            w.add(&row("k", "4 p", 3));
            w.add(&row("j", "1", 13));
            let mut back = KeyedWindows::restore(assigner, &w.snapshot()).unwrap();
            back.add(&row("k", "2", 6));
            w.add(&row("k", "2", 6));
            assert_eq!(back.advance(i64::MAX), w.advance(i64::MAX), "{assigner:?}");
        }
        let w = KeyedWindows::new(WindowAssigner::tumbling(ms(10)));
        let other = WindowAssigner::tumbling(ms(20));
        assert!(KeyedWindows::restore(other, &w.snapshot()).is_err());
        assert!(KeyedWindows::restore(other, b"{}").is_err());
        assert!(check_assigner(&WindowAssigner::Global).is_err());
        assert!(check_assigner(&WindowAssigner::sliding(ms(10_000), ms(1))).is_err());
    }
}

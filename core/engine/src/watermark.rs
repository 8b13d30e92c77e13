//! Watermark strategies and per-split watermark tracking at sources.
//!
//! A source tracks a watermark per split (per partition, for a broker topic): the largest event
//! time seen minus the out-of-orderness bound, minus one. The source's watermark is the minimum
//! over its splits, leaving out splits that have been idle for the idleness timeout. Watermarks
//! are emitted after every record that advances them, so where a record falls relative to the
//! watermark depends only on the order records are read in.

use crate::element::{MAX_WATERMARK, MIN_WATERMARK, Timestamp};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// Computes a record's event time from its value and its source timestamp (if any).
pub type TimestampAssigner<T> = Rc<dyn Fn(&T, Option<Timestamp>) -> Timestamp>;

/// How a source stamps records and derives watermarks.
pub struct WatermarkStrategy<T> {
    bound_ms: Option<i64>,
    assigner: Option<TimestampAssigner<T>>,
    idleness_ms: Option<i64>,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        Self {
            bound_ms: self.bound_ms,
            assigner: self.assigner.clone(),
            idleness_ms: self.idleness_ms,
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).expect("durations fit in i64 milliseconds")
}

impl<T> WatermarkStrategy<T> {
    /// Records may arrive up to `bound` behind the largest event time seen: watermark = max seen
    /// − bound − 1.
    pub fn for_bounded_out_of_orderness(bound: Duration) -> Self {
        Self {
            bound_ms: Some(ms(bound)),
            assigner: None,
            idleness_ms: None,
        }
    }

    /// Event times never go backwards: watermark = max seen − 1.
    pub fn for_monotonous_timestamps() -> Self {
        Self {
            bound_ms: Some(0),
            assigner: None,
            idleness_ms: None,
        }
    }

    /// No watermarks (processing-time jobs).
    pub fn no_watermarks() -> Self {
        Self {
            bound_ms: None,
            assigner: None,
            idleness_ms: None,
        }
    }

    /// Takes event times from `f` instead of the source's timestamps.
    pub fn with_timestamp_assigner(
        mut self,
        f: impl Fn(&T, Option<Timestamp>) -> Timestamp + 'static,
    ) -> Self {
        self.assigner = Some(Rc::new(f));
        self
    }

    /// A split without records for `timeout` (processing time) stops holding the watermark back
    /// until it has records again.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idleness_ms = Some(ms(timeout));
        self
    }

    /// The event time of a record.
    pub(crate) fn timestamp(&self, value: &T, source_ts: Option<Timestamp>) -> Option<Timestamp> {
        match &self.assigner {
            Some(f) => Some(f(value, source_ts)),
            None => source_ts,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Split {
    max_ts: Option<Timestamp>,
    last_record_ms: i64,
    idle: bool,
    ended: bool,
}

/// What a source says about time after a record or a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SourceTime {
    /// Its watermark.
    Watermark(Timestamp),
    /// Every split that has not ended is idle.
    Idle,
    /// Nothing: the strategy makes no watermarks.
    Nothing,
}

/// The watermark state of one source subtask: a watermark per split (partition).
#[derive(Debug)]
pub(crate) struct SplitWatermarks {
    bound_ms: Option<i64>,
    idleness_ms: Option<i64>,
    splits: BTreeMap<u32, Split>,
    take_max: bool,
}

impl SplitWatermarks {
    /// Tracks `splits`, each starting from the largest event time saved for it; with
    /// `take_max` (a deliberate defect) it combines them with max.
    pub fn new<T>(
        strategy: &WatermarkStrategy<T>,
        splits: &[(u32, Option<Timestamp>)],
        now_ms: i64,
        take_max: bool,
    ) -> Self {
        let splits = splits
            .iter()
            .map(|(s, max_ts)| {
                let split = Split {
                    max_ts: *max_ts,
                    last_record_ms: now_ms,
                    idle: false,
                    ended: false,
                };
                (*s, split)
            })
            .collect();
        Self {
            bound_ms: strategy.bound_ms,
            idleness_ms: strategy.idleness_ms,
            splits,
            take_max,
        }
    }

    /// Notes a record with event time `ts` on `split`.
    pub fn on_record(&mut self, split: u32, ts: Option<Timestamp>, now_ms: i64) {
        let s = self.splits.entry(split).or_insert(Split {
            max_ts: None,
            last_record_ms: now_ms,
            idle: false,
            ended: false,
        });
        s.last_record_ms = now_ms;
        s.idle = false;
        if let Some(ts) = ts {
            s.max_ts = Some(s.max_ts.map_or(ts, |m| m.max(ts)));
        }
    }

    /// `split` has no more records: it no longer holds the watermark back.
    pub fn end(&mut self, split: u32) {
        if let Some(s) = self.splits.get_mut(&split) {
            s.ended = true;
        }
    }

    /// Marks splits idle that have had no record for the idleness timeout.
    pub fn check_idle(&mut self, now_ms: i64) {
        if let Some(timeout) = self.idleness_ms {
            for s in self.splits.values_mut() {
                if now_ms - s.last_record_ms >= timeout {
                    s.idle = true;
                }
            }
        }
    }

    /// The largest event time seen on each split, for a snapshot.
    pub fn max_timestamps(&self) -> BTreeMap<u32, Option<Timestamp>> {
        self.splits.iter().map(|(k, s)| (*k, s.max_ts)).collect()
    }

    /// What the source says about time now: the least watermark over the splits that are
    /// neither idle nor ended, the end of time once every split has ended, or idle.
    pub fn current(&self) -> SourceTime {
        let Some(bound) = self.bound_ms else {
            return SourceTime::Nothing;
        };
        let live = self.splits.values().filter(|s| !s.ended);
        if live.clone().next().is_none() {
            return SourceTime::Watermark(MAX_WATERMARK);
        }
        let active = live.filter(|s| !s.idle).map(|s| match s.max_ts {
            Some(m) => m.saturating_sub(bound).saturating_sub(1),
            None => MIN_WATERMARK,
        });
        let combined = if self.take_max {
            active.max()
        } else {
            active.min()
        };
        combined.map_or(SourceTime::Idle, SourceTime::Watermark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splits(n: u32) -> Vec<(u32, Option<Timestamp>)> {
        (0..n).map(|s| (s, None)).collect()
    }

    #[test]
    fn watermark_is_the_min_over_splits_minus_the_bound() {
        let s: WatermarkStrategy<()> =
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(5));
        let mut w = SplitWatermarks::new(&s, &splits(2), 0, false);
        w.on_record(0, Some(100), 0);
        assert_eq!(
            w.current(),
            SourceTime::Watermark(MIN_WATERMARK),
            "split 1 has seen nothing"
        );
        w.on_record(1, Some(50), 0);
        assert_eq!(w.current(), SourceTime::Watermark(44));
        w.on_record(1, Some(40), 0);
        assert_eq!(
            w.current(),
            SourceTime::Watermark(44),
            "an older record does not move it back"
        );
        w.on_record(1, Some(200), 0);
        assert_eq!(w.current(), SourceTime::Watermark(94));
        w.end(0);
        assert_eq!(
            w.current(),
            SourceTime::Watermark(194),
            "an ended split stops counting"
        );
        w.end(1);
        assert_eq!(w.current(), SourceTime::Watermark(MAX_WATERMARK));
        let mut m = SplitWatermarks::new(&s, &splits(2), 0, true);
        m.on_record(0, Some(100), 0);
        m.on_record(1, Some(50), 0);
        assert_eq!(
            m.current(),
            SourceTime::Watermark(94),
            "the deliberate defect takes the max"
        );
        let restored = SplitWatermarks::new(&s, &[(0, Some(100)), (1, Some(50))], 0, false);
        assert_eq!(restored.current(), SourceTime::Watermark(44));
        assert_eq!(restored.max_timestamps()[&0], Some(100));
    }

    #[test]
    fn idle_splits_stop_holding_the_watermark_back() {
        let s: WatermarkStrategy<()> = WatermarkStrategy::for_monotonous_timestamps()
            .with_idleness(Duration::from_millis(100));
        let mut w = SplitWatermarks::new(&s, &splits(2), 0, false);
        w.on_record(0, Some(10), 50);
        w.check_idle(99);
        assert_eq!(w.current(), SourceTime::Watermark(MIN_WATERMARK));
        w.check_idle(120);
        assert_eq!(
            w.current(),
            SourceTime::Watermark(9),
            "split 1 went idle at 100 ms"
        );
        w.on_record(1, Some(5), 130);
        assert_eq!(
            w.current(),
            SourceTime::Watermark(4),
            "an idle split that speaks again counts again"
        );
        w.check_idle(1000);
        assert_eq!(w.current(), SourceTime::Idle, "all idle");
        let none: WatermarkStrategy<()> = WatermarkStrategy::no_watermarks();
        assert_eq!(
            SplitWatermarks::new(&none, &splits(1), 0, false).current(),
            SourceTime::Nothing
        );
    }
}

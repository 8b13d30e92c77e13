//! Watermark strategies and per-split watermark tracking at sources.
//!
//! A source tracks a watermark per split (per partition, for a broker topic): the largest event
//! time seen minus the out-of-orderness bound, minus one. The source's watermark is the minimum
//! over its splits, leaving out splits that have been idle for the idleness timeout. Watermarks
//! are emitted after every record that advances them, so where a record falls relative to the
//! watermark depends only on the order records are read in.

use super::element::{MIN_WATERMARK, Timestamp};
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
}

/// The watermark state of one source.
#[derive(Debug)]
pub(crate) struct SplitWatermarks {
    bound_ms: Option<i64>,
    idleness_ms: Option<i64>,
    splits: BTreeMap<u32, Split>,
    take_max: bool,
}

impl SplitWatermarks {
    /// Tracks `splits`; with `take_max` (a deliberate defect) it combines them with max.
    pub fn new<T>(
        strategy: &WatermarkStrategy<T>,
        splits: &[u32],
        now_ms: i64,
        take_max: bool,
    ) -> Self {
        let splits = splits
            .iter()
            .map(|s| {
                (
                    *s,
                    Split {
                        max_ts: None,
                        last_record_ms: now_ms,
                        idle: false,
                    },
                )
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
        });
        s.last_record_ms = now_ms;
        s.idle = false;
        if let Some(ts) = ts {
            s.max_ts = Some(s.max_ts.map_or(ts, |m| m.max(ts)));
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

    /// The source's watermark, or `None` when it has none to give (no watermarks, or every split
    /// idle).
    pub fn current(&self) -> Option<Timestamp> {
        let bound = self.bound_ms?;
        let active = self
            .splits
            .values()
            .filter(|s| !s.idle)
            .map(|s| match s.max_ts {
                Some(m) => m.saturating_sub(bound).saturating_sub(1),
                None => MIN_WATERMARK,
            });
        if self.take_max {
            active.max()
        } else {
            active.min()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_is_the_min_over_splits_minus_the_bound() {
        let s: WatermarkStrategy<()> =
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(5));
        let mut w = SplitWatermarks::new(&s, &[0, 1], 0, false);
        w.on_record(0, Some(100), 0);
        assert_eq!(w.current(), Some(MIN_WATERMARK), "split 1 has seen nothing");
        w.on_record(1, Some(50), 0);
        assert_eq!(w.current(), Some(44));
        w.on_record(1, Some(40), 0);
        assert_eq!(
            w.current(),
            Some(44),
            "an older record does not move it back"
        );
        w.on_record(1, Some(200), 0);
        assert_eq!(w.current(), Some(94));
        let mut m = SplitWatermarks::new(&s, &[0, 1], 0, true);
        m.on_record(0, Some(100), 0);
        m.on_record(1, Some(50), 0);
        assert_eq!(m.current(), Some(94), "the deliberate defect takes the max");
    }

    #[test]
    fn idle_splits_stop_holding_the_watermark_back() {
        let s: WatermarkStrategy<()> = WatermarkStrategy::for_monotonous_timestamps()
            .with_idleness(Duration::from_millis(100));
        let mut w = SplitWatermarks::new(&s, &[0, 1], 0, false);
        w.on_record(0, Some(10), 50);
        w.check_idle(99);
        assert_eq!(w.current(), Some(MIN_WATERMARK));
        w.check_idle(120);
        assert_eq!(w.current(), Some(9), "split 1 went idle at 100 ms");
        w.on_record(1, Some(5), 130);
        assert_eq!(
            w.current(),
            Some(4),
            "an idle split that speaks again counts again"
        );
        w.check_idle(1000);
        assert_eq!(w.current(), None, "all idle");
    }
}

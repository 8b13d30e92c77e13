//! Event-time windows: windows, assigners, triggers and the window operator.

mod logic;
mod operator;

pub(crate) use logic::{AggregateLogic, ProcessLogic, ReduceLogic, WindowLogic};
pub(crate) use operator::{WindowFactory, WindowSpec};

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A window of event time: `start` inclusive, `end` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimeWindow {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after the window.
    pub end: i64,
}

impl TimeWindow {
    /// The window `[start, end)`.
    pub fn new(start: i64, end: i64) -> Self {
        assert!(start < end, "a window must be non-empty: [{start}, {end})");
        Self { start, end }
    }

    /// The single window of all time, used by global windows.
    pub fn global() -> Self {
        Self {
            start: i64::MIN,
            end: i64::MAX,
        }
    }

    /// Whether this is the global window.
    pub fn is_global(&self) -> bool {
        self.end == i64::MAX
    }

    /// The largest timestamp in the window; the window fires when the watermark reaches it.
    pub fn max_timestamp(&self) -> i64 {
        if self.is_global() {
            i64::MAX
        } else {
            self.end - 1
        }
    }

    /// Whether `ts` falls in the window.
    pub fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
    }

    /// Whether two windows overlap or touch, which makes session windows merge.
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).expect("window durations fit in i64 milliseconds")
}

/// How records are assigned to windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowAssigner {
    /// Fixed, non-overlapping windows of `size` ms, aligned to `offset`.
    Tumbling {
        /// Window length.
        size: i64,
        /// Alignment offset.
        offset: i64,
    },
    /// Windows of `size` ms starting every `slide` ms.
    Sliding {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
        /// Alignment offset.
        offset: i64,
    },
    /// Per-key sessions that close after `gap` ms without records; windows merge.
    Session {
        /// Inactivity gap.
        gap: i64,
    },
    /// One window per key for all time; needs a count trigger to fire.
    Global,
}

impl WindowAssigner {
    /// Tumbling windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        assert!(ms(size) > 0);
        WindowAssigner::Tumbling {
            size: ms(size),
            offset: 0,
        }
    }

    /// Sliding windows of `size`, one starting every `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        assert!(ms(slide) > 0 && ms(size) >= ms(slide));
        WindowAssigner::Sliding {
            size: ms(size),
            slide: ms(slide),
            offset: 0,
        }
    }

    /// Session windows with inactivity `gap`.
    pub fn session(gap: Duration) -> Self {
        assert!(ms(gap) > 0);
        WindowAssigner::Session { gap: ms(gap) }
    }

    /// The global window.
    pub fn global() -> Self {
        WindowAssigner::Global
    }

    /// Shifts window alignment by `offset` (tumbling and sliding windows).
    pub fn with_offset(self, offset: Duration) -> Self {
        match self {
            WindowAssigner::Tumbling { size, .. } => WindowAssigner::Tumbling {
                size,
                offset: ms(offset),
            },
            WindowAssigner::Sliding { size, slide, .. } => WindowAssigner::Sliding {
                size,
                slide,
                offset: ms(offset),
            },
            other => other,
        }
    }

    /// Whether windows of this assigner merge (sessions).
    pub fn is_merging(&self) -> bool {
        matches!(self, WindowAssigner::Session { .. })
    }

    /// The windows `ts` belongs to. With `off_by_one` (a deliberate defect) a timestamp that is
    /// exactly a window start lands in the window before.
    pub(crate) fn assign(&self, ts: i64, off_by_one: bool) -> Vec<TimeWindow> {
        let start_of = |offset: i64, every: i64| {
            if off_by_one {
                (ts - 1) - (ts - 1 - offset).rem_euclid(every)
            } else {
                ts - (ts - offset).rem_euclid(every)
            }
        };
        match *self {
            WindowAssigner::Tumbling { size, offset } => {
                let start = start_of(offset, size);
                vec![TimeWindow::new(start, start + size)]
            }
            WindowAssigner::Sliding {
                size,
                slide,
                offset,
            } => {
                let last = start_of(offset, slide);
                let mut out = Vec::with_capacity((size / slide) as usize);
                let mut start = last;
                while start > ts - size {
                    out.push(TimeWindow::new(start, start + size));
                    start -= slide;
                }
                out
            }
            WindowAssigner::Session { gap } => vec![TimeWindow::new(ts, ts + gap)],
            WindowAssigner::Global => vec![TimeWindow::global()],
        }
    }
}

/// When a window emits its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// When the watermark passes the window's end, and again for each late record within the
    /// allowed lateness. The default for time windows.
    EventTime,
    /// Every `n` records, clearing the window (the trigger for global windows).
    Count(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_windows_include_their_start_and_exclude_their_end() {
        let a = WindowAssigner::tumbling(Duration::from_millis(10));
        assert_eq!(a.assign(0, false), vec![TimeWindow::new(0, 10)]);
        assert_eq!(a.assign(9, false), vec![TimeWindow::new(0, 10)]);
        assert_eq!(a.assign(10, false), vec![TimeWindow::new(10, 20)]);
        assert_eq!(a.assign(-1, false), vec![TimeWindow::new(-10, 0)]);
        assert_eq!(TimeWindow::new(0, 10).max_timestamp(), 9);
        assert!(TimeWindow::new(0, 10).contains(0) && !TimeWindow::new(0, 10).contains(10));
        let shifted = a.with_offset(Duration::from_millis(3));
        assert_eq!(shifted.assign(2, false), vec![TimeWindow::new(-7, 3)]);
        assert_eq!(shifted.assign(3, false), vec![TimeWindow::new(3, 13)]);
        // The deliberate defect moves exact starts into the window before.
        assert_eq!(a.assign(10, true), vec![TimeWindow::new(0, 10)]);
        assert_eq!(a.assign(11, true), vec![TimeWindow::new(10, 20)]);
    }

    #[test]
    fn sliding_windows_cover_each_timestamp_size_over_slide_times() {
        let a = WindowAssigner::sliding(Duration::from_millis(60), Duration::from_millis(20));
        let ws = a.assign(45, false);
        assert_eq!(
            ws,
            vec![
                TimeWindow::new(40, 100),
                TimeWindow::new(20, 80),
                TimeWindow::new(0, 60)
            ]
        );
        assert!(ws.iter().all(|w| w.contains(45)));
        assert_eq!(a.assign(40, false)[0], TimeWindow::new(40, 100));
        assert_eq!(a.assign(40, false).len(), 3);
    }

    #[test]
    fn sessions_merge_when_they_touch() {
        let a = WindowAssigner::session(Duration::from_millis(10));
        let w1 = a.assign(0, false)[0];
        let w2 = a.assign(10, false)[0];
        let w3 = a.assign(21, false)[0];
        assert!(w1.intersects(&w2));
        assert!(!w2.intersects(&w3));
        assert_eq!(w1.cover(&w2), TimeWindow::new(0, 20));
        assert!(a.is_merging());
    }
}

/// A window result: the key, the window and the value computed for it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Windowed<K, V> {
    /// The key.
    pub key: K,
    /// The window.
    pub window: TimeWindow,
    /// The result.
    pub value: V,
}

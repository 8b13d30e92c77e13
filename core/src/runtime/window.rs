//! Keyed tumbling event-time windows that count rows and sum their values.

use super::element::Row;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One key's aggregate in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountSum {
    /// Rows.
    pub count: u64,
    /// Sum of their values.
    pub sum: i64,
}

/// The result of one window for one key, as the sink writes it (JSON value, the key as key).
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
}

/// Counters of a window operator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCounters {
    /// Rows at or below the watermark on arrival: their window had fired, so they are dropped.
    pub late_dropped: u64,
    /// Rows whose value is not a decimal integer; counted, not summed.
    pub malformed: u64,
    /// Windows fired.
    pub fired: u64,
}

/// The operator: open windows by (window end, key), so that the watermark fires them in
/// event-time order.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TumblingCountSum {
    size_ms: i64,
    open: BTreeMap<(i64, Vec<u8>), CountSum>,
    watermark: i64,
    counters: WindowCounters,
}

impl TumblingCountSum {
    /// An operator with windows of `size_ms`.
    pub fn new(size_ms: i64) -> Self {
        assert!(size_ms > 0, "windows have a positive length");
        Self {
            size_ms,
            open: BTreeMap::new(),
            watermark: i64::MIN,
            counters: WindowCounters::default(),
        }
    }

    /// Adds a row to its window, unless the watermark has passed it.
    pub fn add(&mut self, row: &Row) {
        if row.ts <= self.watermark {
            self.counters.late_dropped += 1;
            return;
        }
        let start = row.ts - row.ts.rem_euclid(self.size_ms);
        let value = std::str::from_utf8(&row.value)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok());
        let agg = self
            .open
            .entry((start + self.size_ms, row.key.to_vec()))
            .or_default();
        agg.count += 1;
        match value {
            Some(v) => agg.sum = agg.sum.wrapping_add(v),
            None => self.counters.malformed += 1,
        }
    }

    /// Advances the watermark and returns the windows it closes, oldest first.
    pub fn advance(&mut self, watermark: i64) -> Vec<Row> {
        if watermark <= self.watermark {
            return Vec::new();
        }
        self.watermark = watermark;
        let mut fired = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            let (end, _) = entry.key();
            // A window [start, end) is complete once no row below `end` can come.
            if *end - 1 > watermark {
                break;
            }
            let ((end, key), agg) = entry.remove_entry();
            let result = WindowResult {
                start: end - self.size_ms,
                end,
                count: agg.count,
                sum: agg.sum,
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

    /// Bytes of state held (keys and aggregates).
    pub fn state_bytes(&self) -> u64 {
        self.open
            .keys()
            .map(|(_, k)| (k.len() + 8 + std::mem::size_of::<CountSum>()) as u64)
            .sum()
    }

    /// The open windows, for a snapshot. The watermark is not saved: after a restore the
    /// replayed input brings it back, as in any restart from a checkpoint.
    pub fn snapshot(&self) -> Vec<u8> {
        let saved = Saved {
            size_ms: self.size_ms,
            open: self
                .open
                .iter()
                .map(|((e, k), a)| (*e, k.clone(), *a))
                .collect(),
            counters: self.counters,
        };
        serde_json::to_vec(&saved).expect("window state serializes")
    }

    /// An operator restored from [`TumblingCountSum::snapshot`].
    pub fn restore(bytes: &[u8]) -> Result<Self, String> {
        let saved: Saved = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if saved.size_ms <= 0 {
            return Err(format!("window size {} in the snapshot", saved.size_ms));
        }
        Ok(Self {
            size_ms: saved.size_ms,
            open: saved
                .open
                .into_iter()
                .map(|(e, k, a)| ((e, k), a))
                .collect(),
            watermark: i64::MIN,
            counters: saved.counters,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Saved {
    size_ms: i64,
    open: Vec<(i64, Vec<u8>, CountSum)>,
    counters: WindowCounters,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, value: &str, ts: i64) -> Row {
        Row {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value.to_string()),
            ts,
        }
    }

    fn result(r: &Row) -> (String, WindowResult) {
        (
            String::from_utf8(r.key.to_vec()).unwrap(),
            serde_json::from_slice(&r.value).unwrap(),
        )
    }

    #[test]
    fn windows_fire_in_order_when_the_watermark_passes_and_late_rows_drop() {
        let mut w = TumblingCountSum::new(100);
        w.add(&row("a", "2", 5));
        w.add(&row("a", "3", 99));
        w.add(&row("b", "x", 150));
        w.add(&row("a", "1", -1));
        let fired: Vec<_> = w.advance(98).iter().map(result).collect();
        assert_eq!(
            fired.len(),
            1,
            "only [-100, 0) is complete; [0, 100) ends at 100"
        );
        assert_eq!(
            (fired[0].1.start, fired[0].1.end, fired[0].1.count),
            (-100, 0, 1)
        );
        let fired: Vec<_> = w.advance(99).iter().map(result).collect();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].0, "a");
        assert_eq!(
            (fired[0].1.start, fired[0].1.count, fired[0].1.sum),
            (0, 2, 5)
        );
        w.add(&row("a", "7", 50));
        assert_eq!(w.counters().late_dropped, 1);
        let fired: Vec<_> = w.advance(i64::MAX).iter().map(result).collect();
        assert_eq!(fired.len(), 1, "[100, 200) for b");
        assert_eq!((fired[0].0.as_str(), fired[0].1.count), ("b", 1));
        assert_eq!(w.counters().malformed, 1);
    }

    #[test]
    fn snapshots_restore_open_windows() {
        let mut w = TumblingCountSum::new(10);
        w.add(&row("k", "4", 3));
        w.add(&row("j", "1", 13));
        let mut back = TumblingCountSum::restore(&w.snapshot()).unwrap();
        assert_eq!(back.advance(i64::MAX), w.advance(i64::MAX));
        assert!(TumblingCountSum::restore(b"{}").is_err());
    }
}

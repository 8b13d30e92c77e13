//! Keyed running totals in event-time order: each row is held until the watermark passes it,
//! then released with its key's count and sum up to and including it.
//!
//! Rows arrive out of order; the watermark says when no earlier row can still come, so rows at
//! or below it can be released sorted. Rows with equal event times are released in the order
//! of their values' bytes, so that the totals do not depend on arrival order. Values are read
//! as window rows are (see [`super::window`]): `<integer>[ <payload>]`.

use super::element::Row;
use super::window::parse_value;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One released row's value, as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTotal {
    /// This row's integer (0 if it did not parse).
    pub value: i64,
    /// This row's payload.
    pub of: String,
    /// Rows of the key so far, this one included.
    pub count: u64,
    /// Sum of their integers.
    pub sum: i64,
}

/// Counters of the operator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningCounters {
    /// Rows at or below the watermark on arrival: rows after them were already released, so
    /// they are dropped rather than released out of order.
    pub late_dropped: u64,
    /// Rows whose value does not start with a decimal integer; counted, summed as 0.
    pub malformed: u64,
}

/// The operator.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyedRunning {
    /// Rows held, by (event time, value, key), with how many times each came.
    held: BTreeMap<(i64, Vec<u8>, Vec<u8>), u32>,
    /// Per key: rows released and their sum.
    totals: BTreeMap<Vec<u8>, (u64, i64)>,
    watermark: i64,
    counters: RunningCounters,
}

impl KeyedRunning {
    /// An operator with no state.
    pub fn new() -> Self {
        Self {
            watermark: i64::MIN,
            ..Self::default()
        }
    }

    /// Holds a row until the watermark passes it, unless it already has.
    pub fn add(&mut self, row: &Row) {
        if row.ts <= self.watermark {
            self.counters.late_dropped += 1;
            return;
        }
        *self
            .held
            .entry((row.ts, row.value.to_vec(), row.key.to_vec()))
            .or_default() += 1;
    }

    /// Advances the watermark and releases the rows at or below it, in event-time order,
    /// each with its key's running count and sum.
    pub fn advance(&mut self, watermark: i64) -> Vec<Row> {
        if watermark <= self.watermark {
            return Vec::new();
        }
        self.watermark = watermark;
        let mut released = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > watermark {
                break;
            }
            let ((ts, value, key), times) = entry.remove_entry();
            let parsed = parse_value(&value);
            if parsed.is_none() {
                self.counters.malformed += u64::from(times);
            }
            let (v, of) = parsed.unwrap_or_default();
            for _ in 0..times {
                let total = self.totals.entry(key.clone()).or_default();
                total.0 += 1;
                total.1 = total.1.wrapping_add(v);
                let out = RunningTotal {
                    value: v,
                    of: of.to_string(),
                    count: total.0,
                    sum: total.1,
                };
                released.push(Row {
                    key: Bytes::from(key.clone()),
                    value: Bytes::from(serde_json::to_vec(&out).expect("totals serialize")),
                    ts,
                });
            }
        }
        released
    }

    /// Counters so far.
    pub fn counters(&self) -> RunningCounters {
        self.counters
    }

    /// Bytes of state held (rows waiting and totals).
    pub fn state_bytes(&self) -> u64 {
        let held: usize = self
            .held
            .keys()
            .map(|(_, v, k)| 12 + v.len() + k.len())
            .sum();
        let totals: usize = self.totals.keys().map(|k| 16 + k.len()).sum();
        (held + totals) as u64
    }

    /// The held rows and totals, for a snapshot (the watermark comes back with the replayed
    /// input, as for windows).
    pub fn snapshot(&self) -> Vec<u8> {
        let saved = Saved {
            held: self
                .held
                .iter()
                .map(|((ts, v, k), n)| (*ts, v.clone(), k.clone(), *n))
                .collect(),
            totals: self
                .totals
                .iter()
                .map(|(k, (c, s))| (k.clone(), *c, *s))
                .collect(),
            counters: self.counters,
        };
        serde_json::to_vec(&saved).expect("running state serializes")
    }

    /// An operator restored from [`KeyedRunning::snapshot`].
    pub fn restore(bytes: &[u8]) -> Result<Self, String> {
        let saved: Saved = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut running = Self::new();
        running.counters = saved.counters;
        for (ts, v, k, n) in saved.held {
            if n == 0 {
                return Err(format!("a held row at {ts} that came 0 times"));
            }
            running.held.insert((ts, v, k), n);
        }
        running.totals = saved
            .totals
            .into_iter()
            .map(|(k, c, s)| (k, (c, s)))
            .collect();
        Ok(running)
    }
}

#[derive(Serialize, Deserialize)]
struct Saved {
    held: Vec<(i64, Vec<u8>, Vec<u8>, u32)>,
    totals: Vec<(Vec<u8>, u64, i64)>,
    counters: RunningCounters,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, value: &str, ts: i64) -> Row {
        Row::text(key, value, ts)
    }

    fn totals(rows: &[Row]) -> Vec<(String, i64, u64, i64, String)> {
        rows.iter()
            .map(|r| {
                let t: RunningTotal = serde_json::from_slice(&r.value).unwrap();
                (
                    String::from_utf8(r.key.to_vec()).unwrap(),
                    r.ts,
                    t.count,
                    t.sum,
                    t.of,
                )
            })
            .collect()
    }

    #[test]
    fn rows_are_released_in_event_time_order_with_their_keys_totals() {
        let mut r = KeyedRunning::new();
        r.add(&row("a", "5 o2", 20));
        r.add(&row("b", "1 o3", 15));
        r.add(&row("a", "3 o1", 10));
        assert_eq!(totals(&r.advance(9)), vec![]);
        assert_eq!(
            totals(&r.advance(15)),
            vec![
                ("a".into(), 10, 1, 3, "o1".into()),
                ("b".into(), 15, 1, 1, "o3".into())
            ]
        );
        r.add(&row("a", "1 late", 12));
        assert_eq!(r.counters().late_dropped, 1);
        r.add(&row("a", "2 o4", 20));
        r.add(&row("a", "2 o4", 20));
        let last = totals(&r.advance(i64::MAX));
        assert_eq!(
            last,
            vec![
                ("a".into(), 20, 2, 5, "o4".into()),
                ("a".into(), 20, 3, 7, "o4".into()),
                ("a".into(), 20, 4, 12, "o2".into())
            ],
            "equal times go by value bytes; duplicates each count"
        );
    }

    #[test]
    fn snapshots_restore_held_rows_and_totals() {
        let mut r = KeyedRunning::new();
        r.add(&row("a", "3", 1));
        r.advance(1);
        r.add(&row("a", "4", 2));
        let mut back = KeyedRunning::restore(&r.snapshot()).unwrap();
        assert_eq!(back.advance(5), r.advance(5));
        assert!(KeyedRunning::restore(b"[]").is_err());
    }
}

//! The windowed-aggregate checker: recomputes every (key, window) count and sum from the input
//! topic, apart from the engine, and compares it with the committed output. Exactly-once means
//! each window appears once, with the oracle's figures.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use weir_client::ConsumerRecord;

/// One window's result as `order-totals` writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowTotals {
    /// Window start, inclusive, in ms.
    pub start: i64,
    /// Window end, exclusive, in ms.
    pub end: i64,
    /// Rows in the window.
    pub count: u64,
    /// Sum of their values.
    pub sum: i64,
}

/// What one (key, window) should hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Rows.
    pub count: u64,
    /// Sum of their values.
    pub sum: i64,
}

/// Windows by (key, window start).
pub type Windows = BTreeMap<(String, i64), Expected>;

/// A broken promise of the output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowViolation {
    /// A window the input has is missing from the output.
    Lost {
        /// Key.
        key: String,
        /// Window start.
        start: i64,
        /// What it should hold.
        expected: Expected,
    },
    /// A window appears more than once.
    Duplicate {
        /// Key.
        key: String,
        /// Window start.
        start: i64,
        /// How many times.
        times: usize,
    },
    /// A window's figures differ from the input's.
    Wrong {
        /// Key.
        key: String,
        /// Window start.
        start: i64,
        /// What the input says.
        expected: Expected,
        /// What the output says.
        found: Expected,
    },
    /// At least once: a window's results, all together, count fewer rows than its input has.
    Short {
        /// Key.
        key: String,
        /// Window start.
        start: i64,
        /// What the input says.
        expected: Expected,
        /// Rows the window's results count, all together.
        counted: u64,
    },
    /// A window no input row belongs to.
    Unexpected {
        /// Key.
        key: String,
        /// Window start.
        start: i64,
    },
    /// An output record that is not a window result.
    Malformed {
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
}

impl fmt::Display for WindowViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lost {
                key,
                start,
                expected,
            } => write!(
                f,
                "lost: window {start} of key {key:?} ({} rows, sum {}) is not in the committed output",
                expected.count, expected.sum
            ),
            Self::Duplicate { key, start, times } => {
                write!(
                    f,
                    "duplicate: window {start} of key {key:?} is committed {times} times"
                )
            }
            Self::Wrong {
                key,
                start,
                expected,
                found,
            } => write!(
                f,
                "wrong: window {start} of key {key:?} has {} rows, sum {}; the input has {} rows, sum {}",
                found.count, found.sum, expected.count, expected.sum
            ),
            Self::Short {
                key,
                start,
                expected,
                counted,
            } => write!(
                f,
                "lost: window {start} of key {key:?}: its results count {counted} rows in all; the input has {}",
                expected.count
            ),
            Self::Unexpected { key, start } => {
                write!(f, "unexpected: window {start} of key {key:?} has no input")
            }
            Self::Malformed { partition, offset } => {
                write!(
                    f,
                    "malformed: output p{partition} offset {offset} is not a window result"
                )
            }
        }
    }
}

/// The windows of `window_ms` the input holds: each partition read up to its `end_marker`.
/// Values that are not integers count as rows and add nothing, as the job treats them.
pub fn oracle(
    input: &BTreeMap<i32, Vec<ConsumerRecord>>,
    window_ms: i64,
    end_marker: &[u8],
) -> Windows {
    let mut windows = Windows::new();
    for records in input.values() {
        for r in records {
            let value = r.value.as_deref().unwrap_or_default();
            if value == end_marker {
                break;
            }
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            let start = r.timestamp - r.timestamp.rem_euclid(window_ms);
            let w = windows
                .entry((key, start))
                .or_insert(Expected { count: 0, sum: 0 });
            w.count += 1;
            let amount = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok());
            w.sum = w.sum.wrapping_add(amount.unwrap_or(0));
        }
    }
    windows
}

/// Each window's results as the output holds them, by (key, window start).
type Found = BTreeMap<(String, i64), Vec<Expected>>;

/// The results the output holds, records of [`WindowTotals`] keyed by their key, grouped by
/// window; and the records that are not results.
fn results(output: &BTreeMap<i32, Vec<ConsumerRecord>>) -> (Found, Vec<WindowViolation>) {
    let decode = |r: &ConsumerRecord| {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let w: WindowTotals = serde_json::from_slice(r.value.as_deref()?).ok()?;
        let aggregate = Expected {
            count: w.count,
            sum: w.sum,
        };
        Some(((key, w.start), aggregate))
    };
    let mut violations = Vec::new();
    let mut found = Found::new();
    for (partition, records) in output {
        for r in records {
            match decode(r) {
                Some((window, aggregate)) => found.entry(window).or_default().push(aggregate),
                None => violations.push(WindowViolation::Malformed {
                    partition: *partition,
                    offset: r.offset,
                }),
            }
        }
    }
    (found, violations)
}

/// Exactly once: every window of the input appears once in the output, with the oracle's
/// figures, and no other does.
pub fn check_windows(
    expected: &Windows,
    output: &BTreeMap<i32, Vec<ConsumerRecord>>,
) -> Vec<WindowViolation> {
    let (found, mut violations) = results(output);
    for ((key, start), want) in expected {
        let (key, start) = (key.clone(), *start);
        match found.get(&(key.clone(), start)).map(Vec::as_slice) {
            None | Some([]) => violations.push(WindowViolation::Lost {
                key,
                start,
                expected: *want,
            }),
            Some([got]) if got == want => {}
            Some([got]) => violations.push(WindowViolation::Wrong {
                key,
                start,
                expected: *want,
                found: *got,
            }),
            Some(all) => violations.push(WindowViolation::Duplicate {
                key,
                start,
                times: all.len(),
            }),
        }
    }
    violations.extend(unexpected(expected, &found));
    violations
}

/// At least once: every window of the input has results, and together they count at least
/// its rows (a replayed row may be counted twice, or a window emitted again with the rows
/// replayed into it); no window without input appears. The counts alone cannot show that
/// each row was counted: this is what at least once requires of them, not all it promises.
pub fn check_windows_at_least_once(
    expected: &Windows,
    output: &BTreeMap<i32, Vec<ConsumerRecord>>,
) -> Vec<WindowViolation> {
    let (found, mut violations) = results(output);
    for ((key, start), want) in expected {
        let got = found.get(&(key.clone(), *start));
        let counted: u64 = got.map_or(0, |all| all.iter().map(|e| e.count).sum());
        if got.is_none_or(Vec::is_empty) {
            violations.push(WindowViolation::Lost {
                key: key.clone(),
                start: *start,
                expected: *want,
            });
        } else if counted < want.count {
            violations.push(WindowViolation::Short {
                key: key.clone(),
                start: *start,
                expected: *want,
                counted,
            });
        }
    }
    violations.extend(unexpected(expected, &found));
    violations
}

fn unexpected(expected: &Windows, found: &Found) -> Vec<WindowViolation> {
    found
        .keys()
        .filter(|(key, start)| !expected.contains_key(&(key.clone(), *start)))
        .map(|(key, start)| WindowViolation::Unexpected {
            key: key.clone(),
            start: *start,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(
        partition: i32,
        offset: i64,
        key: &str,
        value: &str,
        timestamp: i64,
    ) -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition,
            offset,
            timestamp,
            key: Some(Bytes::from(key.to_string())),
            value: Some(Bytes::from(value.to_string())),
            headers: Vec::new(),
        }
    }

    fn result(offset: i64, key: &str, start: i64, count: u64, sum: i64) -> ConsumerRecord {
        let w = WindowTotals {
            start,
            end: start + 100,
            count,
            sum,
        };
        record(
            0,
            offset,
            key,
            &serde_json::to_string(&w).unwrap(),
            start + 99,
        )
    }

    #[test]
    fn the_oracle_stops_at_the_end_marker_and_the_checker_names_each_break() {
        let input = BTreeMap::from([(
            0,
            vec![
                record(0, 0, "a", "2", 10),
                record(0, 1, "a", "3", 90),
                record(0, 2, "b", "5", 150),
                record(0, 3, "a", "END", 500),
                record(0, 4, "c", "9", 10),
            ],
        )]);
        let expected = oracle(&input, 100, b"END");
        assert_eq!(expected.len(), 2);
        assert_eq!(expected[&("a".into(), 0)], Expected { count: 2, sum: 5 });
        let good = BTreeMap::from([(0, vec![result(0, "a", 0, 2, 5), result(1, "b", 100, 1, 5)])]);
        assert!(check_windows(&expected, &good).is_empty());
        let bad = BTreeMap::from([(
            0,
            vec![
                result(0, "a", 0, 2, 5),
                result(1, "a", 0, 2, 5),
                result(2, "b", 100, 1, 4),
                result(3, "z", 0, 1, 1),
                record(0, 4, "a", "not json", 0),
            ],
        )]);
        let v: Vec<String> = check_windows(&expected, &bad)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(v.iter().any(|m| m.starts_with("duplicate")));
        assert!(v.iter().any(|m| m.starts_with("wrong")));
        assert!(v.iter().any(|m| m.starts_with("unexpected")));
        assert!(v.iter().any(|m| m.starts_with("malformed")));
        let lost = check_windows(&expected, &BTreeMap::new());
        assert_eq!(lost.len(), 2);
        assert!(
            lost.iter()
                .all(|v| matches!(v, WindowViolation::Lost { .. }))
        );
    }

    #[test]
    fn at_least_once_accepts_repeats_and_refuses_rows_counted_nowhere() {
        let expected = Windows::from([
            (("a".into(), 0), Expected { count: 3, sum: 9 }),
            (("b".into(), 0), Expected { count: 1, sum: 1 }),
        ]);
        // `a` emitted twice (once short, then its replayed rows), `b` counted twice.
        let repeated = BTreeMap::from([(
            0,
            vec![
                result(0, "a", 0, 2, 6),
                result(1, "a", 0, 1, 3),
                result(2, "b", 0, 2, 2),
            ],
        )]);
        assert!(check_windows_at_least_once(&expected, &repeated).is_empty());
        assert_eq!(check_windows(&expected, &repeated).len(), 2);
        let short = BTreeMap::from([(0, vec![result(0, "a", 0, 2, 6), result(1, "c", 0, 1, 1)])]);
        let v: Vec<String> = check_windows_at_least_once(&expected, &short)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[0].starts_with("lost: window 0 of key \"a\": its results count 2"));
        assert!(v[1].starts_with("lost: window 0 of key \"b\""));
        assert!(v[2].starts_with("unexpected"));
    }
}

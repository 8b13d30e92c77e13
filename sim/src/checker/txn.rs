//! The transaction checks: what a read_committed reader finds after the heal, against what
//! each transaction's producer was told.
//!
//! - A committed transaction is wholly visible, each record once.
//! - No record of an aborted transaction is visible (an aborted read).
//! - A transaction whose outcome is unknown is visible wholly or not at all.
//! - Nothing is visible that no transaction wrote.

use super::FinalRead;
use std::collections::BTreeMap;
use std::fmt;

/// How a transaction ended, as its producer saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// The commit was acknowledged.
    Committed,
    /// It was aborted (an acknowledged abort, or a re-initialisation that aborts it).
    Aborted,
    /// The producer cannot know.
    Unknown,
}

/// One transaction: its label, the unique values it wrote, and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOp {
    /// Which producer's which transaction.
    pub label: String,
    /// The values it sent.
    pub values: Vec<String>,
    /// How it ended.
    pub outcome: TxnOutcome,
}

/// A transactional anomaly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnViolation {
    /// Part of a committed transaction is missing.
    LostCommit {
        /// The transaction.
        label: String,
        /// Its values not found.
        missing: Vec<String>,
    },
    /// A record of an aborted transaction is visible.
    AbortedRead {
        /// The transaction.
        label: String,
        /// The value found.
        value: String,
    },
    /// A transaction of unknown outcome is partly visible.
    Torn {
        /// The transaction.
        label: String,
        /// Its values found.
        found: usize,
        /// Its values.
        of: usize,
    },
    /// A record is visible more than once.
    Duplicate {
        /// The value.
        value: String,
        /// Where.
        at: Vec<(i32, i64)>,
    },
    /// A record no transaction wrote.
    Phantom {
        /// The value.
        value: String,
    },
    /// The final read did not finish.
    Liveness(String),
}

impl fmt::Display for TxnViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LostCommit { label, missing } => write!(
                f,
                "lost commit: {label} was committed but {} of its records are missing (first {})",
                missing.len(),
                missing.first().map_or("", String::as_str)
            ),
            Self::AbortedRead { label, value } => {
                write!(f, "aborted read: {value} of aborted {label} is visible")
            }
            Self::Torn { label, found, of } => {
                write!(
                    f,
                    "torn transaction: {found} of {of} records of {label} are visible"
                )
            }
            Self::Duplicate { value, at } => write!(f, "duplicate: {value} appears at {at:?}"),
            Self::Phantom { value } => write!(f, "phantom: {value} was never sent"),
            Self::Liveness(why) => write!(f, "liveness: {why}"),
        }
    }
}

/// Checks `txns` against what a read_committed reader found.
pub fn check_txns(
    txns: &[TxnOp],
    final_read: &FinalRead,
    drained: Result<(), String>,
) -> Vec<TxnViolation> {
    let mut out = Vec::new();
    if let Err(e) = drained {
        out.push(TxnViolation::Liveness(e));
    }
    let mut seen: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for (p, recs) in final_read {
        for (o, v) in recs {
            seen.entry(v.as_str()).or_default().push((*p, *o));
        }
    }
    let mut written = BTreeMap::new();
    for t in txns {
        let found: Vec<&String> = t
            .values
            .iter()
            .filter(|v| seen.contains_key(v.as_str()))
            .collect();
        for v in &t.values {
            written.insert(v.as_str(), ());
        }
        match t.outcome {
            TxnOutcome::Committed if found.len() < t.values.len() => {
                out.push(TxnViolation::LostCommit {
                    label: t.label.clone(),
                    missing: t
                        .values
                        .iter()
                        .filter(|v| !seen.contains_key(v.as_str()))
                        .cloned()
                        .collect(),
                })
            }
            TxnOutcome::Aborted => {
                if let Some(v) = found.first() {
                    out.push(TxnViolation::AbortedRead {
                        label: t.label.clone(),
                        value: (*v).clone(),
                    });
                }
            }
            TxnOutcome::Unknown if !found.is_empty() && found.len() < t.values.len() => {
                out.push(TxnViolation::Torn {
                    label: t.label.clone(),
                    found: found.len(),
                    of: t.values.len(),
                });
            }
            _ => {}
        }
    }
    for (v, at) in &seen {
        if at.len() > 1 {
            out.push(TxnViolation::Duplicate {
                value: (*v).to_string(),
                at: at.clone(),
            });
        }
        if !written.contains_key(v) {
            out.push(TxnViolation::Phantom {
                value: (*v).to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(label: &str, values: &[&str], outcome: TxnOutcome) -> TxnOp {
        TxnOp {
            label: label.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            outcome,
        }
    }

    fn read(entries: &[(i32, i64, &str)]) -> FinalRead {
        let mut r = FinalRead::new();
        for (p, o, v) in entries {
            r.entry(*p).or_default().push((*o, v.to_string()));
        }
        r
    }

    #[test]
    fn a_clean_history_passes() {
        let txns = [
            op("t0", &["a", "b"], TxnOutcome::Committed),
            op("t1", &["c"], TxnOutcome::Aborted),
            op("t2", &["d", "e"], TxnOutcome::Unknown),
        ];
        assert!(check_txns(&txns, &read(&[(0, 0, "a"), (1, 0, "b")]), Ok(())).is_empty());
        let all = read(&[(0, 0, "a"), (1, 0, "b"), (0, 1, "d"), (1, 1, "e")]);
        assert!(check_txns(&txns, &all, Ok(())).is_empty());
    }

    #[test]
    fn each_anomaly_is_named() {
        let txns = [
            op("t0", &["a", "b"], TxnOutcome::Committed),
            op("t1", &["c"], TxnOutcome::Aborted),
            op("t2", &["d", "e"], TxnOutcome::Unknown),
        ];
        let bad = read(&[
            (0, 0, "a"),
            (0, 1, "a"),
            (0, 2, "c"),
            (0, 3, "d"),
            (0, 4, "z"),
        ]);
        let v = check_txns(&txns, &bad, Err("slow".into()));
        let kinds: Vec<&str> = v
            .iter()
            .map(|v| match v {
                TxnViolation::LostCommit { .. } => "lost",
                TxnViolation::AbortedRead { .. } => "aborted",
                TxnViolation::Torn { .. } => "torn",
                TxnViolation::Duplicate { .. } => "duplicate",
                TxnViolation::Phantom { .. } => "phantom",
                TxnViolation::Liveness(_) => "liveness",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "liveness",
                "lost",
                "aborted",
                "torn",
                "duplicate",
                "phantom"
            ]
        );
    }
}

//! The transaction checks: what a read_committed reader finds after the heal, against what
//! each transaction's producer was told.
//!
//! - A committed transaction is wholly visible, each record once.
//! - No record of an aborted transaction is visible (an aborted read).
//! - A transaction whose outcome is unknown is visible wholly or not at all.
//! - Nothing is visible that no transaction wrote.
//! - No transaction read, during the run, a record of an aborted transaction (G1a) or of one
//!   whose commit had not yet been asked for (a precommitted read).
//! - The committed transactions form no dependency cycle (G0, G1c; see [`super::txn_graph`]).

use super::FinalRead;
use super::txn_graph::{Cycle, CycleKind, Node, find_cycles};
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

/// One transaction: its label, the unique values it wrote, what it read, and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOp {
    /// Which producer's which transaction.
    pub label: String,
    /// Its transactional id.
    pub writer: String,
    /// The values it sent.
    pub values: Vec<String>,
    /// The values it read under read_committed, each with when its poll completed (simulated ms).
    pub reads: Vec<(String, u64)>,
    /// When its commit was invoked (simulated ms), if it was.
    pub commit_ms: Option<u64>,
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
    /// A transaction read a record before its writer asked to commit.
    PrecommittedRead {
        /// The reading transaction.
        reader: String,
        /// The writing transaction.
        writer: String,
        /// The value read.
        value: String,
    },
    /// Committed transactions depend on each other in a circle.
    Cycle(Cycle),
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
                write!(f, "aborted read (G1a): {value} of aborted {label} was read")
            }
            Self::Torn { label, found, of } => {
                write!(
                    f,
                    "torn transaction: {found} of {of} records of {label} are visible"
                )
            }
            Self::Duplicate { value, at } => write!(f, "duplicate: {value} appears at {at:?}"),
            Self::Phantom { value } => write!(f, "phantom: {value} was never sent"),
            Self::PrecommittedRead {
                reader,
                writer,
                value,
            } => write!(
                f,
                "precommitted read: {reader} read {value} before {writer} asked to commit"
            ),
            Self::Cycle(c) => {
                let kind = match c.kind {
                    CycleKind::G0 => "G0 write cycle",
                    CycleKind::G1c => "G1c circular information flow",
                };
                write!(f, "{kind}:")?;
                for (label, dep) in &c.steps {
                    write!(f, " {label} -{dep:?}->")?;
                }
                write!(f, " {}", c.steps.first().map_or("", |s| s.0.as_str()))
            }
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
    let mut writer_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, t) in txns.iter().enumerate() {
        for v in &t.values {
            writer_of.insert(v.as_str(), i);
        }
    }
    let effective = check_visibility(txns, &seen, &mut out);
    check_reads(txns, &writer_of, &mut out);
    for (v, at) in &seen {
        if at.len() > 1 {
            out.push(TxnViolation::Duplicate {
                value: (*v).to_string(),
                at: at.clone(),
            });
        }
        if !writer_of.contains_key(v) {
            out.push(TxnViolation::Phantom {
                value: (*v).to_string(),
            });
        }
    }
    check_cycles(txns, &effective, final_read, &writer_of, &mut out);
    out
}

/// Lost commits, aborted records in the final read, and torn transactions. Returns which
/// transactions took effect: the committed ones, and the unknown ones that are wholly visible.
fn check_visibility(
    txns: &[TxnOp],
    seen: &BTreeMap<&str, Vec<(i32, i64)>>,
    out: &mut Vec<TxnViolation>,
) -> Vec<bool> {
    let mut effective = Vec::with_capacity(txns.len());
    for t in txns {
        let found: Vec<&String> = t
            .values
            .iter()
            .filter(|v| seen.contains_key(v.as_str()))
            .collect();
        let whole = found.len() == t.values.len();
        effective.push(match t.outcome {
            TxnOutcome::Committed => true,
            TxnOutcome::Unknown => whole && !found.is_empty(),
            TxnOutcome::Aborted => false,
        });
        match t.outcome {
            TxnOutcome::Committed if !whole => out.push(TxnViolation::LostCommit {
                label: t.label.clone(),
                missing: t
                    .values
                    .iter()
                    .filter(|v| !seen.contains_key(v.as_str()))
                    .cloned()
                    .collect(),
            }),
            TxnOutcome::Aborted => {
                if let Some(v) = found.first() {
                    out.push(TxnViolation::AbortedRead {
                        label: t.label.clone(),
                        value: (*v).clone(),
                    });
                }
            }
            TxnOutcome::Unknown if !found.is_empty() && !whole => {
                out.push(TxnViolation::Torn {
                    label: t.label.clone(),
                    found: found.len(),
                    of: t.values.len(),
                });
            }
            _ => {}
        }
    }
    effective
}

/// What transactions read while the run went on: nothing aborted, nothing whose writer had
/// not yet asked to commit, nothing never written.
fn check_reads(txns: &[TxnOp], writer_of: &BTreeMap<&str, usize>, out: &mut Vec<TxnViolation>) {
    for reader in txns {
        for (value, at_ms) in &reader.reads {
            let Some(&w) = writer_of.get(value.as_str()) else {
                out.push(TxnViolation::Phantom {
                    value: value.clone(),
                });
                continue;
            };
            let writer = &txns[w];
            if writer.outcome == TxnOutcome::Aborted {
                out.push(TxnViolation::AbortedRead {
                    label: writer.label.clone(),
                    value: value.clone(),
                });
            } else if writer.commit_ms.is_none_or(|c| c > *at_ms) {
                out.push(TxnViolation::PrecommittedRead {
                    reader: reader.label.clone(),
                    writer: writer.label.clone(),
                    value: value.clone(),
                });
            }
        }
    }
}

/// G0 and G1c cycles among the transactions that took effect.
fn check_cycles(
    txns: &[TxnOp],
    effective: &[bool],
    final_read: &FinalRead,
    writer_of: &BTreeMap<&str, usize>,
    out: &mut Vec<TxnViolation>,
) {
    let mut node_of = vec![None; txns.len()];
    let mut nodes = Vec::new();
    for (i, t) in txns.iter().enumerate() {
        if effective[i] {
            node_of[i] = Some(nodes.len());
            nodes.push(Node {
                label: &t.label,
                writer: &t.writer,
            });
        }
    }
    let node = |v: &str| writer_of.get(v).and_then(|&t| node_of[t]);
    let log: Vec<Vec<usize>> = final_read
        .values()
        .map(|recs| recs.iter().filter_map(|(_, v)| node(v)).collect())
        .collect();
    let mut reads = Vec::new();
    for (i, t) in txns.iter().enumerate() {
        let Some(r) = node_of[i] else { continue };
        reads.extend(t.reads.iter().filter_map(|(v, _)| Some((node(v)?, r))));
    }
    out.extend(
        find_cycles(&nodes, &log, &reads)
            .into_iter()
            .map(TxnViolation::Cycle),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transaction of id `label`'s first character, committed at 100 ms unless aborted.
    fn op(label: &str, values: &[&str], outcome: TxnOutcome) -> TxnOp {
        TxnOp {
            label: label.into(),
            writer: label[..1].into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            reads: Vec::new(),
            commit_ms: (outcome != TxnOutcome::Aborted).then_some(100),
            outcome,
        }
    }

    fn reading(mut t: TxnOp, reads: &[(&str, u64)]) -> TxnOp {
        t.reads = reads.iter().map(|(v, at)| (v.to_string(), *at)).collect();
        t
    }

    fn read(entries: &[(i32, i64, &str)]) -> FinalRead {
        let mut r = FinalRead::new();
        for (p, o, v) in entries {
            r.entry(*p).or_default().push((*o, v.to_string()));
        }
        r
    }

    fn kinds(v: &[TxnViolation]) -> Vec<&'static str> {
        v.iter()
            .map(|v| match v {
                TxnViolation::LostCommit { .. } => "lost",
                TxnViolation::AbortedRead { .. } => "aborted",
                TxnViolation::Torn { .. } => "torn",
                TxnViolation::Duplicate { .. } => "duplicate",
                TxnViolation::Phantom { .. } => "phantom",
                TxnViolation::PrecommittedRead { .. } => "precommitted",
                TxnViolation::Cycle(c) if c.kind == CycleKind::G0 => "G0",
                TxnViolation::Cycle(_) => "G1c",
                TxnViolation::Liveness(_) => "liveness",
            })
            .collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let txns = [
            op("a0", &["a", "b"], TxnOutcome::Committed),
            op("c0", &["c"], TxnOutcome::Aborted),
            op("d0", &["d", "e"], TxnOutcome::Unknown),
            reading(op("a1", &["f"], TxnOutcome::Committed), &[("d", 150)]),
        ];
        let some = read(&[(0, 0, "a"), (1, 0, "b"), (1, 2, "f")]);
        assert!(check_txns(&txns, &some, Ok(())).is_empty());
        let all = read(&[
            (0, 0, "a"),
            (1, 0, "b"),
            (0, 1, "d"),
            (1, 1, "e"),
            (1, 2, "f"),
        ]);
        assert!(check_txns(&txns, &all, Ok(())).is_empty());
    }

    #[test]
    fn each_final_read_anomaly_is_named() {
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
        assert_eq!(
            kinds(&v),
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

    #[test]
    fn reading_an_aborted_record_during_the_run_is_g1a() {
        let txns = [
            op("a0", &["a"], TxnOutcome::Aborted),
            reading(op("b0", &["b"], TxnOutcome::Committed), &[("a", 50)]),
        ];
        let v = check_txns(&txns, &read(&[(0, 0, "b")]), Ok(()));
        assert_eq!(kinds(&v), ["aborted"]);
    }

    #[test]
    fn reading_before_the_writer_asked_to_commit_is_precommitted() {
        let txns = [
            op("a0", &["a"], TxnOutcome::Committed),
            // The writer asked to commit at 100 ms; this poll had completed by 90 ms.
            reading(op("b0", &["b"], TxnOutcome::Committed), &[("a", 90)]),
        ];
        let v = check_txns(&txns, &read(&[(0, 0, "a"), (0, 1, "b")]), Ok(()));
        assert_eq!(kinds(&v), ["precommitted"]);
        let first = v[0].to_string();
        assert!(first.contains("b0 read a before a0"), "{first}");
    }

    #[test]
    fn interleaved_transactions_of_one_id_are_a_g0_cycle() {
        let txns = [
            op("a0", &["x0", "y0"], TxnOutcome::Committed),
            op("a1", &["x1", "y1"], TxnOutcome::Committed),
        ];
        let log = read(&[(0, 0, "x0"), (0, 1, "x1"), (1, 0, "y1"), (1, 1, "y0")]);
        let v = check_txns(&txns, &log, Ok(()));
        assert_eq!(kinds(&v), ["G0"]);
        assert!(
            v[0].to_string()
                .starts_with("G0 write cycle: a0 -Ww-> a1 -Ww-> a0")
        );
    }

    #[test]
    fn reads_that_flow_in_a_circle_are_a_g1c_cycle() {
        // b0 read a1's record, a1 follows a0 in partition 0, and a0 read b0's record.
        let txns = [
            reading(op("a0", &["x0"], TxnOutcome::Committed), &[("z", 200)]),
            op("a1", &["x1"], TxnOutcome::Committed),
            reading(op("b0", &["z"], TxnOutcome::Committed), &[("x1", 200)]),
        ];
        let log = read(&[(0, 0, "x0"), (0, 1, "x1"), (1, 0, "z")]);
        let v = check_txns(&txns, &log, Ok(()));
        assert_eq!(kinds(&v), ["G1c"]);
    }
}

//! Checks for the queue workload: unique values sent under keys and read back by consumers.

use super::Violation;
use crate::history::{History, OpKind, Outcome};
use std::collections::{BTreeMap, BTreeSet};

/// What a reader found in each partition after the faults healed: (offset, value) in log order.
pub type FinalRead = BTreeMap<i32, Vec<(i64, String)>>;

/// Everything the queue checks look at.
pub struct QueueCheck<'a> {
    /// The client operations.
    pub history: &'a History,
    /// The final read of every partition.
    pub final_read: &'a FinalRead,
    /// Whether the final read completed within the liveness bound, or why not.
    pub drained: Result<(), String>,
}

fn index(final_read: &FinalRead) -> BTreeMap<(i32, i64), &str> {
    final_read
        .iter()
        .flat_map(|(p, recs)| recs.iter().map(move |(o, v)| ((*p, *o), v.as_str())))
        .collect()
}

/// Every acknowledged write is in the final log, at the offset it was acknowledged at.
pub fn acknowledged_writes_survive(c: &QueueCheck<'_>, out: &mut Vec<Violation>) {
    let at = index(c.final_read);
    let mut where_is: BTreeMap<&str, (i32, i64)> = BTreeMap::new();
    for (&(p, o), v) in &at {
        where_is.entry(v).or_insert((p, o));
    }
    for op in c.history.ops() {
        let (OpKind::Send { value, .. }, Some(Outcome::Ok { partition, offset })) =
            (&op.kind, &op.outcome)
        else {
            continue;
        };
        match at.get(&(*partition, *offset)) {
            Some(v) if *v == value => {}
            Some(v) => out.push(Violation::InconsistentOffset {
                value: value.clone(),
                acked: (*partition, *offset),
                found: Some(v.to_string()),
            }),
            None if where_is.contains_key(value.as_str()) => {
                out.push(Violation::InconsistentOffset {
                    value: value.clone(),
                    acked: (*partition, *offset),
                    found: None,
                })
            }
            None if c.drained.is_ok() => out.push(Violation::Lost {
                value: value.clone(),
                partition: *partition,
                offset: *offset,
            }),
            None => {}
        }
    }
}

/// No value is in the final log twice.
pub fn no_duplicates(c: &QueueCheck<'_>, out: &mut Vec<Violation>) {
    let mut seen: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for (p, recs) in c.final_read {
        for (o, v) in recs {
            seen.entry(v).or_default().push((*p, *o));
        }
    }
    for (value, at) in seen {
        if at.len() > 1 {
            out.push(Violation::Duplicate {
                value: value.to_string(),
                at,
            });
        }
    }
}

/// Offsets in each partition rise by exactly one.
pub fn offsets_dense(c: &QueueCheck<'_>, out: &mut Vec<Violation>) {
    for (p, recs) in c.final_read {
        for w in recs.windows(2) {
            if w[1].0 != w[0].0 + 1 {
                out.push(Violation::OffsetGap {
                    partition: *p,
                    after: w[0].0,
                    next: w[1].0,
                });
            }
        }
    }
}

/// Every polled record is what the log holds at that offset, and was written by someone.
pub fn reads_match_the_log(c: &QueueCheck<'_>, out: &mut Vec<Violation>) {
    let at = index(c.final_read);
    let written: BTreeSet<&str> = c
        .history
        .ops()
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Send { value, .. } => Some(value.as_str()),
            OpKind::Poll { .. } => None,
        })
        .collect();
    for op in c.history.ops() {
        let OpKind::Poll {
            partition,
            offset,
            value,
        } = &op.kind
        else {
            continue;
        };
        if !written.contains(value.as_str()) {
            out.push(Violation::PhantomRead {
                process: op.process.clone(),
                value: value.clone(),
            });
            continue;
        }
        let log = at.get(&(*partition, *offset));
        let mismatch = match log {
            Some(v) => *v != value,
            None => c.drained.is_ok(),
        };
        if mismatch {
            out.push(Violation::ReadMismatch {
                process: op.process.clone(),
                partition: *partition,
                offset: *offset,
                read: value.clone(),
                log: log.map(|v| v.to_string()),
            });
        }
    }
}

/// Each consumer reads each partition at strictly rising offsets.
pub fn polls_monotonic(c: &QueueCheck<'_>, out: &mut Vec<Violation>) {
    let mut last: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for op in c.history.ops() {
        let OpKind::Poll {
            partition, offset, ..
        } = &op.kind
        else {
            continue;
        };
        if let Some(prev) = last.insert((op.process.as_str(), *partition), *offset)
            && *offset <= prev
        {
            out.push(Violation::NonMonotonicPoll {
                process: op.process.clone(),
                partition: *partition,
                prev,
                next: *offset,
            });
        }
    }
}

/// A write reported as certainly failed is not in the log.
pub fn failed_writes_absent(c: &QueueCheck<'_>, out: &mut Vec<Violation>) {
    let present: BTreeSet<&str> = c
        .final_read
        .values()
        .flatten()
        .map(|(_, v)| v.as_str())
        .collect();
    for op in c.history.ops() {
        if let (OpKind::Send { value, .. }, Some(Outcome::Fail(_))) = (&op.kind, &op.outcome)
            && present.contains(value.as_str())
        {
            out.push(Violation::FailedWriteVisible {
                value: value.clone(),
            });
        }
    }
}

/// Runs every queue check.
pub fn check_queue(c: &QueueCheck<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Err(why) = &c.drained {
        out.push(Violation::Liveness(why.clone()));
    }
    acknowledged_writes_survive(c, &mut out);
    no_duplicates(c, &mut out);
    offsets_dense(c, &mut out);
    reads_match_the_log(c, &mut out);
    polls_monotonic(c, &mut out);
    failed_writes_absent(c, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(h: &mut History, p: &str, value: &str, outcome: Outcome) {
        let id = h.invoke(
            p,
            OpKind::Send {
                key: "k".into(),
                value: value.into(),
            },
            0,
        );
        h.complete(id, outcome, 1);
    }

    fn poll(h: &mut History, p: &str, partition: i32, offset: i64, value: &str) {
        h.instant(
            p,
            OpKind::Poll {
                partition,
                offset,
                value: value.into(),
            },
            Outcome::Ok { partition, offset },
            2,
        );
    }

    fn log(entries: &[(i32, i64, &str)]) -> FinalRead {
        let mut f = FinalRead::new();
        for (p, o, v) in entries {
            f.entry(*p).or_default().push((*o, v.to_string()));
        }
        f
    }

    fn ok(partition: i32, offset: i64) -> Outcome {
        Outcome::Ok { partition, offset }
    }

    fn run(h: &History, f: &FinalRead) -> Vec<Violation> {
        check_queue(&QueueCheck {
            history: h,
            final_read: f,
            drained: Ok(()),
        })
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = History::default();
        send(&mut h, "p0", "a", ok(0, 0));
        send(&mut h, "p0", "b", ok(0, 1));
        send(&mut h, "p1", "c", Outcome::Unknown("timeout".into()));
        poll(&mut h, "c0", 0, 0, "a");
        poll(&mut h, "c0", 0, 1, "b");
        assert_eq!(
            run(&h, &log(&[(0, 0, "a"), (0, 1, "b"), (0, 2, "c")])),
            vec![]
        );
    }

    #[test]
    fn catches_a_lost_write() {
        let mut h = History::default();
        send(&mut h, "p0", "a", ok(0, 0));
        send(&mut h, "p0", "b", ok(0, 1));
        let v = run(&h, &log(&[(0, 0, "a")]));
        assert_eq!(
            v,
            vec![Violation::Lost {
                value: "b".into(),
                partition: 0,
                offset: 1
            }]
        );
    }

    #[test]
    fn catches_an_acknowledged_offset_that_holds_another_value() {
        let mut h = History::default();
        send(&mut h, "p0", "a", ok(0, 0));
        send(&mut h, "p1", "x", Outcome::Unknown("t".into()));
        let v = run(&h, &log(&[(0, 0, "x")]));
        assert!(
            matches!(&v[0], Violation::InconsistentOffset { value, found: Some(f), .. } if value == "a" && f == "x"),
            "{v:?}"
        );
    }

    #[test]
    fn catches_a_duplicate() {
        let mut h = History::default();
        send(&mut h, "p0", "a", ok(0, 0));
        let v = run(&h, &log(&[(0, 0, "a"), (0, 1, "a")]));
        assert_eq!(
            v,
            vec![Violation::Duplicate {
                value: "a".into(),
                at: vec![(0, 0), (0, 1)]
            }]
        );
    }

    #[test]
    fn catches_an_offset_gap() {
        let mut h = History::default();
        send(&mut h, "p0", "a", ok(0, 0));
        send(&mut h, "p0", "b", ok(0, 2));
        let v = run(&h, &log(&[(0, 0, "a"), (0, 2, "b")]));
        assert_eq!(
            v,
            vec![Violation::OffsetGap {
                partition: 0,
                after: 0,
                next: 2
            }]
        );
    }

    #[test]
    fn catches_a_read_that_the_log_does_not_hold() {
        let mut h = History::default();
        send(&mut h, "p0", "a", Outcome::Unknown("t".into()));
        send(&mut h, "p0", "b", ok(0, 0));
        poll(&mut h, "c0", 0, 0, "a");
        let v = run(&h, &log(&[(0, 0, "b")]));
        assert!(
            matches!(&v[0], Violation::ReadMismatch { read, log: Some(l), .. } if read == "a" && l == "b"),
            "{v:?}"
        );
    }

    #[test]
    fn catches_a_phantom_read() {
        let mut h = History::default();
        poll(&mut h, "c0", 0, 0, "ghost");
        let v = run(&h, &log(&[(0, 0, "ghost")]));
        assert_eq!(
            v,
            vec![Violation::PhantomRead {
                process: "c0".into(),
                value: "ghost".into()
            }]
        );
    }

    #[test]
    fn catches_a_poll_that_goes_backwards() {
        let mut h = History::default();
        send(&mut h, "p0", "a", ok(0, 0));
        send(&mut h, "p0", "b", ok(0, 1));
        poll(&mut h, "c0", 0, 1, "b");
        poll(&mut h, "c0", 0, 0, "a");
        let v = run(&h, &log(&[(0, 0, "a"), (0, 1, "b")]));
        assert_eq!(
            v,
            vec![Violation::NonMonotonicPoll {
                process: "c0".into(),
                partition: 0,
                prev: 1,
                next: 0
            }]
        );
    }

    #[test]
    fn catches_a_failed_write_that_is_visible() {
        let mut h = History::default();
        send(&mut h, "p0", "a", Outcome::Fail("refused".into()));
        let v = run(&h, &log(&[(0, 0, "a")]));
        assert_eq!(v, vec![Violation::FailedWriteVisible { value: "a".into() }]);
    }

    #[test]
    fn catches_a_missed_liveness_bound() {
        let mut h = History::default();
        send(&mut h, "p0", "a", ok(0, 0));
        let f = log(&[]);
        let v = check_queue(&QueueCheck {
            history: &h,
            final_read: &f,
            drained: Err("p0 unreadable".into()),
        });
        assert_eq!(v, vec![Violation::Liveness("p0 unreadable".into())]);
    }
}

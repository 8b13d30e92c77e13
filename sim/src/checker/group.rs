//! Checks for consumer groups: committed offsets only move forward, every acknowledged record
//! below the final committed offset reached some member, no partition has two owners in one
//! generation, and the group consumes everything after the heal.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One observation of a partition's committed offset: a commit's acknowledgement or an
/// OffsetFetch. The durable value held at some instant between invocation and completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetSeen {
    /// Who observed it.
    pub process: String,
    /// When the request was sent, in simulated milliseconds.
    pub invoke_ms: u64,
    /// When the answer came, in simulated milliseconds.
    pub complete_ms: u64,
    /// Partition.
    pub partition: i32,
    /// The committed offset.
    pub offset: i64,
}

/// A member's assignment in a generation, as its rebalance listener was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// The member's process.
    pub member: String,
    /// Generation.
    pub generation: i32,
    /// Partitions assigned.
    pub partitions: Vec<i32>,
}

/// Everything the group checks look at.
#[derive(Clone, Debug)]
pub struct GroupHistory {
    /// Acknowledged records: (partition, offset) to value.
    pub acked: BTreeMap<(i32, i64), String>,
    /// Records members received: (partition, offset).
    pub delivered: BTreeSet<(i32, i64)>,
    /// Observations of committed offsets, in no particular order.
    pub offsets: Vec<OffsetSeen>,
    /// Assignments, in the order members received them.
    pub assignments: Vec<Assigned>,
    /// Committed offsets once the group settled after the heal (or as last read).
    pub final_committed: BTreeMap<i32, i64>,
    /// Whether the group consumed to the end of every partition within the bound, or why not.
    pub settled: Result<(), String>,
}

impl Default for GroupHistory {
    /// A history of nothing, which settled.
    fn default() -> Self {
        Self {
            acked: BTreeMap::new(),
            delivered: BTreeSet::new(),
            offsets: Vec::new(),
            assignments: Vec::new(),
            final_committed: BTreeMap::new(),
            settled: Ok(()),
        }
    }
}

/// What a group run did that its guarantees forbid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupViolation {
    /// A committed offset was seen lower after a higher one had been seen.
    OffsetWentBack {
        /// Partition.
        partition: i32,
        /// The earlier observation.
        earlier: OffsetSeen,
        /// The later, lower one.
        later: OffsetSeen,
    },
    /// An acknowledged record below the final committed offset reached no member.
    Skipped {
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// The final committed offset.
        committed: i64,
    },
    /// Two members of one generation held the same partition.
    SharedPartition {
        /// Generation.
        generation: i32,
        /// Partition.
        partition: i32,
        /// The members.
        members: Vec<String>,
    },
    /// After the heal the group did not consume everything within the bound.
    Liveness(String),
}

impl fmt::Display for GroupViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupViolation::OffsetWentBack {
                partition,
                earlier,
                later,
            } => write!(
                f,
                "committed offset of p{partition} went back: {} saw {} by {} ms, then {} saw {} from {} ms",
                earlier.process,
                earlier.offset,
                earlier.complete_ms,
                later.process,
                later.offset,
                later.invoke_ms
            ),
            GroupViolation::Skipped {
                partition,
                offset,
                committed,
            } => write!(
                f,
                "p{partition}@{offset} was acknowledged and is below the committed {committed}, but no member received it"
            ),
            GroupViolation::SharedPartition {
                generation,
                partition,
                members,
            } => write!(
                f,
                "generation {generation} gave p{partition} to {}",
                members.join(" and ")
            ),
            GroupViolation::Liveness(why) => write!(f, "liveness: {why}"),
        }
    }
}

/// Committed offsets never go backwards: an observation that began after another ended never
/// shows a lower offset.
pub fn committed_offsets_monotonic(h: &GroupHistory, out: &mut Vec<GroupViolation>) {
    let mut by_partition: BTreeMap<i32, Vec<&OffsetSeen>> = BTreeMap::new();
    for o in &h.offsets {
        by_partition.entry(o.partition).or_default().push(o);
    }
    for (partition, seen) in by_partition {
        let mut by_end = seen.clone();
        by_end.sort_by_key(|o| (o.complete_ms, o.offset));
        let mut by_start = seen;
        by_start.sort_by_key(|o| (o.invoke_ms, o.offset));
        // The highest offset among observations that ended strictly before each start.
        let mut highest: Option<&OffsetSeen> = None;
        let mut ended = by_end.iter().peekable();
        for later in by_start {
            while let Some(e) = ended.next_if(|e| e.complete_ms < later.invoke_ms) {
                if highest.is_none_or(|h| e.offset > h.offset) {
                    highest = Some(e);
                }
            }
            if let Some(earlier) = highest.filter(|h| later.offset < h.offset) {
                out.push(GroupViolation::OffsetWentBack {
                    partition,
                    earlier: earlier.clone(),
                    later: later.clone(),
                });
                // One report per drop; the next ones are measured from the lower value.
                highest = None;
            }
        }
    }
}

/// Every acknowledged record below the final committed offset reached some member.
pub fn nothing_skipped(h: &GroupHistory, out: &mut Vec<GroupViolation>) {
    for &(partition, offset) in h.acked.keys() {
        let Some(&committed) = h.final_committed.get(&partition) else {
            continue;
        };
        if offset < committed && !h.delivered.contains(&(partition, offset)) {
            out.push(GroupViolation::Skipped {
                partition,
                offset,
                committed,
            });
        }
    }
}

/// No generation gives a partition to two members.
pub fn assignments_disjoint(h: &GroupHistory, out: &mut Vec<GroupViolation>) {
    // The last assignment each member got in each generation.
    let mut latest: BTreeMap<(i32, &str), &[i32]> = BTreeMap::new();
    for a in &h.assignments {
        latest.insert((a.generation, &a.member), &a.partitions);
    }
    let mut owners: BTreeMap<(i32, i32), Vec<String>> = BTreeMap::new();
    for ((generation, member), parts) in latest {
        for p in parts {
            owners
                .entry((generation, *p))
                .or_default()
                .push(member.to_string());
        }
    }
    for ((generation, partition), members) in owners {
        if members.len() > 1 {
            out.push(GroupViolation::SharedPartition {
                generation,
                partition,
                members,
            });
        }
    }
}

/// After the heal the group settled and committed up to the end of every partition.
pub fn settles(h: &GroupHistory, out: &mut Vec<GroupViolation>) {
    if let Err(why) = &h.settled {
        out.push(GroupViolation::Liveness(why.clone()));
    }
}

/// Runs every group check.
pub fn check_group(h: &GroupHistory) -> Vec<GroupViolation> {
    let mut out = Vec::new();
    committed_offsets_monotonic(h, &mut out);
    nothing_skipped(h, &mut out);
    assignments_disjoint(h, &mut out);
    settles(h, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(process: &str, invoke_ms: u64, complete_ms: u64, offset: i64) -> OffsetSeen {
        OffsetSeen {
            process: process.into(),
            invoke_ms,
            complete_ms,
            partition: 0,
            offset,
        }
    }

    fn run(
        check: fn(&GroupHistory, &mut Vec<GroupViolation>),
        h: &GroupHistory,
    ) -> Vec<GroupViolation> {
        let mut out = Vec::new();
        check(h, &mut out);
        out
    }

    #[test]
    fn a_lower_offset_after_a_higher_one_is_caught_but_overlap_is_not() {
        // Overlapping observations may have been taken in either order.
        let mut h = GroupHistory {
            offsets: vec![
                seen("a", 0, 10, 50),
                seen("b", 5, 20, 40),
                seen("c", 30, 40, 60),
            ],
            ..GroupHistory::default()
        };
        assert!(run(committed_offsets_monotonic, &h).is_empty());
        h.offsets.push(seen("zombie", 50, 55, 45));
        let v = run(committed_offsets_monotonic, &h);
        assert_eq!(v.len(), 1);
        assert!(
            matches!(&v[0], GroupViolation::OffsetWentBack { later, .. } if later.process == "zombie")
        );
    }

    #[test]
    fn an_undelivered_record_below_the_committed_offset_is_caught() {
        let mut h = GroupHistory::default();
        for o in 0..4 {
            h.acked.insert((0, o), format!("v{o}"));
        }
        h.delivered.extend([(0, 0), (0, 2)]);
        h.final_committed.insert(0, 3);
        let v = run(nothing_skipped, &h);
        assert_eq!(
            v,
            vec![GroupViolation::Skipped {
                partition: 0,
                offset: 1,
                committed: 3
            }],
            "offset 3 is not yet committed past"
        );
    }

    #[test]
    fn two_owners_in_one_generation_are_caught_across_generations_not() {
        let a = |member: &str, generation, partitions: Vec<i32>| Assigned {
            member: member.into(),
            generation,
            partitions,
        };
        let mut h = GroupHistory {
            assignments: vec![
                a("m0", 1, vec![0, 1]),
                a("m1", 2, vec![0, 1]),
                a("m0", 2, vec![2]),
            ],
            ..GroupHistory::default()
        };
        assert!(run(assignments_disjoint, &h).is_empty());
        h.assignments.push(a("m2", 2, vec![2, 3]));
        let v = run(assignments_disjoint, &h);
        assert_eq!(
            v,
            vec![GroupViolation::SharedPartition {
                generation: 2,
                partition: 2,
                members: vec!["m0".into(), "m2".into()]
            }]
        );
    }

    #[test]
    fn a_group_that_does_not_settle_is_caught() {
        let h = GroupHistory {
            settled: Err("p3 committed 10 of 20".into()),
            ..GroupHistory::default()
        };
        assert_eq!(check_group(&h).len(), 1);
    }
}

//! Scenario `microbatch`: the `eos-pipeline` job under the micro-batch model, amid the same
//! faults.
//!
//! At each trigger the sources fix where the batch ends, the job manager writes that to its
//! offset log, and only then are the batch's records read; the batch's checkpoint is its
//! commit. Besides the exactly-once output, the checker requires that every batch run again
//! after a failure (or an abandoned checkpoint) read exactly the range the log holds for it:
//! that is what lets a micro-batch engine give a re-run batch the same output, and that no
//! source subtask's share of a batch span more than `batch_offsets_max` offsets.

use super::eos_pipeline::{self, COMMIT_BEFORE_COMPLETE};
use super::pipeline::{self, Batch, BatchRanges, Pipeline};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use std::collections::BTreeMap;
use weir_engine::runtime::ExecutionModel;

/// Deliberately broken runtimes this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[
    COMMIT_BEFORE_COMPLETE,
    (
        "offset-log-ignored",
        "a batch re-run after a failure is planned afresh instead of reading its logged range",
    ),
    (
        "batch-unbounded",
        "sources plan every batch to the end of their input, past batch_offsets_max",
    ),
];

/// Time between batch starts, in simulated milliseconds: the pipelined job's checkpoint
/// interval, so that both commit equally often.
pub const TRIGGER_MS: u64 = 1_000;
/// Offsets a source subtask reads in a batch at most: about three seconds of input, so that
/// the backlog after an outage is read in several batches.
const BATCH_OFFSETS_MAX: u64 = 50;

const PIPELINE: Pipeline = Pipeline {
    name: "microbatch",
    model: ExecutionModel::MicroBatch {
        trigger_ms: TRIGGER_MS,
        batch_offsets_max: BATCH_OFFSETS_MAX,
    },
    ..eos_pipeline::PIPELINE
};

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    let (mut r, observed) = pipeline::run(&PIPELINE, spec);
    r.violations.extend(check_batches(&observed.batches));
    let (full, over) = check_bound(&observed.batches, BATCH_OFFSETS_MAX);
    r.violations.extend(over);
    r.metrics.push((
        "batches".into(),
        format!(
            "{} started, {} of them re-run from the offset log, {full} subtask shares cut at the bound of {BATCH_OFFSETS_MAX} offsets",
            observed.batches.len(),
            observed.batches_replayed
        ),
    ));
    r.passed = r.violations.is_empty();
    r
}

/// Every batch that starts from the same checkpoint must read the same range.
fn check_batches(batches: &[Batch]) -> Vec<String> {
    let mut first: BTreeMap<Option<u64>, &BatchRanges> = BTreeMap::new();
    let mut violations = Vec::new();
    for Batch { after, ends, .. } in batches {
        match first.get(after) {
            None => {
                first.insert(*after, ends);
            }
            Some(logged) if *logged != ends => violations.push(format!(
                "micro-batch: the batch after checkpoint {after:?} ran again with ends {ends:?}; it first ran with {logged:?}"
            )),
            Some(_) => {}
        }
    }
    violations
}

/// Every source subtask's share of a batch, from the ends of the batch it starts after (or
/// offset 0), spans at most `offsets_max` offsets. Returns how many shares the bound cut
/// (spanning it exactly), and a violation for each share over it.
fn check_bound(batches: &[Batch], offsets_max: u64) -> (usize, Vec<String>) {
    let by_id: BTreeMap<u64, &BatchRanges> =
        batches.iter().map(|b| (b.checkpoint_id, &b.ends)).collect();
    let none = BatchRanges::new();
    let (mut full, mut violations) = (0, Vec::new());
    for b in batches {
        let before = b
            .after
            .and_then(|id| by_id.get(&id).copied())
            .unwrap_or(&none);
        for (task, ends) in &b.ends {
            let span: i64 = ends
                .iter()
                .map(|(p, end)| end - before.get(task).and_then(|e| e.get(p)).unwrap_or(&0))
                .sum();
            let span = u64::try_from(span).unwrap_or(0);
            full += usize::from(span == offsets_max);
            if span > offsets_max {
                violations.push(format!(
                    "micro-batch: subtask {task}'s share of the batch of checkpoint {} spans {span} offsets, over the bound of {offsets_max}",
                    b.checkpoint_id
                ));
            }
        }
    }
    (full, violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(checkpoint_id: u64, after: Option<u64>, ends: &[(i32, i64)]) -> Batch {
        let ends = BTreeMap::from([("0.0".to_string(), ends.iter().copied().collect())]);
        Batch {
            checkpoint_id,
            after,
            ends,
        }
    }

    #[test]
    fn a_batch_rerun_with_another_range_is_a_violation() {
        let same = [
            batch(1, Some(1), &[(0, 10)]),
            batch(2, Some(1), &[(0, 10)]),
            batch(3, Some(2), &[(0, 12)]),
        ];
        assert!(check_batches(&same).is_empty());
        let moved = [batch(1, Some(1), &[(0, 10)]), batch(2, Some(1), &[(0, 11)])];
        assert_eq!(check_batches(&moved).len(), 1);
    }

    #[test]
    fn a_share_over_the_bound_is_a_violation() {
        // Spans 10, then 10 (4 + 6) from the first batch's ends, then 11.
        let batches = [
            batch(0, None, &[(0, 6), (2, 4)]),
            batch(1, Some(0), &[(0, 10), (2, 10)]),
            batch(2, Some(1), &[(0, 21), (2, 10)]),
        ];
        let (full, over) = check_bound(&batches, 10);
        assert_eq!(full, 2);
        assert_eq!(over.len(), 1, "{over:?}");
        assert!(over[0].contains("checkpoint 2"), "{over:?}");
    }
}

//! Scenario `microbatch`: the `eos-pipeline` job under the micro-batch model, amid the same
//! faults.
//!
//! At each trigger the sources fix where the batch ends, the job manager writes that to its
//! offset log, and only then are the batch's records read; the batch's checkpoint is its
//! commit. Besides the exactly-once output, the checker requires that every batch run again
//! after a failure (or an abandoned checkpoint) read exactly the range the log holds for it:
//! that is what lets a micro-batch engine give a re-run batch the same output.

use super::eos_pipeline::{self, COMMIT_BEFORE_COMPLETE};
use super::pipeline::{self, BatchRanges, Pipeline};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use std::collections::BTreeMap;
use weir_core::runtime::ExecutionModel;

/// Deliberately broken runtimes this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[
    COMMIT_BEFORE_COMPLETE,
    (
        "offset-log-ignored",
        "a batch re-run after a failure is planned afresh instead of reading its logged range",
    ),
];

/// Time between batch starts, in simulated milliseconds: the pipelined job's checkpoint
/// interval, so that both commit equally often.
pub const TRIGGER_MS: u64 = 1_000;

const PIPELINE: Pipeline = Pipeline {
    name: "microbatch",
    model: ExecutionModel::MicroBatch {
        trigger_ms: TRIGGER_MS,
    },
    ..eos_pipeline::PIPELINE
};

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    let (mut r, observed) = pipeline::run(&PIPELINE, spec);
    r.violations.extend(check_batches(&observed.batches));
    r.metrics.push((
        "batches".into(),
        format!(
            "{} started, {} of them re-run from the offset log",
            observed.batches.len(),
            observed.batches_replayed
        ),
    ));
    r.passed = r.violations.is_empty();
    r
}

/// Every batch that starts from the same checkpoint must read the same range.
fn check_batches(batches: &[(Option<u64>, BatchRanges)]) -> Vec<String> {
    let mut first: BTreeMap<Option<u64>, &BatchRanges> = BTreeMap::new();
    let mut violations = Vec::new();
    for (after, ranges) in batches {
        match first.get(after) {
            None => {
                first.insert(*after, ranges);
            }
            Some(logged) if *logged != ranges => violations.push(format!(
                "micro-batch: the batch after checkpoint {after:?} ran again with ends {ranges:?}; it first ran with {logged:?}"
            )),
            Some(_) => {}
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(end: i64) -> BatchRanges {
        BTreeMap::from([("0.0".to_string(), BTreeMap::from([(0, end)]))])
    }

    #[test]
    fn a_batch_rerun_with_another_range_is_a_violation() {
        let same = [
            (Some(1), ranges(10)),
            (Some(1), ranges(10)),
            (Some(2), ranges(12)),
        ];
        assert!(check_batches(&same).is_empty());
        let moved = [(Some(1), ranges(10)), (Some(1), ranges(11))];
        assert_eq!(check_batches(&moved).len(), 1);
    }
}

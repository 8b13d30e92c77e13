//! Scenario `eos-pipeline`: a keyed tumbling-window count and sum, exactly-once from a broker
//! topic to a broker topic, on the distributed runtime (see [`super::pipeline`]).
//!
//! The nemesis crashes and restarts task managers, the job manager and brokers (at any moment,
//! the commit phase included), partitions them from each other, delays and holds messages and
//! fails disks. The checker reads the output under read_committed after the job finished and
//! requires every window of the input exactly once, with its count and sum.

use super::pipeline::{self, Pipeline};
use crate::fault::TimedFault;
use crate::report::RunReport;
use crate::scenario::RunSpec;
use weir_core::rng::WeirRng;
use weir_core::runtime::RuntimeMutation;
use weir_core::runtime::exchange::ExchangeConfig;

/// Deliberately broken runtimes this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[
    (
        "commit-before-complete",
        "the exactly-once sink commits its transaction at the barrier, before the checkpoint completes",
    ),
    (
        "offsets-after-barrier",
        "sources forward the barrier, read one more batch, and only then save their offsets",
    ),
];

fn no_extra_faults(_: &mut WeirRng) -> Vec<TimedFault> {
    Vec::new()
}

const PIPELINE: Pipeline = Pipeline {
    name: "eos-pipeline",
    exchange: ExchangeConfig {
        buffer_bytes_max: 4 * 1024,
        buffer_timeout_ms: 50,
        buffers_per_subpartition_max: 4,
        exclusive_buffers: 2,
        floating_buffers: 4,
        frame_bytes_max: 8 * 1024,
        connect_attempts_max: 50,
        connect_backoff_ms: 100,
    },
    input_gap_ms: 10,
    extra_faults: no_extra_faults,
    quiet_ms: None,
};

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    let mutation = match spec.mutant.as_deref() {
        None => None,
        Some("commit-before-complete") => Some(RuntimeMutation::CommitBeforeComplete),
        Some("offsets-after-barrier") => Some(RuntimeMutation::OffsetsAfterBarrier),
        Some(m) => panic!("unknown mutant {m:?}"),
    };
    pipeline::run(&PIPELINE, spec, mutation).0
}

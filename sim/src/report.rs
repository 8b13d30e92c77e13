//! The report of one run.

use crate::fault::{FaultPlan, Mix};
use crate::history::OpCounts;
use crate::trace::TraceEvent;

/// What a run found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Deliberately broken variant, if any.
    pub mutant: Option<String>,
    /// Whether no violation was found.
    pub passed: bool,
    /// The violations found.
    pub violations: Vec<String>,
    /// Hash of the trace, in hex.
    pub trace_hash: String,
    /// Simulated time the run took, in milliseconds.
    pub sim_ms: u64,
    /// Wall time the run took, in milliseconds; filled in by whoever timed it.
    pub wall_ms: u64,
    /// Client operations by outcome.
    pub ops: OpCounts,
    /// Faults applied, including heals.
    pub faults: usize,
    /// The fault mix the seed drew, when the plan came from the seed.
    pub mix: Option<Mix>,
    /// The fault plan.
    #[serde(skip)]
    pub plan: FaultPlan,
    /// Figures the scenario measured, as (name, value), in the order it reports them.
    pub metrics: Vec<(String, String)>,
    /// The command that replays this run.
    pub replay: String,
    /// The events of the run, for `weir replay --trace`.
    #[serde(skip)]
    pub trace: Vec<TraceEvent>,
}

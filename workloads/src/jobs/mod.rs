//! Jobs from the field, written for Weir's distributed runtime, each with an oracle that
//! computes its exact output from its input without the engine.
//!
//! A job here is a graph (plain data the job manager ships to task managers) plus the user
//! functions it names, which every task manager registers with [`functions`].

pub mod nexmark_queries;
pub mod order_aggregates;

use weir_core::runtime::Functions;

/// Every job's user functions, for a task manager's registry.
pub fn functions() -> Functions {
    nexmark_queries::register(order_aggregates::register(Functions::default()))
}

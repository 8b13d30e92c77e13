//! Weir's deterministic simulator: turmoil clusters, fault plans, histories, checkers and replay.
//!
//! A run is a pure function of (binary, scenario, seed): the same inputs give the same trace
//! hash. A failing run prints the `weir replay` line that reproduces it.

pub mod checker;
pub mod compare;
pub mod env;
pub mod fault;
pub mod harness;
pub mod history;
pub mod live;
pub mod report;
pub mod scenario;
pub mod scenarios;
pub mod trace;

//! Weir's workloads: event generators, the jobs they feed and the oracles that say what those
//! jobs must output. Every generator is a pure function of its seed.

pub mod clicks;
pub mod customers;
pub mod generator;
pub mod jobs;
pub mod keys;
pub mod late_data;
pub mod nexmark;
pub mod orders;
pub mod queue;

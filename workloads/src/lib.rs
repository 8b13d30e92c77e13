//! Weir's workloads: event generators, the jobs they feed and the oracles that say what those
//! jobs must output. Every generator is a pure function of its seed.

pub mod keys;
pub mod late_data;
pub mod queue;

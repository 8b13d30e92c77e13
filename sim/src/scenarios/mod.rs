//! The scenarios.

pub mod broker_crash;

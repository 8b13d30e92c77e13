//! The scenarios.

pub mod broker_crash;
mod common;
pub mod late_data;

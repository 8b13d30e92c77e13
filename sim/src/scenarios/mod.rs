//! The scenarios.

pub mod backpressure;
pub mod broker_crash;
pub(crate) mod common;
pub mod consumer_group;
pub mod ctp;
pub mod eos_pipeline;
pub mod idempotent_producer;
pub mod isr_shrink;
pub mod jobs;
pub mod late_data;
pub mod microbatch;
pub(crate) mod pipeline;
pub(crate) mod queue;
pub mod replication;
pub mod savepoint;
pub mod transactions;

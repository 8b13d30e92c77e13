//! The distributed runtime: what moves a stream job's data between tasks on different hosts.
//!
//! So far this is the [`exchange`](crate::runtime::exchange): credit-based, bounded transfer of serialized records from a
//! producing task's result partition to the consuming tasks' input gates.

pub mod exchange;

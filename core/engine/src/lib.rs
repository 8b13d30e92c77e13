//! Weir's stream engine: the DataStream API and the distributed runtime that runs it with
//! checkpoints, exactly-once sinks and recovery, on real sockets or in the simulator.

/// The distributed runtime: job manager, task managers, exchange, checkpoints, exactly-once sinks.
pub mod runtime;
pub mod stream;

//! Weir's core: the broker, the Kafka-protocol client, log storage, and the seams they run on.
//!
//! Everything here runs unchanged on real sockets and files or inside the turmoil simulator.
//! The seams are [`net`] (network), [`disk`] (storage), [`clock`] (time from `tokio::time`) and
//! [`rng`] (seeded randomness).

pub mod broker;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod disk;
pub mod log;
pub mod net;
pub mod record;
pub mod rng;
/// The distributed runtime: job manager, task managers, exchange, checkpoints, exactly-once sinks.
pub mod runtime;
pub mod stream;
pub mod wire;

//! The seams everything in Weir runs on, each with a real and a simulated side: [`net`]
//! (tokio sockets or turmoil's network), [`disk`] (files or turmoil's `unstable-fs` shim with
//! injected faults), [`clock`] (time from `tokio::time`) and [`rng`] (randomness derived from
//! the run's seed).
//!
//! No other crate reaches the network, the disk, the clock or a random source except through
//! these; that is what makes a simulated run a pure function of its seed.

pub mod clock;
pub mod disk;
pub mod net;
pub mod rng;

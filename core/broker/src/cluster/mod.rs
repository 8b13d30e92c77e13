//! The cluster layer: the metadata quorum every broker embeds, the controller that runs on its
//! leader, and the internal RPC brokers use to reach each other.

pub mod controller;
pub mod groups;
pub mod metadata;
pub mod protocol;
pub mod quorum;
mod raft_store;
pub mod rpc;
pub mod txns;

//! Weir's Kafka-protocol client: admin, producer and consumer. It talks to Weir's broker or to
//! any Kafka cluster, over the network seam, so the simulator and the CLI share it.

mod admin;
mod cluster;
mod conn;
mod consumer;
mod error;
mod group;
mod mux;
mod partitioner;
mod producer;

pub use admin::{Admin, NewTopic, TopicListing};
pub use cluster::{ClientConfig, Cluster, PartitionInfo};
pub use conn::{ConnConfig, Connection};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, Isolation, OffsetReset, TopicPartition,
};
pub use error::ClientError;
pub use group::{
    Assignor, GroupConfig, GroupConsumer, GroupMetadata, ListenerFuture, RebalanceListener,
    commit_offsets, committed_offsets,
};
pub use mux::{Mux, MuxLimits};
pub use partitioner::{murmur2, partition_for_key};
pub use producer::{Delivery, Producer, ProducerConfig, Record, RecordMetadata};

//! Weir's stream engine: a Flink-style DataStream API and the fault-tolerant runtime that runs
//! it, on real sockets and files or inside the simulator.
//!
//! A job is plain Rust in the user's crate: closures and trait objects over serde types, built
//! on a [`StreamEnv`] into a [`Job`]. The [`runtime`] runs its subtasks on task managers under
//! a job manager, with a credit-based exchange between them, aligned or unaligned checkpoint
//! barriers, two-phase-commit sinks and restarts from the last completed checkpoint; or under
//! the micro-batch, Kafka Streams and Storm execution models. There is one implementation of
//! windows, watermarks, timers and state, in the operators every model runs.
//!
//! - [`api`]: streams, keyed streams, windows, connected streams and joins, sources and sinks.
//! - [`function`]: the process functions users write, and the contexts they see.
//! - [`state`], [`timers`], [`watermark`], [`window`]: keyed state behind the
//!   [`state::StateBackend`] trait, timers, watermark strategies, window assigners and
//!   triggers.
//! - [`graph`]: a job's shape as plain data, and the stages it runs as.
//! - [`runtime`]: the job manager, task managers and everything between them.
//! - [`launch`]: the entry point of a job's own binary: job manager, task manager, or both.

pub mod api;
pub mod element;
pub mod function;
pub mod graph;
pub mod launch;
mod operator;
mod port;
pub mod runtime;
pub mod state;
mod tag;
pub mod timers;
pub mod watermark;
pub mod window;

pub use api::{
    CollectSink, Collected, ConnectedStreams, DataStream, DeliveryGuarantee, IntervalJoin, Job,
    JoinedStreams, KafkaRecord, KafkaSink, KafkaSource, KeyedConnectedStreams, KeyedStream,
    SinkHandle, StreamEnv, TableSink, WindowedStream,
};
pub use element::{Data, StreamRecord, Timestamp};
pub use function::{
    CoProcessFunction, Context, KeyedCoProcessFunction, KeyedContext, KeyedProcessFunction,
};
pub use operator::source::{DeadLetter, SourceInput};
pub use operator::{DropReason, OperatorMutation};
pub use tag::OutputTag;
pub use timers::TimeDomain;
pub use watermark::WatermarkStrategy;
pub use window::{TimeWindow, Trigger, WindowAssigner, Windowed};

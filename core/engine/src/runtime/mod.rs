//! The distributed runtime: a stream job's subtasks on task-manager hosts, coordinated by a
//! job manager, exchanging data over the network with credit-based flow control, and made
//! exactly-once end to end by checkpoints and two-phase-commit sinks.
//!
//! ```text
//!            job manager (schedules, triggers checkpoints, stores them, restarts)
//!             |  deploy / trigger / complete          ^ ack(snapshot) / committed / heartbeat
//!             v                                       |
//! task manager: [source 0] [source 1]  ==keyed exchange (credit)==>  [window -> sink 0] ...
//!                  ^ broker topic (read_committed)                        | broker transactions
//! ```
//!
//! - [`graph`]: the job as operators and edges, chained into stages.
//! - [`jobmanager`] and [`taskmanager`]: the hosts' roles; [`rpc`] their messages.
//! - [`exchange`]: the data plane between stages, bounded by credit.
//! - [`snapshot`]: what a checkpoint holds and how it is stored.
//! - [`source`], [`window`], [`sink`]: the operators; the sink's two-phase commit is what
//!   makes the output exactly-once; [`table`] holds the tables upsert operators write.
//!   [`function`]: the user functions a graph names.
//! - [`streams`]: a subtask under the Kafka Streams model, which replaces the exchange,
//!   the checkpoints and the two-phase commit with a broker transaction per commit interval;
//!   [`storm`]: a subtask under the Storm model, which tracks every record's tree of tuples
//!   by XOR acknowledgements instead, at least once.

pub mod config;
pub mod element;
pub mod exchange;
pub mod function;
pub mod graph;
pub mod jobmanager;
pub mod metrics;
pub mod rpc;
pub mod running;
pub mod sink;
pub mod snapshot;
mod source;
mod storm;
pub mod streams;
pub mod table;
mod task;
pub mod taskmanager;
mod throttle;
pub mod window;

pub use config::{
    Alignment, CheckpointConfig, ExecutionModel, JobConfig, RestartStrategy, RuntimeMutation,
};
pub use function::{Functions, RowFunction};
pub use graph::{Edge, JobGraph, OperatorSpec, SinkMode, Vertex};
pub use jobmanager::{JobEvent, JobManagerConfig, run_job_manager};
pub use rpc::{JobState, ToClient, ToJobManager};
pub use table::{TableStore, Tables};
pub use taskmanager::{TaskManagerConfig, run_task_manager};
pub use throttle::Throttle;

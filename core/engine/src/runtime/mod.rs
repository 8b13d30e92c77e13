//! The distributed runtime: a job's subtasks on task-manager hosts, coordinated by a job
//! manager, exchanging data over the network with credit-based flow control, and made
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
//! - [`jobmanager`] and [`taskmanager`]: the hosts' roles; [`rpc`] their messages.
//! - `chain`: one subtask's operators, built from the job's code; `task`: what a subtask
//!   does with them at each input, barrier and commit.
//! - [`exchange`]: the data plane between stages, bounded by credit.
//! - [`snapshot`]: what a checkpoint holds and how it is stored.
//! - [`source`] and [`sink`]: the broker sides of topic sources and sinks; the sink's
//!   two-phase commit is what makes the output exactly-once; [`table`] holds the tables
//!   upsert sinks write.
//! - `streams`: a subtask under the Kafka Streams model, which replaces the exchange, the
//!   checkpoints and the two-phase commit with a broker transaction per commit interval;
//!   `storm`: a subtask under the Storm model, which tracks every record's tree of tuples by
//!   XOR acknowledgements instead, at least once.

mod chain;
pub mod config;
pub mod exchange;
pub mod jobmanager;
pub mod local;
pub mod metrics;
pub mod rpc;
pub mod sink;
pub mod snapshot;
pub(crate) mod source;
mod storm;
pub mod streams;
pub mod table;
mod task;
pub mod taskmanager;
mod throttle;

pub use config::{
    Alignment, CheckpointConfig, ExecutionModel, JobConfig, RestartStrategy, RuntimeMutation,
};
pub use jobmanager::{JobEvent, JobManagerConfig, run_job_manager};
pub use rpc::{JobState, ToClient, ToJobManager};
pub use table::{TableStore, Tables};
pub use taskmanager::{TaskManagerConfig, run_task_manager};
pub use throttle::Throttle;

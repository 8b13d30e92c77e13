//! Weir's stream engine: a DataStream API with event time, watermarks, windows, keyed state,
//! timers, side outputs and late data.
//!
//! ```text
//! source (per-split watermarks) -> map / filter / flat_map / process -> key_by
//!     -> window (assigner, trigger, allowed lateness, late side output) -> aggregate / reduce / process
//!     -> sink
//! ```
//!
//! A job is built on a [`StreamEnv`] and run by it on one task. Keyed state sits behind the
//! [`state::StateBackend`] trait; every stateful operator can be snapshotted and restored with
//! its timers and windows, and sources save their positions, so a job resumes where it stopped.

mod datastream;
pub mod element;
mod env;
pub mod mutation;
mod operator;
mod output;
mod port;
pub mod process;
pub mod sink;
pub mod source;
pub mod state;
pub mod timers;
pub mod watermark;
pub mod window;

pub use datastream::{Context, DataStream, KeyedStream, WindowedStream};
pub use env::{EnvConfig, JobReport, JobSnapshot, StreamEnv};
pub use output::OutputTag;

use state::StateError;

/// Why a job stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// Keyed state failed.
    #[error("{0}")]
    State(#[from] StateError),
    /// An event-time operator got a record without a timestamp.
    #[error("operator {0} needs event timestamps, and a record had none")]
    MissingTimestamp(String),
    /// A source failed.
    #[error("{0}")]
    Source(String),
    /// A sink failed.
    #[error("{0}")]
    Sink(String),
    /// A snapshot does not fit this job.
    #[error("restore: {0}")]
    Restore(String),
}

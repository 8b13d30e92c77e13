//! Checkers: they read a run's history and final state and name every violation they find.
//! Each check is a separate function, and each has a test showing it catches its violation.

mod ctp;
mod group;
mod queue;
mod rows;
mod table;
mod txn;
mod txn_graph;
mod windows;

pub use ctp::{CtpRun, CtpViolation, check_ctp};
pub use group::{Assigned, GroupHistory, GroupViolation, OffsetSeen, check_group};
pub use queue::{FinalRead, QueueCheck, check_queue};
pub use rows::{ExpectedRows, RowViolation, check_rows};
pub use table::{TableViolation, check_table};
pub use txn::{TxnOp, TxnOutcome, TxnViolation, check_txns};
pub use txn_graph::{Cycle, CycleKind, Dep};
pub use windows::{
    Expected, WindowTotals, WindowViolation, Windows, check_windows, check_windows_at_least_once,
    oracle,
};

use std::fmt;

/// Something a run did that its guarantees forbid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged write is missing from the final log.
    Lost {
        /// The value written.
        value: String,
        /// Partition it was acknowledged at.
        partition: i32,
        /// Offset it was acknowledged at.
        offset: i64,
    },
    /// An acknowledged write sits at another offset than the one acknowledged.
    InconsistentOffset {
        /// The value written.
        value: String,
        /// Where it was acknowledged.
        acked: (i32, i64),
        /// What the final log holds there, if anything.
        found: Option<String>,
    },
    /// A value appears more than once in the final log.
    Duplicate {
        /// The value.
        value: String,
        /// Every (partition, offset) it appears at.
        at: Vec<(i32, i64)>,
    },
    /// Offsets in a partition skip or repeat.
    OffsetGap {
        /// Partition.
        partition: i32,
        /// Offset before the gap.
        after: i64,
        /// Offset after the gap.
        next: i64,
    },
    /// A consumer read a record that is not what the log holds at that offset.
    ReadMismatch {
        /// Who read it.
        process: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// What was read.
        read: String,
        /// What the final log holds there, if anything.
        log: Option<String>,
    },
    /// A consumer read a value nobody wrote.
    PhantomRead {
        /// Who read it.
        process: String,
        /// The value.
        value: String,
    },
    /// A consumer's reads of a partition went backwards or repeated.
    NonMonotonicPoll {
        /// Who read.
        process: String,
        /// Partition.
        partition: i32,
        /// Previous offset.
        prev: i64,
        /// This offset.
        next: i64,
    },
    /// A write reported as failed is in the log.
    FailedWriteVisible {
        /// The value.
        value: String,
    },
    /// After every fault healed, the system did not serve everything within the bound.
    Liveness(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost {
                value,
                partition,
                offset,
            } => {
                write!(
                    f,
                    "lost write: {value} was acknowledged at p{partition}@{offset} but is not in the log"
                )
            }
            Violation::InconsistentOffset {
                value,
                acked,
                found,
            } => write!(
                f,
                "inconsistent offset: {value} was acknowledged at p{}@{} where the log holds {}",
                acked.0,
                acked.1,
                found.as_deref().unwrap_or("nothing")
            ),
            Violation::Duplicate { value, at } => write!(f, "duplicate: {value} appears at {at:?}"),
            Violation::OffsetGap {
                partition,
                after,
                next,
            } => {
                write!(
                    f,
                    "offsets not dense in p{partition}: {after} is followed by {next}"
                )
            }
            Violation::ReadMismatch {
                process,
                partition,
                offset,
                read,
                log,
            } => write!(
                f,
                "{process} read {read} at p{partition}@{offset} where the log holds {}",
                log.as_deref().unwrap_or("nothing")
            ),
            Violation::PhantomRead { process, value } => {
                write!(f, "{process} read {value}, which nobody wrote")
            }
            Violation::NonMonotonicPoll {
                process,
                partition,
                prev,
                next,
            } => {
                write!(
                    f,
                    "{process} polled p{partition}@{next} after p{partition}@{prev}"
                )
            }
            Violation::FailedWriteVisible { value } => {
                write!(f, "{value} was reported failed but is in the log")
            }
            Violation::Liveness(why) => write!(f, "liveness: {why}"),
        }
    }
}

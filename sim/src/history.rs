//! The history of client operations: each invocation and its completion, with simulated times
//! and outcomes, as Jepsen records them.

use std::fmt;

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum OpKind {
    /// Sent `value` under `key`.
    Send {
        /// Record key.
        key: String,
        /// Record value, unique in the run.
        value: String,
    },
    /// A consumer read `value` at `partition`/`offset`.
    Poll {
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// Value read.
        value: String,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Outcome {
    /// It happened, at this partition and offset.
    Ok {
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// It certainly did not happen.
    Fail(String),
    /// It may or may not have happened.
    Unknown(String),
}

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Op {
    /// Index in the history.
    pub id: usize,
    /// The client process.
    pub process: String,
    /// What it did.
    pub kind: OpKind,
    /// When it was invoked, in simulated milliseconds.
    pub invoke_ms: u64,
    /// When it completed, if it did.
    pub complete_ms: Option<u64>,
    /// Its outcome, if it completed.
    pub outcome: Option<Outcome>,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpKind::Send { key, value } => write!(f, "send {key}={value}"),
            OpKind::Poll {
                partition,
                offset,
                value,
            } => write!(f, "poll p{partition}@{offset}={value}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok { partition, offset } => write!(f, "ok p{partition}@{offset}"),
            Outcome::Fail(why) => write!(f, "fail: {why}"),
            Outcome::Unknown(why) => write!(f, "unknown: {why}"),
        }
    }
}

/// All operations of a run.
#[derive(Clone, Debug, Default)]
pub struct History {
    ops: Vec<Op>,
}

/// Operation counts by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpCounts {
    /// Sends invoked.
    pub sends: u64,
    /// Sends acknowledged.
    pub ok: u64,
    /// Sends that certainly failed.
    pub failed: u64,
    /// Sends with unknown outcome (including never completed).
    pub unknown: u64,
    /// Records read by polls.
    pub polled: u64,
}

impl History {
    /// Records an invocation; returns its id.
    pub fn invoke(&mut self, process: &str, kind: OpKind, at_ms: u64) -> usize {
        let id = self.ops.len();
        self.ops.push(Op {
            id,
            process: process.to_string(),
            kind,
            invoke_ms: at_ms,
            complete_ms: None,
            outcome: None,
        });
        id
    }

    /// Records the completion of operation `id`.
    pub fn complete(&mut self, id: usize, outcome: Outcome, at_ms: u64) {
        let op = &mut self.ops[id];
        assert!(op.outcome.is_none(), "operation {id} completed twice");
        op.complete_ms = Some(at_ms);
        op.outcome = Some(outcome);
    }

    /// Records an operation that completes as it is invoked (a poll).
    pub fn instant(&mut self, process: &str, kind: OpKind, outcome: Outcome, at_ms: u64) -> usize {
        let id = self.invoke(process, kind, at_ms);
        self.complete(id, outcome, at_ms);
        id
    }

    /// The operations in invocation order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Counts by kind and outcome.
    pub fn counts(&self) -> OpCounts {
        let mut c = OpCounts::default();
        for op in &self.ops {
            match (&op.kind, &op.outcome) {
                (OpKind::Send { .. }, o) => {
                    c.sends += 1;
                    match o {
                        Some(Outcome::Ok { .. }) => c.ok += 1,
                        Some(Outcome::Fail(_)) => c.failed += 1,
                        Some(Outcome::Unknown(_)) | None => c.unknown += 1,
                    }
                }
                (OpKind::Poll { .. }, _) => c.polled += 1,
            }
        }
        c
    }
}

//! What a running job reports: per-task samples, checkpoint figures and latencies.

use super::snapshot::TaskId;
use crate::operator::DropReason;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Latencies in milliseconds: count, mean and maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Samples.
    pub count: u64,
    /// Sum of the samples.
    pub sum_ms: u64,
    /// Largest sample.
    pub max_ms: u64,
}

impl LatencyStats {
    /// Adds one sample.
    pub fn record(&mut self, ms: u64) {
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.max_ms = self.max_ms.max(ms);
    }

    /// Adds `now_ms - t` for every event time `t`.
    pub fn record_since(&mut self, event_times: &[i64], now_ms: i64) {
        for t in event_times {
            self.record(u64::try_from(now_ms.saturating_sub(*t)).unwrap_or(0));
        }
    }

    /// The mean, if there are samples.
    pub fn mean_ms(&self) -> Option<u64> {
        (self.count > 0).then(|| self.sum_ms / self.count)
    }

    /// Both sets of samples together.
    pub fn merge(&mut self, other: &LatencyStats) {
        self.count += other.count;
        self.sum_ms = self.sum_ms.saturating_add(other.sum_ms);
        self.max_ms = self.max_ms.max(other.max_ms);
    }
}

/// One task's figures at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSample {
    /// The task.
    pub task: Option<TaskId>,
    /// Its attempt.
    pub attempt: u64,
    /// Rows (and watermarks) taken in.
    pub elements_in: u64,
    /// Rows handed on (to the exchange or the sink).
    pub rows_out: u64,
    /// Time the task's output waited for buffers: the backpressure it felt.
    pub backpressured_ms: u64,
    /// Exchange buffers held now, output and input together.
    pub buffers_in_use: usize,
    /// The most exchange buffers held at any moment so far.
    pub buffers_peak: usize,
    /// What the job's exchange settings allow this task to hold.
    pub buffers_bound: usize,
    /// Bytes of operator state.
    pub state_bytes: u64,
    /// Sources: records in the broker not yet read.
    pub lag_records: Option<u64>,
    /// The task's input watermark.
    pub watermark: i64,
    /// Records its operators dropped, by reason.
    #[serde(default)]
    pub drops: DropCounts,
    /// Sinks: event time to commit.
    pub commit_latency: LatencyStats,
    /// Sinks: event time to the sink's write.
    pub write_latency: LatencyStats,
    /// Storm model, sources: records emitted again because their tree timed out.
    #[serde(default)]
    pub replayed: u64,
}

/// Records dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCounts {
    /// Inputs whose bytes did not deserialize.
    pub unparseable: u64,
    /// Inputs the job's validation refused.
    pub invalid: u64,
    /// Records behind the watermark after their windows closed.
    pub late: u64,
}

impl DropCounts {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.unparseable + self.invalid + self.late
    }

    /// Both counts together.
    pub fn merge(&mut self, other: &DropCounts) {
        self.unparseable += other.unparseable;
        self.invalid += other.invalid;
        self.late += other.late;
    }
}

impl From<BTreeMap<DropReason, u64>> for DropCounts {
    fn from(counts: BTreeMap<DropReason, u64>) -> Self {
        let get = |r| counts.get(&r).copied().unwrap_or(0);
        Self {
            unparseable: get(DropReason::Unparseable),
            invalid: get(DropReason::Invalid),
            late: get(DropReason::Late),
        }
    }
}

/// A completed checkpoint's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStats {
    /// Its id.
    pub id: u64,
    /// From trigger to the last acknowledgement persisted.
    pub duration_ms: u64,
    /// State saved.
    pub size_bytes: u64,
}

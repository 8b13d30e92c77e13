//! What the job needs from an operator that keeps state.

use super::JobError;
use super::state::StateError;
use super::window::WindowMetrics;

/// An operator whose state the job snapshots and restores and whose processing-time timers the
/// executor fires. Operators are identified by a uid that is stable across runs of the same job.
pub(crate) trait StatefulOperator {
    /// The operator's uid.
    fn uid(&self) -> &str;
    /// All of the operator's state: keyed state, timers and its own fields.
    fn snapshot(&self) -> Result<Vec<u8>, StateError>;
    /// Replaces the operator's state with a snapshot.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError>;
    /// The earliest processing-time timer.
    fn next_processing_timer(&self) -> Option<i64>;
    /// Fires processing-time timers due at `now`.
    fn on_processing_time(&mut self, now: i64) -> Result<(), JobError>;
    /// Bytes of state held.
    fn state_bytes(&self) -> u64;
    /// Window counters, for window operators.
    fn window_metrics(&self) -> Option<WindowMetrics> {
        None
    }
}

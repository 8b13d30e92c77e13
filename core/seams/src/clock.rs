//! Wall-clock time for timestamps, derived from tokio's clock.
//!
//! Code that runs in the simulator must never read the operating system's clock. A [`Clock`] is
//! built from an epoch that the caller supplies once (the CLI reads the real clock; the simulator
//! passes a fixed epoch) and advances with `tokio::time`, which turmoil drives.

use std::time::Duration;
use tokio::time::Instant;

/// Milliseconds since the Unix epoch, advancing with `tokio::time`.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch_ms: i64,
    start: Instant,
}

impl Clock {
    /// A clock that reads `epoch_ms` now and advances with tokio's clock from here on.
    pub fn starting_at(epoch_ms: i64) -> Self {
        assert!(epoch_ms >= 0, "epoch must not precede 1970");
        Self {
            epoch_ms,
            start: Instant::now(),
        }
    }

    /// Current time in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.epoch_ms.saturating_add(elapsed)
    }

    /// Time elapsed since this clock was created.
    pub fn uptime(&self) -> Duration {
        self.start.elapsed()
    }
}

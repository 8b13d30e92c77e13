//! A fault-injection knob for task managers: a delay per row that a task takes from the
//! exchange, as a slow operator or an overloaded machine would add. Sources are not slowed, so
//! they read at full speed until credit runs out: the slowdown reaches them as backpressure.
//! The simulator turns it on and off from a fault plan; it is zero otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Debt, in microseconds, a task accumulates before it sleeps it off: one timer per few
/// milliseconds of delay rather than one per row.
const SLEEP_DEBT_MIN_US: u64 = 5_000;

/// A shared per-row delay, in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Throttle(Arc<AtomicU64>);

impl Throttle {
    /// Sets the delay per row; 0 turns the throttle off.
    pub fn set_row_delay_us(&self, us: u64) {
        self.0.store(us, Ordering::Relaxed);
    }

    /// The delay per row now.
    pub fn row_delay_us(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One task's share of a throttle: counts rows and sleeps off their delay in chunks.
#[derive(Debug, Default)]
pub(crate) struct Slowdown {
    throttle: Throttle,
    debt_us: u64,
}

impl Slowdown {
    pub fn new(throttle: Throttle) -> Self {
        Self {
            throttle,
            debt_us: 0,
        }
    }

    /// Charges one row, sleeping once enough delay has built up.
    pub async fn row(&mut self) {
        let delay = self.throttle.row_delay_us();
        if delay == 0 {
            self.debt_us = 0;
            return;
        }
        self.debt_us += delay;
        if self.debt_us >= SLEEP_DEBT_MIN_US {
            let debt = std::mem::take(&mut self.debt_us);
            tokio::time::sleep(Duration::from_micros(debt)).await;
        }
    }
}

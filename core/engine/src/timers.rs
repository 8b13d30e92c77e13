//! Timers per key and namespace, in event time and in processing time.
//!
//! Registering a timer twice keeps one. Timers fire in time order, then key order, then
//! namespace order, which makes firing deterministic.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    /// Fires when the watermark reaches it.
    EventTime,
    /// Fires when the processing clock reaches it.
    ProcessingTime,
}

/// A timer: when, for which key (serialized) and namespace.
pub type Timer = (i64, Vec<u8>, Vec<u8>);

/// The timers of one keyed operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimerService {
    event: BTreeSet<Timer>,
    processing: BTreeSet<Timer>,
}

impl TimerService {
    fn set(&mut self, domain: TimeDomain) -> &mut BTreeSet<Timer> {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// Registers a timer.
    pub fn register(&mut self, domain: TimeDomain, at: i64, key: &[u8], ns: &[u8]) {
        self.set(domain).insert((at, key.to_vec(), ns.to_vec()));
    }

    /// Deletes a timer, if registered.
    pub fn delete(&mut self, domain: TimeDomain, at: i64, key: &[u8], ns: &[u8]) {
        self.set(domain).remove(&(at, key.to_vec(), ns.to_vec()));
    }

    /// Removes and returns the earliest timer at or before `time`.
    pub fn pop_due(&mut self, domain: TimeDomain, time: i64) -> Option<Timer> {
        let set = self.set(domain);
        if set.first().is_some_and(|t| t.0 <= time) {
            set.pop_first()
        } else {
            None
        }
    }

    /// The earliest processing-time timer.
    pub fn next_processing(&self) -> Option<i64> {
        self.processing.first().map(|t| t.0)
    }

    /// Number of timers registered.
    pub fn len(&self) -> usize {
        self.event.len() + self.processing.len()
    }

    /// Whether no timer is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_order_once() {
        let mut t = TimerService::default();
        t.register(TimeDomain::EventTime, 20, b"k2", b"");
        t.register(TimeDomain::EventTime, 10, b"k1", b"");
        t.register(TimeDomain::EventTime, 10, b"k1", b"");
        t.register(TimeDomain::EventTime, 10, b"k0", b"");
        t.register(TimeDomain::ProcessingTime, 5, b"k0", b"");
        assert_eq!(t.len(), 4);
        assert_eq!(t.pop_due(TimeDomain::EventTime, 15).unwrap().1, b"k0");
        assert_eq!(t.pop_due(TimeDomain::EventTime, 15).unwrap().1, b"k1");
        assert_eq!(t.pop_due(TimeDomain::EventTime, 15), None);
        t.delete(TimeDomain::EventTime, 20, b"k2", b"");
        assert_eq!(t.pop_due(TimeDomain::EventTime, 100), None);
        assert_eq!(t.next_processing(), Some(5));
    }
}

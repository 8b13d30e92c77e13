//! The trace of a run: every fault, client operation and final read, in order, with its
//! simulated time. Its hash identifies the run: the same binary, scenario and seed always give
//! the same hash, and a replay prints the same events.

use std::fmt::Write as _;
use xxhash_rust::xxh3::Xxh3;

/// Events kept for printing; past this only the hash is updated.
pub const TRACE_EVENTS_MAX: usize = 200_000;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TraceEvent {
    /// Simulated time, in milliseconds since the run started.
    pub at_ms: u64,
    /// Who did it: a host, a client process, or the nemesis.
    pub source: String,
    /// What happened.
    pub what: String,
}

/// An ordered, hashed log of events.
pub struct Trace {
    events: Vec<TraceEvent>,
    hasher: Xxh3,
    count: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            hasher: Xxh3::new(),
            count: 0,
        }
    }
}

impl Trace {
    /// Appends an event.
    pub fn record(&mut self, at_ms: u64, source: &str, what: String) {
        let mut line = String::with_capacity(source.len() + what.len() + 24);
        let _ = write!(line, "{at_ms}\u{1f}{source}\u{1f}{what}\u{1e}");
        self.hasher.update(line.as_bytes());
        self.count += 1;
        if self.events.len() < TRACE_EVENTS_MAX {
            self.events.push(TraceEvent {
                at_ms,
                source: source.to_string(),
                what,
            });
        }
    }

    /// The hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.hasher.digest()
    }

    /// Number of events recorded.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The kept events.
    pub fn events(&self) -> &[TraceEvent] {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_order_and_content() {
        let mut a = Trace::default();
        a.record(1, "x", "one".into());
        a.record(2, "y", "two".into());
        let mut b = Trace::default();
        b.record(1, "x", "one".into());
        b.record(2, "y", "two".into());
        assert_eq!(a.hash(), b.hash());
        let mut c = Trace::default();
        c.record(2, "y", "two".into());
        c.record(1, "x", "one".into());
        assert_ne!(a.hash(), c.hash());
        let mut d = Trace::default();
        d.record(1, "x", "one".into());
        d.record(2, "y", "two!".into());
        assert_ne!(a.hash(), d.hash());
    }
}

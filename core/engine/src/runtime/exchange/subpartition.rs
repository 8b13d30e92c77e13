//! One subpartition's state on the sender: the buffer being filled, the bounded queue behind
//! it, and the credit its consumer has granted.

use super::config::ExchangeConfig;
use super::error::ExchangeError;
use super::event::Event;
use super::metrics::SubpartitionMetrics;
use super::wire::{RECORD_HEADER_BYTES, ToConsumer, put_record};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What waits to go out, in order.
enum Queued {
    /// A finished buffer and how many records it holds.
    Buffer { records: Bytes, count: u64 },
    /// An event; sent without credit.
    Event(Event),
}

/// The sender's side of one channel.
pub(super) struct Subpartition {
    max_buffers: usize,
    max_bytes: usize,
    timeout: Duration,
    /// Finished buffers and events, oldest first; the front is being written while it is there.
    queue: VecDeque<Queued>,
    /// Records (with lengths) of the buffer being filled.
    filling: Vec<u8>,
    filling_records: u64,
    /// When the buffer being filled must go out even if it is not full.
    flush_at: Option<Instant>,
    /// Finished buffers in `queue`.
    finished_buffers: usize,
    credit: u32,
    /// Credit the consumer has granted over the connection's life.
    granted_total: u64,
    /// An end-of-partition is queued: nothing may follow it.
    ended: bool,
    /// The end-of-partition has been written.
    end_sent: bool,
    /// A consumer has opened this subpartition.
    pub(super) connected: bool,
    /// Why the connection broke; the subpartition is unusable from then on.
    pub(super) failed: Option<Arc<ExchangeError>>,
    metrics: SubpartitionMetrics,
}

/// Whether a record went into a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Append {
    /// It did; the caller wakes the writer.
    Done,
    /// Every buffer is taken: the caller waits for the writer to free one.
    Full,
}

impl Subpartition {
    /// An empty subpartition.
    pub(super) fn new(config: &ExchangeConfig) -> Self {
        Self {
            max_buffers: config.buffers_per_subpartition_max,
            max_bytes: config.buffer_bytes_max,
            timeout: Duration::from_millis(config.buffer_timeout_ms),
            queue: VecDeque::new(),
            filling: Vec::new(),
            filling_records: 0,
            flush_at: None,
            finished_buffers: 0,
            credit: 0,
            granted_total: 0,
            ended: false,
            end_sent: false,
            connected: false,
            failed: None,
            metrics: SubpartitionMetrics::default(),
        }
    }

    /// Adds `record` to the buffer being filled, finishing it first if the record does not fit
    /// and starting a new one if a buffer is free. The caller has checked the record's size.
    pub(super) fn append(&mut self, record: &[u8], now: Instant) -> Append {
        debug_assert!(!self.ended, "append after end-of-partition");
        let need = RECORD_HEADER_BYTES + record.len();
        if self.filling.len() + need > self.max_bytes {
            self.finish_filling();
        }
        if self.filling.is_empty() {
            if self.buffers() >= self.max_buffers {
                return Append::Full;
            }
            self.filling.reserve_exact(self.max_bytes);
            self.flush_at = Some(now + self.timeout);
        }
        put_record(&mut self.filling, record);
        self.filling_records += 1;
        self.note_held();
        // No room left for a record of even one byte: send it now rather than at the timeout.
        if self.filling.len() + RECORD_HEADER_BYTES >= self.max_bytes {
            self.finish_filling();
        }
        Append::Done
    }

    /// Finishes the buffer being filled if its timeout has passed.
    pub(super) fn flush_if_due(&mut self, now: Instant) {
        if self.flush_at.is_some_and(|at| at <= now) {
            self.finish_filling();
        }
    }

    /// Finishes the buffer being filled, so it goes out as soon as there is credit.
    pub(super) fn finish_filling(&mut self) {
        if self.filling.is_empty() {
            return;
        }
        let records = Bytes::from(std::mem::take(&mut self.filling));
        self.queue.push_back(Queued::Buffer {
            records,
            count: std::mem::take(&mut self.filling_records),
        });
        self.finished_buffers += 1;
        self.flush_at = None;
    }

    /// Queues `event` behind everything written so far. The caller has checked [`Self::ended`].
    pub(super) fn push_event(&mut self, event: Event) {
        debug_assert!(!self.ended, "event after end-of-partition");
        self.finish_filling();
        self.ended = event == Event::EndOfPartition;
        self.queue.push_back(Queued::Event(event));
    }

    /// The message at the front of the queue if it may go out now, spending a credit on a
    /// buffer; it stays queued (and counted) until [`Self::sent`].
    pub(super) fn next_message(&mut self) -> Option<ToConsumer> {
        match self.queue.front()? {
            Queued::Event(event) => Some(ToConsumer::Event(*event)),
            Queued::Buffer { records, .. } if self.credit > 0 => {
                self.credit -= 1;
                let backlog = u32::try_from(self.finished_buffers - 1).unwrap_or(u32::MAX);
                Some(ToConsumer::Buffer {
                    backlog,
                    records: records.clone(),
                })
            }
            Queued::Buffer { .. } => None,
        }
    }

    /// Drops the front of the queue once it has been written.
    pub(super) fn sent(&mut self) {
        match self.queue.pop_front() {
            Some(Queued::Buffer { records, count }) => {
                self.finished_buffers -= 1;
                self.metrics.buffers_sent += 1;
                self.metrics.records_sent += count;
                self.metrics.bytes_sent += records.len() as u64;
            }
            Some(Queued::Event(event)) => {
                self.metrics.events_sent += 1;
                self.end_sent |= event == Event::EndOfPartition;
            }
            None => debug_assert!(false, "sent with an empty queue"),
        }
    }

    /// Takes the consumer's running total of granted credit; a total no higher than one
    /// already seen (a repeat, or one overtaken) changes nothing.
    pub(super) fn grant_total(&mut self, total: u64) {
        if total > self.granted_total {
            let more = u32::try_from(total - self.granted_total).unwrap_or(u32::MAX);
            self.credit = self.credit.saturating_add(more);
            self.granted_total = total;
        }
    }

    /// When the writer must wake to flush a partly filled buffer.
    pub(super) fn flush_at(&self) -> Option<Instant> {
        self.flush_at
    }

    /// Whether the end-of-partition has been written.
    pub(super) fn end_sent(&self) -> bool {
        self.end_sent
    }

    /// Whether an end-of-partition is queued or sent.
    pub(super) fn ended(&self) -> bool {
        self.ended
    }

    /// This subpartition's accounting now.
    pub(super) fn metrics(&self) -> SubpartitionMetrics {
        SubpartitionMetrics {
            buffers_queued: self.buffers(),
            bytes_queued: self.bytes(),
            credit: self.credit,
            ..self.metrics.clone()
        }
    }

    /// Buffers held: finished plus the one being filled.
    fn buffers(&self) -> usize {
        self.finished_buffers + usize::from(!self.filling.is_empty())
    }

    fn bytes(&self) -> usize {
        let queued: usize = self
            .queue
            .iter()
            .map(|q| match q {
                Queued::Buffer { records, .. } => records.len(),
                Queued::Event(_) => 0,
            })
            .sum();
        queued + self.filling.len()
    }

    fn note_held(&mut self) {
        let held = self.buffers();
        assert!(
            held <= self.max_buffers,
            "subpartition holds {held} buffers, over its bound of {}",
            self.max_buffers
        );
        self.metrics.buffers_queued_peak = self.metrics.buffers_queued_peak.max(held);
    }
}

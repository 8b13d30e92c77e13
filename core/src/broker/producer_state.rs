//! Idempotent-producer state of one partition: the last batches of each producer, by sequence.
//!
//! Rebuilt on open from the batch headers in the log, so it is exactly as durable as the log.

use crate::record::BatchHeader;
use kafka_protocol::error::ResponseError;
use std::collections::{BTreeMap, VecDeque};

/// Batches remembered per producer for answering duplicates, as Kafka does.
pub(crate) const RETAINED_BATCHES: usize = 5;

/// Where a retained batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug)]
struct Entry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// What to do with an incoming batch from an idempotent producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SeqCheck {
    /// Its sequence is next: append it.
    Append,
    /// It was appended before: answer with where it landed.
    Duplicate {
        /// Base offset of the original.
        base_offset: i64,
        /// Last offset of the original.
        last_offset: i64,
    },
}

/// The producer table of one partition, bounded to `max_producers` entries.
#[derive(Debug)]
pub(crate) struct ProducerTable {
    entries: BTreeMap<i64, Entry>,
    max_producers: usize,
}

impl ProducerTable {
    pub fn new(max_producers: usize) -> Self {
        assert!(max_producers > 0);
        Self {
            entries: BTreeMap::new(),
            max_producers,
        }
    }

    /// Number of producers tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Checks a batch with a producer id against the table.
    pub fn check(&self, h: &BatchHeader) -> Result<SeqCheck, ResponseError> {
        debug_assert!(h.has_producer_id());
        let Some(e) = self.entries.get(&h.producer_id) else {
            return if h.base_sequence == 0 {
                Ok(SeqCheck::Append)
            } else {
                Err(ResponseError::OutOfOrderSequenceNumber)
            };
        };
        if h.producer_epoch < e.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if h.producer_epoch > e.epoch {
            return if h.base_sequence == 0 {
                Ok(SeqCheck::Append)
            } else {
                Err(ResponseError::OutOfOrderSequenceNumber)
            };
        }
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == h.last_sequence())
        {
            return Ok(SeqCheck::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            });
        }
        let expected = e.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if h.base_sequence == expected {
            Ok(SeqCheck::Append)
        } else {
            Err(ResponseError::OutOfOrderSequenceNumber)
        }
    }

    /// Records an appended batch (with its final offsets).
    pub fn record(&mut self, h: &BatchHeader) {
        if !h.has_producer_id() || h.is_control() {
            return;
        }
        let e = self.entries.entry(h.producer_id).or_insert(Entry {
            epoch: h.producer_epoch,
            batches: VecDeque::new(),
        });
        if h.producer_epoch > e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        e.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while e.batches.len() > RETAINED_BATCHES {
            e.batches.pop_front();
        }
        if self.entries.len() > self.max_producers {
            // Forget the producer that wrote least recently.
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.batches.back().map_or(i64::MIN, |b| b.last_offset))
                .map(|(pid, _)| *pid)
                .expect("table is not empty");
            self.entries.remove(&oldest);
        }
        debug_assert!(self.entries.len() <= self.max_producers);
    }
}

/// The sequence after `seq`, wrapping to 0 after `i32::MAX` as Kafka does.
fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, n: i32, base: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: n,
        }
    }

    #[test]
    fn sequences_dedupe_and_order() {
        let mut t = ProducerTable::new(10);
        assert_eq!(t.check(&header(1, 0, 0, 3, 0)), Ok(SeqCheck::Append));
        t.record(&header(1, 0, 0, 3, 0));
        assert_eq!(
            t.check(&header(1, 0, 0, 3, 99)),
            Ok(SeqCheck::Duplicate {
                base_offset: 0,
                last_offset: 2
            })
        );
        assert_eq!(t.check(&header(1, 0, 3, 2, 99)), Ok(SeqCheck::Append));
        assert_eq!(
            t.check(&header(1, 0, 4, 2, 99)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(
            t.check(&header(1, 0, 7, 1, 99)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(
            t.check(&header(2, 0, 5, 1, 99)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn epochs_fence_and_reset() {
        let mut t = ProducerTable::new(10);
        t.record(&header(1, 3, 0, 1, 0));
        assert_eq!(
            t.check(&header(1, 2, 1, 1, 1)),
            Err(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            t.check(&header(1, 4, 1, 1, 1)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(t.check(&header(1, 4, 0, 1, 1)), Ok(SeqCheck::Append));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_the_table_is_bounded() {
        let mut t = ProducerTable::new(2);
        for i in 0..7 {
            t.record(&header(1, 0, i, 1, i64::from(i)));
        }
        assert_eq!(
            t.check(&header(1, 0, 1, 1, 0)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(
            t.check(&header(1, 0, 2, 1, 0)),
            Ok(SeqCheck::Duplicate {
                base_offset: 2,
                last_offset: 2
            })
        );
        t.record(&header(2, 0, 0, 1, 10));
        t.record(&header(3, 0, 0, 1, 11));
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.check(&header(1, 0, 7, 1, 0)),
            Err(ResponseError::OutOfOrderSequenceNumber),
            "producer 1 was evicted"
        );
    }

    #[test]
    fn sequence_wraps() {
        assert_eq!(next_seq(i32::MAX), 0);
        let mut t = ProducerTable::new(4);
        t.record(&header(1, 0, i32::MAX, 1, 0));
        assert_eq!(t.check(&header(1, 0, 0, 1, 1)), Ok(SeqCheck::Append));
    }
}

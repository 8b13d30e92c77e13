//! Idempotent-producer state of one partition: the last batches of each producer, by sequence.
//!
//! Rebuilt on open from the batch headers in the log, so it is exactly as durable as the log.

use kafka_protocol::error::ResponseError;
use std::collections::{BTreeMap, VecDeque};
use weir_wire::record::{BatchHeader, Marker};

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
    /// Epoch of the last coordinator that wrote a marker for this producer, or -1.
    coordinator_epoch: i32,
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

    /// Checks a transaction marker for `producer_id` at `epoch` from a coordinator at
    /// `coordinator_epoch`: a marker from an older producer epoch or an older coordinator is
    /// refused.
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), ResponseError> {
        match self.entries.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(ResponseError::InvalidProducerEpoch),
            Some(e) if coordinator_epoch < e.coordinator_epoch => {
                Err(ResponseError::TransactionCoordinatorFenced)
            }
            _ => Ok(()),
        }
    }

    /// The epoch this table holds for `producer_id`.
    pub fn epoch_of(&self, producer_id: i64) -> Option<i16> {
        self.entries.get(&producer_id).map(|e| e.epoch)
    }

    /// Records an appended batch (with its final offsets); `marker` is its transaction marker
    /// when it is a control batch. A marker at a newer epoch fences the older one: sequences
    /// restart from 0 at the new epoch.
    pub fn record(&mut self, h: &BatchHeader, marker: Option<Marker>) {
        if !h.has_producer_id() {
            return;
        }
        let e = self.entries.entry(h.producer_id).or_insert(Entry {
            epoch: h.producer_epoch,
            coordinator_epoch: -1,
            batches: VecDeque::new(),
        });
        if h.producer_epoch > e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        if let Some(m) = marker {
            e.coordinator_epoch = e.coordinator_epoch.max(m.coordinator_epoch);
            return;
        }
        if h.is_control() {
            return;
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

/// A batch header for tests: `count` records from offset `base`, written by `producer_id` at
/// `epoch` from sequence `sequence`, with no attribute set.
#[cfg(test)]
pub(crate) fn test_header(
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    count: i32,
    base: i64,
) -> BatchHeader {
    BatchHeader {
        base_offset: base,
        batch_length: 100,
        partition_leader_epoch: 0,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: count - 1,
        base_timestamp: 0,
        max_timestamp: 0,
        producer_id,
        producer_epoch: epoch,
        base_sequence: sequence,
        record_count: count,
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
        test_header(pid, epoch, seq, n, base)
    }

    #[test]
    fn sequences_dedupe_and_order() {
        let mut t = ProducerTable::new(10);
        assert_eq!(t.check(&header(1, 0, 0, 3, 0)), Ok(SeqCheck::Append));
        t.record(&header(1, 0, 0, 3, 0), None);
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
        t.record(&header(1, 3, 0, 1, 0), None);
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
            t.record(&header(1, 0, i, 1, i64::from(i)), None);
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
        t.record(&header(2, 0, 0, 1, 10), None);
        t.record(&header(3, 0, 0, 1, 11), None);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.check(&header(1, 0, 7, 1, 0)),
            Err(ResponseError::OutOfOrderSequenceNumber),
            "producer 1 was evicted"
        );
    }

    #[test]
    fn a_marker_at_a_bumped_epoch_fences_the_old_one_and_old_coordinators() {
        let mut t = ProducerTable::new(4);
        t.record(&header(1, 0, 0, 2, 0), None);
        let mut marker = header(1, 1, -1, 1, 2);
        marker.attributes = 0b11 << 4;
        let m = Marker {
            kind: weir_wire::record::MarkerKind::Commit,
            coordinator_epoch: 5,
        };
        assert_eq!(t.check_marker(1, 1, 5), Ok(()));
        t.record(&marker, Some(m));
        assert_eq!(t.epoch_of(1), Some(1));
        assert_eq!(
            t.check(&header(1, 0, 2, 1, 3)),
            Err(ResponseError::InvalidProducerEpoch),
            "a delayed batch of the ended transaction is fenced"
        );
        assert_eq!(t.check(&header(1, 1, 0, 1, 3)), Ok(SeqCheck::Append));
        assert_eq!(
            t.check_marker(1, 1, 4),
            Err(ResponseError::TransactionCoordinatorFenced)
        );
        assert_eq!(
            t.check_marker(1, 0, 6),
            Err(ResponseError::InvalidProducerEpoch)
        );
    }

    #[test]
    fn sequence_wraps() {
        assert_eq!(next_seq(i32::MAX), 0);
        let mut t = ProducerTable::new(4);
        t.record(&header(1, 0, i32::MAX, 1, 0), None);
        assert_eq!(t.check(&header(1, 0, 0, 1, 1)), Ok(SeqCheck::Append));
    }
}

//! The transactions of one partition: which producers have a transaction open here (and from
//! which offset), and which transactions ended in an abort. From these come the last stable
//! offset and the aborted-transactions list a read_committed fetch returns.
//!
//! Derived from the log alone (data batches open, markers close), so it is rebuilt on open and
//! after every truncation, and it is the same on a leader and on its followers.

use std::collections::{BTreeMap, VecDeque};
use weir_wire::record::{BatchHeader, Marker, MarkerKind};

/// An aborted transaction's span in this partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AbortedTxn {
    /// The producer.
    pub producer_id: i64,
    /// Offset of its first batch here.
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
}

/// Open transactions and aborted spans of one partition.
#[derive(Debug, Default)]
pub(crate) struct TxnIndex {
    /// Producer id to the first offset and the producer epoch of its open transaction.
    open: BTreeMap<i64, (i64, i16)>,
    /// Aborted spans in marker order; bounded by the log (pruned below its start).
    aborted: VecDeque<AbortedTxn>,
}

impl TxnIndex {
    /// Follows one stored batch; `marker` is its marker when it is a control batch.
    pub fn observe(&mut self, h: &BatchHeader, marker: Option<Marker>) {
        if !h.is_transactional() {
            return;
        }
        match marker {
            None => {
                self.open
                    .entry(h.producer_id)
                    .or_insert((h.base_offset, h.producer_epoch));
            }
            Some(m) => {
                let first = self.open.remove(&h.producer_id);
                if let (Some((first_offset, _)), MarkerKind::Abort) = (first, m.kind) {
                    debug_assert!(
                        self.aborted
                            .back()
                            .is_none_or(|a| a.last_offset < h.base_offset)
                    );
                    self.aborted.push_back(AbortedTxn {
                        producer_id: h.producer_id,
                        first_offset,
                        last_offset: h.base_offset,
                    });
                }
            }
        }
    }

    /// The producer epoch of `producer_id`'s open transaction here, if it has one.
    pub fn open_epoch(&self, producer_id: i64) -> Option<i16> {
        self.open.get(&producer_id).map(|(_, e)| *e)
    }

    /// The first offset of the oldest open transaction.
    pub fn first_unstable(&self) -> Option<i64> {
        self.open.values().map(|(o, _)| *o).min()
    }

    /// Aborted transactions that have records in `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted spans wholly below `log_start`: no reader can fetch them any more.
    pub fn prune_below(&mut self, log_start: i64) {
        while self
            .aborted
            .front()
            .is_some_and(|a| a.last_offset < log_start)
        {
            self.aborted.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, base: i64, transactional: bool, control: bool) -> BatchHeader {
        let mut h = crate::producer_state::test_header(pid, 0, 0, 1, base);
        if transactional {
            h.attributes |= 1 << 4;
        }
        if control {
            h.attributes |= 1 << 5;
        }
        h
    }

    fn marker(kind: MarkerKind) -> Option<Marker> {
        Some(Marker {
            kind,
            coordinator_epoch: 1,
        })
    }

    #[test]
    fn open_transactions_hold_back_the_stable_offset_and_aborts_are_listed() {
        let mut t = TxnIndex::default();
        t.observe(&header(1, 0, true, false), None);
        t.observe(&header(2, 1, true, false), None);
        t.observe(&header(9, 2, false, false), None);
        t.observe(&header(1, 3, true, false), None);
        assert_eq!(t.first_unstable(), Some(0));
        t.observe(&header(1, 4, true, true), marker(MarkerKind::Abort));
        assert_eq!(t.first_unstable(), Some(1));
        assert_eq!((t.open_epoch(1), t.open_epoch(2)), (None, Some(0)));
        t.observe(&header(2, 5, true, true), marker(MarkerKind::Commit));
        assert_eq!(t.first_unstable(), None);
        let aborted = t.aborted_between(0, 10);
        assert_eq!(
            aborted,
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 0,
                last_offset: 4
            }]
        );
        assert!(t.aborted_between(5, 10).is_empty());
        t.prune_below(5);
        assert!(t.aborted_between(0, 10).is_empty());
    }
}

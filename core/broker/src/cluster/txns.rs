//! Transactions' durable state, held in the metadata image: per transactional id, the producer
//! id and epoch, the phase, the partitions and groups the transaction touched, and the offsets
//! it will commit for those groups.
//!
//! The coordinator computes each transition and commits it as [`MetadataCommand::PutTxn`],
//! conditional on the record's version, so two coordinators (or one coordinator's retries) can
//! never both move a transaction from the same state.
//!
//! [`MetadataCommand::PutTxn`]: super::metadata::MetadataCommand::PutTxn

use super::groups::CommittedOffset;
use super::metadata::{Applied, MetadataImage};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Where a transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnPhase {
    /// No transaction open.
    Empty,
    /// Partitions or groups were added; it may commit or abort.
    Ongoing,
    /// The commit is decided; markers are being written.
    PrepareCommit,
    /// The abort is decided; markers are being written.
    PrepareAbort,
    /// Committed everywhere.
    CompleteCommit,
    /// Aborted everywhere.
    CompleteAbort,
}

impl TxnPhase {
    /// Whether the outcome is decided but its markers are not all written.
    pub fn is_prepared(self) -> bool {
        matches!(self, Self::PrepareCommit | Self::PrepareAbort)
    }
}

/// One transactional id's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    /// The producer id the transactional id maps to.
    pub producer_id: i64,
    /// Its current epoch; older epochs are fenced.
    pub producer_epoch: i16,
    /// The epoch the open (or ending) transaction's records carry; ending it may have bumped
    /// `producer_epoch` past it.
    pub txn_epoch: i16,
    /// How long a transaction may stay open, in milliseconds.
    pub timeout_ms: i64,
    /// Where the transaction is.
    pub phase: TxnPhase,
    /// Partitions the open transaction wrote to, or is ending in.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets the transaction commits, with the offsets sent so far.
    pub offsets: BTreeMap<String, Vec<CommittedOffset>>,
    /// When the open transaction started, in milliseconds since the epoch.
    pub started_ms: i64,
    /// Bumped by every transition.
    pub version: u64,
}

/// Stores `record` under `id` if the stored version is still `expected` (`None`: no record).
/// Entering [`TxnPhase::PrepareCommit`] also commits the transaction's group offsets, in the
/// same step as the decision.
pub(crate) fn put_txn(
    image: &mut MetadataImage,
    id: &str,
    record: &TxnRecord,
    expected: Option<u64>,
) -> Applied {
    let current = image.transactions.get(id).map(|r| r.version);
    if current != expected {
        return Applied::Rejected(format!(
            "transaction {id:?} is at version {current:?}, not {expected:?}"
        ));
    }
    if let Some(old) = image.transactions.get(id)
        && old.producer_id != record.producer_id
    {
        image.txn_producers.remove(&old.producer_id);
    }
    if record.phase == TxnPhase::PrepareCommit {
        for (group, offsets) in &record.offsets {
            // Offsets for a topic deleted meanwhile are dropped; the decision still stands.
            let _ = super::groups::commit_offsets(image, group, offsets);
        }
    }
    image
        .txn_producers
        .insert(record.producer_id, id.to_string());
    image.transactions.insert(id.to_string(), record.clone());
    Applied::Done
}

impl MetadataImage {
    /// The transaction of `producer_id`, if it is transactional.
    pub fn txn_of_producer(&self, producer_id: i64) -> Option<(&str, &TxnRecord)> {
        let id = self.txn_producers.get(&producer_id)?;
        self.transactions.get(id).map(|r| (id.as_str(), r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u64, phase: TxnPhase) -> TxnRecord {
        TxnRecord {
            producer_id: 7,
            producer_epoch: 0,
            txn_epoch: 0,
            timeout_ms: 1000,
            phase,
            partitions: BTreeSet::new(),
            offsets: BTreeMap::new(),
            started_ms: 0,
            version,
        }
    }

    #[test]
    fn transitions_are_conditional_on_the_version() {
        let mut image = MetadataImage::default();
        assert_eq!(
            put_txn(&mut image, "t", &record(0, TxnPhase::Empty), None),
            Applied::Done
        );
        assert!(matches!(
            put_txn(&mut image, "t", &record(1, TxnPhase::Ongoing), None),
            Applied::Rejected(_)
        ));
        assert_eq!(
            put_txn(&mut image, "t", &record(1, TxnPhase::Ongoing), Some(0)),
            Applied::Done
        );
        assert!(matches!(
            put_txn(&mut image, "t", &record(2, TxnPhase::PrepareAbort), Some(0)),
            Applied::Rejected(_)
        ));
        assert_eq!(
            image.txn_of_producer(7).map(|(id, r)| (id, r.phase)),
            Some(("t", TxnPhase::Ongoing))
        );
    }
}

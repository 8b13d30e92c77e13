//! A leader's check that a transactional batch belongs to a transaction the coordinator has
//! open, at the producer's current epoch, on this partition. Without it a late batch could
//! open a transaction here that no coordinator will ever end, and hold back the last stable
//! offset forever.

use super::super::State;
use crate::cluster::metadata::MetadataImage;
use crate::cluster::txns::TxnPhase;
use kafka_protocol::error::ResponseError;
use std::time::Duration;
use tokio::time::Instant;
use weir_wire::record::BatchHeader;

/// How long a leader waits for its metadata to show a just-added partition, in milliseconds.
const VERIFY_WAIT_MS: u64 = 1_000;

fn check(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    h: &BatchHeader,
) -> Result<(), ResponseError> {
    let Some((_, rec)) = image.txn_of_producer(h.producer_id) else {
        return Err(ResponseError::InvalidTxnState);
    };
    if h.producer_epoch < rec.producer_epoch {
        return Err(ResponseError::InvalidProducerEpoch);
    }
    let open = rec.phase == TxnPhase::Ongoing
        && rec.producer_epoch == h.producer_epoch
        && rec.partitions.contains(&(topic.to_string(), partition));
    if open {
        Ok(())
    } else {
        Err(ResponseError::InvalidTxnState)
    }
}

/// Accepts `h` once this broker's metadata shows its transaction open on `topic`-`partition`,
/// waiting briefly for the metadata to catch up with the coordinator.
pub(crate) async fn verify(
    state: &State,
    topic: &str,
    partition: i32,
    h: &BatchHeader,
) -> Result<(), ResponseError> {
    let mut rx = state.quorum.watch();
    let deadline = Instant::now() + Duration::from_millis(VERIFY_WAIT_MS);
    loop {
        let image = rx.borrow_and_update().image.clone();
        match check(&image, topic, partition, h) {
            Ok(()) => return Ok(()),
            Err(ResponseError::InvalidProducerEpoch) => {
                return Err(ResponseError::InvalidProducerEpoch);
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {}
        }
        if !matches!(
            tokio::time::timeout_at(deadline, rx.changed()).await,
            Ok(Ok(()))
        ) {
            let image = state.quorum.current().image;
            return check(&image, topic, partition, h);
        }
    }
}

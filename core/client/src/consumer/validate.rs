//! Position validation (KIP-320): asks the current leader, with OffsetsForLeaderEpoch, where
//! the leader epoch of the last batch a consumer consumed ends in its log.

use super::TopicPartition;
use crate::cluster::Cluster;
use crate::error::ClientError;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::time::Duration;

/// Attempts of one validation, each after a metadata refresh.
const ATTEMPTS_MAX: u32 = 3;
/// Pause before each attempt after the first, in milliseconds.
const RETRY_BACKOFF_MS: u64 = 100;

/// What the current leader says about a position's epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Validation {
    /// Nothing to check: the position has no epoch (it came from a seek), or the leader does
    /// not serve OffsetsForLeaderEpoch. `leader_epoch` is the current leader's, from metadata.
    Unchecked { leader_epoch: i32 },
    /// The leader in `leader_epoch` answered: `epoch`, the largest of its epochs at or below
    /// the position's, ends at `end_offset`; both are -1 when it has no such epoch.
    EpochEnd {
        leader_epoch: i32,
        epoch: i32,
        end_offset: i64,
    },
}

/// Refreshes the metadata of `tp` and asks its leader where `epoch` ends, retrying a bounded
/// number of times while the leader moves or the metadata is stale.
pub(super) async fn validate(
    cluster: &Cluster,
    tp: &TopicPartition,
    epoch: Option<i32>,
) -> Result<Validation, ClientError> {
    let mut last = None;
    for attempt in 0..ATTEMPTS_MAX {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
        }
        cluster.forget(&tp.0).await;
        match ask(cluster, tp, epoch, attempt + 1 == ATTEMPTS_MAX).await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retriable() => {
                tracing::debug!(topic = %tp.0, partition = tp.1, attempt, error = %e, "position validation failed; retrying");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Protocol("no validation attempt".into())))
}

async fn ask(
    cluster: &Cluster,
    tp: &TopicPartition,
    epoch: Option<i32>,
    last_attempt: bool,
) -> Result<Validation, ClientError> {
    let info = cluster.leader(&tp.0, tp.1).await?;
    let Some(epoch) = epoch else {
        return Ok(Validation::Unchecked {
            leader_epoch: info.leader_epoch,
        });
    };
    if info.leader_epoch < epoch && !last_attempt {
        // Older than the data consumed: a broker that has not caught up answered the metadata
        // request. (On the last attempt the leader is asked anyway: a topic created again
        // under the same name starts its epochs afresh.)
        return Err(ClientError::Kafka {
            code: ResponseError::LeaderNotAvailable,
            context: format!(
                "metadata shows {}-{} in leader epoch {}, before the position's {epoch}",
                tp.0, tp.1, info.leader_epoch
            ),
        });
    }
    let conn = cluster.node(info.leader).await?;
    let Ok(v) = conn.version(ApiKey::OffsetForLeaderEpoch) else {
        return Ok(Validation::Unchecked {
            leader_epoch: info.leader_epoch,
        });
    };
    let part = OffsetForLeaderPartition::default()
        .with_partition(tp.1)
        .with_current_leader_epoch(info.leader_epoch)
        .with_leader_epoch(epoch);
    let topic = OffsetForLeaderTopic::default()
        .with_topic(TopicName(StrBytes::from_string(tp.0.clone())))
        .with_partitions(vec![part]);
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![topic]);
    let resp: OffsetForLeaderEpochResponse =
        conn.send(ApiKey::OffsetForLeaderEpoch, v, &req).await?;
    let p = resp
        .topics
        .iter()
        .filter(|t| t.topic.0.as_str() == tp.0)
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition == tp.1)
        .ok_or_else(|| {
            ClientError::Protocol("OffsetForLeaderEpoch answered another partition".into())
        })?;
    if let Some(e) = ClientError::kafka(
        p.error_code,
        format!("end of leader epoch {epoch} of {}-{}", tp.0, tp.1),
    ) {
        return Err(e);
    }
    Ok(Validation::EpochEnd {
        leader_epoch: info.leader_epoch,
        epoch: p.leader_epoch,
        end_offset: p.end_offset,
    })
}

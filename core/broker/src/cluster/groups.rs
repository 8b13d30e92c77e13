//! Consumer groups' durable state, kept in the metadata image: each group's committed offsets
//! and the highest generation it has completed. Membership lives in memory on the coordinator;
//! only what must outlive a coordinator goes through the quorum.
//!
//! Offsets are stored with the id of the topic they were committed for, so a topic deleted and
//! created again under the same name does not inherit the old topic's offsets; entries of
//! topics that no longer exist are dropped whenever the group commits again.

use super::metadata::{Applied, MetadataImage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most groups the image holds; a coordinator may allow fewer.
pub const GROUPS_MAX: usize = 100_000;
/// Most partitions one group may hold committed offsets for.
pub const COMMITTED_PARTITIONS_PER_GROUP_MAX: usize = 100_000;
/// Longest metadata string stored with a committed offset, in bytes.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Longest group id, in bytes.
pub const GROUP_ID_BYTES_MAX: usize = 255;

/// One offset to commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset the group will consume.
    pub offset: i64,
    /// Leader epoch of the record before `offset`, or -1.
    pub leader_epoch: i32,
    /// Free text the committer attached.
    pub metadata: String,
}

/// A committed offset as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRecord {
    /// Id of the topic it was committed for.
    pub topic_id: u128,
    /// The next offset the group will consume.
    pub offset: i64,
    /// Leader epoch of the record before `offset`, or -1.
    pub leader_epoch: i32,
    /// Free text the committer attached.
    pub metadata: String,
}

/// A group's durable state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Highest generation completed; a coordinator's next generation is above it.
    pub generation: i32,
    /// Committed offsets by topic, then partition.
    pub offsets: BTreeMap<String, BTreeMap<i32, OffsetRecord>>,
}

impl GroupRecord {
    /// The committed offset of `topic`-`partition`, if it belongs to the topic that exists now.
    pub fn committed(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
    ) -> Option<&OffsetRecord> {
        let id = image.topics.get(topic)?.id;
        self.offsets
            .get(topic)?
            .get(&partition)
            .filter(|r| r.topic_id == id)
    }

    /// Partitions with an offset stored, stale ones included.
    pub fn partition_count(&self) -> usize {
        self.offsets.values().map(BTreeMap::len).sum()
    }
}

fn group_entry<'a>(
    image: &'a mut MetadataImage,
    group: &str,
) -> Result<&'a mut GroupRecord, Applied> {
    if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX {
        return Err(Applied::Rejected(format!("invalid group id {group:?}")));
    }
    if !image.groups.contains_key(group) && image.groups.len() >= GROUPS_MAX {
        return Err(Applied::Rejected(format!(
            "the cluster holds its maximum of {GROUPS_MAX} groups"
        )));
    }
    Ok(image.groups.entry(group.to_string()).or_default())
}

/// Applies [`super::metadata::MetadataCommand::CommitOffsets`]: all of the batch or none.
/// Partitions that do not exist are skipped, as are metadata strings over the bound.
pub(crate) fn commit_offsets(
    image: &mut MetadataImage,
    group: &str,
    offsets: &[CommittedOffset],
) -> Applied {
    let ids: BTreeMap<String, u128> = image
        .topics
        .iter()
        .map(|(name, t)| (name.clone(), t.id))
        .collect();
    let valid: Vec<(&CommittedOffset, u128)> = offsets
        .iter()
        .filter(|o| o.metadata.len() <= OFFSET_METADATA_BYTES_MAX)
        .filter_map(|o| {
            image
                .partition(&o.topic, o.partition)
                .and_then(|_| ids.get(&o.topic).map(|id| (o, *id)))
        })
        .collect();
    let g = match group_entry(image, group) {
        Ok(g) => g,
        Err(rejected) => return rejected,
    };
    // Offsets of deleted (or deleted and re-created) topics go first, so that they never count
    // against the bound.
    g.offsets.retain(|topic, parts| {
        parts.retain(|_, r| ids.get(topic) == Some(&r.topic_id));
        !parts.is_empty()
    });
    let added = valid
        .iter()
        .filter(|(o, _)| {
            g.offsets
                .get(&o.topic)
                .is_none_or(|p| !p.contains_key(&o.partition))
        })
        .count();
    if g.partition_count() + added > COMMITTED_PARTITIONS_PER_GROUP_MAX {
        return Applied::Rejected(format!(
            "group {group:?} would hold more than {COMMITTED_PARTITIONS_PER_GROUP_MAX} committed partitions"
        ));
    }
    for (o, topic_id) in valid {
        g.offsets.entry(o.topic.clone()).or_default().insert(
            o.partition,
            OffsetRecord {
                topic_id,
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata: o.metadata.clone(),
            },
        );
    }
    Applied::Done
}

/// Applies [`super::metadata::MetadataCommand::CompleteGeneration`]: generations only rise.
pub(crate) fn complete_generation(
    image: &mut MetadataImage,
    group: &str,
    generation: i32,
) -> Applied {
    match group_entry(image, group) {
        Ok(g) => {
            g.generation = g.generation.max(generation);
            Applied::Done
        }
        Err(rejected) => rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::metadata::MetadataCommand;

    fn image() -> MetadataImage {
        let mut m = MetadataImage::default();
        m.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            id: 7,
            assignment: vec![vec![0], vec![0]],
            overrides: BTreeMap::new(),
        });
        m
    }

    fn at(partition: i32, offset: i64) -> CommittedOffset {
        CommittedOffset {
            topic: "t".into(),
            partition,
            offset,
            leader_epoch: -1,
            metadata: String::new(),
        }
    }

    fn commit(m: &mut MetadataImage, offsets: Vec<CommittedOffset>) -> Applied {
        m.apply(&MetadataCommand::CommitOffsets {
            group: "g".into(),
            offsets,
        })
    }

    #[test]
    fn offsets_of_a_deleted_topic_are_not_served_to_its_successor() {
        let mut m = image();
        assert_eq!(
            commit(&mut m, vec![at(0, 5), at(1, 9), at(7, 1)]),
            Applied::Done
        );
        let g = m.groups["g"].clone();
        assert_eq!(g.committed(&m, "t", 1).map(|r| r.offset), Some(9));
        assert_eq!(g.partition_count(), 2, "partition 7 does not exist");
        m.apply(&MetadataCommand::DeleteTopic { name: "t".into() });
        m.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            id: 8,
            assignment: vec![vec![0], vec![0]],
            overrides: BTreeMap::new(),
        });
        assert_eq!(m.groups["g"].committed(&m, "t", 1), None);
        assert_eq!(commit(&mut m, vec![at(0, 1)]), Applied::Done);
        assert_eq!(m.groups["g"].partition_count(), 1, "stale entries dropped");
    }

    #[test]
    fn generations_only_rise_and_bad_ids_are_refused() {
        let mut m = image();
        let gen_of = |m: &mut MetadataImage, generation| {
            m.apply(&MetadataCommand::CompleteGeneration {
                group: "g".into(),
                generation,
            })
        };
        assert_eq!(gen_of(&mut m, 4), Applied::Done);
        assert_eq!(gen_of(&mut m, 2), Applied::Done);
        assert_eq!(m.groups["g"].generation, 4);
        assert!(matches!(
            m.apply(&MetadataCommand::CommitOffsets {
                group: String::new(),
                offsets: vec![at(0, 1)],
            }),
            Applied::Rejected(_)
        ));
    }
}

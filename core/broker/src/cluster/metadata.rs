//! The cluster metadata: brokers, topics, partition leadership and ISRs, producer ids. Every
//! broker holds the same image, built by applying the same committed commands in the same order
//! (the metadata quorum's log), so applying must be a pure function of the image and the
//! command.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// No leader.
pub const NO_LEADER: i32 = -1;
/// Ids of deleted topics remembered, so that a broker that was down during a delete still
/// removes the data when it returns.
pub const DELETED_TOPICS_KEPT: usize = 1024;

/// A broker as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerImage {
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
    /// A fenced broker leads nothing and is in no ISR.
    pub fenced: bool,
    /// Changes on every restart of the broker.
    pub incarnation: u64,
}

/// A partition's replicas and leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// Assigned replicas; the first is preferred as leader.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Leader, or [`NO_LEADER`].
    pub leader: i32,
    /// Bumped on every leader change.
    pub leader_epoch: i32,
    /// Bumped on every change; changes are conditional on it.
    pub partition_epoch: i32,
}

/// A topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    /// Topic id.
    pub id: u128,
    /// Partitions, by index.
    pub partitions: Vec<PartitionImage>,
    /// Config overrides.
    pub overrides: BTreeMap<String, String>,
}

/// The whole image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Registered brokers.
    pub brokers: BTreeMap<i32, BrokerImage>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicImage>,
    /// The next producer id to hand out.
    pub next_producer_id: i64,
    /// Ids of the most recently deleted topics, oldest first.
    pub deleted_topics: VecDeque<u128>,
    /// Consumer groups' durable state, by group id.
    #[serde(default)]
    pub groups: BTreeMap<String, super::groups::GroupRecord>,
    /// Transactions, by transactional id.
    #[serde(default)]
    pub transactions: BTreeMap<String, super::txns::TxnRecord>,
    /// Transactional id of each transactional producer id.
    #[serde(default)]
    pub txn_producers: BTreeMap<i64, String>,
}

/// A change to the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// A broker joins, or rejoins after a restart, with its address; it starts unfenced. A
    /// restarted broker may have lost unsynced data, so every partition it leads gets a new
    /// leader epoch: followers then truncate whatever they copied beyond its recovered log.
    RegisterBroker {
        /// Broker id.
        id: i32,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The broker's incarnation.
        incarnation: u64,
    },
    /// A broker stopped heartbeating: it leaves every ISR and leads nothing.
    FenceBroker {
        /// Broker id.
        id: i32,
    },
    /// A fenced broker is heartbeating again.
    UnfenceBroker {
        /// Broker id.
        id: i32,
    },
    /// Creates a topic with the given replica assignment (one list per partition).
    CreateTopic {
        /// Name.
        name: String,
        /// Id.
        id: u128,
        /// Replicas of each partition.
        assignment: Vec<Vec<i32>>,
        /// Config overrides.
        overrides: BTreeMap<String, String>,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// Name.
        name: String,
    },
    /// Changes a partition's leader and ISR, if its partition epoch is still `expected_epoch`.
    ChangePartition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// New leader.
        leader: i32,
        /// New ISR.
        isr: Vec<i32>,
        /// The partition epoch the change was computed from.
        expected_epoch: i32,
    },
    /// Hands out `count` producer ids.
    AllocateProducerIds {
        /// How many.
        count: i64,
    },
    /// Stores a batch of a group's committed offsets, all or none, without any generation
    /// check: whoever proposes it has fenced the committer already.
    CommitOffsets {
        /// Group id.
        group: String,
        /// Offsets to store.
        offsets: Vec<super::groups::CommittedOffset>,
    },
    /// Records that a group completed `generation`, so a later coordinator starts above it.
    CompleteGeneration {
        /// Group id.
        group: String,
        /// The generation completed.
        generation: i32,
    },
    /// Moves a transaction to `record` if its stored version is still `expected`.
    PutTxn {
        /// Transactional id.
        id: String,
        /// The new state.
        record: super::txns::TxnRecord,
        /// The version the transition was computed from; `None` for a new id.
        expected: Option<u64>,
    },
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The image changed.
    Done,
    /// The first of the producer ids allocated.
    ProducerIds(i64),
    /// Nothing changed, and why.
    Rejected(String),
}

impl MetadataImage {
    /// A partition, if it exists.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionImage> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
    }

    /// Brokers that are registered and not fenced.
    pub fn live_brokers(&self) -> Vec<i32> {
        self.brokers
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Applies one committed command.
    pub fn apply(&mut self, cmd: &MetadataCommand) -> Applied {
        match cmd {
            MetadataCommand::RegisterBroker {
                id,
                host,
                port,
                incarnation,
            } => {
                let restarted = self
                    .brokers
                    .get(id)
                    .is_some_and(|b| b.incarnation != *incarnation);
                self.brokers.insert(
                    *id,
                    BrokerImage {
                        host: host.clone(),
                        port: *port,
                        fenced: false,
                        incarnation: *incarnation,
                    },
                );
                if restarted {
                    for p in self
                        .topics
                        .values_mut()
                        .flat_map(|t| t.partitions.iter_mut())
                    {
                        if p.leader == *id {
                            p.leader_epoch += 1;
                            p.partition_epoch += 1;
                        }
                    }
                }
                self.adopt_orphans(*id);
                Applied::Done
            }
            MetadataCommand::FenceBroker { id } => {
                let Some(b) = self.brokers.get_mut(id) else {
                    return Applied::Rejected(format!("broker {id} is not registered"));
                };
                b.fenced = true;
                for t in self.topics.values_mut() {
                    for p in &mut t.partitions {
                        let was_leader = p.leader == *id;
                        // The last member stays in the ISR, so that it can lead again cleanly.
                        if p.isr.contains(id) && p.isr.len() > 1 {
                            p.isr.retain(|r| r != id);
                            p.partition_epoch += 1;
                        }
                        if was_leader {
                            let next = p
                                .replicas
                                .iter()
                                .copied()
                                .find(|r| *r != *id && p.isr.contains(r));
                            p.leader = next.unwrap_or(NO_LEADER);
                            p.leader_epoch += 1;
                            p.partition_epoch += 1;
                        }
                    }
                }
                Applied::Done
            }
            MetadataCommand::UnfenceBroker { id } => {
                let Some(b) = self.brokers.get_mut(id) else {
                    return Applied::Rejected(format!("broker {id} is not registered"));
                };
                b.fenced = false;
                self.adopt_orphans(*id);
                Applied::Done
            }
            MetadataCommand::CreateTopic {
                name,
                id,
                assignment,
                overrides,
            } => {
                if self.topics.contains_key(name) {
                    return Applied::Rejected(format!("topic {name:?} already exists"));
                }
                let partitions = assignment
                    .iter()
                    .map(|replicas| PartitionImage {
                        replicas: replicas.clone(),
                        isr: replicas.clone(),
                        leader: replicas.first().copied().unwrap_or(NO_LEADER),
                        leader_epoch: 0,
                        partition_epoch: 0,
                    })
                    .collect();
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        id: *id,
                        partitions,
                        overrides: overrides.clone(),
                    },
                );
                Applied::Done
            }
            MetadataCommand::DeleteTopic { name } => match self.topics.remove(name) {
                Some(t) => {
                    self.deleted_topics.push_back(t.id);
                    if self.deleted_topics.len() > DELETED_TOPICS_KEPT {
                        self.deleted_topics.pop_front();
                    }
                    Applied::Done
                }
                None => Applied::Rejected(format!("topic {name:?} does not exist")),
            },
            MetadataCommand::ChangePartition {
                topic,
                partition,
                leader,
                isr,
                expected_epoch,
            } => {
                let Some(p) = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.partitions.get_mut(*partition as usize))
                else {
                    return Applied::Rejected(format!("{topic}-{partition} does not exist"));
                };
                if p.partition_epoch != *expected_epoch {
                    return Applied::Rejected(format!(
                        "partition epoch is {}, not {expected_epoch}",
                        p.partition_epoch
                    ));
                }
                if isr.is_empty()
                    || isr.iter().any(|r| !p.replicas.contains(r))
                    || (*leader != NO_LEADER && !isr.contains(leader))
                {
                    return Applied::Rejected(format!(
                        "leader {leader} / ISR {isr:?} do not fit replicas {:?}",
                        p.replicas
                    ));
                }
                if p.leader != *leader {
                    p.leader_epoch += 1;
                }
                p.leader = *leader;
                p.isr = isr.clone();
                p.partition_epoch += 1;
                Applied::Done
            }
            MetadataCommand::AllocateProducerIds { count } => {
                let first = self.next_producer_id;
                self.next_producer_id += count.max(&1);
                Applied::ProducerIds(first)
            }
            MetadataCommand::CommitOffsets { group, offsets } => {
                super::groups::commit_offsets(self, group, offsets)
            }
            MetadataCommand::CompleteGeneration { group, generation } => {
                super::groups::complete_generation(self, group, *generation)
            }
            MetadataCommand::PutTxn {
                id,
                record,
                expected,
            } => super::txns::put_txn(self, id, record, *expected),
        }
    }

    /// Gives leaderless partitions whose ISR holds `id` back to it.
    fn adopt_orphans(&mut self, id: i32) {
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                if p.leader == NO_LEADER && p.isr.contains(&id) {
                    p.leader = id;
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_brokers() -> MetadataImage {
        let mut m = MetadataImage::default();
        for id in 0..3 {
            m.apply(&MetadataCommand::RegisterBroker {
                id,
                host: format!("b{id}"),
                port: 9092,
                incarnation: 1,
            });
        }
        m.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            id: 1,
            assignment: vec![vec![0, 1, 2], vec![1, 2, 0]],
            overrides: BTreeMap::new(),
        });
        m
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr() {
        let mut m = three_brokers();
        m.apply(&MetadataCommand::FenceBroker { id: 0 });
        let p = m.partition("t", 0).unwrap();
        assert_eq!(p.leader, 1);
        assert_eq!(p.isr, vec![1, 2]);
        assert_eq!(p.leader_epoch, 1);
        let p1 = m.partition("t", 1).unwrap();
        assert_eq!(
            (p1.leader, p1.leader_epoch),
            (1, 0),
            "broker 0 only left the ISR there"
        );
        assert_eq!(m.live_brokers(), vec![1, 2]);
    }

    #[test]
    fn the_last_isr_member_keeps_its_place_and_leads_again_when_back() {
        let mut m = three_brokers();
        for id in [0, 1, 2] {
            m.apply(&MetadataCommand::FenceBroker { id });
        }
        let p = m.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![2]));
        m.apply(&MetadataCommand::UnfenceBroker { id: 0 });
        assert_eq!(
            m.partition("t", 0).unwrap().leader,
            NO_LEADER,
            "0 is not in the ISR: no unclean election"
        );
        m.apply(&MetadataCommand::UnfenceBroker { id: 2 });
        assert_eq!(m.partition("t", 0).unwrap().leader, 2);
    }

    #[test]
    fn a_restarted_leader_leads_in_a_new_epoch() {
        let mut m = three_brokers();
        m.apply(&MetadataCommand::RegisterBroker {
            id: 0,
            host: "b0".into(),
            port: 9092,
            incarnation: 1,
        });
        assert_eq!(
            m.partition("t", 0).unwrap().leader_epoch,
            0,
            "same incarnation: nothing changes"
        );
        m.apply(&MetadataCommand::RegisterBroker {
            id: 0,
            host: "b0".into(),
            port: 9092,
            incarnation: 2,
        });
        let p = m.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch), (0, 1));
        assert_eq!(
            m.partition("t", 1).unwrap().leader_epoch,
            0,
            "broker 0 does not lead partition 1"
        );
        m.apply(&MetadataCommand::DeleteTopic { name: "t".into() });
        assert_eq!(m.deleted_topics, [1]);
    }

    #[test]
    fn partition_changes_are_conditional_on_the_epoch() {
        let mut m = three_brokers();
        let change = |isr: Vec<i32>, expected_epoch| MetadataCommand::ChangePartition {
            topic: "t".into(),
            partition: 0,
            leader: 0,
            isr,
            expected_epoch,
        };
        assert_eq!(m.apply(&change(vec![0, 1], 0)), Applied::Done);
        assert!(
            matches!(m.apply(&change(vec![0], 0)), Applied::Rejected(_)),
            "stale epoch"
        );
        assert!(
            matches!(m.apply(&change(vec![1], 1)), Applied::Rejected(_)),
            "leader outside the ISR"
        );
        assert_eq!(m.partition("t", 0).unwrap().isr, vec![0, 1]);
        assert_eq!(
            m.apply(&MetadataCommand::AllocateProducerIds { count: 10 }),
            Applied::ProducerIds(0)
        );
        assert_eq!(
            m.apply(&MetadataCommand::AllocateProducerIds { count: 1 }),
            Applied::ProducerIds(10)
        );
    }
}

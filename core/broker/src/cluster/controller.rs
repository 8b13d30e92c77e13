//! The controller: the part of the metadata quorum's leader that decides. It tracks broker
//! sessions and fences brokers that stop heartbeating (which moves their leaderships within the
//! ISR), validates ISR changes from partition leaders, assigns replicas to new topics, and hands
//! out producer ids. Every decision is a command committed through the quorum; the controller
//! itself keeps only soft state (session deadlines), rebuilt whenever a node takes over.

use super::metadata::{Applied, MetadataCommand, MetadataImage, NO_LEADER};
use super::protocol::{AlterPartition, CodedError, CreateTopic, Heartbeat, Response};
use super::quorum::{Quorum, QuorumError};
use kafka_protocol::error::ResponseError;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use weir_seams::rng::WeirRng;

/// Most producer ids one request may take.
pub const PRODUCER_ID_BLOCK_MAX: i64 = 10_000;

/// Controller settings.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// A broker that has not heartbeat for this long is fenced, in milliseconds.
    pub session_timeout_ms: u64,
    /// How often sessions are checked, in milliseconds.
    pub check_interval_ms: u64,
    /// Whether a partition with no live ISR member may be led by a live replica outside the
    /// ISR, accepting the loss of whatever only the ISR had. Off by default, as in Kafka.
    pub unclean_leader_election: bool,
    /// Most topics in the cluster.
    pub max_topics: usize,
    /// Most partitions per topic.
    pub max_partitions_per_topic: i32,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms: 6_000,
            check_interval_ms: 250,
            unclean_leader_election: false,
            max_topics: 10_000,
            max_partitions_per_topic: 1000,
        }
    }
}

struct Sessions {
    /// The term these deadlines belong to; a new term starts everyone afresh.
    term: u64,
    last_seen: BTreeMap<i32, Instant>,
}

/// The controller of one broker; active only while its quorum node is the active leader.
pub struct Controller {
    quorum: Quorum,
    config: ControllerConfig,
    sessions: Mutex<Sessions>,
    rng: Mutex<WeirRng>,
}

fn coded(code: ResponseError, message: impl Into<String>) -> CodedError {
    CodedError::new(code, message)
}

/// Broker id of a Raft id: voters are numbered from 1, brokers from 0.
pub fn broker_of(raft_id: u64) -> i32 {
    raft_id as i32 - 1
}

/// Raft id of a broker id.
pub fn raft_of(broker: i32) -> u64 {
    (broker + 1) as u64
}

impl Controller {
    /// A controller driving `quorum`.
    pub fn new(quorum: Quorum, config: ControllerConfig, rng: WeirRng) -> Self {
        Self {
            quorum,
            config,
            sessions: Mutex::new(Sessions {
                term: 0,
                last_seen: BTreeMap::new(),
            }),
            rng: Mutex::new(rng),
        }
    }

    /// The image, if this node is the active controller.
    fn active_image(&self) -> Result<std::sync::Arc<MetadataImage>, Response> {
        let st = self.quorum.current();
        if st.active {
            let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if s.term != st.term {
                // A new controller gives every broker a full session before fencing anyone.
                let now = Instant::now();
                s.term = st.term;
                s.last_seen = st.image.brokers.keys().map(|b| (*b, now)).collect();
            }
            Ok(st.image)
        } else {
            Err(Response::NotController {
                leader: st.leader.map(broker_of),
            })
        }
    }

    async fn propose(&self, cmd: MetadataCommand) -> Result<Applied, Response> {
        self.quorum.propose(cmd).await.map_err(|e| match e {
            QuorumError::NotLeader { leader } => Response::NotController {
                leader: leader.map(broker_of),
            },
            QuorumError::Timeout | QuorumError::Unavailable => {
                Response::NotController { leader: None }
            }
        })
    }

    /// A broker's heartbeat: registers it (again, after a restart) and unfences it.
    pub async fn heartbeat(&self, hb: Heartbeat) -> Response {
        let image = match self.active_image() {
            Ok(i) => i,
            Err(r) => return r,
        };
        let known = image.brokers.get(&hb.broker);
        let fresh = known.is_none_or(|b| {
            b.incarnation != hb.incarnation || b.host != hb.host || b.port != hb.port
        });
        let cmd = if fresh {
            Some(MetadataCommand::RegisterBroker {
                id: hb.broker,
                host: hb.host,
                port: hb.port,
                incarnation: hb.incarnation,
            })
        } else if known.is_some_and(|b| b.fenced) {
            Some(MetadataCommand::UnfenceBroker { id: hb.broker })
        } else {
            None
        };
        if let Some(cmd) = cmd
            && let Err(r) = self.propose(cmd).await
        {
            return r;
        }
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_seen
            .insert(hb.broker, Instant::now());
        Response::Heartbeat {
            metadata_index: self.quorum.current().applied,
        }
    }

    /// A leader's request to change its partition's ISR.
    pub async fn alter_partition(&self, req: AlterPartition) -> Response {
        let image = match self.active_image() {
            Ok(i) => i,
            Err(r) => return r,
        };
        let Some(p) = image.partition(&req.topic, req.partition) else {
            return Response::Partition(Err(coded(
                ResponseError::UnknownTopicOrPartition,
                format!("{}-{}", req.topic, req.partition),
            )));
        };
        if p.leader != req.broker || p.leader_epoch != req.leader_epoch {
            return Response::Partition(Err(coded(
                ResponseError::FencedLeaderEpoch,
                format!("leader is {} in epoch {}", p.leader, p.leader_epoch),
            )));
        }
        if p.partition_epoch != req.partition_epoch {
            return Response::Partition(Err(coded(
                ResponseError::InvalidUpdateVersion,
                format!("partition epoch is {}", p.partition_epoch),
            )));
        }
        let ineligible = req
            .isr
            .iter()
            .find(|r| !p.isr.contains(r) && image.brokers.get(r).is_none_or(|b| b.fenced));
        if let Some(r) = ineligible {
            return Response::Partition(Err(coded(
                ResponseError::IneligibleReplica,
                format!("broker {r} is fenced"),
            )));
        }
        let cmd = MetadataCommand::ChangePartition {
            topic: req.topic.clone(),
            partition: req.partition,
            leader: req.broker,
            isr: req.isr,
            expected_epoch: req.partition_epoch,
        };
        match self.propose(cmd).await {
            Ok(Applied::Done) => {
                let image = self.quorum.current().image;
                match image.partition(&req.topic, req.partition) {
                    Some(p) => Response::Partition(Ok(p.clone())),
                    None => Response::Partition(Err(coded(
                        ResponseError::UnknownTopicOrPartition,
                        "deleted meanwhile",
                    ))),
                }
            }
            Ok(other) => Response::Partition(Err(coded(
                ResponseError::InvalidUpdateVersion,
                format!("{other:?}"),
            ))),
            Err(r) => r,
        }
    }

    /// Creates a topic, spreading replicas over the live brokers.
    pub async fn create_topic(&self, req: CreateTopic) -> Response {
        let image = match self.active_image() {
            Ok(i) => i,
            Err(r) => return r,
        };
        match self.assign(&image, &req) {
            Err(e) => Response::Done(Err(e)),
            Ok(_) if req.validate_only => Response::Done(Ok(())),
            Ok(assignment) => {
                let id = self
                    .rng
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .random::<u128>();
                match self
                    .propose(MetadataCommand::CreateTopic {
                        name: req.name.clone(),
                        id,
                        assignment,
                        overrides: req.overrides,
                    })
                    .await
                {
                    Ok(Applied::Done) => Response::Done(Ok(())),
                    Ok(_) => Response::Done(Err(coded(
                        ResponseError::TopicAlreadyExists,
                        format!("topic {:?} already exists", req.name),
                    ))),
                    Err(r) => r,
                }
            }
        }
    }

    fn assign(
        &self,
        image: &MetadataImage,
        req: &CreateTopic,
    ) -> Result<Vec<Vec<i32>>, CodedError> {
        if image.topics.contains_key(&req.name) {
            return Err(coded(
                ResponseError::TopicAlreadyExists,
                format!("topic {:?} already exists", req.name),
            ));
        }
        if image.topics.len() >= self.config.max_topics {
            return Err(coded(
                ResponseError::PolicyViolation,
                format!(
                    "the cluster holds its limit of {} topics",
                    self.config.max_topics
                ),
            ));
        }
        if req.partitions < 1 || req.partitions > self.config.max_partitions_per_topic {
            return Err(coded(
                ResponseError::InvalidPartitions,
                format!(
                    "partitions must be 1..={}, not {}",
                    self.config.max_partitions_per_topic, req.partitions
                ),
            ));
        }
        let live = image.live_brokers();
        if let Some(assignment) = &req.assignment {
            if assignment.len() != req.partitions as usize {
                return Err(coded(
                    ResponseError::InvalidReplicaAssignment,
                    "one replica list per partition",
                ));
            }
            for replicas in assignment {
                let distinct: std::collections::BTreeSet<_> = replicas.iter().collect();
                if replicas.is_empty() || distinct.len() != replicas.len() {
                    return Err(coded(
                        ResponseError::InvalidReplicaAssignment,
                        "replica lists must be non-empty and without repeats",
                    ));
                }
                if let Some(b) = replicas.iter().find(|b| !image.brokers.contains_key(b)) {
                    return Err(coded(
                        ResponseError::InvalidReplicaAssignment,
                        format!("broker {b} is not in the cluster"),
                    ));
                }
            }
            return Ok(assignment.clone());
        }
        if req.replication_factor < 1 || req.replication_factor as usize > live.len() {
            return Err(coded(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {} with {} live brokers",
                    req.replication_factor,
                    live.len()
                ),
            ));
        }
        let start = image.topics.len();
        Ok((0..req.partitions as usize)
            .map(|p| {
                (0..req.replication_factor as usize)
                    .map(|k| live[(start + p + k) % live.len()])
                    .collect()
            })
            .collect())
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: String) -> Response {
        if let Err(r) = self.active_image() {
            return r;
        }
        match self
            .propose(MetadataCommand::DeleteTopic { name: name.clone() })
            .await
        {
            Ok(Applied::Done) => Response::Done(Ok(())),
            Ok(_) => Response::Done(Err(coded(
                ResponseError::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist"),
            ))),
            Err(r) => r,
        }
    }

    /// Hands out a block of `count` producer ids.
    pub async fn allocate_producer_ids(&self, count: i64) -> Response {
        if let Err(r) = self.active_image() {
            return r;
        }
        match self
            .propose(MetadataCommand::AllocateProducerIds {
                count: count.clamp(1, PRODUCER_ID_BLOCK_MAX),
            })
            .await
        {
            Ok(Applied::ProducerIds(first)) => Response::ProducerIds(Ok(first)),
            Ok(other) => Response::ProducerIds(Err(coded(
                ResponseError::UnknownServerError,
                format!("{other:?}"),
            ))),
            Err(r) => r,
        }
    }

    /// Fences brokers whose sessions expired and, if allowed, elects unclean leaders. Runs until
    /// `stop` is set; does nothing while this node is not the active controller.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        let every = Duration::from_millis(self.config.check_interval_ms.max(1));
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(every) => {}
            }
            let Ok(image) = self.active_image() else {
                continue;
            };
            let timeout = Duration::from_millis(self.config.session_timeout_ms);
            let expired: Vec<i32> = {
                let s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
                image
                    .brokers
                    .iter()
                    .filter(|(id, b)| {
                        !b.fenced && s.last_seen.get(id).is_none_or(|t| t.elapsed() > timeout)
                    })
                    .map(|(id, _)| *id)
                    .collect()
            };
            for id in expired {
                tracing::info!(broker = id, "session expired; fencing");
                if self
                    .propose(MetadataCommand::FenceBroker { id })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            if self.config.unclean_leader_election {
                self.elect_unclean().await;
            }
        }
    }

    async fn elect_unclean(&self) {
        let Ok(image) = self.active_image() else {
            return;
        };
        let live = image.live_brokers();
        for (name, t) in &image.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                let Some(r) = p.replicas.iter().find(|r| live.contains(r)) else {
                    continue;
                };
                if p.leader != NO_LEADER {
                    continue;
                }
                tracing::warn!(topic = %name, partition = i, leader = r, "unclean leader election");
                let cmd = MetadataCommand::ChangePartition {
                    topic: name.clone(),
                    partition: i as i32,
                    leader: *r,
                    isr: vec![*r],
                    expected_epoch: p.partition_epoch,
                };
                if self.propose(cmd).await.is_err() {
                    return;
                }
            }
        }
    }
}

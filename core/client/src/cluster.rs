//! What a client knows about the cluster: brokers, topic partitions and their leaders, plus a
//! pool of connections. Metadata is refreshed on demand, after errors that suggest it is stale.

use super::conn::{ConnConfig, Connection};
use super::error::ClientError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Mutex;
use uuid::Uuid;
use weir_seams::net::Net;

/// Settings shared by every client on a cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Brokers to ask first, as "host:port".
    pub bootstrap: Vec<String>,
    /// The network to use.
    pub net: Net,
    /// Per-connection settings.
    pub conn: ConnConfig,
}

impl ClientConfig {
    /// A client of the brokers at `bootstrap` on `net`.
    pub fn new(bootstrap: impl IntoIterator<Item = impl Into<String>>, net: Net) -> Self {
        Self {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            net,
            conn: ConnConfig::default(),
        }
    }
}

/// A partition's leader as last seen in metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// Leader's node id, or -1 when there is none.
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
}

/// The highest leader epoch seen for each partition of one incarnation of a topic. It outlives
/// [`Cluster::forget`], so that a broker with stale metadata cannot point a client back at a
/// former leader (KIP-320: metadata whose leader epoch went back is ignored).
#[derive(Default)]
struct SeenEpochs {
    topic_id: Uuid,
    by_partition: BTreeMap<i32, i32>,
}

impl SeenEpochs {
    /// `fresh`, one partition of a metadata answer (`ok` without a partition error), unless
    /// its leader epoch is older than one already seen: then what was known (`before`) if that
    /// is current, else no leader until a broker with fresher metadata answers. Returns the
    /// partition to record and whether the answer was stale.
    fn screen(
        &mut self,
        fresh: PartitionInfo,
        ok: bool,
        before: &[PartitionInfo],
    ) -> (PartitionInfo, bool) {
        let highest = self.by_partition.get(&fresh.partition).copied();
        match highest {
            Some(h) if fresh.leader_epoch >= 0 && fresh.leader_epoch < h => {
                let kept = before
                    .iter()
                    .find(|b| b.partition == fresh.partition && b.leader_epoch >= h)
                    .copied()
                    .unwrap_or(PartitionInfo {
                        leader: -1,
                        leader_epoch: h,
                        ..fresh
                    });
                (kept, true)
            }
            _ => {
                if ok && fresh.leader_epoch >= 0 {
                    self.by_partition
                        .insert(fresh.partition, fresh.leader_epoch);
                }
                (fresh, false)
            }
        }
    }
}

#[derive(Default)]
struct Known {
    brokers: BTreeMap<i32, String>,
    topics: BTreeMap<String, Vec<PartitionInfo>>,
    seen: BTreeMap<String, SeenEpochs>,
    conns: BTreeMap<(Lane, String), Arc<Connection>>,
    next_bootstrap: usize,
}

/// Which of a broker's connections a request goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Lane {
    /// Everything but fetches.
    Requests,
    /// Fetches, which the broker may hold for up to their max wait. A broker answers one
    /// connection's requests in order, so a parked fetch on the shared connection would hold
    /// back the produce requests of a producer on the same `Cluster` until it times out.
    Fetches,
}

/// A handle on a cluster, shared by the clients that talk to it.
pub struct Cluster {
    config: ClientConfig,
    known: Mutex<Known>,
}

impl Cluster {
    /// A cluster reached through `config.bootstrap`.
    pub fn new(config: ClientConfig) -> Arc<Self> {
        assert!(
            !config.bootstrap.is_empty(),
            "at least one bootstrap broker is needed"
        );
        Arc::new(Self {
            config,
            known: Mutex::new(Known::default()),
        })
    }

    /// The client settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    async fn connect_addr(&self, addr: &str, lane: Lane) -> Result<Arc<Connection>, ClientError> {
        let key = (lane, addr.to_string());
        {
            let known = self.known.lock().await;
            if let Some(c) = known.conns.get(&key).filter(|c| !c.is_dead()) {
                return Ok(Arc::clone(c));
            }
        }
        let conn =
            Arc::new(Connection::connect(self.config.net, addr, self.config.conn.clone()).await?);
        let mut known = self.known.lock().await;
        let entry = known.conns.entry(key).or_insert_with(|| Arc::clone(&conn));
        if entry.is_dead() {
            *entry = Arc::clone(&conn);
        }
        Ok(Arc::clone(entry))
    }

    /// A connection to broker `node`.
    pub async fn node(&self, node: i32) -> Result<Arc<Connection>, ClientError> {
        self.node_on(node, Lane::Requests).await
    }

    /// The connection to broker `node` that fetches go on, apart from other requests.
    pub async fn fetch_node(&self, node: i32) -> Result<Arc<Connection>, ClientError> {
        self.node_on(node, Lane::Fetches).await
    }

    async fn node_on(&self, node: i32, lane: Lane) -> Result<Arc<Connection>, ClientError> {
        let addr = self.known.lock().await.brokers.get(&node).cloned();
        match addr {
            Some(a) => self.connect_addr(&a, lane).await,
            None => Err(ClientError::Kafka {
                code: kafka_protocol::error::ResponseError::BrokerNotAvailable,
                context: format!("broker {node} is not in the metadata"),
            }),
        }
    }

    /// A connection to some broker: a known one, else a bootstrap address, trying each in turn.
    pub async fn any(&self) -> Result<Arc<Connection>, ClientError> {
        let candidates: Vec<String> = {
            let mut known = self.known.lock().await;
            let mut c: Vec<String> = known.brokers.values().cloned().collect();
            c.extend(self.config.bootstrap.iter().cloned());
            let start = known.next_bootstrap % c.len();
            known.next_bootstrap = known.next_bootstrap.wrapping_add(1);
            c.rotate_left(start);
            c
        };
        let mut last = None;
        for addr in candidates {
            match self.connect_addr(&addr, Lane::Requests).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one candidate"))
    }

    /// Fetches metadata for `topics` (all topics when empty) and records it.
    pub async fn refresh(&self, topics: &[String]) -> Result<MetadataResponse, ClientError> {
        let conn = self.any().await?;
        let v = conn.version(ApiKey::Metadata)?;
        let list = (!topics.is_empty()).then(|| {
            topics
                .iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                })
                .collect()
        });
        let req = MetadataRequest::default().with_topics(list);
        let resp: MetadataResponse = conn.send(ApiKey::Metadata, v, &req).await?;
        let mut known = self.known.lock().await;
        for b in &resp.brokers {
            known
                .brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        for t in &resp.topics {
            let Some(name) = &t.name else { continue };
            if t.error_code != 0 {
                known.topics.remove(name.0.as_str());
                continue;
            }
            let name = name.0.to_string();
            let before = known.topics.get(&name).cloned().unwrap_or_default();
            let seen = known.seen.entry(name.clone()).or_default();
            if seen.topic_id != t.topic_id {
                // A new incarnation of the topic starts its epochs afresh.
                *seen = SeenEpochs {
                    topic_id: t.topic_id,
                    by_partition: BTreeMap::new(),
                };
            }
            let mut parts: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| {
                    let ok = p.error_code == 0;
                    let fresh = PartitionInfo {
                        partition: p.partition_index,
                        leader: if ok { p.leader_id.0 } else { -1 },
                        leader_epoch: p.leader_epoch,
                    };
                    let (info, stale) = seen.screen(fresh, ok, &before);
                    if stale {
                        tracing::debug!(topic = %name, partition = fresh.partition, epoch = fresh.leader_epoch, kept = ?info, broker = %conn.addr(), "ignoring metadata with an older leader epoch");
                    }
                    info
                })
                .collect();
            parts.sort_by_key(|p| p.partition);
            known.topics.insert(name, parts);
        }
        Ok(resp)
    }

    /// The partitions of `topic`, refreshing metadata if it is not known.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<PartitionInfo>, ClientError> {
        if let Some(p) = self.known.lock().await.topics.get(topic) {
            return Ok(p.clone());
        }
        let resp = self.refresh(&[topic.to_string()]).await?;
        if let Some(t) = resp
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            && let Some(e) = ClientError::kafka(t.error_code, format!("metadata for {topic}"))
        {
            return Err(e);
        }
        self.known
            .lock()
            .await
            .topics
            .get(topic)
            .cloned()
            .ok_or_else(|| ClientError::Kafka {
                code: kafka_protocol::error::ResponseError::UnknownTopicOrPartition,
                context: format!("metadata for {topic}"),
            })
    }

    /// The leader of a partition, refreshing metadata if it is unknown.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<PartitionInfo, ClientError> {
        let parts = self.partitions(topic).await?;
        match parts.iter().find(|p| p.partition == partition) {
            Some(p) if p.leader >= 0 => Ok(*p),
            Some(_) => {
                self.forget(topic).await;
                Err(ClientError::Kafka {
                    code: kafka_protocol::error::ResponseError::LeaderNotAvailable,
                    context: format!("{topic}-{partition}"),
                })
            }
            None => Err(ClientError::Kafka {
                code: kafka_protocol::error::ResponseError::UnknownTopicOrPartition,
                context: format!("{topic}-{partition}"),
            }),
        }
    }

    /// Drops what is known about `topic`, so the next lookup refreshes it.
    pub async fn forget(&self, topic: &str) {
        self.known.lock().await.topics.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(partition: i32, leader: i32, leader_epoch: i32) -> PartitionInfo {
        PartitionInfo {
            partition,
            leader,
            leader_epoch,
        }
    }

    #[test]
    fn metadata_whose_leader_epoch_went_back_is_ignored() {
        let mut seen = SeenEpochs::default();
        assert_eq!(
            seen.screen(info(0, 2, 0), true, &[]),
            (info(0, 2, 0), false)
        );
        assert_eq!(
            seen.screen(info(0, 1, 1), true, &[]),
            (info(0, 1, 1), false)
        );
        let known = [info(0, 1, 1)];
        assert_eq!(
            seen.screen(info(0, 2, 0), true, &known),
            (info(0, 1, 1), true),
            "a broker that missed the election keeps what was known"
        );
        assert_eq!(
            seen.screen(info(0, 2, 0), true, &[]),
            (info(0, -1, 1), true),
            "forgotten: no leader until fresher metadata"
        );
        assert_eq!(
            seen.screen(info(0, -1, -1), false, &[]),
            (info(0, -1, -1), false),
            "no epoch to compare"
        );
        assert_eq!(
            seen.screen(info(0, 0, 4), true, &[]),
            (info(0, 0, 4), false)
        );
        assert_eq!(seen.by_partition.get(&0), Some(&4));
    }
}

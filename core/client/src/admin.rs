//! Topic administration.

use super::cluster::{Cluster, PartitionInfo};
use super::error::ClientError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A topic to create.
#[derive(Clone, Debug)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replicas per partition.
    pub replication_factor: i16,
    /// Topic config overrides.
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic with `partitions` partitions and `replication_factor` replicas, default configs.
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor,
            configs: BTreeMap::new(),
        }
    }

    /// Adds a config override.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// A topic as listed by [`Admin::list_topics`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicListing {
    /// Name.
    pub name: String,
    /// Partitions and leaders.
    pub partitions: Vec<PartitionInfo>,
}

/// Creates, deletes and lists topics.
pub struct Admin {
    cluster: Arc<Cluster>,
    timeout_ms: i32,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl Admin {
    /// An admin client for `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self {
            cluster,
            timeout_ms: 30_000,
        }
    }

    /// Creates `topic`.
    pub async fn create_topic(&self, topic: &NewTopic) -> Result<(), ClientError> {
        let conn = self.cluster.any().await?;
        let v = conn.version(ApiKey::CreateTopics)?;
        let configs = topic
            .configs
            .iter()
            .map(|(k, val)| {
                CreatableTopicConfig::default()
                    .with_name(s(k))
                    .with_value(Some(s(val)))
            })
            .collect();
        let t = CreatableTopic::default()
            .with_name(TopicName(s(&topic.name)))
            .with_num_partitions(topic.partitions)
            .with_replication_factor(topic.replication_factor)
            .with_configs(configs);
        let req = CreateTopicsRequest::default()
            .with_topics(vec![t])
            .with_timeout_ms(self.timeout_ms);
        let resp: CreateTopicsResponse = conn.send(ApiKey::CreateTopics, v, &req).await?;
        let r = resp
            .topics
            .first()
            .ok_or_else(|| ClientError::Protocol("empty CreateTopics response".into()))?;
        let context = format!(
            "create {}: {}",
            topic.name,
            r.error_message.as_ref().map_or("", |m| m.as_str())
        );
        match ClientError::kafka(r.error_code, context) {
            Some(e) => Err(e),
            None => {
                self.cluster.forget(&topic.name).await;
                Ok(())
            }
        }
    }

    /// Deletes the topic named `name`.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let conn = self.cluster.any().await?;
        let v = conn.version(ApiKey::DeleteTopics)?;
        let req = if v >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                DeleteTopicState::default().with_name(Some(TopicName(s(name)))),
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s(name))])
        };
        let resp: DeleteTopicsResponse = conn
            .send(
                ApiKey::DeleteTopics,
                v,
                &req.with_timeout_ms(self.timeout_ms),
            )
            .await?;
        self.cluster.forget(name).await;
        let r = resp
            .responses
            .first()
            .ok_or_else(|| ClientError::Protocol("empty DeleteTopics response".into()))?;
        match ClientError::kafka(r.error_code, format!("delete {name}")) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Lists every topic with its partitions.
    pub async fn list_topics(&self) -> Result<Vec<TopicListing>, ClientError> {
        let resp = self.cluster.refresh(&[]).await?;
        let mut out: Vec<TopicListing> = resp
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| {
                let name = t.name.as_ref()?.0.to_string();
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions
                    .iter()
                    .map(|p| PartitionInfo {
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                Some(TopicListing { name, partitions })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

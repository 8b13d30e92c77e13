//! The broker's topics: names, ids, configs and partitions, persisted in `meta/topics.json`.
//!
//! Creating a topic first creates its partition directories durably, then records the topic in
//! the metadata file (atomically). Deleting does the reverse. On start, directories that no
//! recorded topic owns are leftovers of an interrupted create or delete, and are removed.

use super::partition::{Partition, PartitionSettings};
use crate::clock::Clock;
use crate::disk::Disk;
use crate::log::TopicConfig;
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;
use uuid::Uuid;

const TOPICS_FILE: &str = "topics.json";
/// Longest topic name Kafka allows.
pub const TOPIC_NAME_LEN_MAX: usize = 249;

/// A topic and its partitions.
pub(crate) struct Topic {
    pub name: String,
    pub id: Uuid,
    pub replication_factor: i16,
    pub overrides: BTreeMap<String, String>,
    pub config: TopicConfig,
    pub partitions: Vec<Arc<Partition>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PersistedTopic {
    name: String,
    id: String,
    partitions: i32,
    replication_factor: i16,
    overrides: BTreeMap<String, String>,
}

/// Checks a topic name as Kafka does: 1 to 249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name {name:?} is not allowed"));
    }
    if name.len() > TOPIC_NAME_LEN_MAX {
        return Err(format!(
            "topic name is {} characters, over the limit of {TOPIC_NAME_LEN_MAX}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} contains {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

fn partition_dir(topic: &str, index: i32) -> String {
    format!("{topic}-{index}")
}

/// Everything a partition needs from the broker to open.
#[derive(Clone)]
pub(crate) struct PartitionContext {
    pub data_disk: Disk,
    pub clock: Clock,
    pub settings: PartitionSettings,
    pub data_arrived: watch::Sender<u64>,
}

/// The topic registry.
pub(crate) struct TopicRegistry {
    meta: Disk,
    ctx: PartitionContext,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes creates and deletes, which touch the disk in several steps.
    admin: tokio::sync::Mutex<()>,
}

impl TopicRegistry {
    /// Loads the recorded topics and opens their partitions.
    pub async fn open(
        meta: Disk,
        ctx: PartitionContext,
        defaults: &TopicConfig,
    ) -> io::Result<Self> {
        let persisted: Vec<PersistedTopic> = match meta.read_small(TOPICS_FILE)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other)?,
            None => Vec::new(),
        };
        let mut topics = BTreeMap::new();
        let mut owned = std::collections::BTreeSet::new();
        for p in persisted {
            let config = defaults
                .with_overrides(&p.overrides)
                .map_err(io::Error::other)?;
            let id = Uuid::parse_str(&p.id).map_err(io::Error::other)?;
            let mut partitions = Vec::new();
            for i in 0..p.partitions {
                owned.insert(partition_dir(&p.name, i));
                partitions.push(open_partition(&ctx, &p.name, i, &config).await?);
            }
            let topic = Topic {
                name: p.name.clone(),
                id,
                replication_factor: p.replication_factor,
                overrides: p.overrides,
                config,
                partitions,
            };
            topics.insert(p.name, Arc::new(topic));
        }
        for dir in ctx.data_disk.list(".")? {
            if !owned.contains(&dir) {
                tracing::info!(%dir, "removing a partition directory that no topic owns");
                ctx.data_disk.remove_dir_all(&dir)?;
            }
        }
        ctx.data_disk.sync_dir(".").await?;
        Ok(Self {
            meta,
            ctx,
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The topic named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().get(name).cloned()
    }

    /// The topic with id `id`.
    pub fn by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.read().values().find(|t| t.id == id).cloned()
    }

    /// All topics, by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        self.read().values().cloned().collect()
    }

    /// Number of topics.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    async fn persist(&self, topics: &BTreeMap<String, Arc<Topic>>) -> io::Result<()> {
        let list: Vec<PersistedTopic> = topics
            .values()
            .map(|t| PersistedTopic {
                name: t.name.clone(),
                id: t.id.to_string(),
                partitions: t.partitions.len() as i32,
                replication_factor: t.replication_factor,
                overrides: t.overrides.clone(),
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&list).map_err(io::Error::other)?;
        self.meta.write_atomic(TOPICS_FILE, &bytes).await
    }

    /// Creates a topic whose settings the caller has validated. `Ok(false)` if it exists.
    pub async fn create(
        &self,
        name: &str,
        id: Uuid,
        partitions: i32,
        replication_factor: i16,
        overrides: BTreeMap<String, String>,
        config: TopicConfig,
    ) -> io::Result<bool> {
        let _admin = self.admin.lock().await;
        if self.get(name).is_some() {
            return Ok(false);
        }
        let disk = &self.ctx.data_disk;
        for i in 0..partitions {
            let dir = partition_dir(name, i);
            if disk.exists(&dir)? {
                disk.remove_dir_all(&dir)?;
            }
            disk.create_dir_all(&dir)?;
        }
        disk.sync_dir(".").await?;
        let mut parts = Vec::with_capacity(partitions as usize);
        for i in 0..partitions {
            parts.push(open_partition(&self.ctx, name, i, &config).await?);
        }
        let topic = Arc::new(Topic {
            name: name.to_string(),
            id,
            replication_factor,
            overrides,
            config,
            partitions: parts,
        });
        let mut next = self.read().clone();
        next.insert(name.to_string(), Arc::clone(&topic));
        if let Err(e) = self.persist(&next).await {
            for p in &topic.partitions {
                p.close();
            }
            return Err(e);
        }
        *self.topics.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(true)
    }

    /// Deletes a topic and its data. `Ok(false)` if there is no such topic.
    pub async fn delete(&self, name: &str) -> io::Result<bool> {
        let _admin = self.admin.lock().await;
        let Some(topic) = self.get(name) else {
            return Ok(false);
        };
        let mut next = self.read().clone();
        next.remove(name);
        self.persist(&next).await?;
        *self.topics.write().unwrap_or_else(|p| p.into_inner()) = next;
        for p in &topic.partitions {
            p.delete().await?;
        }
        self.ctx.data_disk.sync_dir(".").await?;
        Ok(true)
    }
}

async fn open_partition(
    ctx: &PartitionContext,
    topic: &str,
    index: i32,
    config: &TopicConfig,
) -> io::Result<Arc<Partition>> {
    let disk = ctx.data_disk.sub(&partition_dir(topic, index))?;
    Ok(Partition::open(
        topic,
        index,
        disk,
        config.clone(),
        ctx.clock,
        ctx.settings,
        ctx.data_arrived.clone(),
    )
    .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        for ok in ["orders", "a.b_c-D9", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "sp ace",
            "ümlaut",
            &"x".repeat(250),
        ] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}

//! The replicas this broker hosts, kept in line with the metadata image.
//!
//! Each partition replica lives in `data/{topic}-{index}/`, whose `topic.id` file names the
//! incarnation of the topic it belongs to. A directory is created (id file first, then synced)
//! when the image first assigns the replica here, and removed only when the image records the
//! topic's deletion, so a broker that restarts with a stale image never throws away data that a
//! newer image still wants.

use super::partition::{Partition, PartitionId, PartitionSettings, RoleTarget, Signals};
use crate::cluster::metadata::MetadataImage;
use crate::log::TopicConfig;
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;

const TOPIC_ID_FILE: &str = "topic.id";

fn dir_name(topic: &str, index: i32) -> String {
    format!("{topic}-{index}")
}

/// The hosted replicas.
pub(crate) struct Replicas {
    me: i32,
    disk: Disk,
    clock: Clock,
    settings: PartitionSettings,
    signals: Signals,
    defaults: TopicConfig,
    parts: RwLock<BTreeMap<(String, i32), Arc<Partition>>>,
    /// Bumped after every reconciliation, so fetchers notice new roles.
    roles_changed: watch::Sender<u64>,
    swept: std::sync::atomic::AtomicBool,
}

impl Replicas {
    /// Replicas stored under `disk` (the broker's data directory); none is open yet.
    pub fn new(
        me: i32,
        disk: Disk,
        clock: Clock,
        settings: PartitionSettings,
        signals: Signals,
        defaults: TopicConfig,
    ) -> Self {
        Self {
            me,
            disk,
            clock,
            settings,
            signals,
            defaults,
            parts: RwLock::new(BTreeMap::new()),
            roles_changed: watch::Sender::new(0),
            swept: false.into(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, i32), Arc<Partition>>> {
        self.parts.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(String, i32), Arc<Partition>>> {
        self.parts.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The replica of `topic`-`index`, if hosted here.
    pub fn get(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.read().get(&(topic.to_string(), index)).cloned()
    }

    /// Every hosted replica.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.read().values().cloned().collect()
    }

    /// Watches role changes.
    pub fn roles(&self) -> watch::Receiver<u64> {
        self.roles_changed.subscribe()
    }

    /// The effective config of a topic with `overrides`.
    pub fn config_for(&self, overrides: &BTreeMap<String, String>) -> TopicConfig {
        // Overrides were validated before the topic was created.
        self.defaults
            .with_overrides(overrides)
            .unwrap_or_else(|_| self.defaults.clone())
    }

    /// Brings the hosted replicas in line with `image`: opens new ones, deletes those of
    /// deleted topics, and gives each its role; with `serving` false every role is inactive.
    pub async fn reconcile(&self, image: &MetadataImage, serving: bool) -> io::Result<()> {
        if !self.swept.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.sweep_deleted(image).await?;
        }
        for (name, topic) in &image.topics {
            let config = self.config_for(&topic.overrides);
            for (i, p) in topic.partitions.iter().enumerate() {
                if !p.replicas.contains(&self.me) {
                    continue;
                }
                let index = i as i32;
                let part = match self.get(name, index) {
                    Some(part) if part.id.topic_id == topic.id => part,
                    stale => {
                        if let Some(old) = stale {
                            old.delete().await?;
                        }
                        let part = self.open(name, topic.id, index, &config).await?;
                        self.write()
                            .insert((name.clone(), index), Arc::clone(&part));
                        part
                    }
                };
                let target = if serving {
                    RoleTarget::of(p, self.me)
                } else {
                    RoleTarget::Inactive
                };
                part.set_role(target).await;
            }
        }
        let me = self.me;
        let gone: Vec<((String, i32), Arc<Partition>)> = self
            .read()
            .iter()
            .filter(|((name, i), part)| {
                let hosted_here = |t: &crate::cluster::metadata::TopicImage| {
                    t.id == part.id.topic_id
                        && t.partitions
                            .get(*i as usize)
                            .is_some_and(|p| p.replicas.contains(&me))
                };
                !image.topics.get(name).is_some_and(hosted_here)
            })
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        for (key, part) in gone {
            if image.deleted_topics.contains(&part.id.topic_id) {
                tracing::info!(topic = %part.id.topic, partition = part.id.index, "deleting the replica of a deleted topic");
                self.write().remove(&key);
                part.delete().await?;
            } else {
                part.set_role(RoleTarget::Inactive).await;
            }
        }
        self.disk.sync_dir(".").await?;
        self.roles_changed.send_modify(|v| *v = v.wrapping_add(1));
        Ok(())
    }

    async fn open(
        &self,
        topic: &str,
        topic_id: u128,
        index: i32,
        config: &TopicConfig,
    ) -> io::Result<Arc<Partition>> {
        let dir = dir_name(topic, index);
        let id_text = format!("{topic_id:032x}");
        let existing = if self.disk.exists(&dir)? {
            self.disk.sub(&dir)?.read_small(TOPIC_ID_FILE)?
        } else {
            None
        };
        if existing.as_deref() != Some(id_text.as_bytes()) {
            if self.disk.exists(&dir)? {
                self.disk.remove_dir_all(&dir).await?;
            }
            self.disk.create_dir_all(&dir)?;
            self.disk.sync_dir(".").await?;
            self.disk
                .sub(&dir)?
                .write_atomic(TOPIC_ID_FILE, id_text.as_bytes())
                .await?;
        } else {
            // Found, but perhaps only in the page cache's view: an earlier open that failed
            // on a disk error may have created the directory and its id file and never made
            // their entries durable. Records fsynced into it would vanish with them in a
            // crash, so the entries are made durable before the partition takes any.
            self.disk.sync_dir(".").await?;
            self.disk.sub(&dir)?.sync_dir(".").await?;
        }
        let id = PartitionId {
            topic: topic.to_string(),
            topic_id,
            index,
        };
        Ok(Partition::open(
            id,
            self.me,
            self.disk.sub(&dir)?,
            config.clone(),
            self.clock,
            self.settings,
            self.signals.clone(),
        )
        .await)
    }

    /// Removes directories of topics deleted while this broker was away.
    async fn sweep_deleted(&self, image: &MetadataImage) -> io::Result<()> {
        for dir in self.disk.list(".")? {
            let Ok(sub) = self.disk.sub(&dir) else {
                continue;
            };
            let Some(id) = sub.read_small(TOPIC_ID_FILE)? else {
                continue;
            };
            let id = std::str::from_utf8(&id)
                .ok()
                .and_then(|s| u128::from_str_radix(s, 16).ok());
            if id.is_some_and(|id| image.deleted_topics.contains(&id)) {
                tracing::info!(%dir, "removing the data of a topic deleted while this broker was away");
                self.disk.remove_dir_all(&dir).await?;
                self.disk.sync_dir(".").await?;
            }
        }
        Ok(())
    }

    /// Closes every replica.
    pub async fn close_all(&self) {
        for p in self.all() {
            p.close().await;
        }
    }
}

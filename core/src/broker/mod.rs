//! Weir's broker: a Kafka-protocol server over the [`crate::net`] and [`crate::disk`] seams.
//!
//! One [`Broker`] owns a data directory (`meta/` for topic metadata and producer ids, `data/` for
//! partition logs) and serves any number of listeners. The same code serves real clients on real
//! sockets and simulated clients inside turmoil.

mod api;
mod conn;
mod partition;
mod producer_ids;
mod producer_state;
mod topics;

pub use partition::Marks;
pub use topics::{TOPIC_NAME_LEN_MAX, validate_topic_name};

use crate::clock::Clock;
use crate::disk::Disk;
use crate::log::{TailRecovery, TopicConfig};
use crate::net::Listener;
use crate::rng::WeirRng;
use partition::PartitionSettings;
use producer_ids::ProducerIds;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use topics::{PartitionContext, TopicRegistry};

/// When a write counts as durable on a single broker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Weir's default: a record is readable, and acknowledged to acks=all producers, only once it
    /// is fsynced. A crash never takes back an acknowledged or a consumed record.
    #[default]
    Fsync,
    /// Kafka's single-node behaviour: readable and acknowledged once in the page cache, fsynced
    /// per `flush.ms` / `flush.messages`. A crash can lose acknowledged records.
    PageCache,
}

/// Broker settings. Every limit is named with its unit.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// This broker's id.
    pub node_id: i32,
    /// Host clients are told to connect to.
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: u16,
    /// Cluster id reported in metadata.
    pub cluster_id: String,
    /// Largest request frame accepted, in bytes.
    pub max_request_bytes: usize,
    /// Most client connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Connections idle this long are closed, in milliseconds.
    pub connections_max_idle_ms: u64,
    /// Topic settings before a topic's overrides.
    pub topic_defaults: TopicConfig,
    /// Partitions of a topic created with -1.
    pub default_partitions: i32,
    /// Most partitions one topic may have.
    pub max_partitions_per_topic: i32,
    /// Most topics the broker holds.
    pub max_topics: usize,
    /// Whether Metadata for an unknown topic creates it.
    pub auto_create_topics: bool,
    /// When writes count as durable.
    pub durability: Durability,
    /// How the log tail is checked on start.
    pub tail_recovery: TailRecovery,
    /// How often retention runs, in milliseconds.
    pub retention_check_interval_ms: u64,
    /// Cap on a fetch response, in bytes.
    pub fetch_max_bytes: usize,
    /// Cap on how long a fetch may wait for data, in milliseconds.
    pub fetch_max_wait_ms: u64,
    /// Cap on a produce request's wait for acks=all, in milliseconds.
    pub produce_timeout_max_ms: u64,
    /// Cap on decompressed bytes when validating a produced batch.
    pub max_decompressed_bytes: usize,
    /// Idempotent producers remembered per partition.
    pub producers_per_partition_max: usize,
    /// Producer ids reserved on disk at a time.
    pub producer_id_block: i64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            cluster_id: "weir".into(),
            max_request_bytes: 16 * 1024 * 1024,
            max_connections: 1024,
            connections_max_idle_ms: 600_000,
            topic_defaults: TopicConfig::default(),
            default_partitions: 1,
            max_partitions_per_topic: 1000,
            max_topics: 10_000,
            auto_create_topics: false,
            durability: Durability::Fsync,
            tail_recovery: TailRecovery::Check,
            retention_check_interval_ms: 60_000,
            fetch_max_bytes: 55 * 1024 * 1024,
            fetch_max_wait_ms: 30_000,
            produce_timeout_max_ms: 60_000,
            max_decompressed_bytes: 64 * 1024 * 1024,
            producers_per_partition_max: 10_000,
            producer_id_block: 1000,
        }
    }
}

pub(crate) struct State {
    config: BrokerConfig,
    topics: TopicRegistry,
    producer_ids: tokio::sync::Mutex<ProducerIds>,
    /// Bumped whenever a partition's high watermark advances; long-polling fetches wait on it.
    data_arrived: watch::Sender<u64>,
    connections: AtomicUsize,
    rng: std::sync::Mutex<WeirRng>,
    shutdown: watch::Sender<bool>,
}

/// A running broker. Cloning gives another handle to the same broker.
#[derive(Clone)]
pub struct Broker {
    state: Arc<State>,
}

impl Broker {
    /// Opens the broker's data on `disk`, recovering every partition, and starts retention.
    pub async fn open(
        config: BrokerConfig,
        disk: Disk,
        clock: Clock,
        rng: WeirRng,
    ) -> io::Result<Self> {
        assert!(
            config.max_request_bytes >= 1024,
            "max_request_bytes must allow a request header"
        );
        assert!(
            config.default_partitions >= 1
                && config.default_partitions <= config.max_partitions_per_topic
        );
        disk.apply_crash_damage()?;
        disk.create_root().await?;
        disk.create_dir_all("meta")?;
        disk.create_dir_all("data")?;
        disk.sync_dir(".").await?;
        let meta = disk.sub("meta")?;
        let data_arrived = watch::Sender::new(0);
        let ctx = PartitionContext {
            data_disk: disk.sub("data")?,
            clock,
            settings: PartitionSettings {
                durability: config.durability,
                tail_recovery: config.tail_recovery,
                producers_max: config.producers_per_partition_max,
            },
            data_arrived: data_arrived.clone(),
        };
        let topics = TopicRegistry::open(meta.clone(), ctx, &config.topic_defaults).await?;
        let producer_ids = ProducerIds::open(meta, config.producer_id_block)?;
        let state = Arc::new(State {
            config,
            topics,
            producer_ids: tokio::sync::Mutex::new(producer_ids),
            data_arrived,
            connections: AtomicUsize::new(0),
            rng: std::sync::Mutex::new(rng),
            shutdown: watch::Sender::new(false),
        });
        tokio::spawn(retention_loop(Arc::clone(&state)));
        Ok(Self { state })
    }

    /// Binds `addr` on real sockets, opens a broker on `disk` that advertises the bound port
    /// (with `config.advertised_host`), and serves it in the background. Returns the broker and
    /// the bound address.
    pub async fn listen(
        addr: &str,
        mut config: BrokerConfig,
        disk: Disk,
        clock: Clock,
        rng: WeirRng,
    ) -> io::Result<(Self, SocketAddr)> {
        let listener = crate::net::Net::Tokio.bind(addr).await?;
        let bound = listener.local_addr()?;
        config.advertised_port = bound.port();
        let broker = Self::open(config, disk, clock, rng).await?;
        let serving = broker.clone();
        tokio::spawn(async move {
            if let Err(e) = serving.serve(listener).await {
                tracing::error!(error = %e, "broker stopped serving");
            }
        });
        Ok((broker, bound))
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.state.config
    }

    /// Accepts and serves connections on `listener` until [`Broker::shutdown`].
    pub async fn serve(&self, listener: Listener) -> io::Result<()> {
        let mut stop = self.state.shutdown.subscribe();
        loop {
            let (stream, peer) = tokio::select! {
                _ = until_set(&mut stop) => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let state = Arc::clone(&self.state);
            if state.connections.fetch_add(1, Ordering::SeqCst) >= state.config.max_connections {
                state.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(%peer, limit = state.config.max_connections, "connection limit reached; closing new connection");
                drop(stream);
                continue;
            }
            tokio::spawn(async move {
                conn::serve(&state, stream, peer).await;
                state.connections.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    /// Stops accepting connections and stops background work.
    pub fn shutdown(&self) {
        self.state.shutdown.send_replace(true);
        for t in self.state.topics.all() {
            for p in &t.partitions {
                p.close();
            }
        }
    }

    /// The offsets of a partition, if it exists.
    pub fn partition_marks(&self, topic: &str, partition: i32) -> Option<Marks> {
        let t = self.state.topics.get(topic)?;
        t.partitions
            .get(usize::try_from(partition).ok()?)
            .map(|p| p.marks())
    }
}

/// Resolves once `flag` is set or its sender is gone.
pub(crate) async fn until_set(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}

async fn retention_loop(state: Arc<State>) {
    let mut stop = state.shutdown.subscribe();
    let every = Duration::from_millis(state.config.retention_check_interval_ms.max(1));
    loop {
        tokio::select! {
            _ = until_set(&mut stop) => return,
            _ = tokio::time::sleep(every) => {}
        }
        for topic in state.topics.all() {
            for p in &topic.partitions {
                p.enforce_retention().await;
            }
        }
    }
}

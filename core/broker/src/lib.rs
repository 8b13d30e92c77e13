//! Weir's broker: a Kafka-protocol server over the [`weir_seams::net`] and [`weir_seams::disk`] seams.
//!
//! Every broker embeds a member of the metadata quorum (a Raft group over all brokers; one
//! broker alone is a group of one) and, while it leads that group, the controller. The
//! committed metadata image says which replicas each broker hosts and which it leads; followers
//! copy from leaders over the brokers' internal port.
//!
//! One [`Broker`] owns a data directory (`meta/` for the quorum's log, `data/` for partition
//! logs) and serves any number of client listeners plus one internal listener. The same code
//! serves real clients on real sockets and simulated clients inside turmoil.

mod api;
pub mod cluster;
mod conn;
mod fetcher;
mod group;
mod heartbeat;
mod internal;
mod isr;
pub mod log;
mod names;
mod partition;
mod producer_state;
mod replicas;
mod txn;

pub use names::{TOPIC_NAME_LEN_MAX, validate_topic_name};
pub use partition::Marks;

use crate::cluster::controller::{Controller, ControllerConfig, raft_of};
use crate::cluster::quorum::{Quorum, QuorumConfig};
use crate::cluster::rpc::{self, Peer};
use crate::log::{TailRecovery, TopicConfig};
use partition::{PartitionSettings, Signals};
use rand::Rng;
use replicas::Replicas;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_seams::net::{Listener, Net};
use weir_seams::rng::WeirRng;

/// When a write counts as durable on a replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Weir's default: a replica counts a record towards the high watermark only once it is
    /// fsynced. A crash never takes back an acknowledged or a consumed record.
    #[default]
    Fsync,
    /// Kafka's behaviour: a record counts once in the page cache, and is fsynced per
    /// `flush.ms` / `flush.messages`. Crashes can lose acknowledged records.
    PageCache,
}

/// Deliberately broken variants of the broker, which exist so that tests can show the
/// simulator's checkers catching each one. Never use one outside a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerMutant {
    /// Idempotent producers' duplicates are appended again.
    DedupeDisabled,
    /// A leader's high watermark follows its own log, not the ISR's.
    HwIgnoresIsr,
    /// Transactional producers are not fenced: a new InitProducerId leaves the old epoch valid.
    NoZombieFencing,
    /// The group coordinator accepts offset commits from any generation and any member.
    NoGenerationFencing,
}

/// A member of the metadata quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    /// Broker id.
    pub id: i32,
    /// Host of its internal listener.
    pub host: String,
    /// Port of its internal listener.
    pub internal_port: u16,
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
    /// The network peers are reached on.
    pub net: Net,
    /// Every broker of the cluster, this one included. Empty for a single broker.
    pub voters: Vec<Voter>,
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
    /// Replication factor of a topic created with -1, capped by the live brokers.
    pub default_replication_factor: i16,
    /// Most partitions one topic may have.
    pub max_partitions_per_topic: i32,
    /// Most topics the cluster holds.
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
    /// Producer ids a broker takes from the controller at a time.
    pub producer_id_block: i64,
    /// Mean interval of the metadata quorum's ticks, in milliseconds.
    pub quorum_tick_ms: u64,
    /// Interval of heartbeats to the controller, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// A broker silent this long is fenced by the controller, in milliseconds.
    pub session_timeout_ms: u64,
    /// A follower not caught up for this long leaves the ISR, in milliseconds.
    pub replica_lag_time_max_ms: u64,
    /// How long a leader may hold a follower's fetch for data, in milliseconds.
    pub replica_fetch_wait_max_ms: u64,
    /// Cap on record bytes per partition in one replica fetch.
    pub replica_fetch_partition_max_bytes: u32,
    /// Cap on record bytes in one replica fetch response.
    pub replica_fetch_max_bytes: u32,
    /// Timeout of calls between brokers, in milliseconds.
    pub internal_request_timeout_ms: u64,
    /// Whether a partition whose ISR is all down may be led by a replica outside it.
    pub unclean_leader_election: bool,
    /// A deliberately broken variant, for tests of the checkers.
    pub mutant: Option<BrokerMutant>,
    /// Shortest session timeout a group member may ask for, in milliseconds.
    pub group_min_session_timeout_ms: u64,
    /// Longest session timeout a group member may ask for, in milliseconds.
    pub group_max_session_timeout_ms: u64,
    /// How long an empty group waits for more members before its first generation, in
    /// milliseconds (Kafka's `group.initial.rebalance.delay.ms`). Each join in the wait extends
    /// it, up to the rebalance timeout.
    pub group_initial_rebalance_delay_ms: u64,
    /// Most consumer groups: with members at once, and with committed offsets.
    pub groups_max: usize,
    /// Most members of one group.
    pub group_members_max: usize,
    /// Most partitions with a committed offset per group.
    pub group_committed_partitions_max: usize,
    /// Largest protocol metadata of one member, and largest assignment, in bytes.
    pub group_protocol_metadata_bytes_max: usize,
    /// Largest metadata string of a committed offset, in bytes.
    pub offset_metadata_bytes_max: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            net: Net::Tokio,
            voters: Vec::new(),
            cluster_id: "weir".into(),
            max_request_bytes: 16 * 1024 * 1024,
            max_connections: 1024,
            connections_max_idle_ms: 600_000,
            topic_defaults: TopicConfig::default(),
            default_partitions: 1,
            default_replication_factor: 1,
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
            quorum_tick_ms: 100,
            heartbeat_interval_ms: 500,
            session_timeout_ms: 6_000,
            replica_lag_time_max_ms: 10_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_partition_max_bytes: 1024 * 1024,
            replica_fetch_max_bytes: 8 * 1024 * 1024,
            internal_request_timeout_ms: 5_000,
            unclean_leader_election: false,
            mutant: None,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            groups_max: 10_000,
            group_members_max: 1_000,
            group_committed_partitions_max: 10_000,
            group_protocol_metadata_bytes_max: 1024 * 1024,
            offset_metadata_bytes_max: 4096,
        }
    }
}

/// Producer ids taken from the controller and not yet handed out.
#[derive(Default)]
struct IdBlock {
    next: i64,
    end: i64,
}

pub(crate) struct State {
    config: BrokerConfig,
    clock: Clock,
    quorum: Quorum,
    controller: Controller,
    replicas: Replicas,
    /// The other brokers' internal listeners.
    peers: BTreeMap<i32, Arc<Peer>>,
    producer_ids: tokio::sync::Mutex<IdBlock>,
    signals: Signals,
    /// Set once the broker has caught up with the metadata after starting; until then it
    /// takes up no partition role.
    serving: watch::Sender<bool>,
    incarnation: u64,
    connections: AtomicUsize,
    shutdown: watch::Sender<bool>,
    /// The consumer group coordinator, serving while this broker is the active controller.
    groups: Arc<group::Coordinator>,
}

/// A running broker. Cloning gives another handle to the same broker.
#[derive(Clone)]
pub struct Broker {
    state: Arc<State>,
}

impl Broker {
    /// Opens the broker's data on `disk`, starts its quorum member, controller, replication
    /// and retention. Partitions take up their roles once the broker has caught up with the
    /// metadata.
    pub async fn open(
        config: BrokerConfig,
        disk: Disk,
        clock: Clock,
        mut rng: WeirRng,
    ) -> io::Result<Self> {
        assert!(
            config.max_request_bytes >= 1024,
            "max_request_bytes must allow a request header"
        );
        assert!(
            config.default_partitions >= 1
                && config.default_partitions <= config.max_partitions_per_topic
        );
        assert!(
            config.voters.is_empty() || config.voters.iter().any(|v| v.id == config.node_id),
            "a broker must be one of the voters"
        );
        assert!(config.node_id >= 0);
        disk.apply_crash_damage()?;
        disk.create_root().await?;
        for dir in ["meta", "meta/quorum", "data"] {
            disk.create_dir_all(dir)?;
        }
        disk.sync_dir(".").await?;
        disk.sync_dir("meta").await?;
        let (shutdown, stop) = watch::channel(false);
        let peers: BTreeMap<i32, Arc<Peer>> = config
            .voters
            .iter()
            .filter(|v| v.id != config.node_id)
            .map(|v| {
                (
                    v.id,
                    Arc::new(Peer::new(
                        config.net,
                        format!("{}:{}", v.host, v.internal_port),
                        config.internal_request_timeout_ms,
                    )),
                )
            })
            .collect();
        let voters: Vec<u64> = if config.voters.is_empty() {
            vec![raft_of(config.node_id)]
        } else {
            config.voters.iter().map(|v| raft_of(v.id)).collect()
        };
        let mut quorum_config = QuorumConfig::new(raft_of(config.node_id), voters);
        quorum_config.tick_ms = config.quorum_tick_ms;
        let raft_peers = peers
            .iter()
            .map(|(id, p)| (raft_of(*id), Arc::clone(p)))
            .collect();
        let quorum = Quorum::start(
            quorum_config,
            disk.sub("meta/quorum")?,
            raft_peers,
            weir_seams::rng::derive(rng.random(), "quorum"),
            stop.clone(),
        );
        let controller_config = ControllerConfig {
            session_timeout_ms: config.session_timeout_ms,
            unclean_leader_election: config.unclean_leader_election,
            max_topics: config.max_topics,
            max_partitions_per_topic: config.max_partitions_per_topic,
            ..ControllerConfig::default()
        };
        let controller = Controller::new(
            quorum.clone(),
            controller_config,
            weir_seams::rng::derive(rng.random(), "controller"),
        );
        let signals = Signals {
            data_arrived: watch::Sender::new(0),
            log_appended: watch::Sender::new(0),
        };
        let settings = PartitionSettings {
            durability: config.durability,
            tail_recovery: config.tail_recovery,
            producers_max: config.producers_per_partition_max,
            mutant: config.mutant,
        };
        let replicas = Replicas::new(
            config.node_id,
            disk.sub("data")?,
            clock,
            settings,
            signals.clone(),
            config.topic_defaults.clone(),
        );
        let groups = group::Coordinator::new(quorum.clone(), group::GroupSettings::of(&config));
        let state = Arc::new(State {
            incarnation: rng.random(),
            config,
            clock,
            quorum,
            controller,
            replicas,
            peers,
            producer_ids: tokio::sync::Mutex::new(IdBlock::default()),
            signals,
            serving: watch::Sender::new(false),
            connections: AtomicUsize::new(0),
            shutdown,
            groups,
        });
        let s = Arc::clone(&state);
        tokio::spawn(async move { s.controller.run(s.shutdown.subscribe()).await });
        tokio::spawn(follow_metadata(Arc::clone(&state)));
        tokio::spawn(heartbeat::run(Arc::clone(&state)));
        tokio::spawn(isr::run(Arc::clone(&state)));
        for leader in state.peers.keys() {
            tokio::spawn(fetcher::run(Arc::clone(&state), *leader));
        }
        tokio::spawn(retention_loop(Arc::clone(&state)));
        tokio::spawn(Arc::clone(&state.groups).run(state.shutdown.subscribe()));
        tokio::spawn(txn::expire_loop(Arc::clone(&state)));
        Ok(Self { state })
    }

    /// Binds `addr` on real sockets, opens a single broker on `disk` that advertises the bound
    /// port (with `config.advertised_host`), and serves it in the background. Returns the
    /// broker and the bound address.
    pub async fn listen(
        addr: &str,
        mut config: BrokerConfig,
        disk: Disk,
        clock: Clock,
        rng: WeirRng,
    ) -> io::Result<(Self, SocketAddr)> {
        let listener = Net::Tokio.bind(addr).await?;
        let bound = listener.local_addr()?;
        config.advertised_port = bound.port();
        config.net = Net::Tokio;
        let broker = Self::open(config, disk, clock, rng).await?;
        broker.ready(Duration::from_secs(30)).await?;
        let serving = broker.clone();
        tokio::spawn(async move {
            if let Err(e) = serving.serve(listener).await {
                tracing::error!(error = %e, "broker stopped serving");
            }
        });
        Ok((broker, bound))
    }

    /// Waits until the broker has registered with the controller and caught up with the
    /// metadata, so that it serves its partitions.
    pub async fn ready(&self, timeout: Duration) -> io::Result<()> {
        if self.state.await_serving(timeout).await {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the broker did not join its cluster in time",
            ))
        }
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.state.config
    }

    /// Accepts and serves client connections on `listener` until [`Broker::shutdown`].
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

    /// Serves other brokers on the internal `listener` until [`Broker::shutdown`].
    pub async fn serve_internal(&self, listener: Listener) {
        let state = Arc::clone(&self.state);
        let handler: rpc::Handler = Arc::new(move |req| {
            let state = Arc::clone(&state);
            Box::pin(async move { internal::handle(&state, req).await })
        });
        rpc::serve(listener, handler, self.state.shutdown.subscribe()).await;
    }

    /// Stops accepting connections and stops background work.
    pub async fn shutdown(&self) {
        self.state.shutdown.send_replace(true);
        self.state.replicas.close_all().await;
    }

    /// The offsets of a partition replica hosted here, if any.
    pub fn partition_marks(&self, topic: &str, partition: i32) -> Option<Marks> {
        self.state.replicas.get(topic, partition).map(|p| p.marks())
    }

    /// Whether this broker is the active controller.
    pub fn is_controller(&self) -> bool {
        self.state.quorum.current().active
    }
}

impl State {
    /// Waits up to `timeout` for the broker to serve; whether it does.
    pub(crate) async fn await_serving(&self, timeout: Duration) -> bool {
        let mut serving = self.serving.subscribe();
        matches!(
            tokio::time::timeout(timeout, serving.wait_for(|s| *s)).await,
            Ok(Ok(_))
        )
    }

    /// The metadata image as this broker last applied it.
    pub(crate) fn image(&self) -> Arc<crate::cluster::metadata::MetadataImage> {
        self.quorum.current().image
    }
}

/// Resolves once `flag` is set or its sender is gone.
pub(crate) async fn until_set(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}

/// Keeps the hosted replicas in line with the metadata image.
async fn follow_metadata(state: Arc<State>) {
    let mut image = state.quorum.watch();
    let mut serving = state.serving.subscribe();
    let mut stop = state.shutdown.subscribe();
    let mut last: Option<(Arc<crate::cluster::metadata::MetadataImage>, bool)> = None;
    loop {
        let current = (
            image.borrow_and_update().image.clone(),
            *serving.borrow_and_update(),
        );
        let changed = last
            .as_ref()
            .is_none_or(|(i, s)| !Arc::ptr_eq(i, &current.0) || *s != current.1);
        if changed {
            match state.replicas.reconcile(&current.0, current.1).await {
                Ok(()) => last = Some(current),
                Err(e) => {
                    tracing::warn!(error = %e, "could not apply the metadata to the hosted replicas; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        tokio::select! {
            _ = until_set(&mut stop) => return,
            r = image.changed() => if r.is_err() { return },
            r = serving.changed() => if r.is_err() { return },
        }
    }
}

async fn retention_loop(state: Arc<State>) {
    let mut stop = state.shutdown.subscribe();
    let every = Duration::from_millis(state.config.retention_check_interval_ms.max(1));
    loop {
        tokio::select! {
            _ = until_set(&mut stop) => return,
            _ = tokio::time::sleep(every) => {}
        }
        for p in state.replicas.all() {
            p.enforce_retention().await;
        }
    }
}

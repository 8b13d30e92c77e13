//! Pieces every scenario uses: the simulated broker host, client settings, topic setup, and
//! recording operations into the history.

use crate::checker::FinalRead;
use crate::env::{EPOCH_MS, Env, Rec, WorldConfig, now_ms};
use crate::fault::{FaultPlan, Mix, Topology};
use crate::history::{OpKind, Outcome};
use crate::report::RunReport;
use crate::scenario::{RunSpec, replay_line};
use rand::Rng;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_broker::log::TopicConfig;
use weir_broker::{Broker, BrokerConfig, Voter};
use weir_client::{
    Admin, ClientConfig, Cluster, ConnConfig, Consumer, ConsumerConfig, ConsumerRecord, Isolation,
    NewTopic, ProducerConfig,
};
use weir_seams::clock::Clock;
use weir_seams::disk::{Disk, DiskFaults};
use weir_seams::net::Net;
use weir_seams::rng;
use weir_seams::rng::WeirRng;

/// Port brokers serve clients on.
pub const PORT: u16 = 9092;
/// Port brokers serve each other on.
pub const INTERNAL_PORT: u16 = 9093;
/// Pause between client retries, in simulated milliseconds.
pub const RETRY_MS: u64 = 100;
/// After healing, everything acknowledged must be readable within this bound, in ms.
pub const DRAIN_BOUND_MS: u64 = 30_000;

/// Records an invocation in the history and the trace.
pub fn invoke(rec: &Rec, process: &str, kind: OpKind) -> usize {
    let at = now_ms();
    let mut r = rec.borrow_mut();
    r.trace.record(at, process, format!("invoke {kind}"));
    r.history.invoke(process, kind, at)
}

/// Records a completion in the history and the trace.
pub fn complete(rec: &Rec, process: &str, id: usize, outcome: Outcome) {
    let at = now_ms();
    let mut r = rec.borrow_mut();
    r.trace
        .record(at, process, format!("complete #{id} {outcome}"));
    r.history.complete(id, outcome, at);
}

/// Records an event in the trace only.
pub fn note(rec: &Rec, source: &str, what: String) {
    rec.borrow_mut().trace.record(now_ms(), source, what);
}

/// Sleeps for `ms` simulated milliseconds.
pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Host names of a cluster of `n` brokers: `broker` alone, or `broker-0`, `broker-1`, ...
pub fn broker_names(n: usize) -> Vec<String> {
    assert!(n >= 1);
    if n == 1 {
        vec!["broker".to_string()]
    } else {
        (0..n).map(|i| format!("broker-{i}")).collect()
    }
}

/// How the final read went, as its process left it: a read that never finished is a
/// liveness failure.
pub fn final_read_outcome(slot: &RefCell<Option<Result<(), String>>>) -> Result<(), String> {
    slot.borrow_mut()
        .take()
        .unwrap_or_else(|| Err("the final read did not finish".into()))
}

/// A boxed client process, as both the simulator and a live run spawn them.
pub type Process = std::pin::Pin<Box<dyn std::future::Future<Output = turmoil::Result>>>;

/// Where a workload's clients find the cluster, and what the run is called there: a
/// simulated cluster, or a real one for a live check.
#[derive(Clone, Debug)]
pub struct Target {
    /// Bootstrap addresses, `host:port`.
    pub bootstrap: Vec<String>,
    /// The network they are on.
    pub net: Net,
    /// Length of the workload phase, in milliseconds.
    pub workload_ms: u64,
    /// Wall clock at the start of the run, in milliseconds since the Unix epoch.
    pub epoch_ms: i64,
    /// Prefix of the run's topic names and transactional ids; empty in the simulator, unique
    /// per run on a real cluster so that runs do not see each other's data.
    pub prefix: String,
}

impl Target {
    /// The simulated cluster of `brokers`, for a workload of `workload_ms`.
    pub fn sim(brokers: &[String], workload_ms: u64) -> Self {
        Self {
            bootstrap: brokers.iter().map(|b| format!("{b}:{PORT}")).collect(),
            net: Net::Sim,
            workload_ms,
            epoch_ms: EPOCH_MS,
            prefix: String::new(),
        }
    }

    /// Client settings on this target, for client `client_id`.
    pub fn client(&self, client_id: &str) -> ClientConfig {
        client_on(client_id, self.bootstrap.iter().cloned(), self.net)
    }

    /// `name` with the run's prefix.
    pub fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A clock reading the run's wall clock now.
    pub fn clock(&self) -> Clock {
        Clock::starting_at(self.epoch_ms + now_ms() as i64)
    }
}

/// Client settings for the simulated network, bootstrapping from every broker, with timeouts
/// short enough to notice partitions.
pub fn client_config(client_id: &str, brokers: &[String]) -> ClientConfig {
    client_on(
        client_id,
        brokers.iter().map(|b| format!("{b}:{PORT}")),
        Net::Sim,
    )
}

pub(crate) fn client_on(
    client_id: &str,
    bootstrap: impl IntoIterator<Item = String>,
    net: Net,
) -> ClientConfig {
    let mut c = ClientConfig::new(bootstrap, net);
    c.conn = ConnConfig {
        client_id: client_id.to_string(),
        connect_timeout_ms: 1_000,
        request_timeout_ms: 5_000,
        max_response_bytes: 16 * 1024 * 1024,
        max_in_flight: 8,
    };
    c
}

/// The simulated brokers' settings: small segments, so that rolling and recovery of sealed
/// segments happen within a run, and timeouts scaled to runs of tens of seconds.
pub fn broker_config() -> BrokerConfig {
    BrokerConfig {
        advertised_port: PORT,
        net: Net::Sim,
        connections_max_idle_ms: 10_000,
        heartbeat_interval_ms: 200,
        session_timeout_ms: 2_000,
        replica_lag_time_max_ms: 2_000,
        internal_request_timeout_ms: 2_000,
        // Kafka's 3 s, scaled down with the session timeout.
        group_initial_rebalance_delay_ms: 300,
        topic_defaults: TopicConfig {
            segment_bytes: 16 * 1024,
            index_interval_bytes: 1024,
            ..TopicConfig::default()
        },
        ..BrokerConfig::default()
    }
}

/// [`broker_config`] with topics created at `min.insync.replicas` = `min_isr` by default.
pub fn broker_config_min_isr(min_isr: u32) -> BrokerConfig {
    let base = broker_config();
    let overrides = BTreeMap::from([("min.insync.replicas".to_string(), min_isr.to_string())]);
    BrokerConfig {
        topic_defaults: base
            .topic_defaults
            .with_overrides(&overrides)
            .expect("a valid override"),
        ..base
    }
}

/// An idempotent acks=all producer that retries long enough to outlast the faults.
pub fn producer_config(delivery_timeout_ms: u64) -> ProducerConfig {
    ProducerConfig {
        linger_ms: 5,
        delivery_timeout_ms,
        retry_backoff_ms: 50,
        retry_backoff_max_ms: 500,
        ack_timeout_ms: 3_000,
        ..ProducerConfig::default()
    }
}

async fn run_broker(
    config: BrokerConfig,
    faults: DiskFaults,
    seed: u64,
    incarnation: u64,
) -> turmoil::Result {
    let clock = Clock::starting_at(EPOCH_MS + now_ms() as i64);
    let listener = Net::Sim.bind(&format!("0.0.0.0:{PORT}")).await?;
    let internal = Net::Sim.bind(&format!("0.0.0.0:{INTERNAL_PORT}")).await?;
    let label = format!("broker/{}/{incarnation}", config.node_id);
    let broker = loop {
        let disk = Disk::sim("/data", faults.clone());
        match Broker::open(config.clone(), disk, clock, rng::derive(seed, &label)).await {
            Ok(b) => break b,
            Err(e) => {
                tracing::warn!(error = %e, "broker could not start; retrying");
                sleep_ms(500).await;
            }
        }
    };
    let b = broker.clone();
    tokio::spawn(async move { b.serve_internal(internal).await });
    broker.serve(listener).await?;
    Ok(())
}

/// Adds one host per name in `brokers`, as one cluster (every broker a voter of the metadata
/// quorum); each restart opens the broker again from its disk.
pub fn add_brokers(env: &mut Env<'_>, brokers: &[String], config: BrokerConfig) {
    let voters: Vec<Voter> = if brokers.len() == 1 {
        Vec::new()
    } else {
        brokers
            .iter()
            .enumerate()
            .map(|(i, b)| Voter {
                id: i as i32,
                host: b.clone(),
                internal_port: INTERNAL_PORT,
            })
            .collect()
    };
    for (i, name) in brokers.iter().enumerate() {
        let config = BrokerConfig {
            node_id: i as i32,
            advertised_host: name.clone(),
            voters: voters.clone(),
            ..config.clone()
        };
        let faults = env.disk(name);
        let seed = env.seed();
        let incarnations = Rc::new(Cell::new(0u64));
        env.sim.host(name.as_str(), move || {
            let (config, faults) = (config.clone(), faults.clone());
            let n = incarnations.get();
            incarnations.set(n + 1);
            async move { run_broker(config, faults, seed, n).await }
        });
    }
}

/// Waits until `topic` shows in the metadata, or `until_ms` passes.
pub async fn wait_for_topic(cluster: &Cluster, topic: &str, until_ms: u64) -> bool {
    while now_ms() < until_ms {
        if cluster.partitions(topic).await.is_ok() {
            return true;
        }
        cluster.forget(topic).await;
        sleep_ms(RETRY_MS).await;
    }
    false
}

/// Creates `topic`, retrying until it exists or `until_ms` passes.
pub async fn create_topic(
    cluster: &Arc<Cluster>,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    until_ms: u64,
) {
    let admin = Admin::new(Arc::clone(cluster));
    while now_ms() < until_ms {
        match admin
            .create_topic(&NewTopic::new(topic, partitions, replication_factor))
            .await
        {
            Ok(()) => return,
            Err(e)
                if e.code() == Some(kafka_protocol::error::ResponseError::TopicAlreadyExists) =>
            {
                return;
            }
            Err(_) => sleep_ms(RETRY_MS).await,
        }
    }
}

/// Reads `partitions` from their starts to the ends they have when the read begins (as the
/// consumer's isolation level sees them), by `deadline`. On a miss, returns what was read and
/// why. Each partition's contents go into the trace.
pub async fn read_to_end(
    rec: &Rec,
    reader: &str,
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    partitions: &[(String, i32)],
    deadline: u64,
) -> Result<FinalRead, (FinalRead, String)> {
    let values = |read: RecordsRead| -> FinalRead {
        read.into_iter()
            .map(|(p, recs)| (p, recs.iter().map(|r| (r.offset, value_of(r))).collect()))
            .collect()
    };
    let read = read_records_to_end(rec, reader, cluster, config, partitions, deadline)
        .await
        .map(values)
        .map_err(|(read, why)| (values(read), why));
    for (p, recs) in read.iter().flatten() {
        let summary: Vec<String> = recs.iter().map(|(o, v)| format!("{o}={v}")).collect();
        note(rec, reader, format!("final p{p}: {}", summary.join(" ")));
    }
    read
}

/// Whole records read from each partition, in offset order.
pub type RecordsRead = BTreeMap<i32, Vec<ConsumerRecord>>;

/// [`read_to_end`], keeping whole records and leaving the trace alone.
pub async fn read_records_to_end(
    rec: &Rec,
    reader: &str,
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    partitions: &[(String, i32)],
    deadline: u64,
) -> Result<RecordsRead, (RecordsRead, String)> {
    let mut consumer = Consumer::new(cluster, config);
    consumer.assign(partitions.iter().cloned());
    let mut ends = BTreeMap::new();
    for tp in partitions {
        let mut got = None;
        while got.is_none() {
            if now_ms() >= deadline {
                return Err((
                    RecordsRead::new(),
                    format!("end offsets unknown {DRAIN_BOUND_MS} ms after the heal"),
                ));
            }
            match consumer.list_offset(tp, -1).await {
                Ok(end) => got = Some(end),
                Err(_) => sleep_ms(RETRY_MS).await,
            }
        }
        ends.insert(tp.clone(), got.expect("set above"));
    }
    note(
        rec,
        reader,
        format!("end offsets {:?}", ends.values().collect::<Vec<_>>()),
    );
    let mut read = RecordsRead::new();
    loop {
        let behind: Vec<String> = ends
            .iter()
            .filter(|(tp, end)| consumer.position(tp).is_none_or(|pos| pos < **end))
            .map(|(tp, end)| format!("p{} at {:?} of {end}", tp.1, consumer.position(tp)))
            .collect();
        if behind.is_empty() {
            break;
        }
        if now_ms() >= deadline {
            return Err((
                read,
                format!(
                    "acknowledged data unreadable {DRAIN_BOUND_MS} ms after the heal: {}",
                    behind.join(", ")
                ),
            ));
        }
        match consumer.poll(Duration::from_millis(250)).await {
            Ok(records) => {
                for r in records {
                    let end = ends[&(r.topic.clone(), r.partition)];
                    if r.offset < end {
                        read.entry(r.partition).or_default().push(r);
                    }
                }
            }
            Err(_) => sleep_ms(RETRY_MS).await,
        }
    }
    Ok(read)
}

/// Records in the history and the trace that `process` polled `r`.
pub fn record_poll(rec: &Rec, process: &str, r: &ConsumerRecord) {
    let kind = OpKind::Poll {
        partition: r.partition,
        offset: r.offset,
        value: value_of(r),
    };
    let at = now_ms();
    let mut g = rec.borrow_mut();
    g.trace.record(at, process, format!("{kind}"));
    let outcome = Outcome::Ok {
        partition: r.partition,
        offset: r.offset,
    };
    g.history.instant(process, kind, outcome, at);
}

/// A record's value as text.
pub fn value_of(r: &ConsumerRecord) -> String {
    r.value
        .as_ref()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// What a cluster run starts from: the seed's RNG, the brokers, the topology, and the fault
/// plan, its mix and the world.
pub struct Setup {
    /// The scenario's RNG, derived from the seed; the plan was drawn from it.
    pub rng: WeirRng,
    /// Broker host names.
    pub brokers: Vec<String>,
    /// Brokers and clients.
    pub topo: Topology,
    /// The fault plan, and the mix it was drawn with.
    pub plan: (FaultPlan, Option<Mix>),
    /// The simulated world.
    pub world: WorldConfig,
}

/// Sets up a run of scenario `name` on `brokers` brokers and `clients`: checks that the
/// mutant asked for is one of `mutants`, and draws the plan for `fault_ms` of faults, with a
/// hard stop `settle_ms` (plus a margin) after them.
pub fn setup(
    spec: &RunSpec,
    (name, mutants): (&str, &[(&str, &str)]),
    brokers: usize,
    clients: Vec<String>,
    (fault_ms, settle_ms): (u64, u64),
) -> Setup {
    if let Some(m) = spec.mutant.as_deref() {
        assert!(mutants.iter().any(|(n, _)| *n == m), "unknown mutant {m:?}");
    }
    let mut rng = rng::derive(spec.seed, name);
    let brokers = broker_names(brokers);
    let topo = Topology {
        servers: brokers.clone(),
        clients,
    };
    let (plan, mix, world) = faults_and_world(
        spec,
        &mut rng,
        &topo,
        fault_ms,
        fault_ms + settle_ms + 10_000,
    );
    Setup {
        rng,
        brokers,
        topo,
        plan: (plan, mix),
        world,
    }
}

/// A run's fault plan (the spec's, or a swarm draw over `fault_ms`) and its world: torn writes
/// when the faults include them, an fsync latency drawn from `rng`, and a hard stop at
/// `limit_ms`.
pub fn faults_and_world(
    spec: &RunSpec,
    rng: &mut WeirRng,
    topo: &Topology,
    fault_ms: u64,
    limit_ms: u64,
) -> (FaultPlan, Option<Mix>, WorldConfig) {
    let (plan, mix) = match &spec.plan {
        Some(p) => (p.clone(), None),
        None => {
            let (p, m) = FaultPlan::swarm(rng, topo, fault_ms);
            (p, Some(m))
        }
    };
    let world = WorldConfig {
        torn_block_bytes: mix.as_ref().is_none_or(|m| m.torn_writes).then_some(512),
        sync_latency_ms: (0, rng.random_range(1..=8)),
        limit_ms,
    };
    (plan, mix, world)
}

/// The report of a finished run of scenario `name`: the checkers' `violations`, preceded by
/// why the simulation stopped early, if it did.
pub fn report(
    name: &str,
    spec: &RunSpec,
    env: &Env<'_>,
    (plan, mix): (FaultPlan, Option<Mix>),
    outcome: Result<(), String>,
    mut violations: Vec<String>,
) -> RunReport {
    if let Err(e) = outcome {
        violations.insert(0, format!("simulation stopped: {e}"));
    }
    let rec = env.rec.borrow();
    RunReport {
        scenario: name.into(),
        seed: spec.seed,
        mutant: spec.mutant.clone(),
        passed: violations.is_empty(),
        violations,
        trace_hash: format!("{:016x}", rec.trace.hash()),
        sim_ms: env.sim.elapsed().as_millis() as u64,
        wall_ms: 0,
        ops: rec.history.counts(),
        faults: rec
            .trace
            .events()
            .iter()
            .filter(|e| e.source == "nemesis")
            .count(),
        mix,
        plan,
        metrics: Vec::new(),
        replay: replay_line(name, spec),
        trace: rec.trace.events().to_vec(),
    }
}

/// Waits until no transaction is left open anywhere: every partition's last stable offset
/// reaches its high watermark. With the producers stopped, a transaction still open after
/// the coordinator's timeout is one nobody will end, and it hides all that follows it.
pub async fn await_stable(
    rec: &Rec,
    cluster: &Arc<Cluster>,
    partitions: &[(String, i32)],
    deadline: u64,
) -> Result<(), String> {
    let reader = |isolation| {
        Consumer::new(
            Arc::clone(cluster),
            ConsumerConfig {
                isolation,
                ..ConsumerConfig::default()
            },
        )
    };
    let (committed, uncommitted) = (
        reader(Isolation::ReadCommitted),
        reader(Isolation::ReadUncommitted),
    );
    let mut last = Vec::new();
    while now_ms() < deadline {
        last.clear();
        for tp in partitions {
            match (
                committed.list_offset(tp, -1).await,
                uncommitted.list_offset(tp, -1).await,
            ) {
                (Ok(stable), Ok(hw)) => last.push((tp.1, stable, hw)),
                _ => break,
            }
        }
        if last.len() == partitions.len() && last.iter().all(|(_, stable, hw)| stable == hw) {
            note(rec, "drainer", format!("stable at {last:?}"));
            return Ok(());
        }
        sleep_ms(RETRY_MS * 5).await;
    }
    Err(format!(
        "a transaction hangs: (partition, last stable offset, high watermark) {last:?} {DRAIN_BOUND_MS} ms after the heal"
    ))
}

//! Scenario `consumer-group`: three brokers, a topic of six partitions with three replicas, a
//! producer writing acknowledged records, and a consumer group of three members. Two members
//! commit automatically; one commits after every batch it processes and when its partitions
//! are revoked. One member leaves and rejoins mid-run, and the committing member stalls once,
//! longer than the rebalance timeout, right before a commit: it misses a rebalance and comes
//! back as a zombie whose commit must be refused. The nemesis crashes brokers (the controller,
//! which is the group coordinator, included), partitions and holds links and raises latency.
//!
//! An observer reads the committed offsets throughout; after the heal it waits for the group
//! to commit up to the end of every partition. The checkers (see [`crate::checker`]) then look
//! at commits, deliveries and assignments.

use super::common::{
    RETRY_MS, add_brokers, broker_config, client_config, complete, create_topic, invoke, note,
    producer_config, record_poll, report, setup, sleep_ms, wait_for_topic,
};
use crate::checker::{Assigned, GroupHistory, OffsetSeen, check_group};
use crate::env::{EPOCH_MS, Env, Rec, now_ms};
use crate::history::{OpKind, Outcome};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use bytes::Bytes;
use rand::Rng;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_broker::{BrokerConfig, BrokerMutant};
use weir_client::{
    Assignor, Cluster, Consumer, ConsumerConfig, GroupConfig, GroupConsumer, ListenerFuture,
    Producer, RebalanceListener, Record, TopicPartition,
};
use weir_seams::clock::Clock;
use weir_seams::rng;

/// Deliberately broken clusters this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[(
    "no-generation-fencing",
    "the group coordinator accepts offset commits from any generation and any member",
)];

const NAME: &str = "consumer-group";
const TOPIC: &str = "events";
const GROUP: &str = "workers";
const BROKERS: usize = 3;
const PARTITIONS: i32 = 6;
const REPLICATION_FACTOR: i16 = 3;
const MEMBERS: usize = 3;
/// The member that commits by hand and stalls once.
const COMMITTER: usize = 1;
/// The member that leaves and rejoins.
const LEAVER: usize = 2;
/// Length of the faulty phase, in simulated milliseconds.
const WORKLOAD_MS: u64 = 20_000;
/// After the heal the group must have committed everything within this bound.
const SETTLE_BOUND_MS: u64 = 30_000;
/// Interval of the observer's reads of the committed offsets, in milliseconds.
const OBSERVE_EVERY_MS: u64 = 500;
/// Members' session timeout, in milliseconds.
const SESSION_TIMEOUT_MS: u64 = 2_000;
/// Members' heartbeat interval, in milliseconds.
const HEARTBEAT_INTERVAL_MS: u64 = 300;
/// Members' rebalance timeout, in milliseconds.
const REBALANCE_TIMEOUT_MS: u64 = 3_000;
/// Interval of automatic commits, in milliseconds.
const AUTO_COMMIT_INTERVAL_MS: u64 = 1_000;
/// The committer's stall: long enough to be dropped at a rebalance and for others to commit.
const STALL_MS: u64 = REBALANCE_TIMEOUT_MS + 3_000;
/// Poll timeout of the members, in milliseconds.
const POLL_MS: u64 = 250;

/// When the leaver leaves and rejoins and the committer stalls, drawn per seed.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    stall_at_ms: u64,
    leave_at_ms: u64,
    rejoin_at_ms: u64,
}

struct Shared {
    brokers: Vec<String>,
    schedule: Schedule,
    group: RefCell<GroupHistory>,
    producer_done: Cell<bool>,
    /// Set by the observer once the group committed everything (or the bound passed).
    settled: Cell<bool>,
}

fn all_partitions() -> Vec<TopicPartition> {
    (0..PARTITIONS).map(|p| (TOPIC.to_string(), p)).collect()
}

fn scenario_broker_config(mutant: Option<&str>) -> BrokerConfig {
    BrokerConfig {
        group_min_session_timeout_ms: 500,
        mutant: (mutant == Some("no-generation-fencing"))
            .then_some(BrokerMutant::NoGenerationFencing),
        ..broker_config()
    }
}

fn group_config(auto_commit: bool) -> GroupConfig {
    GroupConfig {
        session_timeout_ms: SESSION_TIMEOUT_MS,
        rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        enable_auto_commit: auto_commit,
        auto_commit_interval_ms: AUTO_COMMIT_INTERVAL_MS,
        assignors: vec![Assignor::RoundRobin, Assignor::Range],
        commit_timeout_ms: 5_000,
        consumer: ConsumerConfig {
            fetch_max_wait_ms: 250,
            max_poll_records: 100,
            ..ConsumerConfig::default()
        },
        ..GroupConfig::new(GROUP)
    }
}

async fn producer(rec: Rec, shared: Rc<Shared>, seed: u64) -> turmoil::Result {
    let name = "producer";
    let cluster = Cluster::new(client_config(name, &shared.brokers));
    let clock = Clock::starting_at(EPOCH_MS + now_ms() as i64);
    create_topic(&cluster, TOPIC, PARTITIONS, REPLICATION_FACTOR, WORKLOAD_MS).await;
    let mut rng = rng::derive(seed, name);
    let mut deliveries = Vec::new();
    let mut producer = None;
    let mut n = 0u64;
    while now_ms() < WORKLOAD_MS {
        let Some(p) = &producer else {
            match Producer::new(Arc::clone(&cluster), producer_config(10_000), clock).await {
                Ok(p) => producer = Some(p),
                Err(_) => sleep_ms(RETRY_MS).await,
            }
            continue;
        };
        let partition = (n % PARTITIONS as u64) as i32;
        let value = format!("v{n}");
        n += 1;
        let id = invoke(
            &rec,
            name,
            OpKind::Send {
                key: format!("p{partition}"),
                value: value.clone(),
            },
        );
        let mut record = Record::new(TOPIC, None::<Bytes>, Bytes::from(value.clone()));
        record.partition = Some(partition);
        match p.send(record).await {
            Err(e) => complete(&rec, name, id, Outcome::Fail(e.to_string())),
            Ok(delivery) => {
                let (rec, shared) = (Rc::clone(&rec), Rc::clone(&shared));
                deliveries.push(tokio::task::spawn_local(async move {
                    let outcome = match delivery.wait().await {
                        Ok(m) => {
                            shared
                                .group
                                .borrow_mut()
                                .acked
                                .insert((m.partition, m.offset), value);
                            Outcome::Ok {
                                partition: m.partition,
                                offset: m.offset,
                            }
                        }
                        Err(e) => Outcome::Unknown(e.to_string()),
                    };
                    complete(&rec, name, id, outcome);
                }));
            }
        }
        sleep_ms(rng.random_range(5..=20)).await;
    }
    if let Some(p) = producer {
        p.close().await;
    }
    for d in deliveries {
        d.await?;
    }
    shared.producer_done.set(true);
    Ok(())
}

/// Commits the consumer's positions and, when acknowledged, records what is now committed.
async fn commit_positions(c: &mut GroupConsumer, rec: &Rec, shared: &Shared, name: &str) {
    let offsets: BTreeMap<TopicPartition, i64> = c
        .assignment()
        .into_iter()
        .filter_map(|tp| c.position(&tp).map(|o| (tp, o)))
        .collect();
    if offsets.is_empty() {
        return;
    }
    let invoke_ms = now_ms();
    let result = c.commit_sync(Some(offsets.clone())).await;
    let complete_ms = now_ms();
    note(
        rec,
        name,
        format!(
            "commit gen {} {:?}: {}",
            c.generation(),
            offsets.iter().map(|(tp, o)| (tp.1, *o)).collect::<Vec<_>>(),
            result
                .as_ref()
                .map_or_else(ToString::to_string, |()| "ok".into())
        ),
    );
    if result.is_ok() {
        shared
            .group
            .borrow_mut()
            .offsets
            .extend(
                offsets
                    .into_iter()
                    .map(|((_, partition), offset)| OffsetSeen {
                        process: name.to_string(),
                        invoke_ms,
                        complete_ms,
                        partition,
                        offset,
                    }),
            );
    }
}

/// Records assignments; the committer also commits before giving partitions up.
struct Listener {
    rec: Rec,
    shared: Rc<Shared>,
    name: String,
    commits_on_revoke: bool,
}

impl RebalanceListener for Listener {
    fn on_partitions_revoked<'a>(
        &'a mut self,
        consumer: &'a mut GroupConsumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async move {
            note(
                &self.rec,
                &self.name,
                format!(
                    "revoked {:?}",
                    partitions.iter().map(|tp| tp.1).collect::<Vec<_>>()
                ),
            );
            if self.commits_on_revoke {
                commit_positions(consumer, &self.rec, &self.shared, &self.name).await;
            }
        })
    }

    fn on_partitions_assigned<'a>(
        &'a mut self,
        consumer: &'a mut GroupConsumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        let assigned = Assigned {
            member: self.name.clone(),
            generation: consumer.generation(),
            partitions: partitions.iter().map(|tp| tp.1).collect(),
        };
        note(
            &self.rec,
            &self.name,
            format!(
                "assigned gen {}: {:?}",
                assigned.generation, assigned.partitions
            ),
        );
        self.shared.group.borrow_mut().assignments.push(assigned);
        Box::pin(async {})
    }
}

fn join(rec: &Rec, shared: &Rc<Shared>, name: &str, idx: usize) -> GroupConsumer {
    let cluster = Cluster::new(client_config(name, &shared.brokers));
    let mut c = GroupConsumer::new(cluster, group_config(idx != COMMITTER));
    c.subscribe(
        [TOPIC],
        Some(Box::new(Listener {
            rec: Rc::clone(rec),
            shared: Rc::clone(shared),
            name: name.to_string(),
            commits_on_revoke: idx == COMMITTER,
        })),
    );
    c
}

async fn member(rec: Rec, shared: Rc<Shared>, idx: usize) -> turmoil::Result {
    let name = format!("member-{idx}");
    let end = WORKLOAD_MS + SETTLE_BOUND_MS;
    let probe = Cluster::new(client_config(&name, &shared.brokers));
    if !wait_for_topic(&probe, TOPIC, end).await {
        return Ok(());
    }
    let schedule = shared.schedule;
    let mut c = join(&rec, &shared, &name, idx);
    let (mut left, mut stalled) = (false, false);
    while !shared.settled.get() && now_ms() < end {
        if idx == LEAVER && !left && now_ms() >= schedule.leave_at_ms {
            left = true;
            note(&rec, &name, "leaving the group".into());
            c.close().await;
            sleep_ms(schedule.rejoin_at_ms.saturating_sub(now_ms())).await;
            note(&rec, &name, "rejoining the group".into());
            c = join(&rec, &shared, &name, idx);
            continue;
        }
        let records = match c.poll(Duration::from_millis(POLL_MS)).await {
            Ok(r) => r,
            Err(_) => {
                sleep_ms(RETRY_MS).await;
                continue;
            }
        };
        for r in &records {
            record_poll(&rec, &name, r);
            shared
                .group
                .borrow_mut()
                .delivered
                .insert((r.partition, r.offset));
        }
        if idx == COMMITTER && !records.is_empty() {
            if !stalled && now_ms() >= schedule.stall_at_ms {
                stalled = true;
                note(
                    &rec,
                    &name,
                    format!("stalls for {STALL_MS} ms before committing"),
                );
                sleep_ms(STALL_MS).await;
            }
            commit_positions(&mut c, &rec, &shared, &name).await;
        }
    }
    c.close().await;
    Ok(())
}

/// Reads the committed offsets of every partition, recording each as an observation.
async fn observe(reader: &mut GroupConsumer, shared: &Shared) -> Option<BTreeMap<i32, i64>> {
    let invoke_ms = now_ms();
    let found = reader.committed(&all_partitions()).await.ok()?;
    let complete_ms = now_ms();
    let found: BTreeMap<i32, i64> = found.into_iter().map(|((_, p), o)| (p, o)).collect();
    shared
        .group
        .borrow_mut()
        .offsets
        .extend(found.iter().map(|(p, o)| OffsetSeen {
            process: "observer".into(),
            invoke_ms,
            complete_ms,
            partition: *p,
            offset: *o,
        }));
    Some(found)
}

/// Watches the committed offsets; after the heal, waits for the group to commit the end of
/// every partition within the bound.
async fn observer(rec: Rec, shared: Rc<Shared>) -> turmoil::Result {
    let deadline = WORKLOAD_MS + SETTLE_BOUND_MS;
    let cluster = Cluster::new(client_config("observer", &shared.brokers));
    let mut reader = GroupConsumer::new(Arc::clone(&cluster), group_config(false));
    while now_ms() < WORKLOAD_MS {
        observe(&mut reader, &shared).await;
        sleep_ms(OBSERVE_EVERY_MS).await;
    }
    let result = settle(&rec, &shared, &cluster, &mut reader, deadline).await;
    note(&rec, "observer", format!("settle {result:?}"));
    shared.group.borrow_mut().settled = result;
    shared.settled.set(true);
    Ok(())
}

async fn settle(
    rec: &Rec,
    shared: &Shared,
    cluster: &Arc<Cluster>,
    reader: &mut GroupConsumer,
    deadline: u64,
) -> Result<(), String> {
    while !shared.producer_done.get() {
        if now_ms() >= deadline {
            return Err(format!(
                "the producer had sends unresolved {SETTLE_BOUND_MS} ms after the heal"
            ));
        }
        sleep_ms(RETRY_MS).await;
    }
    if !wait_for_topic(cluster, TOPIC, deadline).await {
        // Faults kept the topic from being created: nothing was acknowledged.
        return Ok(());
    }
    let ends_reader = Consumer::new(Arc::clone(cluster), ConsumerConfig::default());
    let mut ends = BTreeMap::new();
    for tp in all_partitions() {
        loop {
            if now_ms() >= deadline {
                return Err(format!("no end offset for p{} after the heal", tp.1));
            }
            match ends_reader.list_offset(&tp, -1).await {
                Ok(end) => {
                    ends.insert(tp.1, end);
                    break;
                }
                Err(_) => sleep_ms(RETRY_MS).await,
            }
        }
    }
    note(rec, "observer", format!("end offsets {ends:?}"));
    let mut last = BTreeMap::new();
    loop {
        if let Some(found) = observe(reader, shared).await {
            last = found;
            shared.group.borrow_mut().final_committed = last.clone();
        }
        let behind: Vec<String> = ends
            .iter()
            .filter(|(p, end)| last.get(p).copied().unwrap_or(0) < **end)
            .map(|(p, end)| format!("p{p} committed {:?} of {end}", last.get(p)))
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if now_ms() >= deadline {
            return Err(format!(
                "the group had not consumed everything {SETTLE_BOUND_MS} ms after the heal: {}",
                behind.join(", ")
            ));
        }
        sleep_ms(OBSERVE_EVERY_MS).await;
    }
}

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    let seed = spec.seed;
    let members: Vec<String> = (0..MEMBERS).map(|i| format!("member-{i}")).collect();
    let clients: Vec<String> = ["producer".to_string()]
        .into_iter()
        .chain(members.iter().cloned())
        .chain(["observer".to_string()])
        .collect();
    let mut run = setup(
        spec,
        (NAME, MUTANTS),
        BROKERS,
        clients,
        (WORKLOAD_MS, SETTLE_BOUND_MS),
    );
    let (rng, brokers) = (&mut run.rng, &run.brokers);
    let stall_at_ms = rng.random_range(5_000..7_000);
    let leave_at_ms = stall_at_ms + rng.random_range(300..800);
    let schedule = Schedule {
        stall_at_ms,
        leave_at_ms,
        rejoin_at_ms: leave_at_ms + rng.random_range(2_500..3_500),
    };
    let mut env = Env::new(seed, run.topo, &run.world);
    let shared = Rc::new(Shared {
        brokers: brokers.clone(),
        schedule,
        group: RefCell::new(GroupHistory {
            settled: Err("the observer did not finish".into()),
            ..GroupHistory::default()
        }),
        producer_done: Cell::new(false),
        settled: Cell::new(false),
    });
    add_brokers(
        &mut env,
        brokers,
        scenario_broker_config(spec.mutant.as_deref()),
    );
    env.sim.client(
        "producer",
        producer(Rc::clone(&env.rec), Rc::clone(&shared), seed),
    );
    for (idx, name) in members.iter().enumerate() {
        env.sim.client(
            name.as_str(),
            member(Rc::clone(&env.rec), Rc::clone(&shared), idx),
        );
    }
    env.sim.client(
        "observer",
        observer(Rc::clone(&env.rec), Rc::clone(&shared)),
    );

    let outcome = env.run(&run.plan.0, WORKLOAD_MS);
    let violations = check_group(&shared.group.borrow())
        .iter()
        .map(ToString::to_string)
        .collect();
    report(NAME, spec, &env, run.plan, outcome, violations)
}

//! Scenario `transactions`: three brokers and transactional producers. Each transaction first
//! polls the topic under read_committed (so that transactions read each other's writes), then
//! writes a few records to random partitions, then commits, or aborts (by choice, or because a
//! send failed). A producer whose abort fails is replaced by a new instance with the same
//! transactional id, which must fence the old one and abort what it left open.
//!
//! The nemesis crashes brokers (the coordinator included), partitions and slows the network,
//! and fails disks. After the heal, a read_committed reader must find every committed
//! transaction whole, nothing of an aborted one, and each unknown one whole or not at all. No
//! transaction may have read an aborted or not-yet-committing record, and the committed ones
//! must form no G0 or G1c cycle.

use super::common::{
    DRAIN_BOUND_MS, Process, RETRY_MS, Target, add_brokers, await_stable, complete, create_topic,
    invoke, note, producer_config, read_to_end, record_poll, report, setup, sleep_ms, value_of,
    wait_for_topic,
};
use crate::checker::{FinalRead, TxnOp, TxnOutcome, check_txns};
use crate::env::{Env, Rec, now_ms};
use crate::history::{OpKind, Outcome};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use bytes::Bytes;
use rand::Rng;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use weir_broker::{BrokerConfig, BrokerMutant};
use weir_client::{
    Cluster, Consumer, ConsumerConfig, Delivery, Isolation, Producer, ProducerConfig, Record,
};
use weir_seams::clock::Clock;
use weir_seams::rng::{self, WeirRng};

/// Deliberately broken clusters this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[(
    "no-zombie-fencing",
    "InitProducerId with a transactional id neither bumps the epoch nor aborts the open transaction",
)];

const NAME: &str = "transactions";
const TOPIC: &str = "ledger";
const PARTITIONS: i32 = 3;
const PRODUCERS: usize = 2;
/// Length of the faulty phase, in simulated milliseconds.
const WORKLOAD_MS: u64 = 20_000;
/// Records per transaction, at most.
const TXN_RECORDS_MAX: usize = 4;
/// How long an open transaction may live before the coordinator aborts it, in milliseconds.
const TXN_TIMEOUT_MS: i32 = 5_000;
/// Chance that an instance stalls before committing and is replaced (becoming a zombie).
const ZOMBIE_P: f64 = 0.05;
/// How long a transaction's poll waits for records, in milliseconds.
const POLL_WAIT_MS: u64 = 50;
/// Records one poll returns, at most.
const POLL_RECORDS_MAX: usize = 8;

/// What the transactional workload's clients share.
pub(crate) struct Shared {
    target: Target,
    topic: String,
    replication_factor: i16,
    /// Instances each producer has started.
    instances: Vec<Cell<u64>>,
    producers_done: Cell<usize>,
    txns: RefCell<Vec<TxnOp>>,
    final_read: RefCell<FinalRead>,
    drained: RefCell<Option<Result<(), String>>>,
}

fn txn_config(target: &Target, idx: usize) -> ProducerConfig {
    ProducerConfig {
        transactional_id: Some(target.name(&format!("tx-{idx}"))),
        transaction_timeout_ms: TXN_TIMEOUT_MS,
        ..producer_config(8_000)
    }
}

/// A producer instance, initialised for transactions.
async fn instance(
    cluster: &Arc<Cluster>,
    target: &Target,
    idx: usize,
    clock: Clock,
) -> Option<Producer> {
    let p = Producer::new(Arc::clone(cluster), txn_config(target, idx), clock)
        .await
        .ok()?;
    p.init_transactions().await.ok()?;
    Some(p)
}

/// A transaction's reads and sends: the values read and when, the history ids and values
/// sent, and where each landed.
struct Sent {
    label: String,
    reads: Vec<(String, u64)>,
    ops: Vec<(usize, String)>,
    landed: Vec<Option<(i32, i64)>>,
    commit_ms: Option<u64>,
    failed: bool,
}

/// A read_committed consumer of the whole topic, from its start.
fn reader(cluster: &Arc<Cluster>, topic: &str) -> Consumer {
    let mut c = Consumer::new(
        Arc::clone(cluster),
        ConsumerConfig {
            fetch_max_wait_ms: POLL_WAIT_MS as i32,
            max_poll_records: POLL_RECORDS_MAX,
            isolation: Isolation::ReadCommitted,
            ..ConsumerConfig::default()
        },
    );
    c.assign((0..PARTITIONS).map(|p| (topic.to_string(), p)));
    c
}

/// Opens a transaction, polls once, and sends a few records to random partitions, waiting
/// for each.
async fn send_txn(
    rec: &Rec,
    name: &str,
    (p, consumer, topic): (&Producer, &mut Consumer, &str),
    label: String,
    rng: &mut WeirRng,
) -> Sent {
    let mut sent = Sent {
        label,
        reads: Vec::new(),
        ops: Vec::new(),
        landed: Vec::new(),
        commit_ms: None,
        failed: p.begin_transaction().is_err(),
    };
    if !sent.failed
        && let Ok(records) = consumer
            .poll(std::time::Duration::from_millis(POLL_WAIT_MS))
            .await
    {
        for r in &records {
            record_poll(rec, name, r);
            sent.reads.push((value_of(r), now_ms()));
        }
    }
    let mut deliveries: Vec<Option<Delivery>> = Vec::new();
    for j in 0..rng.random_range(1..=TXN_RECORDS_MAX) {
        if sent.failed {
            break;
        }
        let value = format!("{}-{j}", sent.label);
        let id = invoke(
            rec,
            name,
            OpKind::Send {
                key: sent.label.clone(),
                value: value.clone(),
            },
        );
        sent.ops.push((id, value.clone()));
        let record = Record {
            partition: Some(rng.random_range(0..PARTITIONS)),
            ..Record::new(topic, None::<Bytes>, Bytes::from(value))
        };
        match p.send(record).await {
            Ok(d) => deliveries.push(Some(d)),
            Err(e) => {
                note(rec, name, format!("{} send refused: {e}", sent.label));
                deliveries.push(None);
                sent.failed = true;
            }
        }
        sleep_ms(rng.random_range(1..=10)).await;
    }
    for d in deliveries {
        let at = match d {
            Some(d) => match d.wait().await {
                Ok(m) => Some((m.partition, m.offset)),
                Err(e) => {
                    note(rec, name, format!("{} send failed: {e}", sent.label));
                    None
                }
            },
            None => None,
        };
        sent.failed |= at.is_none();
        sent.landed.push(at);
    }
    sent
}

/// Commits (unless `commit` is false or a send failed) or aborts. Returns the outcome and
/// whether the producer instance is still usable.
async fn finish(
    rec: &Rec,
    name: &str,
    p: &Producer,
    sent: &mut Sent,
    commit: bool,
) -> (TxnOutcome, bool) {
    if commit && !sent.failed {
        sent.commit_ms = Some(now_ms());
        return match p.commit_transaction().await {
            Ok(()) => (TxnOutcome::Committed, true),
            // The decision may or may not have been taken; start afresh.
            Err(e) => {
                note(rec, name, format!("{} commit failed: {e}", sent.label));
                (TxnOutcome::Unknown, p.abort_transaction().await.is_ok())
            }
        };
    }
    // Aborted for sure: by this abort, or by the next instance's init (or the timeout).
    (TxnOutcome::Aborted, p.abort_transaction().await.is_ok())
}

/// Completes a transaction's operations in the history and hands it to the checker.
fn settle(rec: &Rec, shared: &Shared, idx: usize, sent: Sent, outcome: TxnOutcome) {
    let name = &format!("producer-{idx}");
    for (k, (id, _)) in sent.ops.iter().enumerate() {
        let o = match (outcome, sent.landed.get(k).copied().flatten()) {
            (TxnOutcome::Committed, Some((partition, offset))) => Outcome::Ok { partition, offset },
            (TxnOutcome::Aborted, _) => Outcome::Fail("transaction aborted".into()),
            _ => Outcome::Unknown("transaction outcome unknown".into()),
        };
        complete(rec, name, *id, o);
    }
    note(rec, name, format!("{} {outcome:?}", sent.label));
    shared.txns.borrow_mut().push(TxnOp {
        label: sent.label,
        writer: txn_config(&shared.target, idx)
            .transactional_id
            .expect("set by txn_config"),
        values: sent.ops.into_iter().map(|(_, v)| v).collect(),
        reads: sent.reads,
        commit_ms: sent.commit_ms,
        outcome,
    });
}

/// A paused instance: it wakes after its replacement has initialised and tries to commit.
/// The replacement's init ended its transaction first, so the transaction is aborted
/// whatever the zombie is told.
async fn zombie(rec: Rec, shared: Rc<Shared>, p: Producer, mut sent: Sent, idx: usize) {
    let generation = shared.instances[idx].get();
    while shared.instances[idx].get() <= generation && now_ms() < shared.target.workload_ms {
        sleep_ms(RETRY_MS).await;
    }
    let replaced = shared.instances[idx].get() > generation;
    sent.commit_ms = Some(now_ms());
    let outcome = match p.commit_transaction().await {
        _ if replaced => TxnOutcome::Aborted,
        Ok(()) => TxnOutcome::Committed,
        Err(_) => TxnOutcome::Unknown,
    };
    note(
        &rec,
        &format!("producer-{idx}"),
        format!("zombie of {} woke (replaced: {replaced})", sent.label),
    );
    settle(&rec, &shared, idx, sent, outcome);
}

async fn producer_process(rec: Rec, shared: Rc<Shared>, idx: usize, seed: u64) -> turmoil::Result {
    let name = format!("producer-{idx}");
    let (target, topic) = (&shared.target, shared.topic.as_str());
    let cluster = Cluster::new(target.client(&name));
    let clock = target.clock();
    let rf = shared.replication_factor;
    if idx == 0 {
        create_topic(&cluster, topic, PARTITIONS, rf, target.workload_ms).await;
    } else {
        wait_for_topic(&cluster, topic, target.workload_ms).await;
    }
    let mut rng = rng::derive(seed, &name);
    let mut consumer = reader(&cluster, topic);
    let mut producer = None;
    let mut zombies = Vec::new();
    let mut n = 0u64;
    while now_ms() < target.workload_ms {
        let Some(p) = &producer else {
            producer = instance(&cluster, target, idx, clock).await;
            if producer.is_none() {
                sleep_ms(RETRY_MS).await;
            } else {
                let generation = &shared.instances[idx];
                generation.set(generation.get() + 1);
                note(
                    &rec,
                    &name,
                    format!("producer instance {}", generation.get()),
                );
            }
            continue;
        };
        let label = format!("p{idx}-t{n}");
        let mut sent = send_txn(&rec, &name, (p, &mut consumer, topic), label, &mut rng).await;
        n += 1;
        if !sent.failed && rng.random_bool(ZOMBIE_P) {
            // The instance stalls before committing, and a replacement takes over.
            let p = producer.take().expect("checked above");
            let (rec, shared) = (Rc::clone(&rec), Rc::clone(&shared));
            zombies.push(tokio::task::spawn_local(zombie(rec, shared, p, sent, idx)));
            continue;
        }
        let commit = !rng.random_bool(0.25);
        let (outcome, usable) = finish(&rec, &name, p, &mut sent, commit).await;
        settle(&rec, &shared, idx, sent, outcome);
        if !usable {
            producer = None;
        }
    }
    for z in zombies {
        z.await?;
    }
    shared.producers_done.set(shared.producers_done.get() + 1);
    Ok(())
}

/// After the heal: waits for the producers, then reads everything committed.
async fn drainer(rec: Rec, shared: Rc<Shared>) -> turmoil::Result {
    let (target, topic) = (&shared.target, shared.topic.as_str());
    let deadline = target.workload_ms + DRAIN_BOUND_MS;
    sleep_ms(target.workload_ms.saturating_sub(now_ms())).await;
    while shared.producers_done.get() < PRODUCERS && now_ms() < deadline {
        sleep_ms(RETRY_MS).await;
    }
    let cluster = Cluster::new(target.client("drainer"));
    create_topic(
        &cluster,
        topic,
        PARTITIONS,
        shared.replication_factor,
        deadline,
    )
    .await;
    let config = ConsumerConfig {
        fetch_max_wait_ms: 250,
        isolation: Isolation::ReadCommitted,
        ..ConsumerConfig::default()
    };
    let partitions: Vec<(String, i32)> = (0..PARTITIONS).map(|p| (topic.to_string(), p)).collect();
    let result = if shared.producers_done.get() < PRODUCERS {
        Err(format!(
            "producers still busy {DRAIN_BOUND_MS} ms after the heal"
        ))
    } else if let Err(why) = await_stable(&rec, &cluster, &partitions, deadline).await {
        Err(why)
    } else {
        match read_to_end(&rec, "drainer", cluster, config, &partitions, deadline).await {
            Ok(read) => {
                *shared.final_read.borrow_mut() = read;
                Ok(())
            }
            Err((read, why)) => {
                *shared.final_read.borrow_mut() = read;
                Err(why)
            }
        }
    };
    note(&rec, "drainer", format!("drain {result:?}"));
    *shared.drained.borrow_mut() = Some(result);
    Ok(())
}

fn broker_config(mutant: Option<&str>) -> BrokerConfig {
    BrokerConfig {
        mutant: (mutant == Some("no-zombie-fencing")).then_some(BrokerMutant::NoZombieFencing),
        ..super::common::broker_config_min_isr(2)
    }
}

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    let seed = spec.seed;
    let clients: Vec<String> = (0..PRODUCERS)
        .map(|i| format!("producer-{i}"))
        .chain(["drainer".to_string()])
        .collect();
    let run = setup(
        spec,
        (NAME, MUTANTS),
        3,
        clients,
        (WORKLOAD_MS, DRAIN_BOUND_MS),
    );
    let brokers = run.brokers;
    let mut env = Env::new(seed, run.topo, &run.world);
    let shared = Rc::new(Shared::new(Target::sim(&brokers, WORKLOAD_MS), 3));
    add_brokers(&mut env, &brokers, broker_config(spec.mutant.as_deref()));
    for (name, process) in processes(&env.rec, &shared, seed) {
        env.sim.client(name, process);
    }
    let outcome = env.run(&run.plan.0, WORKLOAD_MS);
    let violations = shared.verdict();
    report(NAME, spec, &env, run.plan, outcome, violations)
}

impl Shared {
    /// The shared state of a run on `target`, whose topic has `replication_factor` replicas
    /// (-1: the cluster's default).
    pub(crate) fn new(target: Target, replication_factor: i16) -> Self {
        Self {
            topic: target.name(TOPIC),
            target,
            replication_factor,
            instances: (0..PRODUCERS).map(|_| Cell::new(0)).collect(),
            producers_done: Cell::new(0),
            txns: RefCell::new(Vec::new()),
            final_read: RefCell::new(BTreeMap::new()),
            drained: RefCell::new(None),
        }
    }

    /// The run's topic.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// The violations the transaction checkers find.
    pub(crate) fn verdict(&self) -> Vec<String> {
        let drained = super::common::final_read_outcome(&self.drained);
        check_txns(&self.txns.borrow(), &self.final_read.borrow(), drained)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Transactions that ended, by outcome: (committed, aborted, unknown).
    pub(crate) fn outcomes(&self) -> (usize, usize, usize) {
        let txns = self.txns.borrow();
        let count = |o| txns.iter().filter(|t| t.outcome == o).count();
        (
            count(TxnOutcome::Committed),
            count(TxnOutcome::Aborted),
            count(TxnOutcome::Unknown),
        )
    }
}

/// The workload's client processes, by name: the transactional producers and the drainer.
pub(crate) fn processes(rec: &Rec, shared: &Rc<Shared>, seed: u64) -> Vec<(String, Process)> {
    let mut out: Vec<(String, Process)> = Vec::new();
    for idx in 0..PRODUCERS {
        let (rec, shared) = (Rc::clone(rec), Rc::clone(shared));
        out.push((
            format!("producer-{idx}"),
            Box::pin(producer_process(rec, shared, idx, seed)),
        ));
    }
    out.push((
        "drainer".into(),
        Box::pin(drainer(Rc::clone(rec), Rc::clone(shared))),
    ));
    out
}

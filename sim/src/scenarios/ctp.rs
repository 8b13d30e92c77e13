//! Scenario `consume-transform-produce`: the exactly-once loop of a stream application on
//! three brokers. A feeder writes unique inputs; a group of workers reads them under
//! read_committed and, for each poll, writes one output per input and commits the input offsets
//! in the same transaction, with the member's group generation (KIP-447).
//!
//! Workers restart (leaving the group) and stall past the rebalance timeout, so partitions move
//! between them while transactions are open; the nemesis crashes brokers (the coordinator
//! included), partitions and slows the network, and fails disks. After the heal the group must
//! consume the whole input, and read_committed must show exactly one output per input.

use super::common::{
    DRAIN_BOUND_MS, RETRY_MS, add_brokers, await_stable, client_config, complete, create_topic,
    invoke, note, producer_config, read_to_end, record_poll, report, setup, sleep_ms, value_of,
    wait_for_topic,
};
use crate::checker::{CtpRun, FinalRead, check_ctp};
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
    Assignor, Cluster, ConsumerConfig, ConsumerRecord, GroupConfig, GroupConsumer, Isolation,
    Producer, ProducerConfig, Record, TopicPartition,
};
use weir_seams::clock::Clock;
use weir_seams::rng::{self, WeirRng};

/// Deliberately broken clusters this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[(
    "no-generation-fencing",
    "the group coordinator accepts offsets, in or out of a transaction, from any generation and member",
)];

const NAME: &str = "consume-transform-produce";
const INPUT: &str = "ctp-in";
const OUTPUT: &str = "ctp-out";
const GROUP: &str = "transformers";
const PARTITIONS: i32 = 3;
const REPLICATION_FACTOR: i16 = 3;
const WORKERS: usize = 3;
/// Length of the faulty phase, in simulated milliseconds.
const WORKLOAD_MS: u64 = 20_000;
/// Mean gap between two inputs, in milliseconds.
const INPUT_GAP_MS: u64 = 20;
/// Workers' session timeout, in milliseconds.
const SESSION_TIMEOUT_MS: u64 = 2_000;
/// Workers' heartbeat interval, in milliseconds.
const HEARTBEAT_INTERVAL_MS: u64 = 300;
/// Workers' rebalance timeout, in milliseconds.
const REBALANCE_TIMEOUT_MS: u64 = 3_000;
/// Workers' transaction timeout: longer than a stall, so that the group, not the coordinator's
/// timeout, is what fences a stalled worker.
const TXN_TIMEOUT_MS: i32 = 10_000;
/// A stall: past the rebalance timeout, so that a rebalance meanwhile drops the worker.
const STALL_MS: u64 = REBALANCE_TIMEOUT_MS + 2_000;
/// Chance per transaction that the worker stalls before committing.
const STALL_P: f64 = 0.02;
/// Chance per transaction that the worker restarts afterwards, leaving the group.
const RESTART_P: f64 = 0.01;
/// Poll timeout of the workers, in milliseconds.
const POLL_MS: u64 = 200;
/// Records one poll (and so one transaction) handles, at most.
const POLL_RECORDS_MAX: usize = 20;

struct Shared {
    brokers: Vec<String>,
    feeder_done: Cell<bool>,
    /// Set once the group has committed the whole input (or the bound passed).
    stop: Cell<bool>,
    inputs: RefCell<FinalRead>,
    outputs: RefCell<FinalRead>,
    committed: RefCell<BTreeMap<i32, i64>>,
    drained: RefCell<Option<Result<(), String>>>,
}

fn partitions(topic: &str) -> Vec<TopicPartition> {
    (0..PARTITIONS).map(|p| (topic.to_string(), p)).collect()
}

fn scenario_broker_config(mutant: Option<&str>) -> BrokerConfig {
    BrokerConfig {
        group_min_session_timeout_ms: 500,
        mutant: (mutant == Some("no-generation-fencing"))
            .then_some(BrokerMutant::NoGenerationFencing),
        ..super::common::broker_config_min_isr(2)
    }
}

fn group_config() -> GroupConfig {
    GroupConfig {
        session_timeout_ms: SESSION_TIMEOUT_MS,
        rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        enable_auto_commit: false,
        assignors: vec![Assignor::Range, Assignor::RoundRobin],
        commit_timeout_ms: 5_000,
        consumer: ConsumerConfig {
            fetch_max_wait_ms: 100,
            max_poll_records: POLL_RECORDS_MAX,
            isolation: Isolation::ReadCommitted,
            ..ConsumerConfig::default()
        },
        ..GroupConfig::new(GROUP)
    }
}

/// Writes unique inputs to random partitions until the faults end, then waits for their acks.
async fn feeder(rec: Rec, shared: Rc<Shared>, seed: u64) -> turmoil::Result {
    let name = "feeder";
    let cluster = Cluster::new(client_config(name, &shared.brokers));
    let clock = Clock::starting_at(EPOCH_MS + now_ms() as i64);
    create_topic(&cluster, INPUT, PARTITIONS, REPLICATION_FACTOR, WORKLOAD_MS).await;
    create_topic(
        &cluster,
        OUTPUT,
        PARTITIONS,
        REPLICATION_FACTOR,
        WORKLOAD_MS,
    )
    .await;
    let mut rng = rng::derive(seed, name);
    let mut sent = Vec::new();
    let mut producer = None;
    let mut n = 0u64;
    while now_ms() < WORKLOAD_MS {
        let Some(p) = &producer else {
            producer = Producer::new(Arc::clone(&cluster), producer_config(10_000), clock)
                .await
                .ok();
            if producer.is_none() {
                sleep_ms(RETRY_MS).await;
            }
            continue;
        };
        let value = format!("in-{n}");
        n += 1;
        let key = String::new();
        let id = invoke(
            &rec,
            name,
            OpKind::Send {
                key,
                value: value.clone(),
            },
        );
        let record = Record {
            partition: Some(rng.random_range(0..PARTITIONS)),
            ..Record::new(INPUT, None::<Bytes>, Bytes::from(value))
        };
        match p.send(record).await {
            Ok(delivery) => sent.push((id, delivery)),
            Err(e) => complete(&rec, name, id, Outcome::Fail(e.to_string())),
        }
        sleep_ms(rng.random_range(1..=2 * INPUT_GAP_MS)).await;
    }
    for (id, delivery) in sent {
        let outcome = match delivery.wait().await {
            Ok(m) => Outcome::Ok {
                partition: m.partition,
                offset: m.offset,
            },
            Err(e) => Outcome::Unknown(e.to_string()),
        };
        complete(&rec, name, id, outcome);
    }
    if let Some(p) = producer {
        p.close().await;
    }
    shared.feeder_done.set(true);
    Ok(())
}

/// A worker's transactional producer, initialised (which fences its previous instance).
async fn instance(cluster: &Arc<Cluster>, idx: usize, clock: Clock) -> Option<Producer> {
    let config = ProducerConfig {
        transactional_id: Some(format!("transformer-{idx}")),
        transaction_timeout_ms: TXN_TIMEOUT_MS,
        ..producer_config(8_000)
    };
    let p = Producer::new(Arc::clone(cluster), config, clock)
        .await
        .ok()?;
    p.init_transactions().await.ok()?;
    Some(p)
}

/// One transaction: an output per record, then the records' offsets, then the commit. A stall
/// before the offsets lets a rebalance hand the partitions to another worker meanwhile.
async fn transform(
    rec: &Rec,
    name: &str,
    (c, p): (&GroupConsumer, &Producer),
    records: &[ConsumerRecord],
    rng: &mut WeirRng,
) -> Result<(), String> {
    p.begin_transaction().map_err(|e| format!("begin: {e}"))?;
    let mut offsets = BTreeMap::new();
    for r in records {
        let output = Record {
            partition: Some(r.partition),
            ..Record::new(
                OUTPUT,
                None::<Bytes>,
                Bytes::from(format!("out:{}", value_of(r))),
            )
        };
        p.send(output).await.map_err(|e| format!("send: {e}"))?;
        offsets.insert((INPUT.to_string(), r.partition), r.offset + 1);
    }
    if rng.random_bool(STALL_P) {
        note(rec, name, format!("stalls for {STALL_MS} ms"));
        sleep_ms(STALL_MS).await;
    }
    p.send_offsets_to_transaction(&offsets, &c.group_metadata())
        .await
        .map_err(|e| format!("offsets: {e}"))?;
    p.commit_transaction()
        .await
        .map_err(|e| format!("commit: {e}"))
}

async fn worker(rec: Rec, shared: Rc<Shared>, idx: usize, seed: u64) -> turmoil::Result {
    let name = format!("worker-{idx}");
    let cluster = Cluster::new(client_config(&name, &shared.brokers));
    let clock = Clock::starting_at(EPOCH_MS + now_ms() as i64);
    let hard_stop = WORKLOAD_MS + DRAIN_BOUND_MS;
    wait_for_topic(&cluster, INPUT, hard_stop).await;
    wait_for_topic(&cluster, OUTPUT, hard_stop).await;
    let mut rng = rng::derive(seed, &name);
    let mut consumer: Option<GroupConsumer> = None;
    let mut producer: Option<Producer> = None;
    let mut n = 0u64;
    while !shared.stop.get() && now_ms() < hard_stop {
        let c = consumer.get_or_insert_with(|| {
            let mut c = GroupConsumer::new(Arc::clone(&cluster), group_config());
            c.subscribe([INPUT], None);
            c
        });
        let Some(p) = &producer else {
            producer = instance(&cluster, idx, clock).await;
            if producer.is_none() {
                sleep_ms(RETRY_MS).await;
            }
            continue;
        };
        let records = match c.poll(Duration::from_millis(POLL_MS)).await {
            Ok(r) => r,
            Err(e) => {
                note(&rec, &name, format!("poll failed: {e}"));
                sleep_ms(RETRY_MS).await;
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        for r in &records {
            record_poll(&rec, &name, r);
        }
        let label = format!("w{idx}-t{n}");
        n += 1;
        match transform(&rec, &name, (c, p), &records, &mut rng).await {
            Ok(()) => note(&rec, &name, format!("{label} committed")),
            Err(why) => {
                note(&rec, &name, format!("{label} aborts: {why}"));
                if p.abort_transaction().await.is_err() {
                    producer = None;
                }
                if let Err(e) = c.rewind_to_committed().await {
                    // Start over as a new member, from the committed offsets.
                    note(&rec, &name, format!("rewind failed: {e}"));
                    consumer = None;
                }
            }
        }
        if rng.random_bool(RESTART_P) {
            note(&rec, &name, "restarts".into());
            if let Some(c) = consumer.take() {
                c.close().await;
            }
            producer = None;
            sleep_ms(rng.random_range(100..=1_000)).await;
        }
    }
    if let Some(c) = consumer {
        c.close().await;
    }
    Ok(())
}

/// After the heal: reads the input, waits for the group to commit all of it, stops the
/// workers, then reads the committed output.
async fn observer(rec: Rec, shared: Rc<Shared>) -> turmoil::Result {
    let name = "observer";
    let deadline = WORKLOAD_MS + DRAIN_BOUND_MS;
    sleep_ms(WORKLOAD_MS.saturating_sub(now_ms())).await;
    while !shared.feeder_done.get() && now_ms() < deadline {
        sleep_ms(RETRY_MS).await;
    }
    let cluster = Cluster::new(client_config(name, &shared.brokers));
    let result = drain(&rec, &shared, &cluster, deadline).await;
    shared.stop.set(true);
    note(&rec, name, format!("drain {result:?}"));
    *shared.drained.borrow_mut() = Some(result);
    Ok(())
}

async fn drain(
    rec: &Rec,
    shared: &Shared,
    cluster: &Arc<Cluster>,
    deadline: u64,
) -> Result<(), String> {
    let name = "observer";
    if !shared.feeder_done.get() {
        return Err(format!(
            "feeder still busy {DRAIN_BOUND_MS} ms after the heal"
        ));
    }
    // Faults may have kept the feeder from creating the topics; an absent topic has no end.
    create_topic(cluster, INPUT, PARTITIONS, REPLICATION_FACTOR, deadline).await;
    create_topic(cluster, OUTPUT, PARTITIONS, REPLICATION_FACTOR, deadline).await;
    let committed_reader = ConsumerConfig {
        fetch_max_wait_ms: 250,
        isolation: Isolation::ReadCommitted,
        ..ConsumerConfig::default()
    };
    let inputs = read_to_end(
        rec,
        name,
        Arc::clone(cluster),
        committed_reader.clone(),
        &partitions(INPUT),
        deadline,
    )
    .await
    .map_err(|(_, why)| why)?;
    let ends: BTreeMap<i32, i64> = inputs
        .iter()
        .map(|(p, recs)| (*p, recs.last().map_or(0, |(o, _)| o + 1)))
        .collect();
    *shared.inputs.borrow_mut() = inputs;
    let mut group = GroupConsumer::new(Arc::clone(cluster), group_config());
    loop {
        if let Ok(c) = group.committed(&partitions(INPUT)).await {
            *shared.committed.borrow_mut() = c.iter().map(|((_, p), o)| (*p, *o)).collect();
            if ends
                .iter()
                .all(|(p, end)| c.get(&(INPUT.to_string(), *p)) >= Some(end))
            {
                note(rec, name, format!("group committed {c:?}"));
                break;
            }
        }
        if now_ms() >= deadline {
            return Err(format!(
                "the group had not consumed the input {DRAIN_BOUND_MS} ms after the heal"
            ));
        }
        sleep_ms(RETRY_MS * 5).await;
    }
    shared.stop.set(true);
    let outputs = partitions(OUTPUT);
    await_stable(rec, cluster, &outputs, deadline).await?;
    let read = read_to_end(
        rec,
        name,
        Arc::clone(cluster),
        committed_reader,
        &outputs,
        deadline,
    )
    .await;
    let (read, result) = match read {
        Ok(read) => (read, Ok(())),
        Err((read, why)) => (read, Err(why)),
    };
    *shared.outputs.borrow_mut() = read;
    result
}

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    let seed = spec.seed;
    let clients: Vec<String> = ["feeder".to_string()]
        .into_iter()
        .chain((0..WORKERS).map(|i| format!("worker-{i}")))
        .chain(["observer".to_string()])
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
    let shared = Rc::new(Shared {
        brokers: brokers.clone(),
        feeder_done: Cell::new(false),
        stop: Cell::new(false),
        inputs: RefCell::new(FinalRead::new()),
        outputs: RefCell::new(FinalRead::new()),
        committed: RefCell::new(BTreeMap::new()),
        drained: RefCell::new(None),
    });
    add_brokers(
        &mut env,
        &brokers,
        scenario_broker_config(spec.mutant.as_deref()),
    );
    let (rec, sh) = (Rc::clone(&env.rec), Rc::clone(&shared));
    env.sim.client("feeder", feeder(rec, sh, seed));
    for idx in 0..WORKERS {
        let (rec, sh) = (Rc::clone(&env.rec), Rc::clone(&shared));
        env.sim
            .client(format!("worker-{idx}"), worker(rec, sh, idx, seed));
    }
    let (rec, sh) = (Rc::clone(&env.rec), Rc::clone(&shared));
    env.sim.client("observer", observer(rec, sh));
    let outcome = env.run(&run.plan.0, WORKLOAD_MS);
    let drained = super::common::final_read_outcome(&shared.drained);
    let violations = check_ctp(
        CtpRun {
            inputs: &shared.inputs.borrow(),
            outputs: &shared.outputs.borrow(),
            committed: &shared.committed.borrow(),
            drained,
        },
        |v| v.strip_prefix("out:"),
    )
    .iter()
    .map(ToString::to_string)
    .collect();
    report(NAME, spec, &env, run.plan, outcome, violations)
}

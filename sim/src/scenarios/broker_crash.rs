//! Scenario `broker-crash`: one broker, idempotent acks=all producers, polling consumers.
//!
//! The nemesis crashes and restarts the broker (losing unsynced writes, sometimes tearing them
//! or leaving garbage), partitions it from clients (both ways and one way), holds links,
//! raises latency and makes its disk fail with EIO, at times the seed draws. Then everything
//! heals, and a final reader must see every acknowledged record, once, at its acknowledged
//! offset, within the liveness bound.

use super::common::{
    BROKER, RETRY_MS, add_broker, client_config, complete, create_topic, invoke, producer_config,
    sleep_ms, wait_for_topic,
};
use crate::checker::{FinalRead, QueueCheck, check_queue};
use crate::env::{EPOCH_MS, Env, Rec, WorldConfig, now_ms};
use crate::fault::{FaultPlan, Topology};
use crate::history::{OpKind, Outcome};
use crate::report::RunReport;
use crate::scenario::{RunSpec, replay_line};
use bytes::Bytes;
use rand::Rng;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_core::broker::{BrokerConfig, Durability};
use weir_core::client::{ClientError, Cluster, Consumer, ConsumerConfig, Producer, Record};
use weir_core::clock::Clock;
use weir_core::log::TailRecovery;
use weir_core::rng;
use weir_workloads::keys::KeyDist;
use weir_workloads::queue::QueueWorkload;

/// Deliberately broken brokers this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[
    (
        "page-cache-acks",
        "acks=all is acknowledged and readable from the page cache, before fsync",
    ),
    (
        "skip-recovery",
        "on restart the broker keeps a torn or garbled log tail instead of truncating it",
    ),
];

const TOPIC: &str = "queue";
const PARTITIONS: i32 = 3;
const PRODUCERS: usize = 2;
/// Length of the faulty phase, in simulated milliseconds.
const WORKLOAD_MS: u64 = 20_000;
/// After healing, everything acknowledged must be readable within this bound.
const DRAIN_BOUND_MS: u64 = 30_000;
/// Consumers keep polling this long after the faulty phase.
const CONSUME_TAIL_MS: u64 = 2_000;

struct Shared {
    producers_done: Cell<usize>,
    final_read: RefCell<FinalRead>,
    drained: RefCell<Option<Result<(), String>>>,
}

fn broker_config(mutant: Option<&str>) -> BrokerConfig {
    BrokerConfig {
        durability: if mutant == Some("page-cache-acks") {
            Durability::PageCache
        } else {
            Durability::Fsync
        },
        tail_recovery: if mutant == Some("skip-recovery") {
            TailRecovery::UnsafeSkip
        } else {
            TailRecovery::Check
        },
        ..super::common::broker_config()
    }
}

async fn producer_process(
    rec: Rec,
    shared: Rc<Shared>,
    idx: usize,
    seed: u64,
    workload: QueueWorkload,
) -> turmoil::Result {
    let name = format!("producer-{idx}");
    let cluster = Cluster::new(client_config(&name));
    let clock = Clock::starting_at(EPOCH_MS + now_ms() as i64);
    if idx == 0 {
        create_topic(&cluster, TOPIC, PARTITIONS, WORKLOAD_MS).await;
    }
    let mut rng = rng::derive(seed, &name);
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
        let s = workload.send(idx, n, &mut rng);
        n += 1;
        let id = invoke(
            &rec,
            &name,
            OpKind::Send {
                key: s.key.clone(),
                value: s.value.clone(),
            },
        );
        match p
            .send(Record::new(
                TOPIC,
                Some(Bytes::from(s.key)),
                Bytes::from(s.value),
            ))
            .await
        {
            Err(e) => complete(&rec, &name, id, Outcome::Fail(e.to_string())),
            Ok(delivery) => {
                let (rec, name) = (Rc::clone(&rec), name.clone());
                deliveries.push(tokio::task::spawn_local(async move {
                    let outcome = match delivery.wait().await {
                        Ok(m) => Outcome::Ok {
                            partition: m.partition,
                            offset: m.offset,
                        },
                        Err(e) => Outcome::Unknown(e.to_string()),
                    };
                    complete(&rec, &name, id, outcome);
                }));
            }
        }
        sleep_ms(workload.gap_ms(&mut rng)).await;
    }
    if let Some(p) = producer {
        p.close().await;
    }
    for d in deliveries {
        d.await?;
    }
    shared.producers_done.set(shared.producers_done.get() + 1);
    Ok(())
}

fn consumer_config() -> ConsumerConfig {
    ConsumerConfig {
        fetch_max_wait_ms: 250,
        ..ConsumerConfig::default()
    }
}

fn all_partitions() -> Vec<(String, i32)> {
    (0..PARTITIONS).map(|p| (TOPIC.to_string(), p)).collect()
}

fn value_of(r: &weir_core::client::ConsumerRecord) -> String {
    r.value
        .as_ref()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

async fn consumer_process(rec: Rec, name: String) -> turmoil::Result {
    let end = WORKLOAD_MS + CONSUME_TAIL_MS;
    let cluster = Cluster::new(client_config(&name));
    if !wait_for_topic(&cluster, TOPIC, end).await {
        return Ok(());
    }
    let mut consumer = Consumer::new(cluster, consumer_config());
    consumer.assign(all_partitions());
    while now_ms() < end {
        match consumer.poll(Duration::from_millis(250)).await {
            Ok(records) => {
                for r in records {
                    let kind = OpKind::Poll {
                        partition: r.partition,
                        offset: r.offset,
                        value: value_of(&r),
                    };
                    let at = now_ms();
                    let mut g = rec.borrow_mut();
                    g.trace.record(at, &name, format!("{kind}"));
                    g.history.instant(
                        &name,
                        kind,
                        Outcome::Ok {
                            partition: r.partition,
                            offset: r.offset,
                        },
                        at,
                    );
                }
            }
            Err(_) => sleep_ms(RETRY_MS).await,
        }
    }
    Ok(())
}

/// After the heal: waits for the producers to settle, then reads every partition from its start
/// to its end within the liveness bound.
async fn drainer(rec: Rec, shared: Rc<Shared>) -> turmoil::Result {
    let deadline = WORKLOAD_MS + DRAIN_BOUND_MS;
    sleep_ms(WORKLOAD_MS.saturating_sub(now_ms())).await;
    let result = drain(&rec, &shared, deadline).await;
    rec.borrow_mut()
        .trace
        .record(now_ms(), "drainer", format!("drain {result:?}"));
    *shared.drained.borrow_mut() = Some(result);
    Ok(())
}

async fn drain(rec: &Rec, shared: &Shared, deadline: u64) -> Result<(), String> {
    while shared.producers_done.get() < PRODUCERS {
        if now_ms() >= deadline {
            return Err(format!(
                "producers had sends still unresolved {DRAIN_BOUND_MS} ms after the heal"
            ));
        }
        sleep_ms(RETRY_MS).await;
    }
    let cluster = Cluster::new(client_config("drainer"));
    if !wait_for_topic(&cluster, TOPIC, deadline).await {
        return Err(format!(
            "topic {TOPIC} not visible {DRAIN_BOUND_MS} ms after the heal"
        ));
    }
    let mut consumer = Consumer::new(cluster, consumer_config());
    consumer.assign(all_partitions());
    let mut ends = BTreeMap::new();
    for tp in all_partitions() {
        let mut got = None;
        while got.is_none() {
            if now_ms() >= deadline {
                return Err(format!(
                    "no end offset for {}-{} {DRAIN_BOUND_MS} ms after the heal",
                    tp.0, tp.1
                ));
            }
            match consumer.list_offset(&tp, -1).await {
                Ok(end) => got = Some(end),
                Err(_) => sleep_ms(RETRY_MS).await,
            }
        }
        ends.insert(tp.1, got.expect("set above"));
    }
    rec.borrow_mut()
        .trace
        .record(now_ms(), "drainer", format!("end offsets {ends:?}"));
    let mut read: FinalRead = BTreeMap::new();
    loop {
        let behind: Vec<String> = ends
            .iter()
            .filter(|(p, end)| {
                consumer
                    .position(&(TOPIC.to_string(), **p))
                    .is_none_or(|pos| pos < **end)
            })
            .map(|(p, end)| {
                format!(
                    "p{p} at {:?} of {end}",
                    consumer.position(&(TOPIC.to_string(), *p))
                )
            })
            .collect();
        if behind.is_empty() {
            break;
        }
        if now_ms() >= deadline {
            *shared.final_read.borrow_mut() = read;
            return Err(format!(
                "acknowledged data unreadable {DRAIN_BOUND_MS} ms after the heal: {}",
                behind.join(", ")
            ));
        }
        match consumer.poll(Duration::from_millis(250)).await {
            Ok(records) => {
                for r in records {
                    if r.offset < ends[&r.partition] {
                        read.entry(r.partition)
                            .or_default()
                            .push((r.offset, value_of(&r)));
                    }
                }
            }
            Err(ClientError::Corrupt { .. }) | Err(_) => sleep_ms(RETRY_MS).await,
        }
    }
    {
        let mut g = rec.borrow_mut();
        for (p, recs) in &read {
            let summary: Vec<String> = recs.iter().map(|(o, v)| format!("{o}={v}")).collect();
            g.trace.record(
                now_ms(),
                "drainer",
                format!("final p{p}: {}", summary.join(" ")),
            );
        }
    }
    *shared.final_read.borrow_mut() = read;
    Ok(())
}

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    let seed = spec.seed;
    let mutant = spec.mutant.as_deref();
    if let Some(m) = mutant {
        assert!(MUTANTS.iter().any(|(n, _)| *n == m), "unknown mutant {m:?}");
    }
    let mut rng = rng::derive(seed, "broker-crash");
    let producers: Vec<String> = (0..PRODUCERS).map(|i| format!("producer-{i}")).collect();
    let clients: Vec<String> = producers
        .iter()
        .cloned()
        .chain(["consumer-0".to_string(), "drainer".to_string()])
        .collect();
    let topo = Topology {
        servers: vec![BROKER.to_string()],
        clients,
    };
    let (plan, mix) = match &spec.plan {
        Some(p) => (p.clone(), None),
        None => {
            let (p, m) = FaultPlan::swarm(&mut rng, &topo, WORKLOAD_MS);
            (p, Some(m))
        }
    };
    let torn = mix.as_ref().is_none_or(|m| m.torn_writes);
    let world = WorldConfig {
        torn_block_bytes: torn.then_some(512),
        sync_latency_ms: (0, rng.random_range(1..=8)),
        limit_ms: WORKLOAD_MS + DRAIN_BOUND_MS + 10_000,
    };
    let workload = QueueWorkload {
        keys: if rng.random_bool(0.5) {
            KeyDist::Uniform { n: 16 }
        } else {
            KeyDist::Zipf { n: 16, s: 1.1 }
        },
        send_gap_ms_min: 2,
        send_gap_ms_max: 20,
    };
    let mut env = Env::new(seed, topo, &world);
    let shared = Rc::new(Shared {
        producers_done: Cell::new(0),
        final_read: RefCell::new(BTreeMap::new()),
        drained: RefCell::new(None),
    });

    add_broker(&mut env, broker_config(mutant));
    for idx in 0..PRODUCERS {
        let (rec, shared, w) = (Rc::clone(&env.rec), Rc::clone(&shared), workload.clone());
        env.sim.client(
            format!("producer-{idx}"),
            producer_process(rec, shared, idx, seed, w),
        );
    }
    env.sim.client(
        "consumer-0",
        consumer_process(Rc::clone(&env.rec), "consumer-0".into()),
    );
    env.sim
        .client("drainer", drainer(Rc::clone(&env.rec), Rc::clone(&shared)));

    let outcome = env.run(&plan, WORKLOAD_MS);
    let sim_ms = env.sim.elapsed().as_millis() as u64;
    let drained = shared
        .drained
        .borrow_mut()
        .take()
        .unwrap_or_else(|| Err("the final read did not finish".into()));
    let final_read = shared.final_read.borrow().clone();
    let rec = env.rec.borrow();
    let mut violations: Vec<String> = check_queue(&QueueCheck {
        history: &rec.history,
        final_read: &final_read,
        drained,
    })
    .iter()
    .map(ToString::to_string)
    .collect();
    if let Err(e) = outcome {
        violations.insert(0, format!("simulation stopped: {e}"));
    }
    let spec_for_replay = RunSpec {
        seed,
        plan: spec.plan.clone(),
        mutant: spec.mutant.clone(),
    };
    RunReport {
        scenario: "broker-crash".into(),
        seed,
        mutant: spec.mutant.clone(),
        passed: violations.is_empty(),
        violations,
        trace_hash: format!("{:016x}", rec.trace.hash()),
        sim_ms,
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
        replay: replay_line("broker-crash", &spec_for_replay),
        trace: rec.trace.events().to_vec(),
    }
}

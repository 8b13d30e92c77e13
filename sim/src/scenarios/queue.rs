//! The queue scenarios' shared body: idempotent acks=all producers send unique values under
//! keys, a consumer polls, the nemesis runs the seed's fault plan against the brokers, and after
//! the heal a final reader must see every acknowledged record, once, at its acknowledged offset,
//! within the liveness bound. Each queue scenario is a cluster shape, broker settings and the
//! mutants it must catch.

use super::common::{
    DRAIN_BOUND_MS, RETRY_MS, add_brokers, client_config, complete, create_topic, invoke,
    producer_config, read_to_end, record_poll, report, setup, sleep_ms, wait_for_topic,
};
use crate::checker::{FinalRead, QueueCheck, check_queue};
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
use weir_core::broker::BrokerConfig;
use weir_core::client::{Cluster, Consumer, ConsumerConfig, Producer, Record};
use weir_core::clock::Clock;
use weir_core::rng;
use weir_workloads::keys::KeyDist;
use weir_workloads::queue::QueueWorkload;

/// A queue scenario: the cluster, its settings, and the broken variants it must catch.
pub(crate) struct QueueScenario {
    /// Stable name.
    pub name: &'static str,
    /// Brokers in the cluster.
    pub brokers: usize,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Replicas of each partition.
    pub replication_factor: i16,
    /// Deliberately broken variants: (name, what is broken).
    pub mutants: &'static [(&'static str, &'static str)],
    /// The brokers' settings, for a mutant or none.
    pub broker_config: fn(Option<&str>) -> BrokerConfig,
}

const TOPIC: &str = "queue";
const PRODUCERS: usize = 2;
/// Length of the faulty phase, in simulated milliseconds.
const WORKLOAD_MS: u64 = 20_000;
/// Consumers keep polling this long after the faulty phase.
const CONSUME_TAIL_MS: u64 = 2_000;

struct Shared {
    brokers: Vec<String>,
    partitions: i32,
    replication_factor: i16,
    producers_done: Cell<usize>,
    final_read: RefCell<FinalRead>,
    drained: RefCell<Option<Result<(), String>>>,
}

async fn producer_process(
    rec: Rec,
    shared: Rc<Shared>,
    idx: usize,
    seed: u64,
    workload: QueueWorkload,
) -> turmoil::Result {
    let name = format!("producer-{idx}");
    let cluster = Cluster::new(client_config(&name, &shared.brokers));
    let clock = Clock::starting_at(EPOCH_MS + now_ms() as i64);
    if idx == 0 {
        create_topic(
            &cluster,
            TOPIC,
            shared.partitions,
            shared.replication_factor,
            WORKLOAD_MS,
        )
        .await;
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

fn all_partitions(partitions: i32) -> Vec<(String, i32)> {
    (0..partitions).map(|p| (TOPIC.to_string(), p)).collect()
}

async fn consumer_process(rec: Rec, shared: Rc<Shared>, name: String) -> turmoil::Result {
    let end = WORKLOAD_MS + CONSUME_TAIL_MS;
    let cluster = Cluster::new(client_config(&name, &shared.brokers));
    if !wait_for_topic(&cluster, TOPIC, end).await {
        return Ok(());
    }
    let mut consumer = Consumer::new(cluster, consumer_config());
    consumer.assign(all_partitions(shared.partitions));
    while now_ms() < end {
        match consumer.poll(Duration::from_millis(250)).await {
            Ok(records) => {
                for r in &records {
                    record_poll(&rec, &name, r);
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
    let cluster = Cluster::new(client_config("drainer", &shared.brokers));
    // Faults can keep the producers from creating the topic at all; creating it here still
    // proves the healed cluster answers (and finds nothing acknowledged missing).
    create_topic(
        &cluster,
        TOPIC,
        shared.partitions,
        shared.replication_factor,
        deadline,
    )
    .await;
    if !wait_for_topic(&cluster, TOPIC, deadline).await {
        return Err(format!(
            "topic {TOPIC} not visible {DRAIN_BOUND_MS} ms after the heal"
        ));
    }
    let read = read_to_end(
        rec,
        "drainer",
        cluster,
        consumer_config(),
        &all_partitions(shared.partitions),
        deadline,
    )
    .await;
    match read {
        Ok(read) => {
            *shared.final_read.borrow_mut() = read;
            Ok(())
        }
        Err((read, why)) => {
            *shared.final_read.borrow_mut() = read;
            Err(why)
        }
    }
}

/// Runs one seed of `scenario`.
pub(crate) fn run(scenario: &QueueScenario, spec: &RunSpec) -> RunReport {
    let seed = spec.seed;
    let producers: Vec<String> = (0..PRODUCERS).map(|i| format!("producer-{i}")).collect();
    let clients: Vec<String> = producers
        .iter()
        .cloned()
        .chain(["consumer-0".to_string(), "drainer".to_string()])
        .collect();
    let mut run = setup(
        spec,
        (scenario.name, scenario.mutants),
        scenario.brokers,
        clients,
        (WORKLOAD_MS, DRAIN_BOUND_MS),
    );
    let (rng, brokers) = (&mut run.rng, &run.brokers);
    let workload = QueueWorkload {
        keys: if rng.random_bool(0.5) {
            KeyDist::Uniform { n: 16 }
        } else {
            KeyDist::Zipf { n: 16, s: 1.1 }
        },
        send_gap_ms_min: 2,
        send_gap_ms_max: 20,
    };
    let mut env = Env::new(seed, run.topo, &run.world);
    let shared = Rc::new(Shared {
        brokers: brokers.clone(),
        partitions: scenario.partitions,
        replication_factor: scenario.replication_factor,
        producers_done: Cell::new(0),
        final_read: RefCell::new(BTreeMap::new()),
        drained: RefCell::new(None),
    });

    add_brokers(
        &mut env,
        brokers,
        (scenario.broker_config)(spec.mutant.as_deref()),
    );
    for idx in 0..PRODUCERS {
        let (rec, shared, w) = (Rc::clone(&env.rec), Rc::clone(&shared), workload.clone());
        env.sim.client(
            format!("producer-{idx}"),
            producer_process(rec, shared, idx, seed, w),
        );
    }
    env.sim.client(
        "consumer-0",
        consumer_process(Rc::clone(&env.rec), Rc::clone(&shared), "consumer-0".into()),
    );
    env.sim
        .client("drainer", drainer(Rc::clone(&env.rec), Rc::clone(&shared)));

    let outcome = env.run(&run.plan.0, WORKLOAD_MS);
    let drained = shared
        .drained
        .borrow_mut()
        .take()
        .unwrap_or_else(|| Err("the final read did not finish".into()));
    let final_read = shared.final_read.borrow().clone();
    let violations = check_queue(&QueueCheck {
        history: &env.rec.borrow().history,
        final_read: &final_read,
        drained,
    })
    .iter()
    .map(ToString::to_string)
    .collect();
    report(scenario.name, spec, &env, run.plan, outcome, violations)
}

//! The queue scenarios' shared body: idempotent acks=all producers send unique values under
//! keys, a consumer polls, the nemesis runs the seed's fault plan against the brokers, and after
//! the heal a final reader must see every acknowledged record, once, at its acknowledged offset,
//! within the liveness bound. Each queue scenario is a cluster shape, broker settings and the
//! mutants it must catch.

use super::common::{
    DRAIN_BOUND_MS, Process, RETRY_MS, Target, add_brokers, complete, create_topic, invoke,
    producer_config, read_to_end, record_poll, report, setup, sleep_ms, wait_for_topic,
};
use crate::checker::{FinalRead, QueueCheck, check_queue};
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
use std::time::Duration;
use weir_broker::BrokerConfig;
use weir_client::{Cluster, Consumer, ConsumerConfig, Producer, ProducerConfig, Record};
use weir_seams::rng;
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

/// What the queue workload's clients share.
pub(crate) struct Shared {
    target: Target,
    topic: String,
    producer: ProducerConfig,
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
    let (target, topic) = (&shared.target, shared.topic.as_str());
    let cluster = Cluster::new(target.client(&name));
    let clock = target.clock();
    if idx == 0 {
        create_topic(
            &cluster,
            topic,
            shared.partitions,
            shared.replication_factor,
            target.workload_ms,
        )
        .await;
    }
    let mut rng = rng::derive(seed, &name);
    let mut deliveries = Vec::new();
    let mut producer = None;
    let mut n = 0u64;
    while now_ms() < target.workload_ms {
        let Some(p) = &producer else {
            match Producer::new(Arc::clone(&cluster), shared.producer.clone(), clock).await {
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
                topic,
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

async fn consumer_process(rec: Rec, shared: Rc<Shared>, name: String) -> turmoil::Result {
    let end = shared.target.workload_ms + CONSUME_TAIL_MS;
    let cluster = Cluster::new(shared.target.client(&name));
    if !wait_for_topic(&cluster, &shared.topic, end).await {
        return Ok(());
    }
    let mut consumer = Consumer::new(cluster, consumer_config());
    consumer.assign(shared.all_partitions());
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
    let workload_ms = shared.target.workload_ms;
    let deadline = workload_ms + DRAIN_BOUND_MS;
    sleep_ms(workload_ms.saturating_sub(now_ms())).await;
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
    let cluster = Cluster::new(shared.target.client("drainer"));
    let topic = &shared.topic;
    // Faults can keep the producers from creating the topic at all; creating it here still
    // proves the healed cluster answers (and finds nothing acknowledged missing).
    create_topic(
        &cluster,
        topic,
        shared.partitions,
        shared.replication_factor,
        deadline,
    )
    .await;
    if !wait_for_topic(&cluster, topic, deadline).await {
        return Err(format!(
            "topic {topic} not visible {DRAIN_BOUND_MS} ms after the heal"
        ));
    }
    let read = read_to_end(
        rec,
        "drainer",
        cluster,
        consumer_config(),
        &shared.all_partitions(),
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
    let shared = Rc::new(Shared::new(
        Target::sim(brokers, WORKLOAD_MS),
        producer_config(10_000),
        scenario.partitions,
        scenario.replication_factor,
    ));
    add_brokers(
        &mut env,
        brokers,
        (scenario.broker_config)(spec.mutant.as_deref()),
    );
    for (name, process) in processes(&env.rec, &shared, seed, &workload) {
        env.sim.client(name, process);
    }
    let outcome = env.run(&run.plan.0, WORKLOAD_MS);
    let violations = shared.verdict(&env.rec.borrow().history);
    report(scenario.name, spec, &env, run.plan, outcome, violations)
}

impl Shared {
    /// The shared state of a run on `target`, whose producers use `producer`.
    pub(crate) fn new(
        target: Target,
        producer: ProducerConfig,
        partitions: i32,
        replication_factor: i16,
    ) -> Self {
        Self {
            topic: target.name(TOPIC),
            target,
            producer,
            partitions,
            replication_factor,
            producers_done: Cell::new(0),
            final_read: RefCell::new(BTreeMap::new()),
            drained: RefCell::new(None),
        }
    }

    fn all_partitions(&self) -> Vec<(String, i32)> {
        (0..self.partitions)
            .map(|p| (self.topic.clone(), p))
            .collect()
    }

    /// The run's topic.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// The violations the queue checkers find in `history` and the final read.
    pub(crate) fn verdict(&self, history: &crate::history::History) -> Vec<String> {
        let drained = super::common::final_read_outcome(&self.drained);
        let final_read = self.final_read.borrow().clone();
        check_queue(&QueueCheck {
            history,
            final_read: &final_read,
            drained,
        })
        .iter()
        .map(ToString::to_string)
        .collect()
    }
}

/// The workload's client processes, by name: the producers, a consumer and the drainer.
pub(crate) fn processes(
    rec: &Rec,
    shared: &Rc<Shared>,
    seed: u64,
    workload: &QueueWorkload,
) -> Vec<(String, Process)> {
    let mut out: Vec<(String, Process)> = Vec::new();
    for idx in 0..PRODUCERS {
        let (rec, shared, w) = (Rc::clone(rec), Rc::clone(shared), workload.clone());
        out.push((
            format!("producer-{idx}"),
            Box::pin(producer_process(rec, shared, idx, seed, w)),
        ));
    }
    out.push((
        "consumer-0".into(),
        Box::pin(consumer_process(
            Rc::clone(rec),
            Rc::clone(shared),
            "consumer-0".into(),
        )),
    ));
    out.push((
        "drainer".into(),
        Box::pin(drainer(Rc::clone(rec), Rc::clone(shared))),
    ));
    out
}

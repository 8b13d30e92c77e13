//! The distributed runtime under crashes, in the simulator: a job manager and three task
//! managers run a job with a keyed window and a keyed two-input operator while task managers
//! and the job manager crash and restart. What the collecting sinks committed must be exactly
//! what local mode computes from the same input, once. Each seed also runs twice, and the two
//! runs must agree event for event.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};
use weir_engine::runtime::rpc::{JOB_MANAGER_PORT, ask};
use weir_engine::runtime::{
    Alignment, CheckpointConfig, JobConfig, JobEvent, JobManagerConfig, JobState,
    TaskManagerConfig, Throttle, ToClient, ToJobManager, run_job_manager, run_task_manager,
};
use weir_engine::state::{CountSum, MapStateDescriptor, StateError, ValueStateDescriptor};
use weir_engine::{
    CollectSink, Collected, Job, KeyedCoProcessFunction, KeyedContext, StreamEnv, TimeDomain,
    WatermarkStrategy, WindowAssigner, Windowed,
};
use weir_seams::clock::Clock;
use weir_seams::disk::{Disk, DiskFaults};
use weir_seams::net::Net;
use weir_seams::rng;

const EPOCH_MS: i64 = 1_700_000_000_000;
const TASK_MANAGERS: usize = 3;
/// Simulated time the crashes strike in.
const FAULT_MS: u64 = 4_000;
/// The job must have finished by then.
const LIMIT_MS: u64 = 60_000;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Order {
    id: u32,
    customer: u32,
    ts: i64,
    cents: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Limit {
    customer: u32,
    cents: i64,
}

/// Orders of a customer above that customer's limit. An order waits in keyed state until the
/// watermark passes it, so the limit it is checked against does not depend on how the two
/// inputs interleave: the limits' watermark holds the operator back until they are all read.
#[derive(Clone)]
struct OverLimit;
const LIMIT: ValueStateDescriptor<i64> = ValueStateDescriptor::new("limit");
const WAITING: MapStateDescriptor<i64, Vec<Order>> = MapStateDescriptor::new("waiting");

impl KeyedCoProcessFunction<u32, Order, Limit, (u32, u32)> for OverLimit {
    fn process_element1(
        &mut self,
        o: Order,
        ctx: &mut KeyedContext<'_, u32, (u32, u32)>,
    ) -> Result<(), StateError> {
        let mut waiting = ctx.map(&WAITING)?;
        let mut at = waiting.get(&o.ts)?.unwrap_or_default();
        let ts = o.ts;
        at.push(o);
        waiting.put(&ts, &at)?;
        ctx.register_event_time_timer(ts);
        Ok(())
    }

    fn process_element2(
        &mut self,
        l: Limit,
        ctx: &mut KeyedContext<'_, u32, (u32, u32)>,
    ) -> Result<(), StateError> {
        ctx.value(&LIMIT)?.update(&l.cents)
    }

    fn on_timer(
        &mut self,
        at: i64,
        _domain: TimeDomain,
        ctx: &mut KeyedContext<'_, u32, (u32, u32)>,
    ) -> Result<(), StateError> {
        let limit = ctx.value(&LIMIT)?.get()?;
        let orders = ctx.map(&WAITING)?.get(&at)?.unwrap_or_default();
        ctx.map(&WAITING)?.remove(&at)?;
        for o in orders {
            if limit.is_some_and(|l| o.cents > l) {
                ctx.emit((o.customer, o.id));
            }
        }
        Ok(())
    }
}

type Totals = Windowed<u32, (u64, i64)>;

/// The job, with the handles that read what it committed.
fn job(orders: &[Order], limits: &[Limit]) -> (Job, Collected<Totals>, Collected<(u32, u32)>) {
    let env = StreamEnv::new("runtime-faults");
    env.set_parallelism(2);
    let orders = env
        .from_collection(
            orders.to_vec(),
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(50))
                .with_timestamp_assigner(|o: &Order, _| o.ts),
        )
        .uid("orders");
    let limits = env
        .from_collection(
            limits.to_vec(),
            WatermarkStrategy::for_monotonous_timestamps(),
        )
        .uid("limits")
        .set_parallelism(1);
    let totals = orders
        .filter(|o| o.cents > 0)
        .key_by(|o: &Order| o.customer)
        .window(WindowAssigner::tumbling(Duration::from_millis(200)))
        .aggregate(CountSum::new(|o: &Order| o.cents))
        .uid("totals");
    let (sink, collected_totals) = CollectSink::new();
    totals.sink_to(sink).uid("totals-sink");
    let flagged = orders
        .connect(&limits)
        .key_by(|o: &Order| o.customer, |l: &Limit| l.customer)
        .process(OverLimit)
        .uid("over-limit");
    let (sink, collected_flags) = CollectSink::new();
    flagged.sink_to(sink).uid("flags-sink");
    (env.build().unwrap(), collected_totals, collected_flags)
}

fn input(seed: u64) -> (Vec<Order>, Vec<Limit>) {
    let mut r = rng::derive(seed, "runtime-faults/input");
    let orders = (0..1_200u32)
        .map(|id| Order {
            id,
            customer: r.random_range(0..8),
            ts: i64::from(id) * 3 + r.random_range(0..40),
            cents: r.random_range(0..1_000),
        })
        .collect();
    let limits = (0..8)
        .map(|customer| Limit {
            customer,
            cents: 500,
        })
        .collect();
    (orders, limits)
}

/// What one run committed, and what happened on the way.
#[derive(Debug, PartialEq)]
struct Outcome {
    totals: Vec<Totals>,
    flags: Vec<(u32, u32)>,
    events: Vec<String>,
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn run(seed: u64) -> Outcome {
    let (orders, limits) = input(seed);
    let (job, totals, flags) = job(&orders, &limits);
    let job = Rc::new(job);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS as u64))
        .simulation_duration(Duration::from_millis(LIMIT_MS))
        .tick_duration(Duration::from_millis(1))
        .build();
    let mut config = JobConfig::new(job.topology().clone(), Vec::new());
    config.checkpoint = CheckpointConfig {
        interval_ms: 200,
        timeout_ms: 3_000,
        ..CheckpointConfig::default()
    };
    config.heartbeat_timeout_ms = 1_000;
    let mut r = rng::derive(seed, "runtime-faults/plan");
    if r.random_bool(0.5) {
        config.checkpoint.alignment = Alignment::Unaligned;
    }
    let events = Rc::new(RefCell::new(Vec::new()));
    let jm_disk = DiskFaults::new(rng::derive(seed, "disk/jm"));
    {
        let (config, events, jm_disk) = (config.clone(), Rc::clone(&events), jm_disk.clone());
        sim.host("jm", move || {
            let jm = JobManagerConfig {
                listen: format!("0.0.0.0:{JOB_MANAGER_PORT}"),
                net: Net::Sim,
                job: config.clone(),
                savepoint: None,
            };
            let (disk, events) = (Disk::sim("/jm", jm_disk.clone()), Rc::clone(&events));
            let hook = Rc::new(move |e: &JobEvent| events.borrow_mut().push(format!("{e:?}")));
            async move {
                let Err(e) = run_job_manager(jm, disk, Some(hook)).await;
                Err(e.into())
            }
        });
    }
    for i in 0..TASK_MANAGERS {
        let name = format!("tm-{i}");
        let (job, config) = (Rc::clone(&job), config.clone());
        // Slow rows down so that the job runs through the crashes.
        let throttle = Throttle::default();
        throttle.set_row_delay_us(1_500);
        sim.host(name.clone().as_str(), move || {
            let tm = TaskManagerConfig {
                name: name.clone(),
                host: name.clone(),
                job_manager: format!("jm:{JOB_MANAGER_PORT}"),
                slots: 3,
                net: Net::Sim,
                clock: Clock::starting_at(EPOCH_MS),
                heartbeat_interval_ms: config.heartbeat_interval_ms,
                heartbeat_timeout_ms: config.heartbeat_timeout_ms,
                control_frame_bytes_max: config.control_frame_bytes_max,
                throttle: throttle.clone(),
                job: Rc::clone(&job),
                tables: Default::default(),
            };
            async move {
                run_task_manager(tm, None).await;
                Ok(())
            }
        });
    }
    let finished = Rc::new(RefCell::new(None));
    {
        let finished = Rc::clone(&finished);
        sim.client("observer", async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let status = tokio::time::timeout(
                    Duration::from_millis(1_000),
                    ask(
                        Net::Sim,
                        &format!("jm:{JOB_MANAGER_PORT}"),
                        &ToJobManager::Status,
                        1 << 20,
                    ),
                )
                .await;
                if let Ok(Ok(ToClient::Status { state, failure, .. })) = status {
                    match state {
                        JobState::Finished => break,
                        JobState::Failed => panic!("the job failed: {failure:?}"),
                        _ => {}
                    }
                }
            }
            *finished.borrow_mut() = Some(());
            Ok(())
        });
    }
    // Crashes: each a host down for a while, task managers and the job manager alike.
    let mut plan: Vec<(u64, String, u64)> = (0..r.random_range(2..5))
        .map(|_| {
            let host = if r.random_bool(0.25) {
                "jm".to_string()
            } else {
                format!("tm-{}", r.random_range(0..TASK_MANAGERS))
            };
            (
                r.random_range(100..FAULT_MS),
                host,
                r.random_range(100..1_500),
            )
        })
        .collect();
    // One crash early enough that it always strikes before the job can finish.
    plan[0].0 = r.random_range(100..800);
    plan.sort();
    let mut down: Vec<(u64, String)> = Vec::new();
    let mut ms = 0u64;
    while finished.borrow().is_none() {
        for (at, host, for_ms) in &plan {
            if *at == ms && !down.iter().any(|(_, h)| h == host) {
                events.borrow_mut().push(format!("{ms} crash {host}"));
                if host == "jm" {
                    jm_disk.crashed(false);
                }
                crash_silently(&mut sim, host);
                down.push((ms + for_ms, host.clone()));
            }
        }
        down.retain(|(until, host)| {
            if *until == ms {
                sim.bounce(host.as_str());
            }
            *until != ms
        });
        sim.step().expect("the simulation runs");
        ms += 1;
        assert!(
            ms < LIMIT_MS,
            "the job did not finish within {LIMIT_MS} ms: {:#?}",
            events.borrow()
        );
    }
    let events = events.borrow().clone();
    Outcome {
        totals: sorted(totals.values()),
        flags: sorted(flags.values()),
        events,
    }
}

/// Crashes `host` as a machine dies, sending nothing on the way down. turmoil drops a crashed
/// host's sockets in an order that follows tokio's process-wide task ids, and each would send
/// a close with a latency drawn from the run's RNG; cutting the host's links for the instant
/// of the crash keeps a run independent of what ran before it in the process.
fn crash_silently(sim: &mut turmoil::Sim<'_>, host: &str) {
    let others: Vec<String> = ["jm".to_string(), "observer".to_string()]
        .into_iter()
        .chain((0..TASK_MANAGERS).map(|i| format!("tm-{i}")))
        .filter(|h| h != host)
        .collect();
    for o in &others {
        sim.partition_oneway(host, o.as_str());
    }
    sim.crash(host);
    for o in &others {
        sim.repair_oneway(host, o.as_str());
    }
}

/// What local mode commits for the same input: the oracle.
async fn expected(seed: u64) -> (Vec<Totals>, Vec<(u32, u32)>) {
    let (orders, limits) = input(seed);
    let (job, totals, flags) = job(&orders, &limits);
    job.local(Clock::starting_at(EPOCH_MS), None)
        .unwrap()
        .run()
        .await
        .unwrap();
    (sorted(totals.values()), sorted(flags.values()))
}

fn seeds() -> u64 {
    std::env::var("WEIR_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(4, |n: u64| n.max(1))
}

#[test]
fn crashes_of_task_managers_and_the_job_manager_lose_and_repeat_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for seed in 0..seeds() {
        let outcome = run(seed);
        let (totals, flags) = rt.block_on(expected(seed));
        assert!(!totals.is_empty() && !flags.is_empty());
        assert_eq!(outcome.totals, totals, "seed {seed}: window totals");
        assert_eq!(outcome.flags, flags, "seed {seed}: flagged orders");
        assert!(
            outcome.events.iter().any(|e| e.contains("crash")),
            "seed {seed}: faults struck"
        );
        if seed == 0 {
            let again = run(seed);
            assert_eq!(
                again.events, outcome.events,
                "the same seed replays the same run"
            );
            assert_eq!(again, outcome, "the same seed commits the same output");
        }
    }
}

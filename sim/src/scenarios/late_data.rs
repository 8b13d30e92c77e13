//! Scenario `late-data`: a stream job reads keyed events with designed disorder from a broker
//! topic and computes tumbling-window counts and sums with allowed lateness and a late-data
//! side output, while the nemesis delays, holds and partitions the network and crashes the
//! broker.
//!
//! The checker replays what the job's source read, in the order it read it, through an oracle
//! written apart from the engine, and compares every window firing, every late firing and every
//! late-output record. It also checks that the source read every acknowledged event exactly
//! once, and that the designed disorder held: on-time events were never late, events within
//! the allowed lateness fired their window again, and later ones went to the side output.

use super::common::{
    RETRY_MS, add_brokers, broker_config, broker_names, client_config, complete, create_topic,
    faults_and_world, invoke, note, producer_config, report, sleep_ms, wait_for_topic,
};
use crate::env::{EPOCH_MS, Env, Rec, now_ms};
use crate::fault::Topology;
use crate::history::{OpKind, Outcome};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use bytes::Bytes;
use rand::Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use weir_client::{Producer, Record};
use weir_engine::{CollectSink, KafkaSource, OperatorMutation, StreamEnv, WatermarkStrategy};
use weir_seams::clock::Clock;
use weir_seams::rng;
use weir_workloads::late_data::{
    Event, Timing, WindowResult, check_design, compare, generate, job, oracle,
};

/// Deliberately broken engines this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[(
    "window-off-by-one",
    "a record exactly at a window start lands in the window before",
)];

const TOPIC: &str = "events";
const TIMING: Timing = Timing {
    window_ms: 10_000,
    bound_ms: 2_000,
    lateness_ms: 5_000,
};
const EVENTS: usize = 1_200;
const KEYS: u32 = 6;
/// Event time of the first event.
const EVENT_TIME_START: i64 = 1_000_000;
/// Faults strike during this phase, in simulated milliseconds.
const FAULT_MS: u64 = 20_000;
/// After the heal the job must have finished within this bound.
const FINISH_BOUND_MS: u64 = 30_000;

/// The value that ends the input, written once every send has settled.
const END_MARKER: &str = "END";

#[derive(Default)]
struct Shared {
    /// Acknowledged events: offset -> id.
    acked: BTreeMap<i64, u64>,
    /// What the job read, in order.
    reads: Vec<Event>,
    results: Vec<WindowResult>,
    late: Vec<Event>,
    job: Option<Result<(), String>>,
}

async fn producer(rec: Rec, shared: Rc<RefCell<Shared>>, seed: u64) -> turmoil::Result {
    let name = "producer";
    let cluster = weir_client::Cluster::new(client_config(name, &broker_names(1)));
    // Faults may keep the topic from being created until they heal.
    create_topic(&cluster, TOPIC, 1, 1, FAULT_MS + FINISH_BOUND_MS).await;
    let events = generate(
        &mut rng::derive(seed, "late-data/events"),
        TIMING,
        EVENTS,
        KEYS,
        EVENT_TIME_START,
    );
    let mut gaps = rng::derive(seed, "late-data/gaps");
    let clock = Clock::starting_at(EPOCH_MS + now_ms() as i64);
    let producer = loop {
        match Producer::new(Arc::clone(&cluster), producer_config(60_000), clock).await {
            Ok(p) => break p,
            Err(_) => sleep_ms(RETRY_MS).await,
        }
    };
    let mut deliveries = Vec::new();
    for e in events {
        let id = invoke(
            &rec,
            name,
            OpKind::Send {
                key: e.key.to_string(),
                value: e.id.to_string(),
            },
        );
        let value = Bytes::from(serde_json::to_vec(&e).expect("events serialize"));
        let record = Record {
            topic: TOPIC.into(),
            partition: Some(0),
            key: Some(Bytes::from(e.key.to_string())),
            value: Some(value),
            ..Default::default()
        };
        match producer.send(record).await {
            Err(err) => complete(&rec, name, id, Outcome::Fail(err.to_string())),
            Ok(d) => {
                let (rec, shared, event_id) = (Rc::clone(&rec), Rc::clone(&shared), e.id);
                deliveries.push(tokio::task::spawn_local(async move {
                    let outcome = match d.wait().await {
                        Ok(m) => {
                            shared.borrow_mut().acked.insert(m.offset, event_id);
                            Outcome::Ok {
                                partition: m.partition,
                                offset: m.offset,
                            }
                        }
                        Err(err) => Outcome::Unknown(err.to_string()),
                    };
                    complete(&rec, name, id, outcome);
                }));
            }
        }
        sleep_ms(gaps.random_range(10..=25)).await;
    }
    for d in deliveries {
        d.await?;
    }
    loop {
        let marker = Record {
            partition: Some(0),
            ..Record::new(
                TOPIC,
                None::<Bytes>,
                Bytes::from_static(END_MARKER.as_bytes()),
            )
        };
        let acked = match producer.send(marker).await {
            Ok(d) => d.wait().await.is_ok(),
            Err(_) => false,
        };
        if acked {
            break;
        }
        sleep_ms(RETRY_MS).await;
    }
    producer.close().await;
    note(&rec, name, "input ended".into());
    Ok(())
}

async fn stream_job(
    rec: Rec,
    shared: Rc<RefCell<Shared>>,
    mutation: Option<OperatorMutation>,
) -> turmoil::Result {
    let name = "job";
    let cluster = weir_client::Cluster::new(client_config(name, &broker_names(1)));
    let deadline = FAULT_MS + FINISH_BOUND_MS;
    if !wait_for_topic(&cluster, TOPIC, deadline).await {
        shared.borrow_mut().job = Some(Err("the input topic never appeared".into()));
        return Ok(());
    }
    let env = StreamEnv::new("late-data");
    let strategy = WatermarkStrategy::for_bounded_out_of_orderness(
        std::time::Duration::from_millis(TIMING.bound_ms as u64),
    )
    .with_timestamp_assigner(|e: &Event, _| e.ts);
    let (reads, r) = (Rc::clone(&shared), Rc::clone(&rec));
    let events = env
        .from_source(
            KafkaSource::json(TOPIC).bounded_by_marker(END_MARKER),
            strategy,
        )
        .process(move |e: Event, ctx| {
            note(
                &r,
                "job",
                format!("read id {} key {} ts {}", e.id, e.key, e.ts),
            );
            reads.borrow_mut().reads.push(e.clone());
            ctx.emit(e);
        });
    let (windows, late) = job(&events, TIMING);
    let (sink, window_results) = CollectSink::new();
    windows.sink_to(sink);
    let (sink, late_events) = CollectSink::new();
    late.sink_to(sink);
    let clock = Clock::starting_at(EPOCH_MS + now_ms() as i64);
    let outcome = match env
        .build()
        .map_err(|e| e.to_string())
        .and_then(|built| built.local_on(Some(cluster), clock, mutation))
    {
        Err(e) => Err(e),
        Ok(mut run) => loop {
            if now_ms() >= deadline {
                break Err(format!(
                    "the job had not finished {FINISH_BOUND_MS} ms after the heal"
                ));
            }
            match run.step().await {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) => break Err(e),
            }
        },
    };
    for w in window_results.values() {
        note(
            &rec,
            name,
            format!(
                "fired key {} [{}, {}) = {:?}",
                w.key, w.window.start, w.window.end, w.value
            ),
        );
    }
    for e in late_events.values() {
        note(&rec, name, format!("late id {}", e.id));
    }
    let mut s = shared.borrow_mut();
    s.results = window_results.values();
    s.late = late_events.values();
    s.job = Some(outcome);
    Ok(())
}

/// Every acknowledged event was read exactly once, in the order of its offset, and nothing
/// was read twice.
fn check_reads(s: &Shared) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for e in &s.reads {
        if !seen.insert(e.id) {
            out.push(format!("event {} was read twice", e.id));
        }
    }
    let acked: Vec<u64> = s.acked.values().copied().collect();
    let read_acked: Vec<u64> = s
        .reads
        .iter()
        .map(|e| e.id)
        .filter(|id| acked.contains(id))
        .collect();
    for id in acked.iter().filter(|id| !seen.contains(id)) {
        out.push(format!("acknowledged event {id} was never read"));
    }
    if out.is_empty() && read_acked != acked {
        out.push("the acknowledged events were read out of their offset order".into());
    }
    out
}

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    let seed = spec.seed;
    let mutation = match spec.mutant.as_deref() {
        None => None,
        Some("window-off-by-one") => Some(OperatorMutation::WindowOffByOne),
        Some(m) => panic!("unknown mutant {m:?}"),
    };
    let mut rng = rng::derive(seed, "late-data");
    let topo = Topology {
        servers: broker_names(1),
        clients: vec!["producer".into(), "job".into()],
    };
    let (plan, mix, world) = faults_and_world(
        spec,
        &mut rng,
        &topo,
        FAULT_MS,
        FAULT_MS + FINISH_BOUND_MS + 10_000,
    );
    let mut env = Env::new(seed, topo, &world);
    let shared = Rc::new(RefCell::new(Shared::default()));
    add_brokers(&mut env, &broker_names(1), broker_config());
    env.sim.client(
        "producer",
        producer(Rc::clone(&env.rec), Rc::clone(&shared), seed),
    );
    env.sim.client(
        "job",
        stream_job(Rc::clone(&env.rec), Rc::clone(&shared), mutation),
    );
    let outcome = env.run(&plan, FAULT_MS);
    let s = shared.borrow();
    let mut violations = Vec::new();
    match &s.job {
        Some(Ok(())) => {
            let reads: Vec<(u32, Event)> = s.reads.iter().map(|e| (0, e.clone())).collect();
            let expected = oracle(TIMING, &[0], &reads);
            violations.extend(check_reads(&s));
            violations.extend(compare(&expected, &s.results, &s.late));
            violations.extend(check_design(&expected, &reads));
        }
        Some(Err(e)) => violations.push(format!("liveness: {e}")),
        None => violations.push("liveness: the job never finished".into()),
    }
    report("late-data", spec, &env, (plan, mix), outcome, violations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_workloads::late_data::Kind;

    fn event(id: u64) -> Event {
        Event {
            id,
            key: 0,
            ts: 1_000 + id as i64,
            amount: 1,
            kind: Kind::OnTime,
        }
    }

    #[test]
    fn check_reads_catches_repeats_reorders_and_unread_acknowledged_events() {
        let mut s = Shared {
            acked: BTreeMap::from([(0, 0), (1, 1), (2, 2)]),
            reads: vec![event(0), event(1), event(2)],
            ..Shared::default()
        };
        assert_eq!(check_reads(&s), Vec::<String>::new());
        s.reads = vec![event(0), event(2)];
        let v = check_reads(&s);
        assert!(
            v.iter().any(|m| m.contains("event 1 was never read")),
            "{v:?}"
        );
        s.reads = vec![event(0), event(1), event(1), event(2)];
        assert!(check_reads(&s).iter().any(|m| m.contains("read twice")));
        s.reads = vec![event(0), event(2), event(1)];
        assert!(
            check_reads(&s)
                .iter()
                .any(|m| m.contains("out of their offset order"))
        );
    }
}

//! Live checks: the simulator's queue and transactional workloads, and their checkers, run
//! against a real Kafka-protocol cluster on real sockets.
//!
//! The client processes are the very ones the scenarios run in the simulator; here they run
//! on one tokio thread (a `LocalSet`) with wall-clock time. Nothing here injects faults: the
//! user does, by killing, pausing or partitioning the cluster while the check runs. After the
//! workload phase, the final reader has the same liveness bound as in the simulator.

use crate::env::{Recorder, start_live_clock};
use crate::history::OpCounts;
use crate::scenarios::common::{Process, Target, producer_config};
use crate::scenarios::{queue, transactions};
use std::cell::RefCell;
use std::rc::Rc;
use weir_client::ProducerConfig;
use weir_seams::net::Net;
use weir_workloads::keys::KeyDist;
use weir_workloads::queue::QueueWorkload;

/// Delivery timeout of the queue producers, in milliseconds.
const DELIVERY_TIMEOUT_MS: u64 = 10_000;

/// Which workload a live check runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Producers send unique values; a consumer polls; a final reader reads everything back.
    Queue,
    /// Transactional producers read, write and commit or abort; a read_committed reader
    /// reads everything back.
    Transactions,
}

/// What to run, and where.
#[derive(Clone, Debug)]
pub struct LiveSpec {
    /// Bootstrap addresses, `host:port`.
    pub bootstrap: Vec<String>,
    /// The workload.
    pub workload: Workload,
    /// Length of the workload phase, in milliseconds.
    pub duration_ms: u64,
    /// Seed of the workload's random choices.
    pub seed: u64,
    /// The queue producers' acks: -1 (all, idempotent) or 1 (leader only, not idempotent).
    pub acks: i16,
    /// Replicas of the run's topic; -1 takes the cluster's default.
    pub replication_factor: i16,
    /// Wall clock at the start, in milliseconds since the Unix epoch.
    pub epoch_ms: i64,
    /// Names this run's topic and transactional ids, so that runs do not see each other.
    pub run_id: String,
}

/// What a live check found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LiveReport {
    /// Operations by outcome.
    pub ops: OpCounts,
    /// Transactions (committed, aborted, unknown), for the transactional workload.
    pub txns: Option<(usize, usize, usize)>,
    /// The run's topic.
    pub topic: String,
    /// Every anomaly the checkers found; empty when the cluster kept its promises.
    pub violations: Vec<String>,
}

/// Runs `spec` to the end of its final read and checks what happened.
pub fn run(spec: &LiveSpec) -> std::io::Result<LiveReport> {
    assert!(spec.acks == -1 || spec.acks == 1, "acks must be -1 or 1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&runtime, check(spec)))
}

async fn check(spec: &LiveSpec) -> LiveReport {
    start_live_clock();
    let target = Target {
        bootstrap: spec.bootstrap.clone(),
        net: Net::Tokio,
        workload_ms: spec.duration_ms,
        epoch_ms: spec.epoch_ms,
        prefix: format!("weir-check-{}-", spec.run_id),
    };
    let rec = Rc::new(RefCell::new(Recorder::default()));
    match spec.workload {
        Workload::Queue => {
            let producer = if spec.acks == 1 {
                ProducerConfig {
                    acks: 1,
                    idempotent: false,
                    ..producer_config(DELIVERY_TIMEOUT_MS)
                }
            } else {
                producer_config(DELIVERY_TIMEOUT_MS)
            };
            let shared = Rc::new(queue::Shared::new(
                target,
                producer,
                3,
                spec.replication_factor,
            ));
            let workload = QueueWorkload {
                keys: KeyDist::Uniform { n: 16 },
                send_gap_ms_min: 1,
                send_gap_ms_max: 5,
            };
            join(queue::processes(&rec, &shared, spec.seed, &workload)).await;
            let history = &rec.borrow().history;
            LiveReport {
                ops: history.counts(),
                txns: None,
                topic: shared.topic().to_string(),
                violations: shared.verdict(history),
            }
        }
        Workload::Transactions => {
            let shared = Rc::new(transactions::Shared::new(target, spec.replication_factor));
            join(transactions::processes(&rec, &shared, spec.seed)).await;
            LiveReport {
                ops: rec.borrow().history.counts(),
                txns: Some(shared.outcomes()),
                topic: shared.topic().to_string(),
                violations: shared.verdict(),
            }
        }
    }
}

/// Runs every process to its end; a process that fails is reported and the rest go on.
async fn join(processes: Vec<(String, Process)>) {
    let handles: Vec<_> = processes
        .into_iter()
        .map(|(name, p)| (name, tokio::task::spawn_local(p)))
        .collect();
    for (name, h) in handles {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(process = name, error = %e, "client process failed"),
            Err(e) => tracing::warn!(process = name, error = %e, "client process panicked"),
        }
    }
}

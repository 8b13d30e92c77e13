//! Pieces every scenario uses: the simulated broker host, client settings, topic setup, and
//! recording operations into the history.

use crate::env::{EPOCH_MS, Env, Rec, now_ms};
use crate::history::{OpKind, Outcome};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_core::broker::{Broker, BrokerConfig};
use weir_core::client::{Admin, ClientConfig, Cluster, ConnConfig, NewTopic, ProducerConfig};
use weir_core::clock::Clock;
use weir_core::disk::{Disk, DiskFaults};
use weir_core::log::TopicConfig;
use weir_core::net::Net;
use weir_core::rng;

/// Host name of the single broker.
pub const BROKER: &str = "broker";
/// Port the broker listens on.
pub const PORT: u16 = 9092;
/// Pause between client retries, in simulated milliseconds.
pub const RETRY_MS: u64 = 100;

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

/// Client settings for the simulated network, with timeouts short enough to notice partitions.
pub fn client_config(client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new([format!("{BROKER}:{PORT}")], Net::Sim);
    c.conn = ConnConfig {
        client_id: client_id.to_string(),
        connect_timeout_ms: 1_000,
        request_timeout_ms: 5_000,
        max_response_bytes: 16 * 1024 * 1024,
        max_in_flight: 8,
    };
    c
}

/// The simulated broker's settings: small segments, so that rolling and recovery of sealed
/// segments happen within a run.
pub fn broker_config() -> BrokerConfig {
    BrokerConfig {
        advertised_host: BROKER.into(),
        advertised_port: PORT,
        connections_max_idle_ms: 10_000,
        topic_defaults: TopicConfig {
            segment_bytes: 16 * 1024,
            index_interval_bytes: 1024,
            ..TopicConfig::default()
        },
        ..BrokerConfig::default()
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
    let broker = loop {
        let disk = Disk::sim("/data", faults.clone());
        match Broker::open(
            config.clone(),
            disk,
            clock,
            rng::derive(seed, &format!("broker/{incarnation}")),
        )
        .await
        {
            Ok(b) => break b,
            Err(e) => {
                tracing::warn!(error = %e, "broker could not start; retrying");
                sleep_ms(500).await;
            }
        }
    };
    broker.serve(listener).await?;
    Ok(())
}

/// Adds the broker host; each restart opens the broker again from its disk.
pub fn add_broker(env: &mut Env<'_>, config: BrokerConfig) {
    let faults = env.disk(BROKER);
    let seed = env.seed();
    let incarnations = Rc::new(Cell::new(0u64));
    env.sim.host(BROKER, move || {
        let (config, faults) = (config.clone(), faults.clone());
        let n = incarnations.get();
        incarnations.set(n + 1);
        async move { run_broker(config, faults, seed, n).await }
    });
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
pub async fn create_topic(cluster: &Arc<Cluster>, topic: &str, partitions: i32, until_ms: u64) {
    let admin = Admin::new(Arc::clone(cluster));
    while now_ms() < until_ms {
        match admin
            .create_topic(&NewTopic::new(topic, partitions, 1))
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

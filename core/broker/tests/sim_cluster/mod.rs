//! Brokers inside turmoil, for the integration tests that run in the simulator: host names,
//! simulated time, the quorum's voters, and serving one broker from its simulated disk.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use weir_broker::{Broker, BrokerConfig, Voter};
use weir_seams::clock::Clock;
use weir_seams::disk::{Disk, DiskFaults};
use weir_seams::net::Net;
use weir_seams::rng;

/// Port of the Kafka listener on every broker host.
pub const PORT: u16 = 9092;
/// Port of the brokers' internal listener (quorum and replication).
const INTERNAL_PORT: u16 = 9093;

/// The brokers that are up, by host name, for tests that reach into them.
pub type Handles = Rc<RefCell<BTreeMap<String, Broker>>>;

/// Simulated milliseconds since the run began.
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// Sleeps until simulated millisecond `ms`.
pub async fn sleep_until(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms.saturating_sub(now_ms()))).await;
}

/// Host name of broker `i`.
pub fn host(i: i32) -> String {
    format!("broker-{i}")
}

/// The quorum of brokers `0..brokers`.
pub fn voters(brokers: i32) -> Vec<Voter> {
    (0..brokers)
        .map(|id| Voter {
            id,
            host: host(id),
            internal_port: INTERNAL_PORT,
        })
        .collect()
}

/// Opens broker `config.node_id` from its simulated disk and serves it until its host stops;
/// each incarnation's RNG is derived from the seed, the host and the time it starts.
pub async fn serve(
    config: BrokerConfig,
    faults: DiskFaults,
    seed: u64,
    handles: Handles,
) -> turmoil::Result {
    let name = host(config.node_id);
    let listener = Net::Sim.bind(&format!("0.0.0.0:{PORT}")).await?;
    let internal = Net::Sim.bind(&format!("0.0.0.0:{INTERNAL_PORT}")).await?;
    let b = Broker::open(
        config,
        Disk::sim("/data", faults),
        Clock::starting_at(0),
        rng::derive(seed, &format!("{name}/{}", now_ms())),
    )
    .await?;
    handles.borrow_mut().insert(name, b.clone());
    let internal_side = b.clone();
    tokio::spawn(async move { internal_side.serve_internal(internal).await });
    b.serve(listener).await?;
    Ok(())
}

/// A simulation of `seed` with one broker (`broker-0`, a quorum of one) on a fault-free disk,
/// for tests of what a client does against it. Not every test binary uses it.
#[allow(dead_code)]
pub fn single_broker(seed: u64) -> turmoil::Sim<'static> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(120))
        .tick_duration(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .build();
    let handles = Handles::default();
    sim.host(host(0), move || {
        let config = BrokerConfig {
            node_id: 0,
            advertised_host: host(0),
            advertised_port: PORT,
            net: Net::Sim,
            voters: voters(1),
            ..BrokerConfig::default()
        };
        serve(config, DiskFaults::seeded(seed), seed, Rc::clone(&handles))
    });
    sim
}

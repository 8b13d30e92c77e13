//! A producer whose leader becomes unreachable, in the simulator: the failed attempt makes it
//! forget the topic's metadata, and sends made while no broker answers wait for the metadata
//! (up to `max_block_ms`) instead of failing at once. Once the network heals, every record is
//! acknowledged, in order.

mod sim_cluster;

use bytes::Bytes;
use sim_cluster::{PORT, host, now_ms, single_broker, sleep_until};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_client::{
    Admin, ClientConfig, Cluster, ConnConfig, NewTopic, Producer, ProducerConfig, Record,
};
use weir_seams::clock::Clock;
use weir_seams::net::Net;

/// Records sent, one every [`GAP_MS`].
const RECORDS: usize = 40;
const GAP_MS: u64 = 50;
/// The outage, in simulated milliseconds since the first send.
const OUTAGE_FROM_MS: u64 = 500;
const OUTAGE_FOR_MS: u64 = 3_000;

/// Each record's outcome: Ok(offset) or the error, in send order.
fn run(seed: u64) -> Vec<Result<i64, String>> {
    let mut sim = single_broker(seed);
    let outcomes = Rc::new(RefCell::new(Vec::new()));
    let out = Rc::clone(&outcomes);
    sim.client("app", async move {
        let mut config = ClientConfig::new([format!("{}:{PORT}", host(0))], Net::Sim);
        config.conn = ConnConfig {
            connect_timeout_ms: 500,
            request_timeout_ms: 1_000,
            ..config.conn
        };
        let cluster = Cluster::new(config);
        while Admin::new(Arc::clone(&cluster))
            .create_topic(&NewTopic::new("t", 1, 1))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let producer = Producer::new(
            Arc::clone(&cluster),
            ProducerConfig {
                max_block_ms: 30_000,
                ..ProducerConfig::default()
            },
            Clock::starting_at(0),
        )
        .await?;
        let start = now_ms();
        tokio::task::spawn_local(async move {
            sleep_until(start + OUTAGE_FROM_MS).await;
            turmoil::partition("app", host(0));
            sleep_until(start + OUTAGE_FROM_MS + OUTAGE_FOR_MS).await;
            turmoil::repair("app", host(0));
        });
        let mut deliveries = Vec::new();
        for i in 0..RECORDS {
            sleep_until(start + i as u64 * GAP_MS).await;
            let value = Bytes::from(i.to_string());
            deliveries.push(producer.send(Record::new("t", None::<Bytes>, value)).await);
        }
        for d in deliveries {
            let outcome = match d {
                Ok(d) => d.wait().await.map(|m| m.offset).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            out.borrow_mut().push(outcome);
        }
        Ok(())
    });
    sim.run().unwrap();
    outcomes.take()
}

#[test]
fn sends_during_an_outage_wait_for_metadata_and_land_in_order() {
    let outcomes = run(3);
    assert_eq!(outcomes.len(), RECORDS);
    let offsets: Vec<i64> = outcomes
        .iter()
        .map(|o| o.clone().unwrap_or_else(|e| panic!("a send failed: {e}")))
        .collect();
    assert_eq!(offsets, (0..RECORDS as i64).collect::<Vec<_>>());
    assert_eq!(run(3), outcomes, "the same seed replays the same");
}

//! A producer and a consumer sharing one `Cluster` handle, in the simulator: a fetch that the
//! broker parks for its max wait must not hold back the producer's requests. Fetches go on a
//! connection of their own, so the send is acknowledged and the parked fetch is answered with
//! the record long before the wait would end. Durations here are simulated, so the bounds are
//! exact, not timing guesses.

mod sim_cluster;

use bytes::Bytes;
use sim_cluster::{PORT, host, now_ms, single_broker, sleep_until};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_client::{
    Admin, ClientConfig, Cluster, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    Record,
};
use weir_seams::clock::Clock;
use weir_seams::net::Net;

/// How long the broker may park the consumer's fetch, in simulated milliseconds.
const FETCH_WAIT_MS: i32 = 20_000;

/// (ms the send took to be acknowledged, ms the poll took to return the record).
fn run(seed: u64) -> (u64, u64) {
    let mut sim = single_broker(seed);
    let took = Rc::new(Cell::new((0, 0)));
    let out = Rc::clone(&took);
    sim.client("app", async move {
        let cluster = Cluster::new(ClientConfig::new([format!("{}:{PORT}", host(0))], Net::Sim));
        while Admin::new(Arc::clone(&cluster))
            .create_topic(&NewTopic::new("t", 1, 1))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut consumer = Consumer::new(
            Arc::clone(&cluster),
            ConsumerConfig {
                fetch_max_wait_ms: FETCH_WAIT_MS,
                ..ConsumerConfig::default()
            },
        );
        consumer.assign([("t".to_string(), 0)]);
        let producer = Producer::new(
            Arc::clone(&cluster),
            ProducerConfig::default(),
            Clock::starting_at(0),
        )
        .await?;
        let polled = tokio::task::spawn_local(async move {
            let start = now_ms();
            loop {
                let records = consumer
                    .poll(Duration::from_millis(FETCH_WAIT_MS as u64 * 2))
                    .await?;
                if !records.is_empty() {
                    return Ok::<_, weir_client::ClientError>(now_ms() - start);
                }
            }
        });
        // Let the fetch reach the broker and park there.
        sleep_until(now_ms() + 500).await;
        let start = now_ms();
        producer
            .send(Record::new("t", None::<Bytes>, Bytes::from_static(b"v")))
            .await?
            .wait()
            .await?;
        let acked = now_ms() - start;
        out.set((acked, polled.await??));
        Ok(())
    });
    sim.run().unwrap();
    took.get()
}

#[test]
fn a_parked_fetch_does_not_hold_back_a_producer_on_the_same_cluster() {
    let (acked_ms, polled_ms) = run(7);
    assert!(
        acked_ms < 1_000,
        "the send waited {acked_ms} ms behind a fetch parked for up to {FETCH_WAIT_MS} ms"
    );
    assert!(
        polled_ms < 2_000,
        "the parked fetch took {polled_ms} ms to return the new record"
    );
    assert_eq!(
        run(7),
        (acked_ms, polled_ms),
        "the same seed replays the same"
    );
}

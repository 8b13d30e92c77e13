//! Broker produce and fetch throughput with 3 replicas against 1, as a ratio from one run.
//!
//! Three real brokers run in this process, on loopback TCP (ephemeral ports) and temporary
//! directories, one tokio runtime for all of them and the clients. They form one cluster
//! through the embedded metadata quorum, as `sim/src/scenarios/common.rs` sets one up inside
//! the simulator. Two topics of one partition each: `rf1` (replication factor 1) and `rf3`
//! (replication factor 3, followers copying from the leader over the internal port).
//!
//! - `replication/produce/rf{1,3}`: an idempotent acks=all producer sends 10 000 records of
//!   100-byte values and flushes. With RF 3 each acknowledgement waits until both followers
//!   have fetched and fsynced the records and the high watermark has moved past them.
//! - `replication/fetch/rf{1,3}`: a fresh consumer reads the first 10 000 records back from
//!   the leader.
//!
//! The machine these run on is shared and noisy, so only ratios measured in one run mean
//! something. Criterion measures the four benches one after the other, so a change of load
//! between them skews the ratio of its estimates; after them, a paired pass alternates RF 1
//! and RF 3 round by round and prints the ratios of the median round times and the spread of
//! the per-round ratios, which such drift affects much less. It also checks that every RF 3
//! replica holds the whole log. Run with:
//!
//! ```sh
//! cargo bench --bench replication
//! ```

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use weir_broker::{Broker, BrokerConfig, Voter};
use weir_client::{
    Admin, ClientConfig, Cluster, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    Record,
};
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_seams::net::Net;

const BROKERS: usize = 3;
const RECORDS: u64 = 10_000;
const VALUE_BYTES: usize = 100;
/// Replication factors compared, each with its topic.
const FACTORS: [i16; 2] = [1, 3];
/// Rounds of each kind in the paired pass.
const PAIRED_ROUNDS: usize = 30;

fn topic(rf: i16) -> String {
    format!("rf{rf}")
}

/// A cluster of [`BROKERS`] brokers on loopback, with its clients' view of it.
struct Bench {
    brokers: Vec<Broker>,
    cluster: Arc<Cluster>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Starts the brokers: binds every client and internal listener first (ephemeral ports), so
/// that each broker can be told where all voters listen, then opens and serves them all and
/// waits until each has joined the cluster.
async fn start_cluster() -> Bench {
    let mut listeners = Vec::new();
    for _ in 0..BROKERS {
        let client = Net::Tokio.bind("127.0.0.1:0").await.unwrap();
        let internal = Net::Tokio.bind("127.0.0.1:0").await.unwrap();
        listeners.push((client, internal));
    }
    let voters: Vec<Voter> = listeners
        .iter()
        .enumerate()
        .map(|(i, (_, internal))| Voter {
            id: i as i32,
            host: "127.0.0.1".into(),
            internal_port: internal.local_addr().unwrap().port(),
        })
        .collect();
    let mut brokers = Vec::new();
    let mut dirs = Vec::new();
    let mut bootstrap = Vec::new();
    for (i, (client, internal)) in listeners.into_iter().enumerate() {
        let port = client.local_addr().unwrap().port();
        bootstrap.push(format!("127.0.0.1:{port}"));
        let config = BrokerConfig {
            node_id: i as i32,
            advertised_host: "127.0.0.1".into(),
            advertised_port: port,
            net: Net::Tokio,
            voters: voters.clone(),
            ..BrokerConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(
            config,
            Disk::real(dir.path()),
            Clock::starting_at(0),
            weir_seams::rng::derive(0, &format!("bench/broker-{i}")),
        )
        .await
        .unwrap();
        let b = broker.clone();
        tokio::spawn(async move { b.serve_internal(internal).await });
        let b = broker.clone();
        tokio::spawn(async move {
            if let Err(e) = b.serve(client).await {
                eprintln!("broker {i} stopped serving: {e}");
            }
        });
        brokers.push(broker);
        dirs.push(dir);
    }
    for b in &brokers {
        b.ready(Duration::from_secs(60)).await.unwrap();
    }
    let cluster = Cluster::new(ClientConfig::new(bootstrap, Net::Tokio));
    let admin = Admin::new(Arc::clone(&cluster));
    // The controller places a new topic's replicas round-robin from (number of topics) modulo
    // (number of brokers), the first replica leading. Idle padding topics between the two put
    // both partitions' leaders on broker 0, so that RF 1 and RF 3 differ only in replication.
    let mut to_create: Vec<(String, i16)> = vec![(topic(1), 1)];
    to_create.extend((1..BROKERS).map(|i| (format!("pad-{i}"), 1)));
    to_create.push((topic(3), 3));
    for (t, rf) in to_create {
        let mut tries = 0;
        loop {
            match admin.create_topic(&NewTopic::new(&t, 1, rf)).await {
                Ok(()) => break,
                Err(e) if tries < 100 => {
                    tries += 1;
                    eprintln!("creating {t}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("could not create {t}: {e}"),
            }
        }
    }
    Bench {
        brokers,
        cluster,
        _dirs: dirs,
    }
}

async fn producer(cluster: &Arc<Cluster>) -> Producer {
    Producer::new(
        Arc::clone(cluster),
        ProducerConfig {
            acks: -1,
            idempotent: true,
            linger_ms: 2,
            batch_bytes_max: 64 * 1024,
            ..Default::default()
        },
        Clock::starting_at(0),
    )
    .await
    .unwrap()
}

/// Sends `n` records to partition 0 of `topic`, flushes, and checks the last was acknowledged.
async fn produce(p: &Producer, topic: &str, value: &Bytes, n: u64) {
    let mut last = None;
    for _ in 0..n {
        last = Some(
            p.send(Record {
                topic: topic.into(),
                partition: Some(0),
                value: Some(value.clone()),
                ..Default::default()
            })
            .await
            .unwrap(),
        );
    }
    p.flush().await;
    if let Some(d) = last {
        d.wait().await.unwrap();
    }
}

/// Reads the first `n` records of partition 0 of `topic` with a fresh consumer.
async fn fetch(cluster: &Arc<Cluster>, topic: &str, n: u64) {
    let mut consumer = Consumer::new(Arc::clone(cluster), ConsumerConfig::default());
    consumer.assign([(topic.to_string(), 0)]);
    let mut got = 0u64;
    while got < n {
        got += consumer.poll(Duration::from_secs(5)).await.unwrap().len() as u64;
    }
}

/// The smallest ISR among the partitions of `topic`, as the metadata reports it.
async fn isr_size(cluster: &Arc<Cluster>, topic: &str) -> usize {
    let resp = cluster.refresh(&[topic.to_string()]).await.unwrap();
    resp.topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.isr_nodes.len())
        .min()
        .unwrap_or(0)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The `q` quantile of `xs` (0.5 for the median), by linear interpolation.
fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let at = q * (xs.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    xs[lo] + (xs[hi] - xs[lo]) * (at - lo as f64)
}

/// Prints, for each topic, where its replicas stand on each broker: with RF 3 every broker
/// must hold the whole log, or the RF 3 figures would not measure replication.
fn check_replicas(bench: &Bench) {
    for (i, b) in bench.brokers.iter().enumerate() {
        if b.is_controller() {
            println!("broker {i} is the active controller");
        }
    }
    for rf in FACTORS {
        let t = topic(rf);
        let marks: Vec<String> = bench
            .brokers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                b.partition_marks(&t, 0).map(|m| {
                    format!(
                        "broker {i}: log end {}, high watermark {}{}",
                        m.log_end,
                        m.high_watermark,
                        if m.leader_epoch.is_some() {
                            " (leader)"
                        } else {
                            ""
                        }
                    )
                })
            })
            .collect();
        println!("{t}: {} replica(s); {}", marks.len(), marks.join("; "));
        assert_eq!(marks.len(), rf as usize, "{t} has the wrong replica count");
    }
    let leaders: Vec<Option<usize>> = FACTORS
        .iter()
        .map(|&rf| {
            bench.brokers.iter().position(|b| {
                b.partition_marks(&topic(rf), 0)
                    .is_some_and(|m| m.leader_epoch.is_some())
            })
        })
        .collect();
    if leaders.windows(2).any(|w| w[0] != w[1]) {
        println!("WARNING: the topics' leaders are on different brokers ({leaders:?})");
    }
}

fn replication(c: &mut Criterion) {
    let rt = runtime();
    let bench = rt.block_on(start_cluster());
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let producers: Vec<(i16, Producer)> = FACTORS
        .iter()
        .map(|&rf| (rf, rt.block_on(producer(&bench.cluster))))
        .collect();
    // Every topic holds at least one iteration's records before anything is measured, so that
    // fetch reads the same amount from both.
    for (rf, p) in &producers {
        rt.block_on(produce(p, &topic(*rf), &value, RECORDS));
    }

    let mut g = c.benchmark_group("replication");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::ElementsAndBytes {
        elements: RECORDS,
        bytes: RECORDS * VALUE_BYTES as u64,
    });
    for (rf, p) in &producers {
        let t = topic(*rf);
        g.bench_function(format!("produce/rf{rf}"), |b| {
            b.to_async(&rt).iter(|| produce(p, &t, &value, RECORDS))
        });
    }
    for rf in FACTORS {
        let t = topic(rf);
        g.bench_function(format!("fetch/rf{rf}"), |b| {
            b.to_async(&rt).iter(|| fetch(&bench.cluster, &t, RECORDS))
        });
    }
    g.finish();
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs each bench once to check it works; skip the paired pass.
        rt.block_on(async {
            for b in &bench.brokers {
                b.shutdown().await;
            }
        });
        return;
    }

    // The paired pass: RF 1 and RF 3 alternate round by round (which goes first alternates
    // too), so that both see the same machine; the ratio of median round times is RF 3's
    // throughput relative to RF 1's. Each round's own ratio is printed as a median and
    // quartiles, to show the spread.
    let mut produce_s = [Vec::new(), Vec::new()];
    let mut fetch_s = [Vec::new(), Vec::new()];
    // The RF 3 topic's ISR after each of its produce rounds: if followers dropped out of it,
    // acks=all would stop waiting for them and RF 3 would not measure replication.
    let mut isr_seen = Vec::new();
    for round in 0..PAIRED_ROUNDS {
        for k in 0..2 {
            // Alternate which factor goes first.
            let k = if round % 2 == 0 { k } else { 1 - k };
            let (rf, p) = &producers[k];
            let t = topic(*rf);
            let at = Instant::now();
            rt.block_on(produce(p, &t, &value, RECORDS));
            produce_s[k].push(at.elapsed().as_secs_f64());
            if *rf == 3 {
                isr_seen.push(rt.block_on(isr_size(&bench.cluster, &t)));
            }
            let at = Instant::now();
            rt.block_on(fetch(&bench.cluster, &t, RECORDS));
            fetch_s[k].push(at.elapsed().as_secs_f64());
        }
    }
    println!("\npaired pass: {PAIRED_ROUNDS} rounds of {RECORDS} records of {VALUE_BYTES} bytes");
    for (name, s) in [("produce", &produce_s), ("fetch", &fetch_s)] {
        let m1 = quantile(&s[0], 0.5);
        let m3 = quantile(&s[1], 0.5);
        // Each round's own ratio, RF 3's throughput over RF 1's.
        let ratios: Vec<f64> = s[0].iter().zip(&s[1]).map(|(t1, t3)| t1 / t3).collect();
        println!(
            "{name}: rf1 median {:.2} ms ({:.0} records/s), rf3 median {:.2} ms ({:.0} records/s); \
             rf3/rf1 throughput ratio of medians {:.3}; per-round ratio median {:.3}, \
             quartiles {:.3}..{:.3}",
            m1 * 1e3,
            RECORDS as f64 / m1,
            m3 * 1e3,
            RECORDS as f64 / m3,
            m1 / m3,
            quantile(&ratios, 0.5),
            quantile(&ratios, 0.25),
            quantile(&ratios, 0.75),
        );
    }
    println!(
        "rf3 ISR size after each rf3 produce round: min {}, max {}",
        isr_seen.iter().min().unwrap(),
        isr_seen.iter().max().unwrap()
    );
    rt.block_on(async {
        // Let the followers' next fetch carry the last high watermark over.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    });
    check_replicas(&bench);
    rt.block_on(async {
        for b in &bench.brokers {
            b.shutdown().await;
        }
    });
    drop(producers);
}

criterion_group!(benches, replication);
criterion_main!(benches);

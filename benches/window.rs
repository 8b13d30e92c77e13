//! Window aggregation throughput on one core: a keyed count/sum over 10,000 keys in 5-minute
//! tumbling windows, and the same in 1-hour windows sliding every 5 minutes.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use weir_engine::state::CountSum;
use weir_engine::{CollectSink, StreamEnv, WatermarkStrategy, WindowAssigner};
use weir_seams::clock::Clock;

const KEYS: u64 = 10_000;
const EVENTS: u64 = 200_000;
/// Event time between consecutive events: 200,000 events span about 67 minutes.
const EVENT_GAP_MS: i64 = 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    customer: u64,
    ts: i64,
    total: f64,
}

fn orders() -> Vec<Order> {
    // A fixed pseudo-random spread of customers, with a little disorder in time.
    (0..EVENTS)
        .map(|i| {
            let customer = (i.wrapping_mul(2_654_435_761)) % KEYS;
            let jitter = ((i * 7919) % 50) as i64;
            Order {
                customer,
                ts: i as i64 * EVENT_GAP_MS - jitter,
                total: (i % 500) as f64 + 0.5,
            }
        })
        .collect()
}

/// Runs the windows over `events` in local mode; returns how many results they committed.
fn run(rt: &tokio::runtime::Runtime, events: &[Order], assigner: WindowAssigner) -> u64 {
    rt.block_on(async {
        let env = StreamEnv::new("window-bench");
        let strategy = WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(100))
            .with_timestamp_assigner(|o: &Order, _| o.ts);
        let (sink, fired) = CollectSink::new();
        env.from_collection(events.to_vec(), strategy)
            .key_by(|o: &Order| o.customer)
            .window(assigner)
            .aggregate(CountSum::new(|o: &Order| o.total))
            .sink_to(sink);
        let job = env.build().expect("the job builds");
        let mut run = job
            .local(Clock::starting_at(0), None)
            .expect("local mode runs it");
        run.run().await.expect("the job runs");
        fired.len() as u64
    })
}

fn windows(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = orders();
    let mut g = c.benchmark_group("window_aggregation");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("tumbling_5min_10k_keys", |b| {
        b.iter(|| {
            run(
                &rt,
                &events,
                WindowAssigner::tumbling(Duration::from_secs(300)),
            )
        })
    });
    g.bench_function("sliding_1h_every_5min_10k_keys", |b| {
        b.iter(|| {
            run(
                &rt,
                &events,
                WindowAssigner::sliding(Duration::from_secs(3600), Duration::from_secs(300)),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, windows);
criterion_main!(benches);

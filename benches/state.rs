//! Keyed state access and checkpoint snapshots of the stream engine's heap backend: a value
//! state read and written per record over 10,000 keys (what a keyed aggregate does per record),
//! and the snapshot of 100,000 such entries taken and encoded for a checkpoint, then restored.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use weir_engine::state::{
    HeapBackend, KeyedStore, StoreSnapshot, ValueStateDescriptor, decode, encode,
};
use weir_seams::clock::Clock;

const KEYS: u64 = 10_000;
/// Updates per measured iteration of the access bench.
const UPDATES: u64 = 100_000;
/// Keys in the store that the snapshot bench saves.
const SNAPSHOT_KEYS: u64 = 100_000;
const COUNT_SUM: ValueStateDescriptor<(u64, f64)> = ValueStateDescriptor::new("count-sum");

fn store() -> KeyedStore {
    KeyedStore::new(Box::new(HeapBackend::default()), Clock::starting_at(0))
}

/// Adds one record's amount to its key's (count, sum), as a keyed aggregate does.
fn update(store: &mut KeyedStore, key: u64, amount: f64) {
    store.set_key(key.to_be_bytes().to_vec());
    let mut state = store.value(&COUNT_SUM, b"").expect("the state binds");
    let (count, sum) = state.get().expect("the state reads").unwrap_or((0, 0.0));
    state
        .update(&(count + 1, sum + amount))
        .expect("the state writes");
}

fn filled(keys: u64) -> KeyedStore {
    let mut s = store();
    for k in 0..keys {
        update(&mut s, k, 1.5);
    }
    s
}

fn access(c: &mut Criterion) {
    let mut g = c.benchmark_group("state_access");
    g.throughput(Throughput::Elements(UPDATES));
    g.bench_function("value_update_10k_keys", |b| {
        let mut s = filled(KEYS);
        b.iter(|| {
            for i in 0..UPDATES {
                // A fixed spread over the keys, so consecutive updates hit different keys.
                let key = i.wrapping_mul(2_654_435_761) % KEYS;
                update(&mut s, key, (i % 500) as f64);
            }
            black_box(s.len())
        })
    });
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("checkpoint_snapshot");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(SNAPSHOT_KEYS));
    let s = filled(SNAPSHOT_KEYS);
    let bytes = encode(&s.snapshot().expect("the store saves")).expect("the snapshot encodes");
    eprintln!(
        "a snapshot of {SNAPSHOT_KEYS} keys encodes to {} bytes",
        bytes.len()
    );
    g.bench_function("take_and_encode_100k_keys", |b| {
        b.iter(|| {
            let snap = s.snapshot().expect("the store saves");
            black_box(encode(&snap).expect("the snapshot encodes").len())
        })
    });
    g.bench_function("decode_and_restore_100k_keys", |b| {
        b.iter_batched(
            store,
            |mut fresh| {
                let snap: StoreSnapshot = decode(&bytes).expect("the snapshot decodes");
                fresh.restore(snap).expect("the store restores");
                black_box(fresh.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, access, snapshot);
criterion_main!(benches);

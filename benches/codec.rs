//! Record batch encode, decode and broker-side validation, per codec.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use weir_wire::record::{
    Codec, ProducerBatch, RecordToEncode, decode_batch_records, encode_batch,
    validate_produced_batch,
};

const RECORDS: usize = 100;
const VALUE_BYTES: usize = 100;

fn records() -> Vec<RecordToEncode> {
    (0..RECORDS)
        .map(|i| RecordToEncode {
            key: Some(Bytes::from(format!("customer-{}", i % 17))),
            value: Some(Bytes::from(
                format!("{{\"order\":{i},\"total\":{}.{:02}}}", i * 7, i % 100)
                    .repeat(VALUE_BYTES / 24 + 1),
            )),
            headers: vec![],
            timestamp: 1_767_225_600_000 + i as i64,
        })
        .collect()
}

fn meta(codec: Codec) -> ProducerBatch {
    ProducerBatch {
        producer_id: 1,
        producer_epoch: 0,
        base_sequence: 0,
        transactional: false,
        codec,
    }
}

fn codec(c: &mut Criterion) {
    let recs = records();
    let raw_bytes: usize = recs
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Bytes::len) + r.key.as_ref().map_or(0, Bytes::len))
        .sum();
    let mut g = c.benchmark_group("record_batch");
    g.throughput(Throughput::ElementsAndBytes {
        elements: RECORDS as u64,
        bytes: raw_bytes as u64,
    });
    for codec in Codec::ALL {
        g.bench_with_input(
            BenchmarkId::new("encode", codec.name()),
            &codec,
            |b, &codec| b.iter(|| encode_batch(black_box(&recs), &meta(codec)).unwrap()),
        );
        let batch = encode_batch(&recs, &meta(codec)).unwrap();
        g.bench_with_input(
            BenchmarkId::new("decode", codec.name()),
            &batch,
            |b, batch| b.iter(|| decode_batch_records(black_box(batch), 1 << 24).unwrap()),
        );
        g.bench_with_input(
            BenchmarkId::new("validate", codec.name()),
            &batch,
            |b, batch| {
                b.iter(|| validate_produced_batch(black_box(batch), 1 << 24, 1 << 24).unwrap())
            },
        );
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);

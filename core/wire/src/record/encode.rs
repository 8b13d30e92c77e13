//! Encoding producer batches with the `kafka-protocol` crate's record batch encoder.

use super::batch::{BatchError, BatchHeader};
use super::compression::Codec;
use super::records::Header;
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// One record as a producer hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordToEncode {
    /// Key, or null.
    pub key: Option<Bytes>,
    /// Value, or null.
    pub value: Option<Bytes>,
    /// Headers (a repeated name keeps its last value).
    pub headers: Vec<Header>,
    /// Create time in milliseconds since the epoch.
    pub timestamp: i64,
}

/// Batch-level fields a producer sets.
#[derive(Clone, Copy, Debug)]
pub struct ProducerBatch {
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Whether the batch is part of a transaction.
    pub transactional: bool,
    /// Compression of the records section.
    pub codec: Codec,
}

impl ProducerBatch {
    /// A batch from a producer without a producer id (not idempotent, not transactional).
    pub fn plain(codec: Codec) -> Self {
        Self {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            codec,
        }
    }
}

/// Encodes `records` as one v2 batch with base offset 0.
pub fn encode_batch(records: &[RecordToEncode], meta: &ProducerBatch) -> Result<Bytes, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Invalid(
            "a batch needs at least one record".into(),
        ));
    }
    let protocol_records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let i = i32::try_from(i).expect("batch record count fits i32");
            let headers: IndexMap<StrBytes, Option<Bytes>> = r
                .headers
                .iter()
                .map(|h| (StrBytes::from_string(h.key.clone()), h.value.clone()))
                .collect();
            Record {
                transactional: meta.transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: meta.producer_id,
                producer_epoch: meta.producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(i),
                // The encoder groups records whose offset minus sequence is constant, so the
                // sequence runs alongside the offset even when it is unset (-1).
                sequence: meta.base_sequence.wrapping_add(i),
                timestamp: r.timestamp,
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: meta.codec.to_protocol(),
    };
    RecordBatchEncoder::encode(&mut buf, protocol_records.iter(), &options)
        .map_err(|e| BatchError::Compression(e.to_string()))?;
    let header = BatchHeader::parse(&buf)?;
    debug_assert_eq!(
        header.total_len(),
        buf.len(),
        "encoder produced exactly one batch"
    );
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::super::{decode_batch_records, validate_produced_batch};
    use super::*;
    use proptest::prelude::*;

    fn rec(i: usize) -> RecordToEncode {
        RecordToEncode {
            key: if i.is_multiple_of(3) {
                None
            } else {
                Some(Bytes::from(format!("k{i}")))
            },
            value: Some(Bytes::from(format!("value-{i}").repeat(i % 7 + 1))),
            headers: if i.is_multiple_of(2) {
                vec![Header {
                    key: "h".into(),
                    value: Some(Bytes::from_static(b"v")),
                }]
            } else {
                vec![]
            },
            timestamp: 1_700_000_000_000 + i as i64,
        }
    }

    #[test]
    fn every_codec_round_trips_and_validates() {
        let records: Vec<_> = (0..50).map(rec).collect();
        for codec in Codec::ALL {
            let meta = ProducerBatch {
                producer_id: 7,
                producer_epoch: 1,
                base_sequence: 10,
                transactional: false,
                codec,
            };
            let batch = encode_batch(&records, &meta).unwrap();
            let v = validate_produced_batch(&batch, 1 << 20, 1 << 20).unwrap();
            assert_eq!(v.records, 50);
            assert_eq!(v.header.base_sequence, 10);
            assert_eq!(v.header.last_sequence(), 59);
            let (h, decoded) = decode_batch_records(&batch, 1 << 20).unwrap();
            assert_eq!(h.codec().unwrap(), codec);
            assert_eq!(decoded.len(), 50);
            for (i, d) in decoded.iter().enumerate() {
                assert_eq!(d.offset, i as i64);
                assert_eq!(d.value, records[i].value);
                assert_eq!(d.key, records[i].key);
                assert_eq!(d.timestamp, records[i].timestamp);
                assert_eq!(d.headers, records[i].headers);
            }
        }
    }

    #[test]
    fn non_idempotent_batches_stay_whole() {
        let records: Vec<_> = (0..10).map(rec).collect();
        let meta = ProducerBatch::plain(Codec::None);
        let batch = encode_batch(&records, &meta).unwrap();
        let v = validate_produced_batch(&batch, 1 << 20, 1 << 20).unwrap();
        assert_eq!(v.records, 10);
        assert_eq!(v.header.base_sequence, -1);
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_refused(pos in 0usize..400, bit in 0u8..8) {
            let records: Vec<_> = (0..8).map(rec).collect();
            let meta = ProducerBatch::plain(Codec::None);
            let mut batch = encode_batch(&records, &meta).unwrap().to_vec();
            let pos = pos % batch.len();
            // The base offset and leader epoch are rewritten by the broker and not covered by the CRC.
            prop_assume!(!(0..8).contains(&pos) && !(12..16).contains(&pos));
            batch[pos] ^= 1 << bit;
            prop_assert!(validate_produced_batch(&batch, 1 << 20, 1 << 20).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = validate_produced_batch(&bytes, 1 << 20, 1 << 20);
            let _ = decode_batch_records(&Bytes::from(bytes), 1 << 20);
        }
    }
}

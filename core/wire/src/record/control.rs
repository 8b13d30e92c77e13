//! Transaction markers: the control batches a coordinator has written into every partition a
//! transaction touched, to end it there.
//!
//! A marker batch holds one record whose key is `[version: i16 = 0][type: i16]` (0 abort,
//! 1 commit) and whose value is `[version: i16 = 0][coordinator epoch: i32]`, as Kafka's clients
//! expect to find it.

use super::batch::{BATCH_HEADER_LEN, BatchError, BatchHeader};
use super::records::walk_records;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// How a transaction ended in a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MarkerKind {
    /// Its records are discarded by read_committed readers.
    Abort,
    /// Its records become visible to read_committed readers.
    Commit,
}

/// A decoded transaction marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// Commit or abort.
    pub kind: MarkerKind,
    /// The epoch of the coordinator that wrote it.
    pub coordinator_epoch: i32,
}

/// Encodes a marker batch (base offset 0) ending `producer_id`'s transaction at `epoch`.
pub fn encode_marker(
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    timestamp: i64,
) -> Result<Bytes, BatchError> {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(match marker.kind {
        MarkerKind::Abort => 0,
        MarkerKind::Commit => 1,
    });
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(marker.coordinator_epoch);
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: IndexMap::new(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, std::iter::once(&record), &options)
        .map_err(|e| BatchError::Invalid(e.to_string()))?;
    Ok(buf.freeze())
}

/// The marker in `batch` (one whole batch), or `None` when it is not a control batch.
pub fn marker_of(batch: &[u8]) -> Result<Option<Marker>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if !header.is_control() {
        return Ok(None);
    }
    let section = batch
        .get(BATCH_HEADER_LEN..header.total_len())
        .ok_or_else(|| BatchError::Truncated("control batch shorter than it claims".into()))?;
    let mut found = None;
    walk_records(section, header.record_count, |v| {
        let field = |r: Option<(usize, usize)>| r.map(|(s, e)| &section[s..e]);
        let key = field(v.key).unwrap_or_default();
        let value = field(v.value).unwrap_or_default();
        let kind = match key {
            [_, _, 0, 0] => MarkerKind::Abort,
            [_, _, 0, 1] => MarkerKind::Commit,
            _ => return Err(BatchError::Invalid("unknown control record type".into())),
        };
        let coordinator_epoch = match value {
            [_, _, a, b, c, d, ..] => i32::from_be_bytes([*a, *b, *c, *d]),
            _ => -1,
        };
        found = Some(Marker {
            kind,
            coordinator_epoch,
        });
        Ok(())
    })?;
    found
        .map(Some)
        .ok_or_else(|| BatchError::Invalid("control batch without a record".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_and_is_a_transactional_control_batch() {
        for kind in [MarkerKind::Abort, MarkerKind::Commit] {
            let m = Marker {
                kind,
                coordinator_epoch: 7,
            };
            let batch = encode_marker(42, 3, m, 1_000).unwrap();
            let h = BatchHeader::parse(&batch).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch), (42, 3));
            super::super::batch::verify_crc(&h, &batch).unwrap();
            assert_eq!(marker_of(&batch).unwrap(), Some(m));
        }
    }

    #[test]
    fn a_data_batch_has_no_marker_and_a_cut_one_is_an_error() {
        let data = super::super::encode_batch(
            &[super::super::RecordToEncode {
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: Vec::new(),
                timestamp: 0,
            }],
            &super::super::ProducerBatch::plain(super::super::Codec::None),
        )
        .unwrap();
        assert_eq!(marker_of(&data).unwrap(), None);
        let marker = encode_marker(
            1,
            0,
            Marker {
                kind: MarkerKind::Commit,
                coordinator_epoch: 0,
            },
            0,
        )
        .unwrap();
        assert!(marker_of(&marker[..marker.len() - 3]).is_err());
    }
}

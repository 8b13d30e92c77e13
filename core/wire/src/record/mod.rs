//! Kafka record batches (magic v2): parsing, validation, record iteration and encoding.
//!
//! The broker stores batches as the producer sent them, so it only parses what it must: the fixed
//! 61-byte header, the CRC-32C, and (to validate) the records inside. Every length read from a
//! batch is checked against the bytes actually present before it is used; decompression is capped.

mod batch;
mod compression;
mod control;
mod encode;
mod records;

pub use batch::{
    BATCH_HEADER_LEN, BatchError, BatchHeader, BatchIter, TimestampType, ValidatedBatch,
    set_base_offset, set_leader_epoch, set_max_timestamp_log_append, validate_produced_batch,
    verify_crc,
};
pub use compression::{Codec, decompress};
pub use control::{Marker, MarkerKind, encode_marker, marker_of};
pub use encode::{ProducerBatch, RecordToEncode, encode_batch};
pub use records::{DecodedRecord, Header, decode_batch_records};

//! The record batch header and whole-batch validation.

use super::compression::{Codec, decompress};
use super::records::walk_records;

/// Size of the fixed batch header, from the base offset to the record count, in bytes.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes of header counted by `batch_length` (everything after the length field itself).
const LENGTH_COVERED_MIN: i32 = (BATCH_HEADER_LEN - 12) as i32;
/// The CRC covers the batch from the attributes field to its end.
const CRC_START: usize = 21;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than a header, or than the length field promises.
    #[error("batch truncated: {0}")]
    Truncated(String),
    /// A length or count field is impossible.
    #[error("invalid batch: {0}")]
    Invalid(String),
    /// The magic byte is not 2.
    #[error("unsupported record batch magic {0}")]
    Magic(i8),
    /// The stored CRC does not match the contents.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// The batch is larger than the topic allows.
    #[error("batch of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// Batch size in bytes.
        size: usize,
        /// Limit in bytes.
        limit: usize,
    },
    /// The compressed payload is invalid or expands beyond the cap.
    #[error("compression: {0}")]
    Compression(String),
}

/// Whether a batch's timestamps are the producer's or the broker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker on append.
    LogAppendTime,
}

/// The fixed header of a v2 record batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the length field.
    pub batch_length: i32,
    /// Leader epoch at append.
    pub partition_leader_epoch: i32,
    /// Format version; always 2 once parsed.
    pub magic: i8,
    /// CRC-32C of the bytes from the attributes field on.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record relative to the base.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `buf`, checking only that the lengths are plausible.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated(format!(
                "{} bytes, header needs {BATCH_HEADER_LEN}",
                buf.len()
            )));
        }
        let h = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic: buf[16] as i8,
            crc: u32::from_be_bytes(buf[17..21].try_into().expect("4 bytes")),
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            record_count: be_i32(buf, 57),
        };
        if h.batch_length < LENGTH_COVERED_MIN {
            return Err(BatchError::Invalid(format!(
                "batch length {} below the header size",
                h.batch_length
            )));
        }
        if h.magic != 2 {
            return Err(BatchError::Magic(h.magic));
        }
        if h.record_count < 0 || h.last_offset_delta < 0 {
            return Err(BatchError::Invalid(format!(
                "record count {} / last offset delta {}",
                h.record_count, h.last_offset_delta
            )));
        }
        Ok(h)
    }

    /// Total size of the batch including the offset and length fields.
    pub fn total_len(&self) -> usize {
        12 + self.batch_length as usize
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Offset just past the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// The compression codec of the records section.
    pub fn codec(&self) -> Result<Codec, BatchError> {
        Codec::from_attributes(self.attributes)
    }

    /// Whether the timestamps were set by the producer or the broker.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & 0x08 != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    /// Whether the batch holds transaction control markers.
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Whether the batch was written by an idempotent producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence number of the last record (wrapping, as Kafka does).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            -1
        } else {
            self.base_sequence.wrapping_add(self.last_offset_delta)
        }
    }
}

/// Computes the CRC-32C of a whole batch as it should be stored in its header.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Checks that `batch` (exactly one whole batch) has a matching CRC.
pub fn verify_crc(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(BatchError::Crc {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Rewrites the base offset of a batch in place (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch of a batch in place (not covered by the CRC).
pub fn set_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks a batch as LogAppendTime stamped at `now_ms` and recomputes its CRC.
pub fn set_max_timestamp_log_append(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, 21) | 0x08;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates over the whole batches at the start of a byte slice, as read from a log segment or a
/// fetch response. Stops cleanly at a trailing partial batch (fetch responses may cut one off);
/// yields an error for a batch whose header is invalid.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    /// Iterates over the batches in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            failed: false,
        }
    }

    /// Bytes consumed by the whole batches yielded so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = &self.buf[self.pos..];
        if rest.len() < BATCH_HEADER_LEN {
            return None;
        }
        let header = match BatchHeader::parse(rest) {
            Ok(h) => h,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        let len = header.total_len();
        if rest.len() < len {
            return None;
        }
        self.pos += len;
        Some(Ok((header, &rest[..len])))
    }
}

/// A produced batch that passed validation.
#[derive(Clone, Debug)]
pub struct ValidatedBatch {
    /// Its header.
    pub header: BatchHeader,
    /// Number of records, as counted while walking them.
    pub records: i32,
}

/// Validates the records field of one partition in a produce request: exactly one v2 batch, with a
/// consistent length, a matching CRC, records that parse and whose offset deltas run 0..n, no
/// control batch, and at most `max_batch_bytes` (the topic's `max.message.bytes`).
/// Decompressed contents are capped at `max_decompressed_bytes`.
pub fn validate_produced_batch(
    bytes: &[u8],
    max_batch_bytes: usize,
    max_decompressed_bytes: usize,
) -> Result<ValidatedBatch, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    let len = header.total_len();
    if len != bytes.len() {
        return Err(BatchError::Invalid(format!(
            "records field holds {} bytes but the batch claims {len}; exactly one batch is allowed",
            bytes.len()
        )));
    }
    if len > max_batch_bytes {
        return Err(BatchError::TooLarge {
            size: len,
            limit: max_batch_bytes,
        });
    }
    verify_crc(&header, bytes)?;
    if header.is_control() {
        return Err(BatchError::Invalid(
            "producers may not write control batches".into(),
        ));
    }
    if header.record_count == 0 || header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::Invalid(format!(
            "{} records with last offset delta {}",
            header.record_count, header.last_offset_delta
        )));
    }
    let section = &bytes[BATCH_HEADER_LEN..];
    let codec = header.codec()?;
    let plain;
    let records_bytes = if codec == Codec::None {
        section
    } else {
        plain = decompress(codec, section, max_decompressed_bytes)?;
        &plain[..]
    };
    let mut expected_delta = 0i32;
    let count = walk_records(records_bytes, header.record_count, |r| {
        if r.offset_delta != expected_delta {
            return Err(BatchError::Invalid(format!(
                "record {expected_delta} has offset delta {}",
                r.offset_delta
            )));
        }
        expected_delta += 1;
        Ok(())
    })?;
    Ok(ValidatedBatch {
        header,
        records: count,
    })
}

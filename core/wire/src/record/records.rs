//! Records inside a batch: a bounds-checked walker and a decoder for consumers.

use super::batch::{BATCH_HEADER_LEN, BatchError, BatchHeader, TimestampType, verify_crc};
use super::compression::{Codec, decompress};
use bytes::Bytes;

/// A record header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub key: String,
    /// Header value, or null.
    pub value: Option<Bytes>,
}

/// A record decoded from a fetched batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRecord {
    /// Absolute offset.
    pub offset: i64,
    /// Timestamp in milliseconds since the epoch.
    pub timestamp: i64,
    /// Key, or null.
    pub key: Option<Bytes>,
    /// Value, or null.
    pub value: Option<Bytes>,
    /// Headers in wire order.
    pub headers: Vec<Header>,
}

/// Positions of one record's fields within the records section.
pub(crate) struct RecordView {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<(usize, usize)>,
    pub value: Option<(usize, usize)>,
    pub headers: Vec<(String, Option<(usize, usize)>)>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn invalid(msg: impl Into<String>) -> BatchError {
    BatchError::Invalid(msg.into())
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, BatchError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| invalid("record runs past the batch"))?;
        self.pos += 1;
        Ok(b)
    }

    /// A zigzag varint of at most `max_bytes` bytes.
    fn zigzag(&mut self, max_bytes: u32) -> Result<i64, BatchError> {
        let mut raw: u64 = 0;
        for i in 0..max_bytes {
            let b = self.u8()?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(invalid("varint too long"))
    }

    fn varint(&mut self) -> Result<i32, BatchError> {
        let v = self.zigzag(5)?;
        i32::try_from(v).map_err(|_| invalid("varint out of range"))
    }

    fn varlong(&mut self) -> Result<i64, BatchError> {
        self.zigzag(10)
    }

    /// A length-prefixed byte field: `None` for -1, a range into the buffer otherwise.
    fn field(&mut self, what: &str) -> Result<Option<(usize, usize)>, BatchError> {
        let len = self.varint()?;
        match len {
            -1 => Ok(None),
            n if n < -1 => Err(invalid(format!("{what} length {n}"))),
            n => {
                let n = n as usize;
                if n > self.remaining() {
                    return Err(invalid(format!("{what} length {n} runs past the batch")));
                }
                let start = self.pos;
                self.pos += n;
                Ok(Some((start, self.pos)))
            }
        }
    }
}

/// Walks exactly `count` records in `section`, checking every length, calling `f` on each, and
/// requiring that the records fill the section exactly. Returns the number of records walked.
pub(crate) fn walk_records(
    section: &[u8],
    count: i32,
    mut f: impl FnMut(&RecordView) -> Result<(), BatchError>,
) -> Result<i32, BatchError> {
    let mut r = Reader {
        buf: section,
        pos: 0,
    };
    for _ in 0..count {
        let len = r.varint()?;
        if len < 0 || len as usize > r.remaining() {
            return Err(invalid(format!(
                "record length {len} with {} bytes left",
                r.remaining()
            )));
        }
        let end = r.pos + len as usize;
        let mut rec = Reader {
            buf: &section[..end],
            pos: r.pos,
        };
        let _attributes = rec.u8()?;
        let timestamp_delta = rec.varlong()?;
        let offset_delta = rec.varint()?;
        let key = rec.field("key")?;
        let value = rec.field("value")?;
        let header_count = rec.varint()?;
        if header_count < 0 || header_count as usize > rec.remaining() {
            return Err(invalid(format!("header count {header_count}")));
        }
        let mut headers = Vec::new();
        for _ in 0..header_count {
            let (ks, ke) = rec
                .field("header key")?
                .ok_or_else(|| invalid("null header key"))?;
            let name = std::str::from_utf8(&section[ks..ke])
                .map_err(|_| invalid("header key is not UTF-8"))?;
            let hv = rec.field("header value")?;
            headers.push((name.to_string(), hv));
        }
        if rec.pos != end {
            return Err(invalid("record length does not match its fields"));
        }
        r.pos = end;
        f(&RecordView {
            offset_delta,
            timestamp_delta,
            key,
            value,
            headers,
        })?;
    }
    if r.remaining() != 0 {
        return Err(invalid(format!(
            "{} bytes after the last record",
            r.remaining()
        )));
    }
    Ok(count)
}

/// Decodes the records of one whole batch after checking its CRC. Control batches decode to no
/// records (their markers are not data). Decompressed contents are capped at `max_decompressed`.
pub fn decode_batch_records(
    batch: &Bytes,
    max_decompressed: usize,
) -> Result<(BatchHeader, Vec<DecodedRecord>), BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_len() != batch.len() {
        return Err(BatchError::Truncated(format!(
            "batch claims {} bytes, have {}",
            header.total_len(),
            batch.len()
        )));
    }
    verify_crc(&header, batch)?;
    if header.is_control() {
        return Ok((header, Vec::new()));
    }
    let section = match header.codec()? {
        Codec::None => batch.slice(BATCH_HEADER_LEN..),
        codec => Bytes::from(decompress(
            codec,
            &batch[BATCH_HEADER_LEN..],
            max_decompressed,
        )?),
    };
    let mut out = Vec::new();
    let slice = |r: Option<(usize, usize)>| r.map(|(s, e)| section.slice(s..e));
    walk_records(&section, header.record_count, |v| {
        let timestamp = match header.timestamp_type() {
            TimestampType::LogAppendTime => header.max_timestamp,
            TimestampType::CreateTime => header.base_timestamp.wrapping_add(v.timestamp_delta),
        };
        out.push(DecodedRecord {
            offset: header.base_offset + i64::from(v.offset_delta),
            timestamp,
            key: slice(v.key),
            value: slice(v.value),
            headers: v
                .headers
                .iter()
                .map(|(k, hv)| Header {
                    key: k.clone(),
                    value: slice(*hv),
                })
                .collect(),
        });
        Ok(())
    })?;
    Ok((header, out))
}

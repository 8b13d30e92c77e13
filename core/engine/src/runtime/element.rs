//! What flows between the tasks of a distributed job: keyed rows with event time, and
//! watermarks, each serialized into one exchange record.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A keyed row with its event time, in milliseconds since the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The key the keyed exchange routes by.
    pub key: Bytes,
    /// The payload.
    pub value: Bytes,
    /// Event time.
    pub ts: i64,
}

impl Row {
    /// A row of text key and value, for tests.
    #[cfg(test)]
    pub(crate) fn text(key: &str, value: &str, ts: i64) -> Self {
        Row {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value.to_string()),
            ts,
        }
    }
}

/// One element of a stream between tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Element {
    /// A row.
    Row(Row),
    /// No row at or below this event time follows from the sending subtask.
    Watermark(i64),
}

/// Why bytes from the exchange are not an element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElementError {
    /// Shorter than its header says.
    #[error("element truncated")]
    Truncated,
    /// An unknown tag byte.
    #[error("unknown element tag {0}")]
    Tag(u8),
}

const TAG_ROW: u8 = 0;
const TAG_WATERMARK: u8 = 1;

impl Element {
    /// The element's bytes: a tag, then (row) key length, key, event time, value, or
    /// (watermark) the event time.
    pub fn encode(&self) -> Bytes {
        match self {
            Element::Row(r) => {
                let mut b = BytesMut::with_capacity(1 + 4 + r.key.len() + 8 + r.value.len());
                b.put_u8(TAG_ROW);
                b.put_u32(u32::try_from(r.key.len()).expect("keys are under 4 GiB"));
                b.put_slice(&r.key);
                b.put_i64(r.ts);
                b.put_slice(&r.value);
                b.freeze()
            }
            Element::Watermark(w) => {
                let mut b = BytesMut::with_capacity(9);
                b.put_u8(TAG_WATERMARK);
                b.put_i64(*w);
                b.freeze()
            }
        }
    }

    /// Parses an element; the row's key and value share `bytes`' memory.
    pub fn decode(mut bytes: Bytes) -> Result<Self, ElementError> {
        if bytes.is_empty() {
            return Err(ElementError::Truncated);
        }
        match bytes.get_u8() {
            TAG_ROW => {
                if bytes.remaining() < 4 {
                    return Err(ElementError::Truncated);
                }
                let key_len = bytes.get_u32() as usize;
                if bytes.remaining() < key_len + 8 {
                    return Err(ElementError::Truncated);
                }
                let key = bytes.split_to(key_len);
                let ts = bytes.get_i64();
                Ok(Element::Row(Row {
                    key,
                    value: bytes,
                    ts,
                }))
            }
            TAG_WATERMARK => {
                if bytes.remaining() != 8 {
                    return Err(ElementError::Truncated);
                }
                Ok(Element::Watermark(bytes.get_i64()))
            }
            tag => Err(ElementError::Tag(tag)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_round_trip_and_bad_bytes_are_errors() {
        let row = Element::Row(Row {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"42"),
            ts: -7,
        });
        assert_eq!(Element::decode(row.encode()), Ok(row));
        let wm = Element::Watermark(i64::MAX);
        assert_eq!(Element::decode(wm.encode()), Ok(wm));
        assert_eq!(Element::decode(Bytes::new()), Err(ElementError::Truncated));
        assert_eq!(
            Element::decode(Bytes::from_static(&[0, 255, 255, 255, 255])),
            Err(ElementError::Truncated)
        );
        assert_eq!(
            Element::decode(Bytes::from_static(&[9])),
            Err(ElementError::Tag(9))
        );
    }
}

//! What flows through a job: records with event timestamps, watermarks and idleness marks, and
//! the bytes they are when they cross the network between subtasks.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Event time, in milliseconds since the epoch.
pub type Timestamp = i64;

/// The watermark before any event time is known.
pub const MIN_WATERMARK: Timestamp = i64::MIN;
/// The watermark at the end of input: every event-time window may fire.
pub const MAX_WATERMARK: Timestamp = i64::MAX;

/// Largest record value decoded from the exchange, in bytes: an exchange buffer is smaller
/// still, so a length field inside a record that claims more is malformed, never an allocation.
const RECORD_DECODE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// What a job's records are: cloned when a stream fans out, serialized when they cross the
/// network or live in state. Any serde type qualifies.
pub trait Data: Clone + Serialize + DeserializeOwned + 'static {}

impl<T: Clone + Serialize + DeserializeOwned + 'static> Data for T {}

/// A value with its event timestamp, if it has one.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord<T> {
    /// The value.
    pub value: T,
    /// Event time.
    pub timestamp: Option<Timestamp>,
}

/// One element of a stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Element<T> {
    /// A record.
    Record(StreamRecord<T>),
    /// No record with a timestamp at or below this will follow (unless late).
    Watermark(Timestamp),
    /// The stream has nothing to say for now: operators that combine it with other inputs
    /// leave it out of their watermark until it sends a record or a watermark again.
    Idle,
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
    /// The value does not decode as the edge's type.
    #[error("element value: {0}")]
    Value(String),
}

const TAG_RECORD: u8 = 0;
const TAG_WATERMARK: u8 = 1;
const TAG_IDLE: u8 = 2;
const FLAG_TIMESTAMP: u8 = 1;

/// Whether encoded element `bytes` is a record (not a watermark or idleness mark).
pub(crate) fn is_record(bytes: &[u8]) -> bool {
    bytes.first() == Some(&TAG_RECORD)
}

/// The event time of encoded record `bytes`, if it is a record that carries one.
pub(crate) fn record_timestamp(bytes: &[u8]) -> Option<Timestamp> {
    match bytes {
        [TAG_RECORD, FLAG_TIMESTAMP, ts @ ..] if ts.len() >= 8 => {
            Some(i64::from_be_bytes(ts[..8].try_into().ok()?))
        }
        _ => None,
    }
}

fn codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<RECORD_DECODE_BYTES_MAX>()
}

impl<T: Serialize + DeserializeOwned> Element<T> {
    /// The element's bytes: a tag, then (record) a flag byte, the timestamp if there is one
    /// and the value in bincode, or (watermark) the event time.
    pub fn encode(&self) -> Result<Bytes, ElementError> {
        match self {
            Element::Record(r) => {
                let mut b = BytesMut::with_capacity(64);
                b.put_u8(TAG_RECORD);
                match r.timestamp {
                    Some(ts) => {
                        b.put_u8(FLAG_TIMESTAMP);
                        b.put_i64(ts);
                    }
                    None => b.put_u8(0),
                }
                let mut w = b.writer();
                bincode::serde::encode_into_std_write(&r.value, &mut w, codec())
                    .map_err(|e| ElementError::Value(e.to_string()))?;
                Ok(w.into_inner().freeze())
            }
            Element::Watermark(w) => {
                let mut b = BytesMut::with_capacity(9);
                b.put_u8(TAG_WATERMARK);
                b.put_i64(*w);
                Ok(b.freeze())
            }
            Element::Idle => Ok(Bytes::from_static(&[TAG_IDLE])),
        }
    }

    /// Parses an element.
    pub fn decode(mut bytes: Bytes) -> Result<Self, ElementError> {
        if bytes.is_empty() {
            return Err(ElementError::Truncated);
        }
        match bytes.get_u8() {
            TAG_RECORD => {
                if bytes.is_empty() {
                    return Err(ElementError::Truncated);
                }
                let timestamp = match bytes.get_u8() {
                    FLAG_TIMESTAMP if bytes.remaining() >= 8 => Some(bytes.get_i64()),
                    FLAG_TIMESTAMP => return Err(ElementError::Truncated),
                    0 => None,
                    flag => return Err(ElementError::Value(format!("record flags {flag}"))),
                };
                let (value, used) = bincode::serde::decode_from_slice(&bytes, codec())
                    .map_err(|e| ElementError::Value(e.to_string()))?;
                if used != bytes.len() {
                    return Err(ElementError::Value(format!(
                        "{} bytes after the value",
                        bytes.len() - used
                    )));
                }
                Ok(Element::Record(StreamRecord { value, timestamp }))
            }
            TAG_WATERMARK => {
                if bytes.remaining() != 8 {
                    return Err(ElementError::Truncated);
                }
                Ok(Element::Watermark(bytes.get_i64()))
            }
            TAG_IDLE if bytes.is_empty() => Ok(Element::Idle),
            TAG_IDLE => Err(ElementError::Value("bytes after an idle mark".into())),
            tag => Err(ElementError::Tag(tag)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_round_trip_and_bad_bytes_are_errors() {
        let record = Element::Record(StreamRecord {
            value: ("k".to_string(), 42u64),
            timestamp: Some(-7),
        });
        assert_eq!(record_timestamp(&record.encode().unwrap()), Some(-7));
        assert_eq!(Element::decode(record.encode().unwrap()), Ok(record));
        let bare = Element::Record(StreamRecord {
            value: 3u8,
            timestamp: None,
        });
        assert_eq!(record_timestamp(&bare.encode().unwrap()), None);
        assert_eq!(Element::decode(bare.encode().unwrap()), Ok(bare));
        assert_eq!(record_timestamp(&[TAG_RECORD, FLAG_TIMESTAMP, 1]), None);
        for el in [Element::<u8>::Watermark(i64::MAX), Element::Idle] {
            assert_eq!(Element::decode(el.encode().unwrap()), Ok(el));
        }
        assert_eq!(
            Element::<u8>::decode(Bytes::new()),
            Err(ElementError::Truncated)
        );
        assert_eq!(
            Element::<u8>::decode(Bytes::from_static(&[0, 1, 0, 0])),
            Err(ElementError::Truncated)
        );
        assert_eq!(
            Element::<u8>::decode(Bytes::from_static(&[9])),
            Err(ElementError::Tag(9))
        );
        // A string whose length prefix claims far more than the bytes hold is refused
        // without allocating it.
        let claim = Bytes::from_static(&[0, 0, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
        assert!(matches!(
            Element::<String>::decode(claim),
            Err(ElementError::Value(_))
        ));
    }
}

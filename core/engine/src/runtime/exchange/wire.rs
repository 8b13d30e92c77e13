//! The exchange's messages and their bytes.
//!
//! Every message is one frame of the shape the Kafka wire uses (a 4-byte big-endian size, then
//! the body; see [`weir_wire::frame`]), and a body starts with a one-byte tag:
//!
//! ```text
//! consumer -> producer   1 Hello   subpartition:u32 credit:u32
//!                        2 Credit  credit:u32
//! producer -> consumer   3 Buffer  backlog:u32 { length:u32 record }*
//!                        4 Event   kind:u8 (0 end-of-partition | 1 barrier checkpoint_id:u64)
//!                        5 Keepalive
//! ```
//!
//! Every producer message carries a sequence number (u32, after the tag) so that the consumer
//! notices lost frames; keepalives and credit repeats keep both directions talking, so that a
//! stalled connection shows as silence (see [`read_frame_within`]).
//!
//! Decoding takes untrusted bytes and returns a [`WireError`] for anything it cannot parse.

use super::error::ExchangeError;
use super::event::Event;
use bytes::{Buf, Bytes};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use weir_wire::frame::read_frame;

/// Bytes in front of a buffer's records: the tag and the backlog.
pub const BUFFER_HEADER_BYTES: usize = 1 + 4 + 4;
/// Bytes in front of each record in a buffer: its length.
pub const RECORD_HEADER_BYTES: usize = 4;

const TAG_HELLO: u8 = 1;
const TAG_CREDIT: u8 = 2;
const TAG_BUFFER: u8 = 3;
const TAG_EVENT: u8 = 4;
const TAG_KEEPALIVE: u8 = 5;
const EVENT_END: u8 = 0;
const EVENT_BARRIER: u8 = 1;

/// Why a frame's body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body is empty.
    #[error("empty message")]
    Empty,
    /// The tag is not one this direction carries.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// A known message arrived where the protocol does not allow it.
    #[error("unexpected {0} message")]
    Unexpected(&'static str),
    /// The event kind is unknown.
    #[error("unknown event kind {0}")]
    UnknownEvent(u8),
    /// The body is shorter or longer than its message.
    #[error("{what} message of {len} bytes has the wrong size")]
    BadSize {
        /// Which message.
        what: &'static str,
        /// Body size.
        len: usize,
    },
    /// A record's length runs past the end of its buffer.
    /// A frame's number is not the next one: the network lost frames.
    #[error("frame {got} arrived where frame {expected} was due: frames were lost")]
    Gap {
        /// The number due.
        expected: u32,
        /// The number that came.
        got: u32,
    },
    #[error("record at offset {offset} claims {claimed} bytes, {remaining} remain")]
    RecordOverrun {
        /// Offset of the record's length in the buffer.
        offset: usize,
        /// Length it claims.
        claimed: usize,
        /// Bytes left after the length.
        remaining: usize,
    },
}

/// What a consumer tells a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToProducer {
    /// Opens the connection for `subpartition`, granting `credit` buffers.
    Hello {
        /// The subpartition this connection reads.
        subpartition: u32,
        /// Initial credit: the channel's exclusive buffers.
        credit: u32,
    },
    /// Credit granted over the connection's life, the hello's included. A running total
    /// rather than a difference, so that a lost or repeated grant is made good by the next.
    Credit {
        /// Buffers granted in all.
        total: u64,
    },
}

/// What a producer tells a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToConsumer {
    /// A buffer of length-prefixed records.
    Buffer {
        /// Finished buffers still queued behind this one.
        backlog: u32,
        /// The records, each with its 4-byte length.
        records: Bytes,
    },
    /// An event, in order with the buffers.
    Event(Event),
    /// Nothing to say: sent when the producer has been quiet for a keepalive interval.
    Keepalive,
}

impl ToProducer {
    /// The frame body.
    pub fn encode(self) -> Vec<u8> {
        match self {
            ToProducer::Hello {
                subpartition,
                credit,
            } => [
                &[TAG_HELLO][..],
                &subpartition.to_be_bytes(),
                &credit.to_be_bytes(),
            ]
            .concat(),
            ToProducer::Credit { total } => [&[TAG_CREDIT][..], &total.to_be_bytes()].concat(),
        }
    }

    /// Decodes a frame body.
    pub fn decode(mut body: Bytes) -> Result<Self, WireError> {
        let len = body.len();
        match take_tag(&mut body)? {
            TAG_HELLO if len == 9 => Ok(ToProducer::Hello {
                subpartition: body.get_u32(),
                credit: body.get_u32(),
            }),
            TAG_CREDIT if len == 9 => Ok(ToProducer::Credit {
                total: body.get_u64(),
            }),
            TAG_HELLO => Err(WireError::BadSize { what: "hello", len }),
            TAG_CREDIT => Err(WireError::BadSize {
                what: "credit",
                len,
            }),
            tag => Err(WireError::UnknownTag(tag)),
        }
    }
}

impl ToConsumer {
    /// Decodes a frame body into its sequence number and message.
    pub fn decode(mut body: Bytes) -> Result<(u32, Self), WireError> {
        let len = body.len();
        let tag = take_tag(&mut body)?;
        if body.len() < 4 {
            return Err(match tag {
                TAG_BUFFER => WireError::BadSize {
                    what: "buffer",
                    len,
                },
                TAG_EVENT => WireError::BadSize { what: "event", len },
                TAG_KEEPALIVE => WireError::BadSize {
                    what: "keepalive",
                    len,
                },
                tag => WireError::UnknownTag(tag),
            });
        }
        let seq = body.get_u32();
        let message = match tag {
            TAG_BUFFER if len >= BUFFER_HEADER_BYTES => ToConsumer::Buffer {
                backlog: body.get_u32(),
                records: body,
            },
            TAG_BUFFER => {
                return Err(WireError::BadSize {
                    what: "buffer",
                    len,
                });
            }
            TAG_EVENT => match (body.first().copied(), body.len()) {
                (Some(EVENT_END), 1) => ToConsumer::Event(Event::EndOfPartition),
                (Some(EVENT_BARRIER), 9) => {
                    body.advance(1);
                    ToConsumer::Event(Event::Barrier {
                        checkpoint_id: body.get_u64(),
                    })
                }
                (Some(EVENT_END | EVENT_BARRIER) | None, _) => {
                    return Err(WireError::BadSize { what: "event", len });
                }
                (Some(kind), _) => return Err(WireError::UnknownEvent(kind)),
            },
            TAG_KEEPALIVE if body.is_empty() => ToConsumer::Keepalive,
            TAG_KEEPALIVE => {
                return Err(WireError::BadSize {
                    what: "keepalive",
                    len,
                });
            }
            tag => return Err(WireError::UnknownTag(tag)),
        };
        Ok((seq, message))
    }

    /// Writes this message, numbered `seq`, as one frame and flushes it.
    pub async fn write<W: AsyncWrite + Unpin>(&self, seq: u32, w: &mut W) -> io::Result<()> {
        match self {
            ToConsumer::Buffer { backlog, records } => {
                let mut head = [0u8; 4 + BUFFER_HEADER_BYTES];
                head[..4].copy_from_slice(&frame_size(BUFFER_HEADER_BYTES + records.len())?);
                head[4] = TAG_BUFFER;
                head[5..9].copy_from_slice(&seq.to_be_bytes());
                head[9..].copy_from_slice(&backlog.to_be_bytes());
                w.write_all(&head).await?;
                w.write_all(records).await?;
            }
            ToConsumer::Event(event) => {
                let kind = match event {
                    Event::EndOfPartition => vec![EVENT_END],
                    Event::Barrier { checkpoint_id } => {
                        [&[EVENT_BARRIER][..], &checkpoint_id.to_be_bytes()].concat()
                    }
                };
                write_body(w, &[&[TAG_EVENT][..], &seq.to_be_bytes(), &kind].concat()).await?;
            }
            ToConsumer::Keepalive => {
                write_body(w, &[&[TAG_KEEPALIVE][..], &seq.to_be_bytes()].concat()).await?;
            }
        }
        w.flush().await
    }
}

async fn write_body<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    w.write_all(&frame_size(body.len())?).await?;
    w.write_all(body).await
}

/// Reads one frame of at most `frame_bytes_max` bytes, failing with [`ExchangeError::Silent`]
/// if it has not fully arrived within `idle_ms`.
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    r: &mut R,
    frame_bytes_max: usize,
    idle_ms: u64,
) -> Result<Bytes, ExchangeError> {
    match tokio::time::timeout(
        Duration::from_millis(idle_ms),
        read_frame(r, frame_bytes_max),
    )
    .await
    {
        Ok(frame) => Ok(frame?),
        Err(_) => Err(ExchangeError::Silent { idle_ms }),
    }
}

/// Appends `record` with its length to a buffer being filled.
pub fn put_record(buffer: &mut Vec<u8>, record: &[u8]) {
    // The caller has checked the record against `buffer_bytes_max`, which fits in an i32.
    buffer.extend_from_slice(&(record.len() as u32).to_be_bytes());
    buffer.extend_from_slice(record);
}

/// Splits a buffer's bytes into its records, without copying them.
pub fn split_records(mut records: Bytes) -> Result<Vec<Bytes>, WireError> {
    let total = records.len();
    let mut out = Vec::new();
    while !records.is_empty() {
        let offset = total - records.len();
        if records.len() < RECORD_HEADER_BYTES {
            return Err(WireError::RecordOverrun {
                offset,
                claimed: RECORD_HEADER_BYTES,
                remaining: records.len(),
            });
        }
        let claimed = records.get_u32() as usize;
        if claimed > records.len() {
            return Err(WireError::RecordOverrun {
                offset,
                claimed,
                remaining: records.len(),
            });
        }
        out.push(records.split_to(claimed));
    }
    Ok(out)
}

fn take_tag(body: &mut Bytes) -> Result<u8, WireError> {
    if body.is_empty() {
        return Err(WireError::Empty);
    }
    Ok(body.get_u8())
}

fn frame_size(len: usize) -> io::Result<[u8; 4]> {
    i32::try_from(len)
        .map(i32::to_be_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 2 GiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_back_and_overruns_are_errors() {
        let mut buf = Vec::new();
        put_record(&mut buf, b"ab");
        put_record(&mut buf, b"");
        let records = split_records(Bytes::from(buf.clone())).expect("well formed");
        assert_eq!(records, [Bytes::from_static(b"ab"), Bytes::new()]);
        buf.truncate(buf.len() - 1);
        assert!(matches!(
            split_records(Bytes::from(buf)),
            Err(WireError::RecordOverrun { offset: 6, .. })
        ));
    }

    #[test]
    fn producer_messages_round_trip_and_bad_ones_are_errors() {
        for msg in [
            ToProducer::Hello {
                subpartition: 3,
                credit: 2,
            },
            ToProducer::Credit { total: 7 },
        ] {
            assert_eq!(ToProducer::decode(Bytes::from(msg.encode())), Ok(msg));
        }
        assert_eq!(ToProducer::decode(Bytes::new()), Err(WireError::Empty));
        assert_eq!(
            ToProducer::decode(Bytes::from_static(&[9])),
            Err(WireError::UnknownTag(9))
        );
        assert!(ToProducer::decode(Bytes::from_static(&[TAG_CREDIT, 0])).is_err());
        assert!(ToConsumer::decode(Bytes::from_static(&[TAG_EVENT, 7])).is_err());
        assert!(ToConsumer::decode(Bytes::from_static(&[TAG_EVENT, 0, 0, 0, 0, 7])).is_err());
        assert!(
            ToConsumer::decode(Bytes::from_static(&[
                TAG_EVENT,
                0,
                0,
                0,
                0,
                EVENT_BARRIER,
                1
            ]))
            .is_err()
        );
        assert_eq!(
            ToConsumer::decode(Bytes::from_static(&[TAG_EVENT, 0, 0, 0, 5, EVENT_END])),
            Ok((5, ToConsumer::Event(Event::EndOfPartition)))
        );
        assert_eq!(
            ToConsumer::decode(Bytes::from_static(&[TAG_KEEPALIVE, 0, 0, 0, 6])),
            Ok((6, ToConsumer::Keepalive))
        );
        assert!(ToConsumer::decode(Bytes::from_static(&[TAG_KEEPALIVE, 0, 0, 0, 6, 0])).is_err());
    }
}

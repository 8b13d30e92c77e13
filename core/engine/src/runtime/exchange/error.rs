//! Why an exchange failed.

use super::wire::WireError;
use std::io;
use std::sync::Arc;
use weir_wire::frame::FrameError;

/// Why an exchange operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// A socket failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// A frame could not be read: closed, cut short or over `frame_bytes_max`.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame was read but its contents are malformed.
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    /// The other end said nothing for `idle_timeout_ms`, not even a keepalive.
    #[error("nothing heard from the other end for {idle_ms} ms")]
    Silent {
        /// How long the silence lasted.
        idle_ms: u64,
    },
    /// The sender sent a buffer the receiver had not given it credit for.
    #[error("channel {channel} got a buffer without credit")]
    NoCredit {
        /// The input channel.
        channel: usize,
    },
    /// A record is too large for one buffer (records are not split across buffers).
    #[error("record of {record_bytes} bytes does not fit a buffer of {buffer_bytes_max} bytes")]
    RecordTooLarge {
        /// Size of the record.
        record_bytes: usize,
        /// Configured buffer size.
        buffer_bytes_max: usize,
    },
    /// The producer tried to use a subpartition after its end-of-partition.
    #[error("subpartition {0} is already finished")]
    Finished(usize),
    /// One input channel failed; the gate is unusable from then on.
    #[error("input channel {channel}: {source}")]
    Channel {
        /// The input channel.
        channel: usize,
        /// What went wrong on it.
        source: Arc<ExchangeError>,
    },
    /// One subpartition's connection failed; the partition is unusable from then on.
    #[error("subpartition {subpartition}: {source}")]
    Subpartition {
        /// The subpartition.
        subpartition: usize,
        /// What went wrong on it.
        source: Arc<ExchangeError>,
    },
}

//! Limits of one exchange, shared by both ends.

use super::wire::{BUFFER_HEADER_BYTES, RECORD_HEADER_BYTES};

/// Sizes, counts and timeouts of an exchange; every limit carries its unit in its name.
///
/// Both ends must use the same values: the receiver enforces `frame_bytes_max` on what the
/// sender builds from `buffer_bytes_max`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExchangeConfig {
    /// Largest buffer the sender fills before sending it, in bytes (records are not split, so
    /// this also caps one record plus its 4-byte length).
    pub buffer_bytes_max: usize,
    /// Longest a record may wait in a partly filled buffer before the buffer is sent anyway.
    pub buffer_timeout_ms: u64,
    /// Buffers one subpartition may hold (queued and being filled) before `send` waits.
    pub buffers_per_subpartition_max: usize,
    /// Buffers each input channel owns, announced as its initial credit.
    pub exclusive_buffers: usize,
    /// Buffers an input gate shares between its channels, lent to the ones with a backlog.
    pub floating_buffers: usize,
    /// Largest frame either end accepts, in bytes; checked before anything is allocated.
    pub frame_bytes_max: usize,
    /// Attempts to reach a producer before an input gate gives up on a channel.
    pub connect_attempts_max: u32,
    /// Pause between those attempts.
    pub connect_backoff_ms: u64,
    /// How often each end of a connection speaks when it has nothing else to say: the producer
    /// sends a keepalive frame, the consumer repeats its credit total.
    pub keepalive_interval_ms: u64,
    /// Longest either end waits without hearing from the other before it fails the channel.
    /// A network that drops a segment stalls the stream behind it without closing it; this
    /// turns that silent stall into an error the job can recover from.
    pub idle_timeout_ms: u64,
}

impl Default for ExchangeConfig {
    /// Flink's defaults where it has them: 32 KiB buffers, 100 ms timeout, 2 exclusive and 8
    /// floating buffers per gate.
    fn default() -> Self {
        Self {
            buffer_bytes_max: 32 * 1024,
            buffer_timeout_ms: 100,
            buffers_per_subpartition_max: 8,
            exclusive_buffers: 2,
            floating_buffers: 8,
            frame_bytes_max: 32 * 1024 + BUFFER_HEADER_BYTES,
            connect_attempts_max: 50,
            connect_backoff_ms: 100,
            keepalive_interval_ms: 500,
            idle_timeout_ms: 3_000,
        }
    }
}

impl ExchangeConfig {
    /// Panics unless the limits are usable together; called when a partition or gate is built.
    pub fn assert_valid(&self) {
        assert!(
            self.buffer_bytes_max > RECORD_HEADER_BYTES,
            "buffer_bytes_max must hold a record header and at least one byte"
        );
        assert!(
            self.buffers_per_subpartition_max >= 1,
            "a subpartition needs at least one buffer"
        );
        // Without an exclusive buffer a channel could end up with no credit at all while the
        // floating pool is lent out, and its sender could never report its backlog.
        assert!(
            self.exclusive_buffers >= 1,
            "every channel needs an exclusive buffer"
        );
        assert!(
            self.frame_bytes_max >= self.buffer_bytes_max + BUFFER_HEADER_BYTES,
            "frame_bytes_max must hold a full buffer and its header"
        );
        assert!(
            i32::try_from(self.frame_bytes_max).is_ok(),
            "frame_bytes_max must fit the 4-byte frame size"
        );
        assert!(
            self.connect_attempts_max >= 1,
            "an input gate must try to connect at least once"
        );
        assert!(
            self.keepalive_interval_ms >= 1,
            "keepalive_interval_ms must be positive"
        );
        // A lost keepalive or two must not fail a healthy channel.
        assert!(
            self.idle_timeout_ms >= 3 * self.keepalive_interval_ms,
            "idle_timeout_ms must cover at least three keepalive intervals"
        );
    }
}

//! Snapshots of an exchange's accounting: buffers and bytes held, backpressure, traffic.

/// One result partition's accounting at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SenderMetrics {
    /// Per subpartition, by index.
    pub subpartitions: Vec<SubpartitionMetrics>,
    /// Time `send` spent waiting for a free buffer, in milliseconds of tokio time.
    pub backpressured_ms: u64,
    /// The configured bound on each subpartition's buffers.
    pub buffers_per_subpartition_max: usize,
}

/// One subpartition's accounting at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubpartitionMetrics {
    /// Buffers held: finished ones waiting to go out plus the one being filled.
    pub buffers_queued: usize,
    /// Record bytes in those buffers.
    pub bytes_queued: usize,
    /// The most buffers ever held at once.
    pub buffers_queued_peak: usize,
    /// Buffers the consumer has granted and the sender has not used yet.
    pub credit: u32,
    /// Records written to the connection.
    pub records_sent: u64,
    /// Buffers written to the connection.
    pub buffers_sent: u64,
    /// Record bytes (with their lengths) written to the connection.
    pub bytes_sent: u64,
    /// Events written to the connection.
    pub events_sent: u64,
}

/// One input gate's accounting at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiverMetrics {
    /// Per input channel, by index.
    pub channels: Vec<ChannelMetrics>,
    /// Buffers holding data that the consumer has not finished with.
    pub buffers_in_use: usize,
    /// Record bytes in those buffers.
    pub bytes_in_use: usize,
    /// The most buffers ever in use at once.
    pub buffers_in_use_peak: usize,
    /// The bound on buffers in use: `channels * exclusive_buffers + floating_buffers`.
    pub buffers_in_use_max: usize,
    /// Floating buffers in the gate's pool, lent to no channel.
    pub floating_free: usize,
}

/// One input channel's accounting at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelMetrics {
    /// Buffers of this channel holding data the consumer has not finished with.
    pub buffers_in_use: usize,
    /// Record bytes in those buffers.
    pub bytes_in_use: usize,
    /// The most buffers this channel ever had in use at once.
    pub buffers_in_use_peak: usize,
    /// Floating buffers lent to this channel now, free or in use.
    pub floating_held: usize,
    /// Records that arrived.
    pub records_received: u64,
    /// Buffers that arrived.
    pub buffers_received: u64,
    /// Record bytes (with their lengths) that arrived.
    pub bytes_received: u64,
    /// Events that arrived.
    pub events_received: u64,
}

impl SenderMetrics {
    /// Records sent on all subpartitions.
    pub fn records_sent(&self) -> u64 {
        self.subpartitions.iter().map(|s| s.records_sent).sum()
    }

    /// Buffers sent on all subpartitions.
    pub fn buffers_sent(&self) -> u64 {
        self.subpartitions.iter().map(|s| s.buffers_sent).sum()
    }
}

impl ReceiverMetrics {
    /// Records received on all channels.
    pub fn records_received(&self) -> u64 {
        self.channels.iter().map(|c| c.records_received).sum()
    }

    /// Buffers received on all channels.
    pub fn buffers_received(&self) -> u64 {
        self.channels.iter().map(|c| c.buffers_received).sum()
    }
}

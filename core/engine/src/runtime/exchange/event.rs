//! Events: control messages that travel in order with a channel's buffers.

/// A control message in a subpartition's stream, delivered in order with the records around it.
///
/// Events are sent without credit: the receiver keeps them outside its buffer pool. A barrier
/// that had to wait for credit could sit behind a channel the consumer is not reading (a channel
/// blocked for alignment, or one whose floating buffers are all lent elsewhere), and a checkpoint
/// would stall until data moved; an unaligned barrier must even overtake data. Their memory is
/// bounded by how often they are emitted (one end per channel, one barrier per checkpoint), not
/// by credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The producer will send nothing more on this channel.
    EndOfPartition,
    /// Everything before this belongs to checkpoint `checkpoint_id`'s snapshot.
    Barrier {
        /// The checkpoint the barrier starts.
        checkpoint_id: u64,
    },
}

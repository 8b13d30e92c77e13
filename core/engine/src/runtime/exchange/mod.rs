//! Credit-based data exchange between stream tasks, with bounded memory and backpressure.
//!
//! ```text
//! producing task                                           consuming task
//! ResultPartition                                          InputGate
//!   subpartition 0 [filling|queued..] ==TCP==> channel 0 [exclusive bufs] \
//!   subpartition 1 [filling|queued..] ==TCP==> channel 1 [exclusive bufs]  } floating pool
//!                        <== credit (free buffers) ==                      /
//! ```
//!
//! The producer writes serialized records into its subpartition's buffer being filled. A
//! buffer is finished when it is full, when `buffer_timeout_ms` has passed since its first
//! record, or on [`ResultPartition::flush`] or an event. A subpartition holds at most
//! `buffers_per_subpartition_max` buffers (finished plus filling); when it needs another,
//! [`ResultPartition::send`] waits: that wait is the backpressure a slow consumer puts on its
//! producer, timed in `backpressured_ms`. Nothing is dropped.
//!
//! Each input channel owns `exclusive_buffers` buffers and announces them as credit when it
//! connects. The sender writes a buffer only while it holds credit and stamps it with its
//! backlog (finished buffers queued behind it); the gate lends the channel buffers from its
//! `floating_buffers` pool until the channel has the backlog plus its exclusive buffers free,
//! and announces each as credit. A buffer is returned once the consumer has read past its last
//! record in [`InputGate::next`]: an exclusive one to its channel, a floating one to its channel
//! if the channel still wants it, else to the pool for the channel that asked first. The
//! receiver therefore never holds more than `channels * exclusive_buffers + floating_buffers`
//! buffers, and a buffer sent without credit is rejected as a protocol error.
//!
//! Why credit rather than TCP's own window: several channels share a consumer, and a full
//! socket would stall the sender without telling it which channel is slow, while an idle channel
//! would pin buffers it never uses. Credit makes every buffer in flight one the receiver has
//! already set aside, and floating buffers go where the backlog is.
//!
//! [`Event`]s (end-of-partition, checkpoint barriers) travel in order with the buffers but need
//! no credit; see [`Event`] for why.
//!
//! Wire: one TCP connection per (subpartition, channel) through [`weir_seams::net`], opened by the
//! consumer with a hello naming the subpartition and its initial credit. Multiplexing channels
//! over one connection per host pair would save sockets, but it needs its own demultiplexing and
//! fairness; with credit there is no head-of-line blocking either way, so the simpler form comes
//! first. Frames are length-prefixed and checked against `frame_bytes_max` before allocation,
//! and the producer numbers them: a network that drops a frame (a simulated partition does)
//! shows as a gap, never as silently missing records;
//! anything malformed is an [`ExchangeError`]. A broken connection fails the partition or gate
//! for good: recovery is the job's restart from a checkpoint, not a replay here.

mod config;
mod error;
mod event;
mod metrics;
mod pool;
mod receiver;
mod sender;
mod subpartition;
mod wire;

pub use config::ExchangeConfig;
pub use error::ExchangeError;
pub use event::Event;
pub use metrics::{ChannelMetrics, ReceiverMetrics, SenderMetrics, SubpartitionMetrics};
pub use receiver::{ChannelSource, Delivery, InputGate};
pub use sender::ResultPartition;
pub use wire::WireError;

//! The receiver's buffers: each channel's exclusive ones, the gate's floating pool, and the
//! credit that announces them to the senders.
//!
//! Buffers are counted here, not allocated: a "buffer" is the right to hold up to
//! `buffer_bytes_max` bytes of one channel's data until the consumer has processed it. Every
//! free buffer a channel holds has been (or is about to be) announced to its sender as credit,
//! so a buffer arriving on a channel with no free buffer is a protocol violation, and buffers in
//! use can never exceed `channels * exclusive_buffers + floating_buffers`.

use super::metrics::{ChannelMetrics, ReceiverMetrics};
use std::collections::VecDeque;

/// Where a buffer in use came from, so it goes back there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// The channel's own.
    Exclusive,
    /// Lent from the gate's pool.
    Floating,
}

/// A buffer arrived on a channel that had no free buffer for it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct NoCredit;

#[derive(Debug, Default)]
struct Channel {
    exclusive_free: usize,
    /// Floating buffers lent to this channel and not filled yet.
    floating_free: usize,
    exclusive_in_use: usize,
    floating_in_use: usize,
    bytes_in_use: usize,
    in_use_peak: usize,
    /// Free buffers the channel wants: its sender's backlog plus its exclusive buffers.
    wanted: usize,
    /// Credit granted but not yet sent to the sender.
    unannounced: u32,
    ended: bool,
}

impl Channel {
    fn free(&self) -> usize {
        self.exclusive_free + self.floating_free
    }

    fn in_use(&self) -> usize {
        self.exclusive_in_use + self.floating_in_use
    }

    fn needs_floating(&self) -> bool {
        !self.ended && self.free() < self.wanted
    }
}

/// Buffer accounting for one input gate.
#[derive(Debug)]
pub(super) struct Pool {
    channels: Vec<Channel>,
    exclusive_per_channel: usize,
    floating_total: usize,
    floating_free: usize,
    /// Channels that asked for floating buffers the pool did not have, oldest first.
    waiting: VecDeque<usize>,
    in_use: usize,
    bytes_in_use: usize,
    in_use_peak: usize,
    in_use_max: usize,
}

impl Pool {
    /// A pool whose channels each hold `exclusive` buffers, already announced as their initial
    /// credit, and `floating` buffers to lend.
    pub(super) fn new(channels: usize, exclusive: usize, floating: usize) -> Self {
        Self {
            channels: (0..channels)
                .map(|_| Channel {
                    exclusive_free: exclusive,
                    wanted: exclusive,
                    ..Channel::default()
                })
                .collect(),
            exclusive_per_channel: exclusive,
            floating_total: floating,
            floating_free: floating,
            waiting: VecDeque::new(),
            in_use: 0,
            bytes_in_use: 0,
            in_use_peak: 0,
            in_use_max: channels * exclusive + floating,
        }
    }

    /// Takes a free buffer of `channel` for `bytes` of arrived data, then lends the channel
    /// floating buffers for the `backlog` its sender reported.
    pub(super) fn on_buffer(
        &mut self,
        channel: usize,
        bytes: usize,
        backlog: usize,
    ) -> Result<Origin, NoCredit> {
        let exclusive = self.exclusive_per_channel;
        let c = &mut self.channels[channel];
        // Floating first, so that the pool gets its buffers back as soon as possible.
        let origin = if c.floating_free > 0 {
            c.floating_free -= 1;
            c.floating_in_use += 1;
            Origin::Floating
        } else if c.exclusive_free > 0 {
            c.exclusive_free -= 1;
            c.exclusive_in_use += 1;
            Origin::Exclusive
        } else {
            return Err(NoCredit);
        };
        c.bytes_in_use += bytes;
        c.in_use_peak = c.in_use_peak.max(c.in_use());
        c.wanted = backlog.saturating_add(exclusive);
        self.in_use += 1;
        self.bytes_in_use += bytes;
        self.in_use_peak = self.in_use_peak.max(self.in_use);
        assert!(
            self.in_use <= self.in_use_max,
            "{} receiver buffers in use, over the bound of {}",
            self.in_use,
            self.in_use_max
        );
        self.lend(channel);
        Ok(origin)
    }

    /// Returns a buffer the consumer has processed: to its channel if the channel still wants
    /// it (announcing the credit), else to the pool for a waiting channel.
    pub(super) fn recycle(&mut self, channel: usize, origin: Origin, bytes: usize) {
        self.in_use -= 1;
        self.bytes_in_use -= bytes;
        let c = &mut self.channels[channel];
        c.bytes_in_use -= bytes;
        match origin {
            Origin::Exclusive => {
                c.exclusive_in_use -= 1;
                c.exclusive_free += 1;
                if !c.ended {
                    c.unannounced += 1;
                }
            }
            Origin::Floating => {
                c.floating_in_use -= 1;
                if c.needs_floating() {
                    c.floating_free += 1;
                    c.unannounced += 1;
                } else {
                    self.floating_free += 1;
                    self.serve_waiting();
                }
            }
        }
        self.debug_check();
    }

    /// The channel's sender has ended: its free floating buffers go back to the pool.
    pub(super) fn on_end(&mut self, channel: usize) {
        let c = &mut self.channels[channel];
        c.ended = true;
        c.unannounced = 0;
        self.floating_free += std::mem::take(&mut c.floating_free);
        self.serve_waiting();
        self.debug_check();
    }

    /// Takes the credit `channel` has to announce.
    pub(super) fn take_credit(&mut self, channel: usize) -> u32 {
        std::mem::take(&mut self.channels[channel].unannounced)
    }

    /// Channels with credit to announce.
    pub(super) fn channels_with_credit(&self) -> impl Iterator<Item = usize> + '_ {
        self.channels
            .iter()
            .enumerate()
            .filter(|(_, c)| c.unannounced > 0)
            .map(|(i, _)| i)
    }

    /// Fills the buffer fields of a metrics snapshot.
    pub(super) fn fill_metrics(&self, metrics: &mut ReceiverMetrics) {
        metrics.buffers_in_use = self.in_use;
        metrics.bytes_in_use = self.bytes_in_use;
        metrics.buffers_in_use_peak = self.in_use_peak;
        metrics.buffers_in_use_max = self.in_use_max;
        metrics.floating_free = self.floating_free;
    }

    /// Fills the buffer fields of one channel's metrics.
    pub(super) fn fill_channel_metrics(&self, channel: usize, metrics: &mut ChannelMetrics) {
        let c = &self.channels[channel];
        metrics.buffers_in_use = c.in_use();
        metrics.bytes_in_use = c.bytes_in_use;
        metrics.buffers_in_use_peak = c.in_use_peak;
        metrics.floating_held = c.floating_free + c.floating_in_use;
    }

    /// Lends `channel` floating buffers until it has what it wants, or queues it for later.
    fn lend(&mut self, channel: usize) {
        let c = &mut self.channels[channel];
        while c.needs_floating() && self.floating_free > 0 {
            self.floating_free -= 1;
            c.floating_free += 1;
            c.unannounced += 1;
        }
        if c.needs_floating() && !self.waiting.contains(&channel) {
            self.waiting.push_back(channel);
        }
    }

    /// Lends free floating buffers to waiting channels in the order they asked.
    fn serve_waiting(&mut self) {
        while self.floating_free > 0 {
            let Some(channel) = self.waiting.pop_front() else {
                return;
            };
            if self.channels[channel].needs_floating() {
                // Goes to the back of the queue if it still wants more.
                self.lend(channel);
            }
        }
    }

    /// Every buffer is in exactly one place.
    fn debug_check(&self) {
        debug_assert_eq!(
            self.floating_free
                + self
                    .channels
                    .iter()
                    .map(|c| c.floating_free + c.floating_in_use)
                    .sum::<usize>(),
            self.floating_total,
            "floating buffers leaked"
        );
        debug_assert!(
            self.channels
                .iter()
                .all(|c| c.exclusive_free + c.exclusive_in_use == self.exclusive_per_channel),
            "exclusive buffers leaked"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_with_backlog_borrows_floating_buffers_and_returns_them() {
        let mut pool = Pool::new(2, 1, 3);
        assert_eq!(pool.on_buffer(0, 10, 5), Ok(Origin::Exclusive));
        // Wants 5 + 1 free buffers, has 0: takes the whole pool and waits for more.
        assert_eq!(pool.take_credit(0), 3);
        assert_eq!(pool.floating_free, 0);
        for _ in 0..3 {
            assert_eq!(pool.on_buffer(0, 10, 0), Ok(Origin::Floating));
        }
        assert_eq!(pool.on_buffer(0, 10, 0), Err(NoCredit));
        // Backlog now 0: the exclusive buffer is re-announced, and once the channel has its one
        // free buffer a recycled floating buffer goes back to the pool.
        pool.recycle(0, Origin::Exclusive, 10);
        assert_eq!(pool.take_credit(0), 1);
        pool.recycle(0, Origin::Floating, 10);
        assert_eq!((pool.floating_free, pool.take_credit(0)), (1, 0));
        // The other channel reports a backlog and gets the free floating buffer, then waits.
        assert_eq!(pool.on_buffer(1, 10, 4), Ok(Origin::Exclusive));
        assert_eq!((pool.take_credit(1), pool.floating_free), (1, 0));
        pool.recycle(0, Origin::Floating, 10);
        assert_eq!(
            pool.take_credit(1),
            1,
            "a returned buffer goes to the waiting channel"
        );
        pool.on_end(1);
        assert_eq!(pool.floating_free, 2);
    }
}

//! The leader epoch cache of one partition: where each leader epoch's batches start.
//!
//! Derived from the `partition_leader_epoch` of the batches in the log (every batch is stamped
//! by the leader that appended it), so it is exactly as durable as the log and needs no file of
//! its own. It answers the question a follower asks to find where its log diverges: where does
//! epoch `e` end?

/// Start offsets by epoch, in increasing order of both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    /// Notes a batch of `epoch` starting at `offset`.
    pub fn assign(&mut self, epoch: i32, offset: i64) {
        if epoch < 0 {
            return;
        }
        match self.entries.last() {
            Some((last, _)) if *last >= epoch => {}
            _ => self.entries.push((epoch, offset)),
        }
        debug_assert!(
            self.entries
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
    }

    /// Epoch of the last batch, or -1 for an empty log.
    pub fn last_epoch(&self) -> i32 {
        self.entries.last().map_or(-1, |(e, _)| *e)
    }

    /// The largest epoch at or below `epoch` and the offset where it ends (the start of the next
    /// epoch, or `log_end`). `(-1, -1)` if the cache holds no such epoch.
    pub fn end_of(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        let i = self.entries.partition_point(|(e, _)| *e <= epoch);
        if i == 0 {
            return (-1, -1);
        }
        let end = self.entries.get(i).map_or(log_end, |(_, start)| *start);
        (self.entries[i - 1].0, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_end_where_the_next_begins() {
        let mut c = EpochCache::default();
        assert_eq!(c.end_of(3, 0), (-1, -1));
        c.assign(0, 0);
        c.assign(0, 5);
        c.assign(2, 10);
        c.assign(5, 20);
        assert_eq!(c.last_epoch(), 5);
        assert_eq!(c.end_of(0, 30), (0, 10));
        assert_eq!(
            c.end_of(1, 30),
            (0, 10),
            "epoch 1 wrote nothing: answer for epoch 0"
        );
        assert_eq!(c.end_of(4, 30), (2, 20));
        assert_eq!(c.end_of(9, 30), (5, 30));
    }
}

//! A partition's fetch position and the rules that move it: fetched records advance it, an
//! out-of-range answer calls for validation (or, once validated against that very leader
//! epoch, for the reset policy), and a validation passes it, moves it back to where the
//! leader's log diverged, or unsets it.

use super::validate::Validation;

/// What the consumer knows of one assigned partition's position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct PartState {
    /// Next offset to fetch; `None` until reset.
    pub offset: Option<i64>,
    /// Leader epoch of the last batch consumed below `offset`, or the one a reset found the
    /// offset in; `None` after a seek, when there is no epoch to validate.
    pub epoch: Option<i32>,
    /// Validate against the current leader before fetching again.
    pub awaiting_validation: bool,
    /// Leader epoch (from the metadata) of the last fetch that succeeded or check that passed.
    pub leader_epoch: Option<i32>,
    /// Leader epoch in which a validation passed since the position last moved: an
    /// out-of-range answer to a fetch in that epoch is taken as true.
    pub validated_in: Option<i32>,
}

/// What a validation did to a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Checked {
    /// The position is on the leader's log.
    Passed,
    /// The leader's log diverged below the position: it moved from `from` to `to`.
    Truncated { from: i64, to: i64 },
    /// The leader has no epoch at or below the position's, so where its log diverged is
    /// unknown: the position is unset, for the reset policy.
    Unknown { from: i64 },
    /// Truncation detected without a reset policy: the position stays, still awaiting
    /// validation. `diverges_at` is the leader's end offset for the epoch, if it has one.
    Refused { from: i64, diverges_at: Option<i64> },
}

impl PartState {
    /// At `offset`, consumed up to there in `epoch`.
    pub fn at(offset: i64, epoch: Option<i32>) -> Self {
        Self {
            offset: Some(offset),
            epoch,
            ..Self::default()
        }
    }

    /// Whether the metadata shows another leader epoch than the one the position was last
    /// fetched or validated in: with an epoch to check, the position needs validating.
    pub fn leader_changed(&self, current: i32) -> bool {
        self.epoch.is_some()
            && !self.awaiting_validation
            && self.leader_epoch.is_some_and(|e| e != current)
    }

    /// A fetch in `leader_epoch` succeeded; with records it moved the position to `next`, the
    /// last batch having been written in `epoch`.
    pub fn fetched(&mut self, leader_epoch: i32, next: i64, epoch: Option<i32>) {
        if self.offset.is_some_and(|o| next > o) {
            *self = Self::at(next, epoch.or(self.epoch));
        }
        self.leader_epoch = Some(leader_epoch);
    }

    /// `OFFSET_OUT_OF_RANGE` for a fetch in `leader_epoch`. Returns true when the position
    /// was validated against that leader epoch already: it is truly out of range, and now
    /// unset for the reset policy. Otherwise it awaits validation.
    pub fn out_of_range(&mut self, leader_epoch: i32) -> bool {
        if self.validated_in == Some(leader_epoch) {
            *self = Self::default();
            return true;
        }
        self.awaiting_validation = true;
        false
    }

    /// Applies the current leader's answer to a validation.
    pub fn validated(&mut self, answer: Validation, reset_policy: bool) -> Checked {
        let Some(from) = self.offset else {
            return Checked::Passed;
        };
        let (leader_epoch, diverged) = match answer {
            Validation::Unchecked { leader_epoch } => (leader_epoch, None),
            Validation::EpochEnd {
                leader_epoch,
                epoch,
                end_offset,
            } if epoch < 0 || end_offset < 0 => (leader_epoch, Some(None)),
            Validation::EpochEnd {
                leader_epoch,
                epoch,
                end_offset,
            } if end_offset < from => (leader_epoch, Some(Some((end_offset, epoch)))),
            Validation::EpochEnd { leader_epoch, .. } => (leader_epoch, None),
        };
        match diverged {
            None => {
                self.pass(leader_epoch);
                Checked::Passed
            }
            Some(end) if !reset_policy => Checked::Refused {
                from,
                diverges_at: end.map(|(o, _)| o),
            },
            Some(Some((to, epoch))) => {
                *self = Self::at(to, Some(epoch));
                self.pass(leader_epoch);
                Checked::Truncated { from, to }
            }
            Some(None) => {
                *self = Self::default();
                Checked::Unknown { from }
            }
        }
    }

    fn pass(&mut self, leader_epoch: i32) {
        self.awaiting_validation = false;
        self.leader_epoch = Some(leader_epoch);
        self.validated_in = Some(leader_epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumed(offset: i64, epoch: i32, leader_epoch: i32) -> PartState {
        let mut p = PartState::at(0, None);
        p.fetched(leader_epoch, offset, Some(epoch));
        p
    }

    #[test]
    fn out_of_range_is_validated_first_and_believed_only_from_a_validated_leader_epoch() {
        let mut p = consumed(87, 1, 1);
        assert!(
            !p.out_of_range(0),
            "a former leader's answer is not believed"
        );
        assert!(p.awaiting_validation);
        assert_eq!(p.offset, Some(87));
        let answer = Validation::EpochEnd {
            leader_epoch: 1,
            epoch: 1,
            end_offset: 90,
        };
        assert_eq!(p.validated(answer, true), Checked::Passed);
        assert_eq!((p.offset, p.awaiting_validation), (Some(87), false));
        assert!(!p.out_of_range(2), "another leader epoch validates again");
        p.validated(Validation::Unchecked { leader_epoch: 2 }, true);
        assert!(p.out_of_range(2), "out of range on the validated leader");
        assert_eq!(p.offset, None);
    }

    #[test]
    fn truncation_moves_to_the_end_of_the_epoch_or_unsets_when_unknown() {
        let mut p = consumed(20, 0, 0);
        assert!(p.leader_changed(1));
        let answer = Validation::EpochEnd {
            leader_epoch: 1,
            epoch: 0,
            end_offset: 10,
        };
        assert_eq!(
            p.validated(answer, false),
            Checked::Refused {
                from: 20,
                diverges_at: Some(10)
            }
        );
        assert_eq!(p.offset, Some(20), "no reset policy: the position stays");
        assert_eq!(
            p.validated(answer, true),
            Checked::Truncated { from: 20, to: 10 }
        );
        assert_eq!(
            (p.offset, p.epoch, p.leader_epoch),
            (Some(10), Some(0), Some(1))
        );
        assert!(!p.leader_changed(1));
        let unknown = Validation::EpochEnd {
            leader_epoch: 1,
            epoch: -1,
            end_offset: -1,
        };
        let mut q = consumed(20, 0, 0);
        assert_eq!(q.validated(unknown, true), Checked::Unknown { from: 20 });
        assert_eq!(q.offset, None);
    }

    #[test]
    fn fetching_moves_forward_only_and_a_seek_has_nothing_to_validate() {
        let mut p = consumed(20, 3, 3);
        p.fetched(3, 20, None);
        assert_eq!((p.offset, p.epoch), (Some(20), Some(3)));
        p.fetched(4, 25, Some(4));
        assert_eq!(
            (p.offset, p.epoch, p.leader_epoch),
            (Some(25), Some(4), Some(4))
        );
        let seeked = PartState::at(5, None);
        assert!(!seeked.leader_changed(9));
    }
}

//! A partition replica's role and the replication protocol around it: a leader serves its
//! followers' fetches, tracks how far each has durably copied, derives the high watermark from
//! the ISR, and asks the controller to shrink or expand the ISR; a follower copies batches from
//! its leader, fsyncs them before reporting them, and truncates where its log diverges from the
//! leader's (found through the leader epoch cache).

use super::{Inner, Partition, storage_error};
use crate::cluster::metadata::PartitionImage;
use crate::cluster::protocol::{AlterPartition, CodedError, FetchPartition, FetchedPartition};
use crate::log::ReadError;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;
use weir_wire::record::{BatchIter, marker_of, verify_crc};

/// How long an ISR change may stay unresolved before the leader asks again.
const ISR_RESEND_MS: u64 = 2_000;

/// How far a follower has copied, as its leader sees it.
#[derive(Clone, Copy, Debug)]
struct Progress {
    /// Durable log end the follower last reported, or -1 before its first fetch.
    log_end: i64,
    /// Last time the follower was fully caught up.
    caught_up_at: Instant,
    /// The leader's log end when it answered the follower's previous fetch, and when.
    prev_leader_end: i64,
    prev_fetch_at: Instant,
}

/// An ISR change sent to the controller and not yet seen in the metadata.
#[derive(Clone, Debug)]
struct PendingIsr {
    isr: Vec<i32>,
    /// The partition epoch the change was computed from.
    base: i32,
    sent_at: Instant,
}

/// A leader's state.
#[derive(Clone, Debug)]
pub(crate) struct Leading {
    epoch: i32,
    partition_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    pending: Option<PendingIsr>,
    followers: BTreeMap<i32, Progress>,
    /// Log end when this epoch began: a follower must reach it to join the ISR.
    epoch_start: i64,
}

impl Leading {
    /// The ISR counted for the high watermark: the committed one, plus any members an
    /// in-flight change would add.
    fn maximal_isr(&self) -> impl Iterator<Item = i32> + '_ {
        let extra = self
            .pending
            .iter()
            .flat_map(|p| p.isr.iter().copied())
            .filter(|r| !self.isr.contains(r));
        self.isr.iter().copied().chain(extra)
    }
}

/// A replica's role.
#[derive(Clone, Debug)]
pub(crate) enum Role {
    /// Neither leading nor following: before the broker has caught up with the metadata, or
    /// while the partition has no leader.
    Inactive,
    /// Leading.
    Leader(Leading),
    /// Following `leader` in `epoch`; `leader_hw` is the leader's last reported high watermark.
    Follower {
        leader: i32,
        epoch: i32,
        leader_hw: i64,
    },
}

/// The role the metadata assigns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RoleTarget {
    /// No role.
    Inactive,
    /// Lead with this state.
    Leader {
        /// Leader epoch.
        epoch: i32,
        /// Partition epoch.
        partition_epoch: i32,
        /// Replicas.
        replicas: Vec<i32>,
        /// Committed ISR.
        isr: Vec<i32>,
    },
    /// Follow `leader`.
    Follower {
        /// Leader.
        leader: i32,
        /// Leader epoch.
        epoch: i32,
    },
}

impl RoleTarget {
    /// The role broker `me` has in partition `p`.
    pub fn of(p: &PartitionImage, me: i32) -> Self {
        if p.leader == me {
            RoleTarget::Leader {
                epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
            }
        } else if p.leader >= 0 && p.replicas.contains(&me) {
            RoleTarget::Follower {
                leader: p.leader,
                epoch: p.leader_epoch,
            }
        } else {
            RoleTarget::Inactive
        }
    }
}

impl Role {
    pub fn leader_epoch(&self) -> Option<i32> {
        match self {
            Role::Leader(l) => Some(l.epoch),
            _ => None,
        }
    }

    /// The log end when this replica began leading in its current epoch.
    pub fn epoch_start(&self) -> Option<i64> {
        match self {
            Role::Leader(l) => Some(l.epoch_start),
            _ => None,
        }
    }

    /// Size of the committed ISR while leading; 0 otherwise.
    pub fn isr_len(&self) -> usize {
        match self {
            Role::Leader(l) => l.isr.len(),
            _ => 0,
        }
    }

    /// The high watermark this role allows, given this replica's own durable end; `None` when
    /// the role says nothing (inactive).
    pub fn hw_candidate(&self, me: i32, own: i64, ignore_isr: bool) -> Option<i64> {
        match self {
            Role::Inactive => None,
            Role::Follower { leader_hw, .. } => Some((*leader_hw).min(own)),
            Role::Leader(_) if ignore_isr => Some(own),
            Role::Leader(l) => Some(
                l.maximal_isr()
                    .filter(|r| *r != me)
                    .map(|r| l.followers.get(&r).map_or(-1, |p| p.log_end))
                    .fold(own, i64::min),
            ),
        }
    }
}

impl Partition {
    /// Takes up the role the metadata assigns. A new leader epoch starts afresh: followers'
    /// progress is unknown until they fetch, so the high watermark waits for them.
    pub async fn set_role(&self, target: RoleTarget) {
        let mut guard = self.inner.lock().await;
        let inner = &mut *guard;
        let log_end = inner.log.as_ref().map_or(0, |l| l.log_end_offset());
        let now = Instant::now();
        match (&mut inner.role, target) {
            (
                Role::Leader(l),
                RoleTarget::Leader {
                    epoch,
                    partition_epoch,
                    replicas,
                    isr,
                },
            ) if l.epoch == epoch => {
                if partition_epoch > l.partition_epoch {
                    for r in isr.iter().filter(|r| !l.isr.contains(r)) {
                        // A member that joined stays caught up as of now.
                        if let Some(p) = l.followers.get_mut(r) {
                            p.caught_up_at = now;
                        }
                    }
                    l.partition_epoch = partition_epoch;
                    l.replicas = replicas;
                    l.isr = isr;
                    if l.pending.as_ref().is_some_and(|p| p.base < partition_epoch) {
                        l.pending = None;
                    }
                }
            }
            (
                _,
                RoleTarget::Leader {
                    epoch,
                    partition_epoch,
                    replicas,
                    isr,
                },
            ) => {
                let followers = isr
                    .iter()
                    .map(|r| {
                        (
                            *r,
                            Progress {
                                log_end: -1,
                                caught_up_at: now,
                                prev_leader_end: i64::MAX,
                                prev_fetch_at: now,
                            },
                        )
                    })
                    .collect();
                tracing::debug!(topic = %self.id.topic, partition = self.id.index, epoch, log_end, "becoming leader");
                inner.role = Role::Leader(Leading {
                    epoch,
                    partition_epoch,
                    replicas,
                    isr,
                    pending: None,
                    followers,
                    epoch_start: log_end,
                });
            }
            (
                Role::Follower { leader, epoch, .. },
                RoleTarget::Follower {
                    leader: l,
                    epoch: e,
                },
            ) if *leader == l && *epoch == e => {}
            (_, RoleTarget::Follower { leader, epoch }) => {
                inner.role = Role::Follower {
                    leader,
                    epoch,
                    leader_hw: inner.high_watermark,
                };
            }
            (_, RoleTarget::Inactive) => inner.role = Role::Inactive,
        }
        self.advance_hw(inner);
    }

    /// Answers a follower's fetch as leader, noting how far the follower has durably copied.
    pub async fn serve_follower(
        &self,
        replica: i32,
        f: &FetchPartition,
        max_bytes: usize,
    ) -> FetchedPartition {
        let mut guard = self.inner.lock().await;
        let inner = &mut *guard;
        let err =
            |code: ResponseError| FetchedPartition::Error(CodedError::new(code, String::new()));
        let Some(log) = &inner.log else {
            return err(storage_error());
        };
        let Role::Leader(l) = &mut inner.role else {
            return err(ResponseError::NotLeaderOrFollower);
        };
        if f.topic_id != self.id.topic_id {
            return err(ResponseError::UnknownTopicId);
        }
        if f.leader_epoch < l.epoch {
            return err(ResponseError::FencedLeaderEpoch);
        }
        if f.leader_epoch > l.epoch {
            return err(ResponseError::UnknownLeaderEpoch);
        }
        if !l.replicas.contains(&replica) || replica == self.me {
            return err(ResponseError::NotLeaderOrFollower);
        }
        let (log_start, log_end) = (log.log_start_offset(), log.log_end_offset());
        if f.last_fetched_epoch >= 0 {
            let (epoch, end) = inner.epochs.end_of(f.last_fetched_epoch, log_end);
            if epoch != f.last_fetched_epoch || end < f.fetch_offset {
                return FetchedPartition::Diverging {
                    epoch,
                    end_offset: end,
                };
            }
        }
        if f.fetch_offset > log_end {
            return FetchedPartition::Diverging {
                epoch: -1,
                end_offset: log_end,
            };
        }
        if f.fetch_offset < log_start {
            return FetchedPartition::OutOfRange { log_start };
        }
        let now = Instant::now();
        let p = l.followers.entry(replica).or_insert(Progress {
            log_end: -1,
            caught_up_at: now,
            prev_leader_end: i64::MAX,
            prev_fetch_at: now,
        });
        // Caught up: at the leader's end now, or at least where the leader's end was when it
        // answered the previous fetch (so a follower under steady load counts as keeping up).
        if f.fetch_offset >= log_end {
            p.caught_up_at = now;
        } else if f.fetch_offset >= p.prev_leader_end {
            p.caught_up_at = p.caught_up_at.max(p.prev_fetch_at);
        }
        p.prev_leader_end = log_end;
        p.prev_fetch_at = now;
        p.log_end = f.fetch_offset;
        let read = log.read(f.fetch_offset, max_bytes, log_end);
        self.advance_hw(inner);
        match read {
            Ok(bytes) => FetchedPartition::Records {
                high_watermark: inner.high_watermark,
                log_start,
                records: Bytes::from(bytes),
            },
            Err(ReadError::OutOfRange { .. }) => FetchedPartition::OutOfRange { log_start },
            Err(ReadError::Io(e)) => {
                self.fail(inner, &e);
                err(storage_error())
            }
        }
    }

    /// What this replica asks its leader for next, if it follows `leader` and is online.
    pub async fn fetch_position(&self, leader: i32) -> Option<FetchPartition> {
        let inner = self.inner.lock().await;
        let log = inner.log.as_ref()?;
        match inner.role {
            Role::Follower {
                leader: l, epoch, ..
            } if l == leader => Some(FetchPartition {
                topic: self.id.topic.clone(),
                topic_id: self.id.topic_id,
                partition: self.id.index,
                leader_epoch: epoch,
                fetch_offset: log.log_end_offset(),
                last_fetched_epoch: inner.epochs.last_epoch(),
            }),
            _ => None,
        }
    }

    /// Applies a leader's answer to a fetch made in `epoch`: appends the batches (then fsyncs
    /// them, so that the next fetch reports only durable data), or truncates where the logs
    /// diverge. Returns whether the answer made progress.
    pub async fn apply_fetched(&self, leader: i32, epoch: i32, answer: FetchedPartition) -> bool {
        let progressed = {
            let mut guard = self.inner.lock().await;
            let inner = &mut *guard;
            let current = matches!(inner.role, Role::Follower { leader: l, epoch: e, .. } if l == leader && e == epoch);
            if !current || inner.log.is_none() {
                return false;
            }
            let result = match answer {
                FetchedPartition::Records {
                    high_watermark,
                    records,
                    ..
                } => {
                    if let Role::Follower { leader_hw, .. } = &mut inner.role {
                        *leader_hw = high_watermark;
                    }
                    self.append_copied(inner, &records).await
                }
                FetchedPartition::Diverging {
                    epoch: e,
                    end_offset,
                } => {
                    let log_end = inner.log.as_ref().map_or(0, |l| l.log_end_offset());
                    let target = if e < 0 {
                        end_offset
                    } else {
                        end_offset.min(inner.epochs.end_of(e, log_end).1)
                    };
                    tracing::info!(topic = %self.id.topic, partition = self.id.index, target, log_end, "follower truncates where its log diverges from the leader's");
                    self.truncate(inner, target, None).await.map(|()| true)
                }
                FetchedPartition::OutOfRange { log_start } => {
                    tracing::info!(topic = %self.id.topic, partition = self.id.index, log_start, "follower restarts its log at the leader's log start");
                    self.truncate(inner, log_start, Some(log_start))
                        .await
                        .map(|()| true)
                }
                FetchedPartition::Error(_) => Ok(false),
            };
            match result {
                Ok(p) => {
                    self.advance_hw(inner);
                    p
                }
                Err(e) => {
                    self.fail(inner, &e);
                    false
                }
            }
        };
        if progressed && self.settings.durability == super::Durability::Fsync {
            self.flush().await;
        }
        progressed
    }

    async fn append_copied(&self, inner: &mut Inner, records: &[u8]) -> std::io::Result<bool> {
        let Some(log) = inner.log.as_mut() else {
            return Ok(false);
        };
        let mut appended = false;
        for item in BatchIter::new(records) {
            let Ok((h, bytes)) = item else { break };
            if h.base_offset != log.log_end_offset() || verify_crc(&h, bytes).is_err() {
                tracing::warn!(topic = %self.id.topic, partition = self.id.index, offset = h.base_offset, "copied batch is out of place or corrupt; fetching again");
                break;
            }
            let marker = match marker_of(bytes) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(topic = %self.id.topic, partition = self.id.index, offset = h.base_offset, error = %e, "copied control batch does not decode; fetching again");
                    break;
                }
            };
            let mut batch = bytes.to_vec();
            let stored = log.append(&mut batch).await?;
            super::observe(&mut inner.producers, &mut inner.txns, &stored, marker);
            inner
                .epochs
                .assign(stored.partition_leader_epoch, stored.base_offset);
            inner.unflushed_records += i64::from(stored.record_count);
            appended = true;
        }
        Ok(appended)
    }

    /// Cuts the log at `offset` (or, with `restart_at`, empties it and restarts it there) and
    /// rebuilds what is derived from it.
    async fn truncate(
        &self,
        inner: &mut Inner,
        offset: i64,
        restart_at: Option<i64>,
    ) -> std::io::Result<()> {
        let Some(log) = inner.log.as_mut() else {
            return Ok(());
        };
        match restart_at {
            Some(start) => log.reset_to(start).await?,
            None => {
                log.truncate_to(offset).await?;
            }
        }
        let end = log.log_end_offset();
        inner.truncations += 1;
        inner.synced_end = inner.synced_end.min(end).max(log.log_start_offset());
        if restart_at.is_some() {
            inner.synced_end = end;
        }
        inner.high_watermark = inner.high_watermark.min(end);
        inner.unflushed_records = 0;
        self.rebuild_state(inner)?;
        self.publish(inner);
        Ok(())
    }

    /// The ISR change this leader wants, if any: followers that fell behind for longer than
    /// `lag` leave; replicas that caught up with the high watermark (and this epoch's start)
    /// join. An unresolved change is resent after a while.
    pub async fn isr_change(&self, lag: Duration) -> Option<AlterPartition> {
        let mut guard = self.inner.lock().await;
        let inner = &mut *guard;
        inner.log.as_ref()?;
        let hw = inner.high_watermark;
        let Role::Leader(l) = &mut inner.role else {
            return None;
        };
        let now = Instant::now();
        let request = |l: &Leading, isr: Vec<i32>| AlterPartition {
            broker: self.me,
            topic: self.id.topic.clone(),
            partition: self.id.index,
            leader_epoch: l.epoch,
            partition_epoch: l.partition_epoch,
            isr,
        };
        if let Some(p) = &mut l.pending {
            if now.duration_since(p.sent_at) < Duration::from_millis(ISR_RESEND_MS) {
                return None;
            }
            p.sent_at = now;
            let isr = p.isr.clone();
            return Some(request(l, isr));
        }
        let me = self.me;
        let mut isr: Vec<i32> = l
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == me
                    || l.followers
                        .get(r)
                        .is_some_and(|p| now.duration_since(p.caught_up_at) <= lag)
            })
            .collect();
        for r in &l.replicas {
            let joins = !isr.contains(r)
                && l.followers.get(r).is_some_and(|p| {
                    p.log_end >= hw
                        && p.log_end >= l.epoch_start
                        && now.duration_since(p.caught_up_at) <= lag
                });
            if joins {
                isr.push(*r);
            }
        }
        isr.sort_unstable();
        let mut committed = l.isr.clone();
        committed.sort_unstable();
        if isr == committed {
            return None;
        }
        tracing::info!(topic = %self.id.topic, partition = self.id.index, from = ?l.isr, to = ?isr, "asking to change the ISR");
        l.pending = Some(PendingIsr {
            isr: isr.clone(),
            base: l.partition_epoch,
            sent_at: now,
        });
        Some(request(l, isr))
    }

    /// The controller's answer to an ISR change computed from partition epoch `base`. A
    /// definite refusal drops the pending change; an unknown outcome keeps it (and so keeps the
    /// maximal ISR) until the metadata shows what happened.
    pub async fn isr_changed(&self, base: i32, answer: Result<PartitionImage, Option<CodedError>>) {
        match answer {
            Ok(p) => self.set_role(RoleTarget::of(&p, self.me)).await,
            Err(Some(e)) if e.kafka() == Some(ResponseError::IneligibleReplica) => {
                let mut inner = self.inner.lock().await;
                if let Role::Leader(l) = &mut inner.role
                    && l.pending.as_ref().is_some_and(|p| p.base == base)
                {
                    l.pending = None;
                }
            }
            Err(_) => {}
        }
    }

    /// Whether this replica leads in some epoch.
    pub fn is_leader(&self) -> bool {
        self.marks().leader_epoch.is_some()
    }
}

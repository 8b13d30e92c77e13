//! One partition replica on this broker: its log, high watermark, producer state, leader epoch
//! cache, and its role (leader, follower, or inactive) as the metadata image assigns it.
//!
//! The high watermark is the end of the data consumers may read. On a leader it is the minimum,
//! over the ISR, of each replica's durable log end: the leader's own synced end (with
//! [`Durability::Fsync`], Weir's default) and the offsets followers report having fsynced. So a
//! consumer never reads, and an acks=all producer is never told about, a record that a crash of
//! any ISR member, or a leader change within the ISR, could take back. While an ISR change is in
//! flight the leader counts the larger of the two ISRs (the "maximal ISR").
//!
//! A flusher task fsyncs as soon as data is pending; appends that arrive during an fsync share
//! the next one (group commit). A disk error takes the partition offline: requests get
//! `KAFKA_STORAGE_ERROR` and the maintenance task reopens the log from disk (running recovery)
//! until it succeeds.

mod epochs;
mod replication;
mod txns;

pub(crate) use replication::RoleTarget;
pub(crate) use txns::AbortedTxn;

use super::producer_state::{ProducerTable, SeqCheck};
use super::{BrokerMutant, Durability};
use crate::log::{Log, ReadError, TailRecovery, TopicConfig};
use epochs::EpochCache;
use kafka_protocol::error::ResponseError;
use replication::Role;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify, watch};
use txns::TxnIndex;
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_wire::record::{
    BatchHeader, Marker, TimestampType, encode_marker, marker_of, set_leader_epoch,
    set_max_timestamp_log_append,
};

/// How long an offline partition waits between attempts to reopen its log.
const REOPEN_BACKOFF_MS: u64 = 500;
/// Longest the flusher sleeps when nothing asks it to flush.
const FLUSH_TICK_MS_MAX: u64 = 1000;

/// The offsets a reader needs, published on every change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// First offset in the log.
    pub log_start: i64,
    /// End of readable data.
    pub high_watermark: i64,
    /// End of the log.
    pub log_end: i64,
    /// Whether the log is open.
    pub online: bool,
    /// The leader epoch, while this replica leads.
    pub leader_epoch: Option<i32>,
    /// Whether the ISR is smaller than `min.insync.replicas` (meaningful on a leader).
    pub under_min_isr: bool,
    /// End of what read_committed readers may read: the first offset of the oldest open
    /// transaction, or the high watermark.
    pub last_stable: i64,
}

/// Fixed settings a partition takes from its broker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PartitionSettings {
    pub durability: Durability,
    pub tail_recovery: TailRecovery,
    pub producers_max: usize,
    pub mutant: Option<BrokerMutant>,
}

/// Broker-wide notifications partitions raise.
#[derive(Clone)]
pub(crate) struct Signals {
    /// Bumped when any high watermark advances: consumer fetches wait on it.
    pub data_arrived: watch::Sender<u64>,
    /// Bumped when any leader appends: follower fetches wait on it.
    pub log_appended: watch::Sender<u64>,
}

fn bump(w: &watch::Sender<u64>) {
    w.send_modify(|v| *v = v.wrapping_add(1));
}

/// Which partition, of which incarnation of its topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartitionId {
    pub topic: String,
    pub topic_id: u128,
    pub index: i32,
}

struct Inner {
    log: Option<Log>,
    producers: ProducerTable,
    txns: TxnIndex,
    epochs: EpochCache,
    unflushed_records: i64,
    /// Log end known to be on disk.
    synced_end: i64,
    /// Bumped by every truncation, so that an fsync begun before one does not count.
    truncations: u64,
    high_watermark: i64,
    role: Role,
}

/// Where an acknowledged batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Appended {
    pub base_offset: i64,
    pub log_append_time: i64,
    pub log_start: i64,
}

/// What an acks=all produce waits for: the high watermark passing `end` under the same leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AckWait {
    pub end: i64,
    pub epoch: i32,
}

/// A partition replica hosted by this broker.
pub(crate) struct Partition {
    pub id: PartitionId,
    /// The topic's settings; fixed for the life of the topic.
    pub config: TopicConfig,
    me: i32,
    disk: Disk,
    clock: Clock,
    settings: PartitionSettings,
    inner: Mutex<Inner>,
    marks: watch::Sender<Marks>,
    flush_wanted: Notify,
    signals: Signals,
    closed: watch::Sender<bool>,
}

fn storage_error() -> ResponseError {
    ResponseError::KafkaStorageError
}

/// The last offset of the last whole batch in `bytes`.
fn last_offset_in(bytes: &[u8]) -> Option<i64> {
    weir_wire::record::BatchIter::new(bytes)
        .map_while(Result::ok)
        .last()
        .map(|(h, _)| h.last_offset())
}

/// Follows one stored batch in the state derived from the log.
fn observe(producers: &mut ProducerTable, txns: &mut TxnIndex, h: &BatchHeader, m: Option<Marker>) {
    producers.record(h, m);
    txns.observe(h, m);
}

impl Partition {
    /// Opens the replica stored on `disk` and starts its maintenance task. A log that cannot be
    /// opened leaves the partition offline; the task keeps trying. It starts inactive.
    pub async fn open(
        id: PartitionId,
        me: i32,
        disk: Disk,
        config: TopicConfig,
        clock: Clock,
        settings: PartitionSettings,
        signals: Signals,
    ) -> Arc<Self> {
        let p = Arc::new(Self {
            id,
            config,
            me,
            disk,
            clock,
            settings,
            inner: Mutex::new(Inner {
                log: None,
                producers: ProducerTable::new(settings.producers_max),
                txns: TxnIndex::default(),
                epochs: EpochCache::default(),
                unflushed_records: 0,
                synced_end: 0,
                truncations: 0,
                high_watermark: 0,
                role: Role::Inactive,
            }),
            marks: watch::Sender::new(Marks::default()),
            flush_wanted: Notify::new(),
            signals,
            closed: watch::Sender::new(false),
        });
        p.try_reopen().await;
        tokio::spawn(Arc::clone(&p).maintain());
        p
    }

    /// Current offsets.
    pub fn marks(&self) -> Marks {
        *self.marks.borrow()
    }

    fn publish(&self, inner: &Inner) {
        let prev = *self.marks.borrow();
        let marks = match &inner.log {
            Some(log) => Marks {
                log_start: log.log_start_offset(),
                high_watermark: inner.high_watermark,
                log_end: log.log_end_offset(),
                online: true,
                leader_epoch: inner.role.leader_epoch(),
                under_min_isr: inner.role.isr_len()
                    < self.config.min_insync_replicas.max(1) as usize,
                last_stable: inner
                    .txns
                    .first_unstable()
                    .map_or(inner.high_watermark, |o| o.min(inner.high_watermark)),
            },
            None => Marks {
                online: false,
                ..prev
            },
        };
        if marks != prev {
            self.marks.send_replace(marks);
        }
        if marks.high_watermark > prev.high_watermark {
            bump(&self.signals.data_arrived);
        }
    }

    /// Moves the high watermark to what the role and the replicas' durable ends allow; it
    /// never moves back.
    fn advance_hw(&self, inner: &mut Inner) {
        let Some(log) = &inner.log else { return };
        let log_end = log.log_end_offset();
        let own = match self.settings.durability {
            Durability::Fsync => inner.synced_end,
            Durability::PageCache => log_end,
        };
        let ignore_isr = self.settings.mutant == Some(BrokerMutant::HwIgnoresIsr);
        let candidate = inner
            .role
            .hw_candidate(self.me, own, ignore_isr)
            .unwrap_or(inner.high_watermark);
        inner.high_watermark = candidate.max(inner.high_watermark).min(log_end);
        self.publish(inner);
    }

    /// Opens the log (running recovery), rebuilds producer state and the epoch cache, and makes
    /// the recovered tail durable before exposing it.
    async fn try_reopen(&self) {
        let mut inner = self.inner.lock().await;
        if inner.log.is_some() {
            return;
        }
        let opened = async {
            let (log, report) = Log::open(self.disk.clone(), self.config.clone(), self.clock, self.settings.tail_recovery).await?;
            if let Some(reason) = &report.truncation_reason {
                tracing::warn!(topic = %self.id.topic, partition = self.id.index, bytes = report.truncated_bytes, %reason, "recovery truncated the log tail");
            }
            let (file, _) = log.flush_target()?;
            file.sync().await?;
            Ok::<_, io::Error>(log)
        }
        .await;
        match opened {
            Ok(log) => {
                inner.log = Some(log);
                if let Err(e) = self.rebuild_state(&mut inner) {
                    self.fail(&mut inner, &e);
                    return;
                }
                let end = inner.log.as_ref().map_or(0, Log::log_end_offset);
                inner.synced_end = end;
                inner.unflushed_records = 0;
                inner.high_watermark = inner.high_watermark.min(end);
                self.advance_hw(&mut inner);
            }
            Err(e) => {
                tracing::warn!(topic = %self.id.topic, partition = self.id.index, error = %e, "partition log could not be opened");
                self.publish(&inner);
            }
        }
    }

    /// Rebuilds producer state, transactions and the epoch cache from the log: the headers,
    /// and the marker inside each control batch.
    fn rebuild_state(&self, inner: &mut Inner) -> io::Result<()> {
        let Some(log) = &inner.log else { return Ok(()) };
        let mut headers = Vec::new();
        log.scan_headers(|h| headers.push(*h))?;
        let mut producers = ProducerTable::new(self.settings.producers_max);
        let mut txns = TxnIndex::default();
        let mut epochs = EpochCache::default();
        let end = log.log_end_offset();
        for h in &headers {
            let marker = if h.is_control() {
                let bytes = log
                    .read(h.base_offset, h.total_len(), end)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                marker_of(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            } else {
                None
            };
            observe(&mut producers, &mut txns, h, marker);
            epochs.assign(h.partition_leader_epoch, h.base_offset);
        }
        inner.producers = producers;
        inner.txns = txns;
        inner.epochs = epochs;
        Ok(())
    }

    fn fail(&self, inner: &mut Inner, e: &io::Error) {
        tracing::warn!(topic = %self.id.topic, partition = self.id.index, error = %e, "disk error: partition goes offline");
        inner.log = None;
        self.publish(inner);
        self.flush_wanted.notify_one();
    }

    /// The background task: flushes pending data, and reopens the log while offline.
    async fn maintain(self: Arc<Self>) {
        let mut closed = self.closed.subscribe();
        loop {
            let online = self.marks().online;
            let tick = if !online {
                REOPEN_BACKOFF_MS
            } else {
                match self.settings.durability {
                    Durability::Fsync => FLUSH_TICK_MS_MAX,
                    Durability::PageCache => self.config.flush_ms.clamp(1, i64::MAX) as u64,
                }
            };
            tokio::select! {
                _ = super::until_set(&mut closed) => return,
                _ = self.flush_wanted.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(tick)) => {}
            }
            if self.marks().online {
                self.flush().await;
            } else {
                if !online {
                    // Woken while offline: wait out the backoff before touching the disk again.
                    tokio::time::sleep(Duration::from_millis(REOPEN_BACKOFF_MS)).await;
                }
                self.try_reopen().await;
            }
        }
    }

    /// Fsyncs the active segment if anything is pending, then advances the high watermark.
    pub async fn flush(&self) {
        let (file, end, pending, truncations) = {
            let mut inner = self.inner.lock().await;
            let Some(log) = &inner.log else { return };
            let pending = inner.unflushed_records;
            if pending == 0 && inner.synced_end >= log.log_end_offset() {
                return;
            }
            match log.flush_target() {
                Ok((file, end)) => (file, end, pending, inner.truncations),
                Err(e) => {
                    self.fail(&mut inner, &e);
                    return;
                }
            }
        };
        let synced = file.sync().await;
        let mut inner = self.inner.lock().await;
        if inner.log.is_none() {
            return;
        }
        match synced {
            Ok(()) if inner.truncations == truncations => {
                inner.unflushed_records = (inner.unflushed_records - pending).max(0);
                inner.synced_end = inner.synced_end.max(end);
                self.advance_hw(&mut inner);
            }
            // The log was cut meanwhile: the next flush starts over.
            Ok(()) => self.flush_wanted.notify_one(),
            Err(e) => self.fail(&mut inner, &e),
        }
    }

    /// Appends a validated batch as leader, stamping it with the leader epoch. Returns where it
    /// landed and what its acks=all acknowledgement waits for. A duplicate from an idempotent
    /// producer is not appended again: its original offsets are returned.
    pub async fn append(
        &self,
        mut batch: Vec<u8>,
        acks_all: bool,
    ) -> Result<(Appended, AckWait), ResponseError> {
        let header = BatchHeader::parse(&batch).map_err(|_| ResponseError::CorruptMessage)?;
        let mut guard = self.inner.lock().await;
        let inner = &mut *guard;
        let Some(log) = inner.log.as_mut() else {
            return Err(storage_error());
        };
        let Some(epoch) = inner.role.leader_epoch() else {
            return Err(ResponseError::NotLeaderOrFollower);
        };
        if acks_all && inner.role.isr_len() < self.config.min_insync_replicas.max(1) as usize {
            return Err(ResponseError::NotEnoughReplicas);
        }
        let check = if header.has_producer_id()
            && self.settings.mutant != Some(BrokerMutant::DedupeDisabled)
        {
            inner.producers.check(&header)?
        } else {
            SeqCheck::Append
        };
        if let SeqCheck::Duplicate {
            base_offset,
            last_offset,
        } = check
        {
            let appended = Appended {
                base_offset,
                log_append_time: -1,
                log_start: log.log_start_offset(),
            };
            return Ok((
                appended,
                AckWait {
                    end: last_offset + 1,
                    epoch,
                },
            ));
        }
        let mut log_append_time = -1;
        if self.config.timestamp_type == TimestampType::LogAppendTime {
            log_append_time = self.clock.now_ms();
            set_max_timestamp_log_append(&mut batch, log_append_time);
        }
        let stored = self.store(inner, &mut batch, epoch, None).await?;
        let log_start = inner.log.as_ref().map_or(0, Log::log_start_offset);
        match self.settings.durability {
            Durability::Fsync => {
                self.publish(inner);
                self.flush_wanted.notify_one();
            }
            Durability::PageCache => {
                self.advance_hw(inner);
                let flush_messages = self.config.flush_messages;
                if flush_messages >= 0 && inner.unflushed_records >= flush_messages {
                    self.flush_wanted.notify_one();
                }
            }
        }
        Ok((
            Appended {
                base_offset: stored.base_offset,
                log_append_time,
                log_start,
            },
            AckWait {
                end: stored.next_offset(),
                epoch,
            },
        ))
    }

    /// Appends `batch` as leader in `epoch` and follows it in the state derived from the log.
    /// A disk error takes the partition offline.
    async fn store(
        &self,
        inner: &mut Inner,
        batch: &mut [u8],
        epoch: i32,
        marker: Option<Marker>,
    ) -> Result<BatchHeader, ResponseError> {
        let Some(log) = inner.log.as_mut() else {
            return Err(storage_error());
        };
        set_leader_epoch(batch, epoch);
        let stored = match log.append(batch).await {
            Ok(h) => h,
            Err(e) => {
                self.fail(inner, &e);
                return Err(storage_error());
            }
        };
        observe(&mut inner.producers, &mut inner.txns, &stored, marker);
        inner.epochs.assign(epoch, stored.base_offset);
        inner.unflushed_records += i64::from(stored.record_count);
        bump(&self.signals.log_appended);
        Ok(stored)
    }

    /// Waits up to `timeout` until the high watermark reaches `wait.end` under the same leader
    /// epoch: what acks=all waits for.
    pub async fn await_ack(&self, wait: AckWait, timeout: Duration) -> Result<(), ResponseError> {
        let mut rx = self.marks.subscribe();
        let settled = |m: &Marks| {
            (m.high_watermark >= wait.end && m.leader_epoch == Some(wait.epoch))
                || m.leader_epoch != Some(wait.epoch)
                || !m.online
        };
        match tokio::time::timeout(timeout, rx.wait_for(settled)).await {
            Ok(Ok(m)) if !m.online => Err(storage_error()),
            Ok(Ok(m)) if m.leader_epoch != Some(wait.epoch) => {
                Err(ResponseError::NotLeaderOrFollower)
            }
            Ok(Ok(m)) if m.under_min_isr => Err(ResponseError::NotEnoughReplicasAfterAppend),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(storage_error()),
            Err(_) => Err(ResponseError::RequestTimedOut),
        }
    }

    /// Checks that this replica leads, in `epoch` if the client named one (-1 names none).
    fn check_leader(inner: &Inner, epoch: i32) -> Result<(), ResponseError> {
        match inner.role.leader_epoch() {
            None => Err(ResponseError::NotLeaderOrFollower),
            Some(_) if epoch < 0 => Ok(()),
            Some(mine) if epoch < mine => Err(ResponseError::FencedLeaderEpoch),
            Some(mine) if epoch > mine => Err(ResponseError::UnknownLeaderEpoch),
            Some(_) => Ok(()),
        }
    }

    /// As leader (in `current_leader_epoch` if the client named one): the largest epoch at or
    /// below `epoch` in this log and the offset where it ends, as OffsetsForLeaderEpoch answers
    /// it; `(-1, -1)` when the log holds no such epoch. The same lookup a follower's fetch uses
    /// to find where its log diverges.
    pub async fn end_offset_for_epoch(
        &self,
        current_leader_epoch: i32,
        epoch: i32,
    ) -> Result<(i32, i64), ResponseError> {
        let inner = self.inner.lock().await;
        let Some(log) = &inner.log else {
            return Err(storage_error());
        };
        Self::check_leader(&inner, current_leader_epoch)?;
        Ok(inner.epochs.end_of(epoch, log.log_end_offset()))
    }

    /// Reads whole batches from `offset` as leader: below the high watermark, or with
    /// `read_committed` below the last stable offset, together with the aborted transactions
    /// whose records the answer may hold.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        leader_epoch: i32,
        read_committed: bool,
    ) -> Result<(Vec<u8>, Marks, Vec<AbortedTxn>), ResponseError> {
        let mut inner = self.inner.lock().await;
        let Some(log) = &inner.log else {
            return Err(storage_error());
        };
        Self::check_leader(&inner, leader_epoch)?;
        let marks = self.marks();
        let limit = if read_committed {
            marks.last_stable
        } else {
            marks.high_watermark
        };
        match log.read(offset, max_bytes, limit) {
            Ok(bytes) => {
                let aborted = if read_committed && !bytes.is_empty() {
                    let end = last_offset_in(&bytes).map_or(offset, |o| o + 1);
                    inner.txns.aborted_between(offset, end)
                } else {
                    Vec::new()
                };
                Ok((bytes, marks, aborted))
            }
            Err(ReadError::OutOfRange { .. }) => Err(ResponseError::OffsetOutOfRange),
            Err(ReadError::Io(e)) => {
                self.fail(&mut inner, &e);
                Err(storage_error())
            }
        }
    }

    /// Appends a transaction marker for `producer_id` as leader, ending the transaction whose
    /// data was written at `txn_epoch`. A marker finding no such transaction open here is a
    /// retry, or a late copy from a completion that lost a race: it is not written again, and
    /// it cannot end a later transaction of the same producer.
    pub async fn append_marker(
        &self,
        producer_id: i64,
        txn_epoch: i16,
        producer_epoch: i16,
        marker: Marker,
    ) -> Result<AckWait, ResponseError> {
        let mut guard = self.inner.lock().await;
        let inner = &mut *guard;
        let Some(log) = inner.log.as_mut() else {
            return Err(storage_error());
        };
        let Some(epoch) = inner.role.leader_epoch() else {
            return Err(ResponseError::NotLeaderOrFollower);
        };
        if inner.role.isr_len() < self.config.min_insync_replicas.max(1) as usize {
            return Err(ResponseError::NotEnoughReplicas);
        }
        inner
            .producers
            .check_marker(producer_id, producer_epoch, marker.coordinator_epoch)?;
        let fences = inner
            .producers
            .epoch_of(producer_id)
            .is_none_or(|e| e < producer_epoch);
        let ends_open = inner.txns.open_epoch(producer_id) == Some(txn_epoch);
        if !ends_open && !fences {
            tracing::debug!(topic = %self.id.topic, partition = self.id.index, producer_id, txn_epoch, open = ?inner.txns.open_epoch(producer_id), "marker ends nothing open here; not written");
            return Ok(AckWait {
                end: log.log_end_offset(),
                epoch,
            });
        }
        let mut batch = encode_marker(producer_id, producer_epoch, marker, self.clock.now_ms())
            .map_err(|_| ResponseError::UnknownServerError)?
            .to_vec();
        let stored = self.store(inner, &mut batch, epoch, Some(marker)).await?;
        tracing::debug!(topic = %self.id.topic, partition = self.id.index, producer_id, producer_epoch, offset = stored.base_offset, kind = ?marker.kind, "marker written");
        self.publish(inner);
        self.flush_wanted.notify_one();
        Ok(AckWait {
            end: stored.next_offset(),
            epoch,
        })
    }

    /// The (offset, timestamp) that ListOffsets answers for `timestamp`: -2 earliest, -1 latest,
    /// -3 the record with the largest timestamp, otherwise the first record at or after it.
    pub async fn offset_for(
        &self,
        timestamp: i64,
        leader_epoch: i32,
        read_committed: bool,
    ) -> Result<(i64, i64), ResponseError> {
        let mut inner = self.inner.lock().await;
        let Some(log) = &inner.log else {
            return Err(storage_error());
        };
        Self::check_leader(&inner, leader_epoch)?;
        let marks = self.marks();
        if timestamp == -1
            && inner
                .role
                .epoch_start()
                .is_some_and(|start| marks.high_watermark < start)
        {
            // A new leader's high watermark lags what the previous leader may have exposed
            // until its followers report in; "latest" would go back in time meanwhile.
            return Err(ResponseError::OffsetNotAvailable);
        }
        let found = match timestamp {
            -2 => return Ok((marks.log_start, -1)),
            -1 if read_committed => return Ok((marks.last_stable, -1)),
            -1 => return Ok((marks.high_watermark, -1)),
            -3 => log.max_timestamp_record(marks.high_watermark),
            ts if ts >= 0 => log.offset_for_timestamp(ts, marks.high_watermark),
            _ => return Err(ResponseError::InvalidRequest),
        };
        match found {
            Ok(Some(hit)) => Ok(hit),
            Ok(None) => Ok((-1, -1)),
            Err(e) => {
                self.fail(&mut inner, &e);
                Err(storage_error())
            }
        }
    }

    /// Deletes segments that retention no longer keeps.
    pub async fn enforce_retention(&self) {
        let mut inner = self.inner.lock().await;
        let hw = inner.high_watermark;
        let Some(log) = inner.log.as_mut() else {
            return;
        };
        match log.enforce_retention(hw).await {
            Ok(0) => {}
            Ok(_) => {
                let start = log.log_start_offset();
                inner.txns.prune_below(start);
                self.publish(&inner);
            }
            Err(e) => self.fail(&mut inner, &e),
        }
    }

    /// Stops the maintenance task; the replica leads and follows nothing from now on.
    pub async fn close(&self) {
        self.closed.send_replace(true);
        let mut inner = self.inner.lock().await;
        inner.role = Role::Inactive;
        self.publish(&inner);
    }

    /// Stops the partition and deletes its log from disk.
    pub async fn delete(&self) -> io::Result<()> {
        self.close().await;
        let mut inner = self.inner.lock().await;
        match inner.log.take() {
            Some(log) => log.delete().await,
            None => self.disk.remove_dir_all(".").await,
        }
    }
}

//! One partition on the broker: its log, high watermark, producer state and flusher.
//!
//! The high watermark is the end of the data consumers may read. With [`Durability::Fsync`]
//! (Weir's default) it is the end of the data that has been fsynced, so a consumer never reads a
//! record that a crash could take back, and an acks=all produce is acknowledged once the
//! watermark passes it. A flusher task fsyncs as soon as data is pending; appends that arrive
//! during an fsync share the next one (group commit).
//!
//! A disk error takes the partition offline: requests get `KAFKA_STORAGE_ERROR` and the
//! maintenance task reopens the log from disk (running recovery) until it succeeds.

use super::Durability;
use super::producer_state::{ProducerTable, SeqCheck};
use crate::clock::Clock;
use crate::disk::Disk;
use crate::log::{Log, ReadError, TailRecovery, TopicConfig};
use crate::record::{BatchHeader, TimestampType, set_max_timestamp_log_append};
use kafka_protocol::error::ResponseError;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify, watch};

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
}

/// Fixed settings a partition takes from its broker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PartitionSettings {
    pub durability: Durability,
    pub tail_recovery: TailRecovery,
    pub producers_max: usize,
}

struct Inner {
    log: Option<Log>,
    config: TopicConfig,
    producers: ProducerTable,
    unflushed_records: i64,
}

/// Where an acknowledged batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Appended {
    pub base_offset: i64,
    pub log_append_time: i64,
    pub log_start: i64,
}

/// A partition hosted by this broker.
pub(crate) struct Partition {
    pub topic: String,
    pub index: i32,
    disk: Disk,
    clock: Clock,
    settings: PartitionSettings,
    inner: Mutex<Inner>,
    marks: watch::Sender<Marks>,
    flush_wanted: Notify,
    data_arrived: watch::Sender<u64>,
    closed: watch::Sender<bool>,
}

fn storage_error() -> ResponseError {
    ResponseError::KafkaStorageError
}

impl Partition {
    /// Opens the partition stored on `disk` and starts its maintenance task. A log that cannot be
    /// opened leaves the partition offline; the task keeps trying.
    pub async fn open(
        topic: &str,
        index: i32,
        disk: Disk,
        config: TopicConfig,
        clock: Clock,
        settings: PartitionSettings,
        data_arrived: watch::Sender<u64>,
    ) -> Arc<Self> {
        let p = Arc::new(Self {
            topic: topic.to_string(),
            index,
            disk,
            clock,
            settings,
            inner: Mutex::new(Inner {
                log: None,
                config,
                producers: ProducerTable::new(settings.producers_max),
                unflushed_records: 0,
            }),
            marks: watch::Sender::new(Marks::default()),
            flush_wanted: Notify::new(),
            data_arrived,
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

    fn publish(&self, inner: &Inner, hw: i64) {
        let marks = match &inner.log {
            Some(log) => {
                let prev = self.marks.borrow().high_watermark;
                let hw = hw.max(prev).min(log.log_end_offset());
                Marks {
                    log_start: log.log_start_offset(),
                    high_watermark: hw,
                    log_end: log.log_end_offset(),
                    online: true,
                }
            }
            None => Marks {
                online: false,
                ..*self.marks.borrow()
            },
        };
        let advanced = marks.high_watermark > self.marks.borrow().high_watermark;
        self.marks.send_replace(marks);
        if advanced {
            self.data_arrived.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Opens the log (running recovery), rebuilds producer state and makes the recovered tail
    /// durable before exposing it.
    async fn try_reopen(&self) {
        let mut inner = self.inner.lock().await;
        if inner.log.is_some() {
            return;
        }
        let opened = async {
            let (log, report) = Log::open(self.disk.clone(), inner.config.clone(), self.clock, self.settings.tail_recovery).await?;
            if let Some(reason) = &report.truncation_reason {
                tracing::warn!(topic = %self.topic, partition = self.index, bytes = report.truncated_bytes, %reason, "recovery truncated the log tail");
            }
            let (file, _) = log.flush_target()?;
            file.sync().await?;
            Ok::<_, io::Error>(log)
        }
        .await;
        match opened {
            Ok(log) => {
                let mut producers = ProducerTable::new(self.settings.producers_max);
                if let Err(e) = log.scan_headers(|h| producers.record(h)) {
                    tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "producer state could not be rebuilt");
                    return;
                }
                let end = log.log_end_offset();
                inner.producers = producers;
                inner.log = Some(log);
                inner.unflushed_records = 0;
                self.publish(&inner, end);
            }
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "partition log could not be opened");
                self.publish(&inner, 0);
            }
        }
    }

    fn fail(&self, inner: &mut Inner, e: &io::Error) {
        tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "disk error: partition goes offline");
        inner.log = None;
        self.publish(inner, 0);
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
                    Durability::PageCache => {
                        self.inner.lock().await.config.flush_ms.clamp(1, i64::MAX) as u64
                    }
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
    async fn flush(&self) {
        let (file, end, pending) = {
            let inner = self.inner.lock().await;
            let Some(log) = &inner.log else { return };
            let pending = inner.unflushed_records;
            if pending == 0 && self.marks().high_watermark >= log.log_end_offset() {
                return;
            }
            match log.flush_target() {
                Ok((file, end)) => (file, end, pending),
                Err(e) => {
                    drop(inner);
                    let mut inner = self.inner.lock().await;
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
            Ok(()) => {
                inner.unflushed_records = (inner.unflushed_records - pending).max(0);
                let hw = match self.settings.durability {
                    Durability::Fsync => end,
                    Durability::PageCache => inner.log.as_ref().map_or(end, Log::log_end_offset),
                };
                self.publish(&inner, hw);
            }
            Err(e) => self.fail(&mut inner, &e),
        }
    }

    /// Appends a validated batch. Returns where it landed and the offset its acknowledgement
    /// must wait for (see [`Partition::await_readable`]). A duplicate from an idempotent
    /// producer is not appended again: its original offsets are returned.
    pub async fn append(&self, mut batch: Vec<u8>) -> Result<(Appended, i64), ResponseError> {
        let header = BatchHeader::parse(&batch).map_err(|_| ResponseError::CorruptMessage)?;
        let mut inner = self.inner.lock().await;
        let inner = &mut *inner;
        let Some(log) = inner.log.as_mut() else {
            return Err(storage_error());
        };
        let check = if header.has_producer_id() {
            inner.producers.check(&header)?
        } else {
            SeqCheck::Append
        };
        if let SeqCheck::Duplicate {
            base_offset,
            last_offset,
        } = check
        {
            return Ok((
                Appended {
                    base_offset,
                    log_append_time: -1,
                    log_start: log.log_start_offset(),
                },
                last_offset + 1,
            ));
        }
        let mut log_append_time = -1;
        if inner.config.timestamp_type == TimestampType::LogAppendTime {
            log_append_time = self.clock.now_ms();
            set_max_timestamp_log_append(&mut batch, log_append_time);
        }
        let stored = match log.append(&mut batch).await {
            Ok(h) => h,
            Err(e) => {
                self.fail(inner, &e);
                return Err(storage_error());
            }
        };
        inner.producers.record(&stored);
        inner.unflushed_records += i64::from(stored.record_count);
        let log_start = log.log_start_offset();
        let log_end = log.log_end_offset();
        match self.settings.durability {
            Durability::Fsync => {
                self.publish(inner, self.marks().high_watermark);
                self.flush_wanted.notify_one();
            }
            Durability::PageCache => {
                self.publish(inner, log_end);
                let flush_messages = inner.config.flush_messages;
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
            stored.next_offset(),
        ))
    }

    /// Waits up to `timeout` until the high watermark reaches `end`: what acks=all waits for.
    /// Under `Fsync` durability that means the data is synced.
    pub async fn await_readable(&self, end: i64, timeout: Duration) -> Result<(), ResponseError> {
        let mut rx = self.marks.subscribe();
        match tokio::time::timeout(
            timeout,
            rx.wait_for(|m| m.high_watermark >= end || !m.online),
        )
        .await
        {
            Ok(Ok(m)) if m.online => Ok(()),
            Ok(_) => Err(storage_error()),
            Err(_) => Err(ResponseError::RequestTimedOut),
        }
    }

    /// Reads whole batches from `offset` below the high watermark.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, Marks), ResponseError> {
        let mut inner = self.inner.lock().await;
        let Some(log) = &inner.log else {
            return Err(storage_error());
        };
        let marks = self.marks();
        match log.read(offset, max_bytes, marks.high_watermark) {
            Ok(bytes) => Ok((bytes, marks)),
            Err(ReadError::OutOfRange { .. }) => Err(ResponseError::OffsetOutOfRange),
            Err(ReadError::Io(e)) => {
                self.fail(&mut inner, &e);
                Err(storage_error())
            }
        }
    }

    /// The (offset, timestamp) that ListOffsets answers for `timestamp`: -2 earliest, -1 latest,
    /// -3 the record with the largest timestamp, otherwise the first record at or after it.
    pub async fn offset_for(&self, timestamp: i64) -> Result<(i64, i64), ResponseError> {
        let mut inner = self.inner.lock().await;
        let Some(log) = &inner.log else {
            return Err(storage_error());
        };
        let marks = self.marks();
        let found = match timestamp {
            -2 => return Ok((marks.log_start, -1)),
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
        let hw = self.marks().high_watermark;
        let Some(log) = inner.log.as_mut() else {
            return;
        };
        match log.enforce_retention(hw).await {
            Ok(0) => {}
            Ok(_) => self.publish(&inner, hw),
            Err(e) => self.fail(&mut inner, &e),
        }
    }

    /// Stops the maintenance task.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Stops the partition and deletes its log from disk.
    pub async fn delete(&self) -> io::Result<()> {
        self.close();
        let mut inner = self.inner.lock().await;
        match inner.log.take() {
            Some(log) => log.delete(),
            None => self.disk.remove_dir_all("."),
        }
    }
}

//! A partition's log: an ordered set of segments with dense offsets.
//!
//! Batches are appended whole, as sent, with the broker's base offset written into their header.
//! The active (last) segment rolls by size, time or offset range. Sealed segments are synced
//! before the next one is created, so after a crash only the tail can hold a torn or garbled
//! write; recovery checks the tail batch by batch and truncates at the first bad one.

mod config;
mod index;
mod segment;

pub use config::{CleanupPolicy, KNOWN_KEYS, TopicCompression, TopicConfig};

use segment::{OpenMode, Segment, file_names, parse_log_name};
use std::collections::BTreeMap;
use std::io;
use weir_seams::clock::Clock;
use weir_seams::disk::{Disk, DiskFile};
use weir_wire::record::{BatchHeader, BatchIter, decode_batch_records};

/// Cap on decompressed bytes when the log decodes a batch to look up a timestamp.
const LOOKUP_DECOMPRESSED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What recovery found when the log was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found.
    pub segments: usize,
    /// Bytes cut from the tail.
    pub truncated_bytes: u64,
    /// Why the tail was cut, if it was.
    pub truncation_reason: Option<String>,
    /// Log end offset after recovery.
    pub log_end_offset: i64,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The offset is below the log start or above the log end.
    #[error("offset {offset} is outside [{start}, {end}]")]
    OutOfRange {
        /// Requested offset.
        offset: i64,
        /// Log start offset.
        start: i64,
        /// Log end offset.
        end: i64,
    },
    /// The disk failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// How much integrity checking the tail gets when the log opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TailRecovery {
    /// Check every batch of the tail by CRC and truncate at the first bad one.
    #[default]
    Check,
    /// Deliberately unsafe: keep whatever the tail holds. Exists so that tests can show the
    /// simulator catching a broker without recovery.
    UnsafeSkip,
}

/// A partition log.
#[derive(Debug)]
pub struct Log {
    disk: Disk,
    config: TopicConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    clock: Clock,
}

impl Log {
    /// Opens the log stored on `disk` (the partition's directory), creating an empty one if the
    /// directory holds none, and recovers its tail.
    pub async fn open(
        disk: Disk,
        config: TopicConfig,
        clock: Clock,
        tail: TailRecovery,
    ) -> io::Result<(Self, RecoveryReport)> {
        let names = disk.list(".")?;
        let mut bases: Vec<i64> = names.iter().filter_map(|n| parse_log_name(n)).collect();
        bases.sort_unstable();
        // Leftovers of interrupted work: temporary files and indexes whose segment is gone.
        for name in &names {
            let orphan_index = [".index", ".timeindex"].iter().any(|sfx| {
                name.strip_suffix(sfx)
                    .is_some_and(|stem| stem.parse::<i64>().map_or(true, |b| !bases.contains(&b)))
            });
            if name.ends_with(".tmp") || orphan_index {
                disk.remove_file(name)?;
            }
        }
        let now = clock.now_ms();
        let mut segments = BTreeMap::new();
        let mut report = RecoveryReport {
            segments: bases.len(),
            ..Default::default()
        };
        let last = bases.last().copied();
        let mut expected_base: Option<i64> = None;
        for base in bases {
            let mode = match (Some(base) == last, tail) {
                (false, _) => OpenMode::Trust,
                (true, TailRecovery::Check) => OpenMode::Recover,
                (true, TailRecovery::UnsafeSkip) => OpenMode::UnsafeNoTruncate,
            };
            let (seg, cut) =
                Segment::open(&disk, base, now, config.index_interval_bytes, mode).await?;
            if let Some(expected) = expected_base
                && expected != base
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "segment {base} does not follow the previous segment, which ends at {expected}"
                    ),
                ));
            }
            expected_base = Some(seg.next_offset);
            if let Some((bytes, reason)) = cut {
                report.truncated_bytes = bytes;
                report.truncation_reason = Some(reason);
            }
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            segments.insert(
                0,
                Segment::create(&disk, 0, now, config.index_interval_bytes)?,
            );
        }
        // A segment found here may exist only in the page cache's view of the directory: a
        // roll whose directory sync failed leaves one behind. Records appended to it and
        // fsynced would vanish with its entry in a crash, so the entries are made durable now.
        disk.sync_dir(".").await?;
        let log_start_offset = *segments.keys().next().expect("at least one segment");
        let log = Self {
            disk,
            config,
            segments,
            log_start_offset,
            clock,
        };
        report.log_end_offset = log.log_end_offset();
        Ok((log, report))
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The offset the next batch will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// Bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The topic settings this log follows.
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    async fn roll_if_needed(&mut self, incoming: usize) -> io::Result<()> {
        let now = self.clock.now_ms();
        let cfg = &self.config;
        let a = self.active();
        let full = a.size > 0 && a.size + incoming as u64 > cfg.segment_bytes;
        let old = a.size > 0 && now - a.created_ms >= cfg.segment_ms;
        // Index entries hold 32-bit relative offsets.
        let wide = a.next_offset - a.base_offset > i64::from(u32::MAX) / 2;
        if !(full || old || wide) {
            return Ok(());
        }
        // Seal the old segment durably before the new one can take writes: after a crash, only
        // the last segment may need recovery.
        a.sync_all().await?;
        let base = a.next_offset;
        let seg = Segment::create(&self.disk, base, now, cfg.index_interval_bytes)?;
        self.disk.sync_dir(".").await?;
        self.segments.insert(base, seg);
        Ok(())
    }

    /// Appends one validated batch, writing its base offset into it. Returns its header as stored.
    pub async fn append(&mut self, batch: &mut [u8]) -> io::Result<BatchHeader> {
        self.roll_if_needed(batch.len()).await?;
        let base = self.log_end_offset();
        weir_wire::record::set_base_offset(batch, base);
        let header = BatchHeader::parse(batch)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.active_mut().append(batch, &header)?;
        Ok(header)
    }

    fn segment_for(&self, offset: i64) -> Option<&Segment> {
        self.segments
            .range(..=offset)
            .next_back()
            .map(|(_, s)| s)
            .filter(|s| offset < s.next_offset)
    }

    /// Reads whole batches starting with the one that holds `offset`, up to about `max_bytes`
    /// (at least one batch, however large), stopping before any batch that reaches `limit`
    /// (the high watermark).
    pub fn read(&self, offset: i64, max_bytes: usize, limit: i64) -> Result<Vec<u8>, ReadError> {
        let (start, end) = (self.log_start_offset, self.log_end_offset());
        if offset < start || offset > end {
            return Err(ReadError::OutOfRange { offset, start, end });
        }
        if offset >= limit {
            return Ok(Vec::new());
        }
        let Some(seg) = self.segment_for(offset) else {
            return Ok(Vec::new());
        };
        let Some((pos, _)) = seg.position_of(offset)? else {
            return Ok(Vec::new());
        };
        let avail = (seg.size - pos) as usize;
        let mut buf = seg.read(
            pos,
            avail.min(max_bytes.max(weir_wire::record::BATCH_HEADER_LEN)),
        )?;
        let first = BatchHeader::parse(&buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if first.last_offset() >= limit {
            return Ok(Vec::new());
        }
        if first.total_len() > buf.len() {
            // At least one whole batch, even past max_bytes, so a large batch cannot stall a reader.
            buf = seg.read(pos, first.total_len())?;
        }
        let mut iter = BatchIter::new(&buf);
        let mut end_pos = 0;
        for item in iter.by_ref() {
            let (h, _) =
                item.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if h.last_offset() >= limit {
                break;
            }
            end_pos += h.total_len();
        }
        buf.truncate(end_pos);
        Ok(buf)
    }

    /// The first record at or after `timestamp` below `limit`, as (offset, timestamp).
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
        limit: i64,
    ) -> io::Result<Option<(i64, i64)>> {
        for seg in self.segments.values() {
            let Some(pos) = seg.position_for_timestamp(timestamp)? else {
                continue;
            };
            return self.first_record_at_or_after(seg, pos, timestamp, limit);
        }
        Ok(None)
    }

    /// The record with the largest timestamp below `limit` (the earliest such, on ties).
    pub fn max_timestamp_record(&self, limit: i64) -> io::Result<Option<(i64, i64)>> {
        let mut best: Option<&Segment> = None;
        for seg in self.segments.values() {
            if seg.max_timestamp > best.map_or(-1, |b| b.max_timestamp) {
                best = Some(seg);
            }
        }
        let Some(seg) = best else { return Ok(None) };
        let Some(pos) = seg.position_for_timestamp(seg.max_timestamp)? else {
            return Ok(None);
        };
        self.first_record_at_or_after(seg, pos, seg.max_timestamp, limit)
    }

    fn first_record_at_or_after(
        &self,
        seg: &Segment,
        pos: u64,
        timestamp: i64,
        limit: i64,
    ) -> io::Result<Option<(i64, i64)>> {
        let len = BatchHeader::parse(&seg.read(pos, weir_wire::record::BATCH_HEADER_LEN)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            .total_len();
        let batch = bytes::Bytes::from(seg.read(pos, len)?);
        let (_, records) = decode_batch_records(&batch, LOOKUP_DECOMPRESSED_BYTES_MAX)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(records
            .iter()
            .find(|r| r.timestamp >= timestamp && r.offset < limit)
            .map(|r| (r.offset, r.timestamp)))
    }

    /// Calls `f` with the header of every batch from the log start, in order.
    pub fn scan_headers(&self, mut f: impl FnMut(&BatchHeader)) -> io::Result<()> {
        for seg in self.segments.values() {
            seg.scan(0, seg.base_offset, false, |_, h| {
                f(h);
                std::ops::ControlFlow::Continue(())
            })?;
        }
        Ok(())
    }

    /// A handle on the active segment and the log end offset it holds, so that a flusher can
    /// fsync without holding the log. Everything before the active segment is already synced.
    pub fn flush_target(&self) -> io::Result<(DiskFile, i64)> {
        Ok((self.active().log_file().try_clone()?, self.log_end_offset()))
    }

    /// Deletes sealed segments that `retention.ms` or `retention.bytes` no longer keep, never
    /// past `limit` (the high watermark). Returns how many were deleted.
    pub async fn enforce_retention(&mut self, limit: i64) -> io::Result<usize> {
        let now = self.clock.now_ms();
        let cfg = &self.config;
        let mut total = self.size_bytes();
        let mut doomed = Vec::new();
        let sealed = self.segments.len().saturating_sub(1);
        for seg in self.segments.values().take(sealed) {
            let expired =
                cfg.retention_ms >= 0 && seg.max_timestamp < now.saturating_sub(cfg.retention_ms);
            let oversize =
                cfg.retention_bytes >= 0 && total - seg.size >= cfg.retention_bytes as u64;
            if !(expired || oversize) || seg.next_offset > limit {
                break;
            }
            total -= seg.size;
            doomed.push(seg.base_offset);
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        for base in &doomed {
            self.segments.remove(base);
        }
        self.log_start_offset = *self
            .segments
            .keys()
            .next()
            .expect("the active segment is never deleted");
        for base in &doomed {
            for name in file_names(*base) {
                self.disk.remove_file(&name)?;
            }
        }
        self.disk.sync_dir(".").await?;
        Ok(doomed.len())
    }

    /// Removes every batch at or after `offset`, durably: later segments go first, so that a
    /// crash part-way leaves a log that still opens. A batch that straddles `offset` goes too, so
    /// the log may end before `offset`. Returns the new log end.
    pub async fn truncate_to(&mut self, offset: i64) -> io::Result<i64> {
        if offset >= self.log_end_offset() {
            return Ok(self.log_end_offset());
        }
        let offset = offset.max(self.log_start_offset);
        let doomed: Vec<i64> = self
            .segments
            .range(offset..)
            .map(|(b, _)| *b)
            .filter(|b| *b != self.log_start_offset)
            .collect();
        for base in doomed.iter().rev() {
            self.segments.remove(base);
            for name in file_names(*base) {
                self.disk.remove_file(&name)?;
            }
        }
        if !doomed.is_empty() {
            self.disk.sync_dir(".").await?;
        }
        let active = self.active_mut();
        if let Some((pos, _)) = active.position_of(offset)? {
            active.truncate_at(pos).await?;
        }
        Ok(self.log_end_offset())
    }

    /// Empties the log and restarts it at `offset`: what a follower does when the leader no
    /// longer holds the offsets it would fetch next.
    pub async fn reset_to(&mut self, offset: i64) -> io::Result<()> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for base in bases.iter().rev() {
            for name in file_names(*base) {
                self.disk.remove_file(&name)?;
            }
        }
        self.segments.clear();
        self.disk.sync_dir(".").await?;
        let seg = Segment::create(
            &self.disk,
            offset,
            self.clock.now_ms(),
            self.config.index_interval_bytes,
        )?;
        self.disk.sync_dir(".").await?;
        self.segments.insert(offset, seg);
        self.log_start_offset = offset;
        Ok(())
    }

    /// Removes the whole log from disk.
    pub async fn delete(self) -> io::Result<()> {
        self.disk.remove_dir_all(".").await
    }
}

#[cfg(test)]
mod tests;

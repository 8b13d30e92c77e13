//! One segment of a partition log: a `.log` file of whole batches plus its two indexes.

use super::index::{Index, OffsetEntry, TimeEntry};
use std::io;
use std::ops::ControlFlow;
use weir_seams::disk::{Disk, DiskFile};
use weir_wire::record::{BATCH_HEADER_LEN, BatchHeader, verify_crc};

/// Largest batch the log will ever hold, in bytes. A header claiming more is garbage.
pub(crate) const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How much of a segment is read at a time when scanning, in bytes.
const SCAN_CHUNK_BYTES: usize = 64 * 1024;

/// Where a scan of a segment stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// At the end of the file, after a whole, valid batch.
    Clean,
    /// At an invalid, torn or out-of-sequence batch starting at `position`.
    Invalid { position: u64, reason: String },
}

/// Serves byte ranges of a file through one reusable buffer.
struct ChunkReader<'a> {
    file: &'a DiskFile,
    buf: Vec<u8>,
    start: u64,
}

impl<'a> ChunkReader<'a> {
    fn new(file: &'a DiskFile) -> Self {
        Self {
            file,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// `len` bytes at `pos`; the caller has checked they lie within the file.
    fn get(&mut self, pos: u64, len: usize) -> io::Result<&[u8]> {
        let covered = pos >= self.start && pos + len as u64 <= self.start + self.buf.len() as u64;
        if !covered {
            self.buf.resize(len.max(SCAN_CHUNK_BYTES), 0);
            let n = self.file.read_at(&mut self.buf, pos)?;
            self.buf.truncate(n);
            self.start = pos;
            if n < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment shorter than its size",
                ));
            }
        }
        let at = (pos - self.start) as usize;
        Ok(&self.buf[at..at + len])
    }
}

/// How to open an existing segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// The tail: check every batch and truncate at the first bad one.
    Recover,
    /// A sealed segment, synced whole when it was rolled: trust it, load its indexes.
    Trust,
    /// Deliberately broken recovery, for showing that the checkers catch it.
    UnsafeNoTruncate,
}

/// A segment of the log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    log: DiskFile,
    /// Valid bytes in the log file.
    pub size: u64,
    /// Offset after the last batch (the base offset when empty).
    pub next_offset: i64,
    /// Largest batch max timestamp seen, or -1.
    pub max_timestamp: i64,
    /// When this segment was created or opened, for time-based rolling.
    pub created_ms: i64,
    offset_index: Index<OffsetEntry>,
    time_index: Index<TimeEntry>,
    bytes_since_entry: u64,
    index_interval_bytes: u64,
}

/// File names of the segment starting at `base`.
pub(crate) fn file_names(base: i64) -> [String; 3] {
    [
        format!("{base:020}.log"),
        format!("{base:020}.index"),
        format!("{base:020}.timeindex"),
    ]
}

/// Parses the base offset out of a `.log` file name.
pub(crate) fn parse_log_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

impl Segment {
    /// Creates a new, empty segment. The caller syncs the directory to make the files durable.
    pub fn create(
        disk: &Disk,
        base: i64,
        now_ms: i64,
        index_interval_bytes: u64,
    ) -> io::Result<Self> {
        let [log, idx, tidx] = file_names(base);
        let log = disk.open(&log, true)?;
        log.set_len(0)?;
        Ok(Self {
            base_offset: base,
            log,
            size: 0,
            next_offset: base,
            max_timestamp: -1,
            created_ms: now_ms,
            offset_index: Index::empty(disk.open(&idx, true)?)?,
            time_index: Index::empty(disk.open(&tidx, true)?)?,
            bytes_since_entry: 0,
            index_interval_bytes,
        })
    }

    /// Opens an existing segment. To [`OpenMode::Recover`], every batch is checked (header, CRC,
    /// offset continuity), the file is truncated at the first bad one and the indexes are
    /// rebuilt. To [`OpenMode::Trust`], the indexes are loaded if they pass a sanity check and
    /// the log is trusted; an invalid batch is then an error, since a sealed segment was synced
    /// whole.
    /// Returns the segment and the number of bytes truncated with the reason.
    pub async fn open(
        disk: &Disk,
        base: i64,
        now_ms: i64,
        index_interval_bytes: u64,
        mode: OpenMode,
    ) -> io::Result<(Self, Option<(u64, String)>)> {
        let [log_name, idx_name, tidx_name] = file_names(base);
        let log = disk.open(&log_name, false)?;
        let size = log.len()?;
        let idx = disk.open(&idx_name, true)?;
        let tidx = disk.open(&tidx_name, true)?;
        let mut seg = Self {
            base_offset: base,
            log,
            size,
            next_offset: base,
            max_timestamp: -1,
            created_ms: now_ms,
            offset_index: Index::empty(idx)?,
            time_index: Index::empty(tidx)?,
            bytes_since_entry: 0,
            index_interval_bytes,
        };
        if mode == OpenMode::UnsafeNoTruncate {
            // Finds the end of the valid batches but keeps whatever follows them, and appends
            // after it: the behaviour of a broker that skips recovery.
            let _ = seg.rebuild(0, false)?;
            seg.size = size;
            return Ok((seg, None));
        }
        if mode == OpenMode::Recover {
            let end = seg.rebuild(0, true)?;
            if let ScanEnd::Invalid { position, reason } = end {
                let cut = seg.size - position;
                seg.log.set_len(position)?;
                seg.log.sync().await?;
                seg.size = position;
                return Ok((seg, Some((cut, reason))));
            }
            return Ok((seg, None));
        }
        let [_, idx_name, tidx_name] = file_names(base);
        let loaded_offsets = Index::load(disk.open(&idx_name, false)?, |e: &OffsetEntry| {
            u64::from(e.position) < size
        })?;
        let loaded_times = Index::load(disk.open(&tidx_name, false)?, |_: &TimeEntry| true)?;
        let end = match (loaded_offsets, loaded_times) {
            (Some(offsets), Some(times)) => {
                seg.offset_index = offsets;
                seg.time_index = times;
                seg.max_timestamp = seg.time_index.last().map_or(-1, |e| e.timestamp);
                let from = seg.offset_index.last().copied();
                seg.resume_from(from)?
            }
            _ => seg.rebuild(0, false)?,
        };
        match end {
            ScanEnd::Clean => Ok((seg, None)),
            ScanEnd::Invalid { position, reason } => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("segment {base} is corrupt at byte {position} below the tail: {reason}"),
            )),
        }
    }

    /// Walks from the last index entry to the end of the file to find the next offset and the
    /// max timestamp of the unindexed tail.
    fn resume_from(&mut self, from: Option<OffsetEntry>) -> io::Result<ScanEnd> {
        let (pos, expected) = match from {
            Some(e) => (
                u64::from(e.position),
                self.base_offset + i64::from(e.rel_offset),
            ),
            None => (0, self.base_offset),
        };
        let mut next = expected;
        let mut max_ts = self.max_timestamp;
        let end = self.scan(pos, expected, false, |_, h| {
            next = h.next_offset();
            max_ts = max_ts.max(h.max_timestamp);
            ControlFlow::Continue(())
        })?;
        self.next_offset = next;
        self.max_timestamp = max_ts;
        Ok(end)
    }

    /// Rebuilds both indexes, the next offset and the max timestamp by scanning from `pos`
    /// (which must be 0: indexes are rebuilt whole). With CRC checks when called for recovery.
    fn rebuild(&mut self, pos: u64, check_crc: bool) -> io::Result<ScanEnd> {
        debug_assert_eq!(pos, 0);
        self.offset_index.truncate_while(|_| false)?;
        self.time_index.truncate_while(|_| false)?;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.bytes_since_entry = 0;
        let mut found = Vec::new();
        let end = self.scan(pos, self.base_offset, check_crc, |p, h| {
            found.push((p, *h));
            ControlFlow::Continue(())
        })?;
        for (p, h) in found {
            self.index_batch(p, &h)?;
        }
        Ok(end)
    }

    /// Scans whole batches from byte `pos`, expecting the first at `expected_offset` and each
    /// next one to follow on. Stops at the end, at the first invalid batch, or when `f` breaks
    /// (which reports [`ScanEnd::Clean`]).
    pub fn scan(
        &self,
        mut pos: u64,
        mut expected_offset: i64,
        check_crc: bool,
        mut f: impl FnMut(u64, &BatchHeader) -> ControlFlow<()>,
    ) -> io::Result<ScanEnd> {
        let mut reader = ChunkReader::new(&self.log);
        let invalid = |position: u64, reason: String| Ok(ScanEnd::Invalid { position, reason });
        while pos < self.size {
            let left = self.size - pos;
            if left < BATCH_HEADER_LEN as u64 {
                return invalid(pos, format!("{left} trailing bytes, short of a header"));
            }
            let header = match BatchHeader::parse(reader.get(pos, BATCH_HEADER_LEN)?) {
                Ok(h) => h,
                Err(e) => return invalid(pos, e.to_string()),
            };
            let len = header.total_len();
            if len > BATCH_BYTES_MAX || len as u64 > left {
                return invalid(
                    pos,
                    format!("batch of {len} bytes runs past the end ({left} left)"),
                );
            }
            if header.base_offset != expected_offset {
                return invalid(
                    pos,
                    format!(
                        "batch at offset {} where {expected_offset} was expected",
                        header.base_offset
                    ),
                );
            }
            if header.last_offset() - self.base_offset > i64::from(u32::MAX) {
                return invalid(pos, "offset beyond the segment's range".into());
            }
            if check_crc && let Err(e) = verify_crc(&header, reader.get(pos, len)?) {
                return invalid(pos, e.to_string());
            }
            if f(pos, &header).is_break() {
                return Ok(ScanEnd::Clean);
            }
            expected_offset = header.next_offset();
            pos += len as u64;
        }
        Ok(ScanEnd::Clean)
    }

    /// Records a batch written at `pos` in the in-memory state and the indexes.
    fn index_batch(&mut self, pos: u64, h: &BatchHeader) -> io::Result<()> {
        let rel =
            u32::try_from(h.base_offset - self.base_offset).expect("offset within segment range");
        let position = u32::try_from(pos).expect("segment under 4 GiB");
        if self.bytes_since_entry >= self.index_interval_bytes {
            self.offset_index.push(OffsetEntry {
                rel_offset: rel,
                position,
            })?;
            if h.max_timestamp.max(self.max_timestamp)
                > self.time_index.last().map_or(i64::MIN, |e| e.timestamp)
            {
                self.time_index.push(TimeEntry {
                    timestamp: h.max_timestamp.max(self.max_timestamp),
                    rel_offset: rel,
                })?;
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += h.total_len() as u64;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        self.next_offset = h.next_offset();
        self.size = self.size.max(pos + h.total_len() as u64);
        Ok(())
    }

    /// Appends a whole batch whose base offset is already set to `self.next_offset`.
    pub fn append(&mut self, batch: &[u8], header: &BatchHeader) -> io::Result<()> {
        assert_eq!(
            header.base_offset, self.next_offset,
            "appends must be dense"
        );
        assert_eq!(
            header.total_len(),
            batch.len(),
            "append takes exactly one batch"
        );
        let pos = self.size;
        self.log.write_all_at(batch, pos)?;
        self.index_batch(pos, header)
    }

    /// Byte position and base offset of the batch that contains `offset`, scanning from the
    /// index's floor entry.
    pub fn position_of(&self, offset: i64) -> io::Result<Option<(u64, i64)>> {
        if offset < self.base_offset || offset >= self.next_offset {
            return Ok(None);
        }
        let rel = u32::try_from(offset - self.base_offset).expect("offset within segment range");
        let (pos, expected) = match self.offset_index.floor(rel) {
            Some(e) => (
                u64::from(e.position),
                self.base_offset + i64::from(e.rel_offset),
            ),
            None => (0, self.base_offset),
        };
        let mut found = None;
        self.scan_until(pos, expected, |p, h| {
            if h.last_offset() >= offset {
                found = Some((p, h.base_offset));
                return true;
            }
            false
        })?;
        Ok(found)
    }

    /// Position of the first batch whose max timestamp is at least `ts`, using the time index to
    /// skip batches that are all earlier.
    pub fn position_for_timestamp(&self, ts: i64) -> io::Result<Option<u64>> {
        if self.max_timestamp < ts {
            return Ok(None);
        }
        let start_offset = self
            .time_index
            .last_below(ts)
            .map_or(self.base_offset, |e| {
                self.base_offset + i64::from(e.rel_offset)
            });
        let Some((start, base)) = self.position_of(start_offset)? else {
            return Ok(None);
        };
        let mut found = None;
        self.scan_until(start, base, |p, h| {
            if h.max_timestamp >= ts {
                found = Some(p);
                return true;
            }
            false
        })?;
        Ok(found)
    }

    /// Scans from `pos` until `stop` returns true.
    fn scan_until(
        &self,
        pos: u64,
        expected: i64,
        mut stop: impl FnMut(u64, &BatchHeader) -> bool,
    ) -> io::Result<()> {
        // Where the scan ends does not matter: the batches before the point of interest were whole.
        self.scan(pos, expected, false, |p, h| {
            if stop(p, h) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(())
    }

    /// Cuts the segment at byte `pos` (a batch boundary) and rebuilds its indexes, durably.
    pub async fn truncate_at(&mut self, pos: u64) -> io::Result<()> {
        assert!(pos <= self.size, "truncation only shortens a segment");
        self.log.set_len(pos)?;
        self.size = pos;
        if let ScanEnd::Invalid { position, reason } = self.rebuild(0, false)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "segment {} is corrupt at byte {position}: {reason}",
                    self.base_offset
                ),
            ));
        }
        self.sync_all().await
    }

    /// Reads `len` bytes at `pos`.
    pub fn read(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.log.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    /// A second handle on the log file, for syncing outside the log's lock.
    pub fn log_file(&self) -> &DiskFile {
        &self.log
    }

    /// Makes the log and both indexes durable.
    pub async fn sync_all(&self) -> io::Result<()> {
        self.log.sync().await?;
        self.offset_index.sync().await?;
        self.time_index.sync().await
    }
}

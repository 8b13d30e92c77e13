//! Sparse indexes of a segment: offset -> file position, and timestamp -> offset.
//!
//! Indexes are derived data. They are written alongside appends without fsync; recovery rebuilds
//! the tail segment's indexes from the log, and rebuilds any other index that fails its sanity
//! check. Entries live in memory as well as in their file.

use std::io;
use weir_seams::disk::DiskFile;

/// Size of one offset index entry on disk: relative offset (u32) + position (u32).
pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
/// Size of one time index entry on disk: timestamp (i64) + relative offset (u32).
pub(crate) const TIME_ENTRY_LEN: usize = 12;

/// One offset index entry: the batch starting at `base + rel_offset` is at byte `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

/// One time index entry: the batch at `base + rel_offset` raised the segment's max timestamp to
/// `timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

/// An index file plus its entries in memory.
#[derive(Debug)]
pub(crate) struct Index<E> {
    file: DiskFile,
    entries: Vec<E>,
}

pub(crate) trait Entry: Copy {
    const LEN: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(b: &[u8]) -> Self;
    /// Strictly after `prev` in the index's order.
    fn follows(&self, prev: &Self) -> bool;
}

impl Entry for OffsetEntry {
    const LEN: usize = OFFSET_ENTRY_LEN;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            rel_offset: u32::from_be_bytes(b[0..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
        }
    }
    fn follows(&self, prev: &Self) -> bool {
        self.rel_offset > prev.rel_offset && self.position > prev.position
    }
}

impl Entry for TimeEntry {
    const LEN: usize = TIME_ENTRY_LEN;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
            rel_offset: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
        }
    }
    fn follows(&self, prev: &Self) -> bool {
        self.timestamp > prev.timestamp && self.rel_offset > prev.rel_offset
    }
}

impl<E: Entry> Index<E> {
    /// An index over `file` whose contents are discarded (to be rebuilt).
    pub fn empty(file: DiskFile) -> io::Result<Self> {
        file.set_len(0)?;
        Ok(Self {
            file,
            entries: Vec::new(),
        })
    }

    /// Loads the entries in `file`, or `None` if they fail the sanity check `valid` (a torn,
    /// garbled or stale index), in which case the caller rebuilds it.
    pub fn load(file: DiskFile, valid: impl Fn(&E) -> bool) -> io::Result<Option<Self>> {
        let len = file.len()?;
        if len % E::LEN as u64 != 0 || len > u64::from(u32::MAX) {
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0)?;
        let mut entries: Vec<E> = Vec::with_capacity(buf.len() / E::LEN);
        for chunk in buf.chunks_exact(E::LEN) {
            let e = E::decode(chunk);
            if !valid(&e) || entries.last().is_some_and(|p| !e.follows(p)) {
                return Ok(None);
            }
            entries.push(e);
        }
        Ok(Some(Self { file, entries }))
    }

    /// Appends an entry in memory and to the file (not synced).
    pub fn push(&mut self, e: E) -> io::Result<()> {
        debug_assert!(
            self.entries.last().is_none_or(|p| e.follows(p)),
            "index entries must be ordered"
        );
        let mut buf = Vec::with_capacity(E::LEN);
        e.encode(&mut buf);
        self.file
            .write_all_at(&buf, (self.entries.len() * E::LEN) as u64)?;
        self.entries.push(e);
        Ok(())
    }

    /// Drops entries for which `keep` is false at the end of the index.
    pub fn truncate_while(&mut self, keep: impl Fn(&E) -> bool) -> io::Result<()> {
        while self.entries.last().is_some_and(|e| !keep(e)) {
            self.entries.pop();
        }
        self.file.set_len((self.entries.len() * E::LEN) as u64)
    }

    /// The last entry.
    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    /// Makes the index file durable.
    pub async fn sync(&self) -> io::Result<()> {
        self.file.sync().await
    }
}

impl Index<OffsetEntry> {
    /// The entry with the largest relative offset at or below `rel`.
    pub fn floor(&self, rel: u32) -> Option<OffsetEntry> {
        let i = self.entries.partition_point(|e| e.rel_offset <= rel);
        i.checked_sub(1).map(|i| self.entries[i])
    }
}

impl Index<TimeEntry> {
    /// The last entry whose timestamp is below `ts`: every batch before it has smaller timestamps.
    pub fn last_below(&self, ts: i64) -> Option<TimeEntry> {
        let i = self.entries.partition_point(|e| e.timestamp < ts);
        i.checked_sub(1).map(|i| self.entries[i])
    }
}

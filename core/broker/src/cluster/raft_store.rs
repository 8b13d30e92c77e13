//! Durable storage of the metadata quorum's Raft log.
//!
//! raft-rs's `MemStorage` holds the log in memory and answers the Raft library; this module
//! mirrors every change to disk first: entries are appended to `raft/log` as `[len][crc][entry]`
//! records and synced; the hard state (term and vote) and snapshots are replaced atomically. On
//! start the log is read back up to the first torn or corrupt record, which can only be one that
//! was never synced, and so never acknowledged to a peer.

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use weir_seams::disk::{Disk, DiskFile};

const LOG: &str = "raft/log";
const HARD_STATE: &str = "raft/hardstate";
const SNAPSHOT: &str = "raft/snapshot";
/// Largest single log record accepted on read, in bytes.
const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// What the Raft library reads: the in-memory log plus the latest snapshot with its data.
#[derive(Clone)]
pub(crate) struct StoreHandle {
    mem: MemStorage,
    snapshot: Arc<Mutex<Snapshot>>,
}

impl Storage for StoreHandle {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let s = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if s.get_metadata().index >= request_index && s.get_metadata().index > 0 {
            Ok(s.clone())
        } else {
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ))
        }
    }
}

/// The durable side of the Raft log, owned by the quorum task.
pub(crate) struct RaftStore {
    disk: Disk,
    handle: StoreHandle,
    log: DiskFile,
    /// Byte position of each entry's record in the log file.
    positions: BTreeMap<u64, u64>,
    log_len: u64,
    hard_state: HardState,
}

fn record(e: &Entry) -> io::Result<Vec<u8>> {
    let body = e.write_to_bytes().map_err(invalid)?;
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads records from the start of `bytes`; returns the entries and the length of the valid
/// prefix (anything after it is a torn or corrupt tail).
fn read_records(bytes: &[u8]) -> (Vec<(u64, Entry)>, u64) {
    let mut pos = 0usize;
    let mut out = Vec::new();
    while bytes.len() - pos >= 8 {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len > RECORD_BYTES_MAX || bytes.len() - pos - 8 < len {
            break;
        }
        let body = &bytes[pos + 8..pos + 8 + len];
        if crc32c::crc32c(body) != crc {
            break;
        }
        let mut e = Entry::default();
        if e.merge_from_bytes(body).is_err() {
            break;
        }
        out.push((pos as u64, e));
        pos += 8 + len;
    }
    (out, pos as u64)
}

impl RaftStore {
    /// Opens (or creates) the log on `disk` for a group of `voters`.
    pub async fn open(disk: Disk, voters: Vec<u64>) -> io::Result<Self> {
        disk.create_dir_all("raft")?;
        disk.sync_dir(".").await?;
        let mem = MemStorage::new_with_conf_state((voters, Vec::<u64>::new()));
        let mut snapshot = Snapshot::default();
        if let Some(bytes) = disk.read_small(SNAPSHOT)? {
            snapshot.merge_from_bytes(&bytes).map_err(invalid)?;
            mem.wl().apply_snapshot(snapshot.clone()).map_err(invalid)?;
        }
        let snap_index = snapshot.get_metadata().index;
        let log = disk.open(LOG, true)?;
        let len = log.len()?;
        let mut bytes = vec![0u8; len as usize];
        log.read_exact_at(&mut bytes, 0)?;
        let (records, valid) = read_records(&bytes);
        if valid < len {
            tracing::warn!(bytes = len - valid, "raft log: truncating a torn tail");
            log.set_len(valid)?;
            log.sync().await?;
        }
        disk.sync_dir("raft").await?;
        let mut positions = BTreeMap::new();
        let mut entries = Vec::new();
        for (pos, e) in records {
            if e.index <= snap_index {
                continue;
            }
            if let Some(prev) = entries.last().map(|p: &Entry| p.index)
                && e.index != prev + 1
            {
                return Err(invalid(format!(
                    "raft log skips from {prev} to {}",
                    e.index
                )));
            }
            positions.insert(e.index, pos);
            entries.push(e);
        }
        mem.wl().append(&entries).map_err(invalid)?;
        let mut hard_state = mem.initial_state().map_err(invalid)?.hard_state;
        if let Some(bytes) = disk.read_small(HARD_STATE)? {
            let mut hs = HardState::default();
            hs.merge_from_bytes(&bytes).map_err(invalid)?;
            // The commit index is not kept on disk; Raft recovers it.
            hs.commit = hard_state.commit.max(snap_index);
            hard_state = hs;
            mem.wl().set_hardstate(hard_state.clone());
        }
        let handle = StoreHandle {
            mem,
            snapshot: Arc::new(Mutex::new(snapshot)),
        };
        Ok(Self {
            disk,
            handle,
            log,
            positions,
            log_len: valid,
            hard_state,
        })
    }

    /// What the Raft library reads.
    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// The snapshot the log starts after, with its data.
    pub fn snapshot(&self) -> Snapshot {
        self.handle
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Appends entries durably, replacing any suffix they conflict with.
    pub async fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let Some(first) = entries.first().map(|e| e.index) else {
            return Ok(());
        };
        if let Some((_, pos)) = self.positions.range(first..).next() {
            let pos = *pos;
            self.log.set_len(pos)?;
            self.log_len = pos;
            self.positions.retain(|i, _| *i < first);
        }
        let mut buf = Vec::new();
        for e in entries {
            self.positions
                .insert(e.index, self.log_len + buf.len() as u64);
            buf.extend(record(e)?);
        }
        self.log.write_all_at(&buf, self.log_len)?;
        self.log_len += buf.len() as u64;
        self.log.sync().await?;
        self.handle.mem.wl().append(entries).map_err(invalid)
    }

    /// Records a new hard state; term and vote changes are made durable.
    pub async fn set_hard_state(&mut self, hs: &HardState) -> io::Result<()> {
        if hs.term != self.hard_state.term || hs.vote != self.hard_state.vote {
            let mut durable = hs.clone();
            durable.commit = 0;
            self.disk
                .write_atomic(HARD_STATE, &durable.write_to_bytes().map_err(invalid)?)
                .await?;
        }
        self.hard_state = hs.clone();
        self.handle.mem.wl().set_hardstate(hs.clone());
        Ok(())
    }

    /// Notes the commit index (kept in memory only).
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
        self.handle.mem.wl().mut_hard_state().commit = commit;
    }

    async fn rewrite_log(&mut self, entries: &[Entry]) -> io::Result<()> {
        let mut buf = Vec::new();
        self.positions.clear();
        for e in entries {
            self.positions.insert(e.index, buf.len() as u64);
            buf.extend(record(e)?);
        }
        self.disk.write_atomic(LOG, &buf).await?;
        self.log = self.disk.open(LOG, false)?;
        self.log_len = buf.len() as u64;
        Ok(())
    }

    /// Installs a snapshot received from the leader: the log restarts after it.
    pub async fn install_snapshot(&mut self, snap: Snapshot) -> io::Result<()> {
        self.disk
            .write_atomic(SNAPSHOT, &snap.write_to_bytes().map_err(invalid)?)
            .await?;
        self.rewrite_log(&[]).await?;
        self.handle
            .mem
            .wl()
            .apply_snapshot(snap.clone())
            .map_err(invalid)?;
        *self
            .handle
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = snap;
        Ok(())
    }

    /// Replaces the log up to `applied` with a snapshot holding `data`, the image at that index.
    pub async fn compact(&mut self, applied: u64, data: Vec<u8>) -> io::Result<()> {
        let mem = &self.handle.mem;
        let term = mem.term(applied).map_err(invalid)?;
        let last = mem.last_index().map_err(invalid)?;
        let conf_state: ConfState = mem.initial_state().map_err(invalid)?.conf_state;
        let rest = if last > applied {
            mem.entries(applied + 1, last + 1, None, GetEntriesContext::empty(false))
                .map_err(invalid)?
        } else {
            Vec::new()
        };
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = applied;
        meta.term = term;
        meta.set_conf_state(conf_state);
        self.disk
            .write_atomic(SNAPSHOT, &snap.write_to_bytes().map_err(invalid)?)
            .await?;
        self.rewrite_log(&rest).await?;
        let hs = self.hard_state.clone();
        {
            let mut core = self.handle.mem.wl();
            core.apply_snapshot(snap.clone()).map_err(invalid)?;
            core.append(&rest).map_err(invalid)?;
            core.set_hardstate(hs);
        }
        *self
            .handle
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = snap;
        Ok(())
    }

    /// Number of entries in the log after the snapshot.
    pub fn entries_since_snapshot(&self) -> usize {
        self.positions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn entries_and_votes_survive_a_restart_and_conflicts_replace_the_suffix() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = RaftStore::open(Disk::real(dir.path()), vec![1, 2, 3])
                .await
                .unwrap();
            s.append(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")])
                .await
                .unwrap();
            s.append(&[entry(3, 2, b"c2"), entry(4, 2, b"d")])
                .await
                .unwrap();
            let hs = HardState {
                term: 2,
                vote: 3,
                commit: 4,
                ..Default::default()
            };
            s.set_hard_state(&hs).await.unwrap();
        }
        let s = RaftStore::open(Disk::real(dir.path()), vec![1, 2, 3])
            .await
            .unwrap();
        let h = s.handle();
        assert_eq!(h.last_index().unwrap(), 4);
        assert_eq!(h.term(3).unwrap(), 2);
        let st = h.initial_state().unwrap();
        assert_eq!((st.hard_state.term, st.hard_state.vote), (2, 3));
        assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_torn_tail_is_dropped_and_compaction_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = RaftStore::open(Disk::real(dir.path()), vec![1])
                .await
                .unwrap();
            s.append(&(1..=10).map(|i| entry(i, 1, b"x")).collect::<Vec<_>>())
                .await
                .unwrap();
            s.set_commit(10);
            s.compact(6, b"image@6".to_vec()).await.unwrap();
            assert_eq!(s.handle().first_index().unwrap(), 7);
            assert_eq!(s.entries_since_snapshot(), 4);
        }
        let path = dir.path().join(LOG);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 50, 1, 2, 3]);
        std::fs::write(&path, bytes).unwrap();
        let s = RaftStore::open(Disk::real(dir.path()), vec![1])
            .await
            .unwrap();
        let h = s.handle();
        assert_eq!((h.first_index().unwrap(), h.last_index().unwrap()), (7, 10));
        assert_eq!(h.term(6).unwrap(), 1);
        assert_eq!(s.snapshot().get_data(), b"image@6");
        assert_eq!(h.snapshot(6, 2).unwrap().get_metadata().index, 6);
    }
}

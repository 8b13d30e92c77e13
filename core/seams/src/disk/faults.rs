//! Explicit disk faults for the simulated disk, driven by a fault plan.
//!
//! turmoil's filesystem already loses unsynced writes on a crash and, when configured with a block
//! size, tears them. [`DiskFaults`] adds the faults a plan switches on and off at chosen times:
//! - **I/O errors**: while failing, every operation returns `EIO`;
//! - **garbage on crash**: the region of a file that held an unsynced write when the host crashed
//!   comes back as random bytes instead of vanishing cleanly.
//!
//! Synced data is never damaged: a disk that corrupts acknowledged, fsynced bytes is outside the
//! single-copy model, and a checker could not tell a broker bug from the disk's.

use crate::rng::WeirRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Upper bound on the garbage left by one crash, in bytes.
const CRASH_GARBAGE_BYTES_MAX: u64 = 4096;

/// Shared switchboard of faults for one simulated host's disk. Cloned into the host's [`Disk`]
/// (see [`crate::disk::Disk::sim`]) and kept by the simulator, which flips it.
#[derive(Clone, Debug)]
pub struct DiskFaults(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    failing: bool,
    /// Files written since their last sync: path -> (synced length, end of the unsynced writes).
    dirty: BTreeMap<PathBuf, (u64, u64)>,
    /// Length of each file at its last sync.
    synced: BTreeMap<PathBuf, u64>,
    pending_damage: Option<CrashDamage>,
    rng: WeirRng,
    errors_injected: u64,
    /// Range of simulated fsync latency, in milliseconds.
    sync_latency_ms: (u64, u64),
}

/// Garbage to write over a file at the next start of the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashDamage {
    /// The damaged file.
    pub path: PathBuf,
    /// Where the garbage starts: at or after the file's synced length.
    pub offset: u64,
    /// The garbage bytes.
    pub garbage: Vec<u8>,
}

impl DiskFaults {
    /// A healthy disk whose random choices come from `rng`.
    pub fn new(rng: WeirRng) -> Self {
        Self(Arc::new(Mutex::new(State {
            failing: false,
            dirty: BTreeMap::new(),
            synced: BTreeMap::new(),
            pending_damage: None,
            rng,
            errors_injected: 0,
            sync_latency_ms: (0, 0),
        })))
    }

    /// A healthy disk seeded from `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self::new(WeirRng::seed_from_u64(seed))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts or stops failing every operation with `EIO`.
    pub fn set_failing(&self, failing: bool) {
        self.state().failing = failing;
    }

    /// Makes every fsync take between `min_ms` and `max_ms` of simulated time, so that writes
    /// spend time acknowledged by the page cache but not yet durable, as on a real disk.
    pub fn set_sync_latency_ms(&self, min_ms: u64, max_ms: u64) {
        assert!(min_ms <= max_ms);
        self.state().sync_latency_ms = (min_ms, max_ms);
    }

    /// How long the next fsync takes.
    pub(crate) fn next_sync_latency(&self) -> std::time::Duration {
        let mut s = self.state();
        let (lo, hi) = s.sync_latency_ms;
        let ms = if hi == 0 {
            0
        } else {
            s.rng.random_range(lo..=hi)
        };
        std::time::Duration::from_millis(ms)
    }

    /// How many operations have failed with an injected error so far.
    pub fn errors_injected(&self) -> u64 {
        self.state().errors_injected
    }

    pub(crate) fn check(&self) -> io::Result<()> {
        let mut s = self.state();
        if s.failing {
            s.errors_injected += 1;
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        Ok(())
    }

    pub(crate) fn record_write(&self, path: &Path, end: u64) {
        let mut s = self.state();
        let synced = s.synced.get(path).copied().unwrap_or(0);
        let entry = s.dirty.entry(path.to_path_buf()).or_insert((synced, end));
        entry.1 = entry.1.max(end);
    }

    pub(crate) fn record_sync(&self, path: &Path) {
        let mut s = self.state();
        if let Some((_, end)) = s.dirty.remove(path) {
            s.synced.insert(path.to_path_buf(), end);
        }
    }

    /// Called by the simulator when the host crashes: if `leave_garbage`, one file that had
    /// unsynced writes in flight is chosen to come back with garbage in that region.
    pub fn crashed(&self, leave_garbage: bool) {
        let mut s = self.state();
        let dirty = std::mem::take(&mut s.dirty);
        s.pending_damage = None;
        if !leave_garbage || dirty.is_empty() {
            return;
        }
        let pick = s.rng.random_range(0..dirty.len());
        let (path, (synced_len, end)) = dirty.into_iter().nth(pick).expect("index within len");
        let span = (end.saturating_sub(synced_len)).clamp(1, CRASH_GARBAGE_BYTES_MAX);
        let len = s.rng.random_range(1..=span);
        let garbage: Vec<u8> = (0..len).map(|_| s.rng.random()).collect();
        s.pending_damage = Some(CrashDamage {
            path,
            offset: synced_len,
            garbage,
        });
    }

    pub(crate) fn take_crash_damage(&self) -> Option<CrashDamage> {
        self.state().pending_damage.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_disk_returns_eio_and_counts() {
        let f = DiskFaults::seeded(1);
        assert!(f.check().is_ok());
        f.set_failing(true);
        let e = f.check().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(5));
        f.set_failing(false);
        assert!(f.check().is_ok());
        assert_eq!(f.errors_injected(), 1);
    }

    #[test]
    fn crash_garbage_lands_only_beyond_the_synced_length() {
        let f = DiskFaults::seeded(3);
        let p = Path::new("/d/seg.log");
        f.record_write(p, 100);
        f.record_sync(p);
        f.record_write(p, 180);
        f.crashed(true);
        let d = f.take_crash_damage().expect("damage chosen");
        assert_eq!(d.path, p);
        assert_eq!(d.offset, 100);
        assert!(!d.garbage.is_empty() && d.garbage.len() <= 80);
        assert!(f.take_crash_damage().is_none());
    }

    #[test]
    fn no_garbage_when_everything_was_synced() {
        let f = DiskFaults::seeded(3);
        let p = Path::new("/d/seg.log");
        f.record_write(p, 100);
        f.record_sync(p);
        f.crashed(true);
        assert!(f.take_crash_damage().is_none());
    }
}

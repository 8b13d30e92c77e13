//! State backends: where keyed state lives.
//!
//! State is addressed by a *cell* (state, key, namespace) and, within a cell, an *entry* (empty
//! for single values; a position for lists; a key for maps). Both are bytes. Concatenated, they
//! form an ordered key-value layout that an embedded store such as RocksDB holds directly;
//! snapshots list every (cell, entry, value) in that order.
//!
//! The heap backend finds cells by hash (with a fixed hasher) and keeps each cell's entries
//! ordered. Nothing iterates the hash map except a snapshot, which sorts what it lists.

use super::StateError;
use rustc_hash::FxBuildHasher;
use std::collections::{BTreeMap, HashMap};

/// One saved entry: cell, entry and value.
pub type SavedEntry = (Vec<u8>, Vec<u8>, Vec<u8>);
/// An entry of a cell and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Keyed state storage for one operator.
pub trait StateBackend {
    /// The value of `entry` in `cell`.
    fn get(&self, cell: &[u8], entry: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Sets `entry` of `cell` to `value`.
    fn put(&mut self, cell: &[u8], entry: &[u8], value: &[u8]) -> Result<(), StateError>;
    /// Removes `entry` of `cell`.
    fn delete(&mut self, cell: &[u8], entry: &[u8]) -> Result<(), StateError>;
    /// Every entry of `cell`, in entry order.
    fn entries(&self, cell: &[u8]) -> Result<Vec<Entry>, StateError>;
    /// The last entry of `cell`.
    fn last_entry(&self, cell: &[u8]) -> Result<Option<Entry>, StateError>;
    /// Removes every entry of `cell`.
    fn delete_cell(&mut self, cell: &[u8]) -> Result<(), StateError>;
    /// Everything, ordered by cell then entry: a full snapshot.
    fn save(&self) -> Result<Vec<SavedEntry>, StateError>;
    /// Replaces everything with saved entries.
    fn load(&mut self, entries: Vec<SavedEntry>) -> Result<(), StateError>;
    /// Number of entries.
    fn len(&self) -> usize;
    /// Whether there are no entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes held in cells, entries and values.
    fn size_bytes(&self) -> u64;
}

/// Keyed state on the heap. Single-valued cells (value, reducing and aggregating states) sit
/// directly in one map; cells with several entries (lists, maps) keep them ordered.
#[derive(Debug, Default)]
pub struct HeapBackend {
    singles: HashMap<Vec<u8>, Vec<u8>, FxBuildHasher>,
    multis: HashMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>, FxBuildHasher>,
    entries: usize,
    bytes: u64,
}

impl HeapBackend {
    fn put_single(&mut self, cell: &[u8], value: &[u8]) {
        match self.singles.get_mut(cell) {
            Some(v) => {
                self.bytes = self.bytes - v.len() as u64 + value.len() as u64;
                v.clear();
                v.extend_from_slice(value);
            }
            None => {
                self.bytes += (cell.len() + value.len()) as u64;
                self.entries += 1;
                self.singles.insert(cell.to_vec(), value.to_vec());
            }
        }
    }

    fn put_multi(&mut self, cell: &[u8], entry: &[u8], value: &[u8]) {
        let c = match self.multis.get_mut(cell) {
            Some(c) => c,
            None => {
                self.bytes += cell.len() as u64;
                self.multis.entry(cell.to_vec()).or_default()
            }
        };
        match c.get_mut(entry) {
            Some(v) => {
                self.bytes = self.bytes - v.len() as u64 + value.len() as u64;
                v.clear();
                v.extend_from_slice(value);
            }
            None => {
                self.bytes += (entry.len() + value.len()) as u64;
                self.entries += 1;
                c.insert(entry.to_vec(), value.to_vec());
            }
        }
    }
}

impl StateBackend for HeapBackend {
    fn get(&self, cell: &[u8], entry: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(if entry.is_empty() {
            self.singles.get(cell).cloned()
        } else {
            self.multis.get(cell).and_then(|c| c.get(entry)).cloned()
        })
    }

    fn put(&mut self, cell: &[u8], entry: &[u8], value: &[u8]) -> Result<(), StateError> {
        if entry.is_empty() {
            self.put_single(cell, value);
        } else {
            self.put_multi(cell, entry, value);
        }
        Ok(())
    }

    fn delete(&mut self, cell: &[u8], entry: &[u8]) -> Result<(), StateError> {
        if entry.is_empty() {
            if let Some(v) = self.singles.remove(cell) {
                self.bytes -= (cell.len() + v.len()) as u64;
                self.entries -= 1;
            }
            return Ok(());
        }
        let Some(c) = self.multis.get_mut(cell) else {
            return Ok(());
        };
        if let Some(v) = c.remove(entry) {
            self.bytes -= (entry.len() + v.len()) as u64;
            self.entries -= 1;
        }
        if c.is_empty() {
            self.multis.remove(cell);
            self.bytes -= cell.len() as u64;
        }
        Ok(())
    }

    fn entries(&self, cell: &[u8]) -> Result<Vec<Entry>, StateError> {
        Ok(self
            .multis
            .get(cell)
            .map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn last_entry(&self, cell: &[u8]) -> Result<Option<Entry>, StateError> {
        Ok(self
            .multis
            .get(cell)
            .and_then(|c| c.iter().next_back())
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn delete_cell(&mut self, cell: &[u8]) -> Result<(), StateError> {
        self.delete(cell, b"")?;
        if let Some(c) = self.multis.remove(cell) {
            self.entries -= c.len();
            self.bytes -= cell.len() as u64
                + c.iter()
                    .map(|(k, v)| (k.len() + v.len()) as u64)
                    .sum::<u64>();
        }
        Ok(())
    }

    fn save(&self) -> Result<Vec<SavedEntry>, StateError> {
        let mut out: Vec<SavedEntry> = Vec::with_capacity(self.entries);
        out.extend(
            self.singles
                .iter()
                .map(|(cell, v)| (cell.clone(), Vec::new(), v.clone())),
        );
        for (cell, c) in &self.multis {
            out.extend(
                c.iter()
                    .map(|(entry, v)| (cell.clone(), entry.clone(), v.clone())),
            );
        }
        out.sort_unstable();
        Ok(out)
    }

    fn load(&mut self, entries: Vec<SavedEntry>) -> Result<(), StateError> {
        *self = Self::default();
        for (cell, entry, value) in entries {
            self.put(&cell, &entry, &value)?;
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.entries
    }

    fn size_bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_hold_ordered_entries_and_account_for_their_bytes() {
        let mut b = HeapBackend::default();
        b.put(b"c1", b"\x02", b"two").unwrap();
        b.put(b"c1", b"\x01", b"one").unwrap();
        b.put(b"c2", b"", b"v").unwrap();
        b.put(b"c2", b"", b"vv").unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.entries(b"c1").unwrap(),
            vec![
                (b"\x01".to_vec(), b"one".to_vec()),
                (b"\x02".to_vec(), b"two".to_vec())
            ]
        );
        assert_eq!(b.last_entry(b"c1").unwrap().unwrap().1, b"two".to_vec());
        assert_eq!(b.get(b"c2", b"").unwrap(), Some(b"vv".to_vec()));
        let saved = b.save().unwrap();
        assert!(
            saved.windows(2).all(|w| w[0] <= w[1]),
            "snapshots are ordered"
        );
        b.delete_cell(b"c1").unwrap();
        b.delete(b"c2", b"").unwrap();
        assert_eq!((b.len(), b.size_bytes()), (0, 0));
        b.load(saved).unwrap();
        assert_eq!(b.len(), 3);
    }
}

//! Checkpoints: what each subtask saves, and where completed checkpoints, savepoints and the
//! job's own bookkeeping live on the job manager's disk.
//!
//! Every file is written with [`Disk::write_atomic`] (write, sync, rename, sync the directory)
//! and carries a CRC-32C of its body, so a checkpoint is either whole on disk or absent. A
//! completed checkpoint that fails its CRC stops recovery with an error rather than falling
//! back to an older one: the sinks may already have committed the newer one's transactions,
//! and replaying from further back would write their output twice.

use crate::operator::DropReason;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use weir_seams::disk::Disk;

/// One subtask of one stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// The stage.
    pub stage: u32,
    /// The subtask within it.
    pub subtask: u32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.stage, self.subtask)
    }
}

/// A record that reached a subtask before its channel's barrier, in an unaligned checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// The head's input edge it came on, in the stage's input-edge order.
    pub edge: u32,
    /// The record, encoded as an exchange element.
    pub bytes: Vec<u8>,
}

/// What one subtask saved at a barrier.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// Operator state by operator uid (sources: their offsets; sinks: their pending
    /// transaction).
    pub operators: BTreeMap<String, Vec<u8>>,
    /// Unaligned checkpoints: records that reached the task on a channel before that
    /// channel's barrier; replayed first on restore.
    pub in_flight: Vec<InFlight>,
    /// The subtask had taken in all its input: a source, every partition's end marker; any
    /// other, the end-of-time watermark, with nothing in flight. A checkpoint where every
    /// subtask says so holds the job's whole output, and the job finishes with it.
    pub input_ended: bool,
    /// Records the subtask's operators dropped up to the barrier, by reason.
    #[serde(default)]
    pub drops: BTreeMap<DropReason, u64>,
}

impl TaskSnapshot {
    /// Bytes of state held.
    pub fn size_bytes(&self) -> u64 {
        let ops: usize = self.operators.values().map(Vec::len).sum();
        let flight: usize = self.in_flight.iter().map(|f| f.bytes.len()).sum();
        (ops + flight) as u64
    }
}

/// A checkpoint every subtask acknowledged, or a savepoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedCheckpoint {
    /// Its id; ids only grow over a job's life, across restarts.
    pub id: u64,
    /// The attempt that took it.
    pub attempt: u64,
    /// Every subtask's snapshot, keyed by [`TaskId`] as "stage.subtask".
    pub tasks: BTreeMap<String, TaskSnapshot>,
}

impl CompletedCheckpoint {
    /// Bytes of state in the checkpoint.
    pub fn size_bytes(&self) -> u64 {
        self.tasks.values().map(TaskSnapshot::size_bytes).sum()
    }

    /// The snapshot of `task`, if the checkpoint holds one.
    pub fn task(&self, task: TaskId) -> Option<&TaskSnapshot> {
        self.tasks.get(&task.to_string())
    }
}

/// The job manager's own state: which attempt runs and which checkpoint id comes next.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMeta {
    /// The current attempt; each restart takes the next.
    pub attempt: u64,
    /// The next checkpoint id.
    pub next_checkpoint_id: u64,
    /// The job finished: its input ended and the final checkpoint was committed.
    pub finished: bool,
    /// The job was stopped with this savepoint, and runs again only from a savepoint.
    #[serde(default)]
    pub stopped: Option<String>,
}

/// Why a checkpoint file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk failed.
    #[error("checkpoint storage: {0}")]
    Io(#[from] io::Error),
    /// A file's CRC or contents are wrong.
    #[error("checkpoint storage: {file} is corrupt: {why}")]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong.
        why: String,
    },
}

const CHECKPOINTS: &str = "checkpoints";
const SAVEPOINTS: &str = "savepoints";
const META: &str = "job.json";
const OFFSET_LOG: &str = "offsets.json";

/// Micro-batch: the offset log's record of the batch planned last, written before any of
/// the batch is read. A batch re-run after a failure reads the same range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPlan {
    /// The completed checkpoint the batch starts from (none: from the start).
    pub after: Option<u64>,
    /// The checkpoint that first ran the batch.
    pub checkpoint_id: u64,
    /// Each source subtask's end offset per partition (exclusive).
    pub ends: BTreeMap<String, BTreeMap<i32, i64>>,
}

/// Checkpoints, savepoints and job bookkeeping on one disk.
pub struct CheckpointStore {
    disk: Disk,
}

impl CheckpointStore {
    /// Opens the store, creating its directories.
    pub async fn open(disk: Disk) -> Result<Self, StoreError> {
        disk.create_root().await?;
        disk.apply_crash_damage()?;
        for dir in [CHECKPOINTS, SAVEPOINTS] {
            disk.create_dir_all(dir)?;
            disk.sync_dir(dir).await?;
        }
        disk.sync_dir("").await?;
        Ok(Self { disk })
    }

    /// The job's bookkeeping, or the default for a new job.
    pub fn meta(&self) -> Result<JobMeta, StoreError> {
        Ok(self.read(META)?.unwrap_or_default())
    }

    /// Saves the job's bookkeeping durably.
    pub async fn save_meta(&self, meta: &JobMeta) -> Result<(), StoreError> {
        self.write(META, meta).await
    }

    /// Micro-batch: the batch the offset log holds, if any.
    pub fn batch_plan(&self) -> Result<Option<BatchPlan>, StoreError> {
        self.read(OFFSET_LOG)
    }

    /// Micro-batch: logs a batch durably before it runs (replacing the one before).
    pub async fn save_batch_plan(&self, plan: &BatchPlan) -> Result<(), StoreError> {
        self.write(OFFSET_LOG, plan).await
    }

    /// Saves a completed checkpoint durably, then deletes all but the newest `retained_max`.
    pub async fn save_checkpoint(
        &self,
        checkpoint: &CompletedCheckpoint,
        retained_max: usize,
    ) -> Result<(), StoreError> {
        assert!(retained_max >= 1, "at least the newest checkpoint is kept");
        self.write(&checkpoint_file(checkpoint.id), checkpoint)
            .await?;
        let ids = self.checkpoint_ids()?;
        for id in ids.iter().rev().skip(retained_max) {
            self.disk.remove_file(&checkpoint_file(*id))?;
        }
        self.disk.sync_dir(CHECKPOINTS).await?;
        Ok(())
    }

    /// Deletes every checkpoint: a job resumed from a savepoint must not fall back on the
    /// checkpoints of the run that was stopped.
    pub async fn clear_checkpoints(&self) -> Result<(), StoreError> {
        for id in self.checkpoint_ids()? {
            self.disk.remove_file(&checkpoint_file(id))?;
        }
        self.disk.sync_dir(CHECKPOINTS).await?;
        Ok(())
    }

    /// The newest completed checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<CompletedCheckpoint>, StoreError> {
        match self.checkpoint_ids()?.last() {
            Some(id) => self.read(&checkpoint_file(*id)),
            None => Ok(None),
        }
    }

    /// Ids of the checkpoints on disk, oldest first.
    pub fn checkpoint_ids(&self) -> Result<Vec<u64>, StoreError> {
        let mut ids: Vec<u64> = self
            .disk
            .list(CHECKPOINTS)?
            .iter()
            .filter_map(|f| f.strip_prefix("chk-")?.strip_suffix(".json")?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Saves a savepoint, kept until deleted by hand; returns its name.
    pub async fn save_savepoint(
        &self,
        savepoint: &CompletedCheckpoint,
    ) -> Result<String, StoreError> {
        let name = format!("{SAVEPOINTS}/sp-{:012}.json", savepoint.id);
        self.write(&name, savepoint).await?;
        Ok(name)
    }

    /// Reads the savepoint `name` (as [`CheckpointStore::save_savepoint`] returned it).
    pub fn savepoint(&self, name: &str) -> Result<CompletedCheckpoint, StoreError> {
        self.read(name)?.ok_or_else(|| StoreError::Corrupt {
            file: name.to_string(),
            why: "no such savepoint".into(),
        })
    }

    async fn write<T: Serialize>(&self, file: &str, value: &T) -> Result<(), StoreError> {
        let body = serde_json::to_vec(value).expect("checkpoint types serialize");
        let mut bytes = crc32c::crc32c(&body).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        self.disk.write_atomic(file, &bytes).await?;
        Ok(())
    }

    fn read<T: DeserializeOwned>(&self, file: &str) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.disk.read_small(file)? else {
            return Ok(None);
        };
        let corrupt = |why: String| StoreError::Corrupt {
            file: file.to_string(),
            why,
        };
        let Some((crc, body)) = bytes.split_first_chunk::<4>() else {
            return Err(corrupt("shorter than its CRC".into()));
        };
        if crc32c::crc32c(body) != u32::from_be_bytes(*crc) {
            return Err(corrupt("CRC mismatch".into()));
        }
        serde_json::from_slice(body)
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }
}

fn checkpoint_file(id: u64) -> String {
    format!("{CHECKPOINTS}/chk-{id:012}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(id: u64) -> CompletedCheckpoint {
        let snapshot = TaskSnapshot {
            operators: BTreeMap::from([("op".to_string(), vec![id as u8; 3])]),
            in_flight: vec![InFlight {
                edge: 0,
                bytes: vec![1, 2],
            }],
            input_ended: false,
            drops: BTreeMap::from([(DropReason::Late, 2)]),
        };
        CompletedCheckpoint {
            id,
            attempt: 1,
            tasks: BTreeMap::from([(
                TaskId {
                    stage: 0,
                    subtask: 0,
                }
                .to_string(),
                snapshot,
            )]),
        }
    }

    #[tokio::test]
    async fn checkpoints_are_retained_restored_and_checked() {
        let dir = std::env::temp_dir().join(format!("weir-snapshot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = CheckpointStore::open(Disk::real(&dir)).await.unwrap();
        assert_eq!(store.meta().unwrap(), JobMeta::default());
        assert!(store.latest_checkpoint().unwrap().is_none());
        for id in 1..=5 {
            store.save_checkpoint(&checkpoint(id), 2).await.unwrap();
        }
        assert_eq!(store.checkpoint_ids().unwrap(), vec![4, 5]);
        let latest = store.latest_checkpoint().unwrap().unwrap();
        assert_eq!(latest, checkpoint(5));
        assert_eq!(latest.size_bytes(), 5);
        let name = store.save_savepoint(&checkpoint(9)).await.unwrap();
        assert_eq!(store.savepoint(&name).unwrap().id, 9);
        let meta = JobMeta {
            attempt: 3,
            next_checkpoint_id: 6,
            finished: false,
            stopped: Some(name.clone()),
        };
        store.save_meta(&meta).await.unwrap();
        assert_eq!(store.meta().unwrap(), meta);
        // A run resumed from a savepoint starts without the stopped run's checkpoints.
        store.clear_checkpoints().await.unwrap();
        assert!(store.latest_checkpoint().unwrap().is_none());
        assert_eq!(store.savepoint(&name).unwrap().id, 9);
        store.save_checkpoint(&checkpoint(5), 2).await.unwrap();
        // A flipped byte is refused, not read as an older state.
        let path = dir.join("checkpoints/chk-000000000005.json");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            store.latest_checkpoint(),
            Err(StoreError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

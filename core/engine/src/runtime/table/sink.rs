//! The writer of an upsert operator: a write-ahead sink. Rows wait in the operator until their
//! checkpoint's barrier, go into the snapshot with it, and reach the table when the checkpoint
//! completes (or, after a failure, when the job restores that checkpoint).

use super::{TableRow, TableStore};
use crate::operator::sink::SinkRow;
use crate::runtime::config::RuntimeMutation;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Rows one subtask holds for the table at once: those since the last barrier and those of
/// checkpoints not yet complete. Past it the task fails rather than grow; checkpoints that
/// complete keep it far away.
pub const STAGED_ROWS_MAX: usize = 100_000;

/// One upsert subtask's staged rows.
pub(crate) struct TableSink {
    store: Arc<dyn TableStore>,
    /// The writer's name in the table's commit record: job, operator and subtask.
    writer: String,
    mutation: Option<RuntimeMutation>,
    /// Rows since the last barrier.
    open: Vec<TableRow>,
    /// Rows of checkpoints taken but not known complete, by checkpoint id.
    prepared: BTreeMap<u64, Vec<TableRow>>,
    staged: usize,
}

impl TableSink {
    /// Opens the writer; a restored one first applies the rows its checkpoint (`restored`: id
    /// and snapshot) still held, which the store refuses if they were applied before.
    pub async fn open(
        store: Arc<dyn TableStore>,
        writer: String,
        mutation: Option<RuntimeMutation>,
        restored: Option<(u64, &[u8])>,
    ) -> Result<Self, String> {
        let sink = Self {
            store,
            writer,
            mutation,
            open: Vec::new(),
            prepared: BTreeMap::new(),
            staged: 0,
        };
        if let Some((checkpoint_id, bytes)) = restored {
            let prepared: Vec<(u64, Vec<TableRow>)> =
                serde_json::from_slice(bytes).map_err(|e| format!("table writer state: {e}"))?;
            for (id, rows) in prepared {
                if id > checkpoint_id {
                    return Err(format!(
                        "table writer state: checkpoint {checkpoint_id} holds rows of {id}"
                    ));
                }
                let applied = sink.commit(id, &rows).await?;
                tracing::info!(checkpoint = id, applied, "restored table writer committed");
            }
        }
        Ok(sink)
    }

    /// Stages a row (key and value as text; a row without a key has the empty key).
    pub fn write(&mut self, row: SinkRow) -> Result<(), String> {
        if self.staged >= STAGED_ROWS_MAX {
            return Err(format!(
                "table writer: {STAGED_ROWS_MAX} rows staged; checkpoints are not completing"
            ));
        }
        self.open.push(TableRow {
            key: String::from_utf8_lossy(row.key.as_deref().unwrap_or_default()).into_owned(),
            value: String::from_utf8_lossy(&row.value).into_owned(),
            ts: row.ts,
        });
        self.staged += 1;
        Ok(())
    }

    /// At barrier `checkpoint_id`: the rows since the last barrier become that checkpoint's,
    /// and the snapshot holds every checkpoint's rows not yet applied.
    pub async fn pre_commit(&mut self, checkpoint_id: u64) -> Result<Vec<u8>, String> {
        let rows = std::mem::take(&mut self.open);
        if self.mutation == Some(RuntimeMutation::CommitBeforeComplete) {
            self.commit(checkpoint_id, &rows).await?;
            self.staged -= rows.len();
        } else if !rows.is_empty() {
            self.prepared.insert(checkpoint_id, rows);
        }
        let snapshot: Vec<(&u64, &Vec<TableRow>)> = self.prepared.iter().collect();
        Ok(serde_json::to_vec(&snapshot).expect("rows serialize"))
    }

    /// Applies the rows of every checkpoint up to `checkpoint_id`, oldest first.
    pub async fn on_complete(&mut self, checkpoint_id: u64) -> Result<(), String> {
        while let Some(entry) = self.prepared.first_entry() {
            if *entry.key() > checkpoint_id {
                break;
            }
            let id = *entry.key();
            let rows = entry.remove();
            // On failure the task fails; the checkpoint still holds these rows, and its
            // restore applies them.
            let applied = self.commit(id, &rows).await?;
            if !applied && !rows.is_empty() {
                // Only a restore may find its rows applied already: a first apply that is
                // refused means checkpoint ids went backwards, and the rows would be lost.
                return Err(format!(
                    "table writer {}: the table already holds checkpoint {id} or a later one",
                    self.writer
                ));
            }
            self.staged -= rows.len();
        }
        Ok(())
    }

    async fn commit(&self, checkpoint_id: u64, rows: &[TableRow]) -> Result<bool, String> {
        if rows.is_empty() {
            return Ok(false);
        }
        self.store
            .commit(&self.writer, checkpoint_id, rows)
            .await
            .map_err(|e| format!("table writer {}: {e}", self.writer))
    }
}

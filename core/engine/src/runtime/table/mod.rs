//! Tables a job upserts rows into, exactly once: the [`OperatorSpec::Upsert`] operator's
//! targets.
//!
//! A table is a map from key to the latest value written under it. Its writer stages each
//! checkpoint's rows in the checkpoint itself and applies them when the checkpoint completes,
//! in one transaction of the table's store that also records the checkpoint id as the writer's
//! last commit. A commit whose id is not above that record is refused as already applied, so a
//! restored job can apply its checkpoint's rows again safely, and a zombie cannot roll a table
//! back. Each key also counts the writes applied to it: an exactly-once run applies every input
//! row once, which a checker can see from the counts.
//!
//! Stores: [`server`], Weir's own table host (the simulator runs it on a host with its own
//! disk and faults); [`sqlite`], the embedded one for real runs; and [`postgres`].
//!
//! [`OperatorSpec::Upsert`]: super::OperatorSpec::Upsert

pub mod postgres;
pub mod server;
mod sink;
pub mod sqlite;

pub(crate) use sink::TableSink;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a store's operations return.
pub type TableFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TableError>> + Send + 'a>>;

/// One upsert: `value` becomes the key's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRow {
    /// Primary key.
    pub key: String,
    /// The new value (the jobs here write JSON documents).
    pub value: String,
    /// Event time of the row that wrote it.
    pub ts: i64,
}

/// A key's current value in a table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// The last value written.
    pub value: String,
    /// Its event time.
    pub ts: i64,
    /// Upserts applied to the key so far.
    pub writes: u64,
}

/// A table's whole content, by key.
pub type TableContent = BTreeMap<String, TableEntry>;

/// Why a table operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TableError {
    /// The store could not be reached or failed mid-operation; nothing was applied.
    #[error("table store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the operation for good (a limit, a bad name).
    #[error("table store refused: {0}")]
    Refused(String),
}

/// A store of tables that applies a writer's commits atomically and at most once each.
pub trait TableStore: Send + Sync {
    /// Applies `rows`, in order, as `writer`'s commit of checkpoint `checkpoint_id`, unless
    /// the writer's last applied commit is that checkpoint or a later one. Returns whether it
    /// applied them.
    fn commit<'a>(
        &'a self,
        writer: &'a str,
        checkpoint_id: u64,
        rows: &'a [TableRow],
    ) -> TableFuture<'a, bool>;

    /// The table's whole content (for checks and tests; stores bound its size).
    fn scan(&self) -> TableFuture<'_, TableContent>;
}

/// The tables a task manager can write, by the name a graph gives them.
#[derive(Clone, Default)]
pub struct Tables(BTreeMap<String, Arc<dyn TableStore>>);

impl Tables {
    /// Adds `store` under `name`, replacing any table of that name.
    pub fn with(mut self, name: &str, store: Arc<dyn TableStore>) -> Self {
        self.0.insert(name.to_string(), store);
        self
    }

    /// The table called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn TableStore>> {
        self.0.get(name).cloned()
    }
}

impl fmt::Debug for Tables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A table held in memory with its writers' last commits: the semantics every store
/// implements, and the state of the table host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableState {
    /// The content.
    pub rows: TableContent,
    /// Each writer's last applied checkpoint.
    pub commits: BTreeMap<String, u64>,
}

impl TableState {
    /// Whether a commit would apply: `Ok(false)` if the writer already applied this checkpoint
    /// or a later one, an error if it would take the table past `rows_max` keys.
    pub fn admits(
        &self,
        writer: &str,
        checkpoint_id: u64,
        rows: &[TableRow],
        rows_max: usize,
    ) -> Result<bool, TableError> {
        if self
            .commits
            .get(writer)
            .is_some_and(|c| *c >= checkpoint_id)
        {
            return Ok(false);
        }
        let new_keys: std::collections::BTreeSet<&str> = rows
            .iter()
            .map(|r| r.key.as_str())
            .filter(|k| !self.rows.contains_key(*k))
            .collect();
        if self.rows.len() + new_keys.len() > rows_max {
            return Err(TableError::Refused(format!(
                "the table would hold more than {rows_max} keys"
            )));
        }
        Ok(true)
    }

    /// Applies a commit as [`TableStore::commit`] describes, if [`TableState::admits`] it;
    /// a refused commit leaves the table as it was.
    pub fn apply(
        &mut self,
        writer: &str,
        checkpoint_id: u64,
        rows: &[TableRow],
        rows_max: usize,
    ) -> Result<bool, TableError> {
        if !self.admits(writer, checkpoint_id, rows, rows_max)? {
            return Ok(false);
        }
        for row in rows {
            let entry = self
                .rows
                .entry(row.key.clone())
                .or_insert_with(|| TableEntry {
                    value: String::new(),
                    ts: row.ts,
                    writes: 0,
                });
            entry.value.clone_from(&row.value);
            entry.ts = row.ts;
            entry.writes += 1;
        }
        self.commits.insert(writer.to_string(), checkpoint_id);
        Ok(true)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn row(key: &str, value: &str) -> TableRow {
        TableRow {
            key: key.into(),
            value: value.into(),
            ts: 1,
        }
    }

    /// Drives a store through commits, repeats and stale commits, and checks what it holds.
    pub(crate) async fn commits_apply_once(table: &dyn TableStore) {
        let two = [row("a", "1"), row("b", "1")];
        assert_eq!(table.commit("w", 3, &two).await, Ok(true));
        assert_eq!(table.commit("w", 3, &[row("a", "9")]).await, Ok(false));
        assert_eq!(table.commit("w", 2, &[row("a", "9")]).await, Ok(false));
        assert_eq!(table.commit("w", 4, &[row("a", "2")]).await, Ok(true));
        assert_eq!(table.commit("v", 1, &[row("c", "1")]).await, Ok(true));
        let content = table.scan().await.unwrap();
        assert_eq!(content.len(), 3);
        assert_eq!(content["a"].value, "2");
        assert_eq!(content["a"].writes, 2);
        assert_eq!(content["b"].writes, 1);
    }

    #[test]
    fn a_commit_applies_once_and_an_older_one_never() {
        let mut t = TableState::default();
        assert_eq!(
            t.apply("w", 2, &[row("a", "1"), row("a", "2")], 10),
            Ok(true)
        );
        assert_eq!(t.apply("w", 2, &[row("a", "3")], 10), Ok(false));
        assert_eq!(t.apply("w", 1, &[row("b", "1")], 10), Ok(false));
        assert_eq!(t.apply("v", 1, &[row("b", "1")], 10), Ok(true));
        assert_eq!(t.rows["a"].value, "2");
        assert_eq!(t.rows["a"].writes, 2);
        assert_eq!(t.rows.len(), 2);
    }

    #[test]
    fn a_commit_past_the_key_limit_changes_nothing() {
        let mut t = TableState::default();
        assert_eq!(t.apply("w", 1, &[row("a", "1")], 2), Ok(true));
        let before = t.clone();
        let refused = t.apply("w", 2, &[row("b", "1"), row("c", "1")], 2);
        assert!(matches!(refused, Err(TableError::Refused(_))));
        assert_eq!(t, before);
        assert_eq!(
            t.apply("w", 2, &[row("a", "2"), row("b", "1")], 2),
            Ok(true)
        );
    }
}

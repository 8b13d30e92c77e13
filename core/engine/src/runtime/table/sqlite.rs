//! A table in an embedded SQLite database: the default upsert target of real runs.
//!
//! The table is `(key TEXT PRIMARY KEY, value TEXT, ts INTEGER, writes INTEGER)`, and
//! `weir_commits(tbl, writer, checkpoint_id)` records each writer's last applied checkpoint. A
//! commit is one SQLite transaction over both, so the rows and the record land together or not
//! at all. Calls run on the caller's thread: a commit per checkpoint and subtask is short, and
//! the simulator never uses this store.

use super::{TableContent, TableEntry, TableError, TableFuture, TableRow, TableStore};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

/// Keys [`SqliteTable::scan`] returns at most.
pub const SCAN_ROWS_MAX: usize = 1_000_000;

/// One table of a SQLite database file.
pub struct SqliteTable {
    connection: Mutex<Connection>,
    table: String,
}

fn unavailable(e: rusqlite::Error) -> TableError {
    TableError::Unavailable(format!("sqlite: {e}"))
}

/// Refuses a table name that is not letters, digits and underscores, so that it can be quoted
/// into SQL as it is.
pub(super) fn check_name(table: &str) -> Result<(), TableError> {
    if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(TableError::Refused(format!(
            "table name {table:?}: use letters, digits and underscores"
        )));
    }
    Ok(())
}

impl SqliteTable {
    /// Opens (creating if needed) the database at `path` and the table `table` in it. Table
    /// names are letters, digits and underscores.
    pub fn open(path: &Path, table: &str) -> Result<Self, TableError> {
        check_name(table)?;
        let connection = Connection::open(path).map_err(unavailable)?;
        connection
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS \"{table}\" (
                     key TEXT PRIMARY KEY, value TEXT NOT NULL,
                     ts INTEGER NOT NULL, writes INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS weir_commits (
                     tbl TEXT NOT NULL, writer TEXT NOT NULL, checkpoint_id INTEGER NOT NULL,
                     PRIMARY KEY (tbl, writer));"
            ))
            .map_err(unavailable)?;
        Ok(Self {
            connection: Mutex::new(connection),
            table: table.to_string(),
        })
    }

    fn commit_now(
        &self,
        writer: &str,
        checkpoint_id: u64,
        rows: &[TableRow],
    ) -> Result<bool, TableError> {
        let checkpoint = i64::try_from(checkpoint_id)
            .map_err(|_| TableError::Refused(format!("checkpoint id {checkpoint_id}")))?;
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let tx = connection.transaction().map_err(unavailable)?;
        let last: Option<i64> = tx
            .query_row(
                "SELECT checkpoint_id FROM weir_commits WHERE tbl = ?1 AND writer = ?2",
                params![self.table, writer],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        if last.is_some_and(|c| c >= checkpoint) {
            return Ok(false);
        }
        {
            let mut upsert = tx
                .prepare(&format!(
                    "INSERT INTO \"{}\" (key, value, ts, writes) VALUES (?1, ?2, ?3, 1)
                     ON CONFLICT (key) DO UPDATE SET
                         value = excluded.value, ts = excluded.ts, writes = writes + 1",
                    self.table
                ))
                .map_err(unavailable)?;
            for row in rows {
                upsert
                    .execute(params![row.key, row.value, row.ts])
                    .map_err(unavailable)?;
            }
        }
        tx.execute(
            "INSERT INTO weir_commits (tbl, writer, checkpoint_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (tbl, writer) DO UPDATE SET checkpoint_id = excluded.checkpoint_id",
            params![self.table, writer, checkpoint],
        )
        .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(true)
    }

    fn scan_now(&self) -> Result<TableContent, TableError> {
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let mut select = connection
            .prepare(&format!(
                "SELECT key, value, ts, writes FROM \"{}\" ORDER BY key LIMIT ?1",
                self.table
            ))
            .map_err(unavailable)?;
        let rows = select
            .query_map(params![SCAN_ROWS_MAX as i64 + 1], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    TableEntry {
                        value: r.get(1)?,
                        ts: r.get(2)?,
                        writes: r.get::<_, i64>(3)? as u64,
                    },
                ))
            })
            .map_err(unavailable)?;
        let content = rows
            .collect::<Result<TableContent, _>>()
            .map_err(unavailable)?;
        if content.len() > SCAN_ROWS_MAX {
            return Err(TableError::Refused(format!(
                "the table holds more than {SCAN_ROWS_MAX} keys"
            )));
        }
        Ok(content)
    }
}

impl TableStore for SqliteTable {
    fn commit<'a>(
        &'a self,
        writer: &'a str,
        checkpoint_id: u64,
        rows: &'a [TableRow],
    ) -> TableFuture<'a, bool> {
        Box::pin(async move { self.commit_now(writer, checkpoint_id, rows) })
    }

    fn scan(&self) -> TableFuture<'_, TableContent> {
        Box::pin(async move { self.scan_now() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::table::tests::{commits_apply_once, row};

    #[tokio::test]
    async fn commits_apply_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        commits_apply_once(&SqliteTable::open(&path, "orders").unwrap()).await;
        let table = SqliteTable::open(&path, "orders").unwrap();
        let content = table.scan().await.unwrap();
        assert_eq!((content.len(), content["a"].writes), (3, 2));
        assert_eq!(table.commit("w", 4, &[row("d", "1")]).await, Ok(false));
    }

    #[test]
    fn a_table_name_that_is_not_a_plain_word_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let refused = SqliteTable::open(&dir.path().join("t.db"), "x\"; DROP TABLE y");
        assert!(matches!(refused, Err(TableError::Refused(_))));
    }
}

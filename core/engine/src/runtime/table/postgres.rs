//! A table in a PostgreSQL database, for real runs given a `postgres://` URL.
//!
//! The schema is SQLite's (see [`super::sqlite`]): the table `(key, value, ts, writes)` and
//! `weir_commits(tbl, writer, checkpoint_id)`. A commit is one transaction that first moves the
//! writer's record forward, conditionally: when the record already holds this checkpoint or a
//! later one, the update touches no row and the transaction ends without writing, so two
//! attempts of one writer cannot both apply a checkpoint even when they race.

use super::{TableContent, TableEntry, TableError, TableFuture, TableRow, TableStore};
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

/// Keys [`PostgresTable::scan`] returns at most.
pub const SCAN_ROWS_MAX: i64 = 1_000_000;

/// One table of a PostgreSQL database.
pub struct PostgresTable {
    client: Mutex<Client>,
    table: String,
}

fn unavailable(e: tokio_postgres::Error) -> TableError {
    TableError::Unavailable(format!("postgres: {e}"))
}

impl PostgresTable {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`) and creates
    /// the table `table` (letters, digits and underscores) if it is not there. The connection
    /// is driven by a task on the current tokio runtime.
    pub async fn connect(url: &str, table: &str) -> Result<Self, TableError> {
        super::sqlite::check_name(table)?;
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(unavailable)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection ended");
            }
        });
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS \"{table}\" (
                     key TEXT PRIMARY KEY, value TEXT NOT NULL,
                     ts BIGINT NOT NULL, writes BIGINT NOT NULL);
                 CREATE TABLE IF NOT EXISTS weir_commits (
                     tbl TEXT NOT NULL, writer TEXT NOT NULL, checkpoint_id BIGINT NOT NULL,
                     PRIMARY KEY (tbl, writer));"
            ))
            .await
            .map_err(unavailable)?;
        Ok(Self {
            client: Mutex::new(client),
            table: table.to_string(),
        })
    }

    async fn commit_now(
        &self,
        writer: &str,
        checkpoint_id: u64,
        rows: &[TableRow],
    ) -> Result<bool, TableError> {
        let checkpoint = i64::try_from(checkpoint_id)
            .map_err(|_| TableError::Refused(format!("checkpoint id {checkpoint_id}")))?;
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(unavailable)?;
        let moved = tx
            .execute(
                "INSERT INTO weir_commits (tbl, writer, checkpoint_id) VALUES ($1, $2, $3)
                 ON CONFLICT (tbl, writer) DO UPDATE SET checkpoint_id = EXCLUDED.checkpoint_id
                 WHERE weir_commits.checkpoint_id < EXCLUDED.checkpoint_id",
                &[&self.table, &writer, &checkpoint],
            )
            .await
            .map_err(unavailable)?;
        if moved == 0 {
            // Dropping the transaction rolls it back.
            return Ok(false);
        }
        let upsert = tx
            .prepare(&format!(
                "INSERT INTO \"{table}\" (key, value, ts, writes) VALUES ($1, $2, $3, 1)
                 ON CONFLICT (key) DO UPDATE SET
                     value = EXCLUDED.value, ts = EXCLUDED.ts, writes = \"{table}\".writes + 1",
                table = self.table
            ))
            .await
            .map_err(unavailable)?;
        for row in rows {
            tx.execute(&upsert, &[&row.key, &row.value, &row.ts])
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn scan_now(&self) -> Result<TableContent, TableError> {
        let client = self.client.lock().await;
        let rows = client
            .query(
                &format!(
                    "SELECT key, value, ts, writes FROM \"{}\" ORDER BY key LIMIT $1",
                    self.table
                ),
                &[&(SCAN_ROWS_MAX + 1)],
            )
            .await
            .map_err(unavailable)?;
        if rows.len() as i64 > SCAN_ROWS_MAX {
            return Err(TableError::Refused(format!(
                "the table holds more than {SCAN_ROWS_MAX} keys"
            )));
        }
        Ok(rows
            .iter()
            .map(|r| {
                let entry = TableEntry {
                    value: r.get(1),
                    ts: r.get(2),
                    writes: r.get::<_, i64>(3) as u64,
                };
                (r.get(0), entry)
            })
            .collect())
    }
}

impl TableStore for PostgresTable {
    fn commit<'a>(
        &'a self,
        writer: &'a str,
        checkpoint_id: u64,
        rows: &'a [TableRow],
    ) -> TableFuture<'a, bool> {
        Box::pin(self.commit_now(writer, checkpoint_id, rows))
    }

    fn scan(&self) -> TableFuture<'_, TableContent> {
        Box::pin(self.scan_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::table::tests::commits_apply_once;

    /// Runs against the database in `WEIR_POSTGRES_URL`, which `.ci/run` starts and sets.
    #[tokio::test]
    async fn commits_apply_once_in_postgres() {
        let Ok(url) = std::env::var("WEIR_POSTGRES_URL") else {
            eprintln!(
                "skipped: WEIR_POSTGRES_URL is not set (.ci/run starts a server and sets it)"
            );
            return;
        };
        let table = "weir_store_test";
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        let reset = format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE IF NOT EXISTS weir_commits (
                 tbl TEXT NOT NULL, writer TEXT NOT NULL, checkpoint_id BIGINT NOT NULL,
                 PRIMARY KEY (tbl, writer));
             DELETE FROM weir_commits WHERE tbl = '{table}';"
        );
        client.batch_execute(&reset).await.unwrap();
        commits_apply_once(&PostgresTable::connect(&url, table).await.unwrap()).await;
    }
}

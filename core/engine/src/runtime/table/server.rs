//! Weir's table host: tables kept in memory and made durable by a commit log on its own disk,
//! served over the network. The simulator runs it as the upsert target of its scenarios, on a
//! host that crashes, loses its unsynced writes and meets disk faults like any other.
//!
//! Every applied commit is one log record, `[body length u32][crc32c of body u32][body]` with
//! the commit as JSON, synced before the writer hears that it applied. A restart replays the
//! log and cuts it at the first record that is short or fails its checksum: a commit torn by a
//! crash was never acknowledged. An I/O error on the log stops the host (fail-stop), since
//! whether the record reached the disk is then unknown; its restart finds out from the log.
//! The log is the whole history, bounded by [`TableServerConfig::log_bytes_max`]: this host
//! serves simulations and tests, not years of production traffic.

use super::{TableContent, TableError, TableFuture, TableRow, TableState, TableStore};
use crate::runtime::rpc::{RpcError, read_message, write_message};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinSet;
use weir_seams::disk::{Disk, DiskFile};
use weir_seams::net::Net;
use weir_wire::frame::write_frame;

/// The port a table host listens on.
pub const TABLE_PORT: u16 = 7070;
const LOG_FILE: &str = "commits.log";
const RECORD_HEADER_BYTES: usize = 8;

/// Settings of a table host.
#[derive(Clone, Debug)]
pub struct TableServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Network.
    pub net: Net,
    /// Largest request or reply, in bytes.
    pub frame_bytes_max: usize,
    /// Keys one table may hold.
    pub rows_max: usize,
    /// Size the commit log may reach, in bytes; commits past it are refused.
    pub log_bytes_max: u64,
}

impl TableServerConfig {
    /// Defaults for a host listening on `listen`.
    pub fn new(listen: String, net: Net) -> Self {
        Self {
            listen,
            net,
            frame_bytes_max: 16 * 1024 * 1024,
            rows_max: 50_000,
            log_bytes_max: 256 * 1024 * 1024,
        }
    }
}

/// A request to a table host.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Request {
    Commit {
        table: String,
        writer: String,
        checkpoint_id: u64,
        rows: Vec<TableRow>,
    },
    Scan {
        table: String,
    },
}

/// A table host's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Reply {
    Committed { applied: bool },
    Content(TableContent),
    Failed(TableError),
}

/// Why a table host stopped.
#[derive(Debug, thiserror::Error)]
pub enum TableServerError {
    /// Its disk failed; it must restart and recover from its log.
    #[error("table host disk: {0}")]
    Disk(#[from] io::Error),
}

struct Host {
    tables: BTreeMap<String, TableState>,
    log: DiskFile,
    log_bytes: u64,
    failed: Option<io::Error>,
}

/// Recovers the tables from `disk` and serves them until the disk fails.
pub async fn run_table_server(
    config: TableServerConfig,
    disk: Disk,
) -> Result<(), TableServerError> {
    disk.apply_crash_damage()?;
    disk.create_root().await?;
    let existed = disk.exists(LOG_FILE)?;
    let log = disk.open(LOG_FILE, true)?;
    if !existed {
        disk.sync_dir(".").await?;
    }
    let (tables, log_bytes) = recover(&log, config.log_bytes_max, config.frame_bytes_max)?;
    log.set_len(log_bytes)?;
    log.sync().await?;
    tracing::info!(
        tables = tables.len(),
        log_bytes,
        "table host recovered its commit log"
    );
    let host = Arc::new(Mutex::new(Host {
        tables,
        log,
        log_bytes,
        failed: None,
    }));
    let failed = Arc::new(Notify::new());
    let listener = config.net.bind(&config.listen).await?;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (host, failed, config) = (Arc::clone(&host), Arc::clone(&failed), config.clone());
                connections.spawn(async move {
                    if let Err(e) = serve(stream, &host, &failed, &config).await {
                        tracing::debug!(error = %e, "table connection ended");
                    }
                });
            }
            () = failed.notified() => {
                let why = host.lock().await.failed.take();
                return Err(why.unwrap_or_else(|| io::Error::other("log failed")).into());
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Answers one connection's requests in turn.
async fn serve(
    mut stream: weir_seams::net::Stream,
    host: &Mutex<Host>,
    failed: &Notify,
    config: &TableServerConfig,
) -> Result<(), RpcError> {
    loop {
        let request: Request = read_message(&mut stream, config.frame_bytes_max).await?;
        let reply = match request {
            Request::Commit {
                table,
                writer,
                checkpoint_id,
                rows,
            } => {
                let mut host = host.lock().await;
                match host
                    .commit(&table, &writer, checkpoint_id, &rows, config)
                    .await
                {
                    Ok(applied) => Reply::Committed { applied },
                    Err(CommitError::Refused(e)) => Reply::Failed(e),
                    Err(CommitError::Disk(e)) => {
                        tracing::warn!(error = %e, "table host log failed; stopping");
                        host.failed = Some(e);
                        failed.notify_one();
                        return Ok(());
                    }
                }
            }
            Request::Scan { table } => {
                let host = host.lock().await;
                let content = host.tables.get(&table).map(|t| t.rows.clone());
                Reply::Content(content.unwrap_or_default())
            }
        };
        let bytes = serde_json::to_vec(&reply).expect("replies serialize");
        if bytes.len() > config.frame_bytes_max {
            let too_big = TableError::Refused(format!(
                "the reply would take {} bytes, over {}",
                bytes.len(),
                config.frame_bytes_max
            ));
            write_message(&mut stream, &Reply::Failed(too_big)).await?;
        } else {
            write_frame(&mut stream, &bytes).await?;
        }
    }
}

enum CommitError {
    Refused(TableError),
    Disk(io::Error),
}

impl Host {
    async fn commit(
        &mut self,
        table: &str,
        writer: &str,
        checkpoint_id: u64,
        rows: &[TableRow],
        config: &TableServerConfig,
    ) -> Result<bool, CommitError> {
        let state = self.tables.entry(table.to_string()).or_default();
        // Checked first, so that a refused or repeated commit leaves no record.
        if !state
            .admits(writer, checkpoint_id, rows, config.rows_max)
            .map_err(CommitError::Refused)?
        {
            return Ok(false);
        }
        let record = log_record(&Request::Commit {
            table: table.to_string(),
            writer: writer.to_string(),
            checkpoint_id,
            rows: rows.to_vec(),
        });
        let record_bytes = record.len() as u64;
        if self.log_bytes + record_bytes > config.log_bytes_max {
            return Err(CommitError::Refused(TableError::Refused(format!(
                "the commit log would pass {} bytes",
                config.log_bytes_max
            ))));
        }
        self.log
            .write_all_at(&record, self.log_bytes)
            .map_err(CommitError::Disk)?;
        self.log.sync().await.map_err(CommitError::Disk)?;
        self.log_bytes += record_bytes;
        let applied = state
            .apply(writer, checkpoint_id, rows, usize::MAX)
            .expect("admitted above");
        debug_assert!(applied, "checked above");
        Ok(applied)
    }
}

/// A commit as its log record: length, checksum, body.
fn log_record(commit: &Request) -> Vec<u8> {
    let body = serde_json::to_vec(commit).expect("commits serialize");
    let mut record = Vec::with_capacity(RECORD_HEADER_BYTES + body.len());
    record.extend_from_slice(&(body.len() as u32).to_be_bytes());
    record.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    record.extend_from_slice(&body);
    record
}

/// Replays the log; returns the tables and the length of its intact prefix.
fn recover(
    log: &DiskFile,
    log_bytes_max: u64,
    frame_bytes_max: usize,
) -> io::Result<(BTreeMap<String, TableState>, u64)> {
    let len = log.len()?;
    if len > log_bytes_max {
        return Err(io::Error::other(format!(
            "the commit log holds {len} bytes, over its bound of {log_bytes_max}"
        )));
    }
    let mut bytes = vec![0; len as usize];
    log.read_exact_at(&mut bytes, 0)?;
    let mut tables: BTreeMap<String, TableState> = BTreeMap::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + RECORD_HEADER_BYTES) {
        let body_len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
        let start = at + RECORD_HEADER_BYTES;
        let Some(body) = bytes.get(start..start.saturating_add(body_len)) else {
            break;
        };
        if body_len > frame_bytes_max || crc32c::crc32c(body) != crc {
            break;
        }
        let Ok(Request::Commit {
            table,
            writer,
            checkpoint_id,
            rows,
        }) = serde_json::from_slice(body)
        else {
            break;
        };
        // Replayed commits were admitted once; the writer's record skips any applied twice.
        let _ = tables
            .entry(table)
            .or_default()
            .apply(&writer, checkpoint_id, &rows, usize::MAX);
        at = start + body_len;
    }
    if at < bytes.len() {
        tracing::warn!(
            kept = at,
            dropped = bytes.len() - at,
            "table host cut a torn or damaged tail off its log"
        );
    }
    Ok((tables, at as u64))
}

/// A table on a table host, reached over the network.
#[derive(Clone, Debug)]
pub struct TableClient {
    net: Net,
    /// The host, "host:port".
    addr: String,
    table: String,
    frame_bytes_max: usize,
    request_timeout_ms: u64,
}

impl TableClient {
    /// The table `table` on the host at `addr`.
    pub fn new(net: Net, addr: &str, table: &str) -> Self {
        Self {
            net,
            addr: addr.to_string(),
            table: table.to_string(),
            frame_bytes_max: 16 * 1024 * 1024,
            request_timeout_ms: 10_000,
        }
    }

    async fn ask(&self, request: &Request) -> Result<Reply, TableError> {
        let exchange = async {
            let mut stream = self.net.connect(&self.addr).await?;
            write_message(&mut stream, request).await?;
            read_message::<Reply, _>(&mut stream, self.frame_bytes_max).await
        };
        let unavailable = |why: String| TableError::Unavailable(format!("{}: {why}", self.addr));
        match tokio::time::timeout(Duration::from_millis(self.request_timeout_ms), exchange).await {
            Ok(Ok(Reply::Failed(e))) => Err(e),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(unavailable(e.to_string())),
            Err(_) => Err(unavailable("timed out".into())),
        }
    }
}

impl TableStore for TableClient {
    fn commit<'a>(
        &'a self,
        writer: &'a str,
        checkpoint_id: u64,
        rows: &'a [TableRow],
    ) -> TableFuture<'a, bool> {
        Box::pin(async move {
            let request = Request::Commit {
                table: self.table.clone(),
                writer: writer.to_string(),
                checkpoint_id,
                rows: rows.to_vec(),
            };
            match self.ask(&request).await? {
                Reply::Committed { applied } => Ok(applied),
                other => Err(TableError::Unavailable(format!(
                    "unexpected reply {other:?}"
                ))),
            }
        })
    }

    fn scan(&self) -> TableFuture<'_, TableContent> {
        Box::pin(async move {
            let request = Request::Scan {
                table: self.table.clone(),
            };
            match self.ask(&request).await? {
                Reply::Content(content) => Ok(content),
                other => Err(TableError::Unavailable(format!(
                    "unexpected reply {other:?}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::table::tests::row;

    fn commit(checkpoint_id: u64, key: &str) -> Vec<u8> {
        log_record(&Request::Commit {
            table: "t".into(),
            writer: "w".into(),
            checkpoint_id,
            rows: vec![row(key, "v")],
        })
    }

    /// Writes `bytes` as the log and recovers from it.
    fn recovered(bytes: &[u8]) -> (BTreeMap<String, TableState>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::real(dir.path());
        let log = disk.open(LOG_FILE, true).unwrap();
        log.write_all_at(bytes, 0).unwrap();
        recover(&log, 1 << 20, 1 << 20).unwrap()
    }

    #[test]
    fn recovery_keeps_whole_records_and_cuts_a_torn_or_damaged_tail() {
        let (one, two) = (commit(1, "a"), commit(2, "b"));
        let whole = [one.clone(), two.clone()].concat();
        let (tables, len) = recovered(&whole);
        assert_eq!((tables["t"].rows.len(), len), (2, whole.len() as u64));

        let torn = &whole[..whole.len() - 3];
        let (tables, len) = recovered(torn);
        assert_eq!((tables["t"].rows.len(), len), (1, one.len() as u64));

        let mut damaged = whole.clone();
        let last = damaged.len() - 2;
        damaged[last] ^= 0xff;
        let (tables, len) = recovered(&damaged);
        assert_eq!((tables["t"].commits["w"], len), (1, one.len() as u64));

        // A length field that claims far more than any frame is garbage, not an allocation.
        let mut huge = one.clone();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 12]);
        assert_eq!(recovered(&huge).1, one.len() as u64);
    }
}

//! `weir cluster`: a local cluster of `weir broker` processes, supervised.
//!
//! Each broker is a child process with its own data directory under `--data-dir`, so that a
//! user (or a test) can `kill -9` one and watch the others carry on. A broker that exits
//! without being told to is started again after a backoff, on the same directory: that is
//! the crash-and-restart a Jepsen-style check needs.

use super::broker::{Switches, termination};
use clap::Args;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

/// How long a broker has to stop after SIGTERM before it is killed, in milliseconds.
const STOP_GRACE_MS: u64 = 10_000;

/// Settings of `weir cluster`.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Number of brokers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    pub brokers: u16,
    /// Parent of every broker's data directory (`broker-ID`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Host every listener binds and advertises.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker ID's Kafka listener is on BASE_PORT + ID, its internal one on
    /// BASE_PORT + 100 + ID.
    #[arg(long, default_value_t = 9092)]
    pub base_port: u16,
    /// Wait before restarting a broker that died, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub restart_backoff_ms: u64,
    /// Restarts of one broker before the cluster gives up on it.
    #[arg(long, default_value_t = 100)]
    pub restarts_max: u32,
    /// Replication factor of a topic created with -1; the number of brokers (at most 3) by
    /// default.
    #[arg(long)]
    pub default_replication_factor: Option<i16>,
    /// Switches every broker gets.
    #[command(flatten)]
    pub switches: Switches,
}

impl ClusterArgs {
    fn client_port(&self, id: u16) -> u16 {
        self.base_port + id
    }

    fn internal_port(&self, id: u16) -> u16 {
        self.base_port + 100 + id
    }

    /// The `weir broker` arguments of broker `id`.
    fn broker_args(&self, id: u16) -> Vec<String> {
        let voters: Vec<String> = (0..self.brokers)
            .map(|v| format!("{v}@{}:{}", self.host, self.internal_port(v)))
            .collect();
        let rf = self
            .default_replication_factor
            .unwrap_or(self.brokers.min(3) as i16);
        let mut args = vec![
            "broker".to_string(),
            "--node-id".into(),
            id.to_string(),
            "--listen".into(),
            format!("{}:{}", self.host, self.client_port(id)),
            "--data-dir".into(),
            self.data_dir
                .join(format!("broker-{id}"))
                .display()
                .to_string(),
            "--voters".into(),
            voters.join(","),
            "--default-replication-factor".into(),
            rf.to_string(),
        ];
        args.extend(self.switches.to_args());
        args
    }
}

/// Runs the cluster until SIGTERM or Ctrl-C, then stops every broker gracefully.
pub fn run(args: ClusterArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    super::block_on("cluster", runtime, supervise_all(args))
}

async fn supervise_all(args: ClusterArgs) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let (stop_tx, stop) = watch::channel(false);
    let (ready_tx, mut ready) = mpsc::channel::<Result<u16, String>>(args.brokers as usize);
    let mut tasks = Vec::new();
    for id in 0..args.brokers {
        let child = Supervised {
            id,
            exe: exe.clone(),
            args: args.broker_args(id),
            backoff: Duration::from_millis(args.restart_backoff_ms),
            restarts_max: args.restarts_max,
        };
        tasks.push(tokio::spawn(child.run(stop.clone(), ready_tx.clone())));
    }
    drop(ready_tx);
    let mut started = 0;
    let outcome = loop {
        tokio::select! {
            signal = termination() => break Err(format!("{signal} before the cluster was up")),
            r = ready.recv() => match r {
                Some(Ok(_)) => {
                    started += 1;
                    if started == args.brokers {
                        break Ok(());
                    }
                }
                Some(Err(e)) => break Err(e),
                None => break Err("every broker gave up".into()),
            },
        }
    };
    if outcome.is_ok() {
        let bootstrap: Vec<String> = (0..args.brokers)
            .map(|id| format!("{}:{}", args.host, args.client_port(id)))
            .collect();
        println!("weir cluster bootstrap {}", bootstrap.join(","));
        let signal = termination().await;
        tracing::info!(signal, "stopping the brokers");
    }
    stop_tx.send_replace(true);
    for t in tasks {
        let _ = t.await;
    }
    outcome
}

/// One broker process and its restarts.
struct Supervised {
    id: u16,
    exe: PathBuf,
    args: Vec<String>,
    backoff: Duration,
    restarts_max: u32,
}

impl Supervised {
    async fn run(self, mut stop: watch::Receiver<bool>, ready: mpsc::Sender<Result<u16, String>>) {
        let announced = Arc::new(AtomicBool::new(false));
        for attempt in 0..=self.restarts_max {
            let mut command = Command::new(&self.exe);
            command
                .args(&self.args)
                .stdout(Stdio::piped())
                .kill_on_drop(true);
            // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent.
            // It makes the broker get SIGTERM when this process dies, even by SIGKILL, so
            // that no broker outlives its cluster.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let mut child = match command.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready
                        .send(Err(format!("broker {}: spawn: {e}", self.id)))
                        .await;
                    return;
                }
            };
            let pid = child.id().unwrap_or(0);
            println!("weir cluster broker {} pid {pid}", self.id);
            if let Some(out) = child.stdout.take() {
                tokio::spawn(forward(self.id, out, ready.clone(), Arc::clone(&announced)));
            }
            tokio::select! {
                _ = stopped(&mut stop) => {
                    stop_child(&mut child).await;
                    return;
                }
                status = child.wait() => {
                    tracing::warn!(broker = self.id, pid, ?status, attempt, "broker exited; restarting");
                }
            }
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(self.backoff) => {}
            }
        }
        let _ = ready
            .send(Err(format!(
                "broker {} exited {} times; giving up",
                self.id,
                self.restarts_max + 1
            )))
            .await;
    }
}

/// Copies a broker's stdout to ours; reports on `ready` the first "listening" line of any
/// of the broker's runs.
async fn forward(
    id: u16,
    out: tokio::process::ChildStdout,
    ready: mpsc::Sender<Result<u16, String>>,
    announced: Arc<AtomicBool>,
) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("{line}");
        if line.contains(" listening on ") && !announced.swap(true, Ordering::SeqCst) {
            let _ = ready.send(Ok(id)).await;
        }
    }
}

/// Resolves once the cluster is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// SIGTERM, then SIGKILL if the broker has not stopped within [`STOP_GRACE_MS`].
async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid this process spawned and has not yet reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_millis(STOP_GRACE_MS), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

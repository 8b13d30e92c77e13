//! Helpers of the tests that run `weir` processes and real clients on loopback.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// How long a broker or cluster may take to print that it listens, in seconds.
const START_TIMEOUT_S: u64 = 120;

/// Runs `weir ARGS` to its end and returns what it printed.
pub fn weir(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("weir runs")
}

/// A `weir` child process, killed when dropped, with its stdout lines.
pub struct WeirProcess {
    child: Child,
    lines: Receiver<String>,
}

impl WeirProcess {
    /// Starts `weir ARGS`, with stdout piped line by line.
    pub fn start(args: &[String]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("weir starts");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("[weir] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for a stdout line containing `marker` and returns it.
    pub fn wait_for_line(&mut self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(START_TIMEOUT_S);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(marker) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {marker:?} from weir: {e}"),
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        signal("TERM", &[self.child.id()]);
        self.wait()
    }

    /// Waits for the process to exit on its own.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("weir exits")
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a single `weir broker` on an ephemeral loopback port; returns it and its address.
pub fn start_broker(data_dir: &Path) -> (WeirProcess, String) {
    let mut p = WeirProcess::start(&[
        "broker".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ]);
    let line = p.wait_for_line(" listening on ");
    let addr = line
        .split_whitespace()
        .nth(5)
        .expect("weir broker N listening on ADDR")
        .to_string();
    (p, addr)
}

/// A running `weir cluster`: the process, its bootstrap list and each broker's first pid.
pub struct LocalCluster {
    /// The `weir cluster` process.
    pub process: WeirProcess,
    /// `host:port,host:port,...`
    pub bootstrap: String,
    /// Pid of each broker's first run, by broker id.
    pub pids: Vec<u32>,
}

/// Starts `weir cluster` with `brokers` brokers on free loopback ports and `extra` arguments,
/// and waits until every broker serves.
pub fn start_cluster(data_dir: &Path, brokers: u16, extra: &[&str]) -> LocalCluster {
    let base = free_base_port(brokers);
    let mut args: Vec<String> = [
        "cluster",
        "--brokers",
        &brokers.to_string(),
        "--base-port",
        &base.to_string(),
        "--data-dir",
        &data_dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut process = WeirProcess::start(&args);
    let mut pids = vec![0; brokers as usize];
    loop {
        let line = process.wait_for_line("weir cluster ");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["weir", "cluster", "broker", id, "pid", pid] => {
                pids[id.parse::<usize>().unwrap()] = pid.parse().unwrap();
            }
            ["weir", "cluster", "bootstrap", list] => {
                return LocalCluster {
                    bootstrap: list.to_string(),
                    process,
                    pids,
                };
            }
            _ => {}
        }
    }
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to `pids`.
pub fn signal(signal: &str, pids: &[u32]) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pids:?}");
}

/// A base port `b` such that b..b+n and b+100..b+100+n are free on loopback right now.
pub fn free_base_port(n: u16) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        if base > 65_000 - 200 {
            continue;
        }
        let ports = (0..n).flat_map(|i| [base + i, base + 100 + i]);
        let held: Vec<_> = ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if held.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free block of ports on loopback");
}

/// The Python interpreter with the real clients: `WEIR_PYTHON`, or `.venv` at the repository
/// root, made and filled from tests/clients/requirements.txt when it lacks them.
pub fn python() -> PathBuf {
    // Concurrent callers wait for the one that makes the venv.
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| match std::env::var_os("WEIR_PYTHON") {
            Some(p) => PathBuf::from(p),
            None => venv_python(),
        })
        .clone()
}

fn venv_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join(".venv");
    let py = venv.join("bin/python");
    let has_clients = |py: &Path| {
        Command::new(py)
            .args(["-c", "import kafka, confluent_kafka, lz4, snappy"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_clients(&py) {
        return py;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 runs");
    assert!(made.success(), "python3 -m venv {} failed", venv.display());
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "-r"])
        .arg(root.join("tests/clients/requirements.txt"))
        .status()
        .expect("pip runs");
    assert!(
        installed.success(),
        "pip install of the real clients failed"
    );
    assert!(has_clients(&py), "the venv still lacks the clients");
    py
}

/// Runs `tests/clients/SCRIPT ARGS` with the clients' Python; panics with its output unless it
/// exits 0.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg(root.join("tests/clients").join(script))
        .args(args)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

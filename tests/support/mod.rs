//! Helpers of the tests that run `weir` processes and real clients on loopback.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;
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

/// A `weir` child process, killed when dropped, with its stdout lines and a count of the
/// panics it reports on stderr.
pub struct WeirProcess {
    child: Child,
    lines: Receiver<String>,
    panics: Option<JoinHandle<usize>>,
}

impl WeirProcess {
    /// Starts `weir ARGS` with `RUST_BACKTRACE=0`, with stdout piped line by line and stderr
    /// echoed and scanned for "panicked".
    pub fn start(args: &[String]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weir starts");
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("[weir] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let panics = std::thread::spawn(move || {
            let mut panics = 0;
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[weir stderr] {line}");
                panics += usize::from(line.contains("panicked"));
            }
            panics
        });
        Self {
            child,
            lines,
            panics: Some(panics),
        }
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

    /// Sends SIGTERM, waits for the exit status and returns it with the number of stderr
    /// lines, over the whole run, that say "panicked".
    pub fn terminate_counting_panics(mut self) -> (std::process::ExitStatus, usize) {
        signal("TERM", &[self.child.id()]);
        let status = self.child.wait().expect("weir exits");
        let panics = self.panics.take().expect("stderr scanned once");
        (status, panics.join().expect("the stderr reader ends"))
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
    start_broker_with(data_dir, &[])
}

/// Starts a single `weir broker` with `extra` arguments on an ephemeral loopback port; returns
/// it and its address.
pub fn start_broker_with(data_dir: &Path, extra: &[&str]) -> (WeirProcess, String) {
    let mut args: Vec<String> = ["broker", "--listen", "127.0.0.1:0", "--data-dir"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(data_dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = WeirProcess::start(&args);
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
            .args([
                "-c",
                "import kafka, confluent_kafka, lz4, snappy, zstandard",
            ])
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
    let mut cmd = Command::new(python());
    cmd.arg(root.join("tests/clients").join(script)).args(args);
    run_client(cmd, script)
}

/// Runs a client program to its end; panics with its output, naming it `what`, unless it
/// exits 0. Returns its stdout.
pub fn run_client(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what} runs: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The requirements of the matrix venv `name`, from tests/clients/matrix.txt.
fn matrix_requirements(name: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let list = std::fs::read_to_string(root.join("tests/clients/matrix.txt")).expect("matrix.txt");
    list.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|words| words.first().is_some_and(|w| w == name))
        .unwrap_or_else(|| panic!("{name} is not in tests/clients/matrix.txt"))
        .split_off(1)
}

/// The Python interpreter of the matrix venv `name` (tests/clients/matrix.txt):
/// `.venv-clients/NAME` at the repository root, made again unless its
/// `weir-requirements.txt` lists the requirements that the matrix gives now.
pub fn client_python(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join(".venv-clients").join(name);
    let marker = venv.join("weir-requirements.txt");
    let py = venv.join("bin/python");
    let reqs = matrix_requirements(name);
    let made = std::fs::read_to_string(&marker).unwrap_or_default();
    if py.exists() && made.split_whitespace().eq(reqs.iter().map(String::as_str)) {
        return py;
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .expect("python3 runs");
    assert!(
        status.success(),
        "python3 -m venv {} failed",
        venv.display()
    );
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(&reqs)
        .status()
        .expect("pip runs");
    assert!(status.success(), "pip install {reqs:?} failed");
    std::fs::write(&marker, reqs.join(" ") + "\n").expect("write the venv's marker");
    py
}

/// tests/clients/kafkajs with its node_modules, installed with `npm ci` when KafkaJS is
/// missing.
pub fn kafkajs_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/kafkajs");
    if !dir.join("node_modules/kafkajs").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci in {} failed", dir.display());
    }
    dir
}

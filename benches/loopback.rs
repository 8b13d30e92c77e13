//! Loopback throughput and latency of Weir's broker, against raw TCP and against a second
//! Kafka-protocol broker (tansu), as ratios measured in one run.
//!
//! Everything runs on 127.0.0.1 of one machine. The brokers run as separate processes, each
//! started fresh for every round on an empty data directory, and are driven by Weir's own
//! Rust client (`weir_client`) from this process, so every broker sees the same client:
//!
//! - **raw TCP**: a tokio sender writes [`RAW_TCP_BYTES`] in [`RAW_TCP_CHUNK_BYTES`] buffers to
//!   a tokio receiver. This is the ceiling any broker on loopback could reach.
//! - **weir**: `weir broker` with its default durability: a record counts towards the high
//!   watermark (and is visible to consumers) only once fsynced.
//! - **weir-pagecache**: `weir broker --page-cache-acks`: a record counts once in the page
//!   cache, as Kafka does by default. This is the Weir setting closest to tansu's.
//! - **tansu** (if its binary is present, see `benches/peers/tansu.sh`): `tansu broker` with
//!   its in-memory storage engine. It never touches the disk, so against `weir` (fsync) it is
//!   not apples to apples; `weir-pagecache` is the fairer comparison.
//!
//! Against each broker, per round:
//!
//! - **produce**: one producer sends [`RECORDS`] records of [`VALUE_BYTES`]-byte values to a
//!   one-partition topic and waits for every acknowledgement; once idempotent with acks=all and
//!   once with acks=1 (not idempotent; the client requires acks=all for idempotence).
//! - **consume**: a fresh consumer reads the acks=all topic's [`RECORDS`] records back.
//! - **latency**: a producer (linger 0) sends [`LATENCY_RATE_PER_S`] records per second for
//!   [`LATENCY_SECONDS`] seconds, each value starting with its send time; a consumer on a
//!   connection of its own polls the topic and records receive time minus send time in an HDR
//!   histogram. Four runs (see [`LATENCIES`]): acks=1 and acks=all, each with the consumer's
//!   fetch.max.wait.ms at Kafka's default of [`FETCH_WAIT_DEFAULT_MS`] and at
//!   [`FETCH_WAIT_SHORT_MS`]. The wait matters for a broker that does not answer a parked fetch
//!   as soon as data arrives (tansu 0.6 re-reads its storage after sleeping, so its latency
//!   follows the wait); Weir wakes parked fetches when its high watermark moves, so its
//!   figures should not depend on it. The first [`LATENCY_WARMUP_RECORDS`] records of each run
//!   are not counted.
//!
//! The machine is shared and noisy, so ratios taken within one run mean more than the absolute
//! figures. There are [`ROUNDS`] rounds; each round measures raw TCP and then every broker, in
//! an order that rotates from round to round. Throughputs are the median over rounds, ratios are
//! ratios of those medians (each round's own ratio is printed too), and latency percentiles come
//! from the histograms of all rounds merged. Run with:
//!
//! ```sh
//! cargo build --release && benches/peers/tansu.sh && cargo bench --bench loopback
//! ```
//!
//! Env: `WEIR_BIN` (the `weir` binary; by default the one cargo built next to this bench, else
//! `target/release/weir`), `TANSU_BIN` (by default the newest `target/peers/*/tansu`).

use bytes::Bytes;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use weir_client::{
    Admin, ClientConfig, Cluster, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    Record,
};
use weir_seams::clock::Clock;
use weir_seams::net::Net;

/// Records per produce and consume measurement.
const RECORDS: u64 = 200_000;
/// Size of each record's value, in bytes (no key, no headers).
const VALUE_BYTES: usize = 100;
/// Rounds of every measurement; the median (or merged histogram) is reported.
const ROUNDS: usize = 3;
/// Bytes the raw TCP sender writes per round.
const RAW_TCP_BYTES: u64 = 2 << 30;
/// Size of each raw TCP write and read, in bytes.
const RAW_TCP_CHUNK_BYTES: usize = 256 * 1024;
/// How long the throughput producers let a batch wait for more records, in milliseconds.
const THROUGHPUT_LINGER_MS: u64 = 5;
/// Largest batch of the throughput producers, in bytes.
const THROUGHPUT_BATCH_BYTES: usize = 64 * 1024;
/// Records per second the latency producer sends.
const LATENCY_RATE_PER_S: u64 = 2_500;
/// How long the latency producer sends, in seconds.
const LATENCY_SECONDS: u64 = 2;
/// Records at the start of each latency run left out of the histogram (connection set-up).
const LATENCY_WARMUP_RECORDS: u64 = 200;
/// Largest latency the histograms hold, in microseconds.
const LATENCY_MAX_US: u64 = 60_000_000;
/// Significant decimal digits the histograms keep.
const LATENCY_SIGFIG: u8 = 3;
/// How long a broker process may take to say it is ready, in seconds.
const STARTUP_TIMEOUT_S: u64 = 30;
/// How long one measurement (one produce, consume or latency run) may take, in seconds.
const PHASE_TIMEOUT_S: u64 = 90;
/// How long one consumer poll may wait for data, in milliseconds.
const POLL_TIMEOUT_MS: u64 = 2_000;
/// Lines of each broker process's output echoed to the terminal, at most.
const ECHO_LINES_MAX: usize = 8;
/// One megabyte, as throughputs are reported (10^6 bytes).
const MB: f64 = 1e6;

/// Topic the acks=all throughput producer writes and the consumer reads.
const TOPIC_ACKS_ALL: &str = "tput-all";
/// Topic the acks=1 throughput producer writes.
const TOPIC_ACKS_ONE: &str = "tput-one";

/// One end-to-end latency measurement.
struct LatencySpec {
    /// Name in tables.
    name: &'static str,
    /// Topic it writes (each measurement has its own).
    topic: &'static str,
    /// Producer acks: 1 or -1 (all, idempotent).
    acks: i16,
    /// The consumer's fetch.max.wait.ms.
    fetch_wait_ms: i32,
}

/// The consumer's fetch.max.wait.ms in the default latency runs: Kafka's default, in ms.
const FETCH_WAIT_DEFAULT_MS: i32 = 500;
/// The consumer's fetch.max.wait.ms in the short-wait latency runs, in ms: a broker that does
/// not answer a parked fetch as soon as data arrives is then polled this often.
const FETCH_WAIT_SHORT_MS: i32 = 10;

/// Latency measurements, in the order run and printed.
const LATENCIES: [LatencySpec; 4] = [
    LatencySpec {
        name: "e2e acks=1",
        topic: "lat-one",
        acks: 1,
        fetch_wait_ms: FETCH_WAIT_DEFAULT_MS,
    },
    LatencySpec {
        name: "e2e acks=all",
        topic: "lat-all",
        acks: -1,
        fetch_wait_ms: FETCH_WAIT_DEFAULT_MS,
    },
    LatencySpec {
        name: "e2e acks=1 w10",
        topic: "lat-one-w10",
        acks: 1,
        fetch_wait_ms: FETCH_WAIT_SHORT_MS,
    },
    LatencySpec {
        name: "e2e acks=all w10",
        topic: "lat-all-w10",
        acks: -1,
        fetch_wait_ms: FETCH_WAIT_SHORT_MS,
    },
];

/// A broker under test, as a process this bench starts.
#[derive(Clone, Debug)]
enum Peer {
    /// `weir broker`, with `--page-cache-acks` when `page_cache` is set.
    Weir { bin: PathBuf, page_cache: bool },
    /// `tansu broker` with memory storage.
    Tansu { bin: PathBuf },
}

impl Peer {
    /// Short name in tables.
    fn name(&self) -> &'static str {
        match self {
            Peer::Weir {
                page_cache: false, ..
            } => "weir",
            Peer::Weir {
                page_cache: true, ..
            } => "weir-pagecache",
            Peer::Tansu { .. } => "tansu",
        }
    }

    /// Starts the broker on a fresh data directory and waits until it says it is ready.
    fn start(&self) -> Result<Running, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let (mut cmd, addr) = match self {
            Peer::Weir { bin, page_cache } => {
                let mut cmd = Command::new(bin);
                cmd.args(["broker", "--listen", "127.0.0.1:0", "--seed", "1"])
                    .arg("--data-dir")
                    .arg(dir.path());
                if *page_cache {
                    cmd.arg("--page-cache-acks");
                }
                // Weir prints the address it bound.
                (cmd, None)
            }
            Peer::Tansu { bin } => {
                // tansu cannot report a port it picked, so pick a free one for it.
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_err(|e| format!("finding a free port: {e}"))?
                    .port();
                let url = format!("tcp://127.0.0.1:{port}");
                let mut cmd = Command::new(bin);
                cmd.args(["broker", "--listener-url", &url])
                    .args(["--advertised-listener-url", &url])
                    .args(["--storage-engine", "memory://tansu/"])
                    .args(["--cluster-id", "weir-loopback-bench"])
                    .current_dir(dir.path());
                (cmd, Some(format!("127.0.0.1:{port}")))
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{}: cannot start {:?}: {e}", self.name(), cmd))?;
        let (tx, rx) = mpsc::channel();
        let outputs: [(Option<Box<dyn Read + Send>>, &str); 2] = [
            (child.stdout.take().map(|o| Box::new(o) as _), "out"),
            (child.stderr.take().map(|e| Box::new(e) as _), "err"),
        ];
        for (out, stream) in outputs {
            if let Some(out) = out {
                drain(out, format!("{}/{stream}", self.name()), tx.clone());
            }
        }
        drop(tx);
        // Held from here on, so that the process is killed on every way out.
        let mut running = Running {
            child,
            addr: String::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(STARTUP_TIMEOUT_S);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{}: not ready within {STARTUP_TIMEOUT_S} s",
                        self.name()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: exited before it was ready", self.name()));
                }
            };
            let ready = match &addr {
                // tansu: "ready in 0ms", on the address chosen above.
                Some(a) => line.starts_with("ready in").then(|| a.clone()),
                // weir: "weir broker 0 listening on 127.0.0.1:PORT data in DIR".
                None => line
                    .split(" listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_string),
            };
            if let Some(a) = ready {
                running.addr = a;
                return Ok(running);
            }
        }
    }
}

/// Reads `out` line by line on a thread of its own until it closes: sends each line to
/// `lines` (while anyone listens) and echoes the first [`ECHO_LINES_MAX`] with a `[label]`
/// prefix, so that a broker's start-up and first complaints show in the bench's output.
fn drain(out: Box<dyn Read + Send>, label: String, lines: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut echoed = 0;
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if echoed < ECHO_LINES_MAX {
                echoed += 1;
                println!("    [{label}] {line}");
            }
            let _ = lines.send(line);
        }
    });
}

/// A running broker process; killed when dropped, and its data directory removed.
struct Running {
    child: Child,
    /// Its Kafka listener, as host:port.
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one round measured against one broker: each measurement or why it failed.
#[derive(Default)]
struct RoundFigures {
    /// Seconds to produce [`RECORDS`], by measurement name.
    seconds: BTreeMap<&'static str, Result<f64, String>>,
    /// Latency histograms (microseconds), by measurement name.
    latency: BTreeMap<&'static str, Result<Histogram<u64>, String>>,
}

/// Throughput measurements, in the order printed.
const THROUGHPUTS: [&str; 3] = ["produce acks=all", "produce acks=1", "consume"];

/// Wall-clock milliseconds since the Unix epoch, for the clients' record timestamps.
fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs `f` with [`PHASE_TIMEOUT_S`] as its deadline, turning every failure into a message.
async fn phase<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(PHASE_TIMEOUT_S), f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no result within {PHASE_TIMEOUT_S} s")),
    }
}

/// Creates a one-partition, replication-factor-1 topic, retrying while the broker settles.
async fn create_topic(admin: &Admin, name: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..50 {
        match admin.create_topic(&NewTopic::new(name, 1, 1)).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("creating topic {name}: {last}"))
}

/// A producer with `acks` (idempotent with acks=all) and the given batching.
async fn producer(
    cluster: &Arc<Cluster>,
    acks: i16,
    linger_ms: u64,
    batch_bytes_max: usize,
) -> Result<Producer, String> {
    Producer::new(
        Arc::clone(cluster),
        ProducerConfig {
            acks,
            idempotent: acks == -1,
            linger_ms,
            batch_bytes_max,
            ..Default::default()
        },
        Clock::starting_at(wall_ms()),
    )
    .await
    .map_err(|e| format!("starting a producer (acks={acks}): {e}"))
}

/// Sends [`RECORDS`] records to partition 0 of `topic` and waits for all acknowledgements;
/// returns the seconds taken, from the first send to the last acknowledgement.
async fn produce(cluster: &Arc<Cluster>, topic: &str, acks: i16) -> Result<f64, String> {
    let p = producer(cluster, acks, THROUGHPUT_LINGER_MS, THROUGHPUT_BATCH_BYTES).await?;
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let mut deliveries = Vec::with_capacity(RECORDS as usize);
    let start = Instant::now();
    for _ in 0..RECORDS {
        let record = Record {
            topic: topic.into(),
            partition: Some(0),
            value: Some(value.clone()),
            ..Default::default()
        };
        deliveries.push(p.send(record).await.map_err(|e| format!("send: {e}"))?);
    }
    p.flush().await;
    let mut failed = 0u64;
    let mut first_error = None;
    for d in deliveries {
        if let Err(e) = d.wait().await {
            failed += 1;
            first_error.get_or_insert(e.to_string());
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    p.close().await;
    match first_error {
        None => Ok(seconds),
        Some(e) => Err(format!("{failed} of {RECORDS} records failed, first: {e}")),
    }
}

/// Reads [`RECORDS`] records of partition 0 of `topic` from the start with a fresh consumer;
/// returns the seconds taken. Checks the offsets come back dense and in order.
async fn consume(cluster: &Arc<Cluster>, topic: &str) -> Result<f64, String> {
    let mut consumer = Consumer::new(Arc::clone(cluster), ConsumerConfig::default());
    consumer.assign([(topic.to_string(), 0)]);
    let start = Instant::now();
    let mut next = 0i64;
    while (next as u64) < RECORDS {
        let batch = consumer
            .poll(Duration::from_millis(POLL_TIMEOUT_MS))
            .await
            .map_err(|e| format!("poll at offset {next}: {e}"))?;
        for r in batch {
            if r.offset != next {
                return Err(format!("expected offset {next}, got {}", r.offset));
            }
            next += 1;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// One latency run as `spec` says: a paced producer and a polling consumer; returns the
/// histogram of receive time minus send time, in microseconds.
async fn latency(cluster: &Arc<Cluster>, spec: &LatencySpec) -> Result<Histogram<u64>, String> {
    let (topic, acks) = (spec.topic, spec.acks);
    let total = LATENCY_RATE_PER_S * LATENCY_SECONDS;
    // Send and receive times are nanoseconds since `base`, in this one process.
    let base = Instant::now();
    // The consumer gets a client (so a connection) of its own, as a separate process would:
    // a broker answers one connection's requests in order, so a fetch parked waiting for data
    // would hold back the produce requests sharing its connection until the fetch times out.
    let mut consumer = Consumer::new(
        Cluster::new(cluster.config().clone()),
        ConsumerConfig {
            fetch_min_bytes: 1,
            fetch_max_wait_ms: spec.fetch_wait_ms,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign([(topic.to_string(), 0)]);
    // One poll before the producer starts, so that the consumer has connected and found its
    // position; the topic is empty, so it returns nothing.
    consumer
        .poll(Duration::from_millis(100))
        .await
        .map_err(|e| format!("first poll: {e}"))?;
    let reader = tokio::spawn(async move {
        let mut hist = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGFIG)
            .map_err(|e| format!("histogram: {e}"))?;
        let mut got = 0u64;
        while got < total {
            let batch = consumer
                .poll(Duration::from_millis(POLL_TIMEOUT_MS))
                .await
                .map_err(|e| format!("poll after {got} records: {e}"))?;
            let now = base.elapsed().as_nanos() as u64;
            for r in batch {
                let sent = r
                    .value
                    .as_ref()
                    .and_then(|v| v.get(..8))
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .ok_or_else(|| format!("offset {}: no send time in the value", r.offset))?;
                if got >= LATENCY_WARMUP_RECORDS {
                    hist.saturating_record((now.saturating_sub(sent) / 1_000).max(1));
                }
                got += 1;
            }
        }
        Ok::<_, String>(hist)
    });
    let p = producer(cluster, acks, 0, THROUGHPUT_BATCH_BYTES).await?;
    let period = Duration::from_nanos(1_000_000_000 / LATENCY_RATE_PER_S);
    let start = tokio::time::Instant::now();
    let mut deliveries = Vec::with_capacity(total as usize);
    let mut value = vec![b'v'; VALUE_BYTES];
    let mut behind_max = Duration::ZERO;
    for i in 0..total {
        let due = start + period * i as u32;
        let now = tokio::time::Instant::now();
        if due > now {
            tokio::time::sleep_until(due).await;
        } else {
            behind_max = behind_max.max(now - due);
        }
        let sent = base.elapsed().as_nanos() as u64;
        value[..8].copy_from_slice(&sent.to_le_bytes());
        let record = Record {
            topic: topic.into(),
            partition: Some(0),
            value: Some(Bytes::copy_from_slice(&value)),
            ..Default::default()
        };
        deliveries.push(p.send(record).await.map_err(|e| format!("send: {e}"))?);
    }
    p.flush().await;
    for d in deliveries {
        d.wait().await.map_err(|e| format!("delivery: {e}"))?;
    }
    p.close().await;
    if behind_max > Duration::from_millis(10) {
        println!(
            "    note: the latency producer fell up to {:.1} ms behind its schedule",
            behind_max.as_secs_f64() * 1e3
        );
    }
    reader
        .await
        .map_err(|e| format!("consumer task: {e}"))
        .and_then(|r| r)
}

/// One round against a running broker at `addr`: topics, produce, consume, latency.
async fn measure(addr: &str) -> RoundFigures {
    let mut figures = RoundFigures::default();
    let cluster = Cluster::new(ClientConfig::new([addr.to_string()], Net::Tokio));
    let admin = Admin::new(Arc::clone(&cluster));
    let topics = [TOPIC_ACKS_ALL, TOPIC_ACKS_ONE];
    for t in topics.into_iter().chain(LATENCIES.iter().map(|l| l.topic)) {
        if let Err(e) = phase("create topics", create_topic(&admin, t)).await {
            for m in THROUGHPUTS {
                figures.seconds.insert(m, Err(e.clone()));
            }
            for l in &LATENCIES {
                figures.latency.insert(l.name, Err(e.clone()));
            }
            return figures;
        }
    }
    let [all, one, cons] = THROUGHPUTS;
    let produced_all = phase(all, produce(&cluster, TOPIC_ACKS_ALL, -1)).await;
    let ok = produced_all.is_ok();
    figures.seconds.insert(all, produced_all);
    figures
        .seconds
        .insert(one, phase(one, produce(&cluster, TOPIC_ACKS_ONE, 1)).await);
    let consumed = if ok {
        phase(cons, consume(&cluster, TOPIC_ACKS_ALL)).await
    } else {
        Err(format!("{cons}: skipped, nothing was produced"))
    };
    figures.seconds.insert(cons, consumed);
    for l in &LATENCIES {
        let h = phase(l.name, latency(&cluster, l)).await;
        figures.latency.insert(l.name, h);
    }
    figures
}

/// Sends [`RAW_TCP_BYTES`] over one loopback TCP connection; returns MB/s, from the first
/// write to the receiver seeing the end of the stream.
async fn raw_tcp() -> std::io::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let receiver = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; RAW_TCP_CHUNK_BYTES];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        Ok::<_, std::io::Error>((got, Instant::now()))
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let buf = vec![0xABu8; RAW_TCP_CHUNK_BYTES];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < RAW_TCP_BYTES {
        s.write_all(&buf).await?;
        sent += buf.len() as u64;
    }
    s.shutdown().await?;
    drop(s);
    let (got, end) = receiver.await.map_err(std::io::Error::other)??;
    if got != sent {
        return Err(std::io::Error::other(format!(
            "sent {sent}, received {got}"
        )));
    }
    Ok(got as f64 / MB / (end - start).as_secs_f64())
}

/// The `q` quantile of `xs` (0.5 for the median), by linear interpolation; `None` if empty.
fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let at = q * (xs.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    Some(xs[lo] + (xs[hi] - xs[lo]) * (at - lo as f64))
}

/// Everything measured against one broker over all rounds.
struct PeerResults {
    peer: Peer,
    /// Per round, in round order.
    rounds: Vec<RoundFigures>,
}

impl PeerResults {
    /// Seconds of measurement `m` per round (`None` where it failed).
    fn seconds(&self, m: &str) -> Vec<Option<f64>> {
        self.rounds
            .iter()
            .map(|r| r.seconds.get(m).and_then(|s| s.as_ref().ok().copied()))
            .collect()
    }

    /// Median over the rounds where `m` succeeded of records per second.
    fn median_rate(&self, m: &str) -> Option<f64> {
        let rates: Vec<f64> = self
            .seconds(m)
            .into_iter()
            .flatten()
            .map(|s| RECORDS as f64 / s)
            .collect();
        quantile(&rates, 0.5)
    }

    /// The latency histograms of `m` of every round merged, and how many rounds succeeded.
    fn merged(&self, m: &str) -> (Option<Histogram<u64>>, usize) {
        let mut merged: Option<Histogram<u64>> = None;
        let mut n = 0;
        for h in self
            .rounds
            .iter()
            .filter_map(|r| r.latency.get(m).and_then(|h| h.as_ref().ok()))
        {
            n += 1;
            match &mut merged {
                None => merged = Some(h.clone()),
                Some(acc) => acc.add(h).expect("histograms of equal bounds merge"),
            }
        }
        (merged, n)
    }

    /// Distinct failure messages of every measurement over all rounds.
    fn errors(&self) -> Vec<String> {
        let mut errs: Vec<String> = Vec::new();
        for r in &self.rounds {
            let e1 = r.seconds.values().filter_map(|s| s.as_ref().err());
            let e2 = r.latency.values().filter_map(|h| h.as_ref().err());
            for e in e1.chain(e2) {
                if !errs.contains(e) {
                    errs.push(e.clone());
                }
            }
        }
        errs
    }
}

/// Percentiles reported, as (label, quantile).
const PERCENTILES: [(&str, f64); 3] = [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)];

/// The `q` quantile of `h`, in milliseconds.
fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

/// `Some(x)` formatted with `prec` decimals, or "-".
fn fmt(x: Option<f64>, prec: usize) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"))
}

/// Prints the tables and ratios of everything measured.
fn report(raw: &[f64], results: &[PeerResults]) {
    let raw_median = quantile(raw, 0.5);
    println!("\n==== loopback bench: {ROUNDS} rounds, {RECORDS} records of {VALUE_BYTES} B ====");
    println!(
        "raw TCP: median {} MB/s over {} rounds (rounds: {})",
        fmt(raw_median, 0),
        raw.len(),
        raw.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("\nthroughput, median of rounds (MB/s counts value bytes only):");
    println!(
        "{:<16} {:<18} {:>12} {:>9} {:>9}  per-round records/s",
        "broker", "measurement", "records/s", "MB/s", "vs raw"
    );
    for pr in results {
        for m in THROUGHPUTS {
            let rate = pr.median_rate(m);
            let mbs = rate.map(|r| r * VALUE_BYTES as f64 / MB);
            let vs_raw = mbs.zip(raw_median).map(|(a, b)| a / b);
            let per_round: Vec<String> = pr
                .seconds(m)
                .iter()
                .map(|s| fmt(s.map(|s| RECORDS as f64 / s), 0))
                .collect();
            println!(
                "{:<16} {:<18} {:>12} {:>9} {:>9}  {}",
                pr.peer.name(),
                m,
                fmt(rate, 0),
                fmt(mbs, 1),
                fmt(vs_raw, 4),
                per_round.join(", ")
            );
        }
    }
    println!(
        "\nend-to-end latency, ms, all rounds merged ({LATENCY_RATE_PER_S}/s for \
         {LATENCY_SECONDS} s per round, first {LATENCY_WARMUP_RECORDS} of each round dropped):"
    );
    println!(
        "{:<16} {:<18} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "broker", "measurement", "p50", "p99", "p999", "max", "samples"
    );
    for pr in results {
        for m in LATENCIES.iter().map(|l| l.name) {
            let (h, n) = pr.merged(m);
            let cell = |q: f64| fmt(h.as_ref().map(|h| ms(h, q)), 2);
            println!(
                "{:<16} {:<18} {:>9} {:>9} {:>9} {:>9} {:>8}",
                pr.peer.name(),
                m,
                cell(0.5),
                cell(0.99),
                cell(0.999),
                fmt(h.as_ref().map(|h| h.max() as f64 / 1e3), 2),
                h.as_ref()
                    .map_or_else(|| "-".into(), |h| format!("{} ({n} rounds)", h.len())),
            );
        }
    }

    // Ratios of each Weir configuration against each other broker.
    for weir in results
        .iter()
        .filter(|r| matches!(r.peer, Peer::Weir { .. }))
    {
        for other in results
            .iter()
            .filter(|r| r.peer.name() != weir.peer.name() && r.peer.name() != "weir")
        {
            println!(
                "\nratios {} / {} (throughput: > 1 means {} is faster; latency: < 1 means {} \
                 is faster):",
                weir.peer.name(),
                other.peer.name(),
                weir.peer.name(),
                weir.peer.name()
            );
            for m in THROUGHPUTS {
                let per_round: Vec<String> = weir
                    .seconds(m)
                    .iter()
                    .zip(other.seconds(m))
                    .map(|(w, o)| fmt(w.zip(o).map(|(w, o)| o / w), 3))
                    .collect();
                println!(
                    "  {:<18} {:>7}   per round: {}",
                    m,
                    fmt(
                        weir.median_rate(m)
                            .zip(other.median_rate(m))
                            .map(|(w, o)| w / o),
                        3
                    ),
                    per_round.join(", ")
                );
            }
            for m in LATENCIES.iter().map(|l| l.name) {
                let (hw, _) = weir.merged(m);
                let (ho, _) = other.merged(m);
                let cells: Vec<String> = PERCENTILES
                    .iter()
                    .map(|(label, q)| {
                        let r = hw
                            .as_ref()
                            .zip(ho.as_ref())
                            .map(|(hw, ho)| ms(hw, *q) / ms(ho, *q));
                        format!("{label} {}", fmt(r, 3))
                    })
                    .collect();
                println!("  {:<18} {}", m, cells.join(", "));
            }
        }
    }
    for pr in results {
        let errs = pr.errors();
        if !errs.is_empty() {
            println!("\n{} failures:", pr.peer.name());
            for e in errs {
                println!("  - {e}");
            }
        }
    }
}

/// The `weir` binary: `WEIR_BIN`, else the one cargo built with this bench, else
/// `target/release/weir`.
fn weir_bin() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("WEIR_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(option_env!("CARGO_BIN_EXE_weir").map(PathBuf::from))
        .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/weir")])
        .collect();
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => p.clone(),
        None => {
            eprintln!(
                "weir binary not found (looked at {candidates:?}): run `cargo build --release` \
                 or set WEIR_BIN"
            );
            std::process::exit(2);
        }
    }
}

/// The `tansu` binary: `TANSU_BIN`, else the newest `target/peers/*/tansu`.
fn tansu_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
        println!("TANSU_BIN={} is not a file", p.display());
        return None;
    }
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers");
    std::fs::read_dir(peers)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("tansu"))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs each bench binary without `--bench`; this one takes
        // minutes and starts broker processes, so it only runs under `cargo bench`.
        println!("loopback: run with `cargo bench --bench loopback`; skipped");
        return;
    }
    let weir = weir_bin();
    let mut peers = vec![
        Peer::Weir {
            bin: weir.clone(),
            page_cache: false,
        },
        Peer::Weir {
            bin: weir.clone(),
            page_cache: true,
        },
    ];
    println!("weir: {}", weir.display());
    match tansu_bin() {
        Some(bin) => {
            println!("tansu: {}", bin.display());
            peers.push(Peer::Tansu { bin });
        }
        None => println!(
            "tansu not found: run benches/peers/tansu.sh (or set TANSU_BIN); skipping tansu"
        ),
    }
    let rt = runtime();
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut results: Vec<PeerResults> = peers
        .iter()
        .map(|p| PeerResults {
            peer: p.clone(),
            rounds: Vec::new(),
        })
        .collect();
    for round in 0..ROUNDS {
        println!("round {}/{ROUNDS}", round + 1);
        match rt.block_on(raw_tcp()) {
            Ok(mbs) => {
                println!("  raw TCP: {mbs:.0} MB/s");
                raw.push(mbs);
            }
            Err(e) => println!("  raw TCP failed: {e}"),
        }
        // Rotate the order of the brokers from round to round.
        for k in 0..results.len() {
            let i = (k + round) % results.len();
            let pr = &mut results[i];
            let at = Instant::now();
            println!("  {}:", pr.peer.name());
            let figures = match pr.peer.start() {
                Ok(running) => {
                    let f = rt.block_on(measure(&running.addr));
                    drop(running);
                    f
                }
                Err(e) => {
                    let mut f = RoundFigures::default();
                    for m in THROUGHPUTS {
                        f.seconds.insert(m, Err(e.clone()));
                    }
                    for l in &LATENCIES {
                        f.latency.insert(l.name, Err(e.clone()));
                    }
                    f
                }
            };
            let summary: Vec<String> = THROUGHPUTS
                .iter()
                .map(|m| match &figures.seconds[m] {
                    Ok(s) => format!("{m} {:.0}/s", RECORDS as f64 / s),
                    Err(e) => format!("{m} FAILED ({e})"),
                })
                .chain(LATENCIES.iter().map(|l| match &figures.latency[l.name] {
                    Ok(h) => format!("{} p50 {:.2} ms", l.name, ms(h, 0.5)),
                    Err(e) => format!("{} FAILED ({e})", l.name),
                }))
                .collect();
            println!(
                "    {} ({:.1} s)",
                summary.join("; "),
                at.elapsed().as_secs_f64()
            );
            pr.rounds.push(figures);
        }
    }
    report(&raw, &results);
    println!("\ntotal {:.0} s", started.elapsed().as_secs_f64());
}

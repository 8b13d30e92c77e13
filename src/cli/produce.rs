//! `weir produce`: a workload's generated events, written to a topic on any Kafka-protocol
//! cluster by Weir's own producer, with acks=all, idempotent.
//!
//! The events are a pure function of the seed and the generator settings, both printed at the
//! start, so a reader can generate them again and compare.

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use weir_client::{
    Admin, ClientConfig, ClientError, Cluster, Delivery, NewTopic, Producer, ProducerConfig, Record,
};
use weir_seams::clock::Clock;
use weir_seams::net::Net;
use weir_workloads::generator::{GeneratorConfig, Skew, Workload};

/// Records sent but not yet acknowledged, at most; the producer bounds their bytes, this their
/// delivery handles.
const UNACKED_MAX: usize = 100_000;
/// How long a new topic's partitions may take to get leaders, in seconds.
const LEADERS_TIMEOUT_S: u64 = 30;
/// Pause between looks at a new topic's leaders, in milliseconds.
const LEADERS_RETRY_MS: u64 = 100;
/// Kafka's TOPIC_ALREADY_EXISTS error code, fixed by the protocol.
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// The workloads `weir produce` writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum WorkloadArg {
    /// Orders created, updated and cancelled, keyed by order id.
    Orders,
    /// Clicks, purchases and transactions, keyed by user id.
    Clicks,
    /// Nexmark persons, auctions and bids.
    Nexmark,
}

impl WorkloadArg {
    fn workload(self) -> Workload {
        match self {
            WorkloadArg::Orders => Workload::Orders,
            WorkloadArg::Clicks => Workload::Clicks,
            WorkloadArg::Nexmark => Workload::Nexmark,
        }
    }
}

/// Settings of `weir produce`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The workload whose events to write.
    #[arg(value_enum)]
    pub workload: WorkloadArg,
    /// Bootstrap brokers, HOST:PORT, comma-separated.
    #[arg(long, required = true, value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Number of events to write.
    #[arg(long)]
    pub events: u64,
    /// Pacing in events per second of wall time; 0 writes as fast as the cluster takes them.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Seed of the generator; the clock by default.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Topic, created if missing; the workload's name by default.
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions of the topic if it is created; -1 takes the cluster's default.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub partitions: i32,
    /// Replicas of the topic if it is created; -1 takes the cluster's default.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub replication_factor: i16,
    /// Event time of the first event, in ms since the Unix epoch; the clock by default.
    #[arg(long)]
    pub start_ms: Option<i64>,
    /// Events per second of event time; --rate when that is set, else 1000.
    #[arg(long, value_parser = parse_rate)]
    pub event_rate: Option<f64>,
    /// Distinct customers (orders) or users (clicks).
    #[arg(long)]
    pub keys: Option<u64>,
    /// Zipf-skewed keys with this exponent (about 1 is typical); uniform without it.
    #[arg(long)]
    pub zipf: Option<f64>,
    /// How far behind the event-time clock an on-time event may be, in milliseconds.
    #[arg(long, default_value_t = GeneratorConfig::default().out_of_orderness_ms)]
    pub out_of_orderness_ms: i64,
    /// Share of events stamped behind the watermark (max timestamp - out-of-orderness).
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub late_fraction: f64,
    /// Share of events a validating job must reject.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub invalid_fraction: f64,
    /// After the events, write a record with this value to every partition: a job started
    /// with the same `--end-marker` finishes once it has read them all.
    #[arg(long)]
    pub end_marker: Option<String>,
}

/// Parses a rate: a finite number of events per second, not negative.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!("{s:?}: not a rate in events per second")),
    }
}

/// Parses a share between 0 and 1.
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?}: not a fraction between 0 and 1")),
    }
}

/// The generator settings `args` ask for, starting at `now_ms` unless told otherwise.
fn generator_config(args: &ProduceArgs, now_ms: i64) -> Result<GeneratorConfig, String> {
    let workload = args.workload.workload();
    if !workload.uses_key_skew() && (args.keys.is_some() || args.zipf.is_some()) {
        return Err(format!(
            "--keys and --zipf do not apply to {}: its skew is the benchmark's hot auctions, \
             bidders and sellers",
            workload.name()
        ));
    }
    let default = GeneratorConfig::default();
    let wall_rate = (args.rate > 0.0).then_some(args.rate);
    let config = GeneratorConfig {
        start_ms: args.start_ms.unwrap_or(now_ms),
        rate_per_s: args.event_rate.or(wall_rate).unwrap_or(default.rate_per_s),
        keys: args.keys.unwrap_or(default.keys),
        skew: args
            .zipf
            .map_or(Skew::Uniform, |exponent| Skew::Zipf { exponent }),
        out_of_orderness_ms: args.out_of_orderness_ms,
        late_fraction: args.late_fraction,
        invalid_fraction: args.invalid_fraction,
    };
    config.validate()?;
    Ok(config)
}

/// What a run wrote.
struct Written {
    events: u64,
    bytes: u64,
    partitions: usize,
    wall: Duration,
}

/// Runs `weir produce`: exit 2 for settings out of range, 1 when writing fails.
pub fn run(args: ProduceArgs) -> ExitCode {
    let now_ms = super::wall_ms();
    let config = match generator_config(&args, now_ms) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weir produce: {e}");
            return ExitCode::from(2);
        }
    };
    let workload = args.workload.workload();
    let seed = args.seed.unwrap_or(now_ms as u64);
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| workload.name().to_string());
    eprintln!(
        "weir produce: {} events of {} to topic {topic} on {}, seed {seed}, start-ms {}",
        args.events,
        workload.name(),
        args.bootstrap.join(","),
        config.start_ms
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    super::block_on("produce", runtime, async {
        let events = workload.events(seed, &config, args.events)?;
        let w = write(&args, &topic, events, now_ms).await?;
        let secs = w.wall.as_secs_f64();
        println!(
            "{} events, {} key and value bytes to {topic}, {} partition(s), in {secs:.2} s: \
             {:.0} events/s",
            w.events,
            w.bytes,
            w.partitions,
            w.events as f64 / secs.max(1e-9)
        );
        Ok(())
    })
}

/// Creates the topic `new` unless it exists, and returns its partition count once every
/// partition has a leader.
pub(super) async fn ensure_topic(
    cluster: &Arc<Cluster>,
    bootstrap: &[String],
    new: &NewTopic,
) -> Result<usize, String> {
    let topic = new.name.as_str();
    match Admin::new(Arc::clone(cluster)).create_topic(new).await {
        Ok(()) => {}
        Err(e) if e.code().map(|c| c.code()) == Some(TOPIC_ALREADY_EXISTS) => {}
        Err(e @ (ClientError::Connection { .. } | ClientError::Timeout { .. })) => {
            return Err(format!(
                "cannot reach the cluster at {}: {e}",
                bootstrap.join(",")
            ));
        }
        Err(e) => return Err(format!("cannot create topic {topic}: {e}")),
    }
    // A new topic's partitions may briefly lack leaders, which the producer takes as final.
    let deadline = Instant::now() + Duration::from_secs(LEADERS_TIMEOUT_S);
    loop {
        let last = match cluster.partitions(topic).await {
            Ok(p) if !p.is_empty() && p.iter().all(|p| p.leader >= 0) => return Ok(p.len()),
            Ok(p) => format!("{} partitions, not all with a leader", p.len()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "topic {topic} has no leaders after {LEADERS_TIMEOUT_S} s: {last}"
            ));
        }
        cluster.forget(topic).await;
        tokio::time::sleep(Duration::from_millis(LEADERS_RETRY_MS)).await;
    }
}

/// Sends every event to `topic`, paced by `--rate`, and waits for every acknowledgement.
async fn write(
    args: &ProduceArgs,
    topic: &str,
    events: Box<dyn Iterator<Item = weir_workloads::generator::Event> + Send>,
    now_ms: i64,
) -> Result<Written, String> {
    let cluster = Cluster::new(ClientConfig::new(args.bootstrap.clone(), Net::Tokio));
    let new = NewTopic::new(topic, args.partitions, args.replication_factor);
    let partitions = ensure_topic(&cluster, &args.bootstrap, &new).await?;
    let producer = Producer::new(
        Arc::clone(&cluster),
        ProducerConfig::default(),
        Clock::starting_at(now_ms),
    )
    .await
    .map_err(|e| format!("cannot start the producer: {e}"))?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(args.events);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} events [{elapsed_precise}]")
                .expect("valid template"),
        );
        b
    });
    let started = Instant::now();
    let mut unacked: VecDeque<Delivery> = VecDeque::new();
    let (mut sent, mut bytes) = (0u64, 0u64);
    for e in events {
        if args.rate > 0.0 {
            tokio::time::sleep_until(started + Duration::from_secs_f64(sent as f64 / args.rate))
                .await;
        }
        bytes += (e.key.len() + e.value.len()) as u64;
        let record = Record {
            topic: topic.to_string(),
            key: Some(e.key.into()),
            value: Some(e.value.into()),
            timestamp: Some(e.timestamp_ms),
            ..Record::default()
        };
        let delivery = producer
            .send(record)
            .await
            .map_err(|e| format!("send to {topic}: {e}"))?;
        unacked.push_back(delivery);
        if unacked.len() > UNACKED_MAX
            && let Some(d) = unacked.pop_front()
        {
            acked(d, topic).await?;
        }
        sent += 1;
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    producer.flush().await;
    while let Some(d) = unacked.pop_front() {
        acked(d, topic).await?;
    }
    if let Some(marker) = &args.end_marker {
        // Each marker follows every event of its partition, all of them acknowledged above.
        let n = i32::try_from(partitions).map_err(|_| "too many partitions")?;
        for p in 0..n {
            let record = Record {
                topic: topic.to_string(),
                partition: Some(p),
                value: Some(marker.clone().into()),
                timestamp: Some(now_ms),
                ..Record::default()
            };
            let delivery = producer
                .send(record)
                .await
                .map_err(|e| format!("end marker to {topic}: {e}"))?;
            acked(delivery, topic).await?;
        }
    }
    producer.close().await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(Written {
        events: sent,
        bytes,
        partitions,
        wall: started.elapsed(),
    })
}

/// Waits for one record's acknowledgement.
async fn acked(delivery: Delivery, topic: &str) -> Result<(), String> {
    delivery
        .wait()
        .await
        .map(|_| ())
        .map_err(|e| format!("write to {topic} failed: {e}"))
}

//! One subtask under the Kafka Streams model: consume, transform, produce, and commit it all
//! in one broker transaction every `commit_interval_ms`.
//!
//! ```text
//!   input topic or repartition topic (read_committed)
//!        |  maps, windows (keyed by stream time and grace)
//!        v
//!   one transaction: output rows | repartition rows | changelog entries | input offsets
//! ```
//!
//! The transaction holds everything the subtask's progress depends on, so a restart sees it
//! all or none of it. A restarted subtask fences its predecessor by initialising the same
//! transactional id, rebuilds its windows by reading its changelog partition to the end, and
//! resumes from the offsets its group committed. A keyed edge is a repartition topic with one
//! partition per downstream subtask; nothing moves over the network between subtasks, and no
//! barrier or coordinator aligns them.
//!
//! Bounded input ends with markers: a source partition's end marker is committed as the
//! partition's offset (so a restart reads it again), and a subtask whose input ended writes an
//! end record to every repartition partition it feeds. A downstream subtask's input has ended
//! once it holds the end records of every upstream subtask; it keeps that set in its
//! changelog.

use super::config::{ExecutionModel, RuntimeMutation};
use super::element::Row;
use super::graph::{OperatorSpec, Partitioner, SinkMode};
use super::metrics::{LatencyStats, TaskSample};
use super::rpc::{TaskDeployment, ToJobManager};
use super::snapshot::TaskId;
use super::source::{BrokerSource, Positions, lag_probe};
use super::task::{BrokerRetry, TaskCommand, TaskLinks, TaskResult};
use super::window::KeyedWindows;
use crate::runtime::function::RowFunction;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use weir_client::{
    Admin, ClientError, Cluster, Consumer, ConsumerConfig, GroupMetadata, Isolation, NewTopic,
    OffsetReset, Producer, ProducerConfig, Record, committed_offsets, partition_for_key,
};

/// Key of the record that tells a repartition topic's reader that one upstream subtask's
/// input ended; its value is that subtask's index.
const END_KEY: &[u8] = b"\0weir:end";
/// Changelog key of the set of upstream subtasks whose end records were read.
const ENDED_KEY: &[u8] = b"\0weir:ended";
/// Changelog key of the subtask's stream time, so that a restarted subtask goes on treating
/// as late what its predecessor did (Kafka Streams keeps it in the offsets' metadata).
const STREAM_TIME_KEY: &[u8] = b"\0weir:stream-time";
/// Event times kept per transaction to measure latency at commit.
const LATENCY_SAMPLES_MAX: usize = 1_024;
/// How often the task refreshes its sample.
const SAMPLE_MS: u64 = 100;
/// How often the lag probe asks the broker.
const LAG_SAMPLE_MS: u64 = 1_000;

/// The repartition topic fed by the stage that ends at operator `uid`.
pub fn repartition_topic(job: &str, uid: &str) -> String {
    format!("{job}-{uid}-repartition")
}

/// The changelog topic of the stage that starts at operator `uid`.
pub fn changelog_topic(job: &str, uid: &str) -> String {
    format!("{job}-{uid}-changelog")
}

/// One operator after the input.
enum Op {
    Map(Arc<dyn RowFunction>),
    Window(String, KeyedWindows),
    /// Rows the function makes go to this topic, in the same transaction.
    Side(Arc<dyn RowFunction>, String),
}

/// Where the last operator's rows go.
enum Out {
    Sink(String),
    Repartition {
        topic: String,
        partitions: i32,
        partitioner: Partitioner,
        next: i32,
    },
}

/// Runs a subtask under the Kafka Streams model until it fails or is cancelled.
pub(crate) async fn run(
    deployment: TaskDeployment,
    links: &mut TaskLinks,
    cluster: Arc<Cluster>,
) -> TaskResult {
    let ExecutionModel::KafkaStreams {
        commit_interval_ms,
        grace_ms,
        replication_factor,
    } = links.config.model
    else {
        unreachable!("only the Kafka Streams model runs here");
    };
    let config = Arc::clone(&links.config);
    let graph = &config.graph;
    let id = deployment.task;
    let stage = &deployment.stage;
    let first = *stage.vertices.first().expect("a stage has operators");
    let admin = Admin::new(Arc::clone(&cluster));
    // Internal topics are created by the first subtask that needs them.
    let create = async |topic: &str, partitions: u32| -> TaskResult {
        if cluster.partitions(topic).await.is_ok_and(|p| !p.is_empty()) {
            return Ok(());
        }
        let new = NewTopic::new(topic, partitions as i32, replication_factor);
        let mut retry = BrokerRetry::default();
        loop {
            match admin.create_topic(&new).await {
                Ok(()) => return Ok(()),
                Err(e) if e.code() == Some(ResponseError::TopicAlreadyExists) => return Ok(()),
                // Too few brokers are up for the replicas: wait for them, as for any outage.
                Err(e) if e.code() == Some(ResponseError::InvalidReplicationFactor) => {
                    retry.wait(e).await?;
                }
                Err(e) => retry.failed(e).await?,
            }
        }
    };
    // The input: the source's topic, or the repartition topic the stage before feeds.
    // Its watermark goes unused here: windows close by stream time.
    let at = (id.subtask, stage.parallelism);
    let (input, upstream) =
        match BrokerSource::of_operator(&cluster, &graph.vertices[first].op, at, None) {
            Some(source) => (source?, None),
            None => {
                let before = &graph.vertices[first - 1];
                let topic = repartition_topic(&graph.name, &before.uid);
                create(&topic, stage.parallelism).await?;
                let source = BrokerSource::new(
                    Arc::clone(&cluster),
                    (&topic, stage.parallelism as i32),
                    (id.subtask, stage.parallelism),
                    0,
                    None,
                    None,
                )?;
                (source, Some((before.parallelism, BTreeSet::new())))
            }
        };
    let mut ops = Vec::new();
    let mut out = None;
    for v in &stage.vertices {
        let vertex = &graph.vertices[*v];
        let function = |name: &str| {
            links
                .functions
                .get(name)
                .ok_or_else(|| format!("this task manager has no function {name:?}"))
        };
        let exactly_once = |mode: &SinkMode| {
            if *mode == SinkMode::ExactlyOnce {
                Ok(())
            } else {
                Err(format!(
                    "{}: under the Kafka Streams model every write is transactional",
                    vertex.uid
                ))
            }
        };
        match &vertex.op {
            OperatorSpec::Source { .. } => {}
            OperatorSpec::Map { function: f } => ops.push(Op::Map(function(f)?)),
            OperatorSpec::Window { assigner } => {
                if vertex.uid.contains('/') {
                    return Err(format!(
                        "{}: a windowed operator's uid has no '/'",
                        vertex.uid
                    ));
                }
                let mut window = KeyedWindows::new(*assigner);
                window.log_changes();
                ops.push(Op::Window(vertex.uid.clone(), window));
            }
            OperatorSpec::SideOutput {
                function: f,
                topic,
                mode,
            } => {
                exactly_once(mode)?;
                ops.push(Op::Side(function(f)?, topic.clone()));
            }
            OperatorSpec::Sink { topic, mode } => {
                exactly_once(mode)?;
                out = Some(Out::Sink(topic.clone()));
            }
            OperatorSpec::RunningTotals | OperatorSpec::Upsert { .. } => {
                return Err(format!(
                    "{}: the Kafka Streams model runs sources, maps, windows, side outputs and \
                     topic sinks; this operator keeps state it cannot log yet",
                    vertex.uid
                ));
            }
        }
    }
    let out = match (out, stage.output) {
        (Some(sink), _) => sink,
        (None, Some(partitioner)) => {
            let last = *stage.vertices.last().expect("a stage has operators");
            let topic = repartition_topic(&graph.name, &graph.vertices[last].uid);
            let partitions = deployment.output_subpartitions;
            create(&topic, partitions).await?;
            Out::Repartition {
                topic,
                partitions: partitions as i32,
                partitioner,
                next: 0,
            }
        }
        (None, None) => return Err("a stage ends in a sink or feeds another stage".into()),
    };
    let changelog = changelog_topic(&graph.name, &graph.vertices[first].uid);
    create(&changelog, stage.parallelism).await?;
    // Initialising the id fences the previous attempt's producer and aborts its transaction,
    // so that the offsets and the changelog read next are stable.
    let producer = Producer::new(
        Arc::clone(&cluster),
        ProducerConfig {
            transactional_id: Some(format!(
                "{}-{}-{}",
                graph.name, graph.vertices[first].uid, id.subtask
            )),
            transaction_timeout_ms: config.transaction_timeout_ms,
            ..ProducerConfig::default()
        },
        links.clock,
    )
    .await
    .map_err(|e| format!("producer: {e}"))?;
    let mut retry = BrokerRetry::default();
    while let Err(e) = producer.init_transactions().await {
        retry.failed(e).await?;
    }
    producer
        .begin_transaction()
        .map_err(|e| format!("producer: {e}"))?;
    let mut task = Streams {
        id,
        links,
        producer,
        input,
        group: GroupMetadata::standalone(graph.name.clone()),
        ops,
        out,
        changelog,
        upstream,
        ended_logged: false,
        grace_ms: i64::try_from(grace_ms).unwrap_or(i64::MAX),
        stream_time: i64::MIN,
        stream_time_logged: i64::MIN,
        watermark: i64::MIN,
        elements_in: 0,
        rows_out: 0,
        open_ts: Vec::new(),
        commit_latency: LatencyStats::default(),
        last_sample: None,
    };
    task.restore(&cluster).await?;
    let positions: Positions = Arc::new(Mutex::new(task.input.positions()));
    let mut probe = JoinSet::new();
    probe.spawn(lag_probe(
        Arc::clone(&cluster),
        task.input.topic().to_string(),
        Arc::clone(&positions),
        Arc::clone(&task.links.sample),
        LAG_SAMPLE_MS,
    ));
    task.run(Duration::from_millis(commit_interval_ms), &positions)
        .await
}

struct Streams<'a> {
    id: TaskId,
    links: &'a mut TaskLinks,
    producer: Producer,
    input: BrokerSource,
    group: GroupMetadata,
    ops: Vec<Op>,
    out: Out,
    changelog: String,
    /// A repartition topic's reader: the upstream subtasks, and those whose input ended.
    upstream: Option<(u32, BTreeSet<u32>)>,
    /// The ended set in the changelog is the current one.
    ended_logged: bool,
    grace_ms: i64,
    /// The largest event time read.
    stream_time: i64,
    /// The stream time the changelog holds.
    stream_time_logged: i64,
    watermark: i64,
    elements_in: u64,
    rows_out: u64,
    /// Event times of the open transaction's output rows (the first [`LATENCY_SAMPLES_MAX`]).
    open_ts: Vec<i64>,
    commit_latency: LatencyStats,
    last_sample: Option<Instant>,
}

impl Streams<'_> {
    /// Rebuilds the windows from the changelog, then resumes the input from the group's
    /// committed offsets.
    async fn restore(&mut self, cluster: &Arc<Cluster>) -> TaskResult {
        let tp = (self.changelog.clone(), self.id.subtask as i32);
        let mut reader = Consumer::new(
            Arc::clone(cluster),
            ConsumerConfig {
                isolation: Isolation::ReadCommitted,
                auto_offset_reset: OffsetReset::Earliest,
                ..ConsumerConfig::default()
            },
        );
        reader.assign([tp.clone()]);
        reader.seek(tp.clone(), 0).map_err(|e| e.to_string())?;
        let mut retry = BrokerRetry::default();
        let end = loop {
            match reader.list_offset(&tp, -1).await {
                Ok(end) => break end,
                Err(e) => retry.failed(e).await?,
            }
        };
        let mut applied = 0u64;
        while reader.position(&tp).is_none_or(|at| at < end) {
            let records = match reader.poll(Duration::from_millis(100)).await {
                Ok(r) => r,
                Err(e) => {
                    retry.failed(e).await?;
                    continue;
                }
            };
            retry.succeeded();
            for r in records.into_iter().filter(|r| r.offset < end) {
                let key = r.key.unwrap_or_default();
                self.apply_change(&key, r.value.as_deref())?;
                applied += 1;
            }
        }
        tracing::info!(task = %self.id, entries = applied, end, "restored from the changelog");
        // Every window at or below the restored watermark had closed before the commit that
        // logged it, so this closes none; it makes rows behind it late again.
        self.advance().await?;
        let topic = self.input.topic().to_string();
        let partitions: Vec<(String, i32)> = self
            .input
            .positions()
            .iter()
            .map(|(p, _)| (topic.clone(), *p))
            .collect();
        let committed = loop {
            match committed_offsets(cluster, &self.group.group_id, &partitions, true).await {
                Ok(c) => break c,
                Err(e) => retry.failed(e).await?,
            }
        };
        let offsets = committed.into_iter().map(|((_, p), o)| (p, o)).collect();
        self.input.resume_from(&offsets)
    }

    fn apply_change(&mut self, key: &[u8], value: Option<&[u8]>) -> TaskResult {
        if key == STREAM_TIME_KEY {
            let bytes: [u8; 8] = value
                .and_then(|v| v.try_into().ok())
                .ok_or("changelog: a stream time that is not 8 bytes")?;
            self.stream_time = i64::from_be_bytes(bytes);
            self.stream_time_logged = self.stream_time;
            return Ok(());
        }
        if key == ENDED_KEY {
            let ended: BTreeSet<u32> = value
                .map(serde_json::from_slice)
                .transpose()
                .map_err(|e| format!("changelog: the ended set: {e}"))?
                .unwrap_or_default();
            let Some((_, set)) = &mut self.upstream else {
                return Err(
                    "changelog: an ended set for a subtask that reads no repartition topic".into(),
                );
            };
            *set = ended;
            self.ended_logged = true;
            return Ok(());
        }
        let slash = key
            .iter()
            .position(|b| *b == b'/')
            .ok_or("changelog: a key without an operator")?;
        let (uid, entry) = (&key[..slash], &key[slash + 1..]);
        let window = self
            .ops
            .iter_mut()
            .find_map(|op| match op {
                Op::Window(u, w) if u.as_bytes() == uid => Some(w),
                _ => None,
            })
            .ok_or_else(|| {
                format!(
                    "changelog: no windowed operator {:?} in this stage",
                    String::from_utf8_lossy(uid)
                )
            })?;
        window
            .apply_change(entry, value)
            .map_err(|e| format!("changelog: {e}"))
    }

    async fn run(&mut self, commit_interval: Duration, positions: &Positions) -> TaskResult {
        let mut retry = BrokerRetry::default();
        let mut last_commit = Instant::now();
        let mut drained = false;
        loop {
            loop {
                match self.links.commands.try_recv() {
                    // Nothing is triggered or completed under this model.
                    Ok(TaskCommand::Trigger(_) | TaskCommand::RunBatch(..))
                    | Ok(TaskCommand::Complete(_)) => {}
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
                }
            }
            if drained {
                // Done: wait to be cancelled.
                self.sample(true);
                while self.links.commands.recv().await.is_some() {}
                return Ok(());
            }
            match self.input.poll().await {
                Ok(polled) => {
                    retry.succeeded();
                    for row in polled.rows {
                        self.row(row).await?;
                    }
                    self.advance().await?;
                }
                Err(e) => retry.failed(e).await?,
            }
            *positions.lock().unwrap_or_else(|e| e.into_inner()) = self.input.positions();
            let ended = self.input_ended();
            if ended {
                self.finish().await?;
            }
            if ended || last_commit.elapsed() >= commit_interval {
                self.commit(ended).await?;
                last_commit = Instant::now();
                drained = ended;
            }
            self.sample(false);
        }
    }

    fn input_ended(&self) -> bool {
        match &self.upstream {
            Some((n, ended)) => ended.len() == *n as usize,
            None => self.input.ended(),
        }
    }

    async fn row(&mut self, row: Row) -> TaskResult {
        if let Some((n, ended)) = &mut self.upstream
            && row.key == END_KEY
        {
            let from: u32 = std::str::from_utf8(&row.value)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|from| *from < *n)
                .ok_or("an end record from no upstream subtask")?;
            self.ended_logged &= !ended.insert(from);
            return Ok(());
        }
        self.elements_in += 1;
        self.stream_time = self.stream_time.max(row.ts);
        self.push(0, vec![row]).await
    }

    /// Moves the windows' watermark to stream time less the grace.
    async fn advance(&mut self) -> TaskResult {
        let watermark = self
            .stream_time
            .saturating_sub(self.grace_ms)
            .saturating_sub(1);
        self.close_until(watermark).await
    }

    async fn close_until(&mut self, watermark: i64) -> TaskResult {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        for i in 0..self.ops.len() {
            if let Op::Window(_, window) = &mut self.ops[i] {
                let fired = window.advance(watermark);
                self.push(i + 1, fired).await?;
            }
        }
        Ok(())
    }

    /// Runs `rows` through the operators from `from` on.
    async fn push(&mut self, from: usize, mut rows: Vec<Row>) -> TaskResult {
        for i in from..self.ops.len() {
            if rows.is_empty() {
                return Ok(());
            }
            match &mut self.ops[i] {
                Op::Map(f) => {
                    let mut next = Vec::with_capacity(rows.len());
                    for row in rows {
                        f.apply(row, &mut next);
                    }
                    rows = next;
                }
                Op::Window(_, window) => {
                    for row in &rows {
                        window.add(row);
                    }
                    return Ok(());
                }
                Op::Side(f, topic) => {
                    let mut side = Vec::new();
                    for row in &rows {
                        f.apply(row.clone(), &mut side);
                    }
                    let topic = topic.clone();
                    for row in side {
                        self.send(&topic, None, row).await?;
                    }
                }
            }
        }
        for row in rows {
            self.emit(row).await?;
        }
        Ok(())
    }

    async fn emit(&mut self, row: Row) -> TaskResult {
        self.rows_out += 1;
        match &mut self.out {
            Out::Sink(topic) => {
                if self.open_ts.len() < LATENCY_SAMPLES_MAX {
                    self.open_ts.push(row.ts);
                }
                let topic = topic.clone();
                self.send(&topic, None, row).await
            }
            Out::Repartition {
                topic,
                partitions,
                partitioner,
                next,
            } => {
                let p = match partitioner {
                    Partitioner::Hash => partition_for_key(&row.key, *partitions),
                    Partitioner::Rebalance => {
                        *next = (*next + 1) % *partitions;
                        *next
                    }
                };
                let topic = topic.clone();
                self.send(&topic, Some(p), row).await
            }
        }
    }

    async fn send(&mut self, topic: &str, partition: Option<i32>, row: Row) -> TaskResult {
        let record = Record {
            partition,
            timestamp: Some(row.ts),
            ..Record::new(topic, Some(row.key), row.value)
        };
        self.producer
            .send(record)
            .await
            .map(drop)
            .map_err(|e| format!("produce to {topic}: {e}"))
    }

    /// The input ended: closes every window, and tells each downstream subtask.
    async fn finish(&mut self) -> TaskResult {
        self.close_until(i64::MAX).await?;
        if let Out::Repartition {
            topic, partitions, ..
        } = &self.out
        {
            let (topic, partitions) = (topic.clone(), *partitions);
            for p in 0..partitions {
                let end = Row {
                    key: Bytes::from_static(END_KEY),
                    value: Bytes::from(self.id.subtask.to_string()),
                    ts: self.stream_time.max(0),
                };
                self.send(&topic, Some(p), end).await?;
            }
        }
        Ok(())
    }

    /// Commits the open transaction with the state's changes and the input's offsets, and
    /// opens the next.
    async fn commit(&mut self, drained: bool) -> TaskResult {
        let started = Instant::now();
        let partition = Some(self.id.subtask as i32);
        let mut changes = Vec::new();
        let skipped = self.links.config.mutation == Some(RuntimeMutation::ChangelogSkipped);
        for op in &mut self.ops {
            if let Op::Window(uid, window) = op {
                let logged = window.take_changes();
                if skipped {
                    continue;
                }
                for (entry, value) in logged {
                    let mut key = Vec::with_capacity(uid.len() + 1 + entry.len());
                    key.extend_from_slice(uid.as_bytes());
                    key.push(b'/');
                    key.extend_from_slice(&entry);
                    changes.push((key, value));
                }
            }
        }
        if self.stream_time != self.stream_time_logged {
            let bytes = self.stream_time.to_be_bytes().to_vec();
            changes.push((STREAM_TIME_KEY.to_vec(), Some(bytes)));
            self.stream_time_logged = self.stream_time;
        }
        if let Some((_, ended)) = &self.upstream
            && !self.ended_logged
        {
            let set = serde_json::to_vec(ended).expect("a set of indexes serializes");
            changes.push((ENDED_KEY.to_vec(), Some(set)));
            self.ended_logged = true;
        }
        for (key, value) in changes {
            let record = Record {
                partition,
                key: Some(Bytes::from(key)),
                value: value.map(Bytes::from),
                ..Record::new(self.changelog.clone(), None::<Bytes>, Bytes::new())
            };
            self.producer
                .send(record)
                .await
                .map_err(|e| format!("changelog: {e}"))?;
        }
        let topic = self.input.topic().to_string();
        let offsets: BTreeMap<(String, i32), i64> = self
            .input
            .commit_offsets()
            .into_iter()
            .map(|(p, o)| ((topic.clone(), p), o))
            .collect();
        let broker = |e: ClientError| format!("commit: {e}");
        self.producer
            .send_offsets_to_transaction(&offsets, &self.group)
            .await
            .map_err(broker)?;
        self.producer.commit_transaction().await.map_err(broker)?;
        self.producer.begin_transaction().map_err(broker)?;
        let now = self.links.clock.now_ms();
        self.commit_latency
            .record_since(&std::mem::take(&mut self.open_ts), now);
        let commit_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (_, late_dropped) = self.windows();
        let report = ToJobManager::SubtaskCommitted {
            attempt: self.links.attempt,
            task: self.id,
            commit_ms,
            drained,
            late_dropped,
        };
        self.links
            .to_job_manager
            .send(report)
            .await
            .map_err(|_| "the task manager is gone".to_string())
    }

    /// The windows' state, in bytes, and the rows they dropped as late in this attempt.
    fn windows(&self) -> (u64, u64) {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Window(_, w) => Some((w.state_bytes(), w.counters().late_dropped)),
                Op::Map(_) | Op::Side(..) => None,
            })
            .fold((0, 0), |(s, l), (bytes, late)| (s + bytes, l + late))
    }

    /// Refreshes the task's sample, at most every [`SAMPLE_MS`] unless `force`.
    fn sample(&mut self, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .last_sample
                .is_some_and(|t| now < t + Duration::from_millis(SAMPLE_MS))
        {
            return;
        }
        self.last_sample = Some(now);
        let mut s = TaskSample {
            task: Some(self.id),
            attempt: self.links.attempt,
            elements_in: self.elements_in,
            rows_out: self.rows_out,
            watermark: self.watermark,
            commit_latency: self.commit_latency,
            ..TaskSample::default()
        };
        (s.state_bytes, s.late_dropped) = self.windows();
        let mut shared = self.links.sample.lock().unwrap_or_else(|e| e.into_inner());
        s.lag_records = shared.lag_records;
        *shared = s;
    }
}

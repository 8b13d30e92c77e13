//! One subtask under the Kafka Streams model: consume, transform, produce, and commit it all
//! in one broker transaction every `commit_interval_ms`.
//!
//! ```text
//!   input topic, or the repartition topics of the stage's input edges (read_committed)
//!        |  the stage's operators (windows close by stream time less the grace)
//!        v
//!   one transaction: sink records | repartition records | changelog entries | input offsets
//! ```
//!
//! The transaction holds everything the subtask's progress depends on, so a restart sees it
//! all or none of it. A restarted subtask fences its predecessor by initialising the same
//! transactional id, rebuilds its operators from the last state its changelog partition holds
//! for each, and resumes from the offsets its group committed. An edge between stages is a
//! repartition topic with one partition per downstream subtask; nothing moves over the network
//! between subtasks, and no barrier or coordinator aligns them.
//!
//! The changelog entry of an operator is its whole state, written in a commit whenever it
//! changed since the last; Kafka Streams logs each key's change instead, which costs less per
//! commit when few keys change.
//!
//! Bounded input ends with markers: a source partition's end marker is committed as the
//! partition's offset (so a restart reads it again), and a subtask whose input ended writes an
//! end record to every partition of every repartition topic it feeds. A downstream subtask's
//! input has ended once it holds the end records of every upstream subtask of every input
//! edge; it keeps those sets in its changelog.

use super::chain::Chain;
use super::config::{ExecutionModel, RuntimeMutation};
use super::metrics::{LatencyStats, TaskSample};
use super::rpc::{TaskDeployment, ToJobManager};
use super::snapshot::{TaskId, TaskSnapshot};
use super::source::{BrokerSource, Positions, lag_probe};
use super::task::{BrokerRetry, TaskCommand, TaskLinks, TaskResult};
use crate::element::{MAX_WATERMARK, is_record, record_timestamp};
use crate::graph::{SinkTarget, Topology};
use crate::operator::DropReason;
use crate::operator::edge::Mark;
use crate::operator::source::SourceReader;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use weir_client::{
    Admin, ClientError, Cluster, Consumer, ConsumerConfig, GroupMetadata, Isolation, NewTopic,
    OffsetReset, Producer, ProducerConfig, Record, committed_offsets,
};

/// Key of the record that tells a repartition topic's reader that one upstream subtask's
/// input ended; its value is that subtask's index.
const END_KEY: &[u8] = b"\0weir:end";
/// Changelog key of the end records read, per input edge.
const ENDED_KEY: &[u8] = b"\0weir:ended";
/// Changelog key of the subtask's stream time, so that a restarted subtask goes on treating
/// as late what its predecessor did (Kafka Streams keeps it in the offsets' metadata).
const STREAM_TIME_KEY: &[u8] = b"\0weir:stream-time";
/// Changelog key of the records the subtask dropped, by reason.
const DROPS_KEY: &[u8] = b"\0weir:drops";
/// Largest changelog entry, in bytes: an operator whose state outgrows it fails its subtask
/// rather than write a record the broker refuses.
const CHANGELOG_ENTRY_BYTES_MAX: usize = 900 * 1024;
/// Event times kept per transaction to measure latency at commit.
const LATENCY_SAMPLES_MAX: usize = 1_024;
/// How often the task refreshes its sample.
const SAMPLE_MS: u64 = 100;
/// How often the lag probe asks the broker.
const LAG_SAMPLE_MS: u64 = 1_000;

/// One changelog entry: a key and its new value, or `None` where the key was deleted.
type Change = (Vec<u8>, Option<Vec<u8>>);

/// The repartition topic of edge `e` of `topology`.
pub fn repartition_topic(topology: &Topology, e: u32) -> String {
    let edge = &topology.edges[e as usize];
    let uid = |v: u32| &topology.vertices[v as usize].uid;
    format!(
        "{}-{}-{}-{}-repartition",
        topology.name,
        uid(edge.from),
        uid(edge.to),
        edge.input
    )
}

/// The changelog topic of the stage that starts at operator `uid`.
pub fn changelog_topic(job: &str, uid: &str) -> String {
    format!("{job}-{uid}-changelog")
}

/// Where the subtask reads: its source, or one raw reader per input edge.
enum Input {
    Source(Box<dyn SourceReader>),
    Repartition(Vec<Repartition>),
}

/// One input edge's repartition partition.
struct Repartition {
    reader: BrokerSource,
    /// Subtasks upstream of the edge.
    upstream: u32,
}

/// One output edge's repartition topic.
struct Output {
    topic: String,
    partitions: u32,
    /// The edge's first subpartition in the chain's staging.
    offset: u32,
    /// Point to point: this subtask writes only its own partition.
    point_to_point: bool,
}

/// Runs a subtask under the Kafka Streams model until it fails or is cancelled.
pub(crate) async fn run(
    deployment: TaskDeployment,
    links: &mut TaskLinks,
    cluster: Option<Arc<Cluster>>,
) -> TaskResult {
    let ExecutionModel::KafkaStreams {
        commit_interval_ms,
        grace_ms,
        replication_factor,
    } = links.config.model
    else {
        unreachable!("only the Kafka Streams model runs here");
    };
    let cluster = cluster.ok_or("the Kafka Streams model needs brokers")?;
    let config = Arc::clone(&links.config);
    let job = Rc::clone(&links.job);
    let topology = job.topology();
    let id = deployment.task;
    let stage = &job.stages()[id.stage as usize];
    let head = &topology.vertices[stage.vertices[0] as usize];
    for v in &stage.vertices {
        let vertex = &topology.vertices[*v as usize];
        match &vertex.kind {
            crate::graph::VertexKind::Sink(SinkTarget::Topic {
                exactly_once: true, ..
            }) => {}
            crate::graph::VertexKind::Sink(target) => {
                return Err(format!(
                    "{}: under the Kafka Streams model a sink writes a topic exactly once, not \
                     {target:?}",
                    vertex.uid
                ));
            }
            crate::graph::VertexKind::Source { topic: None } => {
                return Err(format!(
                    "{}: the Kafka Streams model reads topics, and this source holds its values",
                    vertex.uid
                ));
            }
            _ => {}
        }
    }
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
    let (offsets, _) = topology.output_offsets(stage);
    let mut outputs = Vec::new();
    for (k, e) in stage.outputs.iter().enumerate() {
        let to = &topology.vertices[topology.edges[*e as usize].to as usize];
        let topic = repartition_topic(topology, *e);
        create(&topic, to.parallelism).await?;
        outputs.push(Output {
            topic,
            partitions: to.parallelism,
            offset: offsets[k],
            point_to_point: topology.subpartitions(*e) == 1 && to.parallelism > 1,
        });
    }
    let changelog = changelog_topic(&topology.name, &head.uid);
    create(&changelog, stage.parallelism).await?;
    // Initialising the id fences the previous attempt's producer and aborts its transaction,
    // so that the offsets and the changelog read next are stable.
    let producer = Producer::new(
        Arc::clone(&cluster),
        ProducerConfig {
            transactional_id: Some(format!("{}-{}-{}", topology.name, head.uid, id.subtask)),
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
    let logged = read_changelog(&cluster, (&changelog, id)).await?;
    let mutation = config.mutation.and_then(RuntimeMutation::operator);
    let mut chain = Chain::build(
        &job,
        id.stage as usize,
        id.subtask,
        Some(&logged.snapshot),
        (links.clock, mutation, None),
    )?;
    let input = match chain.source.take() {
        Some((_, mut reader)) => {
            reader.watermarks().hold();
            let mut retry = BrokerRetry::default();
            while let Err(e) = reader.open(Some(&cluster)).await {
                retry.failed(e).await?;
            }
            Input::Source(reader)
        }
        None => {
            let mut readers = Vec::new();
            for e in &stage.inputs {
                let from = &topology.vertices[topology.edges[*e as usize].from as usize];
                let topic = repartition_topic(topology, *e);
                create(&topic, stage.parallelism).await?;
                let reader = BrokerSource::new(
                    Arc::clone(&cluster),
                    (&topic, stage.parallelism as i32),
                    (id.subtask, stage.parallelism),
                    None,
                    None,
                )?;
                readers.push(Repartition {
                    reader,
                    upstream: from.parallelism,
                });
            }
            Input::Repartition(readers)
        }
    };
    let mut task = Streams {
        id,
        links,
        producer,
        input,
        chain,
        outputs,
        group: GroupMetadata::standalone(topology.name.clone()),
        changelog,
        logged: logged.operators,
        ended: logged.ended,
        ended_logged: true,
        grace_ms: i64::try_from(grace_ms).unwrap_or(i64::MAX),
        stream_time: logged.stream_time,
        stream_time_logged: logged.stream_time,
        drops_logged: logged.snapshot.drops,
        watermark: i64::MIN,
        elements_in: 0,
        rows_out: 0,
        open_ts: Vec::new(),
        commit_latency: LatencyStats::default(),
        last_sample: None,
    };
    task.resume(&cluster).await?;
    let positions: Positions = Arc::new(Mutex::new(task.positions()));
    let mut probe = JoinSet::new();
    if let Input::Source(reader) = &task.input
        && let Some(topic) = reader.topic()
    {
        probe.spawn(lag_probe(
            Arc::clone(&cluster),
            topic.to_string(),
            Arc::clone(&positions),
            Arc::clone(&task.links.sample),
            LAG_SAMPLE_MS,
        ));
    }
    task.run(Duration::from_millis(commit_interval_ms), &positions)
        .await
}

/// What a subtask's changelog partition holds, its latest entry of each kind.
#[derive(Default)]
struct Logged {
    /// Operator state by uid, and the drop counts, as a snapshot to build the chain from.
    snapshot: TaskSnapshot,
    /// The same operator state, to tell what changed since.
    operators: BTreeMap<String, Vec<u8>>,
    ended: BTreeMap<u32, BTreeSet<u32>>,
    stream_time: i64,
}

/// Reads the changelog partition of subtask `id` to its end.
async fn read_changelog(
    cluster: &Arc<Cluster>,
    (topic, id): (&str, TaskId),
) -> Result<Logged, String> {
    let tp = (topic.to_string(), id.subtask as i32);
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
    let mut logged = Logged {
        stream_time: i64::MIN,
        ..Logged::default()
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
            apply(&mut logged, &r.key.unwrap_or_default(), r.value.as_deref())?;
            applied += 1;
        }
    }
    logged.snapshot.operators = logged.operators.clone();
    tracing::info!(task = %id, entries = applied, end, "restored from the changelog");
    Ok(logged)
}

/// Takes one changelog entry in.
fn apply(logged: &mut Logged, key: &[u8], value: Option<&[u8]>) -> TaskResult {
    let json = |what: &str| -> Result<&[u8], String> {
        value.ok_or_else(|| format!("changelog: {what} without a value"))
    };
    match key {
        STREAM_TIME_KEY => {
            let bytes: [u8; 8] = value
                .and_then(|v| v.try_into().ok())
                .ok_or("changelog: a stream time that is not 8 bytes")?;
            logged.stream_time = i64::from_be_bytes(bytes);
        }
        ENDED_KEY => {
            logged.ended = serde_json::from_slice(json("the ended sets")?)
                .map_err(|e| format!("changelog: the ended sets: {e}"))?;
        }
        DROPS_KEY => {
            logged.snapshot.drops = serde_json::from_slice(json("the drop counts")?)
                .map_err(|e| format!("changelog: the drop counts: {e}"))?;
        }
        uid => {
            let uid = String::from_utf8(uid.to_vec())
                .map_err(|_| "changelog: an operator uid that is not text")?;
            match value {
                Some(state) => logged.operators.insert(uid, state.to_vec()),
                None => logged.operators.remove(&uid),
            };
        }
    }
    Ok(())
}

struct Streams<'a> {
    id: TaskId,
    links: &'a mut TaskLinks,
    producer: Producer,
    input: Input,
    chain: Chain,
    outputs: Vec<Output>,
    group: GroupMetadata,
    changelog: String,
    /// Each operator's state as the changelog holds it.
    logged: BTreeMap<String, Vec<u8>>,
    /// Repartition inputs: the upstream subtasks whose end records were read, per input edge.
    ended: BTreeMap<u32, BTreeSet<u32>>,
    /// The ended sets in the changelog are the current ones.
    ended_logged: bool,
    grace_ms: i64,
    /// The largest event time read.
    stream_time: i64,
    /// The stream time the changelog holds.
    stream_time_logged: i64,
    drops_logged: BTreeMap<DropReason, u64>,
    watermark: i64,
    elements_in: u64,
    rows_out: u64,
    /// Event times of the open transaction's sink rows (the first [`LATENCY_SAMPLES_MAX`]).
    open_ts: Vec<i64>,
    commit_latency: LatencyStats,
    last_sample: Option<Instant>,
}

impl Streams<'_> {
    /// The topic partitions the subtask reads.
    fn read_partitions(&self) -> Vec<(String, i32)> {
        match &self.input {
            Input::Source(reader) => {
                let topic = reader
                    .topic()
                    .expect("a Kafka Streams source reads a topic");
                reader
                    .positions()
                    .iter()
                    .map(|(p, _)| (topic.to_string(), *p))
                    .collect()
            }
            Input::Repartition(readers) => readers
                .iter()
                .flat_map(|r| {
                    r.reader
                        .partitions()
                        .map(|p| (r.reader.topic().to_string(), p))
                })
                .collect(),
        }
    }

    /// Resumes the input from the group's committed offsets.
    async fn resume(&mut self, cluster: &Arc<Cluster>) -> TaskResult {
        let partitions = self.read_partitions();
        let mut retry = BrokerRetry::default();
        let committed = loop {
            match committed_offsets(cluster, &self.group.group_id, &partitions, true).await {
                Ok(c) => break c,
                Err(e) => retry.failed(e).await?,
            }
        };
        let mut by_topic: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
        for ((topic, p), o) in committed {
            by_topic.entry(topic).or_default().insert(p, o);
        }
        match &mut self.input {
            Input::Source(reader) => {
                let topic = reader.topic().unwrap_or_default().to_string();
                reader.resume_from(&by_topic.remove(&topic).unwrap_or_default())?;
            }
            Input::Repartition(readers) => {
                for r in readers {
                    let topic = r.reader.topic().to_string();
                    r.reader
                        .resume_from(&by_topic.remove(&topic).unwrap_or_default())?;
                }
            }
        }
        // Every window at or below the restored watermark had closed before the commit that
        // logged it, so this closes none; it makes records behind it late again.
        self.advance();
        self.drain().await
    }

    fn positions(&self) -> Vec<(i32, Option<i64>)> {
        match &self.input {
            Input::Source(reader) => reader.positions(),
            Input::Repartition(readers) => {
                readers.iter().flat_map(|r| r.reader.positions()).collect()
            }
        }
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
            match self.read().await {
                Ok(()) => retry.succeeded(),
                Err(e) => retry.failed(e).await?,
            }
            self.advance();
            self.drain().await?;
            *positions.lock().unwrap_or_else(|e| e.into_inner()) = self.positions();
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

    /// Reads what is there and puts it through the chain.
    async fn read(&mut self) -> Result<(), ClientError> {
        match &mut self.input {
            Input::Source(reader) => {
                self.elements_in += reader.poll().await? as u64;
                if let Some(ts) = reader.watermarks().max_timestamp() {
                    self.stream_time = self.stream_time.max(ts);
                }
            }
            Input::Repartition(readers) => {
                for (k, r) in readers.iter_mut().enumerate() {
                    let found = r.reader.poll().await?;
                    for record in found.records {
                        if record.key.as_deref() == Some(END_KEY) {
                            let from = std::str::from_utf8(&record.value)
                                .ok()
                                .and_then(|v| v.parse::<u32>().ok())
                                .filter(|from| *from < r.upstream)
                                .ok_or_else(|| {
                                    ClientError::Protocol(
                                        "an end record from no upstream subtask".into(),
                                    )
                                })?;
                            self.ended_logged &=
                                !self.ended.entry(k as u32).or_default().insert(from);
                            continue;
                        }
                        self.elements_in += 1;
                        self.stream_time = self.stream_time.max(record.timestamp);
                        let writer = &self.chain.inputs[k].writer;
                        writer.deliver(record.value).map_err(|e| {
                            ClientError::Protocol(format!("repartition record: {e}"))
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    fn input_ended(&self) -> bool {
        match &self.input {
            Input::Source(reader) => reader.ended(),
            Input::Repartition(readers) => readers.iter().enumerate().all(|(k, r)| {
                self.ended
                    .get(&(k as u32))
                    .is_some_and(|e| e.len() == r.upstream as usize)
            }),
        }
    }

    /// Moves the operators' watermark to stream time less the grace.
    fn advance(&mut self) {
        let watermark = self
            .stream_time
            .saturating_sub(self.grace_ms)
            .saturating_sub(1);
        self.mark(watermark);
    }

    /// Puts watermark `w` on the head's inputs, if it advances.
    fn mark(&mut self, w: i64) {
        if w <= self.watermark {
            return;
        }
        self.watermark = w;
        match &mut self.input {
            Input::Source(reader) => reader.watermarks().put(w),
            Input::Repartition(_) => {
                let mut marked = BTreeSet::new();
                for input in &self.chain.inputs {
                    if marked.insert(input.input) {
                        input.writer.mark(Mark::Watermark(w));
                    }
                }
            }
        }
    }

    /// Sends what the chain staged into the open transaction: repartition records (not the
    /// watermarks: each downstream subtask keeps its own stream time) and sink records.
    async fn drain(&mut self) -> TaskResult {
        self.chain.check()?;
        let staged = std::mem::take(&mut *self.chain.staged.borrow_mut());
        for (sub, bytes) in staged {
            if !is_record(&bytes) {
                continue;
            }
            let out = self
                .outputs
                .iter()
                .rev()
                .find(|o| o.offset <= sub)
                .expect("every subpartition belongs to an output edge");
            let partition = if out.point_to_point {
                self.id.subtask
            } else {
                sub - out.offset
            };
            let (topic, partition) = (out.topic.clone(), partition as i32);
            // The record's event time, not the producer's clock: the downstream subtask's
            // stream time is the largest timestamp it reads.
            let record = Record {
                partition: Some(partition),
                timestamp: record_timestamp(&bytes).or(Some(self.stream_time.max(0))),
                ..Record::new(topic.as_str(), None::<Bytes>, bytes)
            };
            self.send(record).await?;
        }
        for i in 0..self.chain.sinks.len() {
            let rows = std::mem::take(&mut *self.chain.sinks[i].rows.borrow_mut());
            let SinkTarget::Topic { topic, .. } = &self.chain.sinks[i].target else {
                unreachable!("the stage was checked to write topics only");
            };
            let topic = topic.clone();
            for row in rows {
                self.rows_out += 1;
                if self.open_ts.len() < LATENCY_SAMPLES_MAX {
                    self.open_ts.push(row.ts);
                }
                let record = Record {
                    timestamp: Some(row.ts),
                    ..Record::new(topic.as_str(), row.key, row.value)
                };
                self.send(record).await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, record: Record) -> TaskResult {
        let topic = record.topic.clone();
        self.producer
            .send(record)
            .await
            .map(drop)
            .map_err(|e| format!("produce to {topic}: {e}"))
    }

    /// The input ended: closes every window, and tells each downstream subtask.
    async fn finish(&mut self) -> TaskResult {
        self.mark(MAX_WATERMARK);
        self.drain().await?;
        for i in 0..self.outputs.len() {
            let (topic, partitions) = (self.outputs[i].topic.clone(), self.outputs[i].partitions);
            for p in 0..partitions {
                let end = Record {
                    partition: Some(p as i32),
                    timestamp: Some(self.stream_time.max(0)),
                    ..Record::new(
                        topic.as_str(),
                        Some(Bytes::from_static(END_KEY)),
                        Bytes::from(self.id.subtask.to_string()),
                    )
                };
                self.send(end).await?;
            }
        }
        Ok(())
    }

    /// The changelog entries of what changed since the last commit.
    fn changes(&mut self) -> Result<Vec<Change>, String> {
        let mut changes = Vec::new();
        let skipped = self.links.config.mutation == Some(RuntimeMutation::ChangelogSkipped);
        for (uid, state) in self.chain.snapshot()? {
            if self.logged.get(&uid) == Some(&state) {
                continue;
            }
            if state.len() > CHANGELOG_ENTRY_BYTES_MAX {
                return Err(format!(
                    "{uid}: its state is {} bytes, over the changelog entry limit of \
                     {CHANGELOG_ENTRY_BYTES_MAX} bytes",
                    state.len()
                ));
            }
            self.logged.insert(uid.clone(), state.clone());
            if !skipped {
                changes.push((uid.into_bytes(), Some(state)));
            }
        }
        if self.stream_time != self.stream_time_logged {
            changes.push((
                STREAM_TIME_KEY.to_vec(),
                Some(self.stream_time.to_be_bytes().to_vec()),
            ));
            self.stream_time_logged = self.stream_time;
        }
        if !self.ended_logged {
            let sets = serde_json::to_vec(&self.ended).expect("sets of indexes serialize");
            changes.push((ENDED_KEY.to_vec(), Some(sets)));
            self.ended_logged = true;
        }
        let drops = self.chain.drops.snapshot();
        if drops != self.drops_logged {
            let counts = serde_json::to_vec(&drops).expect("counts serialize");
            changes.push((DROPS_KEY.to_vec(), Some(counts)));
            self.drops_logged = drops;
        }
        Ok(changes)
    }

    /// Commits the open transaction with the state's changes and the input's offsets, and
    /// opens the next.
    async fn commit(&mut self, drained: bool) -> TaskResult {
        let started = Instant::now();
        let partition = Some(self.id.subtask as i32);
        for (key, value) in self.changes()? {
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
        let offsets: BTreeMap<(String, i32), i64> = match &self.input {
            Input::Source(reader) => {
                let topic = reader.topic().unwrap_or_default().to_string();
                reader
                    .commit_offsets()
                    .into_iter()
                    .map(|(p, o)| ((topic.clone(), p), o))
                    .collect()
            }
            Input::Repartition(readers) => readers
                .iter()
                .flat_map(|r| {
                    let topic = r.reader.topic().to_string();
                    r.reader
                        .commit_offsets()
                        .into_iter()
                        .map(move |(p, o)| ((topic.clone(), p), o))
                })
                .collect(),
        };
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
        let report = ToJobManager::SubtaskCommitted {
            attempt: self.links.attempt,
            task: self.id,
            commit_ms,
            drained,
            late_dropped: self
                .drops_logged
                .get(&DropReason::Late)
                .copied()
                .unwrap_or(0),
        };
        self.links
            .to_job_manager
            .send(report)
            .await
            .map_err(|_| "the task manager is gone".to_string())
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
        let s = TaskSample {
            task: Some(self.id),
            attempt: self.links.attempt,
            elements_in: self.elements_in,
            rows_out: self.rows_out,
            watermark: self.watermark,
            commit_latency: self.commit_latency,
            state_bytes: self.chain.state_bytes(),
            drops: self.chain.drops.snapshot().into(),
            ..TaskSample::default()
        };
        let mut shared = self.links.sample.lock().unwrap_or_else(|e| e.into_inner());
        let lag = shared.lag_records;
        *shared = TaskSample {
            lag_records: lag,
            ..s
        };
    }
}

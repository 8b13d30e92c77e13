//! One running subtask under the pipelined and micro-batch models: its input (a source or an
//! input gate), its chain of operators, its output (a result partition and its sinks), and
//! what it does at barriers and commits.
//!
//! A source subtask injects the barrier when the job manager triggers a checkpoint: between two
//! polls, so its saved position is exactly what it read before the barrier. A subtask with an
//! input gate snapshots when the barrier has arrived on every channel. Aligned, it stops
//! reading each channel whose barrier came until the others' arrive; that data waits in its
//! buffers and holds back its producer's credit. Unaligned, it snapshots at the first barrier
//! and saves, with the snapshot, the records the other channels deliver before their barriers.
//! The barrier then goes out on every output channel, in order with the data before it.
//!
//! After every input element the task drains what the chain staged: network writes wait for
//! credit, and sink rows go to their writers. So a slow consumer holds the task's input back
//! rather than letting memory grow.

use super::chain::Chain;
use super::config::{Alignment, ExecutionModel, JobConfig, RuntimeMutation};
use super::exchange::{Delivery, Event, ExchangeConfig, InputGate, ResultPartition};
use super::metrics::{LatencyStats, TaskSample};
use super::rpc::{TaskDeployment, ToJobManager};
use super::sink::{BrokerSink, SinkIdentity};
use super::snapshot::{InFlight, TaskId, TaskSnapshot};
use super::source::{Positions, lag_probe};
use super::table::{TableSink, TableStore, Tables};
use super::throttle::{Slowdown, Throttle};
use crate::api::Job;
use crate::element::{MAX_WATERMARK, is_record};
use crate::graph::SinkTarget;
use crate::operator::edge::Mark;
use crate::operator::sink::SinkRow;
use crate::port::{Merged, WatermarkMerger};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use weir_client::{ClientConfig, ClientError, Cluster};
use weir_seams::clock::Clock;
use weir_seams::net::Net;

/// How often a task refreshes its sample.
const SAMPLE_MS: u64 = 100;
/// How often a source asks the broker for its lag.
const LAG_SAMPLE_MS: u64 = 1_000;
/// How long a source keeps retrying a broker that fails before the task fails.
const SOURCE_RETRY_MS: u64 = 10_000;
/// Unaligned checkpoints: in-flight records one snapshot may save, in bytes; past it the
/// checkpoint is abandoned (the job manager's timeout ends it) rather than memory growing.
const IN_FLIGHT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// How a source rides out a failing broker: it retries what may pass for
/// [`SOURCE_RETRY_MS`], then fails the task.
#[derive(Default)]
pub(crate) struct BrokerRetry {
    failing_since: Option<Instant>,
}

impl BrokerRetry {
    pub(crate) fn succeeded(&mut self) {
        self.failing_since = None;
    }

    /// Waits before the next try, or fails the task.
    pub(crate) async fn failed(&mut self, e: ClientError) -> TaskResult {
        if !e.is_retriable() {
            return Err(format!("source: {e}"));
        }
        self.wait(e).await
    }

    /// Waits before the next try of what failed for a passing reason, or fails the task once
    /// it has failed for [`SOURCE_RETRY_MS`].
    pub(crate) async fn wait(&mut self, e: ClientError) -> TaskResult {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= Duration::from_millis(SOURCE_RETRY_MS) {
            return Err(format!(
                "source: broker failing for {SOURCE_RETRY_MS} ms: {e}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }
}

/// What the task manager tells a running task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TaskCommand {
    /// Inject the barrier of this checkpoint (sources only); micro-batch: fix where the
    /// batch ends and report it.
    Trigger(u64),
    /// Micro-batch: read up to these end offsets, then inject this checkpoint's barrier.
    RunBatch(u64, BTreeMap<i32, i64>),
    /// This checkpoint completed.
    Complete(u64),
}

/// What a task is connected to.
pub(crate) struct TaskLinks {
    pub net: Net,
    pub clock: Clock,
    pub attempt: u64,
    pub config: Arc<JobConfig>,
    pub job: Rc<Job>,
    pub commands: mpsc::Receiver<TaskCommand>,
    pub to_job_manager: mpsc::Sender<ToJobManager>,
    pub sample: Arc<Mutex<TaskSample>>,
    pub throttle: Throttle,
    pub tables: Tables,
}

pub(crate) type TaskResult = Result<(), String>;

/// The broker cluster a subtask of `config` talks to, if the job has brokers (one that only
/// reads collections and writes to memory needs none).
pub(crate) fn cluster_for(config: &JobConfig, net: Net, id: TaskId) -> Option<Arc<Cluster>> {
    if config.bootstrap.is_empty() {
        return None;
    }
    let mut client = ClientConfig::new(config.bootstrap.clone(), net);
    client.conn.client_id = format!("{}-{id}", config.topology.name);
    client.conn.connect_timeout_ms = config.broker_connect_timeout_ms;
    client.conn.request_timeout_ms = config.broker_request_timeout_ms;
    Some(Cluster::new(client))
}

/// The cluster, for a task that needs one to reach `what`.
fn need_cluster<'a>(
    cluster: &'a Option<Arc<Cluster>>,
    what: &str,
) -> Result<&'a Arc<Cluster>, String> {
    cluster
        .as_ref()
        .ok_or_else(|| format!("{what} needs brokers, and the job has no bootstrap addresses"))
}

/// Checks that the job this task manager runs is the one the job manager deployed.
pub(crate) fn check_job(job: &Job, config: &JobConfig) -> TaskResult {
    if job.topology() != &config.topology {
        return Err(format!(
            "this task manager's job {:?} (fingerprint {:016x}) is not the job the job manager \
             runs, {:?} (fingerprint {:016x}): both must run the same build of the job",
            job.name(),
            job.topology().fingerprint(),
            config.topology.name,
            config.topology.fingerprint()
        ));
    }
    Ok(())
}

/// Runs a subtask until it fails or its commands close (it was cancelled).
pub(crate) async fn run(deployment: TaskDeployment, mut links: TaskLinks) -> TaskResult {
    let config = Arc::clone(&links.config);
    check_job(&links.job, &config)?;
    let id = deployment.task;
    let cluster = cluster_for(&config, links.net, id);
    match config.model {
        ExecutionModel::KafkaStreams { .. } => {
            return super::streams::run(deployment, &mut links, cluster).await;
        }
        ExecutionModel::Storm { .. } => {
            return super::storm::run(deployment, &mut links, cluster).await;
        }
        ExecutionModel::Pipelined | ExecutionModel::MicroBatch { .. } => {}
    }
    let restored = deployment.restore.as_ref();
    let mutation = config.mutation.and_then(RuntimeMutation::operator);
    let job = Rc::clone(&links.job);
    let mut chain = Chain::build(
        &job,
        id.stage as usize,
        id.subtask,
        restored.map(|(_, s)| s),
        (links.clock, mutation, None),
    )?;
    let mut writers = Vec::with_capacity(chain.sinks.len());
    for sink in &chain.sinks {
        let state = restored.and_then(|(c, s)| Some((*c, s.operators.get(&sink.uid)?.as_slice())));
        let writer = match &sink.target {
            SinkTarget::Topic {
                topic,
                exactly_once,
            } => {
                let identity = SinkIdentity {
                    job: config.topology.name.clone(),
                    uid: sink.uid.clone(),
                    subtask: id.subtask,
                };
                let sink = BrokerSink::open(
                    Arc::clone(need_cluster(&cluster, &sink.uid)?),
                    identity,
                    (topic, *exactly_once),
                    (links.clock, config.transaction_timeout_ms),
                    config.mutation,
                    state.map(|(c, b)| (c, b, deployment.restore_savepoint)),
                )
                .await
                .map_err(|e| format!("{}: {e}", sink.uid))?;
                Writer::Topic(sink)
            }
            SinkTarget::Table { table } => {
                let store = links
                    .tables
                    .get(table)
                    .ok_or_else(|| format!("this task manager has no table {table:?}"))?;
                Writer::Table(table_writer(store, &config, &sink.uid, id, state).await?)
            }
            SinkTarget::Collect => {
                let store: Arc<dyn TableStore> = sink
                    .collector
                    .clone()
                    .expect("a collecting sink has its collection");
                Writer::Table(table_writer(store, &config, &sink.uid, id, state).await?)
            }
        };
        writers.push(writer);
    }
    let exchange = effective_exchange(&config);
    let (_, subpartitions) = job
        .topology()
        .output_offsets(&job.stages()[id.stage as usize]);
    let mut bound = 0;
    let output = match deployment.output_port {
        Some(port) if subpartitions > 0 => {
            let n = subpartitions as usize;
            let partition =
                ResultPartition::bind(links.net, &format!("0.0.0.0:{port}"), n, exchange.clone())
                    .await
                    .map_err(|e| format!("output partition: {e}"))?;
            bound += n * config.exchange.buffers_per_subpartition_max;
            Some(partition)
        }
        _ => None,
    };
    let source = chain.source.take();
    let mut task = Task {
        id,
        links: &mut links,
        chain,
        writers,
        output,
        buffers_bound: bound,
        elements_in: 0,
        write_latency: LatencyStats::default(),
        last_sample: None,
        slowdown: None,
    };
    match source {
        Some((uid, mut reader)) => {
            let mut retry = BrokerRetry::default();
            loop {
                match reader.open(cluster.as_ref()).await {
                    Ok(()) => break,
                    Err(e) => retry.failed(e).await?,
                }
            }
            let positions: Positions = Arc::new(Mutex::new(reader.positions()));
            // Dropping the set when the task ends stops the probe.
            let mut probe = JoinSet::new();
            if let Some(topic) = reader.topic() {
                probe.spawn(lag_probe(
                    Arc::clone(need_cluster(&cluster, &uid)?),
                    topic.to_string(),
                    Arc::clone(&positions),
                    Arc::clone(&task.links.sample),
                    LAG_SAMPLE_MS,
                ));
            }
            let source = Source {
                uid,
                reader,
                positions,
            };
            task.run_source(source).await
        }
        None => {
            task.slowdown = Some(Slowdown::new(task.links.throttle.clone()));
            let channels: Vec<_> = deployment.inputs.iter().map(|c| c.source.clone()).collect();
            let gate = InputGate::connect(task.links.net, &channels, exchange)
                .await
                .map_err(|e| format!("input gate: {e}"))?;
            task.buffers_bound += channels.len() * config.exchange.exclusive_buffers
                + config.exchange.floating_buffers;
            let edges: Vec<u32> = deployment.inputs.iter().map(|c| c.edge).collect();
            let in_flight = restored
                .map(|(_, s)| s.in_flight.clone())
                .unwrap_or_default();
            task.run_gate(gate, &edges, in_flight).await
        }
    }
}

/// Opens the write-ahead writer of table (or collection) sink `uid` of subtask `id`.
async fn table_writer(
    store: Arc<dyn TableStore>,
    config: &JobConfig,
    uid: &str,
    id: TaskId,
    restored: Option<(u64, &[u8])>,
) -> Result<TableSink, String> {
    let writer = format!("{}-{uid}-{}", config.topology.name, id.subtask);
    TableSink::open(store, writer, config.mutation, restored)
        .await
        .map_err(|e| format!("{uid}: {e}"))
}

/// The exchange settings a task uses: the job's, unless a mutant lifts the queue bound.
pub(crate) fn effective_exchange(config: &JobConfig) -> ExchangeConfig {
    let mut exchange = config.exchange.clone();
    if config.mutation == Some(RuntimeMutation::UnboundedBuffers) {
        exchange.buffers_per_subpartition_max = 1 << 20;
    }
    exchange
}

/// Where a sink writes: a topic or a table (collections are tables in memory). Both commit
/// with the checkpoints.
pub(crate) enum Writer {
    Topic(BrokerSink),
    Table(TableSink),
}

impl Writer {
    pub(crate) async fn write(&mut self, row: SinkRow) -> TaskResult {
        match self {
            Writer::Topic(sink) => sink.write(row).await.map_err(|e| e.to_string()),
            Writer::Table(sink) => sink.write(row),
        }
    }

    /// Pre-commits at the barrier; returns the writer's snapshot.
    async fn pre_commit(&mut self, checkpoint_id: u64) -> Result<Vec<u8>, String> {
        match self {
            Writer::Topic(sink) => sink
                .pre_commit(checkpoint_id)
                .await
                .map_err(|e| e.to_string()),
            Writer::Table(sink) => sink.pre_commit(checkpoint_id).await,
        }
    }

    async fn on_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        match self {
            Writer::Topic(sink) => sink
                .on_complete(checkpoint_id)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Writer::Table(sink) => sink.on_complete(checkpoint_id).await,
        }
    }

    /// Time from a row's event time to its commit (topics written exactly-once only).
    fn latency(&self) -> LatencyStats {
        match self {
            Writer::Topic(sink) => sink.latency(),
            Writer::Table(_) => LatencyStats::default(),
        }
    }
}

/// The source of a source subtask.
struct Source {
    uid: String,
    reader: Box<dyn crate::operator::source::SourceReader>,
    positions: Positions,
}

/// A barrier being aligned (or, unaligned, a snapshot waiting for the late barriers).
struct Pending {
    checkpoint_id: u64,
    seen: Vec<bool>,
    /// Unaligned: the snapshot taken at the first barrier, collecting in-flight records.
    snapshot: Option<TaskSnapshot>,
    in_flight_bytes: usize,
}

/// How the channels of an input gate feed the head's inputs: each channel's input and its
/// place among that input's channels, and a watermark merger per input.
pub(crate) struct GateInputs {
    channel_input: Vec<(usize, usize)>,
    mergers: Vec<WatermarkMerger>,
    /// Each input's merged watermark so far.
    marks: Vec<i64>,
}

impl GateInputs {
    /// The inputs of `chain`'s head, fed by channels carrying `edges` (the stage's input-edge
    /// position of each channel).
    pub fn new(chain: &Chain, edges: &[u32], mutation: bool) -> Self {
        let inputs = chain.head_inputs as usize;
        let mut counts = vec![0usize; inputs];
        let channel_input = edges
            .iter()
            .map(|e| {
                let input = chain.inputs[*e as usize].input as usize;
                counts[input] += 1;
                (input, counts[input] - 1)
            })
            .collect();
        Self {
            channel_input,
            mergers: counts
                .iter()
                .map(|n| WatermarkMerger::new((*n).max(1), mutation))
                .collect(),
            marks: vec![i64::MIN; inputs],
        }
    }

    /// Takes what channel `channel` delivered; returns what its input's port must be told.
    pub fn take(&mut self, channel: usize, mark: Mark) -> Option<Mark> {
        let (input, at) = self.channel_input[channel];
        let merged = match mark {
            Mark::Record => self.mergers[input].record(at),
            Mark::Watermark(w) => self.mergers[input].watermark(at, w),
            Mark::Idle => self.mergers[input].idle(at),
        };
        match merged {
            Merged::Watermark(w) if w > self.marks[input] => {
                self.marks[input] = w;
                Some(Mark::Watermark(w))
            }
            Merged::Idle => Some(Mark::Idle),
            Merged::Watermark(_) | Merged::Nothing => None,
        }
    }

    /// The least merged watermark over the inputs.
    pub fn watermark(&self) -> i64 {
        self.marks.iter().copied().min().unwrap_or(i64::MIN)
    }

    /// Whether every input has reached the end of time.
    pub fn ended(&self) -> bool {
        self.marks.iter().all(|m| *m == MAX_WATERMARK)
    }
}

struct Task<'a> {
    id: TaskId,
    links: &'a mut TaskLinks,
    chain: Chain,
    writers: Vec<Writer>,
    output: Option<ResultPartition>,
    buffers_bound: usize,
    elements_in: u64,
    write_latency: LatencyStats,
    last_sample: Option<Instant>,
    /// Only for tasks that read an exchange: a slowed task manager slows its downstream
    /// operators, and its sources feel it through credit, as they would a slow operator.
    slowdown: Option<Slowdown>,
}

/// Checks the chain and sends the elements it staged for the network, waiting for credit.
pub(crate) async fn send_staged(chain: &Chain, output: &mut Option<ResultPartition>) -> TaskResult {
    chain.check()?;
    let staged = std::mem::take(&mut *chain.staged.borrow_mut());
    if let Some(out) = output {
        for (sub, bytes) in staged {
            out.send(sub as usize, bytes)
                .await
                .map_err(|e| format!("output: {e}"))?;
        }
    } else {
        assert!(staged.is_empty(), "a chain without outputs staged nothing");
    }
    Ok(())
}

impl Task<'_> {
    /// Sends what the chain staged: network elements (waiting for credit) and sink rows.
    async fn drain(&mut self) -> TaskResult {
        send_staged(&self.chain, &mut self.output).await?;
        let now = self.links.clock.now_ms();
        for (sink, writer) in self.chain.sinks.iter().zip(self.writers.iter_mut()) {
            let rows = std::mem::take(&mut *sink.rows.borrow_mut());
            for row in rows {
                self.write_latency
                    .record(u64::try_from(now.saturating_sub(row.ts)).unwrap_or(0));
                writer.write(row).await?;
            }
        }
        Ok(())
    }

    /// Fires the processing-time timers that are due, and sends what they emitted.
    async fn timers(&mut self) -> TaskResult {
        let now = self.links.clock.now_ms();
        if self.chain.next_processing_timer().is_some_and(|t| t <= now) {
            self.chain.on_processing_time(now);
            self.drain().await?;
        }
        Ok(())
    }

    /// Snapshots the chain's operators (sinks pre-commit) and forwards the barrier, after
    /// everything staged before it.
    async fn barrier(&mut self, checkpoint_id: u64) -> Result<BTreeMap<String, Vec<u8>>, String> {
        self.drain().await?;
        let mut operators = self.chain.snapshot()?;
        for (sink, writer) in self.chain.sinks.iter().zip(self.writers.iter_mut()) {
            let bytes = writer.pre_commit(checkpoint_id).await?;
            operators.insert(sink.uid.clone(), bytes);
        }
        if let Some(out) = &self.output {
            out.broadcast_event(Event::Barrier { checkpoint_id })
                .map_err(|e| format!("output: {e}"))?;
        }
        Ok(operators)
    }

    fn snapshot_of(&self, operators: BTreeMap<String, Vec<u8>>, input_ended: bool) -> TaskSnapshot {
        TaskSnapshot {
            operators,
            in_flight: Vec::new(),
            input_ended,
            drops: self.chain.drops.snapshot(),
        }
    }

    async fn ack(&mut self, checkpoint_id: u64, snapshot: TaskSnapshot) -> TaskResult {
        let ack = ToJobManager::Ack {
            attempt: self.links.attempt,
            checkpoint_id,
            task: self.id,
            snapshot,
        };
        self.links
            .to_job_manager
            .send(ack)
            .await
            .map_err(|_| "the task manager is gone".to_string())
    }

    async fn complete(&mut self, checkpoint_id: u64) -> TaskResult {
        for writer in &mut self.writers {
            writer.on_complete(checkpoint_id).await?;
        }
        if self.writers.is_empty() {
            return Ok(());
        }
        let done = ToJobManager::Committed {
            attempt: self.links.attempt,
            checkpoint_id,
            task: self.id,
        };
        self.links
            .to_job_manager
            .send(done)
            .await
            .map_err(|_| "the task manager is gone".to_string())
    }

    /// Refreshes the task's sample, at most every [`SAMPLE_MS`] unless `force`.
    fn sample(&mut self, watermark: i64, input: Option<&InputGate>, force: bool) {
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
            rows_out: self.chain.sent.get() + self.write_latency.count,
            buffers_bound: self.buffers_bound,
            watermark,
            write_latency: self.write_latency,
            state_bytes: self.chain.state_bytes(),
            drops: self.chain.drops.snapshot().into(),
            ..TaskSample::default()
        };
        if let Some(out) = &self.output {
            let m = out.metrics();
            s.backpressured_ms = m.backpressured_ms;
            for sub in &m.subpartitions {
                s.buffers_in_use += sub.buffers_queued;
                s.buffers_peak += sub.buffers_queued_peak;
            }
        }
        if let Some(gate) = input {
            let m = gate.metrics();
            s.buffers_in_use += m.buffers_in_use;
            s.buffers_peak += m.buffers_in_use_peak;
        }
        for w in &self.writers {
            s.commit_latency.merge(&w.latency());
        }
        let mut shared = self.links.sample.lock().unwrap_or_else(|e| e.into_inner());
        s.lag_records = shared.lag_records;
        *shared = s;
    }

    async fn run_source(&mut self, mut source: Source) -> TaskResult {
        if let ExecutionModel::MicroBatch {
            batch_offsets_max, ..
        } = self.links.config.model
        {
            return self.run_batches(source, batch_offsets_max).await;
        }
        let mut retry = BrokerRetry::default();
        loop {
            loop {
                match self.links.commands.try_recv() {
                    Ok(TaskCommand::Trigger(id)) => {
                        self.source_checkpoint(&mut source, id).await?;
                    }
                    Ok(TaskCommand::Complete(id)) => self.complete(id).await?,
                    // Only the micro-batch model runs batches.
                    Ok(TaskCommand::RunBatch(..)) => {}
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
                }
            }
            self.timers().await?;
            match source.reader.poll().await {
                Ok(n) => {
                    retry.succeeded();
                    self.elements_in += n as u64;
                    self.drain().await?;
                }
                Err(e) => retry.failed(e).await?,
            }
            *source.positions.lock().unwrap_or_else(|e| e.into_inner()) = source.reader.positions();
            let watermark = if source.reader.ended() {
                MAX_WATERMARK
            } else {
                i64::MIN
            };
            self.sample(watermark, None, false);
        }
    }

    /// A micro-batch source: idle between batches; at a trigger it fixes and reports where
    /// its share of the batch ends, and once the job manager has logged the batch it reads up
    /// to there and ends the batch with the barrier. The watermark moves at the start of a
    /// batch, to what the batches before it read.
    async fn run_batches(&mut self, mut source: Source, batch_offsets_max: u64) -> TaskResult {
        source.reader.watermarks().hold();
        let offsets_max = if self.links.config.mutation == Some(RuntimeMutation::BatchUnbounded) {
            u64::MAX
        } else {
            batch_offsets_max
        };
        loop {
            self.sample(i64::MIN, None, false);
            let Some(command) = self.links.commands.recv().await else {
                return Ok(());
            };
            match command {
                TaskCommand::Trigger(id) => {
                    let mut retry = BrokerRetry::default();
                    let ends = loop {
                        match source.reader.plan(offsets_max).await {
                            Ok(ends) => break ends,
                            Err(e) => retry.failed(e).await?,
                        }
                    };
                    let planned = ToJobManager::Planned {
                        attempt: self.links.attempt,
                        checkpoint_id: id,
                        task: self.id,
                        ends,
                    };
                    self.links
                        .to_job_manager
                        .send(planned)
                        .await
                        .map_err(|_| "the task manager is gone".to_string())?;
                }
                TaskCommand::RunBatch(id, ends) => {
                    source.reader.watermarks().release();
                    self.drain().await?;
                    source.reader.start_batch(&ends)?;
                    let mut retry = BrokerRetry::default();
                    while !source.reader.batch_read(&ends) {
                        match source.reader.poll_batch(&ends).await {
                            Ok(n) => {
                                retry.succeeded();
                                self.elements_in += n as u64;
                                self.drain().await?;
                            }
                            Err(e) => retry.failed(e).await?,
                        }
                        *source.positions.lock().unwrap_or_else(|e| e.into_inner()) =
                            source.reader.positions();
                    }
                    self.source_checkpoint(&mut source, id).await?;
                }
                TaskCommand::Complete(id) => self.complete(id).await?,
            }
        }
    }

    /// A source's checkpoint: its position, then the chain's snapshot and the barrier, with
    /// nothing read in between.
    async fn source_checkpoint(&mut self, source: &mut Source, checkpoint_id: u64) -> TaskResult {
        let position = if self.links.config.mutation == Some(RuntimeMutation::OffsetsAfterBarrier) {
            None
        } else {
            Some(
                source
                    .reader
                    .snapshot()
                    .map_err(|e| format!("{}: {e}", source.uid))?,
            )
        };
        let mut operators = self.barrier(checkpoint_id).await?;
        let position = match position {
            Some(p) => p,
            None => {
                // The defect: records read after the barrier count as before it.
                source
                    .reader
                    .poll()
                    .await
                    .map_err(|e| format!("source: {e}"))?;
                self.drain().await?;
                source
                    .reader
                    .snapshot()
                    .map_err(|e| format!("{}: {e}", source.uid))?
            }
        };
        operators.insert(source.uid.clone(), position);
        let snapshot = self.snapshot_of(operators, source.reader.ended());
        self.ack(checkpoint_id, snapshot).await
    }

    /// Takes one element from channel `channel` (of the head's input edge `edge`).
    async fn deliver(
        &mut self,
        inputs: &mut GateInputs,
        (channel, edge): (usize, u32),
        bytes: bytes::Bytes,
    ) -> TaskResult {
        self.elements_in += 1;
        let writer = &self.chain.inputs[edge as usize].writer;
        let mark = writer.deliver(bytes).map_err(|e| format!("input: {e}"))?;
        if mark == Mark::Record
            && let Some(slowdown) = &mut self.slowdown
        {
            slowdown.row().await;
        }
        if let Some(told) = inputs.take(channel, mark) {
            self.chain.inputs[edge as usize].writer.mark(told);
        }
        self.drain().await
    }

    async fn run_gate(
        &mut self,
        mut gate: InputGate,
        edges: &[u32],
        in_flight: Vec<InFlight>,
    ) -> TaskResult {
        let mutation = self.links.config.mutation == Some(RuntimeMutation::MaxWatermark);
        let mut inputs = GateInputs::new(&self.chain, edges, mutation);
        for f in in_flight {
            let writer =
                self.chain.inputs.get(f.edge as usize).ok_or_else(|| {
                    format!("restore: in-flight records of input edge {}", f.edge)
                })?;
            match writer.writer.deliver(bytes::Bytes::from(f.bytes)) {
                Ok(Mark::Record) => {}
                Ok(_) => return Err("restore: a watermark in flight".into()),
                Err(e) => return Err(format!("restore: {e}")),
            }
            self.drain().await?;
        }
        let alignment = self.links.config.checkpoint.alignment;
        let mut pending: Option<Pending> = None;
        loop {
            let watermark = inputs.watermark();
            let timer = self.chain.next_processing_timer();
            let wait = timer.map(|t| {
                let now = self.links.clock.now_ms();
                Duration::from_millis(u64::try_from(t - now).unwrap_or(0))
            });
            let delivery = tokio::select! {
                biased;
                command = self.links.commands.recv() => match command {
                    None => return Ok(()),
                    Some(TaskCommand::Complete(id)) => {
                        self.complete(id).await?;
                        self.sample(watermark, Some(&gate), true);
                        continue;
                    }
                    Some(TaskCommand::Trigger(_) | TaskCommand::RunBatch(..)) => continue,
                },
                () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {
                    self.timers().await?;
                    continue;
                }
                d = gate.next() => d.map_err(|e| format!("input: {e}"))?,
            };
            match delivery {
                None => return Err("input ended: upstream subtasks finished".into()),
                Some(Delivery::Record { channel, record }) => {
                    // Unaligned: a record that overtook its channel's barrier is in flight for
                    // the pending snapshot, and is replayed if it is restored. Watermarks are
                    // not kept: the restored upstream sends them again.
                    if let Some(p) = &mut pending
                        && let Some(snap) = &mut p.snapshot
                        && !p.seen[channel]
                        && is_record(&record)
                    {
                        p.in_flight_bytes += record.len();
                        snap.in_flight.push(InFlight {
                            edge: edges[channel],
                            bytes: record.to_vec(),
                        });
                        if p.in_flight_bytes > IN_FLIGHT_BYTES_MAX {
                            tracing::warn!(
                                checkpoint = p.checkpoint_id,
                                "too much in flight; abandoning the checkpoint"
                            );
                            pending = None;
                        }
                    }
                    self.deliver(&mut inputs, (channel, edges[channel]), record)
                        .await?;
                }
                Some(Delivery::Event {
                    channel,
                    event: Event::Barrier { checkpoint_id },
                }) => {
                    pending = self
                        .on_barrier(
                            &mut gate,
                            (alignment, inputs.ended()),
                            pending,
                            (channel, checkpoint_id),
                        )
                        .await?;
                    self.sample(watermark, Some(&gate), true);
                    continue;
                }
                Some(Delivery::Event {
                    event: Event::EndOfPartition,
                    ..
                }) => {}
            }
            self.sample(watermark, Some(&gate), false);
        }
    }

    /// Handles a barrier on `channel`; the snapshot records whether the task had taken in
    /// all its input (every input at the end of time, nothing in flight), which is what lets
    /// the job finish at this checkpoint.
    async fn on_barrier(
        &mut self,
        gate: &mut InputGate,
        (alignment, ended): (Alignment, bool),
        pending: Option<Pending>,
        (channel, checkpoint_id): (usize, u64),
    ) -> Result<Option<Pending>, String> {
        let mut p = match pending {
            Some(p) if p.checkpoint_id == checkpoint_id => p,
            // A barrier of an abandoned checkpoint.
            Some(p) if p.checkpoint_id > checkpoint_id => return Ok(Some(p)),
            _ => {
                // A newer checkpoint supersedes one still aligning.
                gate.unblock_all();
                let snapshot = match alignment {
                    Alignment::Aligned => None,
                    Alignment::Unaligned => {
                        let operators = self.barrier(checkpoint_id).await?;
                        Some(self.snapshot_of(operators, ended))
                    }
                };
                Pending {
                    checkpoint_id,
                    seen: vec![false; gate.channels()],
                    snapshot,
                    in_flight_bytes: 0,
                }
            }
        };
        p.seen[channel] = true;
        if !p.seen.iter().all(|s| *s) {
            if alignment == Alignment::Aligned {
                gate.block(channel);
            }
            return Ok(Some(p));
        }
        gate.unblock_all();
        let snapshot = match p.snapshot.take() {
            Some(mut s) => {
                s.input_ended &= s.in_flight.is_empty();
                s
            }
            None => {
                let operators = self.barrier(checkpoint_id).await?;
                self.snapshot_of(operators, ended)
            }
        };
        self.ack(checkpoint_id, snapshot).await?;
        Ok(None)
    }
}

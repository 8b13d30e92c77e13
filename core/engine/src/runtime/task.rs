//! One running subtask: its input (a broker source or an input gate), its chain of operators,
//! its output (a result partition or the sink), and what it does at barriers and commits.
//!
//! A source subtask injects the barrier when the job manager triggers a checkpoint: between two
//! polls, so its saved offsets are exactly the rows emitted before the barrier. A subtask with
//! an input gate snapshots when the barrier has arrived on every channel. Aligned, it stops
//! reading each channel whose barrier came until the others' arrive; that data waits in its
//! buffers and holds back its producer's credit. Unaligned, it snapshots at the first barrier
//! and saves, with the snapshot, the rows the other channels deliver before their barriers.
//! The barrier then goes out on every output channel, in order with the data before it.

use super::config::{Alignment, ExecutionModel, JobConfig, RuntimeMutation};
use super::element::{Element, Row};
use super::exchange::{Delivery, Event, ExchangeConfig, InputGate, ResultPartition};
use super::function::{Functions, RowFunction};
use super::graph::{OperatorSpec, Partitioner, SinkMode};
use super::metrics::{LatencyStats, TaskSample};
use super::rpc::{TaskDeployment, ToJobManager};
use super::running::KeyedRunning;
use super::sink::{BrokerSink, SinkIdentity};
use super::snapshot::{TaskId, TaskSnapshot};
use super::source::{BrokerSource, Positions, lag_probe};
use super::table::{TableSink, Tables};
use super::throttle::{Slowdown, Throttle};
use super::window::KeyedWindows;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use weir_client::{ClientConfig, ClientError, Cluster, partition_for_key};
use weir_seams::clock::Clock;
use weir_seams::net::Net;

/// How often a task refreshes its sample.
const SAMPLE_MS: u64 = 100;
/// How often a source asks the broker for its lag.
const LAG_SAMPLE_MS: u64 = 1_000;
/// How long a source keeps retrying a broker that fails before the task fails.
const SOURCE_RETRY_MS: u64 = 10_000;
/// Unaligned checkpoints: in-flight rows one snapshot may save, in bytes; past it the
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
    pub commands: mpsc::Receiver<TaskCommand>,
    pub to_job_manager: mpsc::Sender<ToJobManager>,
    pub sample: Arc<Mutex<TaskSample>>,
    pub throttle: Throttle,
    pub functions: Functions,
    pub tables: Tables,
}

pub(crate) type TaskResult = Result<(), String>;

/// Runs a subtask until it fails or its commands close (it was cancelled).
pub(crate) async fn run(deployment: TaskDeployment, mut links: TaskLinks) -> TaskResult {
    let config = Arc::clone(&links.config);
    let graph = &config.graph;
    let id = deployment.task;
    let mut client = ClientConfig::new(config.bootstrap.clone(), links.net);
    client.conn.client_id = format!("{}-{id}", graph.name);
    client.conn.connect_timeout_ms = config.broker_connect_timeout_ms;
    client.conn.request_timeout_ms = config.broker_request_timeout_ms;
    let cluster = Cluster::new(client);
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
    let state_of =
        |uid: &str| restored.and_then(|(c, s)| Some((*c, s.operators.get(uid)?.as_slice())));
    if let Some((_, snap)) = restored {
        for uid in snap.operators.keys() {
            if !deployment
                .stage
                .vertices
                .iter()
                .any(|v| graph.vertices[*v].uid == *uid)
            {
                return Err(format!("restore: subtask {id} has no operator {uid:?}"));
            }
        }
    }
    let exchange = effective_exchange(&config);
    let mut chain = Chain {
        ops: Vec::new(),
        sink: None,
        output: None,
        rows_out: 0,
        write_latency: LatencyStats::default(),
        clock: links.clock,
        slowdown: None,
    };
    let function_of = |name: &str| {
        links
            .functions
            .get(name)
            .ok_or_else(|| format!("this task manager has no function {name:?}"))
    };
    // A topic writer: exactly-once ones commit `restore`'s transactions first.
    let open_sink = async |uid: &str, topic: &str, mode: SinkMode| {
        let identity = SinkIdentity {
            job: graph.name.clone(),
            uid: uid.to_string(),
            subtask: id.subtask,
        };
        BrokerSink::open(
            Arc::clone(&cluster),
            identity,
            (topic, mode == SinkMode::ExactlyOnce),
            (links.clock, config.transaction_timeout_ms),
            config.mutation,
            state_of(uid).map(|(c, b)| (c, b, deployment.restore_savepoint)),
        )
        .await
        .map(Writer::Topic)
        .map_err(|e| format!("{uid}: {e}"))
    };
    let mut head = None;
    for v in &deployment.stage.vertices {
        let vertex = &graph.vertices[*v];
        let uid = vertex.uid.clone();
        match &vertex.op {
            OperatorSpec::Source { .. } => {
                let restored = state_of(&uid).map(|(_, b)| b);
                let at = (id.subtask, vertex.parallelism);
                let source = BrokerSource::of_operator(&cluster, &vertex.op, at, restored)
                    .expect("a source operator")?;
                let topic = source.topic().to_string();
                head = Some((uid, source, topic));
            }
            OperatorSpec::Window { assigner } => {
                let window = match state_of(&uid) {
                    Some((_, bytes)) => KeyedWindows::restore(*assigner, bytes)
                        .map_err(|e| format!("restore {uid}: {e}"))?,
                    None => KeyedWindows::new(*assigner),
                };
                chain.ops.push(ChainOp::Window(uid, window));
            }
            OperatorSpec::Map { function } => {
                chain.ops.push(ChainOp::Map(function_of(function)?));
            }
            OperatorSpec::RunningTotals => {
                let running = match state_of(&uid) {
                    Some((_, bytes)) => {
                        KeyedRunning::restore(bytes).map_err(|e| format!("restore {uid}: {e}"))?
                    }
                    None => KeyedRunning::new(),
                };
                chain.ops.push(ChainOp::Running(uid, running));
            }
            OperatorSpec::SideOutput {
                function,
                topic,
                mode,
            } => {
                let f = function_of(function)?;
                let sink = open_sink(&uid, topic, *mode).await?;
                chain.ops.push(ChainOp::Side(f, uid, sink));
            }
            OperatorSpec::Upsert { function, table } => {
                let f = function_of(function)?;
                let store = links
                    .tables
                    .get(table)
                    .ok_or_else(|| format!("this task manager has no table {table:?}"))?;
                let writer = format!("{}-{uid}-{}", graph.name, id.subtask);
                let restored = state_of(&uid);
                let sink = TableSink::open(store, writer, config.mutation, restored)
                    .await
                    .map_err(|e| format!("{uid}: {e}"))?;
                chain.ops.push(ChainOp::Side(f, uid, Writer::Table(sink)));
            }
            OperatorSpec::Sink { topic, mode } => {
                chain.sink = Some((uid.clone(), open_sink(&uid, topic, *mode).await?));
            }
        }
    }
    let mut bound = 0;
    if let (Some(port), Some(partitioner)) = (deployment.output_port, deployment.stage.output) {
        let n = deployment.output_subpartitions as usize;
        let partition =
            ResultPartition::bind(links.net, &format!("0.0.0.0:{port}"), n, exchange.clone())
                .await
                .map_err(|e| format!("output partition: {e}"))?;
        bound += n * config.exchange.buffers_per_subpartition_max;
        chain.output = Some(Output {
            partition,
            partitioner,
            next: 0,
        });
    }
    let mut task = Task {
        id,
        links: &mut links,
        chain,
        buffers_bound: bound,
        elements_in: 0,
        last_sample: None,
    };
    match head {
        Some((uid, source, topic)) => {
            let positions: Positions = Arc::new(Mutex::new(source.positions()));
            // Dropping the set when the task ends stops the probe.
            let mut probe = JoinSet::new();
            probe.spawn(lag_probe(
                Arc::clone(&cluster),
                topic,
                Arc::clone(&positions),
                Arc::clone(&task.links.sample),
                LAG_SAMPLE_MS,
            ));
            task.run_source(uid, source, positions).await
        }
        None => {
            task.chain.slowdown = Some(Slowdown::new(task.links.throttle.clone()));
            let gate = InputGate::connect(task.links.net, &deployment.inputs, exchange)
                .await
                .map_err(|e| format!("input gate: {e}"))?;
            task.buffers_bound += deployment.inputs.len() * config.exchange.exclusive_buffers
                + config.exchange.floating_buffers;
            let in_flight = restored
                .map(|(_, s)| s.in_flight.clone())
                .unwrap_or_default();
            task.run_gate(gate, in_flight).await
        }
    }
}

/// The exchange settings a task uses: the job's, unless a mutant lifts the queue bound.
fn effective_exchange(config: &JobConfig) -> ExchangeConfig {
    let mut exchange = config.exchange.clone();
    if config.mutation == Some(RuntimeMutation::UnboundedBuffers) {
        exchange.buffers_per_subpartition_max = 1 << 20;
    }
    exchange
}

struct Output {
    partition: ResultPartition,
    partitioner: Partitioner,
    next: usize,
}

/// One operator of a chain after its head.
enum ChainOp {
    Map(Arc<dyn RowFunction>),
    Window(String, KeyedWindows),
    Running(String, KeyedRunning),
    /// The function making the side output's (or upsert's) rows, the operator's uid, and its
    /// writer.
    Side(Arc<dyn RowFunction>, String, Writer),
}

/// Where a chain writes: a topic (side outputs and the sink) or a table (upserts). Both commit
/// with the checkpoints.
enum Writer {
    Topic(BrokerSink),
    Table(TableSink),
}

impl Writer {
    async fn write(&mut self, row: Row) -> TaskResult {
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

/// The operators after the head, and where their output goes.
struct Chain {
    ops: Vec<ChainOp>,
    sink: Option<(String, Writer)>,
    output: Option<Output>,
    rows_out: u64,
    write_latency: LatencyStats,
    clock: Clock,
    /// Only for tasks that read an exchange: a slowed task manager slows its downstream
    /// operators, and its sources feel it through credit, as they would a slow operator.
    slowdown: Option<Slowdown>,
}

impl Chain {
    async fn row(&mut self, row: Row) -> TaskResult {
        if let Some(slowdown) = &mut self.slowdown {
            slowdown.row().await;
        }
        self.push(0, vec![row]).await
    }

    /// Runs `rows` through the operators from `from` on: a window keeps them, anything else
    /// passes its output on, and what comes out of the last goes to the sink or the output.
    async fn push(&mut self, from: usize, mut rows: Vec<Row>) -> TaskResult {
        for op in &mut self.ops[from..] {
            if rows.is_empty() {
                return Ok(());
            }
            match op {
                ChainOp::Map(f) => {
                    let mut out = Vec::with_capacity(rows.len());
                    for row in rows {
                        f.apply(row, &mut out);
                    }
                    rows = out;
                }
                ChainOp::Window(_, window) => {
                    for row in &rows {
                        window.add(row);
                    }
                    return Ok(());
                }
                ChainOp::Running(_, running) => {
                    for row in &rows {
                        running.add(row);
                    }
                    return Ok(());
                }
                ChainOp::Side(f, _, sink) => {
                    let mut side = Vec::new();
                    for row in &rows {
                        f.apply(row.clone(), &mut side);
                    }
                    for row in side {
                        sink.write(row).await?;
                    }
                }
            }
        }
        for row in rows {
            self.emit(row).await?;
        }
        Ok(())
    }

    /// The state each stateful operator holds, and the rows it dropped as late.
    fn state(&self) -> impl Iterator<Item = (u64, u64)> {
        self.ops.iter().filter_map(|op| match op {
            ChainOp::Window(_, w) => Some((w.state_bytes(), w.counters().late_dropped)),
            ChainOp::Running(_, r) => Some((r.state_bytes(), r.counters().late_dropped)),
            ChainOp::Map(_) | ChainOp::Side(..) => None,
        })
    }

    /// The chain's writers: side outputs and upserts first, then the sink.
    fn writers(&mut self) -> impl Iterator<Item = (&String, &mut Writer)> {
        let sides = self.ops.iter_mut().filter_map(|op| match op {
            ChainOp::Side(_, uid, sink) => Some((&*uid, sink)),
            _ => None,
        });
        sides.chain(self.sink.as_mut().map(|(uid, sink)| (&*uid, sink)))
    }

    async fn watermark(&mut self, watermark: i64) -> TaskResult {
        for i in 0..self.ops.len() {
            let released = match &mut self.ops[i] {
                ChainOp::Window(_, window) => window.advance(watermark),
                ChainOp::Running(_, running) => running.advance(watermark),
                ChainOp::Map(_) | ChainOp::Side(..) => continue,
            };
            self.push(i + 1, released).await?;
        }
        if let Some(out) = &mut self.output {
            let bytes = Element::Watermark(watermark).encode();
            for i in 0..out.partition.subpartitions() {
                out.partition
                    .send(i, bytes.clone())
                    .await
                    .map_err(|e| format!("output: {e}"))?;
            }
        }
        Ok(())
    }

    async fn emit(&mut self, row: Row) -> TaskResult {
        self.rows_out += 1;
        if let Some((_, sink)) = &mut self.sink {
            let age = self.clock.now_ms().saturating_sub(row.ts);
            self.write_latency.record(u64::try_from(age).unwrap_or(0));
            return sink.write(row).await;
        }
        let out = self
            .output
            .as_mut()
            .expect("a chain ends in a sink or an output");
        let n = out.partition.subpartitions();
        let i = match out.partitioner {
            Partitioner::Hash => partition_for_key(&row.key, n as i32) as usize,
            Partitioner::Rebalance => {
                out.next = (out.next + 1) % n;
                out.next
            }
        };
        out.partition
            .send(i, Element::Row(row).encode())
            .await
            .map_err(|e| format!("output: {e}"))
    }

    /// Snapshots the chain's operators (the sink pre-commits) and forwards the barrier.
    async fn barrier(&mut self, checkpoint_id: u64) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let mut operators = BTreeMap::new();
        for op in &self.ops {
            match op {
                ChainOp::Window(uid, w) => operators.insert(uid.clone(), w.snapshot()),
                ChainOp::Running(uid, r) => operators.insert(uid.clone(), r.snapshot()),
                ChainOp::Map(_) | ChainOp::Side(..) => None,
            };
        }
        for (uid, sink) in self.writers() {
            let bytes = sink.pre_commit(checkpoint_id).await?;
            operators.insert(uid.clone(), bytes);
        }
        if let Some(out) = &self.output {
            out.partition
                .broadcast_event(Event::Barrier { checkpoint_id })
                .map_err(|e| format!("output: {e}"))?;
        }
        Ok(operators)
    }
}

/// A barrier being aligned (or, unaligned, a snapshot waiting for the late barriers).
struct Pending {
    checkpoint_id: u64,
    seen: Vec<bool>,
    /// Unaligned: the snapshot taken at the first barrier, collecting in-flight rows.
    snapshot: Option<TaskSnapshot>,
    in_flight_bytes: usize,
}

struct Task<'a> {
    id: TaskId,
    links: &'a mut TaskLinks,
    chain: Chain,
    buffers_bound: usize,
    elements_in: u64,
    last_sample: Option<Instant>,
}

impl Task<'_> {
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
        let mut writes = false;
        for (_, sink) in self.chain.writers() {
            sink.on_complete(checkpoint_id).await?;
            writes = true;
        }
        if !writes {
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
            rows_out: self.chain.rows_out,
            buffers_bound: self.buffers_bound,
            watermark,
            write_latency: self.chain.write_latency,
            ..TaskSample::default()
        };
        if let Some(out) = &self.chain.output {
            let m = out.partition.metrics();
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
        for (bytes, late) in self.chain.state() {
            s.state_bytes += bytes;
            s.late_dropped += late;
        }
        if let Some((_, sink)) = &self.chain.sink {
            s.commit_latency = sink.latency();
        }
        let mut shared = self.links.sample.lock().unwrap_or_else(|e| e.into_inner());
        s.lag_records = shared.lag_records;
        *shared = s;
    }

    async fn run_source(
        &mut self,
        uid: String,
        mut source: BrokerSource,
        positions: Positions,
    ) -> TaskResult {
        if let ExecutionModel::MicroBatch {
            batch_offsets_max, ..
        } = self.links.config.model
        {
            return self
                .run_batches(uid, source, positions, batch_offsets_max)
                .await;
        }
        let mut watermark = i64::MIN;
        let mut retry = BrokerRetry::default();
        loop {
            loop {
                match self.links.commands.try_recv() {
                    Ok(TaskCommand::Trigger(id)) => {
                        self.source_checkpoint(&uid, &mut source, id).await?;
                    }
                    Ok(TaskCommand::Complete(id)) => self.complete(id).await?,
                    // Only the micro-batch model runs batches.
                    Ok(TaskCommand::RunBatch(..)) => {}
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
                }
            }
            match source.poll().await {
                Ok(polled) => {
                    retry.succeeded();
                    self.push(polled.rows, polled.watermark).await?;
                    if let Some(w) = polled.watermark {
                        watermark = w;
                    }
                }
                Err(e) => retry.failed(e).await?,
            }
            *positions.lock().unwrap_or_else(|e| e.into_inner()) = source.positions();
            self.sample(watermark, None, false);
        }
    }

    /// A micro-batch source: idle between batches; at a trigger it fixes and reports where
    /// its share of the batch ends, and once the job manager has logged the batch it reads up
    /// to there and ends the batch with the barrier. The watermark moves at the start of a
    /// batch, to what the batches before it read.
    async fn run_batches(
        &mut self,
        uid: String,
        mut source: BrokerSource,
        positions: Positions,
        batch_offsets_max: u64,
    ) -> TaskResult {
        let mut watermark = i64::MIN;
        // The watermark as of the end of the last batch read, sent at the next one's start.
        let mut held = source.advance_watermark();
        let offsets_max = if self.links.config.mutation == Some(RuntimeMutation::BatchUnbounded) {
            u64::MAX
        } else {
            batch_offsets_max
        };
        loop {
            self.sample(watermark, None, false);
            let Some(command) = self.links.commands.recv().await else {
                return Ok(());
            };
            match command {
                TaskCommand::Trigger(id) => {
                    let mut retry = BrokerRetry::default();
                    let ends = loop {
                        match source.plan(offsets_max).await {
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
                    if let Some(w) = held.take() {
                        self.chain.watermark(w).await?;
                        watermark = w;
                    }
                    source.start_batch(&ends)?;
                    let mut retry = BrokerRetry::default();
                    while !source.batch_read(&ends) {
                        match source.poll_batch(&ends).await {
                            Ok(rows) => {
                                retry.succeeded();
                                self.push(rows, None).await?;
                            }
                            Err(e) => retry.failed(e).await?,
                        }
                        *positions.lock().unwrap_or_else(|e| e.into_inner()) = source.positions();
                    }
                    held = source.advance_watermark();
                    self.source_checkpoint(&uid, &mut source, id).await?;
                }
                TaskCommand::Complete(id) => self.complete(id).await?,
            }
        }
    }

    async fn push(&mut self, rows: Vec<Row>, watermark: Option<i64>) -> TaskResult {
        for row in rows {
            self.elements_in += 1;
            self.chain.row(row).await?;
        }
        if let Some(w) = watermark {
            self.chain.watermark(w).await?;
        }
        Ok(())
    }

    /// A source's checkpoint: offsets, then the chain's snapshot and the barrier, with
    /// nothing read in between.
    async fn source_checkpoint(
        &mut self,
        uid: &str,
        source: &mut BrokerSource,
        checkpoint_id: u64,
    ) -> TaskResult {
        let offsets = if self.links.config.mutation == Some(RuntimeMutation::OffsetsAfterBarrier) {
            None
        } else {
            Some(source.snapshot())
        };
        let mut operators = self.chain.barrier(checkpoint_id).await?;
        let offsets = match offsets {
            Some(o) => o,
            None => {
                // The defect: rows read after the barrier count as before it.
                let polled = source.poll().await.map_err(|e| format!("source: {e}"))?;
                self.push(polled.rows, polled.watermark).await?;
                source.snapshot()
            }
        };
        operators.insert(uid.to_string(), offsets);
        let snapshot = TaskSnapshot {
            operators,
            in_flight: Vec::new(),
            input_ended: source.ended(),
        };
        self.ack(checkpoint_id, snapshot).await
    }

    async fn run_gate(&mut self, mut gate: InputGate, in_flight: Vec<Vec<u8>>) -> TaskResult {
        let channels = gate.channels();
        let mut marks = vec![i64::MIN; channels];
        let mut watermark = i64::MIN;
        for bytes in in_flight {
            match Element::decode(Bytes::from(bytes)).map_err(|e| format!("restore: {e}"))? {
                Element::Row(row) => self.chain.row(row).await?,
                Element::Watermark(_) => return Err("restore: a watermark in flight".into()),
            }
        }
        let alignment = self.links.config.checkpoint.alignment;
        let mut pending: Option<Pending> = None;
        loop {
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
                d = gate.next() => d.map_err(|e| format!("input: {e}"))?,
            };
            match delivery {
                None => return Err("input ended: upstream subtasks finished".into()),
                Some(Delivery::Record { channel, record }) => {
                    self.elements_in += 1;
                    let element =
                        Element::decode(record.clone()).map_err(|e| format!("input: {e}"))?;
                    match element {
                        Element::Row(row) => {
                            // Unaligned: a row that overtook its channel's barrier is in flight
                            // for the pending snapshot, and is replayed if it is restored.
                            if let Some(p) = &mut pending
                                && let Some(snap) = &mut p.snapshot
                                && !p.seen[channel]
                            {
                                p.in_flight_bytes += record.len();
                                snap.in_flight.push(record.to_vec());
                                if p.in_flight_bytes > IN_FLIGHT_BYTES_MAX {
                                    tracing::warn!(
                                        checkpoint = p.checkpoint_id,
                                        "too much in flight; abandoning the checkpoint"
                                    );
                                    pending = None;
                                }
                            }
                            self.chain.row(row).await?;
                        }
                        Element::Watermark(w) => {
                            marks[channel] = marks[channel].max(w);
                            let least = *marks.iter().min().expect("a gate has channels");
                            if least > watermark {
                                watermark = least;
                                self.chain.watermark(least).await?;
                            }
                        }
                    }
                }
                Some(Delivery::Event {
                    channel,
                    event: Event::Barrier { checkpoint_id },
                }) => {
                    pending = self
                        .on_barrier(
                            &mut gate,
                            (alignment, watermark),
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
    /// all its input (its watermark at the end of time, nothing in flight), which is what lets
    /// the job finish at this checkpoint.
    async fn on_barrier(
        &mut self,
        gate: &mut InputGate,
        (alignment, watermark): (Alignment, i64),
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
                    Alignment::Unaligned => Some(TaskSnapshot {
                        operators: self.chain.barrier(checkpoint_id).await?,
                        in_flight: Vec::new(),
                        input_ended: watermark == i64::MAX,
                    }),
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
            None => TaskSnapshot {
                operators: self.chain.barrier(checkpoint_id).await?,
                in_flight: Vec::new(),
                input_ended: watermark == i64::MAX,
            },
        };
        self.ack(checkpoint_id, snapshot).await?;
        Ok(None)
    }
}

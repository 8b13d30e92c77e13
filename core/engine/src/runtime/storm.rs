//! One subtask under the Storm model: records one at a time, each the root of a tree of
//! tuples that the source tracks until every operator has acknowledged its part.
//!
//! ```text
//!   source (spout) --tuples, anchored--> operators (bolts) --rows--> topic (no transaction)
//!        ^                                     |
//!        +----- acks: (root, XOR of edges) ----+
//! ```
//!
//! Every tuple carries, for each root it descends from, the id of its own edge in that root's
//! tree. An operator that took in a tuple and emitted others from it acknowledges the tuple
//! with, per root, its edge id XOR the ids of the edges it emitted; a sink acknowledges once
//! its write is delivered. The source keeps the XOR of everything reported per root: it
//! returns to zero exactly when every edge created has been acknowledged, so the tree is
//! complete. A window holds its tuples unacknowledged until it fires, and anchors its result
//! to all of them.
//!
//! The source commits, per partition, the offset below which every record's tree completed.
//! A tree still open after `message_timeout_ms` is replayed from the source; a restart replays
//! everything past the committed offsets. Both can deliver a record twice: at least once.
//! Acknowledgements travel over the exchange from every non-source subtask back to the source
//! subtasks, one subpartition each; a source reads them on a task of its own, which never
//! waits, so that they cannot be held up behind the data they acknowledge.

use super::config::{ExecutionModel, RuntimeMutation};
use super::element::{Element, Row};
use super::exchange::{Delivery, ExchangeConfig, InputGate, ResultPartition};
use super::function::RowFunction;
use super::graph::{OperatorSpec, Partitioner, Stage};
use super::metrics::TaskSample;
use super::rpc::{TaskDeployment, ToJobManager};
use super::snapshot::TaskId;
use super::source::{BrokerSource, Positions, lag_probe};
use super::task::{BrokerRetry, TaskCommand, TaskLinks, TaskResult};
use super::window::KeyedWindows;
use crate::stream::window::WindowAssigner;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use weir_client::{
    Cluster, Delivery as Sent, Producer, ProducerConfig, Record, commit_offsets, committed_offsets,
    partition_for_key,
};

/// Exchange record tag of a tuple: its anchors, then the row as an [`Element`].
const TAG_TUPLE: u8 = 0x10;
/// Anchors one tuple may carry: a window's result names every tuple of its window, which
/// `max_spout_pending` bounds.
const ANCHORS_MAX: usize = 1 << 20;
/// Acknowledgement pairs one exchange record holds at most (fewer if the exchange's buffers
/// are smaller).
const ACKS_PER_RECORD_MAX: usize = 1_024;
/// Sink writes awaiting delivery before the sink waits for them.
const SINK_PENDING_MAX: usize = 256;
/// How often buffered acknowledgements and sink deliveries are settled, and timeouts checked.
const TICK_MS: u64 = 50;
/// How often the task refreshes its sample.
const SAMPLE_MS: u64 = 100;
/// How often the lag probe asks the broker.
const LAG_SAMPLE_MS: u64 = 1_000;
/// Bits of a root id below the source subtask's index.
const ROOT_SUBTASK_SHIFT: u32 = 48;

/// A tuple's anchors: for each root it descends from, the id of its edge in that tree.
type Anchors = Vec<(u64, u64)>;

/// A row with its anchors.
struct Tuple {
    row: Row,
    anchors: Anchors,
}

/// What a Storm exchange record holds.
enum Message {
    Tuple(Tuple),
    Watermark(i64),
}

fn encode_tuple(t: &Tuple) -> Bytes {
    let row = Element::Row(t.row.clone()).encode();
    let mut b = BytesMut::with_capacity(1 + 4 + 16 * t.anchors.len() + row.len());
    b.put_u8(TAG_TUPLE);
    b.put_u32(u32::try_from(t.anchors.len()).expect("anchors are bounded"));
    for (root, edge) in &t.anchors {
        b.put_u64(*root);
        b.put_u64(*edge);
    }
    b.put_slice(&row);
    b.freeze()
}

fn decode(mut bytes: Bytes) -> Result<Message, String> {
    if bytes.first() != Some(&TAG_TUPLE) {
        return match Element::decode(bytes).map_err(|e| e.to_string())? {
            Element::Watermark(w) => Ok(Message::Watermark(w)),
            Element::Row(_) => Err("a row without anchors".into()),
        };
    }
    bytes.advance(1);
    let anchors = decode_pairs(&mut bytes)?;
    match Element::decode(bytes).map_err(|e| e.to_string())? {
        Element::Row(row) => Ok(Message::Tuple(Tuple { row, anchors })),
        Element::Watermark(_) => Err("a watermark with anchors".into()),
    }
}

/// A count, then that many (u64, u64) pairs; the count is checked against the bytes there
/// before anything is allocated.
fn decode_pairs(bytes: &mut Bytes) -> Result<Vec<(u64, u64)>, String> {
    if bytes.remaining() < 4 {
        return Err("truncated pair count".into());
    }
    let n = bytes.get_u32() as usize;
    if n > ANCHORS_MAX || bytes.remaining() < n * 16 {
        return Err(format!(
            "{n} pairs do not fit the {} bytes left",
            bytes.remaining()
        ));
    }
    Ok((0..n).map(|_| (bytes.get_u64(), bytes.get_u64())).collect())
}

fn encode_pairs(pairs: &[(u64, u64)]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + 16 * pairs.len());
    b.put_u32(u32::try_from(pairs.len()).expect("ack records are bounded"));
    for (a, x) in pairs {
        b.put_u64(*a);
        b.put_u64(*x);
    }
    b.freeze()
}

/// Edge and root ids: a splitmix64 sequence seeded from the attempt and the subtask, so that
/// a run replays exactly; never zero, which would vanish from an XOR.
struct Ids(u64);

impl Ids {
    fn new(attempt: u64, task: TaskId) -> Self {
        Ids(attempt.rotate_left(32) ^ (u64::from(task.stage) << 20) ^ u64::from(task.subtask))
    }

    fn next(&mut self) -> u64 {
        loop {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    }

    /// A root id, with the source subtask that tracks it in its top bits.
    fn root(&mut self, subtask: u32) -> u64 {
        let low = self.next() & ((1 << ROOT_SUBTASK_SHIFT) - 1);
        (u64::from(subtask) << ROOT_SUBTASK_SHIFT) | low.max(1)
    }
}

/// The source subtask that tracks `root`.
fn root_owner(root: u64) -> usize {
    (root >> ROOT_SUBTASK_SHIFT) as usize
}

/// The open trees of one source subtask: the XOR reported so far per root.
#[derive(Default)]
struct Acker {
    open: BTreeMap<u64, u64>,
    /// Roots whose XOR returned to zero, for the source to take.
    complete: Vec<u64>,
    /// Why acknowledgements stopped arriving, if they did.
    failed: Option<String>,
}

impl Acker {
    fn apply(&mut self, root: u64, x: u64) {
        // A root no longer open timed out and was replayed under a new one.
        if let Some(v) = self.open.get_mut(&root) {
            *v ^= x;
            if *v == 0 {
                self.open.remove(&root);
                self.complete.push(root);
            }
        }
    }
}

/// Where a subtask's acknowledgements go.
enum AckOut {
    /// A source stage's operators: straight to its acker.
    Local(Arc<Mutex<Acker>>),
    /// Other stages: over the exchange, buffered per source subtask.
    Remote {
        partition: ResultPartition,
        buffered: Vec<Vec<(u64, u64)>>,
        /// Pairs per record: what fits an exchange buffer.
        per_record: usize,
    },
}

impl AckOut {
    /// Acknowledges a tuple with `anchors`, from which edges XORing to `emitted` came.
    async fn ack(&mut self, anchors: &Anchors, emitted: u64) -> TaskResult {
        match self {
            AckOut::Local(acker) => {
                let mut a = acker.lock().unwrap_or_else(|e| e.into_inner());
                for (root, edge) in anchors {
                    a.apply(*root, edge ^ emitted);
                }
                Ok(())
            }
            AckOut::Remote {
                buffered,
                per_record,
                ..
            } => {
                let per_record = *per_record;
                for (root, edge) in anchors {
                    let owner = root_owner(*root);
                    let to = buffered
                        .get_mut(owner)
                        .ok_or_else(|| format!("a root of source subtask {owner}, which is not"))?;
                    to.push((*root, edge ^ emitted));
                }
                if buffered.iter().any(|b| b.len() >= per_record) {
                    self.flush().await?;
                }
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> TaskResult {
        if let AckOut::Remote {
            partition,
            buffered,
            per_record,
        } = self
        {
            for (i, pairs) in buffered.iter_mut().enumerate() {
                for chunk in std::mem::take(pairs).chunks(*per_record) {
                    partition
                        .send(i, encode_pairs(chunk))
                        .await
                        .map_err(|e| format!("acks: {e}"))?;
                }
            }
        }
        Ok(())
    }
}

/// A window that holds its tuples unacknowledged until it fires.
struct WindowBolt {
    windows: KeyedWindows,
    assigner: WindowAssigner,
    /// Tuples held, by a local id: their anchors, the windows they still wait for, and the
    /// XOR of the edges emitted from them so far.
    held: BTreeMap<u64, (Anchors, u32, u64)>,
    /// The tuples of each open window, by (end, key, start): the order the windows fire in.
    members: BTreeMap<(i64, Bytes, i64), Vec<u64>>,
    next_id: u64,
}

impl WindowBolt {
    fn new(assigner: WindowAssigner) -> Result<Self, String> {
        if assigner.is_merging() {
            return Err("the Storm model's windows are tumbling or sliding, not sessions".into());
        }
        Ok(WindowBolt {
            windows: KeyedWindows::new(assigner),
            assigner,
            held: BTreeMap::new(),
            members: BTreeMap::new(),
            next_id: 0,
        })
    }

    /// Takes in a tuple; a late one is returned, to be acknowledged at once.
    fn add(&mut self, t: Tuple) -> Option<Anchors> {
        let late_before = self.windows.counters().late_dropped;
        self.windows.add(&t.row);
        if self.windows.counters().late_dropped > late_before {
            return Some(t.anchors);
        }
        let id = self.next_id;
        self.next_id += 1;
        let assigned = self.assigner.assign(t.row.ts, false);
        for w in &assigned {
            let k = (w.end, t.row.key.clone(), w.start);
            self.members.entry(k).or_default().push(id);
        }
        let waits = u32::try_from(assigned.len()).expect("windows per row are bounded");
        self.held.insert(id, (t.anchors, waits, 0));
        None
    }

    /// Fires the windows `watermark` closes: their results, each anchored to every tuple of
    /// its window, and the tuples no window waits for any more, with the XOR of their edges.
    fn advance(&mut self, watermark: i64, ids: &mut Ids) -> (Vec<Tuple>, Vec<(Anchors, u64)>) {
        let fired = self.windows.advance(watermark);
        let mut results = Vec::with_capacity(fired.len());
        let mut done = Vec::new();
        for row in fired {
            let (k, members) = self
                .members
                .pop_first()
                .expect("every fired window has members");
            debug_assert_eq!(k.1, row.key, "windows fire in the order they are kept");
            let edge = ids.next();
            let mut anchors: BTreeMap<u64, u64> = BTreeMap::new();
            for id in members {
                let (held_anchors, waits, emitted) =
                    self.held.get_mut(&id).expect("members are held");
                for (root, _) in held_anchors.iter() {
                    *anchors.entry(*root).or_insert(0) ^= edge;
                }
                *emitted ^= edge;
                *waits -= 1;
                if *waits == 0 {
                    let (a, _, x) = self.held.remove(&id).expect("held");
                    done.push((a, x));
                }
            }
            results.push(Tuple {
                row,
                anchors: anchors.into_iter().collect(),
            });
        }
        (results, done)
    }
}

/// A topic written without a transaction; a tuple is acknowledged once its write is delivered.
struct SinkWriter {
    producer: Producer,
    topic: String,
    pending: VecDeque<(Sent, Anchors)>,
}

impl SinkWriter {
    async fn write(&mut self, row: Row, anchors: Anchors, acks: &mut AckOut) -> TaskResult {
        let record = Record {
            timestamp: Some(row.ts),
            ..Record::new(self.topic.clone(), Some(row.key), row.value)
        };
        let sent = self
            .producer
            .send(record)
            .await
            .map_err(|e| format!("sink: {e}"))?;
        self.pending.push_back((sent, anchors));
        if self.pending.len() >= SINK_PENDING_MAX {
            self.settle(acks).await?;
        }
        Ok(())
    }

    /// Waits for every write sent and acknowledges their tuples.
    async fn settle(&mut self, acks: &mut AckOut) -> TaskResult {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.producer.flush().await;
        while let Some((sent, anchors)) = self.pending.pop_front() {
            sent.wait().await.map_err(|e| format!("sink: {e}"))?;
            acks.ack(&anchors, 0).await?;
        }
        Ok(())
    }
}

enum Op {
    Map(Arc<dyn RowFunction>),
    Window(Box<WindowBolt>),
}

enum Out {
    Exchange {
        partition: ResultPartition,
        partitioner: Partitioner,
        next: usize,
    },
    Sink(SinkWriter),
}

/// A stage's operators after its input, and where their tuples and acknowledgements go.
struct Chain {
    ops: Vec<Op>,
    out: Out,
    acks: AckOut,
    ids: Ids,
    rows_out: u64,
}

impl Chain {
    /// Runs a tuple through the operators from `from` on.
    async fn process(&mut self, from: usize, tuple: Tuple) -> TaskResult {
        // (next operator, tuple): a map's outputs go on from the operator after it.
        let mut work = vec![(from, tuple)];
        while let Some((i, t)) = work.pop() {
            if i == self.ops.len() {
                self.emit(t).await?;
                continue;
            }
            match &mut self.ops[i] {
                Op::Map(f) => {
                    let mut out = Vec::new();
                    f.apply(t.row, &mut out);
                    let mut emitted = 0;
                    for row in out.into_iter().rev() {
                        let edge = self.ids.next();
                        emitted ^= edge;
                        let anchors = t.anchors.iter().map(|(r, _)| (*r, edge)).collect();
                        work.push((i + 1, Tuple { row, anchors }));
                    }
                    self.acks.ack(&t.anchors, emitted).await?;
                }
                Op::Window(w) => {
                    if let Some(late) = w.add(t) {
                        self.acks.ack(&late, 0).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn emit(&mut self, t: Tuple) -> TaskResult {
        self.rows_out += 1;
        match &mut self.out {
            Out::Sink(writer) => writer.write(t.row, t.anchors, &mut self.acks).await,
            Out::Exchange {
                partition,
                partitioner,
                next,
            } => {
                let n = partition.subpartitions();
                let i = match partitioner {
                    Partitioner::Hash => partition_for_key(&t.row.key, n as i32) as usize,
                    Partitioner::Rebalance => {
                        *next = (*next + 1) % n;
                        *next
                    }
                };
                partition
                    .send(i, encode_tuple(&t))
                    .await
                    .map_err(|e| format!("output: {e}"))
            }
        }
    }

    async fn watermark(&mut self, watermark: i64) -> TaskResult {
        for i in 0..self.ops.len() {
            let Op::Window(w) = &mut self.ops[i] else {
                continue;
            };
            let (results, done) = w.advance(watermark, &mut self.ids);
            for (anchors, emitted) in done {
                self.acks.ack(&anchors, emitted).await?;
            }
            for t in results {
                self.process(i + 1, t).await?;
            }
        }
        if let Out::Exchange { partition, .. } = &mut self.out {
            let bytes = Element::Watermark(watermark).encode();
            for i in 0..partition.subpartitions() {
                partition
                    .send(i, bytes.clone())
                    .await
                    .map_err(|e| format!("output: {e}"))?;
            }
        }
        Ok(())
    }

    /// Settles the sink's writes and sends the buffered acknowledgements.
    async fn settle(&mut self) -> TaskResult {
        if let Out::Sink(writer) = &mut self.out {
            writer.settle(&mut self.acks).await?;
        }
        self.acks.flush().await
    }

    fn state(&self) -> (u64, u64) {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Window(w) => Some((w.windows.state_bytes(), w.windows.counters().late_dropped)),
                Op::Map(_) => None,
            })
            .fold((0, 0), |(s, l), (bytes, late)| (s + bytes, l + late))
    }
}

/// Runs a subtask under the Storm model until it fails or is cancelled.
pub(crate) async fn run(
    deployment: TaskDeployment,
    links: &mut TaskLinks,
    cluster: Arc<Cluster>,
) -> TaskResult {
    let ExecutionModel::Storm {
        message_timeout_ms,
        max_spout_pending,
        commit_interval_ms,
    } = links.config.model
    else {
        unreachable!("only the Storm model runs here");
    };
    let config = Arc::clone(&links.config);
    let id = deployment.task;
    let stage = &deployment.stage;
    let source_parallelism = config.graph.vertices[0].parallelism;
    let exchange = config.exchange.clone();
    let acker = Arc::new(Mutex::new(Acker::default()));
    let acks = match deployment.ack_port {
        None => AckOut::Local(Arc::clone(&acker)),
        Some(port) => {
            let n = source_parallelism as usize;
            let partition =
                ResultPartition::bind(links.net, &format!("0.0.0.0:{port}"), n, exchange.clone())
                    .await
                    .map_err(|e| format!("ack partition: {e}"))?;
            let fits = exchange.buffer_bytes_max.saturating_sub(4) / 16;
            AckOut::Remote {
                partition,
                buffered: vec![Vec::new(); n],
                per_record: fits.clamp(1, ACKS_PER_RECORD_MAX),
            }
        }
    };
    let (ops, out) = build(&deployment, stage, links, &cluster, &exchange).await?;
    let chain = Chain {
        ops,
        out,
        acks,
        ids: Ids::new(links.attempt, id),
        rows_out: 0,
    };
    let first = &config.graph.vertices[stage.vertices[0]];
    let at = (id.subtask, stage.parallelism);
    match BrokerSource::of_operator(&cluster, &first.op, at, None) {
        Some(source) => {
            let source = source?;
            let topic = source.topic().to_string();
            let gate = InputGate::connect(links.net, &deployment.ack_inputs, exchange)
                .await
                .map_err(|e| format!("ack gate: {e}"))?;
            let mut readers = JoinSet::new();
            readers.spawn(read_acks(gate, Arc::clone(&acker)));
            let mut spout = Spout {
                id,
                links,
                cluster: Arc::clone(&cluster),
                chain,
                source,
                acker,
                pending: BTreeMap::new(),
                by_partition: BTreeMap::new(),
                timeout: Duration::from_millis(message_timeout_ms),
                max_pending: max_spout_pending as usize,
                replayed: 0,
                watermark: i64::MIN,
                elements_in: 0,
                last_sample: None,
            };
            spout.resume().await?;
            let positions: Positions = Arc::new(Mutex::new(spout.source.positions()));
            readers.spawn(lag_probe(
                cluster,
                topic,
                Arc::clone(&positions),
                Arc::clone(&spout.links.sample),
                LAG_SAMPLE_MS,
            ));
            spout
                .run(Duration::from_millis(commit_interval_ms), &positions)
                .await
        }
        None => {
            let gate = InputGate::connect(links.net, &deployment.inputs, exchange)
                .await
                .map_err(|e| format!("input gate: {e}"))?;
            run_bolt(id, links, chain, gate).await
        }
    }
}

/// The stage's operators after its input, and its output.
async fn build(
    deployment: &TaskDeployment,
    stage: &Stage,
    links: &TaskLinks,
    cluster: &Arc<Cluster>,
    exchange: &ExchangeConfig,
) -> Result<(Vec<Op>, Out), String> {
    let graph = &links.config.graph;
    let writer = async |topic: &str| -> Result<SinkWriter, String> {
        let producer = Producer::new(Arc::clone(cluster), ProducerConfig::default(), links.clock)
            .await
            .map_err(|e| format!("producer: {e}"))?;
        Ok(SinkWriter {
            producer,
            topic: topic.to_string(),
            pending: VecDeque::new(),
        })
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
        match &vertex.op {
            OperatorSpec::Source { .. } => {}
            OperatorSpec::Map { function: f } => ops.push(Op::Map(function(f)?)),
            OperatorSpec::Window { assigner } => {
                ops.push(Op::Window(Box::new(WindowBolt::new(*assigner)?)));
            }
            // There are no transactions: a sink writes at least once whatever its mode says.
            OperatorSpec::Sink { topic, .. } => out = Some(Out::Sink(writer(topic).await?)),
            OperatorSpec::SideOutput { .. }
            | OperatorSpec::RunningTotals
            | OperatorSpec::Upsert { .. } => {
                return Err(format!(
                    "{}: the Storm model runs sources, maps, tumbling and sliding windows and \
                     topic sinks",
                    vertex.uid
                ));
            }
        }
    }
    let out = match (out, deployment.output_port, stage.output) {
        (Some(sink), _, _) => sink,
        (None, Some(port), Some(partitioner)) => {
            let n = deployment.output_subpartitions as usize;
            let partition =
                ResultPartition::bind(links.net, &format!("0.0.0.0:{port}"), n, exchange.clone())
                    .await
                    .map_err(|e| format!("output partition: {e}"))?;
            Out::Exchange {
                partition,
                partitioner,
                next: 0,
            }
        }
        _ => return Err("a stage ends in a sink or feeds another stage".into()),
    };
    Ok((ops, out))
}

/// A source subtask's reader of acknowledgements: applies them as they come, never waiting on
/// the source.
async fn read_acks(mut gate: InputGate, acker: Arc<Mutex<Acker>>) {
    let failed = loop {
        match gate.next().await {
            Ok(Some(Delivery::Record { mut record, .. })) => match decode_pairs(&mut record) {
                Ok(pairs) => {
                    let mut a = acker.lock().unwrap_or_else(|e| e.into_inner());
                    for (root, x) in pairs {
                        a.apply(root, x);
                    }
                }
                Err(e) => break format!("acks: {e}"),
            },
            Ok(Some(Delivery::Event { .. })) => {}
            Ok(None) => break "acks: every acknowledging subtask ended".to_string(),
            Err(e) => break format!("acks: {e}"),
        }
    };
    acker.lock().unwrap_or_else(|e| e.into_inner()).failed = Some(failed);
}

/// A record whose tree is open.
struct Pending {
    partition: i32,
    offset: i64,
    row: Row,
    emitted_at: Instant,
}

struct Spout<'a> {
    id: TaskId,
    links: &'a mut TaskLinks,
    cluster: Arc<Cluster>,
    chain: Chain,
    source: BrokerSource,
    acker: Arc<Mutex<Acker>>,
    /// Open trees by root.
    pending: BTreeMap<u64, Pending>,
    /// Offsets of open trees, per partition: the least is where a commit must stop.
    by_partition: BTreeMap<i32, BTreeSet<i64>>,
    timeout: Duration,
    max_pending: usize,
    replayed: u64,
    watermark: i64,
    elements_in: u64,
    last_sample: Option<Instant>,
}

impl Spout<'_> {
    fn group(&self) -> String {
        self.links.config.graph.name.clone()
    }

    /// Resumes from the offsets the job's group committed.
    async fn resume(&mut self) -> TaskResult {
        let topic = self.source.topic().to_string();
        let partitions: Vec<(String, i32)> = self
            .source
            .positions()
            .iter()
            .map(|(p, _)| (topic.clone(), *p))
            .collect();
        let mut retry = BrokerRetry::default();
        let committed = loop {
            match committed_offsets(&self.cluster, &self.group(), &partitions, false).await {
                Ok(c) => break c,
                Err(e) => retry.failed(e).await?,
            }
        };
        let offsets = committed.into_iter().map(|((_, p), o)| (p, o)).collect();
        self.source.resume_from(&offsets)
    }

    async fn run(&mut self, commit_interval: Duration, positions: &Positions) -> TaskResult {
        let mut retry = BrokerRetry::default();
        let mut last_commit = Instant::now();
        let mut last_tick = Instant::now();
        loop {
            match self.links.commands.try_recv() {
                Ok(
                    TaskCommand::Trigger(_) | TaskCommand::RunBatch(..) | TaskCommand::Complete(_),
                )
                | Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
            }
            self.take_complete()?;
            if last_tick.elapsed() >= Duration::from_millis(TICK_MS) {
                self.chain.settle().await?;
                self.take_complete()?;
                self.replay_timed_out().await?;
                last_tick = Instant::now();
            }
            let drained = self.source.ended() && self.pending.is_empty();
            if drained || last_commit.elapsed() >= commit_interval {
                self.commit(drained).await?;
                last_commit = Instant::now();
                if drained {
                    self.sample(true);
                    while self.links.commands.recv().await.is_some() {}
                    return Ok(());
                }
            }
            if self.pending.len() >= self.max_pending || self.source.ended() {
                // Wait for trees to complete.
                tokio::time::sleep(Duration::from_millis(TICK_MS / 5)).await;
            } else {
                match self.source.poll_read().await {
                    Ok((read, watermark)) => {
                        retry.succeeded();
                        for r in read {
                            self.elements_in += 1;
                            self.by_partition
                                .entry(r.partition)
                                .or_default()
                                .insert(r.offset);
                            self.emit(r.partition, r.offset, r.row).await?;
                        }
                        if let Some(w) = watermark {
                            self.watermark = w;
                            self.chain.watermark(w).await?;
                        }
                    }
                    Err(e) => retry.failed(e).await?,
                }
                *positions.lock().unwrap_or_else(|e| e.into_inner()) = self.source.positions();
            }
            self.sample(false);
        }
    }

    /// Emits a record as the root of a new tree.
    async fn emit(&mut self, partition: i32, offset: i64, row: Row) -> TaskResult {
        let root = self.chain.ids.root(self.id.subtask);
        let edge = self.chain.ids.next();
        self.acker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .insert(root, edge);
        let pending = Pending {
            partition,
            offset,
            row: row.clone(),
            emitted_at: Instant::now(),
        };
        self.pending.insert(root, pending);
        let tuple = Tuple {
            row,
            anchors: vec![(root, edge)],
        };
        self.chain.process(0, tuple).await
    }

    /// Forgets the trees that completed.
    fn take_complete(&mut self) -> TaskResult {
        let complete = {
            let mut a = self.acker.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(why) = &a.failed {
                return Err(why.clone());
            }
            std::mem::take(&mut a.complete)
        };
        for root in complete {
            if let Some(p) = self.pending.remove(&root)
                && let Some(offsets) = self.by_partition.get_mut(&p.partition)
            {
                offsets.remove(&p.offset);
            }
        }
        Ok(())
    }

    /// Emits again, under new roots, the records whose trees stayed open too long.
    async fn replay_timed_out(&mut self) -> TaskResult {
        let now = Instant::now();
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.emitted_at + self.timeout)
            .map(|(root, _)| *root)
            .collect();
        for root in late {
            let p = self.pending.remove(&root).expect("listed above");
            self.acker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .open
                .remove(&root);
            self.replayed += 1;
            tracing::debug!(task = %self.id, partition = p.partition, offset = p.offset, "tree timed out; replaying");
            self.emit(p.partition, p.offset, p.row).await?;
        }
        Ok(())
    }

    /// Commits, per partition, the offset below which every tree completed.
    async fn commit(&mut self, drained: bool) -> TaskResult {
        let started = Instant::now();
        let topic = self.source.topic().to_string();
        let past_open_trees =
            self.links.config.mutation == Some(RuntimeMutation::CommitPastOpenTrees);
        let offsets: BTreeMap<(String, i32), i64> = self
            .source
            .commit_offsets()
            .into_iter()
            .map(|(p, at)| {
                let open = self.by_partition.get(&p).and_then(|o| o.first().copied());
                let open = open.filter(|_| !past_open_trees);
                ((topic.clone(), p), open.map_or(at, |o| o.min(at)))
            })
            .collect();
        match commit_offsets(&self.cluster, &self.group(), &offsets).await {
            Ok(()) => {}
            // The next commit covers this one's offsets too.
            Err(e) if e.is_retriable() && !drained => {
                tracing::debug!(task = %self.id, error = %e, "offset commit failed; retrying later");
                return Ok(());
            }
            Err(e) => return Err(format!("offset commit: {e}")),
        }
        let commit_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let report = ToJobManager::SubtaskCommitted {
            attempt: self.links.attempt,
            task: self.id,
            commit_ms,
            drained,
            late_dropped: self.chain.state().1,
        };
        self.links
            .to_job_manager
            .send(report)
            .await
            .map_err(|_| "the task manager is gone".to_string())
    }

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
        let (state_bytes, late_dropped) = self.chain.state();
        let s = TaskSample {
            task: Some(self.id),
            attempt: self.links.attempt,
            elements_in: self.elements_in,
            rows_out: self.chain.rows_out,
            watermark: self.watermark,
            state_bytes,
            late_dropped,
            replayed: self.replayed,
            ..TaskSample::default()
        };
        publish(self.links, s);
    }
}

/// Publishes a task's sample, keeping the lag its probe measured.
fn publish(links: &TaskLinks, mut s: TaskSample) {
    let mut shared = links.sample.lock().unwrap_or_else(|e| e.into_inner());
    s.lag_records = shared.lag_records;
    *shared = s;
}

/// A subtask downstream of the sources: tuples in, acknowledgements back.
async fn run_bolt(
    id: TaskId,
    links: &mut TaskLinks,
    mut chain: Chain,
    mut gate: InputGate,
) -> TaskResult {
    let mut marks = vec![i64::MIN; gate.channels()];
    let mut watermark = i64::MIN;
    let mut elements_in = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
    let mut last_sample: Option<Instant> = None;
    loop {
        let delivery = tokio::select! {
            biased;
            command = links.commands.recv() => match command {
                None => return Ok(()),
                Some(_) => continue,
            },
            _ = tick.tick() => {
                chain.settle().await?;
                if last_sample.is_none_or(|t| t.elapsed() >= Duration::from_millis(SAMPLE_MS)) {
                    last_sample = Some(Instant::now());
                    let (state_bytes, late_dropped) = chain.state();
                    let s = TaskSample {
                        task: Some(id),
                        attempt: links.attempt,
                        elements_in,
                        rows_out: chain.rows_out,
                        watermark,
                        state_bytes,
                        late_dropped,
                        ..TaskSample::default()
                    };
                    publish(links, s);
                }
                continue;
            }
            d = gate.next() => d.map_err(|e| format!("input: {e}"))?,
        };
        match delivery {
            None => return Err("input ended: upstream subtasks finished".into()),
            Some(Delivery::Record { channel, record }) => {
                elements_in += 1;
                match decode(record).map_err(|e| format!("input: {e}"))? {
                    Message::Tuple(t) => chain.process(0, t).await?,
                    Message::Watermark(w) => {
                        marks[channel] = marks[channel].max(w);
                        let least = *marks.iter().min().expect("a gate has channels");
                        if least > watermark {
                            watermark = least;
                            chain.watermark(least).await?;
                        }
                    }
                }
            }
            Some(Delivery::Event { .. }) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_completes_when_every_edge_is_acknowledged() {
        let mut ids = Ids::new(
            1,
            TaskId {
                stage: 0,
                subtask: 3,
            },
        );
        let root = ids.root(3);
        assert_eq!(root_owner(root), 3);
        let (e0, e1, e2) = (ids.next(), ids.next(), ids.next());
        let mut a = Acker::default();
        a.open.insert(root, e0);
        // A map took e0 and emitted e1 and e2; then each reached a sink.
        a.apply(root, e0 ^ e1 ^ e2);
        a.apply(root, e1);
        assert!(a.complete.is_empty(), "e2 is still open");
        a.apply(root, e2);
        assert_eq!(a.complete, vec![root]);
        // Acks of a tree that timed out are ignored.
        a.apply(root, e0);
        assert!(a.open.is_empty());
    }

    #[test]
    fn tuples_round_trip_and_a_lying_count_is_refused() {
        let t = Tuple {
            row: Row::text("k", "v", 7),
            anchors: vec![(1, 2), (3, 4)],
        };
        let Ok(Message::Tuple(back)) = decode(encode_tuple(&t)) else {
            panic!("a tuple decodes");
        };
        assert_eq!((back.row, back.anchors), (t.row, t.anchors));
        let mut lying = BytesMut::new();
        lying.put_u8(TAG_TUPLE);
        lying.put_u32(u32::MAX);
        assert!(decode(lying.freeze()).is_err());
        let mut pairs = encode_pairs(&[(5, 6)]);
        assert_eq!(decode_pairs(&mut pairs), Ok(vec![(5, 6)]));
    }
}

//! One subtask under the Storm model: records one at a time, each the root of a tree of
//! tuples that its source tracks until every operator has acknowledged its part.
//!
//! ```text
//!   source (spout) --tuples, anchored--> operators (bolts) --rows--> topic (no transaction)
//!        ^                                     |
//!        +----- acks: (root, XOR of edges) ----+
//! ```
//!
//! The subtask runs its stage's chain like any other model; [`crate::operator::tuples`] tracks
//! the trees inside it (windows hold their tuples until they fire). A sink acknowledges a tuple
//! once its write is delivered. The source keeps the XOR of everything reported per root: it
//! returns to zero exactly when every edge created has been acknowledged, so the tree is
//! complete.
//!
//! The source commits, per partition, the offset below which every record's tree completed.
//! A tree still open after `message_timeout_ms` is replayed from the source; a restart replays
//! everything past the committed offsets. Both can deliver a record twice: at least once.
//! Nothing is checkpointed: state lives in memory and a restart starts it afresh.
//! Acknowledgements travel over the exchange from every non-source subtask back to the source
//! subtasks, one subpartition each; a source reads them on a task of its own, which never
//! waits, so that they cannot be held up behind the data they acknowledge.

use super::chain::Chain;
use super::config::{ExecutionModel, RuntimeMutation};
use super::exchange::{Delivery, InputGate, ResultPartition};
use super::metrics::TaskSample;
use super::rpc::{TaskDeployment, ToJobManager};
use super::snapshot::TaskId;
use super::source::{Positions, Read, lag_probe};
use super::task::{
    BrokerRetry, GateInputs, TaskCommand, TaskLinks, TaskResult, effective_exchange, send_staged,
};
use crate::graph::{SinkTarget, VertexKind};
use crate::operator::DropReason;
use crate::operator::source::SourceReader;
use crate::operator::tuples::{
    Anchors, Ids, Tuples, decode_pairs, decode_tuple, encode_pairs, root_owner,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use weir_client::{
    Cluster, Delivery as Sent, Producer, ProducerConfig, Record, commit_offsets, committed_offsets,
};

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
    /// Delivers acknowledgements: (root, XOR).
    async fn ack(&mut self, pairs: Vec<(u64, u64)>) -> TaskResult {
        match self {
            AckOut::Local(acker) => {
                let mut a = acker.lock().unwrap_or_else(|e| e.into_inner());
                for (root, x) in pairs {
                    a.apply(root, x);
                }
                Ok(())
            }
            AckOut::Remote {
                buffered,
                per_record,
                ..
            } => {
                let per_record = *per_record;
                for (root, x) in pairs {
                    let owner = root_owner(root);
                    let to = buffered
                        .get_mut(owner)
                        .ok_or_else(|| format!("a root of source subtask {owner}, which is not"))?;
                    to.push((root, x));
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

/// A topic written without a transaction; a tuple is acknowledged once its write is delivered.
struct SinkWriter {
    producer: Producer,
    topic: String,
    pending: VecDeque<(Sent, Anchors)>,
}

/// A subtask's chain with its outputs under the Storm model.
struct Bolts {
    chain: Chain,
    tuples: Tuples,
    writers: Vec<SinkWriter>,
    output: Option<ResultPartition>,
    acks: AckOut,
    rows_out: u64,
}

impl Bolts {
    /// Sends what the chain staged: tuples over the network, sink rows to their topics.
    async fn drain(&mut self) -> TaskResult {
        send_staged(&self.chain, &mut self.output).await?;
        for (sink, writer) in self.chain.sinks.iter().zip(self.writers.iter_mut()) {
            let rows = std::mem::take(&mut *sink.rows.borrow_mut());
            for row in rows {
                self.rows_out += 1;
                let record = Record {
                    timestamp: Some(row.ts),
                    ..Record::new(writer.topic.clone(), row.key, row.value)
                };
                let sent = writer
                    .producer
                    .send(record)
                    .await
                    .map_err(|e| format!("sink: {e}"))?;
                writer.pending.push_back((sent, row.anchors));
                if writer.pending.len() >= SINK_PENDING_MAX {
                    settle(writer, &self.tuples).await?;
                }
            }
        }
        self.acks.ack(self.tuples.take_acks()).await
    }

    /// Waits for the sinks' writes, acknowledges their tuples, and sends buffered
    /// acknowledgements.
    async fn settle(&mut self) -> TaskResult {
        for writer in &mut self.writers {
            settle(writer, &self.tuples).await?;
        }
        self.acks.ack(self.tuples.take_acks()).await?;
        self.acks.flush().await
    }

    fn sample(&self, id: TaskId, attempt: u64) -> TaskSample {
        TaskSample {
            task: Some(id),
            attempt,
            rows_out: self.rows_out + self.chain.sent.get(),
            state_bytes: self.chain.state_bytes(),
            drops: self.chain.drops.snapshot().into(),
            ..TaskSample::default()
        }
    }
}

/// Waits for every write `writer` sent and acknowledges their tuples.
async fn settle(writer: &mut SinkWriter, tuples: &Tuples) -> TaskResult {
    if writer.pending.is_empty() {
        return Ok(());
    }
    writer.producer.flush().await;
    while let Some((sent, anchors)) = writer.pending.pop_front() {
        sent.wait().await.map_err(|e| format!("sink: {e}"))?;
        tuples.acknowledge(&anchors);
    }
    Ok(())
}

/// Runs a subtask under the Storm model until it fails or is cancelled.
pub(crate) async fn run(
    deployment: TaskDeployment,
    links: &mut TaskLinks,
    cluster: Option<Arc<Cluster>>,
) -> TaskResult {
    let ExecutionModel::Storm {
        message_timeout_ms,
        max_spout_pending,
        commit_interval_ms,
    } = links.config.model
    else {
        unreachable!("only the Storm model runs here");
    };
    let cluster = cluster.ok_or("the Storm model needs brokers")?;
    let config = Arc::clone(&links.config);
    let job = Rc::clone(&links.job);
    let topology = job.topology();
    let id = deployment.task;
    let stage = &job.stages()[id.stage as usize];
    let mut sink_topics = Vec::new();
    for v in &stage.vertices {
        let vertex = &topology.vertices[*v as usize];
        match &vertex.kind {
            // There are no transactions: a sink writes at least once whatever it asks.
            VertexKind::Sink(SinkTarget::Topic { topic, .. }) => sink_topics.push(topic.clone()),
            VertexKind::Sink(target) => {
                return Err(format!(
                    "{}: under the Storm model a sink writes a topic, not {target:?}",
                    vertex.uid
                ));
            }
            VertexKind::Source { topic: None } => {
                return Err(format!(
                    "{}: the Storm model reads topics, and this source holds its values",
                    vertex.uid
                ));
            }
            _ => {}
        }
    }
    let exchange = effective_exchange(&config);
    let (source_offsets, source_subtasks) = topology.source_offsets(job.stages());
    let index = source_offsets[id.stage as usize].map(|at| at + id.subtask);
    let tuples = Tuples::new(
        Ids::new(links.attempt, id.stage, id.subtask),
        index.unwrap_or(0),
    );
    let mutation = config.mutation.and_then(RuntimeMutation::operator);
    let mut chain = Chain::build(
        &job,
        id.stage as usize,
        id.subtask,
        None,
        (links.clock, mutation, Some(tuples.clone())),
    )?;
    let acker = Arc::new(Mutex::new(Acker::default()));
    let acks = match deployment.ack_port {
        None => AckOut::Local(Arc::clone(&acker)),
        Some(port) => {
            let n = source_subtasks as usize;
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
    let mut writers = Vec::new();
    for topic in sink_topics {
        let producer = Producer::new(Arc::clone(&cluster), ProducerConfig::default(), links.clock)
            .await
            .map_err(|e| format!("producer: {e}"))?;
        writers.push(SinkWriter {
            producer,
            topic,
            pending: VecDeque::new(),
        });
    }
    let (_, subpartitions) = topology.output_offsets(stage);
    let output = match deployment.output_port {
        Some(port) if subpartitions > 0 => Some(
            ResultPartition::bind(
                links.net,
                &format!("0.0.0.0:{port}"),
                subpartitions as usize,
                exchange.clone(),
            )
            .await
            .map_err(|e| format!("output partition: {e}"))?,
        ),
        _ => None,
    };
    let source = chain.source.take();
    let bolts = Bolts {
        chain,
        tuples,
        writers,
        output,
        acks,
        rows_out: 0,
    };
    match source {
        Some((_, mut reader)) => {
            let mut retry = BrokerRetry::default();
            while let Err(e) = reader.open(Some(&cluster)).await {
                retry.failed(e).await?;
            }
            let gate = InputGate::connect(links.net, &deployment.ack_inputs, exchange)
                .await
                .map_err(|e| format!("ack gate: {e}"))?;
            let mut readers = JoinSet::new();
            readers.spawn_local(read_acks(gate, Arc::clone(&acker)));
            let topic = reader
                .topic()
                .expect("a Storm source reads a topic")
                .to_string();
            let mut spout = Spout {
                id,
                links,
                cluster: Arc::clone(&cluster),
                bolts,
                reader,
                acker,
                pending: BTreeMap::new(),
                by_partition: BTreeMap::new(),
                timeout: Duration::from_millis(message_timeout_ms),
                max_pending: max_spout_pending as usize,
                replayed: 0,
                elements_in: 0,
                last_sample: None,
            };
            spout.resume().await?;
            let positions: Positions = Arc::new(Mutex::new(spout.reader.positions()));
            readers.spawn_local(lag_probe(
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
            let channels: Vec<_> = deployment.inputs.iter().map(|c| c.source.clone()).collect();
            let gate = InputGate::connect(links.net, &channels, exchange)
                .await
                .map_err(|e| format!("input gate: {e}"))?;
            let edges: Vec<u32> = deployment.inputs.iter().map(|c| c.edge).collect();
            run_bolt(id, links, bolts, (gate, &edges)).await
        }
    }
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
    read: Read,
    emitted_at: Instant,
}

struct Spout<'a> {
    id: TaskId,
    links: &'a mut TaskLinks,
    cluster: Arc<Cluster>,
    bolts: Bolts,
    reader: Box<dyn SourceReader>,
    acker: Arc<Mutex<Acker>>,
    /// Open trees by root.
    pending: BTreeMap<u64, Pending>,
    /// Offsets of open trees, per partition: the least is where a commit must stop.
    by_partition: BTreeMap<i32, BTreeSet<i64>>,
    timeout: Duration,
    max_pending: usize,
    replayed: u64,
    elements_in: u64,
    last_sample: Option<Instant>,
}

impl Spout<'_> {
    fn group(&self) -> String {
        self.links.config.topology.name.clone()
    }

    fn topic(&self) -> String {
        self.reader.topic().unwrap_or_default().to_string()
    }

    /// Resumes from the offsets the job's group committed.
    async fn resume(&mut self) -> TaskResult {
        let topic = self.topic();
        let partitions: Vec<(String, i32)> = self
            .reader
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
        self.reader.resume_from(&offsets)
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
                self.bolts.settle().await?;
                self.take_complete()?;
                self.replay_timed_out().await?;
                last_tick = Instant::now();
            }
            let drained = self.reader.ended() && self.pending.is_empty();
            if drained || last_commit.elapsed() >= commit_interval {
                self.commit(drained).await?;
                last_commit = Instant::now();
                if drained {
                    self.sample(true);
                    while self.links.commands.recv().await.is_some() {}
                    return Ok(());
                }
            }
            if self.pending.len() >= self.max_pending || self.reader.ended() {
                // Wait for trees to complete.
                tokio::time::sleep(Duration::from_millis(TICK_MS / 5)).await;
            } else {
                match self.reader.poll().await {
                    Ok(n) => {
                        retry.succeeded();
                        self.elements_in += n as u64;
                        self.opened();
                        self.bolts.drain().await?;
                    }
                    Err(e) => retry.failed(e).await?,
                }
                *positions.lock().unwrap_or_else(|e| e.into_inner()) = self.reader.positions();
            }
            self.sample(false);
        }
    }

    /// Registers the trees the last read opened, before any acknowledgement of them is
    /// applied.
    fn opened(&mut self) {
        let now = Instant::now();
        let mut a = self.acker.lock().unwrap_or_else(|e| e.into_inner());
        for r in self.reader.take_rooted() {
            let (root, edge) = r.root;
            a.open.insert(root, edge);
            self.by_partition
                .entry(r.read.partition)
                .or_default()
                .insert(r.read.offset);
            self.pending.insert(
                root,
                Pending {
                    read: r.read,
                    emitted_at: now,
                },
            );
        }
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
                && let Some(offsets) = self.by_partition.get_mut(&p.read.partition)
            {
                offsets.remove(&p.read.offset);
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
            if let Some(offsets) = self.by_partition.get_mut(&p.read.partition) {
                offsets.remove(&p.read.offset);
            }
            self.acker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .open
                .remove(&root);
            self.replayed += 1;
            tracing::debug!(task = %self.id, partition = p.read.partition, offset = p.read.offset, "tree timed out; replaying");
            self.reader.replay(p.read)?;
            self.opened();
            self.bolts.drain().await?;
        }
        Ok(())
    }

    /// Commits, per partition, the offset below which every tree completed.
    async fn commit(&mut self, drained: bool) -> TaskResult {
        let started = Instant::now();
        let topic = self.topic();
        let past_open_trees =
            self.links.config.mutation == Some(RuntimeMutation::CommitPastOpenTrees);
        let offsets: BTreeMap<(String, i32), i64> = self
            .reader
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
        let late = self.bolts.chain.drops.snapshot();
        let report = ToJobManager::SubtaskCommitted {
            attempt: self.links.attempt,
            task: self.id,
            commit_ms,
            drained,
            late_dropped: late.get(&DropReason::Late).copied().unwrap_or(0),
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
        let s = TaskSample {
            elements_in: self.elements_in,
            replayed: self.replayed,
            ..self.bolts.sample(self.id, self.links.attempt)
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
    mut bolts: Bolts,
    (mut gate, edges): (InputGate, &[u32]),
) -> TaskResult {
    let mutation = links.config.mutation == Some(RuntimeMutation::MaxWatermark);
    let mut inputs = GateInputs::new(&bolts.chain, edges, mutation);
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
                bolts.settle().await?;
                if last_sample.is_none_or(|t| t.elapsed() >= Duration::from_millis(SAMPLE_MS)) {
                    last_sample = Some(Instant::now());
                    let s = TaskSample {
                        elements_in,
                        watermark: inputs.watermark(),
                        ..bolts.sample(id, links.attempt)
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
                let (anchors, element) = decode_tuple(record).map_err(|e| format!("input: {e}"))?;
                let writer = &bolts.chain.inputs[edges[channel] as usize].writer;
                if let Some(a) = &anchors {
                    bolts.tuples.begin(a.clone());
                }
                let mark = writer.deliver(element).map_err(|e| format!("input: {e}"));
                if anchors.is_some() {
                    bolts.tuples.end();
                }
                if let Some(told) = inputs.take(channel, mark?) {
                    writer.mark(told);
                }
                bolts.drain().await?;
            }
            Some(Delivery::Event { .. }) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acker_completes_a_tree_once_and_ignores_replayed_roots() {
        let mut a = Acker::default();
        a.open.insert(7, 0b101);
        a.apply(7, 0b100);
        assert!(a.complete.is_empty());
        a.apply(7, 0b001);
        assert_eq!(a.complete, vec![7]);
        a.apply(7, 0b001);
        assert!(a.open.is_empty(), "a completed tree stays closed");
    }
}

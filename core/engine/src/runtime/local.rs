//! The runtime's local mode: a whole job in one task, every operator at parallelism 1, its
//! vertices wired port to port with no network and no job manager. The operators are the same
//! ones the distributed runtime runs; what local mode leaves out is what lies between them
//! (exchange, checkpoints, restarts). Tests of a job's logic and one-core benches use it.
//!
//! Sources are polled in turn until every one has ended: collections, and topics when the run
//! is given a broker cluster. Collecting sinks commit what each step staged; other sinks need
//! the distributed runtime.

use crate::api::{Job, VertexCode};
use crate::graph::{SinkTarget, VertexKind};
use crate::operator::sink::{CollectStore, SinkRows};
use crate::operator::source::SourceReader;
use crate::operator::{AnyPort, Build, DropCounters, Failure, OperatorMutation, Outputs, Stateful};
use crate::runtime::metrics::DropCounts;
use crate::runtime::table::{TableRow, TableStore};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use weir_client::{ClientError, Cluster};
use weir_seams::clock::Clock;

/// How long a step sleeps when no source had anything.
const IDLE_SLEEP_MS: u64 = 10;
/// How long a step waits after a broker error that retrying can fix.
const RETRY_MS: u64 = 50;

/// Figures of a local run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalReport {
    /// Records the sources read.
    pub records_in: u64,
    /// Rows the sinks committed.
    pub rows_out: u64,
    /// Records dropped, by reason.
    pub drops: DropCounts,
    /// Bytes of keyed state held at the end.
    pub state_bytes: u64,
}

/// A job running in local mode.
pub struct LocalRun {
    name: String,
    cluster: Option<Arc<Cluster>>,
    opened: bool,
    sources: Vec<Box<dyn SourceReader>>,
    stateful: Vec<Stateful>,
    sinks: Vec<(String, SinkRows, Arc<CollectStore>)>,
    failure: Failure,
    drops: DropCounters,
    clock: Clock,
    steps: u64,
    report: LocalReport,
}

impl Job {
    /// Builds the job in local mode, reading processing time from `clock`, with the defect
    /// `mutation` built in if one is given.
    pub fn local(
        &self,
        clock: Clock,
        mutation: Option<OperatorMutation>,
    ) -> Result<LocalRun, String> {
        self.local_on(None, clock, mutation)
    }

    /// [`Job::local`], with topic sources reading from `cluster`.
    pub fn local_on(
        &self,
        cluster: Option<Arc<Cluster>>,
        clock: Clock,
        mutation: Option<OperatorMutation>,
    ) -> Result<LocalRun, String> {
        let topology = self.topology();
        let failure = Failure::default();
        let drops = DropCounters::default();
        let mut stateful = Vec::new();
        let mut built: BTreeMap<u32, Outputs> = BTreeMap::new();
        let mut sources = Vec::new();
        let mut sinks = Vec::new();
        for (i, info) in topology.vertices.iter().enumerate() {
            let v = i as u32;
            let mut inputs: Vec<AnyPort> = Vec::new();
            for input in 0..info.inputs {
                let feeding: Vec<(u32, AnyPort)> = topology
                    .edges
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.to == v && e.input == input)
                    .map(|(e, edge)| {
                        let from = built.get(&edge.from).expect("edges go forward");
                        (
                            e as u32,
                            self.codec(e as u32).upstream(from, edge.side.as_deref()),
                        )
                    })
                    .collect();
                let port = match feeding.len() {
                    1 => feeding.into_iter().next().expect("one feed").1,
                    _ => {
                        let e = feeding[0].0;
                        let ports: Vec<AnyPort> = feeding.into_iter().map(|(_, p)| p).collect();
                        let take_max = mutation == Some(OperatorMutation::MaxWatermark);
                        self.codec(e).merge(&ports, take_max)
                    }
                };
                inputs.push(port);
            }
            let mut b = Build {
                uid: &info.uid,
                subtask: 0,
                parallelism: 1,
                clock,
                mutation,
                failure: failure.clone(),
                drops: drops.clone(),
                restored: None,
                stateful: &mut stateful,
                tuples: None,
            };
            match self.code(v) {
                VertexCode::Source(f) => {
                    let (reader, outputs) = f.create(&mut b)?;
                    if reader.topic().is_some() && cluster.is_none() {
                        return Err(format!(
                            "{}: a topic source in local mode needs a broker cluster",
                            info.uid
                        ));
                    }
                    sources.push(reader);
                    built.insert(v, outputs);
                }
                VertexCode::Operator(f) => {
                    built.insert(v, f.create(&mut b, inputs)?);
                }
                VertexCode::Sink(f) => {
                    let input = inputs.into_iter().next().expect("a sink has one input");
                    let rows = f.create(&mut b, input);
                    let store = match (&info.kind, f.collector()) {
                        (VertexKind::Sink(SinkTarget::Collect), Some(store)) => store,
                        _ => {
                            return Err(format!(
                                "{}: local mode writes collections; topics and tables need the \
                                 distributed runtime",
                                info.uid
                            ));
                        }
                    };
                    sinks.push((info.uid.clone(), rows, store));
                }
            }
        }
        Ok(LocalRun {
            name: topology.name.clone(),
            cluster,
            opened: false,
            sources,
            stateful,
            sinks,
            failure,
            drops,
            clock,
            steps: 0,
            report: LocalReport::default(),
        })
    }
}

/// Waits out a broker error that retrying can fix; local mode has no restart to fall back on,
/// so it retries for as long as its caller keeps stepping. Any other error fails the run.
async fn retry(e: ClientError) -> Result<(), String> {
    if !e.is_retriable() {
        return Err(e.to_string());
    }
    tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
    Ok(())
}

impl LocalRun {
    /// Polls every source that has not ended once, fires due processing-time timers and
    /// commits what the sinks staged. Returns whether every source has ended.
    pub async fn step(&mut self) -> Result<bool, String> {
        if !self.opened {
            for s in &mut self.sources {
                if let Err(e) = s.open(self.cluster.as_ref()).await {
                    return retry(e).await.map(|()| false);
                }
            }
            self.opened = true;
        }
        let mut read = 0;
        for s in self.sources.iter_mut().filter(|s| !s.ended()) {
            match s.poll().await {
                Ok(n) => read += n,
                Err(e) => retry(e).await?,
            }
        }
        if let Some(why) = self.failure.take() {
            return Err(why);
        }
        self.report.records_in += read as u64;
        let now = self.clock.now_ms();
        for op in &self.stateful {
            let due = op
                .borrow()
                .next_processing_timer()
                .is_some_and(|t| t <= now);
            if due {
                op.borrow_mut().on_processing_time(now);
            }
        }
        self.steps += 1;
        for (uid, rows, store) in &self.sinks {
            let rows: Vec<TableRow> = std::mem::take(&mut *rows.borrow_mut())
                .into_iter()
                .map(|r| TableRow {
                    key: String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                    value: String::from_utf8_lossy(&r.value).into_owned(),
                    ts: r.ts,
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            self.report.rows_out += rows.len() as u64;
            let writer = format!("{}-{uid}-local", self.name);
            store
                .commit(&writer, self.steps, &rows)
                .await
                .map_err(|e| format!("{uid}: {e}"))?;
        }
        if let Some(why) = self.failure.take() {
            return Err(why);
        }
        let ended = self.sources.iter().all(|s| s.ended());
        if read == 0 && !ended {
            tokio::time::sleep(Duration::from_millis(IDLE_SLEEP_MS)).await;
        }
        Ok(ended)
    }

    /// Runs until every source has ended and its last records are committed (the step that
    /// finds the sources ended has put their end-of-time watermark through and committed what
    /// it fired).
    pub async fn run(&mut self) -> Result<LocalReport, String> {
        while !self.step().await? {}
        Ok(self.report())
    }

    /// Figures so far.
    pub fn report(&self) -> LocalReport {
        LocalReport {
            drops: self.drops.snapshot().into(),
            state_bytes: self.stateful.iter().map(|o| o.borrow().state_bytes()).sum(),
            ..self.report
        }
    }
}

//! The stream environment: builds a job's operator graph and runs it.
//!
//! A job runs on one task: the executor polls each source in turn and pushes what it read
//! through the graph synchronously, so every record and watermark reaches every operator
//! before the next poll. Sinks flush between steps, which makes backpressure a matter of the
//! next poll waiting for the flush. Processing-time timers fire between steps.

use super::JobError;
use super::element::MAX_WATERMARK;
use super::mutation::Mutation;
use super::operator::StatefulOperator;
use super::port::PortRef;
use super::sink::Sink;
use super::source::{BoxFuture, Source, SourcePoll};
use super::state::{HeapBackend, KeyedStore};
use super::watermark::{SplitWatermarks, WatermarkStrategy};
use super::window::WindowMetrics;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use weir_seams::clock::Clock;

/// How long the executor sleeps when no source had anything, in milliseconds.
const IDLE_SLEEP_MS: u64 = 10;

/// A saved job: every source's position and every stateful operator's state, by uid.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobSnapshot {
    /// Source positions.
    pub sources: BTreeMap<String, Vec<u8>>,
    /// Operator state.
    pub operators: BTreeMap<String, Vec<u8>>,
}

/// Figures from a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobReport {
    /// Records read by sources.
    pub records_in: u64,
    /// Window operator counters, summed.
    pub windows: WindowMetrics,
    /// Bytes of keyed state held at the end.
    pub state_bytes: u64,
}

trait SourceDriver {
    fn uid(&self) -> &str;
    fn done(&self) -> bool;
    fn step(&mut self) -> BoxFuture<'_, Result<bool, JobError>>;
    fn snapshot(&self) -> Vec<u8>;
    fn restore(&mut self, bytes: &[u8]) -> Result<(), JobError>;
}

struct SourceNode<T> {
    uid: String,
    source: Box<dyn Source<T>>,
    strategy: WatermarkStrategy<T>,
    marks: SplitWatermarks,
    port: PortRef<T>,
    clock: Clock,
    records: Rc<Cell<u64>>,
    done: bool,
}

impl<T: Clone + 'static> SourceNode<T> {
    async fn step_once(&mut self) -> Result<bool, JobError> {
        let polled = self
            .source
            .poll()
            .await
            .map_err(|e| JobError::Source(e.to_string()))?;
        let now = self.clock.now_ms();
        let progressed = match polled {
            SourcePoll::Records(batch) => {
                self.records.set(self.records.get() + batch.len() as u64);
                for r in batch {
                    let ts = self.strategy.timestamp(&r.value, r.timestamp);
                    self.marks.on_record(r.split, ts, now);
                    self.port.record(r.value, ts);
                    if let Some(w) = self.marks.current() {
                        self.port.emit(super::element::Element::Watermark(w));
                    }
                }
                true
            }
            SourcePoll::Idle => false,
            SourcePoll::End => {
                self.done = true;
                self.port
                    .emit(super::element::Element::Watermark(MAX_WATERMARK));
                true
            }
        };
        self.marks.check_idle(now);
        if let Some(w) = self.marks.current() {
            self.port.emit(super::element::Element::Watermark(w));
        }
        Ok(progressed)
    }
}

impl<T: Clone + 'static> SourceDriver for SourceNode<T> {
    fn uid(&self) -> &str {
        &self.uid
    }

    fn done(&self) -> bool {
        self.done
    }

    fn step(&mut self) -> BoxFuture<'_, Result<bool, JobError>> {
        Box::pin(self.step_once())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.source.position()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), JobError> {
        self.source
            .restore_position(bytes)
            .map_err(|e| JobError::Source(e.to_string()))
    }
}

trait SinkDriver {
    fn flush(&mut self) -> BoxFuture<'_, Result<(), JobError>>;
    fn finish(&mut self) -> BoxFuture<'_, Result<(), JobError>>;
}

/// Records bound for a sink, buffered during a step.
pub(crate) type SinkBuffer<T> = Rc<RefCell<Vec<(T, Option<i64>)>>>;

struct SinkNode<T> {
    sink: Box<dyn Sink<T>>,
    buffer: SinkBuffer<T>,
}

impl<T> SinkNode<T> {
    fn hand_over(&mut self) {
        let items = std::mem::take(&mut *self.buffer.borrow_mut());
        for (value, ts) in items {
            self.sink.write(value, ts);
        }
    }
}

impl<T> SinkDriver for SinkNode<T> {
    fn flush(&mut self) -> BoxFuture<'_, Result<(), JobError>> {
        self.hand_over();
        Box::pin(async move {
            self.sink
                .flush()
                .await
                .map_err(|e| JobError::Sink(e.to_string()))
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(), JobError>> {
        self.hand_over();
        Box::pin(async move {
            self.sink
                .finish()
                .await
                .map_err(|e| JobError::Sink(e.to_string()))
        })
    }
}

/// Settings of an environment.
#[derive(Clone, Debug)]
pub struct EnvConfig {
    /// Processing time (timers, state TTL, idleness).
    pub clock: Clock,
    /// A deliberate defect to build in; `None` outside mutant runs.
    pub mutation: Option<Mutation>,
}

pub(crate) struct EnvInner {
    pub config: EnvConfig,
    sources: RefCell<Vec<Box<dyn SourceDriver>>>,
    sinks: RefCell<Vec<Box<dyn SinkDriver>>>,
    pub operators: RefCell<Vec<Rc<RefCell<dyn StatefulOperator>>>>,
    pub error: Rc<RefCell<Option<JobError>>>,
    uids: RefCell<BTreeSet<String>>,
    next_id: Cell<usize>,
    records_in: Rc<Cell<u64>>,
}

/// Builds and runs one job. Cloning gives another handle on the same job.
#[derive(Clone)]
pub struct StreamEnv(pub(crate) Rc<EnvInner>);

impl StreamEnv {
    /// A new, empty job.
    pub fn new(config: EnvConfig) -> Self {
        Self(Rc::new(EnvInner {
            config,
            sources: RefCell::new(Vec::new()),
            sinks: RefCell::new(Vec::new()),
            operators: RefCell::new(Vec::new()),
            error: Rc::new(RefCell::new(None)),
            uids: RefCell::new(BTreeSet::new()),
            next_id: Cell::new(0),
            records_in: Rc::new(Cell::new(0)),
        }))
    }

    /// A job with processing time from `clock` and no defects.
    pub fn with_clock(clock: Clock) -> Self {
        Self::new(EnvConfig {
            clock,
            mutation: None,
        })
    }

    pub(crate) fn mutation(&self) -> Option<Mutation> {
        self.0.config.mutation
    }

    pub(crate) fn clock(&self) -> Clock {
        self.0.config.clock
    }

    /// A uid: `requested` if given, else `kind-N` in creation order. Uids must be unique.
    pub(crate) fn uid(&self, kind: &str, requested: Option<String>) -> String {
        let uid = requested.unwrap_or_else(|| {
            let n = self.0.next_id.get();
            self.0.next_id.set(n + 1);
            format!("{kind}-{n}")
        });
        assert!(
            self.0.uids.borrow_mut().insert(uid.clone()),
            "operator uid {uid:?} is used twice"
        );
        uid
    }

    pub(crate) fn new_store(&self) -> KeyedStore {
        KeyedStore::new(Box::new(HeapBackend::default()), self.clock())
    }

    pub(crate) fn register(&self, op: Rc<RefCell<dyn StatefulOperator>>) {
        self.0.operators.borrow_mut().push(op);
    }

    pub(crate) fn fail(&self, e: JobError) {
        let mut slot = self.0.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    pub(crate) fn failed(&self) -> bool {
        self.0.error.borrow().is_some()
    }

    fn check(&self) -> Result<(), JobError> {
        match self.0.error.borrow().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Adds a source; its records get event times and watermarks from `strategy`.
    pub fn from_source<T: Clone + 'static>(
        &self,
        source: impl Source<T> + 'static,
        strategy: WatermarkStrategy<T>,
    ) -> super::DataStream<T> {
        let port = PortRef::new();
        let uid = self.uid("source", None);
        let take_max = self.mutation() == Some(Mutation::MaxWatermark);
        let marks =
            SplitWatermarks::new(&strategy, &source.splits(), self.clock().now_ms(), take_max);
        self.0.sources.borrow_mut().push(Box::new(SourceNode {
            uid,
            source: Box::new(source),
            strategy,
            marks,
            port: port.clone(),
            clock: self.clock(),
            records: Rc::clone(&self.0.records_in),
            done: false,
        }));
        super::DataStream::from_port(self.clone(), port)
    }

    /// Adds a sink; returns the buffer its input writes into.
    pub(crate) fn add_sink<T: 'static>(&self, sink: Box<dyn Sink<T>>) -> SinkBuffer<T> {
        let buffer: SinkBuffer<T> = Rc::new(RefCell::new(Vec::new()));
        self.0.sinks.borrow_mut().push(Box::new(SinkNode {
            sink,
            buffer: Rc::clone(&buffer),
        }));
        buffer
    }

    /// Runs one step: polls every unfinished source once, fires due processing-time timers and
    /// flushes the sinks. Returns whether every source has finished.
    pub async fn step(&self) -> Result<bool, JobError> {
        let mut sources = std::mem::take(&mut *self.0.sources.borrow_mut());
        let mut progressed = false;
        let mut result = Ok(());
        for s in sources.iter_mut().filter(|s| !s.done()) {
            match s.step().await {
                Ok(p) => progressed |= p,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            if self.failed() {
                break;
            }
        }
        let all_done = sources.iter().all(|s| s.done());
        *self.0.sources.borrow_mut() = sources;
        result?;
        self.check()?;
        let next_timer = self.fire_processing_timers()?;
        let mut sinks = std::mem::take(&mut *self.0.sinks.borrow_mut());
        let mut flushed = Ok(());
        for s in sinks.iter_mut() {
            flushed = s.flush().await;
            if flushed.is_err() {
                break;
            }
        }
        *self.0.sinks.borrow_mut() = sinks;
        flushed?;
        if !progressed && !all_done {
            let now = self.clock().now_ms();
            let wait = next_timer.map_or(IDLE_SLEEP_MS, |t| {
                u64::try_from(t - now).unwrap_or(0).clamp(1, IDLE_SLEEP_MS)
            });
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        Ok(all_done)
    }

    fn fire_processing_timers(&self) -> Result<Option<i64>, JobError> {
        let now = self.clock().now_ms();
        let ops: Vec<_> = self.0.operators.borrow().clone();
        let mut next = None;
        for op in ops {
            let mut op = op.borrow_mut();
            if op.next_processing_timer().is_some_and(|t| t <= now) {
                op.on_processing_time(now)?;
            }
            if let Some(t) = op.next_processing_timer() {
                next = Some(next.map_or(t, |n: i64| n.min(t)));
            }
        }
        self.check()?;
        Ok(next)
    }

    /// Waits until every sink has made its output durable.
    pub async fn finish(&self) -> Result<JobReport, JobError> {
        let mut sinks = std::mem::take(&mut *self.0.sinks.borrow_mut());
        let mut finished = Ok(());
        for s in sinks.iter_mut() {
            finished = s.finish().await;
            if finished.is_err() {
                break;
            }
        }
        *self.0.sinks.borrow_mut() = sinks;
        finished?;
        Ok(self.report())
    }

    /// Runs the job until every source has finished, then finishes the sinks.
    pub async fn execute(&self) -> Result<JobReport, JobError> {
        while !self.step().await? {}
        self.finish().await
    }

    /// Figures so far.
    pub fn report(&self) -> JobReport {
        let mut r = JobReport {
            records_in: self.0.records_in.get(),
            ..Default::default()
        };
        for op in self.0.operators.borrow().iter() {
            let op = op.borrow();
            r.state_bytes += op.state_bytes();
            if let Some(m) = op.window_metrics() {
                r.windows.records += m.records;
                r.windows.firings += m.firings;
                r.windows.late_firings += m.late_firings;
                r.windows.late_to_side_output += m.late_to_side_output;
                r.windows.late_dropped += m.late_dropped;
            }
        }
        r
    }

    /// Saves every source position and every operator's state.
    pub fn snapshot(&self) -> Result<JobSnapshot, JobError> {
        let mut snap = JobSnapshot::default();
        for s in self.0.sources.borrow().iter() {
            snap.sources.insert(s.uid().to_string(), s.snapshot());
        }
        for op in self.0.operators.borrow().iter() {
            let op = op.borrow();
            snap.operators.insert(op.uid().to_string(), op.snapshot()?);
        }
        Ok(snap)
    }

    /// Restores a job built the same way from `snap`. Every saved uid must exist in this job:
    /// state that would be left behind is an error, not a silent loss.
    pub fn restore(&self, snap: &JobSnapshot) -> Result<(), JobError> {
        let mut sources = self.0.sources.borrow_mut();
        for (uid, bytes) in &snap.sources {
            let s = sources
                .iter_mut()
                .find(|s| s.uid() == uid)
                .ok_or_else(|| JobError::Restore(format!("no source {uid:?} in this job")))?;
            s.restore(bytes)?;
        }
        let ops = self.0.operators.borrow();
        for (uid, bytes) in &snap.operators {
            let op = ops
                .iter()
                .find(|o| o.borrow().uid() == uid)
                .ok_or_else(|| JobError::Restore(format!("no operator {uid:?} in this job")))?;
            op.borrow_mut().restore(bytes)?;
        }
        Ok(())
    }
}

//! One subtask's operators, instantiated from the job's code and wired together.
//!
//! The vertices of a stage are built head first, each subscribing to the output port of the
//! vertex chained before it; the head takes fresh ports that the subtask's network inputs
//! feed. Every edge leaving the stage gets a network writer that stages encoded elements for
//! the subtask's result partition, whose subpartitions are those of each output edge in turn.

use crate::api::{Job, VertexCode};
use crate::graph::{SinkTarget, Stage};
use crate::operator::edge::Route;
use crate::operator::sink::{CollectStore, SinkRows};
use crate::operator::source::SourceReader;
use crate::operator::tuples::Tuples;
use crate::operator::{
    AnyPort, Build, DropCounters, Failure, InputWriter, OperatorMutation, Outputs, Staged, Stateful,
};
use crate::runtime::snapshot::TaskSnapshot;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use weir_seams::clock::Clock;

/// A sink of the chain: where it writes and the rows it staged.
pub(crate) struct ChainSink {
    pub uid: String,
    pub target: SinkTarget,
    pub rows: SinkRows,
    pub collector: Option<Arc<CollectStore>>,
}

/// One network input edge of the chain's head.
pub(crate) struct EdgeInput {
    /// The head's input it feeds.
    pub input: u32,
    /// What puts its elements on that input's port.
    pub writer: Box<dyn InputWriter>,
}

/// One subtask's operators, wired.
pub(crate) struct Chain {
    /// The source, if the stage's head is one.
    pub source: Option<(String, Box<dyn SourceReader>)>,
    /// The head's network inputs, in the stage's input-edge order.
    pub inputs: Vec<EdgeInput>,
    /// How many inputs the head has (0 for a source).
    pub head_inputs: u32,
    /// Operators with state or timers, in chain order.
    pub stateful: Vec<Stateful>,
    /// Sinks, in chain order.
    pub sinks: Vec<ChainSink>,
    /// Elements bound for the result partition.
    pub staged: Staged,
    /// The first failure of any operator.
    pub failure: Failure,
    /// Records dropped, by reason.
    pub drops: DropCounters,
    /// Records sent over the network.
    pub sent: Rc<Cell<u64>>,
}

/// Where each vertex's outputs are, as the chain is built.
type Built = BTreeMap<u32, Outputs>;

impl Chain {
    /// Builds subtask `subtask` of stage `stage_index` of `job`, restoring `restored`.
    pub fn build(
        job: &Job,
        stage_index: usize,
        subtask: u32,
        restored: Option<&TaskSnapshot>,
        (clock, mutation, tuples): (Clock, Option<OperatorMutation>, Option<Tuples>),
    ) -> Result<Chain, String> {
        let topology = job.topology();
        let stage: &Stage = &job.stages()[stage_index];
        let (offsets, _) = topology.output_offsets(stage);
        let mut chain = Chain {
            source: None,
            inputs: Vec::new(),
            head_inputs: 0,
            stateful: Vec::new(),
            sinks: Vec::new(),
            staged: Rc::new(RefCell::new(Vec::new())),
            failure: Failure::default(),
            drops: DropCounters::default(),
            sent: Rc::new(Cell::new(0)),
        };
        if let Some(s) = restored {
            chain.drops.restore(s.drops.clone());
            for uid in s.operators.keys() {
                if !stage
                    .vertices
                    .iter()
                    .any(|v| topology.vertices[*v as usize].uid == *uid)
                {
                    return Err(format!(
                        "restore: subtask {stage_index}.{subtask} has no operator {uid:?}"
                    ));
                }
            }
        }
        let head = stage.vertices[0];
        // The head's input ports: one per input, shared by the edges that feed it (a union).
        let mut head_ports: BTreeMap<u32, AnyPort> = BTreeMap::new();
        for e in &stage.inputs {
            let edge = &topology.edges[*e as usize];
            let codec = job.codec(*e);
            let port = head_ports
                .entry(edge.input)
                .or_insert_with(|| codec.new_port());
            chain.inputs.push(EdgeInput {
                input: edge.input,
                writer: codec.writer(port),
            });
        }
        chain.head_inputs = topology.vertices[head as usize].inputs;
        let mut built = Built::new();
        for v in &stage.vertices {
            let info = &topology.vertices[*v as usize];
            let state = restored.and_then(|s| s.operators.get(&info.uid));
            let mut b = Build {
                uid: &info.uid,
                subtask,
                parallelism: info.parallelism,
                clock,
                mutation,
                failure: chain.failure.clone(),
                drops: chain.drops.clone(),
                restored: state.map(Vec::as_slice),
                stateful: &mut chain.stateful,
                tuples: tuples.clone(),
            };
            let inputs: Vec<AnyPort> = if *v == head {
                (0..info.inputs)
                    .map(|i| head_ports.remove(&i).expect("the head's inputs are fed"))
                    .collect()
            } else {
                let (e, edge) = topology
                    .edges
                    .iter()
                    .enumerate()
                    .find(|(_, e)| e.to == *v)
                    .expect("a chained vertex has its one input");
                let from = built
                    .get(&edge.from)
                    .expect("vertices are built in chain order");
                vec![job.codec(e as u32).upstream(from, edge.side.as_deref())]
            };
            match job.code(*v) {
                VertexCode::Source(f) => {
                    let (reader, outputs) = f.create(&mut b)?;
                    chain.source = Some((info.uid.clone(), reader));
                    built.insert(*v, outputs);
                }
                VertexCode::Operator(f) => {
                    let outputs = f.create(&mut b, inputs)?;
                    built.insert(*v, outputs);
                }
                VertexCode::Sink(f) => {
                    let input = inputs.into_iter().next().expect("a sink has one input");
                    let rows = f.create(&mut b, input);
                    let crate::graph::VertexKind::Sink(target) = &info.kind else {
                        unreachable!("sink code belongs to a sink vertex");
                    };
                    chain.sinks.push(ChainSink {
                        uid: info.uid.clone(),
                        target: target.clone(),
                        rows,
                        collector: f.collector(),
                    });
                }
            }
            for (k, e) in stage.outputs.iter().enumerate() {
                let edge = &topology.edges[*e as usize];
                if edge.from != *v {
                    continue;
                }
                let outputs = built.get(v).expect("a vertex with outputs was built");
                let port = job.codec(*e).upstream(outputs, edge.side.as_deref());
                let route = Route {
                    ship: edge.ship,
                    offset: offsets[k],
                    subpartitions: topology.subpartitions(*e),
                    staged: Rc::clone(&chain.staged),
                    failure: chain.failure.clone(),
                    sent: Rc::clone(&chain.sent),
                    tuples: tuples.clone(),
                };
                job.codec(*e).send(&port, route, subtask);
            }
        }
        Ok(chain)
    }

    /// Bytes of state its operators hold.
    pub fn state_bytes(&self) -> u64 {
        self.stateful.iter().map(|o| o.borrow().state_bytes()).sum()
    }

    /// The earliest processing-time timer of any operator.
    pub fn next_processing_timer(&self) -> Option<i64> {
        self.stateful
            .iter()
            .filter_map(|o| o.borrow().next_processing_timer())
            .min()
    }

    /// Fires the processing-time timers due at `now`.
    pub fn on_processing_time(&self, now: i64) {
        for op in &self.stateful {
            let due = op
                .borrow()
                .next_processing_timer()
                .is_some_and(|t| t <= now);
            if due {
                op.borrow_mut().on_processing_time(now);
            }
        }
    }

    /// The operators' state, by uid.
    pub fn snapshot(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let mut operators = BTreeMap::new();
        for op in &self.stateful {
            let op = op.borrow();
            let bytes = op
                .snapshot()
                .map_err(|e| format!("snapshot {}: {e}", op.uid()))?;
            operators.insert(op.uid().to_string(), bytes);
        }
        Ok(operators)
    }

    /// What failed, if anything: a task fails with it.
    pub fn check(&self) -> Result<(), String> {
        match self.failure.take() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

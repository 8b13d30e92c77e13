//! A job's shape as plain data: vertices (sources, operators, sinks) joined by edges, and the
//! stages it runs as.
//!
//! A [`Topology`] is what the job manager schedules and what task managers check their own
//! copy of the job's code against; the code itself (user functions, serializers) never
//! travels. Operators joined by a forward edge at the same parallelism, where the downstream
//! operator has no other input, are *chained* into one stage: they run in one task per
//! subtask and hand records to each other as values. Every other edge is a network exchange.
//! A stage is therefore a tree rooted at its head: the head takes the stage's network inputs,
//! and any member may send records out over the network.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use xxhash_rust::xxh3::xxh3_64;

/// How records travel along an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ship {
    /// Subtask i feeds subtask i of the next operator. Chained when the parallelism matches and
    /// the next operator has no other input; spread round robin when the parallelism differs.
    Forward,
    /// Round robin over the next operator's subtasks.
    Rebalance,
    /// By key group: every record of a key reaches the same subtask.
    Hash,
    /// Every record to every subtask of the next operator.
    Broadcast,
}

/// Where a sink writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkTarget {
    /// A broker topic.
    Topic {
        /// The topic.
        topic: String,
        /// Two-phase commit over broker transactions; otherwise at least once.
        exactly_once: bool,
    },
    /// A table of the task managers, upserted exactly once.
    Table {
        /// The table's name in the task managers' registry.
        table: String,
    },
    /// Memory in the job's process, committed with the checkpoints (tests).
    Collect,
}

/// What a vertex is, as far as scheduling and the execution models need to know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VertexKind {
    /// Reads a broker topic (`Some`) or values the job holds (`None`).
    Source {
        /// The topic.
        topic: Option<String>,
    },
    /// Transforms records; `keyed` operators keep per-key state and timers.
    Operator {
        /// Whether its state and timers are scoped by key.
        keyed: bool,
    },
    /// Writes records out.
    Sink(SinkTarget),
}

/// One vertex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexInfo {
    /// Stable id: state is saved and restored by it.
    pub uid: String,
    /// What it does, for logs ("map", "window", ...).
    pub name: String,
    /// Subtasks.
    pub parallelism: u32,
    /// Its kind.
    pub kind: VertexKind,
    /// Inputs it takes (two for a connected or joined pair).
    pub inputs: u32,
}

/// One edge: the main output (or side output `side`) of `from` feeds input `input` of `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeInfo {
    /// Upstream vertex.
    pub from: u32,
    /// The side output it carries, if not the main output.
    pub side: Option<String>,
    /// Downstream vertex.
    pub to: u32,
    /// Which input of `to`.
    pub input: u32,
    /// How records travel.
    pub ship: Ship,
}

/// A chain of vertices that runs in one task per subtask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// Its vertices, the head first, each after the one that feeds it.
    pub vertices: Vec<u32>,
    /// Subtasks.
    pub parallelism: u32,
    /// Network edges into the head, in edge order.
    pub inputs: Vec<u32>,
    /// Network edges out of any member, in edge order.
    pub outputs: Vec<u32>,
}

/// Why a graph cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The graph's shape is wrong.
    #[error("job graph: {0}")]
    Invalid(String),
}

/// A job's shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// The job's name; transactional ids, topics of the models and file names derive from it.
    pub name: String,
    /// Vertices, each after every vertex that feeds it.
    pub vertices: Vec<VertexInfo>,
    /// Edges.
    pub edges: Vec<EdgeInfo>,
}

impl Ship {
    /// Whether the edge is a point-to-point forward exchange between equally wide operators.
    fn point_to_point(self, from: u32, to: u32) -> bool {
        self == Ship::Forward && from == to
    }
}

impl Topology {
    /// Checks the graph: unique uids, edges from earlier vertices to later ones, every input of
    /// every operator fed, keyed operators fed by key, sources without inputs and sinks without
    /// outputs.
    pub fn validate(&self) -> Result<(), GraphError> {
        let bad = |why: String| Err(GraphError::Invalid(why));
        if self.vertices.is_empty() {
            return bad("a job needs at least one source".into());
        }
        let mut uids = BTreeSet::new();
        for v in &self.vertices {
            if v.parallelism == 0 {
                return bad(format!("{}: parallelism must be at least 1", v.uid));
            }
            if v.parallelism > u32::from(crate::state::MAX_PARALLELISM) {
                return bad(format!(
                    "{}: parallelism {} is above the most key groups, {}",
                    v.uid,
                    v.parallelism,
                    crate::state::MAX_PARALLELISM
                ));
            }
            if !uids.insert(v.uid.as_str()) {
                return bad(format!("uid {:?} is used twice", v.uid));
            }
        }
        let n = self.vertices.len() as u32;
        for e in &self.edges {
            if e.from >= e.to || e.to >= n {
                return bad(format!("edge {} -> {} does not go forward", e.from, e.to));
            }
            let (from, to) = (
                &self.vertices[e.from as usize],
                &self.vertices[e.to as usize],
            );
            if matches!(from.kind, VertexKind::Sink(_)) {
                return bad(format!("{}: a sink has no outputs", from.uid));
            }
            if e.input >= to.inputs {
                return bad(format!("{}: has no input {}", to.uid, e.input));
            }
            if matches!(to.kind, VertexKind::Operator { keyed: true }) && e.ship != Ship::Hash {
                return bad(format!(
                    "{}: a keyed operator is fed by key (key_by before it)",
                    to.uid
                ));
            }
        }
        for (i, v) in self.vertices.iter().enumerate() {
            let fed: BTreeSet<u32> = self
                .edges
                .iter()
                .filter(|e| e.to as usize == i)
                .map(|e| e.input)
                .collect();
            let is_source = matches!(v.kind, VertexKind::Source { .. });
            if is_source && (v.inputs != 0 || !fed.is_empty()) {
                return bad(format!("{}: a source has no inputs", v.uid));
            }
            if !is_source && fed.len() as u32 != v.inputs {
                return bad(format!("{}: not every input is fed", v.uid));
            }
        }
        Ok(())
    }

    /// Whether edge `e` joins its vertices into one chain.
    fn chains(&self, e: &EdgeInfo) -> bool {
        let (from, to) = (
            &self.vertices[e.from as usize],
            &self.vertices[e.to as usize],
        );
        let sole_input = self.edges.iter().filter(|x| x.to == e.to).count() == 1;
        e.ship.point_to_point(from.parallelism, to.parallelism) && sole_input
    }

    /// The stages, in vertex order of their heads (so every stage comes after those feeding
    /// it). The graph must be valid.
    pub fn stages(&self) -> Vec<Stage> {
        let mut stage_of: Vec<Option<usize>> = vec![None; self.vertices.len()];
        let mut stages: Vec<Stage> = Vec::new();
        for (i, v) in self.vertices.iter().enumerate() {
            let chained = self
                .edges
                .iter()
                .find(|e| e.to as usize == i && self.chains(e));
            match chained {
                Some(e) => {
                    let s = stage_of[e.from as usize].expect("edges go forward");
                    stages[s].vertices.push(i as u32);
                    stage_of[i] = Some(s);
                }
                None => {
                    stage_of[i] = Some(stages.len());
                    stages.push(Stage {
                        vertices: vec![i as u32],
                        parallelism: v.parallelism,
                        inputs: Vec::new(),
                        outputs: Vec::new(),
                    });
                }
            }
        }
        for (i, e) in self.edges.iter().enumerate() {
            if self.chains(e) {
                continue;
            }
            let from = stage_of[e.from as usize].expect("every vertex has a stage");
            let to = stage_of[e.to as usize].expect("every vertex has a stage");
            stages[from].outputs.push(i as u32);
            stages[to].inputs.push(i as u32);
        }
        stages
    }

    /// Subpartitions edge `e` has in each upstream subtask's output: one per downstream
    /// subtask, or a single one for a point-to-point forward edge.
    pub fn subpartitions(&self, e: u32) -> u32 {
        let e = &self.edges[e as usize];
        let (from, to) = (
            &self.vertices[e.from as usize],
            &self.vertices[e.to as usize],
        );
        if e.ship.point_to_point(from.parallelism, to.parallelism) {
            1
        } else {
            to.parallelism
        }
    }

    /// The channels subtask `subtask` of edge `e`'s downstream vertex reads: (upstream
    /// subtask, subpartition of that edge).
    pub fn channels(&self, e: u32, subtask: u32) -> Vec<(u32, u32)> {
        let edge = &self.edges[e as usize];
        let (from, to) = (
            &self.vertices[edge.from as usize],
            &self.vertices[edge.to as usize],
        );
        if edge.ship.point_to_point(from.parallelism, to.parallelism) {
            vec![(subtask, 0)]
        } else {
            (0..from.parallelism).map(|u| (u, subtask)).collect()
        }
    }

    /// Where each output edge of `stage` starts in the stage's result partition, whose
    /// subpartitions are the edges' subpartitions one after another; and the total.
    pub fn output_offsets(&self, stage: &Stage) -> (Vec<u32>, u32) {
        let mut offsets = Vec::with_capacity(stage.outputs.len());
        let mut total = 0;
        for e in &stage.outputs {
            offsets.push(total);
            total += self.subpartitions(*e);
        }
        (offsets, total)
    }

    /// Where each source stage's subtasks start among all the job's source subtasks (none
    /// for the other stages), and how many there are: the Storm model's acknowledgements go
    /// to source subtask by that index.
    pub fn source_offsets(&self, stages: &[Stage]) -> (Vec<Option<u32>>, u32) {
        let mut total = 0;
        let offsets = stages
            .iter()
            .map(|stage| {
                let head = &self.vertices[stage.vertices[0] as usize];
                matches!(head.kind, VertexKind::Source { .. }).then(|| {
                    let at = total;
                    total += stage.parallelism;
                    at
                })
            })
            .collect();
        (offsets, total)
    }

    /// A hash of the whole shape: task managers refuse to run a deployment whose topology is
    /// not the one their own copy of the job builds.
    pub fn fingerprint(&self) -> u64 {
        xxh3_64(&serde_json::to_vec(self).expect("a topology serializes"))
    }

    /// The vertex with uid `uid`.
    pub fn vertex(&self, uid: &str) -> Option<(u32, &VertexInfo)> {
        self.vertices
            .iter()
            .enumerate()
            .find(|(_, v)| v.uid == uid)
            .map(|(i, v)| (i as u32, v))
    }

    /// The topics the job reads.
    pub fn input_topics(&self) -> Vec<&str> {
        self.vertices
            .iter()
            .filter_map(|v| match &v.kind {
                VertexKind::Source { topic } => topic.as_deref(),
                _ => None,
            })
            .collect()
    }

    /// The topics the job writes.
    pub fn output_topics(&self) -> Vec<&str> {
        self.vertices
            .iter()
            .filter_map(|v| match &v.kind {
                VertexKind::Sink(SinkTarget::Topic { topic, .. }) => Some(topic.as_str()),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vertex(uid: &str, kind: VertexKind, parallelism: u32, inputs: u32) -> VertexInfo {
        VertexInfo {
            uid: uid.into(),
            name: uid.into(),
            parallelism,
            kind,
            inputs,
        }
    }

    fn edge(from: u32, to: u32, input: u32, ship: Ship) -> EdgeInfo {
        EdgeInfo {
            from,
            side: None,
            to,
            input,
            ship,
        }
    }

    fn source(uid: &str, p: u32) -> VertexInfo {
        vertex(
            uid,
            VertexKind::Source {
                topic: Some(uid.into()),
            },
            p,
            0,
        )
    }

    fn op(uid: &str, keyed: bool, p: u32, inputs: u32) -> VertexInfo {
        vertex(uid, VertexKind::Operator { keyed }, p, inputs)
    }

    fn sink(uid: &str, p: u32) -> VertexInfo {
        vertex(uid, VertexKind::Sink(SinkTarget::Collect), p, 1)
    }

    /// source -> map ==hash==> window -> sink, with the map's side output to a second sink.
    fn pipeline(window_p: u32, sink_p: u32) -> Topology {
        Topology {
            name: "j".into(),
            vertices: vec![
                source("in", 2),
                op("parse", false, 2, 1),
                op("window", true, window_p, 1),
                sink("out", sink_p),
                sink("dead", 2),
            ],
            edges: vec![
                edge(0, 1, 0, Ship::Forward),
                edge(1, 2, 0, Ship::Hash),
                edge(2, 3, 0, Ship::Forward),
                EdgeInfo {
                    side: Some("dead".into()),
                    ..edge(1, 4, 0, Ship::Forward)
                },
            ],
        }
    }

    #[test]
    fn forward_edges_at_one_parallelism_chain_into_trees() {
        let t = pipeline(3, 3);
        t.validate().unwrap();
        let stages = t.stages();
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].vertices, vec![0, 1, 4]);
        assert_eq!(stages[0].outputs, vec![1]);
        assert_eq!(stages[1].vertices, vec![2, 3]);
        assert_eq!(stages[1].inputs, vec![1]);
        assert_eq!(t.subpartitions(1), 3);
        assert_eq!(t.channels(1, 2), vec![(0, 2), (1, 2)]);
        let split = pipeline(3, 1).stages();
        assert_eq!(split.len(), 3, "a narrower sink is fed round robin");
        assert_eq!(split[2].inputs, vec![2]);
    }

    #[test]
    fn a_two_input_operator_heads_its_own_stage() {
        let t = Topology {
            name: "join".into(),
            vertices: vec![
                source("a", 2),
                source("b", 2),
                op("join", true, 2, 2),
                op("union-reader", false, 2, 1),
                sink("out", 2),
            ],
            edges: vec![
                edge(0, 2, 0, Ship::Hash),
                edge(1, 2, 1, Ship::Hash),
                edge(2, 3, 0, Ship::Forward),
                edge(0, 3, 0, Ship::Forward),
                edge(3, 4, 0, Ship::Forward),
            ],
        };
        t.validate().unwrap();
        let stages = t.stages();
        assert_eq!(stages.len(), 4);
        assert_eq!(stages[2].vertices, vec![2]);
        assert_eq!(stages[2].inputs, vec![0, 1]);
        // The union reader has two inputs edges, so it is not chained; its forward edges are
        // point to point.
        assert_eq!(stages[3].vertices, vec![3, 4]);
        assert_eq!(t.subpartitions(3), 1);
        assert_eq!(t.channels(3, 1), vec![(1, 0)]);
        let (offsets, total) = t.output_offsets(&stages[0]);
        assert_eq!((offsets, total), (vec![0, 2], 3));
    }

    #[test]
    fn malformed_graphs_are_refused() {
        let mut t = pipeline(2, 2);
        t.edges[1].ship = Ship::Forward;
        assert!(
            t.validate().is_err(),
            "a keyed operator needs a keyed input"
        );
        let mut t = pipeline(2, 2);
        t.vertices[3].uid = "in".into();
        assert!(t.validate().is_err(), "uids are unique");
        let mut t = pipeline(2, 2);
        t.vertices[2].parallelism = 0;
        assert!(t.validate().is_err());
        let mut t = pipeline(2, 2);
        t.edges.remove(2);
        assert!(t.validate().is_err(), "every input is fed");
        let mut t = pipeline(2, 2);
        t.edges.push(edge(3, 4, 0, Ship::Forward));
        assert!(t.validate().is_err(), "a sink has no outputs");
        let mut t = pipeline(2, 2);
        t.edges[0] = edge(1, 0, 0, Ship::Forward);
        assert!(t.validate().is_err(), "edges go forward");
        assert_ne!(pipeline(2, 2).fingerprint(), pipeline(2, 3).fingerprint());
    }
}

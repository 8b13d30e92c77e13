//! A job's logical graph and the stages it runs as: operators joined by forward edges with the
//! same parallelism are chained into one task; every other edge is a network exchange.

use super::window::check_assigner;
use crate::stream::window::WindowAssigner;
use serde::{Deserialize, Serialize};

/// How the output of one operator reaches the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Edge {
    /// Subtask i feeds subtask i when the parallelism matches (chained); otherwise records are
    /// spread round robin over the next operator's subtasks.
    Forward,
    /// Each row goes to the subtask that owns its key.
    Hash,
}

/// Whether the sink's output is exactly-once or at-least-once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkMode {
    /// Two-phase commit over broker transactions, committed when the checkpoint completes.
    ExactlyOnce,
    /// Plain idempotent sends, flushed at each barrier: replays after a restart duplicate.
    AtLeastOnce,
}

/// What an operator does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorSpec {
    /// Reads a broker topic's partitions (read_committed); partition p goes to subtask
    /// p mod parallelism.
    Source {
        /// The topic.
        topic: String,
        /// Its partition count.
        partitions: i32,
        /// Watermarks trail the largest event time seen per partition by this much.
        out_of_orderness_ms: i64,
        /// A record with this value ends its partition's input (bounded jobs).
        end_marker: Option<String>,
    },
    /// Applies the task managers' function `function` (see [`super::function`]) to each row:
    /// it may drop the row, change it, re-key it or turn it into several.
    Map {
        /// The function's name in the registry.
        function: String,
    },
    /// Keyed event-time windows with the built-in aggregates (see [`super::window`]),
    /// emitting one row per key and window when the watermark passes its end.
    Window {
        /// Tumbling, sliding or session windows.
        assigner: WindowAssigner,
    },
    /// Per key, in event-time order: holds each row until the watermark passes it, then
    /// releases it with the key's count and sum so far (see [`super::running`]).
    RunningTotals,
    /// Writes what the function `function` makes of each row to `topic`, committed with the
    /// checkpoints like the sink's output, and passes the row on unchanged: a side output
    /// (dead letters, a second view of the same rows).
    SideOutput {
        /// The function's name in the registry.
        function: String,
        /// The topic.
        topic: String,
        /// Delivery guarantee.
        mode: SinkMode,
    },
    /// Upserts what the function `function` makes of each row into the task managers' table
    /// `table` (see [`super::table`]): key to value, applied exactly once when each checkpoint
    /// completes; passes the row on unchanged.
    Upsert {
        /// The function's name in the registry.
        function: String,
        /// The table's name in the task managers' registry.
        table: String,
    },
    /// Writes rows to a broker topic, keyed, partitioned by key.
    Sink {
        /// The topic.
        topic: String,
        /// Delivery guarantee.
        mode: SinkMode,
    },
}

/// One operator of the graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    /// Stable id: state is saved and restored by it.
    pub uid: String,
    /// What it does.
    pub op: OperatorSpec,
    /// How many subtasks run it.
    pub parallelism: u32,
}

/// A job: a pipeline of operators, `edges[i]` joining `vertices[i]` to `vertices[i + 1]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobGraph {
    /// The job's name; transactional ids and file names derive from it.
    pub name: String,
    /// Operators, source first, sink last.
    pub vertices: Vec<Vertex>,
    /// The edges between consecutive operators.
    pub edges: Vec<Edge>,
}

/// Why a graph cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The graph's shape is wrong.
    #[error("job graph: {0}")]
    Invalid(String),
}

/// How a stage's output reaches the next stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Partitioner {
    /// By key hash.
    Hash,
    /// Round robin.
    Rebalance,
}

/// A chain of operators that run in one task per subtask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// Indexes into the graph's vertices, in chain order.
    pub vertices: Vec<usize>,
    /// Subtasks.
    pub parallelism: u32,
    /// How the output leaves for the next stage; `None` for the last.
    pub output: Option<Partitioner>,
}

impl OperatorSpec {
    /// Whether the operator writes to a topic or a table, and so commits with the checkpoints.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            OperatorSpec::Sink { .. }
                | OperatorSpec::SideOutput { .. }
                | OperatorSpec::Upsert { .. }
        )
    }
}

impl JobGraph {
    /// Checks the graph and chains it into stages.
    pub fn stages(&self) -> Result<Vec<Stage>, GraphError> {
        let bad = |why: String| Err(GraphError::Invalid(why));
        if self.vertices.len() < 2 || self.edges.len() + 1 != self.vertices.len() {
            return bad("a job needs a source, a sink and one edge between each pair".into());
        }
        let mut uids = std::collections::BTreeSet::new();
        for (i, v) in self.vertices.iter().enumerate() {
            if v.parallelism == 0 {
                return bad(format!("{}: parallelism must be at least 1", v.uid));
            }
            if !uids.insert(v.uid.as_str()) {
                return bad(format!("uid {:?} is used twice", v.uid));
            }
            let is_source = matches!(v.op, OperatorSpec::Source { .. });
            let is_sink = matches!(v.op, OperatorSpec::Sink { .. });
            if is_source != (i == 0) {
                return bad(format!("{}: the source comes first, and only there", v.uid));
            }
            if is_sink != (i + 1 == self.vertices.len()) {
                return bad(format!("{}: the sink comes last, and only there", v.uid));
            }
            if let OperatorSpec::Window { assigner } = &v.op
                && let Err(why) = check_assigner(assigner)
            {
                return bad(format!("{}: {why}", v.uid));
            }
            let keyed = matches!(
                v.op,
                OperatorSpec::Window { .. } | OperatorSpec::RunningTotals
            );
            if keyed && self.edges[i - 1] != Edge::Hash {
                return bad(format!(
                    "{}: a keyed operator needs a hash edge before it",
                    v.uid
                ));
            }
        }
        let mut stages = vec![Stage {
            vertices: vec![0],
            parallelism: self.vertices[0].parallelism,
            output: None,
        }];
        for (i, edge) in self.edges.iter().enumerate() {
            let next = &self.vertices[i + 1];
            let last = stages.last_mut().expect("there is a first stage");
            if *edge == Edge::Forward && next.parallelism == last.parallelism {
                last.vertices.push(i + 1);
                continue;
            }
            last.output = Some(match edge {
                Edge::Hash => Partitioner::Hash,
                Edge::Forward => Partitioner::Rebalance,
            });
            stages.push(Stage {
                vertices: vec![i + 1],
                parallelism: next.parallelism,
                output: None,
            });
        }
        Ok(stages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn graph(window_parallelism: u32, sink_parallelism: u32) -> JobGraph {
        JobGraph {
            name: "j".into(),
            vertices: vec![
                Vertex {
                    uid: "src".into(),
                    op: OperatorSpec::Source {
                        topic: "in".into(),
                        partitions: 4,
                        out_of_orderness_ms: 100,
                        end_marker: None,
                    },
                    parallelism: 2,
                },
                Vertex {
                    uid: "win".into(),
                    op: OperatorSpec::Window {
                        assigner: WindowAssigner::tumbling(Duration::from_secs(1)),
                    },
                    parallelism: window_parallelism,
                },
                Vertex {
                    uid: "out".into(),
                    op: OperatorSpec::Sink {
                        topic: "out".into(),
                        mode: SinkMode::ExactlyOnce,
                    },
                    parallelism: sink_parallelism,
                },
            ],
            edges: vec![Edge::Hash, Edge::Forward],
        }
    }

    #[test]
    fn forward_edges_with_equal_parallelism_chain() {
        let stages = graph(3, 3).stages().unwrap();
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].vertices, vec![0]);
        assert_eq!(stages[0].output, Some(Partitioner::Hash));
        assert_eq!(stages[1].vertices, vec![1, 2]);
        assert_eq!(stages[1].parallelism, 3);
        let split = graph(3, 1).stages().unwrap();
        assert_eq!(split.len(), 3);
        assert_eq!(split[1].output, Some(Partitioner::Rebalance));
    }

    #[test]
    fn functions_chain_with_the_operators_around_them() {
        let mut g = graph(2, 2);
        let map = |uid: &str| Vertex {
            uid: uid.into(),
            op: OperatorSpec::Map {
                function: "f".into(),
            },
            parallelism: 2,
        };
        g.vertices.insert(1, map("parse"));
        g.edges.insert(0, Edge::Forward);
        g.vertices.insert(3, map("format"));
        g.edges.insert(2, Edge::Forward);
        let stages = g.stages().unwrap();
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].vertices, vec![0, 1]);
        assert_eq!(stages[1].vertices, vec![2, 3, 4]);
    }

    #[test]
    fn malformed_graphs_are_refused() {
        let mut g = graph(2, 2);
        g.vertices[1].op = OperatorSpec::Window {
            assigner: WindowAssigner::Global,
        };
        assert!(g.stages().is_err(), "global windows need a count trigger");
        let mut g = graph(2, 2);
        g.edges[0] = Edge::Forward;
        assert!(g.stages().is_err(), "a window needs a keyed input");
        let mut g = graph(2, 2);
        g.vertices[2].uid = "src".into();
        assert!(g.stages().is_err(), "uids are unique");
        let mut g = graph(2, 2);
        g.vertices[1].parallelism = 0;
        assert!(g.stages().is_err());
        let mut g = graph(2, 2);
        g.vertices.swap(0, 2);
        assert!(g.stages().is_err());
    }
}

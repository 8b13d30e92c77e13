//! The DataStream API: a job is built on a [`StreamEnv`] from sources, operators and sinks
//! written as plain Rust, and [`StreamEnv::build`] turns it into a [`Job`] the runtime runs, in
//! the simulator or for real, under any execution model.
//!
//! ```text
//! StreamEnv::from_source(KafkaSource) -> map / filter / flat_map / process -> key_by
//!     -> process (keyed state, timers) | window(..).aggregate / reduce / process
//!     -> union / connect / interval_join / join(..).window(..) -> sink_to(KafkaSink | TableSink | CollectSink)
//! ```

mod connected;
mod connectors;
mod keyed;
mod stream;

pub use connected::{ConnectedStreams, IntervalJoin, JoinedStreams, KeyedConnectedStreams};
pub use connectors::{
    CollectSink, Collected, DeliveryGuarantee, KafkaRecord, KafkaSink, KafkaSource, SinkSpec,
    TableSink,
};
pub use keyed::{KeyedStream, WindowedStream};
pub use stream::{DataStream, SinkHandle};

use crate::element::Data;
use crate::graph::{EdgeInfo, GraphError, Ship, Stage, Topology, VertexInfo, VertexKind};
use crate::operator::sink::SinkFactory;
use crate::operator::source::{CollectionSourceFactory, SourceFactory};
use crate::operator::{EdgeCodec, OperatorFactory};
use crate::watermark::WatermarkStrategy;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

/// The code of one vertex.
#[derive(Clone)]
pub(crate) enum VertexCode {
    Source(Rc<dyn SourceFactory>),
    Operator(Rc<dyn OperatorFactory>),
    Sink(Rc<dyn SinkFactory>),
}

/// A job under construction.
struct Builder {
    name: String,
    parallelism: u32,
    vertices: Vec<(VertexInfo, VertexCode)>,
    edges: Vec<(EdgeInfo, Rc<dyn EdgeCodec>)>,
}

/// Builds a job. Cloning gives another handle on the same job.
#[derive(Clone)]
pub struct StreamEnv(Rc<RefCell<Builder>>);

/// Where a stream's records come from: the main output of a vertex, or one of its side
/// outputs; a union has several.
pub(crate) type Origin = (u32, Option<String>);

/// One input of a vertex being added: the streams that feed it, how, and their records' codec.
pub(crate) struct Feed {
    pub origins: Vec<Origin>,
    pub ship: Ship,
    pub codec: Rc<dyn EdgeCodec>,
}

impl StreamEnv {
    /// A new, empty job called `name`; its operators run `1` subtask each unless told
    /// otherwise.
    pub fn new(name: &str) -> Self {
        Self(Rc::new(RefCell::new(Builder {
            name: name.to_string(),
            parallelism: 1,
            vertices: Vec::new(),
            edges: Vec::new(),
        })))
    }

    /// Subtasks of every operator added from now on, unless it sets its own.
    pub fn set_parallelism(&self, parallelism: u32) -> &Self {
        assert!(parallelism >= 1, "parallelism is at least 1");
        self.0.borrow_mut().parallelism = parallelism;
        self
    }

    /// The job's name.
    pub fn name(&self) -> String {
        self.0.borrow().name.clone()
    }

    /// Adds a vertex fed by `feeds` (one per input); returns its index.
    pub(crate) fn add(
        &self,
        name: &str,
        kind: VertexKind,
        code: VertexCode,
        feeds: Vec<Feed>,
    ) -> u32 {
        let mut b = self.0.borrow_mut();
        let index = b.vertices.len() as u32;
        let info = VertexInfo {
            uid: format!("{name}-{index}"),
            name: name.to_string(),
            parallelism: b.parallelism,
            kind,
            inputs: feeds.len() as u32,
        };
        b.vertices.push((info, code));
        for (input, feed) in feeds.into_iter().enumerate() {
            for (from, side) in feed.origins {
                let edge = EdgeInfo {
                    from,
                    side,
                    to: index,
                    input: input as u32,
                    ship: feed.ship,
                };
                b.edges.push((edge, Rc::clone(&feed.codec)));
            }
        }
        index
    }

    /// Changes vertex `v`'s description.
    pub(crate) fn edit(&self, v: u32, f: impl FnOnce(&mut VertexInfo)) {
        f(&mut self.0.borrow_mut().vertices[v as usize].0);
    }

    /// Adds a source; its records get event times and watermarks from `strategy`.
    pub fn from_source<T: Data>(
        &self,
        source: KafkaSource<T>,
        strategy: WatermarkStrategy<T>,
    ) -> DataStream<T> {
        let topic = source.topic().to_string();
        let factory = source.into_factory(strategy);
        let v = self.add(
            "source",
            VertexKind::Source { topic: Some(topic) },
            VertexCode::Source(factory),
            Vec::new(),
        );
        DataStream::from_vertex(self.clone(), v)
    }

    /// Adds a bounded source of `values`, spread over its subtasks, with event times and
    /// watermarks from `strategy`.
    pub fn from_collection<T: Data>(
        &self,
        values: Vec<T>,
        strategy: WatermarkStrategy<T>,
    ) -> DataStream<T> {
        let factory = Rc::new(CollectionSourceFactory {
            values: Rc::new(values),
            splits: None,
            strategy,
        });
        let v = self.add(
            "collection",
            VertexKind::Source { topic: None },
            VertexCode::Source(factory),
            Vec::new(),
        );
        DataStream::from_vertex(self.clone(), v)
    }

    /// Adds a bounded source over the splits `splits`, of `values`, each on the split its pair
    /// names: subtask `s` reads the splits `s` mod its parallelism, values in order, with a
    /// watermark per split (a split without values holds it back), as a topic's partitions are
    /// read.
    pub fn from_splits<T: Data>(
        &self,
        splits: &[u32],
        values: Vec<(u32, T)>,
        strategy: WatermarkStrategy<T>,
    ) -> DataStream<T> {
        let mut all = splits.to_vec();
        all.sort_unstable();
        all.dedup();
        let (of, values): (Vec<u32>, Vec<T>) = values.into_iter().unzip();
        assert!(
            of.iter().all(|s| all.binary_search(s).is_ok()),
            "every value's split is one of the source's splits"
        );
        let factory = Rc::new(CollectionSourceFactory {
            values: Rc::new(values),
            splits: Some((all, Rc::new(of))),
            strategy,
        });
        let v = self.add(
            "collection",
            VertexKind::Source { topic: None },
            VertexCode::Source(factory),
            Vec::new(),
        );
        DataStream::from_vertex(self.clone(), v)
    }

    /// The finished job, once its graph checks out.
    pub fn build(&self) -> Result<Job, GraphError> {
        let b = self.0.borrow();
        let topology = Topology {
            name: b.name.clone(),
            vertices: b.vertices.iter().map(|(v, _)| v.clone()).collect(),
            edges: b.edges.iter().map(|(e, _)| e.clone()).collect(),
        };
        topology.validate()?;
        let stages = topology.stages();
        Ok(Job {
            stages,
            code: b.vertices.iter().map(|(_, c)| c.clone()).collect(),
            codecs: b.edges.iter().map(|(_, c)| Rc::clone(c)).collect(),
            topology,
        })
    }
}

/// A job: its shape, and the code of every vertex and edge. Build it with [`StreamEnv`].
pub struct Job {
    topology: Topology,
    stages: Vec<Stage>,
    code: Vec<VertexCode>,
    codecs: Vec<Rc<dyn EdgeCodec>>,
}

impl Job {
    /// The job's name.
    pub fn name(&self) -> &str {
        &self.topology.name
    }

    /// The job's shape.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The stages it runs as.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The code of vertex `v`.
    pub(crate) fn code(&self, v: u32) -> &VertexCode {
        &self.code[v as usize]
    }

    /// The codec of edge `e`.
    pub(crate) fn codec(&self, e: u32) -> &Rc<dyn EdgeCodec> {
        &self.codecs[e as usize]
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

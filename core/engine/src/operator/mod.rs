//! The operators a subtask runs, and how a job's vertices become them.
//!
//! A job keeps, per vertex, a factory that the API built around the user's functions. When a
//! subtask starts, each vertex of its stage is instantiated in chain order: the factory
//! subscribes the new operator to its input ports and returns its output ports, which the
//! vertices chained after it (or the network writers of the edges leaving the stage) subscribe
//! to in turn. Ports carry typed values; the type lives in the factories and in each edge's
//! [`EdgeCodec`], so it is checked once when the chain is built, never per record.
//!
//! Records flow synchronously: a record pushed into the head reaches every operator it touches
//! before the call returns. What leaves the subtask is staged (network writes, sink rows), and
//! the task drains the stage before it takes the next input, so that backpressure reaches the
//! input and memory stays bounded by what one input element produces.

pub(crate) mod co;
pub(crate) mod edge;
pub(crate) mod keyed;
pub(crate) mod sink;
pub(crate) mod source;
pub(crate) mod stateless;
pub(crate) mod tuples;

use crate::state::{HeapBackend, KeyedStore, StateError};
use crate::tag::SidePorts;
use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use weir_seams::clock::Clock;

pub(crate) use edge::{EdgeCodec, InputWriter, Staged};

/// A port of some record type, as factories hand them to each other: a `PortRef<T>`.
pub(crate) type AnyPort = Box<dyn Any>;

/// Why records were dropped, as jobs report them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum DropReason {
    /// The input's bytes did not deserialize.
    Unparseable,
    /// The input parsed but failed the job's validation.
    Invalid,
    /// The record arrived behind the watermark, after every window it belongs to had closed.
    Late,
}

impl DropReason {
    /// Every reason, in report order.
    pub const ALL: [DropReason; 3] = [
        DropReason::Unparseable,
        DropReason::Invalid,
        DropReason::Late,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Unparseable => "unparseable",
            DropReason::Invalid => "invalid",
            DropReason::Late => "late",
        }
    }
}

/// Records a subtask dropped, by reason; shared by its operators.
#[derive(Clone, Debug, Default)]
pub(crate) struct DropCounters(Rc<RefCell<BTreeMap<DropReason, u64>>>);

impl DropCounters {
    /// Counts one dropped record.
    pub fn add(&self, reason: DropReason) {
        *self.0.borrow_mut().entry(reason).or_default() += 1;
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<DropReason, u64> {
        self.0.borrow().clone()
    }

    /// Starts from counts a checkpoint saved, so that a restored subtask reports what the
    /// input up to its checkpoint dropped, once.
    pub fn restore(&self, counts: BTreeMap<DropReason, u64>) {
        *self.0.borrow_mut() = counts;
    }
}

/// The first failure of a subtask's operators. Operators run inside synchronous port calls, so
/// they record what went wrong here and the task fails once the call returns.
#[derive(Clone, Debug, Default)]
pub(crate) struct Failure(Rc<RefCell<Option<String>>>);

impl Failure {
    /// Records `why`, unless something failed first.
    pub fn set(&self, why: impl Into<String>) {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(why.into());
        }
    }

    /// What failed, if anything.
    pub fn take(&self) -> Option<String> {
        self.0.borrow_mut().take()
    }
}

/// A deliberate defect in the operators, for showing that the checkers catch a broken engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OperatorMutation {
    /// Operators with several inputs, and sources with several partitions, take the maximum of
    /// their inputs' watermarks instead of the minimum.
    MaxWatermark,
    /// Time windows put a record whose timestamp is exactly a window start into the window
    /// before.
    WindowOffByOne,
}

/// What the runtime needs from an operator that keeps state or timers.
pub(crate) trait StatefulOperator {
    /// Its uid.
    fn uid(&self) -> &str;
    /// All of its state: keyed state, timers and its own fields.
    fn snapshot(&self) -> Result<Vec<u8>, StateError>;
    /// The earliest processing-time timer.
    fn next_processing_timer(&self) -> Option<i64>;
    /// Fires processing-time timers due at `now`.
    fn on_processing_time(&mut self, now: i64);
    /// Bytes of state held.
    fn state_bytes(&self) -> u64;
}

/// A stateful operator as the task keeps it.
pub(crate) type Stateful = Rc<RefCell<dyn StatefulOperator>>;

/// What building one operator instance is given.
pub(crate) struct Build<'a> {
    /// The vertex's uid.
    pub uid: &'a str,
    /// This subtask, and how many there are.
    pub subtask: u32,
    /// Subtasks of the vertex.
    pub parallelism: u32,
    /// Processing time.
    pub clock: Clock,
    /// A defect to build in.
    pub mutation: Option<OperatorMutation>,
    /// Where operators report failures.
    pub failure: Failure,
    /// Where operators count dropped records.
    pub drops: DropCounters,
    /// The state this vertex saved in the checkpoint being restored.
    pub restored: Option<&'a [u8]>,
    /// Stateful operators register here, for checkpoints and timers.
    pub stateful: &'a mut Vec<Stateful>,
    /// Storm model: the subtask's tuple trees.
    pub tuples: Option<tuples::Tuples>,
}

impl Build<'_> {
    /// A fresh keyed state store on the heap.
    pub fn new_store(&self) -> KeyedStore {
        KeyedStore::new(Box::new(HeapBackend::default()), self.clock)
    }

    /// Registers a stateful operator.
    pub fn register(&mut self, op: Stateful) {
        self.stateful.push(op);
    }

    /// Whether the defect `m` is built in.
    pub fn mutated(&self, m: OperatorMutation) -> bool {
        self.mutation == Some(m)
    }
}

/// The output ports of one operator instance.
pub(crate) struct Outputs {
    /// Its main output: a `PortRef` of its output type.
    pub main: AnyPort,
    /// Its side outputs, by tag name.
    pub sides: SidePorts,
}

/// Builds instances of one operator vertex.
pub(crate) trait OperatorFactory {
    /// Makes one instance: subscribes it to `inputs` (a port per input, in input order) and
    /// returns its outputs.
    fn create(&self, b: &mut Build<'_>, inputs: Vec<AnyPort>) -> Result<Outputs, String>;
}

/// Takes `port` as a port of `T`; a mismatch is a bug in how the API built the job.
pub(crate) fn port_of<T: 'static>(port: &AnyPort) -> &crate::port::PortRef<T> {
    port.downcast_ref().unwrap_or_else(|| {
        panic!(
            "a port of {} was expected: the job graph's types do not line up",
            std::any::type_name::<T>()
        )
    })
}

//! Edges as the runtime sees them: what turns a typed port into bytes on the exchange, and
//! bytes from the exchange back into records on a port.

use super::tuples::{Tuples, encode_tuple};
use super::{AnyPort, Failure, Outputs, port_of};
use crate::element::{Data, Element, ElementError, Timestamp};
use crate::graph::Ship;
use crate::port::{Merged, PortRef, WatermarkMerger};
use crate::state::{key_group, subtask_of_key_group};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::rc::Rc;

/// Serialized key of a record, for routing by key.
pub(crate) type KeyBytes<T> = Rc<dyn Fn(&T) -> Result<Vec<u8>, String>>;

/// Elements bound for the network, by subpartition of the subtask's result partition, in the
/// order they were emitted; the task sends them before it takes its next input.
pub(crate) type Staged = Rc<RefCell<Vec<(u32, Bytes)>>>;

/// Where a network writer sends one edge's records.
pub(crate) struct Route {
    /// How the edge ships records.
    pub ship: Ship,
    /// The edge's first subpartition in the result partition.
    pub offset: u32,
    /// Its subpartitions.
    pub subpartitions: u32,
    /// Where the elements go.
    pub staged: Staged,
    /// Where an element that cannot be encoded is reported.
    pub failure: Failure,
    /// Counts the records sent.
    pub sent: Rc<Cell<u64>>,
    /// Storm model: the tuple trees each record sent is anchored in.
    pub tuples: Option<Tuples>,
}

/// Takes the elements a network input delivers and puts them on an input's port: records
/// directly, watermarks and idleness marks once the task has merged them over the channels.
pub(crate) trait InputWriter {
    /// Decodes one element; a record goes on the port, anything else is returned.
    fn deliver(&self, bytes: Bytes) -> Result<Mark, ElementError>;
    /// Puts a merged watermark (or idleness mark) on the port.
    fn mark(&self, mark: Mark);
}

/// What an element was, once a record has gone on its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// A record.
    Record,
    /// A watermark.
    Watermark(Timestamp),
    /// An idleness mark.
    Idle,
}

/// The typed side of one edge.
pub(crate) trait EdgeCodec {
    /// The port of `outputs` this edge reads: the main output, or the side output `side`.
    fn upstream(&self, outputs: &Outputs, side: Option<&str>) -> AnyPort;
    /// A fresh port for this edge's records, as a network input feeds them.
    fn new_port(&self) -> AnyPort;
    /// Something that puts exchange bytes on `port`.
    fn writer(&self, port: &AnyPort) -> Box<dyn InputWriter>;
    /// Subscribes a network writer to `port` that encodes every element and stages it on
    /// `route`.
    fn send(&self, port: &AnyPort, route: Route, subtask: u32);
    /// A port fed directly by every port of `upstream`, with their watermarks merged: a
    /// union in one process.
    fn merge(&self, upstream: &[AnyPort], take_max: bool) -> AnyPort;
}

/// An edge carrying values of `T`, routed by `key` when it ships by hash.
pub(crate) struct Codec<T> {
    key: Option<KeyBytes<T>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Codec<T> {
    /// An edge that does not route by key.
    pub fn plain() -> Self {
        Self {
            key: None,
            _t: PhantomData,
        }
    }

    /// An edge routed by `key`.
    pub fn keyed(key: KeyBytes<T>) -> Self {
        Self {
            key: Some(key),
            _t: PhantomData,
        }
    }
}

struct PortWriter<T>(PortRef<T>);

impl<T: Data> InputWriter for PortWriter<T> {
    fn deliver(&self, bytes: Bytes) -> Result<Mark, ElementError> {
        Ok(match Element::<T>::decode(bytes)? {
            Element::Record(r) => {
                self.0.emit(Element::Record(r));
                Mark::Record
            }
            Element::Watermark(w) => Mark::Watermark(w),
            Element::Idle => Mark::Idle,
        })
    }

    fn mark(&self, mark: Mark) {
        match mark {
            Mark::Watermark(w) => self.0.emit(Element::Watermark(w)),
            Mark::Idle => self.0.emit(Element::Idle),
            Mark::Record => {}
        }
    }
}

impl<T: Data> EdgeCodec for Codec<T> {
    fn upstream(&self, outputs: &Outputs, side: Option<&str>) -> AnyPort {
        match side {
            None => Box::new(port_of::<T>(&outputs.main).clone()),
            Some(name) => Box::new(outputs.sides.port_named::<T>(name)),
        }
    }

    fn new_port(&self) -> AnyPort {
        Box::new(PortRef::<T>::new())
    }

    fn writer(&self, port: &AnyPort) -> Box<dyn InputWriter> {
        Box::new(PortWriter(port_of::<T>(port).clone()))
    }

    fn merge(&self, upstream: &[AnyPort], take_max: bool) -> AnyPort {
        let merged = PortRef::<T>::new();
        let marks = Rc::new(RefCell::new(WatermarkMerger::new(upstream.len(), take_max)));
        for (i, port) in upstream.iter().enumerate() {
            let (out, marks) = (merged.clone(), Rc::clone(&marks));
            port_of::<T>(port).subscribe(Box::new(move |el: Element<T>| {
                let change = match &el {
                    Element::Record(_) => marks.borrow_mut().record(i),
                    Element::Watermark(w) => marks.borrow_mut().watermark(i, *w),
                    Element::Idle => marks.borrow_mut().idle(i),
                };
                if let Element::Record(_) = el {
                    out.emit(el);
                }
                match change {
                    Merged::Watermark(w) => out.emit(Element::Watermark(w)),
                    Merged::Idle => out.emit(Element::Idle),
                    Merged::Nothing => {}
                }
            }));
        }
        Box::new(merged)
    }

    fn send(&self, port: &AnyPort, route: Route, subtask: u32) {
        let key = self.key.clone();
        // Round robin starts at the subtask's own index, so that subtasks spread evenly.
        let mut next = subtask;
        port_of::<T>(port).subscribe(Box::new(move |el: Element<T>| {
            let bytes = match el.encode() {
                Ok(b) => b,
                Err(e) => return route.failure.set(format!("encode for the exchange: {e}")),
            };
            let mut staged = route.staged.borrow_mut();
            let all = route.offset..route.offset + route.subpartitions;
            let Element::Record(r) = &el else {
                staged.extend(all.map(|s| (s, bytes.clone())));
                return;
            };
            route.sent.set(route.sent.get() + 1);
            let bytes = match &route.tuples {
                Some(t) => encode_tuple(&t.emit(), &bytes),
                None => bytes,
            };
            match route.ship {
                Ship::Broadcast => staged.extend(all.map(|s| (s, bytes.clone()))),
                Ship::Hash => {
                    let key = key.as_ref().expect("a hash edge has a key");
                    match key(&r.value) {
                        Ok(k) => {
                            let target = subtask_of_key_group(key_group(&k), route.subpartitions);
                            staged.push((route.offset + target, bytes));
                        }
                        Err(e) => route.failure.set(format!("key for the exchange: {e}")),
                    }
                }
                Ship::Forward | Ship::Rebalance => {
                    next = (next + 1) % route.subpartitions;
                    staged.push((route.offset + next, bytes));
                }
            }
        }));
    }
}

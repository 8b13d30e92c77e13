//! Ports connect the operators of one subtask. A port has any number of consumers, called in
//! order for every element. Watermarks pass a port only if they advance it, so downstream
//! operators only ever see rising watermarks; an idleness mark passes only once until the
//! stream speaks again.
//!
//! Where several streams meet (the inputs of a two-input operator, or the channels of one input
//! fed by several upstream subtasks), a [`WatermarkMerger`] combines their watermarks: the
//! least over the streams that are not idle.

use crate::element::{Element, MIN_WATERMARK, StreamRecord, Timestamp};
use std::cell::RefCell;
use std::rc::Rc;

/// One consumer of a port.
pub(crate) type Consumer<T> = Box<dyn FnMut(Element<T>)>;

struct Port<T> {
    consumers: Vec<Consumer<T>>,
    watermark: Timestamp,
    idle: bool,
}

/// A shared handle on an output port.
pub(crate) struct PortRef<T>(Rc<RefCell<Port<T>>>);

impl<T> Clone for PortRef<T> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<T: Clone + 'static> PortRef<T> {
    pub fn new() -> Self {
        Self(Rc::new(RefCell::new(Port {
            consumers: Vec::new(),
            watermark: MIN_WATERMARK,
            idle: false,
        })))
    }

    /// Adds a consumer; it sees every element emitted from now on.
    pub fn subscribe(&self, c: Consumer<T>) {
        self.0.borrow_mut().consumers.push(c);
    }

    /// Sends an element to every consumer (a watermark only if it advances, an idleness mark
    /// only if the port is not idle already).
    pub fn emit(&self, el: Element<T>) {
        let mut port = self.0.borrow_mut();
        match el {
            Element::Watermark(w) => {
                if w <= port.watermark {
                    return;
                }
                port.watermark = w;
                port.idle = false;
            }
            Element::Idle => {
                if port.idle {
                    return;
                }
                port.idle = true;
            }
            Element::Record(_) => port.idle = false,
        }
        let n = port.consumers.len();
        if n == 0 {
            return;
        }
        for c in port.consumers.iter_mut().take(n - 1) {
            c(el.clone());
        }
        (port.consumers[n - 1])(el);
    }

    /// Sends a record.
    pub fn record(&self, value: T, timestamp: Option<Timestamp>) {
        self.emit(Element::Record(StreamRecord { value, timestamp }));
    }
}

/// Combines the watermarks of several streams into one: the least over those not idle; all
/// idle, the combination is idle. With `take_max` (a deliberate defect) it takes the greatest.
#[derive(Clone, Debug)]
pub(crate) struct WatermarkMerger {
    marks: Vec<(Timestamp, bool)>,
    take_max: bool,
}

/// What the combined stream should say after one stream's change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Merged {
    /// Its watermark is now this (ports drop it unless it advances).
    Watermark(Timestamp),
    /// Every stream is idle.
    Idle,
    /// Nothing to say.
    Nothing,
}

impl WatermarkMerger {
    /// Tracks `streams` streams, none idle, none with a watermark yet.
    pub fn new(streams: usize, take_max: bool) -> Self {
        assert!(streams > 0, "a merger combines at least one stream");
        Self {
            marks: vec![(MIN_WATERMARK, false); streams],
            take_max,
        }
    }

    fn combined(&self) -> Merged {
        let active = self.marks.iter().filter(|(_, idle)| !idle).map(|(w, _)| *w);
        let combined = if self.take_max {
            active.max()
        } else {
            active.min()
        };
        combined.map_or(Merged::Idle, Merged::Watermark)
    }

    /// Stream `i` says its watermark is `w`.
    pub fn watermark(&mut self, i: usize, w: Timestamp) -> Merged {
        let m = &mut self.marks[i];
        m.0 = m.0.max(w);
        m.1 = false;
        self.combined()
    }

    /// Stream `i` is idle.
    pub fn idle(&mut self, i: usize) -> Merged {
        self.marks[i].1 = true;
        self.combined()
    }

    /// Stream `i` sent a record: it is active again, and holds the combination back once more.
    pub fn record(&mut self, i: usize) -> Merged {
        if !self.marks[i].1 {
            return Merged::Nothing;
        }
        self.marks[i].1 = false;
        self.combined()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_only_advance_and_every_consumer_sees_every_record() {
        let p: PortRef<u32> = PortRef::new();
        let seen = Rc::new(RefCell::new(Vec::new()));
        for tag in 0..2 {
            let s = Rc::clone(&seen);
            p.subscribe(Box::new(move |el| s.borrow_mut().push((tag, el))));
        }
        p.record(1, Some(5));
        p.emit(Element::Watermark(10));
        p.emit(Element::Watermark(7));
        p.emit(Element::Watermark(10));
        p.emit(Element::Idle);
        p.emit(Element::Idle);
        p.emit(Element::Watermark(11));
        let got = seen.borrow();
        assert_eq!(got.len(), 8, "record, 10, idle once, 11 to both consumers");
        assert_eq!(p.0.borrow().watermark, 11);
        assert!(got.iter().all(|(_, e)| !matches!(e, Element::Watermark(7))));
    }

    #[test]
    fn the_merger_takes_the_least_active_watermark() {
        let mut m = WatermarkMerger::new(2, false);
        assert_eq!(m.watermark(0, 10), Merged::Watermark(MIN_WATERMARK));
        assert_eq!(m.watermark(1, 5), Merged::Watermark(5));
        assert_eq!(
            m.idle(1),
            Merged::Watermark(10),
            "an idle stream stops holding back"
        );
        assert_eq!(m.idle(0), Merged::Idle);
        assert_eq!(m.record(1), Merged::Watermark(5), "a record wakes it");
        assert_eq!(m.record(1), Merged::Nothing);
        let mut max = WatermarkMerger::new(2, true);
        max.watermark(0, 10);
        assert_eq!(max.watermark(1, 5), Merged::Watermark(10));
    }
}

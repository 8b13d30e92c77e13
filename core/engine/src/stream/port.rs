//! Ports connect operators. A port has any number of consumers, called in order for every
//! element. Watermarks pass a port only if they advance it, so downstream operators only ever
//! see rising watermarks.

use super::element::{Element, MIN_WATERMARK, StreamRecord, Timestamp};
use std::cell::RefCell;
use std::rc::Rc;

pub(crate) type Consumer<T> = Box<dyn FnMut(Element<T>)>;

struct Port<T> {
    consumers: Vec<Consumer<T>>,
    watermark: Timestamp,
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
        })))
    }

    /// Adds a consumer; it sees every element emitted from now on.
    pub fn subscribe(&self, c: Consumer<T>) {
        self.0.borrow_mut().consumers.push(c);
    }

    /// Sends an element to every consumer (a watermark only if it advances).
    pub fn emit(&self, el: Element<T>) {
        let mut port = self.0.borrow_mut();
        if let Element::Watermark(w) = el {
            if w <= port.watermark {
                return;
            }
            port.watermark = w;
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
        p.emit(Element::Watermark(11));
        let got = seen.borrow();
        assert_eq!(got.len(), 6);
        assert_eq!(p.0.borrow().watermark, 11);
        assert!(got.iter().all(|(_, e)| !matches!(e, Element::Watermark(7))));
    }
}

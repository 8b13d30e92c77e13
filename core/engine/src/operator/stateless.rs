//! Operators without state: record-at-a-time functions on one input, and a process function
//! over two inputs that merges their watermarks.

use super::{AnyPort, Build, DropCounters, OperatorFactory, OperatorMutation, Outputs, port_of};
use crate::element::{Element, MIN_WATERMARK, StreamRecord, Timestamp};
use crate::function::{CoProcessFunction, Context};
use crate::port::{Merged, PortRef, WatermarkMerger};
use crate::tag::SidePorts;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

/// Builds a one-input operator that runs a fresh clone of `f` per subtask.
pub(crate) struct ProcessFactory<I, O, F> {
    pub f: F,
    pub _t: PhantomData<fn(I) -> O>,
}

impl<I, O, F> OperatorFactory for ProcessFactory<I, O, F>
where
    I: Clone + 'static,
    O: Clone + 'static,
    F: FnMut(I, &mut Context<'_, O>) + Clone + 'static,
{
    fn create(&self, b: &mut Build<'_>, inputs: Vec<AnyPort>) -> Result<Outputs, String> {
        let out = PortRef::<O>::new();
        let sides = SidePorts::default();
        let (o, s, drops) = (out.clone(), sides.clone(), b.drops.clone());
        let mut f = self.f.clone();
        let mut watermark = MIN_WATERMARK;
        port_of::<I>(&inputs[0]).subscribe(Box::new(move |el| match el {
            Element::Record(r) => f(
                r.value,
                &mut Context {
                    timestamp: r.timestamp,
                    watermark,
                    out: &o,
                    sides: &s,
                    drops: &drops,
                },
            ),
            Element::Watermark(w) => {
                watermark = w;
                o.emit(Element::Watermark(w));
            }
            Element::Idle => o.emit(Element::Idle),
        }));
        Ok(Outputs {
            main: Box::new(out),
            sides,
        })
    }
}

/// What a two-input process operator holds.
struct Co<F> {
    f: F,
    inputs: WatermarkMerger,
    watermark: Timestamp,
}

impl<F> Co<F> {
    /// Takes what input `input`'s element says about time, and passes on what changes.
    fn mark<T, O: Clone + 'static>(&mut self, input: usize, el: &Element<T>, out: &PortRef<O>) {
        let merged = match el {
            Element::Record(_) => self.inputs.record(input),
            Element::Watermark(w) => self.inputs.watermark(input, *w),
            Element::Idle => self.inputs.idle(input),
        };
        match merged {
            Merged::Watermark(w) if w > self.watermark => {
                self.watermark = w;
                out.emit(Element::Watermark(w));
            }
            Merged::Idle => out.emit(Element::Idle),
            Merged::Watermark(_) | Merged::Nothing => {}
        }
    }
}

/// Builds [`CoProcessFunction`] operators.
pub(crate) struct CoProcessFactory<I1, I2, O, F> {
    pub f: F,
    pub _t: PhantomData<fn(I1, I2) -> O>,
}

/// Subscribes input `input` of a two-input operator, calling `handle` with each record.
fn subscribe_co<T: Clone + 'static, O: Clone + 'static, F: 'static>(
    port: &PortRef<T>,
    (op, input): (&Rc<RefCell<Co<F>>>, usize),
    (out, sides, drops): (&PortRef<O>, &SidePorts, &DropCounters),
    handle: impl Fn(&mut F, T, &mut Context<'_, O>) + 'static,
) {
    let (op, out, sides, drops) = (Rc::clone(op), out.clone(), sides.clone(), drops.clone());
    port.subscribe(Box::new(move |el: Element<T>| {
        let mut co = op.borrow_mut();
        co.mark(input, &el, &out);
        if let Element::Record(StreamRecord { value, timestamp }) = el {
            let watermark = co.watermark;
            handle(
                &mut co.f,
                value,
                &mut Context {
                    timestamp,
                    watermark,
                    out: &out,
                    sides: &sides,
                    drops: &drops,
                },
            );
        }
    }));
}

impl<I1, I2, O, F> OperatorFactory for CoProcessFactory<I1, I2, O, F>
where
    I1: Clone + 'static,
    I2: Clone + 'static,
    O: Clone + 'static,
    F: CoProcessFunction<I1, I2, O> + Clone + 'static,
{
    fn create(&self, b: &mut Build<'_>, inputs: Vec<AnyPort>) -> Result<Outputs, String> {
        let out = PortRef::<O>::new();
        let sides = SidePorts::default();
        let op = Rc::new(RefCell::new(Co {
            f: self.f.clone(),
            inputs: WatermarkMerger::new(2, b.mutated(OperatorMutation::MaxWatermark)),
            watermark: MIN_WATERMARK,
        }));
        let shared = (&out, &sides, &b.drops);
        subscribe_co(port_of::<I1>(&inputs[0]), (&op, 0), shared, |f, v, ctx| {
            f.process_element1(v, ctx)
        });
        subscribe_co(port_of::<I2>(&inputs[1]), (&op, 1), shared, |f, v, ctx| {
            f.process_element2(v, ctx)
        });
        Ok(Outputs {
            main: Box::new(out),
            sides,
        })
    }
}

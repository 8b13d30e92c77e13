//! Side outputs: extra typed streams an operator can emit to, named by an [`OutputTag`].

use crate::port::PortRef;
use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::rc::Rc;

/// Names a side output carrying values of type `T`.
#[derive(Debug)]
pub struct OutputTag<T> {
    name: &'static str,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for OutputTag<T> {}

impl<T> OutputTag<T> {
    /// A side output called `name`.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _t: PhantomData,
        }
    }

    /// The tag's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The side output ports of one operator, created on first use.
#[derive(Clone, Default)]
pub(crate) struct SidePorts(Rc<RefCell<BTreeMap<String, Box<dyn Any>>>>);

impl SidePorts {
    /// The port for `tag`.
    pub fn port<T: Clone + 'static>(&self, tag: &OutputTag<T>) -> PortRef<T> {
        self.port_named(tag.name)
    }

    /// The port of the side output called `name`. A name used with two different types is a
    /// bug in the job, which the API's typed tags rule out.
    pub fn port_named<T: Clone + 'static>(&self, name: &str) -> PortRef<T> {
        let mut ports = self.0.borrow_mut();
        let entry = ports
            .entry(name.to_string())
            .or_insert_with(|| Box::new(PortRef::<T>::new()));
        entry
            .downcast_ref::<PortRef<T>>()
            .unwrap_or_else(|| panic!("side output {name:?} is used with two different types"))
            .clone()
    }
}

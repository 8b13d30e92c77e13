//! What a window keeps and computes: an incremental aggregate, a running reduce, or every
//! element for a function that sees the whole window.

use super::{TimeWindow, Windowed};
use crate::state::{
    AggregateFunction, AggregatingStateDescriptor, KeyedStore, ListStateDescriptor,
    ReducingStateDescriptor, StateError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::rc::Rc;

/// Name of the state holding window contents.
const CONTENTS: &str = "window-contents";

/// The contents of windows and the results they produce. Each subtask runs its own clone.
pub(crate) trait WindowLogic<K, T>: Clone {
    /// What a firing emits.
    type Out: Clone + 'static;
    /// Adds `value` to the window whose state lives in namespace `ns`; returns whether the
    /// window was empty before.
    fn add(&mut self, store: &mut KeyedStore, ns: &[u8], value: &T) -> Result<bool, StateError>;
    /// Moves the contents of namespace `from` into `into` (merging sessions).
    fn merge(&mut self, store: &mut KeyedStore, into: &[u8], from: &[u8])
    -> Result<(), StateError>;
    /// The results of firing `window`, whose state lives in `ns`.
    fn fire(
        &mut self,
        store: &mut KeyedStore,
        key: &K,
        window: &TimeWindow,
        ns: &[u8],
        out: &mut Vec<Self::Out>,
    ) -> Result<(), StateError>;
    /// Drops the window's contents.
    fn clear(&mut self, store: &mut KeyedStore, ns: &[u8]) -> Result<(), StateError>;
}

/// Keeps an accumulator per window.
pub(crate) struct AggregateLogic<T, A: AggregateFunction<T>> {
    desc: AggregatingStateDescriptor<T, A::Acc, A::Out>,
}

impl<T, A: AggregateFunction<T>> Clone for AggregateLogic<T, A> {
    fn clone(&self) -> Self {
        Self {
            desc: self.desc.clone(),
        }
    }
}

impl<T, A: AggregateFunction<T> + 'static> AggregateLogic<T, A> {
    pub fn new(agg: A) -> Self {
        Self {
            desc: AggregatingStateDescriptor::new(CONTENTS, agg),
        }
    }
}

impl<K: Clone + 'static, T, A> WindowLogic<K, T> for AggregateLogic<T, A>
where
    A: AggregateFunction<T> + 'static,
    A::Out: Clone + 'static,
{
    type Out = Windowed<K, A::Out>;

    fn add(&mut self, store: &mut KeyedStore, ns: &[u8], value: &T) -> Result<bool, StateError> {
        store.aggregating(&self.desc, ns)?.add(value)
    }

    fn merge(
        &mut self,
        store: &mut KeyedStore,
        into: &[u8],
        from: &[u8],
    ) -> Result<(), StateError> {
        let mut src = store.aggregating(&self.desc, from)?;
        let Some(acc) = src.accumulator()? else {
            return Ok(());
        };
        src.clear()?;
        store.aggregating(&self.desc, into)?.merge_accumulator(acc)
    }

    fn fire(
        &mut self,
        store: &mut KeyedStore,
        key: &K,
        window: &TimeWindow,
        ns: &[u8],
        out: &mut Vec<Self::Out>,
    ) -> Result<(), StateError> {
        if let Some(value) = store.aggregating(&self.desc, ns)?.get()? {
            out.push(Windowed {
                key: key.clone(),
                window: *window,
                value,
            });
        }
        Ok(())
    }

    fn clear(&mut self, store: &mut KeyedStore, ns: &[u8]) -> Result<(), StateError> {
        store.aggregating(&self.desc, ns)?.clear()
    }
}

/// Keeps a running reduction per window.
pub(crate) struct ReduceLogic<T> {
    desc: ReducingStateDescriptor<T>,
    reduce: Rc<dyn Fn(T, T) -> T>,
}

impl<T> Clone for ReduceLogic<T> {
    fn clone(&self) -> Self {
        Self {
            desc: self.desc.clone(),
            reduce: Rc::clone(&self.reduce),
        }
    }
}

impl<T: 'static> ReduceLogic<T> {
    pub fn new(reduce: impl Fn(T, T) -> T + 'static) -> Self {
        let reduce: Rc<dyn Fn(T, T) -> T> = Rc::new(reduce);
        let r = Rc::clone(&reduce);
        Self {
            desc: ReducingStateDescriptor::new(CONTENTS, move |a, b| r(a, b)),
            reduce,
        }
    }
}

impl<K: Clone + 'static, T: Clone + Serialize + DeserializeOwned + 'static> WindowLogic<K, T>
    for ReduceLogic<T>
{
    type Out = Windowed<K, T>;

    fn add(&mut self, store: &mut KeyedStore, ns: &[u8], value: &T) -> Result<bool, StateError> {
        store.reducing(&self.desc, ns)?.add(value.clone())
    }

    fn merge(
        &mut self,
        store: &mut KeyedStore,
        into: &[u8],
        from: &[u8],
    ) -> Result<(), StateError> {
        let mut src = store.reducing(&self.desc, from)?;
        let Some(v) = src.get()? else { return Ok(()) };
        src.clear()?;
        let mut dst = store.reducing(&self.desc, into)?;
        let merged = match dst.get()? {
            Some(current) => (self.reduce)(current, v),
            None => v,
        };
        dst.clear()?;
        dst.add(merged)?;
        Ok(())
    }

    fn fire(
        &mut self,
        store: &mut KeyedStore,
        key: &K,
        window: &TimeWindow,
        ns: &[u8],
        out: &mut Vec<Self::Out>,
    ) -> Result<(), StateError> {
        if let Some(value) = store.reducing(&self.desc, ns)?.get()? {
            out.push(Windowed {
                key: key.clone(),
                window: *window,
                value,
            });
        }
        Ok(())
    }

    fn clear(&mut self, store: &mut KeyedStore, ns: &[u8]) -> Result<(), StateError> {
        store.reducing(&self.desc, ns)?.clear()
    }
}

/// Keeps every element; the function sees the whole window when it fires.
pub(crate) struct ProcessLogic<T, F> {
    desc: ListStateDescriptor<T>,
    f: F,
}

impl<T, F: Clone> Clone for ProcessLogic<T, F> {
    fn clone(&self) -> Self {
        Self {
            desc: self.desc,
            f: self.f.clone(),
        }
    }
}

impl<T, F> ProcessLogic<T, F> {
    pub fn new(f: F) -> Self {
        Self {
            desc: ListStateDescriptor::new(CONTENTS),
            f,
        }
    }
}

impl<K, T, O, F> WindowLogic<K, T> for ProcessLogic<T, F>
where
    T: Clone + Serialize + DeserializeOwned + 'static,
    O: Clone + 'static,
    F: FnMut(&K, &TimeWindow, Vec<T>) -> Vec<O> + Clone,
{
    type Out = O;

    fn add(&mut self, store: &mut KeyedStore, ns: &[u8], value: &T) -> Result<bool, StateError> {
        store.list(&self.desc, ns)?.add(value)
    }

    fn merge(
        &mut self,
        store: &mut KeyedStore,
        into: &[u8],
        from: &[u8],
    ) -> Result<(), StateError> {
        let mut src = store.list(&self.desc, from)?;
        let values = src.get()?;
        src.clear()?;
        let mut dst = store.list(&self.desc, into)?;
        for v in &values {
            dst.add(v)?;
        }
        Ok(())
    }

    fn fire(
        &mut self,
        store: &mut KeyedStore,
        key: &K,
        window: &TimeWindow,
        ns: &[u8],
        out: &mut Vec<Self::Out>,
    ) -> Result<(), StateError> {
        let values = store.list(&self.desc, ns)?.get()?;
        if !values.is_empty() {
            out.extend((self.f)(key, window, values));
        }
        Ok(())
    }

    fn clear(&mut self, store: &mut KeyedStore, ns: &[u8]) -> Result<(), StateError> {
        store.list(&self.desc, ns)?.clear()
    }
}

//! Typed state handles and their descriptors.
//!
//! A descriptor names a state and says how it behaves (its time-to-live, its reduce or
//! aggregate function). Binding it to a [`KeyedStore`] gives a handle scoped to the current key
//! and a namespace.

use super::{KeyedStore, StateError, StateKind, decode, encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::rc::Rc;

/// When a state entry's time-to-live restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlUpdate {
    /// On creation and on every write.
    OnCreateAndWrite,
    /// On reads as well as writes.
    OnReadAndWrite,
}

/// Expiry of state entries in processing time; an expired entry is never returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateTtlConfig {
    /// Time to live, in milliseconds.
    pub ttl_ms: i64,
    /// What restarts the clock.
    pub update: TtlUpdate,
}

impl StateTtlConfig {
    /// Entries expire `ttl_ms` after they were last written.
    pub const fn after_write(ttl_ms: i64) -> Self {
        Self {
            ttl_ms,
            update: TtlUpdate::OnCreateAndWrite,
        }
    }

    /// Entries expire `ttl_ms` after they were last read or written.
    pub const fn after_access(ttl_ms: i64) -> Self {
        Self {
            ttl_ms,
            update: TtlUpdate::OnReadAndWrite,
        }
    }
}

/// Stores `payload` with its expiry in front when a TTL applies.
fn wrap(ttl: Option<StateTtlConfig>, now: i64, payload: Vec<u8>) -> Vec<u8> {
    match ttl {
        None => payload,
        Some(t) => {
            let mut v = Vec::with_capacity(8 + payload.len());
            v.extend_from_slice(&now.saturating_add(t.ttl_ms).to_be_bytes());
            v.extend(payload);
            v
        }
    }
}

/// The payload of a stored entry, or `None` if it has expired.
fn unwrap(
    ttl: Option<StateTtlConfig>,
    now: i64,
    stored: &[u8],
) -> Result<Option<&[u8]>, StateError> {
    match ttl {
        None => Ok(Some(stored)),
        Some(_) => {
            let head: [u8; 8] = stored
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| StateError::Codec("entry too short for its expiry".into()))?;
            if now >= i64::from_be_bytes(head) {
                Ok(None)
            } else {
                Ok(Some(&stored[8..]))
            }
        }
    }
}

/// Reads one entry through its TTL, deleting it if expired and refreshing it if reads count.
fn read_entry(
    store: &mut KeyedStore,
    cell: &[u8],
    entry: &[u8],
    ttl: Option<StateTtlConfig>,
) -> Result<Option<Vec<u8>>, StateError> {
    let Some(stored) = store.backend_ref().get(cell, entry)? else {
        return Ok(None);
    };
    if ttl.is_none() {
        return Ok(Some(stored));
    }
    let now = store.now_ms();
    let Some(payload) = unwrap(ttl, now, &stored)?.map(<[u8]>::to_vec) else {
        store.backend().delete(cell, entry)?;
        return Ok(None);
    };
    if ttl.is_some_and(|t| t.update == TtlUpdate::OnReadAndWrite) {
        store
            .backend()
            .put(cell, entry, &wrap(ttl, now, payload.clone()))?;
    }
    Ok(Some(payload))
}

fn write_entry(
    store: &mut KeyedStore,
    cell: &[u8],
    entry: &[u8],
    ttl: Option<StateTtlConfig>,
    payload: Vec<u8>,
) -> Result<(), StateError> {
    let now = if ttl.is_some() { store.now_ms() } else { 0 };
    store.backend().put(cell, entry, &wrap(ttl, now, payload))
}

macro_rules! descriptor {
    ($(#[$doc:meta])* $name:ident < $($t:ident),* >) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name<$($t),*> {
            name: &'static str,
            ttl: Option<StateTtlConfig>,
            _t: PhantomData<fn() -> ($($t,)*)>,
        }

        impl<$($t),*> Clone for $name<$($t),*> {
            fn clone(&self) -> Self {
                *self
            }
        }

        impl<$($t),*> Copy for $name<$($t),*> {}

        impl<$($t),*> $name<$($t),*> {
            /// A state called `name` (unique within its operator).
            pub const fn new(name: &'static str) -> Self {
                Self { name, ttl: None, _t: PhantomData }
            }

            /// Entries expire per `ttl`.
            pub const fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
                self.ttl = Some(ttl);
                self
            }

            /// The state's name.
            pub fn name(&self) -> &'static str {
                self.name
            }
        }
    };
}

descriptor!(
    /// Describes a [`ValueState`].
    ValueStateDescriptor<T>
);
descriptor!(
    /// Describes a [`ListState`].
    ListStateDescriptor<T>
);
descriptor!(
    /// Describes a [`MapState`].
    MapStateDescriptor<K, V>
);

/// One value per key and namespace.
pub struct ValueState<'a, T> {
    store: &'a mut KeyedStore,
    cell: Vec<u8>,
    ttl: Option<StateTtlConfig>,
    _t: PhantomData<T>,
}

impl<'a, T: Serialize + DeserializeOwned> ValueState<'a, T> {
    pub(crate) fn bind(
        store: &'a mut KeyedStore,
        d: &ValueStateDescriptor<T>,
        ns: &[u8],
    ) -> Result<Self, StateError> {
        let id = store.state_id(d.name, StateKind::Value)?;
        let cell = store.cell(id, ns);
        Ok(Self {
            store,
            cell,
            ttl: d.ttl,
            _t: PhantomData,
        })
    }

    /// The value, if set and not expired.
    pub fn get(&mut self) -> Result<Option<T>, StateError> {
        read_entry(self.store, &self.cell, b"", self.ttl)?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Sets the value.
    pub fn update(&mut self, v: &T) -> Result<(), StateError> {
        write_entry(self.store, &self.cell, b"", self.ttl, encode(v)?)
    }

    /// Removes the value.
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.store.backend().delete(&self.cell, b"")
    }
}

/// A list per key and namespace; appends do not rewrite the list.
pub struct ListState<'a, T> {
    store: &'a mut KeyedStore,
    cell: Vec<u8>,
    ttl: Option<StateTtlConfig>,
    _t: PhantomData<T>,
}

impl<'a, T: Serialize + DeserializeOwned> ListState<'a, T> {
    pub(crate) fn bind(
        store: &'a mut KeyedStore,
        d: &ListStateDescriptor<T>,
        ns: &[u8],
    ) -> Result<Self, StateError> {
        let id = store.state_id(d.name, StateKind::List)?;
        let cell = store.cell(id, ns);
        Ok(Self {
            store,
            cell,
            ttl: d.ttl,
            _t: PhantomData,
        })
    }

    fn next_position(&self) -> Result<u64, StateError> {
        let last = self.store.backend_ref().last_entry(&self.cell)?;
        Ok(match last {
            Some((k, _)) => {
                let pos: [u8; 8] = k
                    .as_slice()
                    .try_into()
                    .map_err(|_| StateError::Codec("list position is not 8 bytes".into()))?;
                u64::from_be_bytes(pos) + 1
            }
            None => 0,
        })
    }

    /// Appends `v`. Returns whether the list was empty.
    pub fn add(&mut self, v: &T) -> Result<bool, StateError> {
        let pos = self.next_position()?;
        write_entry(
            self.store,
            &self.cell,
            &pos.to_be_bytes(),
            self.ttl,
            encode(v)?,
        )?;
        Ok(pos == 0)
    }

    /// Every element not expired, in insertion order.
    pub fn get(&mut self) -> Result<Vec<T>, StateError> {
        let now = self.store.now_ms();
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for (k, stored) in self.store.backend_ref().entries(&self.cell)? {
            match unwrap(self.ttl, now, &stored)? {
                Some(payload) => out.push(decode(payload)?),
                None => expired.push(k),
            }
        }
        for k in expired {
            self.store.backend().delete(&self.cell, &k)?;
        }
        Ok(out)
    }

    /// Replaces the list.
    pub fn update(&mut self, values: &[T]) -> Result<(), StateError> {
        self.clear()?;
        for v in values {
            self.add(v)?;
        }
        Ok(())
    }

    /// Empties the list.
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.store.backend().delete_cell(&self.cell)
    }
}

/// A map per key and namespace.
pub struct MapState<'a, K, V> {
    store: &'a mut KeyedStore,
    cell: Vec<u8>,
    ttl: Option<StateTtlConfig>,
    _t: PhantomData<(K, V)>,
}

impl<'a, K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MapState<'a, K, V> {
    pub(crate) fn bind(
        store: &'a mut KeyedStore,
        d: &MapStateDescriptor<K, V>,
        ns: &[u8],
    ) -> Result<Self, StateError> {
        let id = store.state_id(d.name, StateKind::Map)?;
        let cell = store.cell(id, ns);
        Ok(Self {
            store,
            cell,
            ttl: d.ttl,
            _t: PhantomData,
        })
    }

    /// The value under `k`.
    pub fn get(&mut self, k: &K) -> Result<Option<V>, StateError> {
        let entry = encode(k)?;
        read_entry(self.store, &self.cell, &entry, self.ttl)?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Sets `k` to `v`.
    pub fn put(&mut self, k: &K, v: &V) -> Result<(), StateError> {
        let entry = encode(k)?;
        write_entry(self.store, &self.cell, &entry, self.ttl, encode(v)?)
    }

    /// Removes `k`.
    pub fn remove(&mut self, k: &K) -> Result<(), StateError> {
        let entry = encode(k)?;
        self.store.backend().delete(&self.cell, &entry)
    }

    /// Every entry not expired, in key-byte order.
    pub fn entries(&mut self) -> Result<Vec<(K, V)>, StateError> {
        let now = self.store.now_ms();
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for (k, stored) in self.store.backend_ref().entries(&self.cell)? {
            match unwrap(self.ttl, now, &stored)? {
                Some(payload) => out.push((decode(&k)?, decode(payload)?)),
                None => expired.push(k),
            }
        }
        for k in expired {
            self.store.backend().delete(&self.cell, &k)?;
        }
        Ok(out)
    }

    /// Empties the map.
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.store.backend().delete_cell(&self.cell)
    }
}

/// Describes a [`ReducingState`]: values are combined with `reduce` as they are added.
pub struct ReducingStateDescriptor<T> {
    name: &'static str,
    ttl: Option<StateTtlConfig>,
    reduce: Rc<dyn Fn(T, T) -> T>,
}

impl<T> Clone for ReducingStateDescriptor<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            ttl: self.ttl,
            reduce: Rc::clone(&self.reduce),
        }
    }
}

impl<T> ReducingStateDescriptor<T> {
    /// A state called `name` that combines values with `reduce`.
    pub fn new(name: &'static str, reduce: impl Fn(T, T) -> T + 'static) -> Self {
        Self {
            name,
            ttl: None,
            reduce: Rc::new(reduce),
        }
    }

    /// Entries expire per `ttl`.
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// One value per key and namespace, combined with each value added.
pub struct ReducingState<'a, T> {
    value: ValueState<'a, T>,
    reduce: &'a dyn Fn(T, T) -> T,
}

impl<'a, T: Serialize + DeserializeOwned> ReducingState<'a, T> {
    pub(crate) fn bind(
        store: &'a mut KeyedStore,
        d: &'a ReducingStateDescriptor<T>,
        ns: &[u8],
    ) -> Result<Self, StateError> {
        let id = store.state_id(d.name, StateKind::Reducing)?;
        let cell = store.cell(id, ns);
        Ok(Self {
            value: ValueState {
                store,
                cell,
                ttl: d.ttl,
                _t: PhantomData,
            },
            reduce: d.reduce.as_ref(),
        })
    }

    /// The combined value.
    pub fn get(&mut self) -> Result<Option<T>, StateError> {
        self.value.get()
    }

    /// Combines `v` into the value. Returns whether there was no value before.
    pub fn add(&mut self, v: T) -> Result<bool, StateError> {
        let (next, first) = match self.value.get()? {
            Some(current) => ((self.reduce)(current, v), false),
            None => (v, true),
        };
        self.value.update(&next)?;
        Ok(first)
    }

    /// Removes the value.
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.value.clear()
    }
}

/// An incremental aggregation: values are folded into an accumulator as they arrive.
pub trait AggregateFunction<In> {
    /// The running state.
    type Acc: Serialize + DeserializeOwned + Clone;
    /// The result.
    type Out;
    /// A fresh accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Folds one value in.
    fn add(&self, value: &In, acc: &mut Self::Acc);
    /// The result so far.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
    /// Combines two accumulators (session windows merging).
    fn merge(&self, into: &mut Self::Acc, other: Self::Acc);
}

/// Describes an [`AggregatingState`].
pub struct AggregatingStateDescriptor<I, A, O> {
    name: &'static str,
    ttl: Option<StateTtlConfig>,
    agg: Rc<dyn AggregateFunction<I, Acc = A, Out = O>>,
}

impl<I, A, O> Clone for AggregatingStateDescriptor<I, A, O> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            ttl: self.ttl,
            agg: Rc::clone(&self.agg),
        }
    }
}

impl<I, A, O> AggregatingStateDescriptor<I, A, O> {
    /// A state called `name` that aggregates with `agg`.
    pub fn new(
        name: &'static str,
        agg: impl AggregateFunction<I, Acc = A, Out = O> + 'static,
    ) -> Self {
        Self {
            name,
            ttl: None,
            agg: Rc::new(agg),
        }
    }

    /// Entries expire per `ttl`.
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// An accumulator per key and namespace.
pub struct AggregatingState<'a, I, A, O> {
    acc: ValueState<'a, A>,
    agg: &'a dyn AggregateFunction<I, Acc = A, Out = O>,
}

impl<'a, I, A: Serialize + DeserializeOwned + Clone, O> AggregatingState<'a, I, A, O> {
    pub(crate) fn bind(
        store: &'a mut KeyedStore,
        d: &'a AggregatingStateDescriptor<I, A, O>,
        ns: &[u8],
    ) -> Result<Self, StateError> {
        let id = store.state_id(d.name, StateKind::Aggregating)?;
        let cell = store.cell(id, ns);
        Ok(Self {
            acc: ValueState {
                store,
                cell,
                ttl: d.ttl,
                _t: PhantomData,
            },
            agg: d.agg.as_ref(),
        })
    }

    /// The result so far, if anything was added.
    pub fn get(&mut self) -> Result<Option<O>, StateError> {
        Ok(self.acc.get()?.map(|a| self.agg.get_result(&a)))
    }

    /// Folds `v` in. Returns whether nothing had been added before.
    pub fn add(&mut self, v: &I) -> Result<bool, StateError> {
        let (mut acc, first) = match self.acc.get()? {
            Some(acc) => (acc, false),
            None => (self.agg.create_accumulator(), true),
        };
        self.agg.add(v, &mut acc);
        self.acc.update(&acc)?;
        Ok(first)
    }

    /// The raw accumulator.
    pub fn accumulator(&mut self) -> Result<Option<A>, StateError> {
        self.acc.get()
    }

    /// Merges `other` into the accumulator.
    pub fn merge_accumulator(&mut self, other: A) -> Result<(), StateError> {
        let acc = match self.acc.get()? {
            Some(mut acc) => {
                self.agg.merge(&mut acc, other);
                acc
            }
            None => other,
        };
        self.acc.update(&acc)
    }

    /// Removes the accumulator.
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.acc.clear()
    }
}

//! Keyed state: typed handles over a byte-oriented [`StateBackend`], scoped to the key of the
//! record being processed and to a namespace (the window, for window operators).
//!
//! A cell is `[state id: u16][key group: u16][key length: u32][key][namespace]`; within it,
//! entries hold list positions and map keys. The key group lets a snapshot be split by key
//! range when a job is rescaled.

mod aggregates;
mod backend;
mod handles;

pub use aggregates::CountSum;
pub use backend::{Entry, HeapBackend, SavedEntry, StateBackend};
pub use handles::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor,
    StateTtlConfig, TtlUpdate, ValueState, ValueStateDescriptor,
};

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_seams::clock::Clock;
use xxhash_rust::xxh3::xxh3_64;

/// Key groups a job can be split into; the most parallel a keyed operator can run.
pub const MAX_PARALLELISM: u16 = 128;

/// Why state could not be read or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A value did not serialize or deserialize.
    #[error("state codec: {0}")]
    Codec(String),
    /// A state name was registered twice with different kinds.
    #[error("state {name:?} is registered as {existing} and cannot be used as {requested}")]
    KindMismatch {
        /// State name.
        name: String,
        /// Kind it was registered with.
        existing: &'static str,
        /// Kind requested now.
        requested: &'static str,
    },
    /// The backend failed.
    #[error("state backend: {0}")]
    Backend(String),
    /// Too many states in one operator.
    #[error("an operator may register at most {0} states")]
    TooManyStates(usize),
}

/// Serializes a state value.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StateError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .map_err(|e| StateError::Codec(e.to_string()))
}

/// Deserializes a state value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StateError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StateError::Codec(e.to_string()))
}

/// The key group of a serialized key.
pub fn key_group(key: &[u8]) -> u16 {
    (xxh3_64(key) % u64::from(MAX_PARALLELISM)) as u16
}

/// The subtask, of `parallelism`, that owns key group `group`: subtasks own contiguous ranges
/// of key groups, so that a job rescaled from a savepoint can hand each subtask whole ranges.
pub fn subtask_of_key_group(group: u16, parallelism: u32) -> u32 {
    assert!(
        (1..=u32::from(MAX_PARALLELISM)).contains(&parallelism),
        "parallelism {parallelism} is outside 1..={MAX_PARALLELISM}"
    );
    assert!(group < MAX_PARALLELISM, "key group {group} out of range");
    u32::from(group) * parallelism / u32::from(MAX_PARALLELISM)
}

/// The kinds of keyed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum StateKind {
    Value,
    List,
    Map,
    Reducing,
    Aggregating,
}

impl StateKind {
    fn name(self) -> &'static str {
        match self {
            StateKind::Value => "value state",
            StateKind::List => "list state",
            StateKind::Map => "map state",
            StateKind::Reducing => "reducing state",
            StateKind::Aggregating => "aggregating state",
        }
    }
}

/// The keyed state of one operator instance.
pub struct KeyedStore {
    backend: Box<dyn StateBackend>,
    /// State names, their ids (the index) and kinds. A handful per operator, searched in order.
    registry: Vec<(String, StateKind)>,
    key: Vec<u8>,
    key_group: u16,
    clock: Clock,
}

/// A snapshot of a [`KeyedStore`]: its state registry and every entry.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreSnapshot {
    registry: Vec<(String, u16, StateKind)>,
    entries: Vec<SavedEntry>,
}

impl KeyedStore {
    /// A store over `backend`, reading processing time (for TTL) from `clock`.
    pub fn new(backend: Box<dyn StateBackend>, clock: Clock) -> Self {
        Self {
            backend,
            registry: Vec::new(),
            key: Vec::new(),
            key_group: 0,
            clock,
        }
    }

    /// Makes `key` (serialized) the current key.
    pub fn set_key(&mut self, key: Vec<u8>) {
        self.key_group = key_group(&key);
        self.key = key;
    }

    /// The current key, serialized.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Processing time, for TTL.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn backend(&mut self) -> &mut dyn StateBackend {
        self.backend.as_mut()
    }

    pub(crate) fn backend_ref(&self) -> &dyn StateBackend {
        self.backend.as_ref()
    }

    /// The id of state `name`, registering it on first use.
    pub(crate) fn state_id(&mut self, name: &str, kind: StateKind) -> Result<u16, StateError> {
        if let Some(i) = self.registry.iter().position(|(n, _)| n == name) {
            let existing = self.registry[i].1;
            if existing != kind {
                return Err(StateError::KindMismatch {
                    name: name.into(),
                    existing: existing.name(),
                    requested: kind.name(),
                });
            }
            return Ok(i as u16);
        }
        let id = u16::try_from(self.registry.len())
            .map_err(|_| StateError::TooManyStates(usize::from(u16::MAX)))?;
        self.registry.push((name.to_string(), kind));
        Ok(id)
    }

    /// The cell of state `id` for the current key in namespace `ns`.
    pub(crate) fn cell(&self, id: u16, ns: &[u8]) -> Vec<u8> {
        let mut c = Vec::with_capacity(8 + self.key.len() + ns.len());
        c.extend_from_slice(&id.to_be_bytes());
        c.extend_from_slice(&self.key_group.to_be_bytes());
        c.extend_from_slice(&(self.key.len() as u32).to_be_bytes());
        c.extend_from_slice(&self.key);
        c.extend_from_slice(ns);
        c
    }

    /// Removes every state of the current key in namespace `ns`.
    pub fn clear_namespace(&mut self, ns: &[u8]) -> Result<(), StateError> {
        for id in 0..self.registry.len() as u16 {
            let c = self.cell(id, ns);
            self.backend.delete_cell(&c)?;
        }
        Ok(())
    }

    /// A value state of the current key in namespace `ns`.
    pub fn value<'a, T: Serialize + DeserializeOwned>(
        &'a mut self,
        d: &ValueStateDescriptor<T>,
        ns: &[u8],
    ) -> Result<ValueState<'a, T>, StateError> {
        ValueState::bind(self, d, ns)
    }

    /// A list state of the current key in namespace `ns`.
    pub fn list<'a, T: Serialize + DeserializeOwned>(
        &'a mut self,
        d: &ListStateDescriptor<T>,
        ns: &[u8],
    ) -> Result<ListState<'a, T>, StateError> {
        ListState::bind(self, d, ns)
    }

    /// A map state of the current key in namespace `ns`.
    pub fn map<'a, K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
        &'a mut self,
        d: &MapStateDescriptor<K, V>,
        ns: &[u8],
    ) -> Result<MapState<'a, K, V>, StateError> {
        MapState::bind(self, d, ns)
    }

    /// A reducing state of the current key in namespace `ns`.
    pub fn reducing<'a, T: Serialize + DeserializeOwned>(
        &'a mut self,
        d: &'a ReducingStateDescriptor<T>,
        ns: &[u8],
    ) -> Result<ReducingState<'a, T>, StateError> {
        ReducingState::bind(self, d, ns)
    }

    /// An aggregating state of the current key in namespace `ns`.
    pub fn aggregating<'a, I, A: Serialize + DeserializeOwned + Clone, O>(
        &'a mut self,
        d: &'a AggregatingStateDescriptor<I, A, O>,
        ns: &[u8],
    ) -> Result<AggregatingState<'a, I, A, O>, StateError> {
        AggregatingState::bind(self, d, ns)
    }

    /// Number of entries, across all keys and states.
    pub fn len(&self) -> usize {
        self.backend.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.backend.is_empty()
    }

    /// Bytes of state held.
    pub fn size_bytes(&self) -> u64 {
        self.backend.size_bytes()
    }

    /// Takes a snapshot of everything.
    pub fn snapshot(&self) -> Result<StoreSnapshot, StateError> {
        Ok(StoreSnapshot {
            registry: self
                .registry
                .iter()
                .enumerate()
                .map(|(id, (n, k))| (n.clone(), id as u16, *k))
                .collect(),
            entries: self.backend.save()?,
        })
    }

    /// Replaces everything with a snapshot.
    pub fn restore(&mut self, snap: StoreSnapshot) -> Result<(), StateError> {
        let mut registry = snap.registry;
        registry.sort_by_key(|(_, id, _)| *id);
        if registry
            .iter()
            .enumerate()
            .any(|(i, (_, id, _))| usize::from(*id) != i)
        {
            return Err(StateError::Codec(
                "state ids in the snapshot are not dense".into(),
            ));
        }
        self.registry = registry.into_iter().map(|(n, _, k)| (n, k)).collect();
        self.backend.load(snap.entries)
    }
}

#[cfg(test)]
mod tests;

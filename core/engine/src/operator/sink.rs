//! Sinks as operators: a sink vertex turns each record into key and value bytes and stages
//! the row; the task hands staged rows to the sink's writer (a topic's transactions, a table,
//! or a collection) and commits them with the checkpoints.

use super::tuples::Anchors;
use super::{AnyPort, Build, port_of};
use crate::element::Element;
use crate::runtime::table::{TableError, TableFuture, TableRow, TableState, TableStore};
use bytes::Bytes;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// A row bound for a sink: key and value bytes and the record's event time; under the Storm
/// model, the tuple trees it is anchored in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SinkRow {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub ts: i64,
    pub anchors: Anchors,
}

/// Rows a sink subtask staged since the task last drained it.
pub(crate) type SinkRows = Rc<RefCell<Vec<SinkRow>>>;

/// Turns a record into its key (if any) and value.
pub(crate) type Serializer<T> = Rc<dyn Fn(&T) -> Result<(Option<Vec<u8>>, Vec<u8>), String>>;

/// Builds one sink subtask's input.
pub(crate) trait SinkFactory {
    /// Subscribes the sink to `input` and returns where it stages rows.
    fn create(&self, b: &mut Build<'_>, input: AnyPort) -> SinkRows;
    /// For a collecting sink, the store its commits go to.
    fn collector(&self) -> Option<Arc<CollectStore>>;
}

/// A sink of records of `T`.
pub(crate) struct RowSinkFactory<T> {
    pub serializer: Serializer<T>,
    pub collector: Option<Arc<CollectStore>>,
    pub _t: PhantomData<fn(T)>,
}

impl<T: Clone + 'static> SinkFactory for RowSinkFactory<T> {
    fn create(&self, b: &mut Build<'_>, input: AnyPort) -> SinkRows {
        let rows: SinkRows = Rc::new(RefCell::new(Vec::new()));
        let (staged, serializer, failure) = (
            Rc::clone(&rows),
            Rc::clone(&self.serializer),
            b.failure.clone(),
        );
        let (clock, uid, tuples) = (b.clock, b.uid.to_string(), b.tuples.clone());
        port_of::<T>(&input).subscribe(Box::new(move |el| {
            let Element::Record(r) = el else { return };
            match serializer(&r.value) {
                Ok((key, value)) => staged.borrow_mut().push(SinkRow {
                    key: key.map(Bytes::from),
                    value: Bytes::from(value),
                    ts: r.timestamp.unwrap_or_else(|| clock.now_ms()),
                    anchors: tuples.as_ref().map(|t| t.emit()).unwrap_or_default(),
                }),
                Err(e) => failure.set(format!("{uid}: serialize: {e}")),
            }
        }));
        rows
    }

    fn collector(&self) -> Option<Arc<CollectStore>> {
        self.collector.clone()
    }
}

/// Most rows a collection keeps: a test's output, not a store.
pub const COLLECTED_ROWS_MAX: usize = 1_000_000;

/// What a collecting sink has committed, in the order its writers committed it.
#[derive(Debug, Default)]
struct Collection {
    rows: Vec<TableRow>,
    /// The rows' upsert view and each writer's last commit: the guard that applies every
    /// checkpoint's rows once, as a table's does.
    table: TableState,
}

/// Memory that collecting sinks commit to, exactly once per checkpoint: an in-process stand-in
/// for an external store, for tests and local runs.
#[derive(Debug, Default)]
pub struct CollectStore(Mutex<Collection>);

impl CollectStore {
    /// Every committed row's value and event time, in commit order.
    pub fn values(&self) -> Vec<(String, i64)> {
        let c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.rows.iter().map(|r| (r.value.clone(), r.ts)).collect()
    }

    /// How many rows were committed.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).rows.len()
    }

    /// Forgets everything, for a fresh run.
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Collection::default();
    }
}

impl TableStore for CollectStore {
    fn commit<'a>(
        &'a self,
        writer: &'a str,
        checkpoint_id: u64,
        rows: &'a [TableRow],
    ) -> TableFuture<'a, bool> {
        Box::pin(async move {
            let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if c.rows.len() + rows.len() > COLLECTED_ROWS_MAX {
                return Err(TableError::Refused(format!(
                    "a collection holds at most {COLLECTED_ROWS_MAX} rows"
                )));
            }
            let applied = c
                .table
                .apply(writer, checkpoint_id, rows, COLLECTED_ROWS_MAX)?;
            if applied {
                c.rows.extend_from_slice(rows);
            }
            Ok(applied)
        })
    }

    fn scan(&self) -> TableFuture<'_, crate::runtime::table::TableContent> {
        Box::pin(async move {
            let c = self.0.lock().unwrap_or_else(|e| e.into_inner());
            Ok(c.table.rows.clone())
        })
    }
}

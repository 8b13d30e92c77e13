//! User functions: stateless row transformations that a job graph names and every task
//! manager looks up in its registry, the way a cluster loads a job's code. A graph stays plain
//! data that can be sent to task managers and saved; the code lives in the binary.

use super::element::Row;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A stateless transformation: map, filter, flat-map and re-key in one.
pub trait RowFunction: Send + Sync {
    /// Appends the rows `row` becomes to `out` (none drops it).
    fn apply(&self, row: Row, out: &mut Vec<Row>);
}

/// The functions a task manager can run, by name.
#[derive(Clone, Default)]
pub struct Functions(BTreeMap<String, Arc<dyn RowFunction>>);

impl Functions {
    /// Adds `function` under `name`, replacing any function of that name.
    pub fn with(mut self, name: &str, function: Arc<dyn RowFunction>) -> Self {
        self.0.insert(name.to_string(), function);
        self
    }

    /// The function called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn RowFunction>> {
        self.0.get(name).cloned()
    }
}

impl fmt::Debug for Functions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

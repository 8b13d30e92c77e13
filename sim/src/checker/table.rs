//! The checker of a table that a job upserts into: every key must hold the value of its latest
//! input and count exactly as many applied writes as it had inputs. A replay applied twice
//! shows as extra writes even where the final value is right.

use std::fmt;
use weir_workloads::jobs::order_pipeline::ExpectedTable;

/// A broken promise of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableViolation {
    /// A key the input wrote is absent.
    Missing {
        /// The key.
        key: String,
    },
    /// A key no input wrote is present.
    Unexpected {
        /// The key.
        key: String,
    },
    /// A key holds another value than its latest input's.
    Value {
        /// The key.
        key: String,
        /// The expected value, as text.
        expected: String,
        /// The value found, as text.
        found: String,
    },
    /// A key's writes were applied another number of times than it had inputs.
    Writes {
        /// The key.
        key: String,
        /// Inputs for the key.
        expected: u64,
        /// Writes the table applied.
        found: u64,
    },
}

impl fmt::Display for TableViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { key } => write!(f, "lost: key {key} is not in the table"),
            Self::Unexpected { key } => write!(f, "unexpected: key {key} comes from no input"),
            Self::Value {
                key,
                expected,
                found,
            } => write!(f, "key {key} holds {found}, expected {expected}"),
            Self::Writes {
                key,
                expected,
                found,
            } => write!(
                f,
                "key {key} was written {found} times, expected {expected} (exactly once each)"
            ),
        }
    }
}

/// Compares the table's content with the oracle's.
pub fn check_table(expected: &ExpectedTable, found: &ExpectedTable) -> Vec<TableViolation> {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let mut violations = Vec::new();
    for (key, (value, writes)) in expected {
        let Some((found_value, found_writes)) = found.get(key) else {
            violations.push(TableViolation::Missing { key: key.clone() });
            continue;
        };
        if found_value != value {
            violations.push(TableViolation::Value {
                key: key.clone(),
                expected: text(value),
                found: text(found_value),
            });
        }
        if found_writes != writes {
            violations.push(TableViolation::Writes {
                key: key.clone(),
                expected: *writes,
                found: *found_writes,
            });
        }
    }
    for key in found.keys().filter(|k| !expected.contains_key(*k)) {
        violations.push(TableViolation::Unexpected { key: key.clone() });
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, &str, u64)]) -> ExpectedTable {
        rows.iter()
            .map(|(k, v, w)| (k.to_string(), (v.as_bytes().to_vec(), *w)))
            .collect()
    }

    #[test]
    fn an_exact_table_passes() {
        let t = table(&[("1", "a", 2), ("2", "b", 1)]);
        assert!(check_table(&t, &t).is_empty());
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let expected = table(&[("1", "a", 2), ("2", "b", 1), ("3", "c", 1)]);
        let found = table(&[("1", "a", 3), ("2", "x", 1), ("4", "d", 1)]);
        let v = check_table(&expected, &found);
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(v.contains(&TableViolation::Writes {
            key: "1".into(),
            expected: 2,
            found: 3
        }));
        assert!(v.contains(&TableViolation::Missing { key: "3".into() }));
        assert!(v.contains(&TableViolation::Unexpected { key: "4".into() }));
        assert!(matches!(&v[1], TableViolation::Value { key, .. } if key == "2"));
    }
}

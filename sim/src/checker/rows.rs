//! The checker of jobs whose every output record comes from one input record: the committed
//! output must hold each expected record exactly as many times as the oracle says.

use std::collections::BTreeMap;
use std::fmt;
use weir_client::ConsumerRecord;

/// Expected output records, (key, value) to how many times each must appear: what a job's
/// oracle computes.
pub type ExpectedRows = weir_workloads::jobs::ExpectedRecords;

/// A broken promise of the output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowViolation {
    /// A record appears fewer times than expected.
    Lost {
        /// Its value, as text.
        value: String,
        /// Times expected.
        expected: u64,
        /// Times found.
        found: u64,
    },
    /// A record appears more times than expected (at least once).
    Duplicate {
        /// Its value, as text.
        value: String,
        /// Times expected.
        expected: u64,
        /// Times found.
        found: u64,
    },
    /// A record appears that no input yields.
    Unexpected {
        /// Its value, as text.
        value: String,
    },
}

impl fmt::Display for RowViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lost {
                value,
                expected,
                found,
            } => write!(
                f,
                "lost: {value} is committed {found} times, expected {expected}"
            ),
            Self::Duplicate {
                value,
                expected,
                found,
            } => write!(
                f,
                "duplicate: {value} is committed {found} times, expected {expected}"
            ),
            Self::Unexpected { value } => write!(f, "unexpected: {value} comes from no input"),
        }
    }
}

/// Compares the committed output with the expected records.
pub fn check_rows(
    expected: &ExpectedRows,
    output: &BTreeMap<i32, Vec<ConsumerRecord>>,
) -> Vec<RowViolation> {
    let mut found = ExpectedRows::new();
    for r in output.values().flatten() {
        let key = r.key.as_deref().unwrap_or_default().to_vec();
        let value = r.value.as_deref().unwrap_or_default().to_vec();
        *found.entry((key, value)).or_default() += 1;
    }
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let mut violations = Vec::new();
    for ((key, value), want) in expected {
        let got = found
            .get(&(key.clone(), value.clone()))
            .copied()
            .unwrap_or(0);
        if got < *want {
            violations.push(RowViolation::Lost {
                value: text(value),
                expected: *want,
                found: got,
            });
        } else if got > *want {
            violations.push(RowViolation::Duplicate {
                value: text(value),
                expected: *want,
                found: got,
            });
        }
    }
    for (key, value) in found.keys() {
        if !expected.contains_key(&(key.clone(), value.clone())) {
            violations.push(RowViolation::Unexpected { value: text(value) });
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(offset: i64, value: &str) -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            timestamp: 0,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from(value.to_string())),
            headers: Vec::new(),
        }
    }

    #[test]
    fn lost_duplicated_and_unexpected_records_are_named() {
        let expected = ExpectedRows::from([
            ((b"k".to_vec(), b"a".to_vec()), 1),
            ((b"k".to_vec(), b"b".to_vec()), 1),
            ((b"k".to_vec(), b"c".to_vec()), 1),
        ]);
        let output = BTreeMap::from([(
            0,
            vec![
                record(0, "a"),
                record(1, "b"),
                record(2, "b"),
                record(3, "z"),
            ],
        )]);
        let v = check_rows(&expected, &output);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(matches!(&v[0], RowViolation::Duplicate { value, .. } if value == "b"));
        assert!(matches!(&v[1], RowViolation::Lost { value, .. } if value == "c"));
        assert!(matches!(&v[2], RowViolation::Unexpected { value } if value == "z"));
        let exact = BTreeMap::from([(0, vec![record(0, "a"), record(1, "b"), record(2, "c")])]);
        assert!(check_rows(&expected, &exact).is_empty());
    }
}

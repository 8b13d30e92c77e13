//! The consume-transform-produce check: every input record has exactly one output under
//! read_committed, no output lacks an input, and the group's committed offsets cover the
//! whole input.

use super::FinalRead;
use std::collections::BTreeMap;
use std::fmt;

/// An exactly-once anomaly of a consume-transform-produce pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtpViolation {
    /// An input has no output.
    Unprocessed {
        /// The input value.
        input: String,
    },
    /// An input has more than one output.
    Duplicated {
        /// The input value.
        input: String,
        /// Where its outputs are, as (partition, offset).
        at: Vec<(i32, i64)>,
    },
    /// An output whose input is not in the input topic.
    Phantom {
        /// The output value.
        output: String,
    },
    /// The group's committed offset of an input partition stops short of its end.
    Unconsumed {
        /// The input partition.
        partition: i32,
        /// Its committed offset, if any.
        committed: Option<i64>,
        /// Its end.
        end: i64,
    },
    /// The pipeline did not finish within its bound.
    Liveness(String),
}

impl fmt::Display for CtpViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unprocessed { input } => write!(f, "unprocessed: {input} has no output"),
            Self::Duplicated { input, at } => {
                write!(f, "duplicated: {input} has {} outputs at {at:?}", at.len())
            }
            Self::Phantom { output } => write!(f, "phantom: output {output} has no input"),
            Self::Unconsumed {
                partition,
                committed,
                end,
            } => write!(
                f,
                "unconsumed: input partition {partition} committed at {committed:?}, ends at {end}"
            ),
            Self::Liveness(why) => write!(f, "liveness: {why}"),
        }
    }
}

/// What a pipeline left behind: its input, its committed output, and its group's offsets.
pub struct CtpRun<'a> {
    /// The input topic, read to its end.
    pub inputs: &'a FinalRead,
    /// The output topic, read to its end under read_committed.
    pub outputs: &'a FinalRead,
    /// The group's committed offset of each input partition.
    pub committed: &'a BTreeMap<i32, i64>,
    /// Whether the final reads finished.
    pub drained: Result<(), String>,
}

/// Checks a run; `input_of` maps an output value to the input value it was made from.
pub fn check_ctp(run: CtpRun<'_>, input_of: impl Fn(&str) -> Option<&str>) -> Vec<CtpViolation> {
    let mut out = Vec::new();
    if let Err(why) = run.drained {
        out.push(CtpViolation::Liveness(why));
    }
    let mut outputs: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for (p, recs) in run.outputs {
        for (o, v) in recs {
            match input_of(v) {
                Some(input) => outputs.entry(input).or_default().push((*p, *o)),
                None => out.push(CtpViolation::Phantom { output: v.clone() }),
            }
        }
    }
    let mut inputs: BTreeMap<&str, ()> = BTreeMap::new();
    for (p, recs) in run.inputs {
        for (_, v) in recs {
            inputs.insert(v, ());
            match outputs.get(v.as_str()) {
                None => out.push(CtpViolation::Unprocessed { input: v.clone() }),
                Some(at) if at.len() > 1 => out.push(CtpViolation::Duplicated {
                    input: v.clone(),
                    at: at.clone(),
                }),
                Some(_) => {}
            }
        }
        let end = recs.last().map_or(0, |(o, _)| o + 1);
        let committed = run.committed.get(p).copied();
        if committed.is_none_or(|c| c < end) {
            out.push(CtpViolation::Unconsumed {
                partition: *p,
                committed,
                end,
            });
        }
    }
    for input in outputs.keys() {
        if !inputs.contains_key(input) {
            out.push(CtpViolation::Phantom {
                output: (*input).to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(entries: &[(i32, i64, &str)]) -> FinalRead {
        let mut r = FinalRead::new();
        for (p, o, v) in entries {
            r.entry(*p).or_default().push((*o, v.to_string()));
        }
        r
    }

    fn check(inputs: &FinalRead, outputs: &FinalRead, committed: &[(i32, i64)]) -> Vec<String> {
        let committed: BTreeMap<i32, i64> = committed.iter().copied().collect();
        let run = CtpRun {
            inputs,
            outputs,
            committed: &committed,
            drained: Ok(()),
        };
        check_ctp(run, |v| v.strip_prefix("out:"))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn one_output_per_input_passes() {
        let inputs = read(&[(0, 0, "a"), (0, 1, "b"), (1, 0, "c")]);
        let outputs = read(&[(0, 0, "out:b"), (1, 0, "out:a"), (1, 2, "out:c")]);
        assert!(check(&inputs, &outputs, &[(0, 2), (1, 1)]).is_empty());
    }

    #[test]
    fn each_anomaly_is_named() {
        let inputs = read(&[(0, 0, "a"), (0, 1, "b"), (1, 0, "c")]);
        let outputs = read(&[
            (0, 0, "out:a"),
            (0, 1, "out:a"),
            (1, 0, "out:z"),
            (1, 1, "junk"),
        ]);
        let v = check(&inputs, &outputs, &[(0, 2)]);
        assert_eq!(v.len(), 6, "{v:#?}");
        assert!(v[0].starts_with("phantom: output junk"));
        assert!(v[1].starts_with("duplicated: a has 2 outputs"));
        assert!(v[2].starts_with("unprocessed: b"));
        assert!(v[3].starts_with("unprocessed: c"));
        assert!(v[4].starts_with("unconsumed: input partition 1 committed at None"));
        assert!(v[5].starts_with("phantom: output z"));
    }
}

//! Fault plans: explicit, timed lists of faults. A plan is data, so it can be generated from a
//! seed (swarm testing: every seed draws its own mix of fault kinds and rates), generated and
//! shrunk by proptest, printed, saved and replayed.

use proptest::prelude::*;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use weir_seams::rng::WeirRng;

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Crash a node: its processes stop and unsynced writes are lost (or torn). With `garbage`,
    /// one region of an in-flight unsynced write comes back as random bytes.
    Crash {
        /// The node.
        node: String,
        /// Leave garbage where an unsynced write was.
        garbage: bool,
    },
    /// Start a crashed node again.
    Restart {
        /// The node.
        node: String,
    },
    /// Drop all messages between the two groups.
    Partition {
        /// One side.
        a: Vec<String>,
        /// The other side.
        b: Vec<String>,
    },
    /// Drop messages from `from` to `to`, but not back.
    PartitionOneWay {
        /// Senders cut off.
        from: Vec<String>,
        /// Receivers they cannot reach.
        to: Vec<String>,
    },
    /// Hold messages between the groups until released (a pause).
    Hold {
        /// One side.
        a: Vec<String>,
        /// The other side.
        b: Vec<String>,
    },
    /// Heal every link: repair partitions and release held messages.
    HealNetwork,
    /// Set the longest message latency on every link.
    Latency {
        /// Largest delay, in milliseconds.
        max_ms: u64,
    },
    /// Slow a node's downstream stream tasks: each row they take from the exchange costs
    /// `row_delay_us` more, as with a slow operator (0 ends it). Sources are not slowed; they
    /// feel it as backpressure. Nodes without stream tasks ignore it.
    Slow {
        /// The node.
        node: String,
        /// Delay per row, in microseconds.
        row_delay_us: u64,
    },
    /// Make every disk operation of a node fail with EIO, or stop doing so.
    DiskErrors {
        /// The node.
        node: String,
        /// Failing or not.
        on: bool,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash { node, garbage } => write!(
                f,
                "crash {node}{}",
                if *garbage { " (garbage on disk)" } else { "" }
            ),
            Fault::Restart { node } => write!(f, "restart {node}"),
            Fault::Partition { a, b } => write!(f, "partition {a:?} | {b:?}"),
            Fault::PartitionOneWay { from, to } => {
                write!(f, "partition {from:?} -> {to:?} (one way)")
            }
            Fault::Hold { a, b } => write!(f, "hold {a:?} | {b:?}"),
            Fault::HealNetwork => write!(f, "heal network"),
            Fault::Latency { max_ms } => write!(f, "latency up to {max_ms} ms"),
            Fault::Slow { node, row_delay_us } => {
                write!(f, "slow {node}: {row_delay_us} us per row")
            }
            Fault::DiskErrors { node, on } => write!(
                f,
                "disk errors on {node}: {}",
                if *on { "on" } else { "off" }
            ),
        }
    }
}

impl Fault {
    /// Whether this undoes a fault rather than causing one.
    pub fn is_repair(&self) -> bool {
        match self {
            Fault::Restart { .. } | Fault::HealNetwork => true,
            Fault::Latency { max_ms } => *max_ms <= BASE_LATENCY_MAX_MS,
            Fault::DiskErrors { on, .. } => !on,
            Fault::Slow { row_delay_us, .. } => *row_delay_us == 0,
            Fault::Crash { .. }
            | Fault::Partition { .. }
            | Fault::PartitionOneWay { .. }
            | Fault::Hold { .. } => false,
        }
    }
}

/// A fault and when it strikes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedFault {
    /// Simulated time, in milliseconds from the start of the run.
    pub at_ms: u64,
    /// The fault.
    pub fault: Fault,
}

/// A timed list of faults, in time order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultPlan {
    /// The faults.
    pub faults: Vec<TimedFault>,
}

/// The nodes a plan can name.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Nodes with software and disks that can crash.
    pub servers: Vec<String>,
    /// Client nodes, which only take part in network faults.
    pub clients: Vec<String>,
}

impl Topology {
    fn all(&self) -> Vec<String> {
        self.servers.iter().chain(&self.clients).cloned().collect()
    }
}

/// The kinds of fault a seed uses and how often they strike.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mix {
    /// Crashes and restarts.
    pub crash: bool,
    /// Two-way partitions.
    pub partition: bool,
    /// One-way partitions.
    pub one_way: bool,
    /// Held (paused) links.
    pub hold: bool,
    /// Latency spikes.
    pub latency: bool,
    /// Disk I/O errors.
    pub disk_errors: bool,
    /// Garbage left by crashes.
    pub garbage: bool,
    /// Torn writes on crash (turmoil's block-granular durability).
    pub torn_writes: bool,
    /// Mean time between faults, in milliseconds.
    pub mean_gap_ms: u64,
}

impl FaultPlan {
    /// Sorts the faults by time, keeping the order of simultaneous ones.
    pub fn sorted(mut self) -> Self {
        self.faults.sort_by_key(|f| f.at_ms);
        self
    }

    /// Draws a mix and a plan for `duration_ms` from `rng` (swarm testing).
    pub fn swarm(rng: &mut WeirRng, topo: &Topology, duration_ms: u64) -> (Self, Mix) {
        let one_way = rng.random_bool(0.4);
        let mut mix = Mix {
            crash: rng.random_bool(0.7),
            partition: rng.random_bool(0.5),
            one_way,
            // turmoil does not combine held links with one-way partitions.
            hold: !one_way && rng.random_bool(0.4),
            latency: rng.random_bool(0.5),
            disk_errors: rng.random_bool(0.3),
            garbage: rng.random_bool(0.5),
            torn_writes: rng.random_bool(0.6),
            mean_gap_ms: rng.random_range(300..=3000),
        };
        if !(mix.crash
            || mix.partition
            || mix.one_way
            || mix.hold
            || mix.latency
            || mix.disk_errors)
        {
            mix.crash = true;
        }
        let mut kinds = Vec::new();
        for (on, k) in [
            (mix.crash, 0),
            (mix.partition, 1),
            (mix.one_way, 2),
            (mix.hold, 3),
            (mix.latency, 4),
            (mix.disk_errors, 5),
        ] {
            if on {
                kinds.push(k);
            }
        }
        let all = topo.all();
        let mut faults = Vec::new();
        let mut t = 0u64;
        loop {
            t += rng.random_range(mix.mean_gap_ms / 2..=mix.mean_gap_ms * 3 / 2);
            if t >= duration_ms {
                break;
            }
            let lasts = rng.random_range(100..=4000u64);
            let pick = |rng: &mut WeirRng, v: &[String]| v[rng.random_range(0..v.len())].clone();
            let (hit, undo) = match kinds[rng.random_range(0..kinds.len())] {
                0 => {
                    let node = pick(rng, &topo.servers);
                    let garbage = mix.garbage && rng.random_bool(0.5);
                    (
                        Fault::Crash {
                            node: node.clone(),
                            garbage,
                        },
                        Fault::Restart { node },
                    )
                }
                1 => {
                    let (a, b) = split(rng, &all);
                    (Fault::Partition { a, b }, Fault::HealNetwork)
                }
                2 => {
                    let (from, to) = split(rng, &all);
                    (Fault::PartitionOneWay { from, to }, Fault::HealNetwork)
                }
                3 => {
                    let (a, b) = split(rng, &all);
                    (Fault::Hold { a, b }, Fault::HealNetwork)
                }
                4 => (
                    Fault::Latency {
                        max_ms: rng.random_range(50..=2000),
                    },
                    Fault::Latency {
                        max_ms: BASE_LATENCY_MAX_MS,
                    },
                ),
                _ => {
                    let node = pick(rng, &topo.servers);
                    (
                        Fault::DiskErrors {
                            node: node.clone(),
                            on: true,
                        },
                        Fault::DiskErrors { node, on: false },
                    )
                }
            };
            faults.push(TimedFault {
                at_ms: t,
                fault: hit,
            });
            faults.push(TimedFault {
                at_ms: t + lasts,
                fault: undo,
            });
        }
        (FaultPlan { faults }.sorted(), mix)
    }

    /// A proptest strategy for plans of up to `max_faults` faults over `duration_ms`. Shrinking
    /// drops faults and simplifies the rest.
    pub fn strategy(
        topo: &Topology,
        duration_ms: u64,
        max_faults: usize,
    ) -> impl Strategy<Value = FaultPlan> + use<> {
        let servers = topo.servers.clone();
        let all = topo.all();
        let node = proptest::sample::select(servers);
        let group = proptest::sample::subsequence(all.clone(), 1..all.len());
        let complement = move |a: Vec<String>| -> Vec<String> {
            all.iter().filter(|n| !a.contains(n)).cloned().collect()
        };
        let c1 = complement.clone();
        let c2 = complement.clone();
        let fault = prop_oneof![
            (node.clone(), any::<bool>())
                .prop_map(|(node, garbage)| Fault::Crash { node, garbage }),
            node.clone().prop_map(|node| Fault::Restart { node }),
            group.clone().prop_map(move |a| {
                let b = c1(a.clone());
                Fault::Partition { a, b }
            }),
            group.clone().prop_map(move |from| {
                let to = c2(from.clone());
                Fault::PartitionOneWay { from, to }
            }),
            Just(Fault::HealNetwork),
            (1u64..2000).prop_map(|max_ms| Fault::Latency { max_ms }),
            (node.clone(), any::<bool>()).prop_map(|(node, on)| Fault::DiskErrors { node, on }),
            (node, 0u64..100_000)
                .prop_map(|(node, row_delay_us)| Fault::Slow { node, row_delay_us }),
        ];
        proptest::collection::vec((0..duration_ms, fault), 0..=max_faults).prop_map(|v| {
            FaultPlan {
                faults: v
                    .into_iter()
                    .map(|(at_ms, fault)| TimedFault { at_ms, fault })
                    .collect(),
            }
            .sorted()
        })
    }
}

/// Largest message latency when no latency fault is active, in milliseconds.
pub const BASE_LATENCY_MAX_MS: u64 = 5;

/// Splits `nodes` into two non-empty groups at random.
fn split(rng: &mut WeirRng, nodes: &[String]) -> (Vec<String>, Vec<String>) {
    assert!(nodes.len() >= 2);
    loop {
        let (a, b): (Vec<String>, Vec<String>) =
            nodes.iter().cloned().partition(|_| rng.random_bool(0.5));
        if !a.is_empty() && !b.is_empty() {
            return (a, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use weir_seams::rng::derive;

    fn topo() -> Topology {
        Topology {
            servers: vec!["broker".into()],
            clients: vec!["producer-0".into(), "consumer-0".into()],
        }
    }

    #[test]
    fn swarm_plans_are_reproducible_sorted_and_vary_by_seed() {
        let a = FaultPlan::swarm(&mut derive(5, "plan"), &topo(), 20_000);
        let b = FaultPlan::swarm(&mut derive(5, "plan"), &topo(), 20_000);
        assert_eq!(a, b);
        assert!(a.0.faults.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        let mixes: std::collections::BTreeSet<String> = (0..20)
            .map(|s| {
                format!(
                    "{:?}",
                    FaultPlan::swarm(&mut derive(s, "plan"), &topo(), 20_000).1
                )
            })
            .collect();
        assert!(mixes.len() > 10, "seeds draw different mixes");
    }

    #[test]
    fn plans_round_trip_through_json() {
        let (plan, _) = FaultPlan::swarm(&mut derive(9, "plan"), &topo(), 20_000);
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<FaultPlan>(&json).unwrap(), plan);
    }

    #[test]
    fn strategy_shrinks_toward_fewer_faults() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let s = FaultPlan::strategy(&topo(), 10_000, 8);
        let mut tree = s.new_tree(&mut runner).unwrap();
        while tree.current().faults.is_empty() {
            tree = s.new_tree(&mut runner).unwrap();
        }
        let before = tree.current().faults.len();
        while tree.simplify() {}
        assert!(tree.current().faults.len() < before);
    }
}

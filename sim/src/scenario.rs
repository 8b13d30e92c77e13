//! The scenario registry: each scenario is a cluster shape, a workload, a fault plan and a
//! duration; a run is a scenario and a seed.

use crate::fault::FaultPlan;
use crate::report::RunReport;
use crate::scenarios;

/// How to run one seed.
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    /// The seed.
    pub seed: u64,
    /// A fault plan to use instead of the one the seed draws.
    pub plan: Option<FaultPlan>,
    /// A deliberately broken variant of the system to run instead.
    pub mutant: Option<String>,
}

/// A named scenario.
pub struct Scenario {
    /// Stable name, as used on the command line.
    pub name: &'static str,
    /// One line on what it checks.
    pub description: &'static str,
    /// Deliberately broken variants the checkers must catch: (name, what is broken).
    pub mutants: &'static [(&'static str, &'static str)],
    /// Runs one seed.
    pub run: fn(&RunSpec) -> RunReport,
}

/// Every scenario, in the order `weir scenarios` lists them.
pub fn all() -> &'static [Scenario] {
    &[
        Scenario {
            name: "broker-crash",
            description: "single broker crashed, restarted, partitioned, slowed and given disk faults under acks=all producers; no acknowledged record lost or duplicated",
            mutants: scenarios::broker_crash::MUTANTS,
            run: scenarios::broker_crash::run,
        },
        Scenario {
            name: "idempotent-producer",
            description: "three brokers; idempotent producers retry through timeouts, partitions and crashes; every acknowledged record is in the log exactly once",
            mutants: scenarios::idempotent_producer::MUTANTS,
            run: scenarios::idempotent_producer::run,
        },
        Scenario {
            name: "replication",
            description: "three brokers, three replicas, min.insync.replicas=2; crashes (controller included), one-way and majority/minority partitions, pauses, disk faults; leadership moves within the ISR and no acknowledged record is lost",
            mutants: scenarios::replication::MUTANTS,
            run: scenarios::replication::run,
        },
        Scenario {
            name: "isr-shrink",
            description: "three brokers, three replicas, min.insync.replicas=1; the ISR shrinks to the leader alone and that leader dies while stale replicas live; the partition waits for an ISR member and no acknowledged record is lost",
            mutants: scenarios::isr_shrink::MUTANTS,
            run: scenarios::isr_shrink::run,
        },
        Scenario {
            name: "transactions",
            description: "three brokers; transactional producers commit and abort multi-partition transactions, and replace fenced instances, through coordinator crashes, partitions and disk faults; read_committed sees every commit whole and no abort",
            mutants: scenarios::transactions::MUTANTS,
            run: scenarios::transactions::run,
        },
        Scenario {
            name: "consumer-group",
            description: "three brokers, a six-partition topic and a consumer group of three (one leaves and rejoins, one stalls past a rebalance) through coordinator crashes, partitions and latency; committed offsets never go back, nothing below them is skipped, no partition has two owners in a generation, and the group catches up after the heal",
            mutants: scenarios::consumer_group::MUTANTS,
            run: scenarios::consumer_group::run,
        },
        Scenario {
            name: "consume-transform-produce",
            description: "three brokers; a group of transactional workers turns each input into one output and commits the input offsets in the same transaction, through restarts, stalls past rebalances, coordinator crashes, partitions and disk faults; read_committed shows exactly one output per input",
            mutants: scenarios::ctp::MUTANTS,
            run: scenarios::ctp::run,
        },
        Scenario {
            name: "late-data",
            description: "stream job over a faulty broker: tumbling windows with allowed lateness and a late-data side output, checked against an oracle",
            mutants: scenarios::late_data::MUTANTS,
            run: scenarios::late_data::run,
        },
        Scenario {
            name: "eos-pipeline",
            description: "distributed job (job manager, three task managers) counting and summing keyed tumbling windows from a broker topic into a broker topic through two-phase-commit transactions; crashes of task managers, the job manager and brokers, partitions, pauses, disk faults; read_committed output equals the oracle, no window lost or duplicated",
            mutants: scenarios::eos_pipeline::MUTANTS,
            run: scenarios::eos_pipeline::run,
        },
        Scenario {
            name: "microbatch",
            description: "the eos-pipeline job under the micro-batch model (each trigger fixes the batch's end offsets in the job manager's offset log before any of it is read; the batch's checkpoint is its commit), amid the same faults; read_committed output equals the oracle, and every batch re-run after a failure reads exactly its logged range",
            mutants: scenarios::microbatch::MUTANTS,
            run: scenarios::microbatch::run,
        },
        Scenario {
            name: "kafka-streams",
            description: "the eos-pipeline job under the Kafka Streams model (each subtask commits its output, its windows' changelog and its input offsets in one broker transaction every 100 ms; the keyed edge is a repartition topic; a restart restores from the changelog and the group's offsets), amid the same faults; read_committed output equals the oracle",
            mutants: scenarios::kafka_streams::MUTANTS,
            run: scenarios::kafka_streams::run,
        },
        Scenario {
            name: "storm",
            description: "the eos-pipeline job under the Storm model (every record roots a tree of tuples tracked by XOR acknowledgements; windows hold their tuples unacknowledged until they fire; sources commit below their open trees and replay trees that time out; no checkpoints, no transactions), amid the same faults; every window of the input is in the output, its results counting at least its rows: at least once",
            mutants: scenarios::storm::MUTANTS,
            run: scenarios::storm::run,
        },
        Scenario {
            name: "backpressure",
            description: "the eos-pipeline job with its window subtasks slowed for ten seconds while the sources are not; the sources' output waits for credit, exchange buffers stay within their bound, the backlog waits in the broker as source lag, the job catches up, and the output is exactly-once",
            mutants: scenarios::backpressure::MUTANTS,
            run: scenarios::backpressure::run,
        },
        Scenario {
            name: "savepoint",
            description: "the eos-pipeline job stopped by an operator with a savepoint mid-input and started again from it, amid the same faults; the job resumes from the savepoint and the read_committed output equals the oracle",
            mutants: scenarios::savepoint::MUTANTS,
            run: scenarios::savepoint::run,
        },
        Scenario {
            name: "order-aggregates",
            description: "the order-aggregates job (high-value orders per customer in 5-minute tumbling windows) on the distributed runtime, fed generated orders with skew and invalid events, under the eos-pipeline faults; read_committed output equals the job's oracle, each record exactly once",
            mutants: scenarios::jobs::MUTANTS,
            run: scenarios::jobs::order_aggregates,
        },
        Scenario {
            name: "order-pipeline",
            description: "the order-pipeline job (invalid orders to a dead-letter topic with the reason, valid ones enriched from the customer table, upserted into a table on a simulated table host with its own disk and crashes, and aggregated per customer over 1-hour windows sliding by 5 minutes) on the distributed runtime, under the eos-pipeline faults; both topics equal the oracle, each record exactly once, and every table row holds its order's latest event, written exactly once per event",
            mutants: scenarios::jobs::MUTANTS,
            run: scenarios::jobs::order_pipeline,
        },
        Scenario {
            name: "order-sessions",
            description: "the order-sessions job (per customer: 10-minute session windows, and running totals in event-time order written by a side output to a second topic) on the distributed runtime, fed generated orders from 200 skewed customers, under the eos-pipeline faults; read_committed output equals the job's oracle, each record exactly once",
            mutants: scenarios::jobs::MUTANTS,
            run: scenarios::jobs::order_sessions,
        },
        Scenario {
            name: "click-analytics",
            description: "the click-analytics job (transactions per user in 1-minute tumbling windows: count, sum, avg, min, max; watermark 10 minutes behind) on the distributed runtime, fed generated clicks with skew, disorder and invalid events, under the eos-pipeline faults; read_committed output equals the job's oracle, each record exactly once",
            mutants: scenarios::jobs::MUTANTS,
            run: scenarios::jobs::click_analytics,
        },
        Scenario {
            name: "nexmark-q0",
            description: "Nexmark q0 (pass-through: every valid bid, unchanged) over generated Nexmark events, under the eos-pipeline faults; read_committed output equals the job's oracle, each record exactly once",
            mutants: scenarios::jobs::MUTANTS,
            run: scenarios::jobs::nexmark_q0,
        },
        Scenario {
            name: "nexmark-q1",
            description: "Nexmark q1 (currency conversion: every valid bid with its price in euros) over generated Nexmark events, under the eos-pipeline faults; read_committed output equals the job's oracle, each record exactly once",
            mutants: scenarios::jobs::MUTANTS,
            run: scenarios::jobs::nexmark_q1,
        },
        Scenario {
            name: "nexmark-q2",
            description: "Nexmark q2 (selection: the bids on every 123rd auction) over generated Nexmark events, under the eos-pipeline faults; read_committed output equals the job's oracle, each record exactly once",
            mutants: scenarios::jobs::MUTANTS,
            run: scenarios::jobs::nexmark_q2,
        },
        Scenario {
            name: "nexmark-q5",
            description: "Nexmark q5 (hot items: the auction with the most bids in each 10 s window sliding every 2 s; two keyed window stages) over generated Nexmark events, under the eos-pipeline faults; read_committed output equals the job's oracle, each record exactly once",
            mutants: scenarios::jobs::MUTANTS,
            run: scenarios::jobs::nexmark_q5,
        },
        Scenario {
            name: "nexmark-q7",
            description: "Nexmark q7 (highest bid in each 10 s tumbling window) over generated Nexmark events, under the eos-pipeline faults; read_committed output equals the job's oracle, each record exactly once",
            mutants: scenarios::jobs::MUTANTS,
            run: scenarios::jobs::nexmark_q7,
        },
        Scenario {
            name: "nexmark-q8",
            description: "Nexmark q8 (new users: persons who opened an account and an auction in the same 10 s tumbling window, a windowed join) over generated Nexmark events, under the eos-pipeline faults; read_committed output equals the job's oracle, each record exactly once",
            mutants: scenarios::jobs::MUTANTS,
            run: scenarios::jobs::nexmark_q8,
        },
    ]
}

/// The scenario named `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    all().iter().find(|s| s.name == name)
}

/// The command line that replays a run.
pub fn replay_line(scenario: &str, spec: &RunSpec) -> String {
    let mut line = format!("weir replay --scenario {scenario} --seed {}", spec.seed);
    if let Some(m) = &spec.mutant {
        line.push_str(&format!(" --mutant {m}"));
    }
    if let Some(plan) = &spec.plan {
        let json = serde_json::to_string(plan).expect("plans serialize");
        line.push_str(&format!(" --plan '{json}'"));
    }
    line
}

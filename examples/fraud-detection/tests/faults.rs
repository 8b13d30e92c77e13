//! The fraud-detection job under faults: the simulator runs it on a cluster of three brokers,
//! a job manager and three task managers, crashes and partitions them, and checks every
//! committed alert against the oracle. `WEIR_SEEDS=N` runs more seeds.

use fraud_detection::{
    ALERTS, CardLimit, LIMITS, MINUTE_MS, TRANSACTIONS, Transaction, Variant, build, oracle,
};
use rand::Rng;
use weir_seams::rng::WeirRng;
use weir_sim::fault::{Fault, FaultPlan, TimedFault};
use weir_sim::harness::{
    CommittedInput, Expected, HEAL_MS, JobTest, START_MS, TestRecord, TestSettings,
};

/// Cards in a run.
const CARDS: u32 = 12;
/// Minutes of event time a run spans.
const MINUTES: i64 = 8;
/// Transactions in a run.
const TRANSACTIONS_PER_RUN: u32 = 1_200;
/// How far a transaction's timestamp may trail the one before it, in ms: well below the
/// job's out-of-orderness, so that no record is late and the oracle is exact.
const DISORDER_MS: i64 = 2_000;

/// Transactions over [`MINUTES`], a few cards far busier than the rest, slightly out of order.
fn transactions(rng: &mut WeirRng) -> Vec<TestRecord> {
    let span_ms = MINUTES * MINUTE_MS;
    (0..TRANSACTIONS_PER_RUN)
        .map(|i| {
            let card = if rng.random_bool(0.3) {
                rng.random_range(0..2)
            } else {
                rng.random_range(0..CARDS)
            };
            let ts = START_MS + span_ms * i64::from(i) / i64::from(TRANSACTIONS_PER_RUN)
                - rng.random_range(0..=DISORDER_MS);
            let t = Transaction {
                card_id: format!("card-{card:02}"),
                amount_cents: rng.random_range(100..=15_000),
            };
            TestRecord::json(t.card_id.clone(), &t, ts)
        })
        .collect()
}

/// One limit per card and minute, published a second into the minute.
fn limits(rng: &mut WeirRng) -> Vec<TestRecord> {
    let mut out = Vec::new();
    for minute in 0..MINUTES {
        for card in 0..CARDS {
            let l = CardLimit {
                card_id: format!("card-{card:02}"),
                max_count: rng.random_range(8..=20),
                max_amount_cents: rng.random_range(50_000..=150_000),
            };
            let ts = START_MS + minute * MINUTE_MS + 1_000;
            out.push(TestRecord::json(l.card_id.clone(), &l, ts));
        }
    }
    out
}

fn expected(input: &CommittedInput) -> Expected {
    let values = |topic| {
        input
            .topic(topic)
            .iter()
            .map(|r| (r.value.as_ref(), r.timestamp_ms))
    };
    let mut expected = Expected::new();
    for alert in oracle(values(TRANSACTIONS), values(LIMITS)) {
        expected.json(ALERTS, alert.card_id.as_bytes(), &alert);
    }
    expected
}

fn test(variant: Variant) -> JobTest {
    let name = match variant {
        Variant::Correct => "fraud-detection",
        Variant::PlainField => "fraud-detection-plain-field",
    };
    JobTest::new(name, move |s: &TestSettings| {
        let settings = fraud_detection::Settings {
            parallelism: s.parallelism,
            end_marker: Some(s.end_marker.clone()),
        };
        build(variant, &settings).map_err(|e| e.to_string())
    })
    .input(TRANSACTIONS, transactions)
    .input(LIMITS, limits)
    .output(ALERTS)
    .oracle(expected)
}

#[test]
fn the_job_writes_exactly_the_oracles_alerts_under_faults() {
    let passed = test(Variant::Correct).seeds(4).run();
    assert!(passed.expected_records > 0, "the input raises alerts");
}

/// A user's own fault distribution: one task manager crashes at a random moment and comes
/// back a second later.
#[test]
fn the_job_survives_a_task_manager_crash_drawn_by_the_test() {
    let passed = test(Variant::Correct)
        .fault_plans(|rng| {
            let tm = format!("tm-{}", rng.random_range(0..3));
            let at_ms = rng.random_range(2_000..HEAL_MS - 2_000);
            let fault = |fault| TimedFault { at_ms, fault };
            let crash = fault(Fault::Crash {
                node: tm.clone(),
                garbage: false,
            });
            let restart = TimedFault {
                at_ms: at_ms + 1_000,
                ..fault(Fault::Restart { node: tm })
            };
            FaultPlan {
                faults: vec![crash, restart],
            }
        })
        .seeds(2)
        .run();
    assert_eq!(passed.faults, 2 * passed.seeds as usize, "{passed:?}");
}

#[test]
fn the_job_is_right_without_faults() {
    test(Variant::Correct).without_faults().seeds(1).run();
}

#[test]
fn counts_kept_in_a_plain_field_are_caught() {
    let failed = test(Variant::PlainField)
        .seeds(20)
        .check()
        .expect_err("a restart loses the plain field's counts");
    eprintln!("the plain-field variant is caught:\n{failed}");
    assert!(failed.replay.contains("WEIR_REPLAY="), "{}", failed.replay);
}

//! The engine against the late-data oracle: designed inputs, random event orders across
//! splits, and the deliberately broken engines the comparison must catch.

use proptest::prelude::*;
use rand::SeedableRng;
use weir_engine::{CollectSink, OperatorMutation, StreamEnv, WatermarkStrategy};
use weir_seams::clock::Clock;
use weir_workloads::late_data::{
    Event, Kind, Timing, check_design, compare, generate, job, oracle,
};

const TIMING: Timing = Timing {
    window_ms: 10_000,
    bound_ms: 2_000,
    lateness_ms: 5_000,
};

/// Runs the job in local mode on `reads` (split, event), read in order.
fn run(
    t: Timing,
    splits: &[u32],
    reads: &[(u32, Event)],
    mutation: Option<OperatorMutation>,
) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = StreamEnv::new("late-data");
        let strategy = WatermarkStrategy::for_bounded_out_of_orderness(
            std::time::Duration::from_millis(t.bound_ms as u64),
        )
        .with_timestamp_assigner(|e: &Event, _| e.ts);
        let events = env.from_splits(splits, reads.to_vec(), strategy);
        let (results, late) = job(&events, t);
        let (sink, windows) = CollectSink::new();
        results.sink_to(sink);
        let (sink, late_events) = CollectSink::new();
        late.sink_to(sink);
        let built = env.build().unwrap();
        built
            .local(Clock::starting_at(0), mutation)
            .unwrap()
            .run()
            .await
            .unwrap();
        compare(
            &oracle(t, splits, reads),
            &windows.values(),
            &late_events.values(),
        )
    })
}

fn designed(seed: u64, n: usize) -> Vec<(u32, Event)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    generate(&mut rng, TIMING, n, 5, 1_000_000)
        .into_iter()
        .map(|e| (0, e))
        .collect()
}
#[test]
fn designed_inputs_match_the_oracle_and_their_design() {
    for seed in 0..20 {
        let reads = designed(seed, 600);
        let kinds: std::collections::BTreeSet<Kind> = reads.iter().map(|(_, e)| e.kind).collect();
        assert_eq!(kinds.len(), 3, "seed {seed} exercises all three kinds");
        assert_eq!(
            check_design(&oracle(TIMING, &[0], &reads), &reads),
            Vec::<String>::new(),
            "seed {seed}"
        );
        assert_eq!(
            run(TIMING, &[0], &reads, None),
            Vec::<String>::new(),
            "seed {seed}"
        );
    }
}

#[test]
fn an_off_by_one_window_is_caught() {
    let reads = designed(3, 600);
    let diffs = run(TIMING, &[0], &reads, Some(OperatorMutation::WindowOffByOne));
    assert!(
        !diffs.is_empty(),
        "records on window boundaries land in the wrong window"
    );
}

#[test]
fn a_max_instead_of_min_watermark_is_caught() {
    // Split 1 runs far behind split 0; with the max its records become late.
    let mut reads = Vec::new();
    for i in 0..40i64 {
        let mk = |id: u64, ts: i64| Event {
            id,
            key: 1,
            ts,
            amount: 1,
            kind: Kind::OnTime,
        };
        reads.push((0, mk(i as u64 * 2, 1_000_000 + i * 5_000)));
        reads.push((1, mk(i as u64 * 2 + 1, 1_000_000 + i * 100)));
    }
    assert_eq!(run(TIMING, &[0, 1], &reads, None), Vec::<String>::new());
    assert!(
        !run(
            TIMING,
            &[0, 1],
            &reads,
            Some(OperatorMutation::MaxWatermark)
        )
        .is_empty()
    );
}

#[test]
fn the_design_check_catches_events_that_did_not_land_as_designed() {
    let t = TIMING;
    let mk = |id, ts, kind| Event {
        id,
        key: 0,
        ts,
        amount: 1,
        kind,
    };
    // An "on time" event that arrives behind the watermark, a "late" one that is not late, and a
    // "too late" one that is within the lateness.
    let reads = vec![
        (0, mk(0, 100_000, Kind::OnTime)),
        (0, mk(1, 50_000, Kind::OnTime)),
        (0, mk(2, 100_001, Kind::LateWithinLateness)),
        (0, mk(3, 99_000, Kind::TooLate)),
    ];
    let v = check_design(&oracle(t, &[0], &reads), &reads);
    assert_eq!(v.len(), 3, "{v:#?}");
}

fn timing() -> impl Strategy<Value = Timing> {
    (1i64..200, 0i64..100, 0i64..150).prop_map(|(window_ms, bound_ms, lateness_ms)| Timing {
        window_ms,
        bound_ms,
        lateness_ms,
    })
}

/// Generated cases per property; `WEIR_PROPTEST_CASES` scales it.
fn cases() -> u32 {
    std::env::var("WEIR_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Any events, in any interleaving over up to three splits, against the oracle.
    #[test]
    fn random_orders_match_the_oracle(
        t in timing(),
        events in proptest::collection::vec((0u32..3, 0u32..4, 0i64..1000, 1i64..50), 0..120),
    ) {
        let splits: Vec<u32> = vec![0, 1, 2];
        let reads: Vec<(u32, Event)> = events
            .into_iter()
            .enumerate()
            .map(|(i, (split, key, ts, amount))| (split, Event { id: i as u64, key, ts, amount, kind: Kind::OnTime }))
            .collect();
        let diffs = run(t, &splits, &reads, None);
        prop_assert!(diffs.is_empty(), "{diffs:#?}");
    }
}

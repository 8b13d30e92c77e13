//! The operators' semantics through the public API, run in local mode (one task, no network):
//! windows, lateness, sessions, triggers, process functions with state and timers, unions,
//! connected streams and joins.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use weir_engine::runtime::local::LocalReport;
use weir_engine::state::{CountSum, StateError, ValueStateDescriptor};
use weir_engine::{
    CoProcessFunction, CollectSink, Collected, Context, Data, DataStream, DropReason, KeyedContext,
    KeyedProcessFunction, OutputTag, StreamEnv, TimeDomain, TimeWindow, Trigger, WatermarkStrategy,
    WindowAssigner, Windowed,
};
use weir_seams::clock::Clock;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Ev {
    key: String,
    ts: i64,
    amount: i64,
}

fn ev(key: &str, ts: i64, amount: i64) -> Ev {
    Ev {
        key: key.into(),
        ts,
        amount,
    }
}

fn clock() -> Clock {
    Clock::starting_at(1_000_000)
}

/// Count and sum, the aggregate most tests use.
fn count_sum() -> CountSum<Ev, i64> {
    CountSum::new(|v: &Ev| v.amount)
}

fn strategy(bound_ms: u64) -> WatermarkStrategy<Ev> {
    WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(bound_ms))
        .with_timestamp_assigner(|e: &Ev, _| e.ts)
}

fn events(env: &StreamEnv, events: Vec<Ev>, bound_ms: u64) -> DataStream<Ev> {
    env.from_collection(events, strategy(bound_ms))
}

fn collect<T: Data>(stream: &DataStream<T>) -> Collected<T> {
    let (sink, out) = CollectSink::new();
    stream.sink_to(sink);
    out
}

async fn run(env: &StreamEnv) -> LocalReport {
    let job = env.build().expect("the job builds");
    job.local(clock(), None).unwrap().run().await.unwrap()
}

type Summary = (String, i64, i64, u64, i64);

fn summary(out: &[Windowed<String, (u64, i64)>]) -> Vec<Summary> {
    out.iter()
        .map(|w| {
            (
                w.key.clone(),
                w.window.start,
                w.window.end,
                w.value.0,
                w.value.1,
            )
        })
        .collect()
}

#[tokio::test]
async fn stateless_operators_and_union() {
    let env = StreamEnv::new("stateless");
    let none = WatermarkStrategy::no_watermarks;
    let a = env.from_collection(vec![1, 2, 3, 4], none());
    let b = env.from_collection(vec![10, 20], none());
    let out = collect(
        &a.map(|x| x * 2)
            .filter(|x| *x != 4)
            .union(&[&b])
            .flat_map(|x| vec![x, x + 1]),
    );
    run(&env).await;
    let mut v = out.values();
    v.sort();
    assert_eq!(v, vec![2, 3, 6, 7, 8, 9, 10, 11, 20, 21]);
}

#[tokio::test]
async fn tumbling_windows_fire_at_the_watermark_with_start_inclusive_and_end_exclusive() {
    let env = StreamEnv::new("tumbling");
    let input = vec![
        ev("a", 0, 1),
        ev("a", 9, 2),
        ev("b", 5, 7),
        ev("a", 10, 4),
        ev("a", 19, 8),
        ev("a", 31, 16),
    ];
    let windows = events(&env, input, 0)
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(10)))
        .aggregate(count_sum());
    let out = collect(&windows);
    let report = run(&env).await;
    assert_eq!(
        summary(&out.values()),
        vec![
            ("a".into(), 0, 10, 2, 3),
            ("b".into(), 0, 10, 1, 7),
            ("a".into(), 10, 20, 2, 12),
            ("a".into(), 30, 40, 1, 16),
        ]
    );
    // Results carry the window's last millisecond as their timestamp.
    assert_eq!(out.records()[0].timestamp, Some(9));
    assert_eq!(
        report.state_bytes, 0,
        "every window's state is freed after it fires"
    );
}

#[tokio::test]
async fn late_records_refire_within_the_lateness_and_go_to_the_side_output_beyond_it() {
    const LATE: OutputTag<Ev> = OutputTag::new("late");
    // Window [0, 10) fires when the watermark reaches 9 (after ts 10 arrives, bound 0).
    let input = vec![
        ev("a", 3, 1),
        ev("a", 10, 100), // watermark 9: fires [0,10) with (1, 1)
        ev("a", 5, 2),    // late, within 5 ms of lateness: fires again with (2, 3)
        ev("a", 14, 100), // watermark 13: [0,10) cleanup at 9 + 5 = 14 is not reached
        ev("a", 6, 4),    // late again, still within lateness: (3, 7)
        ev("a", 15, 100), // watermark 14: [0,10) state freed
        ev("a", 7, 8),    // beyond lateness: side output
        ev("b", 1, 1),    // beyond lateness with nowhere to go: dropped, counted late
    ];
    for with_side_output in [true, false] {
        let env = StreamEnv::new("late");
        let mut windowed = events(&env, input.clone(), 0)
            .key_by(|e: &Ev| e.key.clone())
            .window(WindowAssigner::tumbling(Duration::from_millis(10)))
            .allowed_lateness(Duration::from_millis(5));
        if with_side_output {
            windowed = windowed.side_output_late_data(&LATE);
        }
        let windows = windowed.aggregate(count_sum());
        let out = collect(&windows);
        let late = collect(&windows.side_output(&LATE));
        let report = run(&env).await;
        let first: Vec<Summary> = summary(&out.values())
            .into_iter()
            .filter(|w| w.1 == 0)
            .collect();
        assert_eq!(
            first,
            vec![
                ("a".into(), 0, 10, 1, 1),
                ("a".into(), 0, 10, 2, 3),
                ("a".into(), 0, 10, 3, 7)
            ]
        );
        if with_side_output {
            assert_eq!(late.values(), vec![ev("a", 7, 8), ev("b", 1, 1)]);
            assert_eq!(report.drops.late, 0);
        } else {
            assert!(late.values().is_empty());
            assert_eq!(report.drops.late, 2, "both late records are counted");
        }
    }
}

#[tokio::test]
async fn sliding_windows_and_reduce_and_process_see_each_window() {
    let env = StreamEnv::new("sliding");
    let input = vec![ev("a", 0, 1), ev("a", 5, 2), ev("a", 12, 4), ev("a", 40, 0)];
    let sums = events(&env, input, 0)
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::sliding(
            Duration::from_millis(10),
            Duration::from_millis(5),
        ))
        .reduce(|a: Ev, b: Ev| Ev {
            key: a.key,
            ts: a.ts.max(b.ts),
            amount: a.amount + b.amount,
        });
    let sums = collect(&sums);
    run(&env).await;
    let got: Vec<(i64, i64, i64)> = sums
        .values()
        .iter()
        .map(|w| (w.window.start, w.window.end, w.value.amount))
        .collect();
    assert_eq!(
        got,
        vec![
            (-5, 5, 1),
            (0, 10, 3),
            (5, 15, 6),
            (10, 20, 4),
            (35, 45, 0),
            (40, 50, 0)
        ]
    );

    let env = StreamEnv::new("listed");
    let input = vec![ev("k", 1, 1), ev("k", 2, 2), ev("k", 25, 3)];
    let listed = events(&env, input, 0)
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(20)))
        .process(|k: &String, w: &TimeWindow, items: Vec<Ev>| {
            vec![format!(
                "{k}[{},{})={:?}",
                w.start,
                w.end,
                items.iter().map(|e| e.amount).collect::<Vec<_>>()
            )]
        });
    let listed = collect(&listed);
    run(&env).await;
    assert_eq!(
        listed.values(),
        vec!["k[0,20)=[1, 2]".to_string(), "k[20,40)=[3]".to_string()]
    );
}

#[tokio::test]
async fn session_windows_merge_when_a_record_bridges_them() {
    let env = StreamEnv::new("sessions");
    // Gap 10: sessions [0,10) and [15,25) stay apart until ts 8 opens [8,18), which touches both.
    let input = vec![
        ev("a", 0, 1),
        ev("a", 15, 2),
        ev("a", 8, 4),
        ev("b", 50, 16),
        ev("a", 100, 8),
    ];
    let out = events(&env, input, 20)
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::session(Duration::from_millis(10)))
        .aggregate(count_sum());
    let out = collect(&out);
    run(&env).await;
    assert_eq!(
        summary(&out.values()),
        vec![
            ("a".into(), 0, 25, 3, 7),
            ("b".into(), 50, 60, 1, 16),
            ("a".into(), 100, 110, 1, 8)
        ]
    );
}

#[tokio::test]
async fn global_windows_fire_every_n_records_with_a_count_trigger() {
    let env = StreamEnv::new("count");
    let input: Vec<Ev> = (0..7)
        .map(|i| ev(if i % 2 == 0 { "a" } else { "b" }, i, i))
        .collect();
    let out = events(&env, input, 0)
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::global())
        .trigger(Trigger::Count(2))
        .aggregate(count_sum());
    let out = collect(&out);
    run(&env).await;
    let got: Vec<(String, u64, i64)> = out
        .values()
        .iter()
        .map(|w| (w.key.clone(), w.value.0, w.value.1))
        .collect();
    assert_eq!(
        got,
        vec![("a".into(), 2, 2), ("b".into(), 2, 4), ("a".into(), 2, 10)]
    );
}

#[tokio::test]
async fn the_watermark_after_a_union_is_the_minimum_of_its_inputs() {
    let env = StreamEnv::new("union-watermark");
    let fast = events(&env, vec![ev("a", 100, 1), ev("a", 200, 1)], 0);
    let slow = events(&env, vec![ev("a", 5, 1)], 0);
    let out = fast
        .union(&[&slow])
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(10)))
        .aggregate(count_sum());
    let out = collect(&out);
    run(&env).await;
    // With the minimum, ts 5 is not late when it arrives after ts 100 on the other input.
    assert!(summary(&out.values()).contains(&("a".into(), 0, 10, 1, 1)));
}

/// Counts per key; emits the running count, flags a key after a quiet period, sends negative
/// amounts to a side output and counts zero amounts as invalid.
#[derive(Clone)]
struct Counter;
const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");
const NEGATIVE: OutputTag<Ev> = OutputTag::new("negative");

impl KeyedProcessFunction<String, Ev, String> for Counter {
    fn process_element(
        &mut self,
        e: Ev,
        ctx: &mut KeyedContext<'_, String, String>,
    ) -> Result<(), StateError> {
        if e.amount < 0 {
            ctx.side_output(&NEGATIVE, e);
            return Ok(());
        }
        if e.amount == 0 {
            ctx.dropped(DropReason::Invalid);
            return Ok(());
        }
        let mut count = ctx.value(&COUNT)?;
        let n = count.get()?.unwrap_or(0) + 1;
        count.update(&n)?;
        ctx.emit(format!("{}={n}", ctx.key()));
        ctx.register_event_time_timer(e.ts + 50);
        let now = ctx.current_processing_time();
        ctx.register_processing_time_timer(now + 1000);
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_, String, String>,
    ) -> Result<(), StateError> {
        let n = ctx.value(&COUNT)?.get()?.unwrap_or(0);
        match domain {
            TimeDomain::EventTime => ctx.emit(format!("{} quiet at {ts} after {n}", ctx.key())),
            TimeDomain::ProcessingTime => {
                ctx.emit(format!("{} processing timer after {n}", ctx.key()))
            }
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn keyed_process_functions_have_state_timers_side_outputs_and_drop_counts() {
    let env = StreamEnv::new("counter");
    let input = vec![
        ev("a", 0, 1),
        ev("b", 10, 1),
        ev("a", 20, -5),
        ev("a", 25, 0),
        ev("a", 30, 1),
    ];
    let processed = events(&env, input, 0)
        .key_by(|e: &Ev| e.key.clone())
        .process(Counter);
    let out = collect(&processed);
    let neg = collect(&processed.side_output(&NEGATIVE));
    let job = env.build().unwrap();
    let mut run = job.local(clock(), None).unwrap();
    run.run().await.unwrap();
    let v = out.values();
    assert_eq!(
        &v[..3],
        &["a=1".to_string(), "b=1".to_string(), "a=2".to_string()]
    );
    assert!(v.contains(&"a quiet at 50 after 2".to_string()));
    assert!(v.contains(&"a quiet at 80 after 2".to_string()));
    assert!(v.contains(&"b quiet at 60 after 1".to_string()));
    assert_eq!(neg.values(), vec![ev("a", 20, -5)]);
    assert_eq!(run.report().drops.invalid, 1);
    // Processing time moves on: the timers registered a second after each record fire.
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        run.step().await.unwrap();
    }
    assert!(
        out.values()
            .contains(&"a processing timer after 2".to_string()),
        "{:?}",
        out.values()
    );
}

/// Joins orders with the latest price of their product, held in keyed state.
#[derive(Clone)]
struct Enrich;
const PRICE: ValueStateDescriptor<i64> = ValueStateDescriptor::new("price");

impl weir_engine::KeyedCoProcessFunction<String, Ev, Ev, String> for Enrich {
    fn process_element1(
        &mut self,
        order: Ev,
        ctx: &mut KeyedContext<'_, String, String>,
    ) -> Result<(), StateError> {
        let price = ctx.value(&PRICE)?.get()?;
        ctx.emit(format!("{}x{}@{price:?}", order.key, order.amount));
        Ok(())
    }

    fn process_element2(
        &mut self,
        price: Ev,
        ctx: &mut KeyedContext<'_, String, String>,
    ) -> Result<(), StateError> {
        ctx.value(&PRICE)?.update(&price.amount)
    }
}

/// Tags each record with the input it came on.
#[derive(Clone)]
struct Tag;

impl CoProcessFunction<Ev, i64, String> for Tag {
    fn process_element1(&mut self, e: Ev, ctx: &mut Context<'_, String>) {
        ctx.emit(format!("ev:{}", e.amount));
    }

    fn process_element2(&mut self, n: i64, ctx: &mut Context<'_, String>) {
        ctx.emit(format!("n:{n}"));
    }
}

#[tokio::test]
async fn connected_streams_share_keyed_state_across_both_inputs() {
    let env = StreamEnv::new("enrich");
    let prices = events(&env, vec![ev("apple", 0, 3), ev("pear", 0, 5)], 0);
    // The orders come after the prices by event time, but in one task the order of reads
    // between the two sources decides; the prices' source is read first.
    let orders = events(&env, vec![ev("apple", 10, 2), ev("fig", 11, 1)], 0);
    let out = collect(
        &orders
            .connect(&prices)
            .key_by(|o: &Ev| o.key.clone(), |p: &Ev| p.key.clone())
            .process(Enrich),
    );
    let tagged = collect(
        &orders
            .connect(&env.from_collection(vec![7i64], WatermarkStrategy::no_watermarks()))
            .process(Tag),
    );
    run(&env).await;
    let mut v = out.values();
    v.sort();
    assert_eq!(
        v,
        vec!["applex2@Some(3)".to_string(), "figx1@None".to_string()]
    );
    let mut t = tagged.values();
    t.sort();
    assert_eq!(t, vec!["ev:1", "ev:2", "n:7"]);
}

#[tokio::test]
async fn an_interval_join_pairs_records_within_its_bounds_and_drops_late_ones() {
    let env = StreamEnv::new("interval-join");
    let clicks = events(
        &env,
        vec![ev("u1", 100, 1), ev("u2", 100, 2), ev("u1", 300, 3)],
        0,
    );
    let buys = events(
        &env,
        vec![
            ev("u1", 95, 10),  // 5 ms before click 1: outside [0, 50]
            ev("u1", 120, 20), // 20 ms after click 1: joins it
            ev("u2", 150, 30), // 50 ms after click 2: joins (bounds are inclusive)
            ev("u1", 360, 40), // 60 ms after click 3: outside
            ev("u1", 10, 50),  // behind every watermark: late
        ],
        0,
    );
    let joined = clicks
        .key_by(|c: &Ev| c.key.clone())
        .interval_join(&buys.key_by(|b: &Ev| b.key.clone()))
        .between(0, 50)
        .process(
            |c: &Ev, b: &Ev, ctx: &mut Context<'_, (String, i64, i64, i64)>| {
                ctx.emit((c.key.clone(), c.amount, b.amount, ctx.timestamp().unwrap()));
            },
        );
    let out = collect(&joined);
    let report = run(&env).await;
    let mut v = out.values();
    v.sort();
    assert_eq!(
        v,
        vec![("u1".into(), 1, 20, 120), ("u2".into(), 2, 30, 150)]
    );
    assert_eq!(report.drops.late, 1);
    assert_eq!(
        report.state_bytes, 0,
        "the buffers empty once the input ends"
    );
}

#[tokio::test]
async fn a_window_join_pairs_every_left_with_every_right_of_a_key_and_window() {
    let env = StreamEnv::new("window-join");
    let left = events(&env, vec![ev("k", 1, 1), ev("k", 2, 2), ev("j", 3, 3)], 0);
    // A right record of a window that the other side's watermark has closed is late: j at 4
    // must come before k at 15 moves the right side's watermark past 9.
    let right = events(
        &env,
        vec![ev("k", 5, 10), ev("j", 4, 30), ev("k", 15, 20)],
        0,
    );
    let joined = left
        .join(&right)
        .where_key(|l: &Ev| l.key.clone(), |r: &Ev| r.key.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(10)))
        .apply(|l: &Ev, r: &Ev| (l.key.clone(), l.amount, r.amount));
    let out = collect(&joined);
    run(&env).await;
    let mut v = out.values();
    v.sort();
    assert_eq!(
        v,
        vec![
            ("j".into(), 3, 30),
            ("k".into(), 1, 10),
            ("k".into(), 2, 10)
        ]
    );
}

#[tokio::test]
async fn window_state_is_freed_once_the_watermark_passes_end_plus_lateness() {
    let env = StreamEnv::new("freed");
    // Window [0, 10) with 5 ms of lateness is freed when the watermark reaches 9 + 5 = 14.
    // A local step reads 200 records: the first stops at watermark 11.
    let mut input = vec![ev("a", 1, 1)];
    input.extend((0..250).map(|i| ev("b", if i < 199 { 12 } else { 13 }, 1)));
    let windows = events(&env, input, 0)
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(10)))
        .allowed_lateness(Duration::from_millis(5))
        .aggregate(count_sum());
    collect(&windows);
    let job = env.build().unwrap();
    let mut run = job.local(clock(), None).unwrap();
    run.step().await.unwrap();
    // After ts 12 (watermark 11): [0,10) fired but kept for lateness, [10,20) open.
    let both = run.report().state_bytes;
    assert!(both > 0);
    run.run().await.unwrap();
    assert_eq!(run.report().state_bytes, 0, "the end of input frees both");
}

#[test]
fn graphs_that_cannot_run_are_refused_when_built() {
    let env = StreamEnv::new("refused");
    let a = events(&env, vec![], 0).uid("dup");
    let _b = a.map(|e| e).uid("dup");
    assert!(env.build().is_err(), "uids are unique");
}

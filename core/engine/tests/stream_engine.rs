//! The stream engine's semantics, through its public API.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use weir_engine::stream::process::{KeyedContext, KeyedProcessFunction};
use weir_engine::stream::source::{BoundedSource, SourceRecord};
use weir_engine::stream::state::{CountSum, StateError, ValueStateDescriptor};
use weir_engine::stream::timers::TimeDomain;
use weir_engine::stream::watermark::WatermarkStrategy;
use weir_engine::stream::window::{TimeWindow, Trigger, WindowAssigner, Windowed};
use weir_engine::stream::{OutputTag, StreamEnv};
use weir_seams::clock::Clock;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

fn env() -> StreamEnv {
    StreamEnv::with_clock(Clock::starting_at(1_000_000))
}

/// Count and sum, the aggregate most tests use.
fn count_sum() -> CountSum<Ev, i64> {
    CountSum::new(|v: &Ev| v.amount)
}

fn strategy(bound_ms: u64) -> WatermarkStrategy<Ev> {
    WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(bound_ms))
        .with_timestamp_assigner(|e: &Ev, _| e.ts)
}

fn source(events: Vec<Ev>) -> BoundedSource<Ev> {
    BoundedSource::new(events).with_batch(1)
}

fn summary(out: &[Windowed<String, (u64, i64)>]) -> Vec<(String, i64, i64, u64, i64)> {
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
    let env = env();
    let a = env.from_source(
        BoundedSource::new(vec![1, 2, 3, 4]),
        WatermarkStrategy::no_watermarks(),
    );
    let b = env.from_source(
        BoundedSource::new(vec![10, 20]),
        WatermarkStrategy::no_watermarks(),
    );
    let out = a
        .map(|x| x * 2)
        .filter(|x| *x != 4)
        .union(&[&b])
        .flat_map(|x| vec![x, x + 1])
        .collect();
    env.execute().await.unwrap();
    let mut v = out.values();
    v.sort();
    assert_eq!(v, vec![2, 3, 6, 7, 8, 9, 10, 11, 20, 21]);
}

#[tokio::test]
async fn tumbling_windows_fire_at_the_watermark_with_start_inclusive_and_end_exclusive() {
    let env = env();
    let events = vec![
        ev("a", 0, 1),
        ev("a", 9, 2),
        ev("b", 5, 7),
        ev("a", 10, 4),
        ev("a", 19, 8),
        ev("a", 31, 16),
    ];
    let out = env
        .from_source(source(events), strategy(0))
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(10)))
        .aggregate(count_sum())
        .collect();
    let report = env.execute().await.unwrap();
    let got = summary(&out.values());
    assert_eq!(
        got,
        vec![
            ("a".into(), 0, 10, 2, 3),
            ("b".into(), 0, 10, 1, 7),
            ("a".into(), 10, 20, 2, 12),
            ("a".into(), 30, 40, 1, 16),
        ]
    );
    // Results carry the window's last millisecond as their timestamp.
    assert_eq!(out.records()[0].timestamp, Some(9));
    assert_eq!(report.windows.firings, 4);
    assert_eq!(
        report.state_bytes, 0,
        "every window's state is freed after it fires"
    );
}

#[tokio::test]
async fn late_records_refire_within_the_lateness_and_go_to_the_side_output_beyond_it() {
    let env = env();
    const LATE: OutputTag<Ev> = OutputTag::new("late");
    // Window [0, 10) fires when the watermark reaches 9 (after ts 10 arrives, bound 0).
    let events = vec![
        ev("a", 3, 1),
        ev("a", 10, 100), // watermark 9: fires [0,10) with (1, 1)
        ev("a", 5, 2),    // late, within 5 ms of lateness: fires again with (2, 3)
        ev("a", 14, 100), // watermark 13: [0,10) cleanup at 9 + 5 = 14 is not reached
        ev("a", 6, 4),    // late again, still within lateness: (3, 7)
        ev("a", 15, 100), // watermark 14: [0,10) state freed
        ev("a", 7, 8),    // beyond lateness: side output
    ];
    let windowed = env
        .from_source(source(events), strategy(0))
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(10)))
        .allowed_lateness(Duration::from_millis(5))
        .side_output_late_data(&LATE)
        .aggregate(count_sum());
    let out = windowed.collect();
    let late = windowed.side_output(&LATE).collect();
    let report = env.execute().await.unwrap();
    let got = summary(&out.values());
    let first: Vec<_> = got.iter().filter(|w| w.1 == 0).cloned().collect();
    assert_eq!(
        first,
        vec![
            ("a".into(), 0, 10, 1, 1),
            ("a".into(), 0, 10, 2, 3),
            ("a".into(), 0, 10, 3, 7)
        ]
    );
    assert_eq!(late.values(), vec![ev("a", 7, 8)]);
    assert_eq!(report.windows.late_firings, 2);
    assert_eq!(report.windows.late_to_side_output, 1);
    assert_eq!(report.windows.late_dropped, 0);
}

#[tokio::test]
async fn sliding_windows_and_reduce_and_process_see_each_window() {
    let env = env();
    let events = vec![ev("a", 0, 1), ev("a", 5, 2), ev("a", 12, 4), ev("a", 40, 0)];
    let stream = env
        .from_source(source(events), strategy(0))
        .key_by(|e: &Ev| e.key.clone());
    let sums = stream
        .window(WindowAssigner::sliding(
            Duration::from_millis(10),
            Duration::from_millis(5),
        ))
        .reduce(|a: Ev, b: Ev| Ev {
            key: a.key,
            ts: a.ts.max(b.ts),
            amount: a.amount + b.amount,
        })
        .collect();
    env.execute().await.unwrap();
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

    let env = super_env();
    let events = vec![ev("k", 1, 1), ev("k", 2, 2), ev("k", 25, 3)];
    let listed = env
        .from_source(source(events), strategy(0))
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(20)))
        .process(|k: &String, w: &TimeWindow, items: Vec<Ev>| {
            vec![format!(
                "{k}[{},{})={:?}",
                w.start,
                w.end,
                items.iter().map(|e| e.amount).collect::<Vec<_>>()
            )]
        })
        .collect();
    env.execute().await.unwrap();
    assert_eq!(
        listed.values(),
        vec!["k[0,20)=[1, 2]".to_string(), "k[20,40)=[3]".to_string()]
    );
}

fn super_env() -> StreamEnv {
    env()
}

#[tokio::test]
async fn session_windows_merge_when_a_record_bridges_them() {
    let env = env();
    // Gap 10: sessions [0,10) and [15,25) stay apart until ts 8 opens [8,18), which touches both.
    let events = vec![
        ev("a", 0, 1),
        ev("a", 15, 2),
        ev("a", 8, 4),
        ev("b", 50, 16),
        ev("a", 100, 8),
    ];
    let out = env
        .from_source(source(events), strategy(20))
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::session(Duration::from_millis(10)))
        .aggregate(count_sum())
        .collect();
    env.execute().await.unwrap();
    let got = summary(&out.values());
    assert_eq!(
        got,
        vec![
            ("a".into(), 0, 25, 3, 7),
            ("b".into(), 50, 60, 1, 16),
            ("a".into(), 100, 110, 1, 8)
        ]
    );
}

#[tokio::test]
async fn global_windows_fire_every_n_records_with_a_count_trigger() {
    let env = env();
    let events: Vec<Ev> = (0..7)
        .map(|i| ev(if i % 2 == 0 { "a" } else { "b" }, i, i))
        .collect();
    let out = env
        .from_source(source(events), strategy(0))
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::global())
        .trigger(Trigger::Count(2))
        .aggregate(count_sum())
        .collect();
    env.execute().await.unwrap();
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
    let env = env();
    let fast = env.from_source(source(vec![ev("a", 100, 1), ev("a", 200, 1)]), strategy(0));
    let slow = env.from_source(source(vec![ev("a", 5, 1)]).with_batch(1), strategy(0));
    let out = fast
        .union(&[&slow])
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(10)))
        .aggregate(count_sum())
        .collect();
    env.execute().await.unwrap();
    // With the minimum, ts 5 is not late when it arrives after ts 100 on the other input.
    assert!(summary(&out.values()).contains(&("a".into(), 0, 10, 1, 1)));
}

#[tokio::test]
async fn per_split_watermarks_hold_back_for_the_slowest_split() {
    let env = env();
    let recs = vec![
        SourceRecord {
            split: 0,
            value: ev("a", 100, 1),
            timestamp: None,
        },
        SourceRecord {
            split: 1,
            value: ev("a", 3, 2),
            timestamp: None,
        },
        SourceRecord {
            split: 0,
            value: ev("a", 200, 4),
            timestamp: None,
        },
        SourceRecord {
            split: 1,
            value: ev("a", 6, 8),
            timestamp: None,
        },
    ];
    let out = env
        .from_source(
            BoundedSource::from_records(recs, vec![0, 1]).with_batch(1),
            strategy(0),
        )
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(10)))
        .aggregate(count_sum())
        .collect();
    env.execute().await.unwrap();
    assert_eq!(
        summary(&out.values())[0],
        ("a".into(), 0, 10, 2, 10),
        "split 1 kept the window open"
    );
}

/// Counts per key; emits the running count, flags a key after a quiet period, and sends
/// negative amounts to a side output.
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
        let mut count = ctx.value(&COUNT)?;
        let n = count.get()?.unwrap_or(0) + 1;
        count.update(&n)?;
        ctx.emit(format!("{}={n}", ctx.key()));
        let at = e.ts + 50;
        ctx.register_event_time_timer(at);
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
async fn keyed_process_functions_have_state_timers_and_side_outputs() {
    let env = env();
    let events = vec![
        ev("a", 0, 1),
        ev("b", 10, 1),
        ev("a", 20, -5),
        ev("a", 30, 1),
    ];
    let processed = env
        .from_source(source(events), strategy(0))
        .key_by(|e: &Ev| e.key.clone())
        .process(Counter);
    let out = processed.collect();
    let neg = processed.side_output(&NEGATIVE).collect();
    env.execute().await.unwrap();
    let v = out.values();
    assert_eq!(
        &v[..3],
        &["a=1".to_string(), "b=1".to_string(), "a=2".to_string()]
    );
    assert!(v.contains(&"a quiet at 50 after 2".to_string()));
    assert!(v.contains(&"a quiet at 80 after 2".to_string()));
    assert!(v.contains(&"b quiet at 60 after 1".to_string()));
    assert_eq!(neg.values(), vec![ev("a", 20, -5)]);
}

#[tokio::test]
async fn a_restored_job_continues_as_if_never_stopped() {
    let events: Vec<Ev> = (0..400)
        .map(|i| ev(&format!("k{}", i % 7), (i * 37) % 1000 + i, i))
        .collect();
    let build = |env: &StreamEnv| {
        env.from_source(source(events.clone()), strategy(200))
            .key_by(|e: &Ev| e.key.clone())
            .window(WindowAssigner::tumbling(Duration::from_millis(100)))
            .allowed_lateness(Duration::from_millis(50))
            .aggregate(count_sum())
            .collect()
    };
    let whole = env();
    let expected = build(&whole);
    whole.execute().await.unwrap();

    let first = env();
    let before = build(&first);
    for _ in 0..150 {
        first.step().await.unwrap();
    }
    let snap = first.snapshot().unwrap();
    let bytes = serde_json::to_vec(&snap).unwrap();
    let second = env();
    let after = build(&second);
    second
        .restore(&serde_json::from_slice(&bytes).unwrap())
        .unwrap();
    second.execute().await.unwrap();
    let mut resumed = before.values();
    resumed.extend(after.values());
    assert!(
        !before.is_empty() && !after.is_empty(),
        "the stop fell mid-stream"
    );
    assert_eq!(resumed, expected.values());
}

/// Emits its records, then stays open (idle) until processing time passes `until_ms`.
struct LingeringSource {
    records: Vec<Ev>,
    clock: Clock,
    until_ms: i64,
}

impl weir_engine::stream::source::Source<Ev> for LingeringSource {
    fn splits(&self) -> Vec<u32> {
        vec![0]
    }

    fn poll(
        &mut self,
    ) -> weir_engine::stream::source::BoxFuture<
        '_,
        Result<
            weir_engine::stream::source::SourcePoll<Ev>,
            weir_engine::stream::source::SourceError,
        >,
    > {
        use weir_engine::stream::source::SourcePoll;
        let out = if !self.records.is_empty() {
            SourcePoll::Records(
                self.records
                    .drain(..)
                    .map(|value| SourceRecord {
                        split: 0,
                        value,
                        timestamp: None,
                    })
                    .collect(),
            )
        } else if self.clock.now_ms() < self.until_ms {
            SourcePoll::Idle
        } else {
            SourcePoll::End
        };
        Box::pin(async move { Ok(out) })
    }

    fn position(&self) -> Vec<u8> {
        Vec::new()
    }

    fn restore_position(
        &mut self,
        _: &[u8],
    ) -> Result<(), weir_engine::stream::source::SourceError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn processing_time_timers_fire_as_the_clock_passes_them() {
    let clock = Clock::starting_at(1_000_000);
    let env = StreamEnv::with_clock(clock);
    let src = LingeringSource {
        records: vec![ev("a", 0, 1), ev("a", 1, 1)],
        clock,
        until_ms: 1_000_000 + 5_000,
    };
    let out = env
        .from_source(src, strategy(0))
        .key_by(|e: &Ev| e.key.clone())
        .process(Counter)
        .collect();
    env.execute().await.unwrap();
    assert!(
        out.values()
            .contains(&"a processing timer after 2".to_string()),
        "{:?}",
        out.values()
    );
}

#[tokio::test]
async fn window_state_is_freed_once_the_watermark_passes_end_plus_lateness() {
    let env = env();
    // Window [0, 10) with 5 ms of lateness is freed when the watermark reaches 9 + 5 = 14.
    let events = vec![
        ev("a", 1, 1),
        ev("a", 12, 1),
        ev("a", 14, 1),
        ev("a", 15, 1),
        ev("a", 16, 1),
    ];
    env.from_source(source(events), strategy(0))
        .key_by(|e: &Ev| e.key.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(10)))
        .allowed_lateness(Duration::from_millis(5))
        .aggregate(count_sum())
        .collect();
    let mut sizes = Vec::new();
    loop {
        let done = env.step().await.unwrap();
        sizes.push(env.report().state_bytes);
        if done {
            break;
        }
    }
    // After ts 12 (watermark 11): [0,10) fired but kept for lateness, [10,20) open: two windows.
    // After ts 15 (watermark 14): [0,10) freed, one window left.
    assert!(
        sizes[1] > sizes[3],
        "state shrinks when [0,10) is cleaned up: {sizes:?}"
    );
    assert_eq!(sizes[3], sizes[4]);
    assert_eq!(*sizes.last().unwrap(), 0);
}

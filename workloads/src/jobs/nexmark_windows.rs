//! Nexmark's windowed queries over the [`crate::nexmark`] workload, one job each:
//!
//! - `nexmark-q5`, hot items: for each 10-second window sliding every 2 seconds, the auction
//!   with the most bids;
//! - `nexmark-q7`, highest bid: for each 10-second tumbling window, the highest bid;
//! - `nexmark-q8`, new users: the persons who created an account and an auction in the same
//!   10-second tumbling window.
//!
//! Window lengths follow the Flink Nexmark suite's SQL. Where the benchmark returns every tied
//! winner, these jobs return one, chosen by a fixed order (the smallest auction id; the
//! smallest auction, bidder and time), so that a result never depends on arrival order.
//! Invalid events (see [`crate::nexmark::validate`]) are dropped.
//!
//! ```text
//! q5: [source -> bids by auction] ==by auction==> [10 s / 2 s sliding count -> by window]
//!       ==by window==> [2 s tumbling max -> format] --> nexmark-q5
//! q7: [source -> bids] ==one key==> [10 s tumbling max -> format] --> nexmark-q7
//! q8: [source -> persons by id, auctions by seller] ==by person==>
//!       [10 s tumbling min/max -> join] --> nexmark-q8
//! ```
//!
//! q8's join rides on the window's extremes: a person row carries 0 and its name, an auction
//! row 1; a window whose least value is 0 and greatest is 1 saw both.

use super::{
    ExpectedRecords, Input, Settings, expect, keyed_windows, linear, map, parse_valid, tumbling,
    window_start, windows, with_json,
};
use crate::nexmark;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_engine::runtime::element::Row;
use weir_engine::runtime::window::WindowResult;
use weir_engine::runtime::{Edge, Functions, JobGraph, RowFunction};
use weir_engine::stream::window::WindowAssigner;

/// q5's window length.
pub const Q5_SIZE_MS: i64 = 10_000;
/// q5's slide.
pub const Q5_SLIDE_MS: i64 = 2_000;
/// q7's and q8's window length.
pub const TUMBLE_MS: i64 = 10_000;
/// q7 keys every bid alike: the highest of a window is found in one subtask.
const ALL_BIDS: &str = "bids";

/// One of the windowed queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowQuery {
    /// Hot items.
    Q5,
    /// Highest bid.
    Q7,
    /// New users.
    Q8,
}

impl WindowQuery {
    /// Every query.
    pub const ALL: [WindowQuery; 3] = [WindowQuery::Q5, WindowQuery::Q7, WindowQuery::Q8];

    /// The job's name, which is also its output topic.
    pub fn name(self) -> &'static str {
        match self {
            WindowQuery::Q5 => "nexmark-q5",
            WindowQuery::Q7 => "nexmark-q7",
            WindowQuery::Q8 => "nexmark-q8",
        }
    }
}

const Q5_BIDS: &str = "nexmark-q5/bids-by-auction";
const Q5_BY_WINDOW: &str = "nexmark-q5/counts-by-window";
const Q5_FORMAT: &str = "nexmark-q5/format";
const Q7_BIDS: &str = "nexmark-q7/bids";
const Q7_FORMAT: &str = "nexmark-q7/format";
const Q8_ROWS: &str = "nexmark-q8/persons-and-sellers";
const Q8_JOIN: &str = "nexmark-q8/join";

/// q5's output value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotItem {
    /// The sliding window's end, exclusive.
    pub window_end: i64,
    /// The auction with the most bids in it.
    pub auction: u64,
    /// Its bids in the window.
    pub count: u64,
}

/// q7's output value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HighestBid {
    /// The window's end, exclusive.
    pub window_end: i64,
    /// The bid's auction.
    pub auction: u64,
    /// Its bidder.
    pub bidder: u64,
    /// Its price in cents.
    pub price: i64,
    /// Its event time.
    pub date_time: i64,
}

/// q8's output value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    /// The person.
    pub id: u64,
    /// Their name.
    pub name: String,
    /// The window's end, exclusive.
    pub window_end: i64,
}

/// The job running `query`.
pub fn graph(query: WindowQuery, settings: &Settings) -> JobGraph {
    let name = query.name();
    match query {
        WindowQuery::Q5 => {
            let sliding = WindowAssigner::Sliding {
                size: Q5_SIZE_MS,
                slide: Q5_SLIDE_MS,
                offset: 0,
            };
            let steps = vec![
                map("bids", Edge::Forward, Q5_BIDS),
                windows("auction-counts", sliding),
                map("by-window", Edge::Forward, Q5_BY_WINDOW),
                windows("hottest", tumbling(Q5_SLIDE_MS)),
                map("format", Edge::Forward, Q5_FORMAT),
            ];
            linear(name, settings, steps)
        }
        WindowQuery::Q7 => {
            let windows = ("highest", tumbling(TUMBLE_MS));
            keyed_windows(name, settings, Q7_BIDS, windows, Q7_FORMAT)
        }
        WindowQuery::Q8 => {
            let windows = ("windows", tumbling(TUMBLE_MS));
            keyed_windows(name, settings, Q8_ROWS, windows, Q8_JOIN)
        }
    }
}

/// Adds every query's functions to `functions`.
pub fn register(functions: Functions) -> Functions {
    functions
        .with(Q5_BIDS, Arc::new(Q5Bids))
        .with(Q5_BY_WINDOW, Arc::new(Q5ByWindow))
        .with(Q5_FORMAT, Arc::new(Q5Format))
        .with(Q7_BIDS, Arc::new(Q7Bids))
        .with(Q7_FORMAT, Arc::new(Q7Format))
        .with(Q8_ROWS, Arc::new(Q8Rows))
        .with(Q8_JOIN, Arc::new(Q8Join))
}

/// A valid event's JSON, or `None`.
fn valid(value: &[u8]) -> Option<Value> {
    parse_valid(nexmark::validate, value)
}

/// A valid bid's auction, bidder, price and time.
fn bid(value: &[u8]) -> Option<(u64, u64, i64, i64)> {
    let v = valid(value)?;
    if v["kind"] != "bid" {
        return None;
    }
    Some((
        v["auction"].as_u64()?,
        v["bidder"].as_u64()?,
        v["price"].as_i64()?,
        v["date_time"].as_i64()?,
    ))
}

fn text(s: impl ToString) -> Bytes {
    Bytes::from(s.to_string())
}

/// A fired window's result, or `None` if the row is not one.
fn window(row: &Row) -> Option<WindowResult> {
    serde_json::from_slice(&row.value).ok()
}

/// Numbers in payloads are zero-padded, so that their text order is their numeric order.
fn padded(n: impl std::fmt::Display) -> String {
    format!("{n:0>20}")
}

struct Q5Bids;

impl RowFunction for Q5Bids {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        if let Some((auction, ..)) = bid(&row.value) {
            out.push(Row {
                key: text(auction),
                value: Bytes::from_static(b"1"),
                ts: row.ts,
            });
        }
    }
}

/// An auction's count in one sliding window, re-keyed by the window's end; the payload names
/// the auction.
struct Q5ByWindow;

impl RowFunction for Q5ByWindow {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Some(w) = window(&row) else { return };
        let auction = String::from_utf8_lossy(&row.key);
        out.push(Row {
            key: text(w.end),
            value: text(format!("{} {}", w.count, padded(auction))),
            ts: row.ts,
        });
    }
}

struct Q5Format;

impl RowFunction for Q5Format {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Some(top) = window(&row).and_then(|w| w.max) else {
            return;
        };
        let (Ok(auction), Ok(count), Some(window_end)) = (
            top.of.parse::<u64>(),
            u64::try_from(top.value),
            std::str::from_utf8(&row.key)
                .ok()
                .and_then(|k| k.parse::<i64>().ok()),
        ) else {
            return;
        };
        let item = HotItem {
            window_end,
            auction,
            count,
        };
        out.push(with_json(row, &item));
    }
}

struct Q7Bids;

impl RowFunction for Q7Bids {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        if let Some((auction, bidder, price, date_time)) = bid(&row.value) {
            let payload = [auction, bidder, date_time as u64].map(padded).join(" ");
            out.push(Row {
                key: Bytes::from_static(ALL_BIDS.as_bytes()),
                value: text(format!("{price} {payload}")),
                ts: row.ts,
            });
        }
    }
}

struct Q7Format;

impl RowFunction for Q7Format {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Some(w) = window(&row) else { return };
        let Some(top) = w.max else { return };
        let fields: Vec<u64> = top.of.split(' ').filter_map(|f| f.parse().ok()).collect();
        let [auction, bidder, date_time] = fields[..] else {
            return;
        };
        let highest = HighestBid {
            window_end: w.end,
            auction,
            bidder,
            price: top.value,
            date_time: date_time as i64,
        };
        let keyed = Row {
            key: text(w.end),
            ..row
        };
        out.push(with_json(keyed, &highest));
    }
}

struct Q8Rows;

impl RowFunction for Q8Rows {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Some(v) = valid(&row.value) else { return };
        let (key, value) = match (v["kind"].as_str(), v["name"].as_str()) {
            (Some("person"), Some(name)) => (v["id"].as_u64(), format!("0 {name}")),
            (Some("auction"), _) => (v["seller"].as_u64(), "1".to_string()),
            _ => return,
        };
        if let Some(key) = key {
            out.push(Row {
                key: text(key),
                value: text(value),
                ts: row.ts,
            });
        }
    }
}

struct Q8Join;

impl RowFunction for Q8Join {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Some(w) = window(&row) else { return };
        let (Some(person), Some(auction)) = (w.min, w.max) else {
            return;
        };
        let id = std::str::from_utf8(&row.key)
            .ok()
            .and_then(|k| k.parse::<u64>().ok());
        if let (0, 1, Some(id)) = (person.value, auction.value, id) {
            let user = NewUser {
                id,
                name: person.of,
                window_end: w.end,
            };
            out.push(with_json(row, &user));
        }
    }
}

/// The exact output of `query` for `input`, computed without the engine.
pub fn oracle(query: WindowQuery, input: &[Input<'_>]) -> ExpectedRecords {
    let mut expected = ExpectedRecords::new();
    match query {
        WindowQuery::Q5 => {
            // Window end -> auction -> bids.
            let mut counts: BTreeMap<i64, BTreeMap<u64, u64>> = BTreeMap::new();
            for i in input {
                let Some((auction, ..)) = bid(i.value) else {
                    continue;
                };
                let mut start = window_start(i.ts, Q5_SLIDE_MS);
                while start > i.ts - Q5_SIZE_MS {
                    *counts
                        .entry(start + Q5_SIZE_MS)
                        .or_default()
                        .entry(auction)
                        .or_default() += 1;
                    start -= Q5_SLIDE_MS;
                }
            }
            for (end, auctions) in counts {
                // The most bids; among equals, the smallest auction id (iteration order).
                let (auction, count) =
                    auctions.into_iter().fold(
                        (0, 0),
                        |best, (a, c)| if c > best.1 { (a, c) } else { best },
                    );
                let value = json!({"window_end": end, "auction": auction, "count": count});
                expect(&mut expected, end.to_string().as_bytes(), &value);
            }
        }
        WindowQuery::Q7 => {
            // Window end -> (price, then the smallest auction, bidder and time among equals).
            let mut highest: BTreeMap<i64, (i64, (u64, u64, i64))> = BTreeMap::new();
            for i in input {
                let Some((auction, bidder, price, date_time)) = bid(i.value) else {
                    continue;
                };
                let end = window_start(i.ts, TUMBLE_MS) + TUMBLE_MS;
                let candidate = (price, (auction, bidder, date_time));
                let best = highest.entry(end).or_insert(candidate);
                if price > best.0 || (price == best.0 && candidate.1 < best.1) {
                    *best = candidate;
                }
            }
            for (end, (price, (auction, bidder, date_time))) in highest {
                let value = json!({
                    "window_end": end, "auction": auction, "bidder": bidder,
                    "price": price, "date_time": date_time,
                });
                expect(&mut expected, end.to_string().as_bytes(), &value);
            }
        }
        WindowQuery::Q8 => {
            let mut persons: BTreeMap<(i64, u64), String> = BTreeMap::new();
            let mut sellers: BTreeMap<(i64, u64), ()> = BTreeMap::new();
            for i in input {
                let Some(v) = valid(i.value) else { continue };
                let end = window_start(i.ts, TUMBLE_MS) + TUMBLE_MS;
                match v["kind"].as_str() {
                    Some("person") => {
                        if let (Some(id), Some(name)) = (v["id"].as_u64(), v["name"].as_str()) {
                            persons.insert((end, id), name.to_string());
                        }
                    }
                    Some("auction") => {
                        if let Some(seller) = v["seller"].as_u64() {
                            sellers.insert((end, seller), ());
                        }
                    }
                    _ => {}
                }
            }
            for ((end, id), name) in persons {
                if sellers.contains_key(&(end, id)) {
                    let value = json!({"id": id, "name": name, "window_end": end});
                    expect(&mut expected, id.to_string().as_bytes(), &value);
                }
            }
        }
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{GeneratorConfig, Workload};
    use crate::jobs::row_of;
    use weir_engine::runtime::OperatorSpec;
    use weir_engine::runtime::window::KeyedWindows;

    /// Runs `query`'s steps over `rows` the way the runtime chains them, with the whole input
    /// before one final watermark.
    fn engine(query: WindowQuery, rows: Vec<Row>) -> ExpectedRecords {
        let functions = register(Functions::default());
        let settings = Settings {
            input_topic: "nexmark".into(),
            input_partitions: 1,
            parallelism: 1,
            out_of_orderness_ms: 0,
            end_marker: None,
            sink_mode: weir_engine::runtime::SinkMode::ExactlyOnce,
        };
        let g = graph(query, &settings);
        let mut rows = rows;
        for v in &g.vertices[1..g.vertices.len() - 1] {
            rows = match &v.op {
                OperatorSpec::Map { function } => {
                    let f = functions.get(function).unwrap();
                    let mut out = Vec::new();
                    rows.into_iter().for_each(|r| f.apply(r, &mut out));
                    out
                }
                OperatorSpec::Window { assigner } => {
                    let mut w = KeyedWindows::new(*assigner);
                    rows.iter().for_each(|r| w.add(r));
                    w.advance(i64::MAX)
                }
                other => panic!("unexpected step {other:?}"),
            };
        }
        let mut got = ExpectedRecords::new();
        for r in rows {
            let value: Value = serde_json::from_slice(&r.value).unwrap();
            expect(&mut got, &r.key, &value);
        }
        got
    }

    #[test]
    fn each_query_through_its_steps_matches_its_oracle() {
        let config = GeneratorConfig {
            rate_per_s: 100.0,
            invalid_fraction: 0.05,
            ..GeneratorConfig::default()
        };
        let events: Vec<_> = Workload::Nexmark
            .events(5, &config, 6_000)
            .unwrap()
            .collect();
        let input: Vec<Input<'_>> = events.iter().map(Input::from).collect();
        for query in WindowQuery::ALL {
            let rows = events.iter().map(row_of).collect();
            let expected = oracle(query, &input);
            assert!(expected.len() >= 3, "{query:?}: {} records", expected.len());
            assert_eq!(engine(query, rows), expected, "{query:?}");
        }
    }
}

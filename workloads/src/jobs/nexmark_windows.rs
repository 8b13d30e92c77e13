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

use super::{ExpectedRecords, Input, Keyed, Outputs, expect, valid_records, window_start};
use crate::generator::parse;
use crate::nexmark;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;
use weir_engine::state::CountSum;
use weir_engine::{DataStream, KafkaRecord, TimeWindow, WindowAssigner, Windowed};

/// q5's window length.
pub const Q5_SIZE_MS: i64 = 10_000;
/// q5's slide.
pub const Q5_SLIDE_MS: i64 = 2_000;
/// q7's and q8's window length.
pub const TUMBLE_MS: i64 = 10_000;

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

/// A valid event's JSON, or `None`.
fn valid(value: &[u8]) -> Option<serde_json::Map<String, Value>> {
    nexmark::validate(value).ok()?;
    parse(value).ok()
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

/// A person's account or an auction's creation, for q8.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Joined {
    Person { id: u64, name: String },
    Auction { seller: u64 },
}

impl Joined {
    fn person(&self) -> u64 {
        match self {
            Joined::Person { id, .. } => *id,
            Joined::Auction { seller } => *seller,
        }
    }
}

/// The better of two candidates: the most bids, then the smallest auction.
fn hotter(a: HotItem, b: HotItem) -> HotItem {
    if (b.count, Reverse(b.auction)) > (a.count, Reverse(a.auction)) {
        b
    } else {
        a
    }
}

/// The higher of two bids: the highest price, then the smallest auction, bidder and time.
fn higher(a: HighestBid, b: HighestBid) -> HighestBid {
    let rank = |x: &HighestBid| (x.price, Reverse((x.auction, x.bidder, x.date_time)));
    if rank(&b) > rank(&a) { b } else { a }
}

/// The job running `query`.
pub fn logic(query: WindowQuery, input: &DataStream<KafkaRecord>) -> Outputs {
    let valid = valid_records(input, nexmark::validate);
    let bids = valid.flat_map(|r: KafkaRecord| bid(&r.value));
    let ms = |ms: i64| Duration::from_millis(ms as u64);
    let out = match query {
        WindowQuery::Q5 => bids
            .key_by(|b: &(u64, u64, i64, i64)| b.0)
            .window(WindowAssigner::sliding(ms(Q5_SIZE_MS), ms(Q5_SLIDE_MS)))
            .aggregate(CountSum::new(|_: &(u64, u64, i64, i64)| 0i64))
            .uid("auction-counts")
            .map(|w: Windowed<u64, (u64, i64)>| HotItem {
                window_end: w.window.end,
                auction: w.key,
                count: w.value.0,
            })
            .key_by(|h: &HotItem| h.window_end)
            .window(WindowAssigner::tumbling(ms(Q5_SLIDE_MS)))
            .reduce(hotter)
            .uid("hottest")
            .map(|w: Windowed<i64, HotItem>| Keyed::json(w.key.to_string(), &w.value)),
        WindowQuery::Q7 => bids
            .map(|(auction, bidder, price, date_time)| HighestBid {
                window_end: 0,
                auction,
                bidder,
                price,
                date_time,
            })
            // Every bid alike: the highest of a window is found in one subtask.
            .key_by(|_: &HighestBid| ())
            .window(WindowAssigner::tumbling(ms(TUMBLE_MS)))
            .reduce(higher)
            .uid("highest")
            .map(|w: Windowed<(), HighestBid>| {
                let highest = HighestBid {
                    window_end: w.window.end,
                    ..w.value
                };
                Keyed::json(w.window.end.to_string(), &highest)
            }),
        WindowQuery::Q8 => valid
            .flat_map(|r: KafkaRecord| {
                let v = parse(&r.value).ok()?;
                match v["kind"].as_str()? {
                    "person" => Some(Joined::Person {
                        id: v["id"].as_u64()?,
                        name: v["name"].as_str()?.to_string(),
                    }),
                    "auction" => Some(Joined::Auction {
                        seller: v["seller"].as_u64()?,
                    }),
                    _ => None,
                }
            })
            .key_by(Joined::person)
            .window(WindowAssigner::tumbling(ms(TUMBLE_MS)))
            .process(|id: &u64, w: &TimeWindow, rows: Vec<Joined>| {
                let name = rows.iter().find_map(|r| match r {
                    Joined::Person { name, .. } => Some(name.clone()),
                    Joined::Auction { .. } => None,
                });
                let sold = rows.iter().any(|r| matches!(r, Joined::Auction { .. }));
                match (name, sold) {
                    (Some(name), true) => {
                        let user = NewUser {
                            id: *id,
                            name,
                            window_end: w.end,
                        };
                        vec![Keyed::json(id.to_string(), &user)]
                    }
                    _ => Vec::new(),
                }
            })
            .uid("new-users"),
    };
    Outputs::one(query.name(), out)
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
    use crate::jobs::{Job, assert_matches_oracle};

    #[test]
    fn each_query_matches_its_oracle() {
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
            let expected = oracle(query, &input);
            assert!(expected.len() >= 3, "{query:?}: {} records", expected.len());
            assert_matches_oracle(Job::NexmarkWindows(query), &events);
        }
    }
}

//! Nexmark's stateless queries over the bids of the [`crate::nexmark`] workload, one job each:
//!
//! - `nexmark-q0`, pass-through: every bid, unchanged;
//! - `nexmark-q1`, currency conversion: every bid with its price in euros, at Nexmark's fixed
//!   rate of 0.908, in whole cents rounded down;
//! - `nexmark-q2`, selection: the auction and price of the bids on every 123rd auction.
//!
//! Persons, auctions and invalid events (see [`crate::nexmark::validate`]) are dropped. Each
//! job is `source -> query -> sink`, chained into one task per subtask: no exchange, no state.
//! The queries follow the Nexmark benchmark's definitions (Tucker et al., "NEXMark - A
//! Benchmark for Queries over Data Streams", and the Flink and Beam suites' SQL for q0-q2).

use super::{ExpectedRecords, Input, Settings, expect, linear, map};
use crate::nexmark;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use weir_engine::runtime::element::Row;
use weir_engine::runtime::{Edge, Functions, JobGraph, RowFunction};

/// Euros per dollar in q1, fixed by the benchmark.
const EUROS_PER_THOUSAND_DOLLARS: i64 = 908;
/// q2 keeps the bids of the auctions whose id is a multiple of this.
const Q2_AUCTION_MODULUS: u64 = 123;

/// One of the stateless queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    /// Pass-through.
    Q0,
    /// Currency conversion.
    Q1,
    /// Selection.
    Q2,
}

impl Query {
    /// Every query.
    pub const ALL: [Query; 3] = [Query::Q0, Query::Q1, Query::Q2];

    /// The job's name.
    pub fn name(self) -> &'static str {
        match self {
            Query::Q0 => "nexmark-q0",
            Query::Q1 => "nexmark-q1",
            Query::Q2 => "nexmark-q2",
        }
    }

    /// The query for a job name.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.name() == name)
    }

    fn function(self) -> &'static str {
        match self {
            Query::Q0 => "nexmark/q0",
            Query::Q1 => "nexmark/q1",
            Query::Q2 => "nexmark/q2",
        }
    }
}

/// q1's output value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EuroBid {
    /// The auction.
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// The price in euro cents, rounded down.
    pub price: i64,
    /// The bid's event time.
    pub date_time: i64,
}

/// q2's output value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectedBid {
    /// The auction.
    pub auction: u64,
    /// The price in cents.
    pub price: i64,
}

/// The job running `query`: `source -> query -> sink`, chained into one task per subtask.
pub fn graph(query: Query, settings: &Settings) -> JobGraph {
    linear(
        query.name(),
        settings,
        vec![map("query", Edge::Forward, query.function())],
    )
}

/// Adds every query's function to `functions`.
pub fn register(functions: Functions) -> Functions {
    Query::ALL.into_iter().fold(functions, |f, q| {
        f.with(q.function(), Arc::new(QueryFunction(q)))
    })
}

/// The fields of a bid the queries read.
#[derive(Deserialize)]
struct Bid {
    kind: String,
    auction: u64,
    bidder: u64,
    price: i64,
    date_time: i64,
}

struct QueryFunction(Query);

impl RowFunction for QueryFunction {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        if nexmark::validate(&row.value).is_err() {
            return;
        }
        let Ok(bid) = serde_json::from_slice::<Bid>(&row.value) else {
            return;
        };
        if bid.kind != "bid" {
            return;
        }
        let value = match self.0 {
            Query::Q0 => row.value.clone(),
            Query::Q1 => to_json(&EuroBid {
                auction: bid.auction,
                bidder: bid.bidder,
                price: bid.price * EUROS_PER_THOUSAND_DOLLARS / 1_000,
                date_time: bid.date_time,
            }),
            Query::Q2 if bid.auction % Q2_AUCTION_MODULUS == 0 => to_json(&SelectedBid {
                auction: bid.auction,
                price: bid.price,
            }),
            Query::Q2 => return,
        };
        out.push(Row { value, ..row });
    }
}

fn to_json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("query results serialize"))
}

/// The output `query` must produce for one input record's value, computed from the JSON
/// without the job's types: `None` if the record yields nothing.
pub fn oracle(query: Query, value: &[u8]) -> Option<Value> {
    nexmark::validate(value).ok()?;
    let event: Value = serde_json::from_slice(value).ok()?;
    if event["kind"] != "bid" {
        return None;
    }
    let (auction, price) = (event["auction"].as_u64()?, event["price"].as_i64()?);
    match query {
        Query::Q0 => Some(event),
        Query::Q1 => Some(serde_json::json!({
            "auction": auction,
            "bidder": event["bidder"],
            "price": price * 908 / 1000,
            "date_time": event["date_time"],
        })),
        Query::Q2 => (auction % 123 == 0).then(|| {
            serde_json::json!({
                "auction": auction,
                "price": price,
            })
        }),
    }
}

/// Every input record's [`oracle`] output, keyed as its input.
pub fn expected_records(query: Query, input: &[Input<'_>]) -> ExpectedRecords {
    let mut expected = ExpectedRecords::new();
    for i in input {
        if let Some(out) = oracle(query, i.value) {
            expect(&mut expected, i.key, &out);
        }
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{GeneratorConfig, Workload};

    #[test]
    fn each_query_matches_its_oracle_on_generated_events() {
        let config = GeneratorConfig {
            invalid_fraction: 0.05,
            ..GeneratorConfig::default()
        };
        let events: Vec<_> = Workload::Nexmark
            .events(4, &config, 5_000)
            .unwrap()
            .collect();
        for query in Query::ALL {
            let mut got = Vec::new();
            let mut want = Vec::new();
            for e in &events {
                let row = Row {
                    key: Bytes::from(e.key.clone()),
                    value: Bytes::from(e.value.clone()),
                    ts: e.timestamp_ms,
                };
                QueryFunction(query).apply(row, &mut got);
                want.extend(oracle(query, &e.value));
            }
            let got: Vec<Value> = got
                .iter()
                .map(|r| serde_json::from_slice(&r.value).unwrap())
                .collect();
            assert_eq!(got, want, "{query:?}");
            assert!(!got.is_empty(), "{query:?} selects something");
        }
    }
}

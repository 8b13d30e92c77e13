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

use super::{ExpectedRecords, Input, Keyed, Outputs, expect, valid_records};
use crate::nexmark;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_engine::{DataStream, KafkaRecord};

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

/// The fields of a bid the queries read.
#[derive(Deserialize)]
struct Bid {
    kind: String,
    auction: u64,
    bidder: u64,
    price: i64,
    date_time: i64,
}

/// What `query` makes of one valid event: its output value, if any.
fn answer(query: Query, value: &[u8]) -> Option<String> {
    let bid = serde_json::from_slice::<Bid>(value).ok()?;
    if bid.kind != "bid" {
        return None;
    }
    match query {
        Query::Q0 => Some(String::from_utf8_lossy(value).into_owned()),
        Query::Q1 => Some(to_json(&EuroBid {
            auction: bid.auction,
            bidder: bid.bidder,
            price: bid.price * EUROS_PER_THOUSAND_DOLLARS / 1_000,
            date_time: bid.date_time,
        })),
        Query::Q2 if bid.auction % Q2_AUCTION_MODULUS == 0 => Some(to_json(&SelectedBid {
            auction: bid.auction,
            price: bid.price,
        })),
        Query::Q2 => None,
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("query results serialize")
}

/// The job running `query`: `source -> query -> sink`, chained into one task per subtask,
/// each output keyed as its input was.
pub fn logic(query: Query, input: &DataStream<KafkaRecord>) -> Outputs {
    let answers = valid_records(input, nexmark::validate).flat_map(move |r: KafkaRecord| {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        answer(query, &r.value).map(|value| Keyed { key, value })
    });
    Outputs::one(query.name(), answers)
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
    use crate::jobs::{Job, assert_matches_oracle};

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
            assert_matches_oracle(Job::Nexmark(query), &events);
        }
    }
}

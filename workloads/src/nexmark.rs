//! The Nexmark workload: persons, auctions and bids in the benchmark's 1:3:46 proportions, with
//! its hot auctions, hot bidders and hot sellers. Values are JSON with a `kind` field; persons
//! and auctions are keyed by `id`, bids by `auction`.
//!
//! This is our own generator, not the `nexmark` crate (Apache-2.0, last released January 2023):
//! that crate seeds each event from its event number alone, so no seed changes its output, and
//! it has no bounded disorder, late or invalid events to configure.
//!
//! The parameters are those of the standard generator in Apache Beam's Nexmark suite
//! (apache/beam, `sdks/java/testing/nexmark`: `NexmarkConfiguration.java`,
//! `sources/generator/GeneratorConfig.java` and `sources/generator/model/{Person,Auction,Bid,
//! Price}Generator.java`), which the Flink Nexmark project (github.com/nexmark/nexmark) keeps:
//! - of every 50 consecutive events, the first is a person, the next 3 auctions, the other 46
//!   bids; person and auction ids count up from 1000 in event order, categories are 10..15;
//! - a bid is for the hot auction (the first of the current block of 100 auctions) with
//!   probability 1/2 (`hotAuctionRatio` 2), else for one of the last 100 auctions in flight or
//!   up to 10 ahead of them;
//! - a bid is by the hot bidder (the second person of the current block of 100) with
//!   probability 3/4 (`hotBiddersRatio` 4), and an auction is by the hot seller (the first
//!   person of the block) with probability 3/4 (`hotSellersRatio` 4); others are among the
//!   last 1000 active people or up to 10 ahead of them;
//! - prices are `round(10^(6u) * 100)` cents for uniform `u`; a reserve is the initial bid
//!   plus another such price; an auction lasts up to twice the time 100 more auctions take;
//! - `extra` pads events to average sizes of 200 (person), 500 (auction) and 100 (bid) bytes.
//!
//! Bids' `channel` and `url` follow the `nexmark` crate (risingwavelabs/nexmark-rs,
//! `src/config.rs`: `hot_channels`, `hot_channel_ratio` 2): half of the bids come from four hot
//! channels (Google, Facebook, Baidu, Apple), the rest from 10 000 others of our naming.
//!
//! Event time comes from the shared clock rather than Nexmark's fixed inter-event delay, so
//! disorder and lateness apply. An invalid event has one defect that [`validate`] finds again:
//! a person without `email_address`, an auction with a negative `initial_bid`, or a bid with a
//! negative `price`. The key skew settings do not apply here.

use crate::generator::{
    Event, EventTime, GeneratorConfig, Invalid, count_field, letters, one_of, parse, roll_invalid,
    str_field,
};
use rand::Rng;
use serde_json::{Value, json};
use weir_seams::rng::{self, WeirRng};

/// The values of `kind`.
pub const KINDS: [&str; 3] = ["person", "auction", "bid"];
/// Events per cycle of the proportions, and persons and auctions in each.
const CYCLE: u64 = 50;
const PERSONS_PER_CYCLE: u64 = 1;
const AUCTIONS_PER_CYCLE: u64 = 3;
/// Ids start here, so that queries find matches even in small runs.
const FIRST_PERSON_ID: u64 = 1_000;
const FIRST_AUCTION_ID: u64 = 1_000;
const FIRST_CATEGORY_ID: u64 = 10;
const CATEGORIES: u64 = 5;
/// One in this many bids is not for the hot auction; likewise bidders and sellers.
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_BIDDERS_RATIO: u64 = 4;
const HOT_SELLERS_RATIO: u64 = 4;
/// Auctions and persons per block with one hot member.
const HOT_BLOCK: u64 = 100;
/// Auctions in flight, active people, and how far ahead of the newest a reference may be.
const IN_FLIGHT_AUCTIONS: u64 = 100;
const ACTIVE_PEOPLE: u64 = 1_000;
const ID_LEAD: u64 = 10;
/// Average event sizes that `extra` pads to, in bytes.
const PERSON_BYTES: usize = 200;
const AUCTION_BYTES: usize = 500;
const BID_BYTES: usize = 100;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const OTHER_CHANNELS: u64 = 10_000;
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];

/// The kind of event number `n`.
fn kind(n: u64) -> &'static str {
    match n % CYCLE {
        r if r < PERSONS_PER_CYCLE => "person",
        r if r < PERSONS_PER_CYCLE + AUCTIONS_PER_CYCLE => "auction",
        _ => "bid",
    }
}

/// Index (from 0) of the newest person at event `n`: the one created there if it is a person.
/// Each cycle starts with its only person.
fn last_person(n: u64) -> u64 {
    const { assert!(PERSONS_PER_CYCLE == 1) };
    n / CYCLE
}

/// Index (from 0) of the newest auction at event `n`, -1 before the first.
fn last_auction(n: u64) -> i64 {
    let (cycle, r) = ((n / CYCLE) as i64, n % CYCLE);
    let per = AUCTIONS_PER_CYCLE as i64;
    if r < PERSONS_PER_CYCLE {
        cycle * per - 1
    } else if r < PERSONS_PER_CYCLE + AUCTIONS_PER_CYCLE {
        cycle * per + (r - PERSONS_PER_CYCLE) as i64
    } else {
        cycle * per + per - 1
    }
}

/// Generates Nexmark events: an iterator over exactly the number of events asked for.
pub struct Nexmark {
    rng: WeirRng,
    time: EventTime,
    invalid_fraction: f64,
    /// How long an auction lasts at most, in milliseconds.
    auction_ms_max: i64,
    n: u64,
    left: u64,
}

impl Nexmark {
    /// The first `count` Nexmark events for `seed` and `config`.
    pub fn new(seed: u64, config: &GeneratorConfig, count: u64) -> Result<Self, String> {
        config.validate()?;
        let time = EventTime::new(config);
        let events_per_flight = IN_FLIGHT_AUCTIONS * CYCLE / AUCTIONS_PER_CYCLE;
        let horizon_ms = (events_per_flight as f64 * time.mean_gap_ms()).round() as i64;
        Ok(Self {
            rng: rng::derive(seed, "workloads/nexmark"),
            time,
            invalid_fraction: config.invalid_fraction,
            auction_ms_max: horizon_ms.saturating_mul(2).max(1),
            n: 0,
            left: count,
        })
    }

    /// A person among the active ones, or a few not yet created.
    fn some_person(&mut self) -> u64 {
        let people = last_person(self.n) + 1;
        let active = people.min(ACTIVE_PEOPLE);
        people - active + self.rng.random_range(0..active + ID_LEAD)
    }

    /// An auction among those in flight, or a few not yet created.
    fn some_auction(&mut self) -> u64 {
        let newest = last_auction(self.n).max(0) as u64;
        let oldest = newest.saturating_sub(IN_FLIGHT_AUCTIONS);
        oldest + self.rng.random_range(0..newest - oldest + 1 + ID_LEAD)
    }

    /// A price in cents, spread over six orders of magnitude.
    fn price(&mut self) -> i64 {
        let u: f64 = self.rng.random();
        (10f64.powf(u * 6.0) * 100.0).round() as i64
    }

    /// Random letters padding an event of `size` bytes towards `average` bytes.
    fn extra(&mut self, size: usize, average: usize) -> String {
        let gap = average.saturating_sub(size);
        let len = self.rng.random_range(gap * 4 / 5..=gap * 6 / 5);
        letters(&mut self.rng, len)
    }

    fn person(&mut self, ts: i64) -> (u64, Value) {
        let id = FIRST_PERSON_ID + last_person(self.n);
        let r = &mut self.rng;
        let name = format!(
            "{} {}",
            FIRST_NAMES[r.random_range(0..FIRST_NAMES.len())],
            LAST_NAMES[r.random_range(0..LAST_NAMES.len())]
        );
        let email = format!("{}@{}.com", letters(r, 7), letters(r, 5));
        let card: Vec<String> = (0..4)
            .map(|_| format!("{:04}", r.random_range(0..10_000)))
            .collect();
        let card = card.join(" ");
        let city = CITIES[r.random_range(0..CITIES.len())];
        let state = STATES[r.random_range(0..STATES.len())];
        let size = 8 + name.len() + email.len() + card.len() + city.len() + state.len();
        let extra = self.extra(size, PERSON_BYTES);
        let value = json!({
            "kind": "person", "id": id, "name": name, "email_address": email,
            "credit_card": card, "city": city, "state": state, "date_time": ts, "extra": extra,
        });
        (id, value)
    }

    fn auction(&mut self, ts: i64) -> (u64, Value) {
        let id = FIRST_AUCTION_ID + last_auction(self.n) as u64;
        let seller = if self.rng.random_range(0..HOT_SELLERS_RATIO) > 0 {
            last_person(self.n) / HOT_BLOCK * HOT_BLOCK
        } else {
            self.some_person()
        };
        let category = FIRST_CATEGORY_ID + self.rng.random_range(0..CATEGORIES);
        let initial_bid = self.price();
        let reserve = initial_bid + self.price();
        let expires = ts + 1 + self.rng.random_range(0..self.auction_ms_max);
        let item_name = letters(&mut self.rng, 20);
        let description = letters(&mut self.rng, 100);
        let extra = self.extra(8 + item_name.len() + description.len() + 40, AUCTION_BYTES);
        let value = json!({
            "kind": "auction", "id": id, "item_name": item_name, "description": description,
            "initial_bid": initial_bid, "reserve": reserve, "date_time": ts, "expires": expires,
            "seller": FIRST_PERSON_ID + seller, "category": category, "extra": extra,
        });
        (id, value)
    }

    fn bid(&mut self, ts: i64) -> (u64, Value) {
        let auction = if self.rng.random_range(0..HOT_AUCTION_RATIO) > 0 {
            last_auction(self.n).max(0) as u64 / HOT_BLOCK * HOT_BLOCK
        } else {
            self.some_auction()
        };
        // The second person of the block, so that hot bidders are not hot sellers.
        let bidder = if self.rng.random_range(0..HOT_BIDDERS_RATIO) > 0 {
            last_person(self.n) / HOT_BLOCK * HOT_BLOCK + 1
        } else {
            self.some_person()
        };
        let price = self.price();
        let (channel, url) = if self.rng.random_bool(0.5) {
            let c = HOT_CHANNELS[self.rng.random_range(0..HOT_CHANNELS.len())];
            let url = format!(
                "https://www.nexmark.com/{}/item.htm?query=1",
                c.to_lowercase()
            );
            (c.to_string(), url)
        } else {
            let c = self.rng.random_range(0..OTHER_CHANNELS);
            let path = letters(&mut self.rng, 5);
            let url = format!("https://www.nexmark.com/{path}/item.htm?query=1&channel_id={c}");
            (format!("channel-{c}"), url)
        };
        let extra = self.extra(32, BID_BYTES);
        let auction = FIRST_AUCTION_ID + auction;
        let value = json!({
            "kind": "bid", "auction": auction, "bidder": FIRST_PERSON_ID + bidder,
            "price": price, "channel": channel, "url": url, "date_time": ts, "extra": extra,
        });
        (auction, value)
    }
}

impl Iterator for Nexmark {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.left = self.left.checked_sub(1)?;
        let (timestamp_ms, late) = self.time.next(&mut self.rng);
        let kind = kind(self.n);
        let (key, value) = match kind {
            "person" => self.person(timestamp_ms),
            "auction" => self.auction(timestamp_ms),
            _ => self.bid(timestamp_ms),
        };
        self.n += 1;
        let invalid = roll_invalid(&mut self.rng, self.invalid_fraction).then_some(match kind {
            "person" => Invalid::Missing("email_address"),
            "auction" => Invalid::Negative("initial_bid"),
            _ => Invalid::Negative("price"),
        });
        Some(Event::made(
            key.to_string().into_bytes(),
            value,
            (timestamp_ms, late),
            invalid,
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.left).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// Checks a Nexmark event as a validating job would, naming the first defect found.
pub fn validate(value: &[u8]) -> Result<(), Invalid> {
    let o = parse(value)?;
    one_of(&o, "kind", &KINDS)?;
    let (counts, strings): (&[&'static str], &[&'static str]) = match str_field(&o, "kind")? {
        "person" => (
            &["id", "date_time"],
            &[
                "name",
                "email_address",
                "credit_card",
                "city",
                "state",
                "extra",
            ],
        ),
        "auction" => (
            &[
                "id",
                "initial_bid",
                "reserve",
                "date_time",
                "expires",
                "seller",
                "category",
            ],
            &["item_name", "description", "extra"],
        ),
        _ => (
            &["auction", "bidder", "price", "date_time"],
            &["channel", "url", "extra"],
        ),
    };
    for name in counts {
        count_field(&o, name)?;
    }
    for name in strings {
        str_field(&o, name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::Workload;
    use crate::generator::testing::{self, N};
    use std::collections::BTreeMap;

    #[test]
    fn same_seed_same_events_other_seed_other_events() {
        testing::assert_deterministic(Workload::Nexmark);
    }

    #[test]
    fn fractions_disorder_and_defects_are_as_designed() {
        testing::assert_designed(Workload::Nexmark);
    }

    #[test]
    fn every_50_events_are_1_person_3_auctions_46_bids_with_ids_in_order() {
        let events: Vec<_> = Nexmark::new(4, &testing::config(), N)
            .unwrap()
            .map(|e| (e.key, parse(&e.value).unwrap()))
            .collect();
        let (mut persons, mut auctions) = (FIRST_PERSON_ID, FIRST_AUCTION_ID);
        for cycle in events.chunks(CYCLE as usize) {
            let kinds: Vec<&str> = cycle
                .iter()
                .map(|(_, o)| o["kind"].as_str().unwrap())
                .collect();
            assert_eq!(kinds[0], "person");
            assert_eq!(kinds[1..4], ["auction"; 3]);
            assert!(kinds[4..].iter().all(|k| *k == "bid"));
            for (key, o) in cycle {
                let key: u64 = std::str::from_utf8(key).unwrap().parse().unwrap();
                match o["kind"].as_str().unwrap() {
                    "person" => {
                        assert_eq!(o["id"], persons);
                        assert_eq!(key, persons);
                        persons += 1;
                    }
                    "auction" => {
                        assert_eq!(o["id"], auctions);
                        assert_eq!(key, auctions);
                        assert!(o["expires"].as_i64() > o["date_time"].as_i64());
                        auctions += 1;
                    }
                    _ => assert_eq!(o["auction"], key),
                }
            }
        }
        assert_eq!(persons - FIRST_PERSON_ID, N / CYCLE);
    }

    #[test]
    fn hot_auctions_bidders_and_sellers_dominate() {
        let mut by = BTreeMap::<(&str, u64), usize>::new();
        let (mut bids, mut auctions) = (0, 0);
        for e in Nexmark::new(9, &GeneratorConfig::default(), N).unwrap() {
            let o = parse(&e.value).unwrap();
            let mut count = |role, field: &str| {
                *by.entry((role, o[field].as_u64().unwrap())).or_default() += 1;
            };
            match o["kind"].as_str().unwrap() {
                "bid" => {
                    bids += 1;
                    count("auction", "auction");
                    count("bidder", "bidder");
                }
                "auction" => {
                    auctions += 1;
                    count("seller", "seller");
                }
                _ => {}
            }
        }
        let top = |role| {
            by.iter()
                .filter(|((r, _), _)| *r == role)
                .max_by_key(|(_, n)| **n)
                .map(|((_, id), n)| (*id, *n))
                .unwrap()
        };
        // 10 000 events span 6 blocks of 100 auctions and 2 of 100 persons.
        let (auction, n) = top("auction");
        assert_eq!((auction - FIRST_AUCTION_ID) % HOT_BLOCK, 0);
        assert!(n * 20 > bids, "hot auction has {n} of {bids} bids");
        let (bidder, n) = top("bidder");
        assert_eq!((bidder - FIRST_PERSON_ID) % HOT_BLOCK, 1);
        assert!(n * 4 > bids, "hot bidder has {n} of {bids} bids");
        let (seller, n) = top("seller");
        assert_eq!((seller - FIRST_PERSON_ID) % HOT_BLOCK, 0);
        assert!(
            n * 4 > auctions,
            "hot seller has {n} of {auctions} auctions"
        );
    }
}

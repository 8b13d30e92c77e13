//! What the event generators share: their settings, the events they make, the event-time clock
//! that spaces, disorders and delays timestamps, and the checks a validating job applies.
//!
//! Event time follows a clock that starts at `start_ms` and advances by `1 / rate_per_s` on
//! average. An on-time event is stamped up to `out_of_orderness_ms` behind that clock, so it is
//! never behind the watermark `max_ts - out_of_orderness_ms` of the events before it. A late
//! event is stamped strictly behind that watermark.

use crate::keys::KeyDist;
use crate::{clicks, nexmark, orders};
use rand::Rng;
use serde_json::Value;
use std::fmt;
use weir_seams::rng::WeirRng;

/// How far behind the watermark a late event may fall beyond the bound, at least, in
/// milliseconds: with a small bound, late events still spread over a few windows.
const LATE_SPREAD_MIN_MS: i64 = 1_000;

/// Latest start of event time accepted, in milliseconds since the Unix epoch: the end of the
/// year 9999, far from overflowing anything derived from it.
const START_MS_MAX: i64 = 253_402_300_799_999;

/// How keys (customers, users) are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Skew {
    /// Every key equally likely.
    Uniform,
    /// The key of rank `r` (from 1) has weight proportional to `1 / r^exponent`.
    Zipf {
        /// Skew exponent: 0 is uniform, about 1 is typical of real traffic.
        exponent: f64,
    },
}

/// Settings shared by every generator; each unit is in its name.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorConfig {
    /// Event time the clock starts at, in milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// Events per second of event time.
    pub rate_per_s: f64,
    /// Distinct keys drawn from (customers for orders, users for clicks).
    pub keys: u64,
    /// How keys are drawn.
    pub skew: Skew,
    /// How far behind the event-time clock an on-time event may be, in milliseconds.
    pub out_of_orderness_ms: i64,
    /// Share of events stamped behind the watermark `max_ts - out_of_orderness_ms`.
    pub late_fraction: f64,
    /// Share of events a validating job must reject.
    pub invalid_fraction: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            // 2023-11-14T22:13:20Z: fixed, so that a default run is reproducible.
            start_ms: 1_700_000_000_000,
            rate_per_s: 1_000.0,
            keys: 1_000,
            skew: Skew::Uniform,
            out_of_orderness_ms: 1_000,
            late_fraction: 0.0,
            invalid_fraction: 0.0,
        }
    }
}

impl GeneratorConfig {
    /// Checks every setting; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), String> {
        let fraction = |name: &str, f: f64| {
            if (0.0..=1.0).contains(&f) {
                Ok(())
            } else {
                Err(format!("{name} must be between 0 and 1, not {f}"))
            }
        };
        if !(0..=START_MS_MAX).contains(&self.start_ms) {
            return Err(format!(
                "start_ms must be between 0 and {START_MS_MAX}, not {}",
                self.start_ms
            ));
        }
        if !(self.rate_per_s.is_finite() && self.rate_per_s > 0.0) {
            return Err(format!(
                "rate_per_s must be positive, not {}",
                self.rate_per_s
            ));
        }
        if self.keys == 0 {
            return Err("keys must be at least 1".into());
        }
        if let Skew::Zipf { exponent } = self.skew
            && !(exponent.is_finite() && exponent >= 0.0)
        {
            return Err(format!(
                "the zipf exponent must be finite and at least 0, not {exponent}"
            ));
        }
        if self.out_of_orderness_ms < 0 {
            return Err(format!(
                "out_of_orderness_ms must not be negative, not {}",
                self.out_of_orderness_ms
            ));
        }
        fraction("late_fraction", self.late_fraction)?;
        fraction("invalid_fraction", self.invalid_fraction)
    }

    /// The distribution keys are drawn from.
    pub(crate) fn key_dist(&self) -> KeyDist {
        match self.skew {
            Skew::Uniform => KeyDist::Uniform { n: self.keys },
            Skew::Zipf { exponent } => KeyDist::Zipf {
                n: self.keys,
                s: exponent,
            },
        }
    }
}

/// One generated event, ready to be written as a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Record key.
    pub key: Vec<u8>,
    /// Record value: one JSON object.
    pub value: Vec<u8>,
    /// Event time, which is also the record timestamp, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Whether it was stamped behind the watermark of the events before it.
    pub late: bool,
    /// Why a validating job must reject it, if it must.
    pub invalid: Option<Invalid>,
}

/// Why a validating job must reject an event; each names the field at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invalid {
    /// A required field is absent.
    Missing(&'static str),
    /// A number that must not be negative is.
    Negative(&'static str),
    /// A field does not hold a value of its type.
    Unparseable(&'static str),
    /// A field holds a value outside its allowed set.
    Unknown(&'static str),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Missing(field) => write!(f, "{field} is missing"),
            Invalid::Negative(field) => write!(f, "{field} is negative"),
            Invalid::Unparseable(field) => write!(f, "{field} does not parse"),
            Invalid::Unknown(field) => write!(f, "{field} has an unknown value"),
        }
    }
}

/// The workloads with a generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Orders created, updated and cancelled ([`orders`]).
    Orders,
    /// Clicks, purchases and transactions of users ([`clicks`]).
    Clicks,
    /// Nexmark persons, auctions and bids ([`nexmark`]).
    Nexmark,
}

impl Workload {
    /// The workload's name, also its default topic.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Orders => "orders",
            Workload::Clicks => "clicks",
            Workload::Nexmark => "nexmark",
        }
    }

    /// Whether `keys` and `skew` apply: Nexmark has its own hot auctions, bidders and sellers.
    pub fn uses_key_skew(self) -> bool {
        self != Workload::Nexmark
    }

    /// The first `count` events of this workload for `seed`.
    pub fn events(
        self,
        seed: u64,
        config: &GeneratorConfig,
        count: u64,
    ) -> Result<Box<dyn Iterator<Item = Event> + Send>, String> {
        Ok(match self {
            Workload::Orders => Box::new(orders::Orders::new(seed, config, count)?),
            Workload::Clicks => Box::new(clicks::Clicks::new(seed, config, count)?),
            Workload::Nexmark => Box::new(nexmark::Nexmark::new(seed, config, count)?),
        })
    }

    /// Checks one record value as a validating job would.
    pub fn validate(self, value: &[u8]) -> Result<(), Invalid> {
        match self {
            Workload::Orders => orders::validate(value),
            Workload::Clicks => clicks::validate(value),
            Workload::Nexmark => nexmark::validate(value),
        }
    }
}

/// The event-time clock of one generator.
#[derive(Clone, Debug)]
pub(crate) struct EventTime {
    now_us: i64,
    gap_us_max: i64,
    out_of_orderness_ms: i64,
    late_fraction: f64,
    max_ts_ms: Option<i64>,
}

impl EventTime {
    /// A clock for `config`, which must be valid.
    pub(crate) fn new(config: &GeneratorConfig) -> Self {
        // Uniform gaps in whole microseconds: integer arithmetic is the same everywhere.
        let mean_gap_us = (1e6 / config.rate_per_s).round().min(i64::MAX as f64 / 4.0) as i64;
        Self {
            now_us: config.start_ms.saturating_mul(1_000),
            gap_us_max: mean_gap_us.saturating_mul(2),
            out_of_orderness_ms: config.out_of_orderness_ms,
            late_fraction: config.late_fraction,
            max_ts_ms: None,
        }
    }

    /// Mean gap between events, in milliseconds.
    pub(crate) fn mean_gap_ms(&self) -> f64 {
        self.gap_us_max as f64 / 2_000.0
    }

    /// The next event's timestamp in milliseconds, and whether it is late.
    pub(crate) fn next(&mut self, rng: &mut WeirRng) -> (i64, bool) {
        self.now_us = self
            .now_us
            .saturating_add(rng.random_range(0..=self.gap_us_max));
        if let Some(max) = self.max_ts_ms {
            // The newest timestamp a watermark of `max - bound` has passed.
            let passed = max - self.out_of_orderness_ms - 1;
            if passed >= 0 && rng.random_bool(self.late_fraction) {
                let spread = self.out_of_orderness_ms.max(LATE_SPREAD_MIN_MS);
                return ((passed - rng.random_range(0..=spread)).max(0), true);
            }
        }
        let ts = (self.now_us / 1_000 - rng.random_range(0..=self.out_of_orderness_ms)).max(0);
        self.max_ts_ms = Some(self.max_ts_ms.map_or(ts, |m| m.max(ts)));
        (ts, false)
    }
}

/// Draws whether the next event is invalid.
pub(crate) fn roll_invalid(rng: &mut WeirRng, invalid_fraction: f64) -> bool {
    rng.random_bool(invalid_fraction)
}

/// A string of `len` random lowercase letters.
pub(crate) fn letters(rng: &mut WeirRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(rng.random_range(b'a'..=b'z')))
        .collect()
}

/// An amount in cents as the JSON number of currency units (two decimals).
pub(crate) fn money(cents: i64) -> f64 {
    cents as f64 / 100.0
}

impl Event {
    /// The event of `value`, given `invalid`'s defect first if it has one.
    pub(crate) fn made(
        key: Vec<u8>,
        mut value: Value,
        (timestamp_ms, late): (i64, bool),
        invalid: Option<Invalid>,
    ) -> Self {
        if let Some(defect) = invalid {
            spoil(&mut value, defect);
        }
        Self {
            key,
            value: serde_json::to_vec(&value).expect("JSON serialises"),
            timestamp_ms,
            late,
            invalid,
        }
    }
}

/// Gives the object `value` the defect `defect`, in the field it names.
fn spoil(value: &mut Value, defect: Invalid) {
    let object = value.as_object_mut().expect("events are JSON objects");
    match defect {
        Invalid::Missing(f) => {
            object.remove(f);
        }
        Invalid::Negative(f) => {
            let v = object.get(f).expect("the spoiled field exists");
            // Zero would stay non-negative, so it becomes the smallest negative unit.
            let negative = match v.as_i64() {
                Some(n) => Value::from(-n.max(1)),
                None => Value::from(-v.as_f64().expect("a number").max(0.01)),
            };
            object.insert(f.into(), negative);
        }
        Invalid::Unparseable(f) => {
            object.insert(f.into(), Value::from("n/a"));
        }
        Invalid::Unknown(f) => {
            object.insert(f.into(), Value::from("unknown"));
        }
    }
}

/// Parses a record value as one JSON object.
pub(crate) fn parse(value: &[u8]) -> Result<serde_json::Map<String, Value>, Invalid> {
    match serde_json::from_slice(value) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Invalid::Unparseable("value")),
    }
}

/// The field `name` of `object`.
pub(crate) fn field<'a>(
    object: &'a serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<&'a Value, Invalid> {
    object.get(name).ok_or(Invalid::Missing(name))
}

/// The string field `name`.
pub(crate) fn str_field<'a>(
    object: &'a serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, Invalid> {
    field(object, name)?
        .as_str()
        .ok_or(Invalid::Unparseable(name))
}

/// The string field `name`, which must be one of `allowed`.
pub(crate) fn one_of(
    object: &serde_json::Map<String, Value>,
    name: &'static str,
    allowed: &[&str],
) -> Result<(), Invalid> {
    let v = str_field(object, name)?;
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(Invalid::Unknown(name))
    }
}

/// The integer field `name`, which must not be negative.
pub(crate) fn count_field(
    object: &serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<i64, Invalid> {
    let n = field(object, name)?
        .as_i64()
        .ok_or(Invalid::Unparseable(name))?;
    if n < 0 {
        Err(Invalid::Negative(name))
    } else {
        Ok(n)
    }
}

/// The number field `name`, which must not be negative.
pub(crate) fn amount_field(
    object: &serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<f64, Invalid> {
    let x = field(object, name)?
        .as_f64()
        .ok_or(Invalid::Unparseable(name))?;
    if x < 0.0 {
        Err(Invalid::Negative(name))
    } else {
        Ok(x)
    }
}

/// Checks shared by every generator's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Events of a test run.
    pub(crate) const N: u64 = 10_000;

    /// A config with disorder, late and invalid events.
    pub(crate) fn config() -> GeneratorConfig {
        GeneratorConfig {
            out_of_orderness_ms: 200,
            late_fraction: 0.05,
            invalid_fraction: 0.1,
            ..GeneratorConfig::default()
        }
    }

    /// Same seed, same events; another seed, other events.
    pub(crate) fn assert_deterministic(w: Workload) {
        let c = config();
        let a: Vec<Event> = w.events(7, &c, 500).unwrap().collect();
        let b: Vec<Event> = w.events(7, &c, 500).unwrap().collect();
        let other: Vec<Event> = w.events(8, &c, 500).unwrap().collect();
        assert_eq!(a.len(), 500);
        assert_eq!(a, b, "same seed, same events");
        assert_ne!(a, other, "another seed, other events");
    }

    /// Late and invalid shares within 1.5 points of the config's; timestamps within the
    /// bound unless late, late ones behind the watermark; the validator finds each designed
    /// defect and nothing else.
    pub(crate) fn assert_designed(w: Workload) {
        let c = config();
        let events: Vec<Event> = w.events(11, &c, N).unwrap().collect();
        assert_eq!(events.len() as u64, N);
        let share = |n: usize| n as f64 / N as f64;
        let late = share(events.iter().filter(|e| e.late).count());
        let invalid = share(events.iter().filter(|e| e.invalid.is_some()).count());
        assert!((late - c.late_fraction).abs() < 0.015, "late share {late}");
        assert!(
            (invalid - c.invalid_fraction).abs() < 0.015,
            "invalid share {invalid}"
        );
        let mut max: Option<i64> = None;
        for e in &events {
            let watermark = max.map(|m| m - c.out_of_orderness_ms);
            if e.late {
                let wm = watermark.expect("the first event is never late");
                assert!(
                    e.timestamp_ms < wm,
                    "late {} vs watermark {wm}",
                    e.timestamp_ms
                );
            } else {
                if let Some(wm) = watermark {
                    assert!(e.timestamp_ms >= wm, "on time {} vs {wm}", e.timestamp_ms);
                }
                max = Some(max.map_or(e.timestamp_ms, |m| m.max(e.timestamp_ms)));
            }
            assert_eq!(w.validate(&e.value).err(), e.invalid, "{e:?}");
        }
        // The clock advances by 1 / rate on average: 10 s for 10 000 events at 1000/s.
        let span_ms = max.unwrap() - c.start_ms;
        let expected_ms = N as f64 * 1_000.0 / c.rate_per_s;
        assert!(
            (span_ms as f64 - expected_ms).abs() < 0.05 * expected_ms,
            "span {span_ms} ms"
        );
    }

    /// How often the most frequent key occurs, for keys taken from each event by `key`.
    pub(crate) fn top_count(
        w: Workload,
        skew: Skew,
        key: impl Fn(&serde_json::Map<String, Value>) -> Option<String>,
    ) -> usize {
        let c = GeneratorConfig {
            skew,
            ..GeneratorConfig::default()
        };
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for e in w.events(3, &c, N).unwrap() {
            if let Some(k) = key(&parse(&e.value).unwrap()) {
                *counts.entry(k).or_default() += 1;
            }
        }
        counts.into_values().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_settings_are_named() {
        let ok = GeneratorConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let bad = [
            GeneratorConfig {
                late_fraction: 1.5,
                ..ok.clone()
            },
            GeneratorConfig {
                rate_per_s: 0.0,
                ..ok.clone()
            },
            GeneratorConfig {
                keys: 0,
                ..ok.clone()
            },
            GeneratorConfig {
                skew: Skew::Zipf { exponent: -1.0 },
                ..ok.clone()
            },
        ];
        for (c, name) in bad
            .iter()
            .zip(["late_fraction", "rate_per_s", "keys", "zipf"])
        {
            let e = c.validate().unwrap_err();
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn a_fast_rate_stamps_many_events_per_millisecond() {
        let c = GeneratorConfig {
            rate_per_s: 10_000_000.0,
            out_of_orderness_ms: 0,
            ..GeneratorConfig::default()
        };
        let mut time = EventTime::new(&c);
        let mut rng = weir_seams::rng::derive(1, "test");
        let stamps: Vec<i64> = (0..1_000).map(|_| time.next(&mut rng).0).collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
        assert!(stamps[999] - stamps[0] <= 1, "{stamps:?}");
    }
}

//! Joins of two keyed streams in event time.
//!
//! An interval join pairs every left record at `l` with every right record of the same key at
//! `r` where `l + lower <= r <= l + upper`. Both sides wait in keyed state until the watermark
//! says no partner can still arrive: a left record once the watermark passes `l + upper`, a
//! right one once it passes `r - lower`. It runs as a keyed co-process function, so its
//! buffers are ordinary managed state and checkpoints save them.

use super::DropReason;
use crate::element::Timestamp;
use crate::function::{Context, KeyedCoProcessFunction, KeyedContext};
use crate::state::{MapStateDescriptor, StateError};
use crate::timers::TimeDomain;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::rc::Rc;

/// Emits the results of one joined pair.
pub(crate) type PairFn<L, R, O> = Rc<dyn Fn(&L, &R, &mut Context<'_, O>)>;

/// The interval join of a left and a right stream.
pub(crate) struct IntervalJoin<L, R, O> {
    pub lower: i64,
    pub upper: i64,
    pub pair: PairFn<L, R, O>,
}

impl<L, R, O> Clone for IntervalJoin<L, R, O> {
    fn clone(&self) -> Self {
        Self {
            lower: self.lower,
            upper: self.upper,
            pair: Rc::clone(&self.pair),
        }
    }
}

const LEFT: &str = "interval-join-left";
const RIGHT: &str = "interval-join-right";

/// Records of one side waiting for partners, by timestamp.
fn buffer<T>(name: &'static str) -> MapStateDescriptor<Timestamp, Vec<T>> {
    MapStateDescriptor::new(name)
}

impl<L, R, O> IntervalJoin<L, R, O>
where
    L: Serialize + DeserializeOwned + Clone,
    R: Serialize + DeserializeOwned + Clone,
    O: Clone + 'static,
{
    /// Whether a record at `ts` is too late to join: behind the watermark.
    fn late<K>(ctx: &KeyedContext<'_, K, O>, ts: Timestamp) -> bool {
        ts < ctx.current_watermark()
    }

    /// Adds `value` at `ts` to its side's buffer and returns the other side's records.
    fn buffered<K, T: Serialize + DeserializeOwned + Clone, U: Serialize + DeserializeOwned>(
        ctx: &mut KeyedContext<'_, K, O>,
        (mine, theirs): (&'static str, &'static str),
        value: &T,
        ts: Timestamp,
    ) -> Result<Vec<(Timestamp, Vec<U>)>, StateError> {
        let own = buffer::<T>(mine);
        let mut state = ctx.map(&own)?;
        let mut at = state.get(&ts)?.unwrap_or_default();
        at.push(value.clone());
        state.put(&ts, &at)?;
        ctx.map(&buffer::<U>(theirs))?.entries()
    }

    fn emit_pair<K>(&self, ctx: &KeyedContext<'_, K, O>, l: &L, r: &R, ts: Timestamp) {
        let mut out = Context {
            timestamp: Some(ts),
            watermark: ctx.base.watermark,
            out: ctx.base.out,
            sides: ctx.base.sides,
            drops: ctx.base.drops,
        };
        (self.pair)(l, r, &mut out);
    }
}

impl<K, L, R, O> KeyedCoProcessFunction<K, L, R, O> for IntervalJoin<L, R, O>
where
    L: Serialize + DeserializeOwned + Clone,
    R: Serialize + DeserializeOwned + Clone,
    O: Clone + 'static,
{
    fn process_element1(
        &mut self,
        left: L,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), StateError> {
        let Some(l) = ctx.timestamp() else {
            return Err(StateError::Codec(
                "interval join: a record without a timestamp".into(),
            ));
        };
        if Self::late(ctx, l) {
            ctx.dropped(DropReason::Late);
            return Ok(());
        }
        let rights: Vec<(Timestamp, Vec<R>)> = Self::buffered(ctx, (LEFT, RIGHT), &left, l)?;
        for (r, values) in rights {
            if l + self.lower <= r && r <= l + self.upper {
                for right in &values {
                    self.emit_pair(ctx, &left, right, l.max(r));
                }
            }
        }
        ctx.register_event_time_timer(l.saturating_add(self.upper));
        Ok(())
    }

    fn process_element2(
        &mut self,
        right: R,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), StateError> {
        let Some(r) = ctx.timestamp() else {
            return Err(StateError::Codec(
                "interval join: a record without a timestamp".into(),
            ));
        };
        if Self::late(ctx, r) {
            ctx.dropped(DropReason::Late);
            return Ok(());
        }
        let lefts: Vec<(Timestamp, Vec<L>)> = Self::buffered(ctx, (RIGHT, LEFT), &right, r)?;
        for (l, values) in lefts {
            if l + self.lower <= r && r <= l + self.upper {
                for left in &values {
                    self.emit_pair(ctx, left, &right, l.max(r));
                }
            }
        }
        ctx.register_event_time_timer(r.saturating_sub(self.lower));
        Ok(())
    }

    fn on_timer(
        &mut self,
        at: Timestamp,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), StateError> {
        if domain != TimeDomain::EventTime {
            return Ok(());
        }
        let lefts = buffer::<L>(LEFT);
        for (l, _) in ctx.map(&lefts)?.entries()? {
            if l.saturating_add(self.upper) <= at {
                ctx.map(&lefts)?.remove(&l)?;
            }
        }
        let rights = buffer::<R>(RIGHT);
        for (r, _) in ctx.map(&rights)?.entries()? {
            if r.saturating_sub(self.lower) <= at {
                ctx.map(&rights)?.remove(&r)?;
            }
        }
        Ok(())
    }
}

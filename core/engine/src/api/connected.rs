//! Two streams into one operator: connected streams with a co-process function, interval
//! joins, and window joins.

use super::keyed::KeyedStream;
use super::stream::DataStream;
use super::{Feed, VertexCode};
use crate::element::Data;
use crate::function::{CoProcessFunction, Context, KeyedCoProcessFunction};
use crate::graph::VertexKind;
use crate::operator::OperatorFactory;
use crate::operator::co::IntervalJoin as IntervalJoinFn;
use crate::operator::edge::Codec;
use crate::operator::keyed::{KeyFn, KeyedCoProcessFactory};
use crate::operator::stateless::CoProcessFactory;
use crate::window::{TimeWindow, WindowAssigner};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::rc::Rc;

/// Two streams, for an operator that takes both.
pub struct ConnectedStreams<A, B> {
    first: DataStream<A>,
    second: DataStream<B>,
}

/// Adds a two-input operator fed by `feeds`.
fn two_input<O: Data>(
    first: &DataStream<impl Data>,
    (name, keyed): (&str, bool),
    factory: Rc<dyn OperatorFactory>,
    feeds: [Feed; 2],
) -> DataStream<O> {
    let v = first.env.add(
        name,
        VertexKind::Operator { keyed },
        VertexCode::Operator(factory),
        feeds.into(),
    );
    DataStream::from_vertex(first.env.clone(), v)
}

impl<A: Data, B: Data> ConnectedStreams<A, B> {
    pub(crate) fn new(first: DataStream<A>, second: DataStream<B>) -> Self {
        assert!(
            Rc::ptr_eq(&first.env.0, &second.env.0),
            "connected streams belong to one job"
        );
        Self { first, second }
    }

    /// Runs `f` over both streams, without keyed state. Each subtask runs its own clone.
    pub fn process<O: Data>(
        &self,
        f: impl CoProcessFunction<A, B, O> + Clone + 'static,
    ) -> DataStream<O> {
        let factory = Rc::new(CoProcessFactory {
            f,
            _t: PhantomData::<fn(A, B) -> O>,
        });
        let feeds = [
            self.first.feed(Codec::plain()),
            self.second.feed(Codec::plain()),
        ];
        two_input(&self.first, ("co-process", false), factory, feeds)
    }

    /// Partitions both streams by keys of one type, for a keyed co-process function.
    pub fn key_by<K>(
        &self,
        first: impl Fn(&A) -> K + 'static,
        second: impl Fn(&B) -> K + 'static,
    ) -> KeyedConnectedStreams<K, A, B>
    where
        K: Clone + Serialize + DeserializeOwned + 'static,
    {
        KeyedConnectedStreams {
            first: KeyedStream::new(self.first.clone(), Rc::new(first)),
            second: KeyedStream::new(self.second.clone(), Rc::new(second)),
        }
    }
}

/// Two streams partitioned by keys of one type.
pub struct KeyedConnectedStreams<K, A, B> {
    first: KeyedStream<K, A>,
    second: KeyedStream<K, B>,
}

impl<K, A, B> KeyedConnectedStreams<K, A, B>
where
    K: Clone + Serialize + DeserializeOwned + 'static,
    A: Data,
    B: Data,
{
    /// Runs `f` over both streams per key, with keyed state and timers shared by both inputs.
    /// Each subtask runs its own clone of `f`.
    pub fn process<O: Data>(
        &self,
        f: impl KeyedCoProcessFunction<K, A, B, O> + Clone + 'static,
    ) -> DataStream<O> {
        keyed_pair(&self.first, &self.second, "keyed-co-process", f)
    }
}

fn keyed_pair<K, A, B, O, F>(
    first: &KeyedStream<K, A>,
    second: &KeyedStream<K, B>,
    name: &str,
    f: F,
) -> DataStream<O>
where
    K: Clone + Serialize + DeserializeOwned + 'static,
    A: Data,
    B: Data,
    O: Data,
    F: KeyedCoProcessFunction<K, A, B, O> + Clone + 'static,
{
    let factory = Rc::new(KeyedCoProcessFactory {
        keys: (Rc::clone(&first.key), Rc::clone(&second.key)),
        f,
        _t: PhantomData::<fn(A, B) -> O>,
    });
    two_input(
        &first.stream,
        (name, true),
        factory,
        [first.feed(), second.feed()],
    )
}

/// An interval join of two keyed streams, waiting for its bounds.
pub struct IntervalJoin<K, A, B> {
    left: KeyedStream<K, A>,
    right: KeyedStream<K, B>,
    bounds: Option<(i64, i64)>,
}

impl<K, A, B> IntervalJoin<K, A, B>
where
    K: Clone + Serialize + DeserializeOwned + 'static,
    A: Data,
    B: Data,
{
    pub(crate) fn new(left: KeyedStream<K, A>, right: KeyedStream<K, B>) -> Self {
        Self {
            left,
            right,
            bounds: None,
        }
    }

    /// Pairs a left record at `l` with right records at `r` where
    /// `l + lower_ms <= r <= l + upper_ms`.
    pub fn between(mut self, lower_ms: i64, upper_ms: i64) -> Self {
        assert!(
            lower_ms <= upper_ms,
            "an interval join's lower bound is at most its upper"
        );
        self.bounds = Some((lower_ms, upper_ms));
        self
    }

    /// Runs `f` on every joined pair; its results take the later of the two timestamps.
    pub fn process<O: Data>(
        self,
        f: impl Fn(&A, &B, &mut Context<'_, O>) + 'static,
    ) -> DataStream<O> {
        let (lower, upper) = self
            .bounds
            .expect("an interval join needs its bounds: call between first");
        let join = IntervalJoinFn {
            lower,
            upper,
            pair: Rc::new(f),
        };
        keyed_pair(&self.left, &self.right, "interval-join", join)
    }
}

/// One side of a window join, as both travel in one stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum JoinSide<A, B> {
    /// A record of the first stream.
    Left(A),
    /// A record of the second stream.
    Right(B),
}

/// A window join of two streams: records of one key and one window are paired, every left
/// with every right, when the window fires.
pub struct JoinedStreams<A, B> {
    first: DataStream<A>,
    second: DataStream<B>,
}

/// A window join with its keys.
pub struct KeyedJoin<K, A, B> {
    first: DataStream<A>,
    second: DataStream<B>,
    keys: (KeyFn<A, K>, KeyFn<B, K>),
}

/// A window join with its keys and windows.
pub struct WindowedJoin<K, A, B> {
    join: KeyedJoin<K, A, B>,
    assigner: WindowAssigner,
}

impl<A: Data, B: Data> JoinedStreams<A, B> {
    pub(crate) fn new(first: DataStream<A>, second: DataStream<B>) -> Self {
        Self { first, second }
    }

    /// Keys both sides: the first by `first`, the second by `second`.
    pub fn where_key<K>(
        self,
        first: impl Fn(&A) -> K + 'static,
        second: impl Fn(&B) -> K + 'static,
    ) -> KeyedJoin<K, A, B> {
        KeyedJoin {
            first: self.first,
            second: self.second,
            keys: (Rc::new(first), Rc::new(second)),
        }
    }
}

impl<K, A, B> KeyedJoin<K, A, B>
where
    K: Clone + Serialize + DeserializeOwned + 'static,
    A: Data,
    B: Data,
{
    /// Joins within `assigner`'s windows.
    pub fn window(self, assigner: WindowAssigner) -> WindowedJoin<K, A, B> {
        WindowedJoin {
            join: self,
            assigner,
        }
    }
}

impl<K, A, B> WindowedJoin<K, A, B>
where
    K: Clone + Serialize + DeserializeOwned + 'static,
    A: Data,
    B: Data,
{
    /// Emits `f(left, right)` for every pair of one key in one window, stamped with the
    /// window's last millisecond.
    pub fn apply<O: Data>(self, f: impl Fn(&A, &B) -> O + Clone + 'static) -> DataStream<O> {
        let KeyedJoin {
            first,
            second,
            keys,
        } = self.join;
        let left = first.map(JoinSide::<A, B>::Left);
        let right = second.map(JoinSide::<A, B>::Right);
        let (ka, kb) = keys;
        let both = left.union(&[&right]);
        let keyed = both.key_by(move |side: &JoinSide<A, B>| match side {
            JoinSide::Left(a) => ka(a),
            JoinSide::Right(b) => kb(b),
        });
        keyed.window(self.assigner).process(
            move |_key: &K, _w: &TimeWindow, sides: Vec<JoinSide<A, B>>| {
                let (mut lefts, mut rights) = (Vec::new(), Vec::new());
                for s in sides {
                    match s {
                        JoinSide::Left(a) => lefts.push(a),
                        JoinSide::Right(b) => rights.push(b),
                    }
                }
                let mut out = Vec::with_capacity(lefts.len() * rights.len());
                for a in &lefts {
                    for b in &rights {
                        out.push(f(a, b));
                    }
                }
                out
            },
        )
    }
}

//! The Storm model's tuple trees, tracked inside a subtask's chain.
//!
//! Every record a source emits roots a tree. A tuple carries, for each root it descends from,
//! the id of its own edge in that root's tree. While the chain processes a tuple, every tuple it
//! emits (to the network or a sink) gets a fresh edge id; when processing ends, the tuple is
//! acknowledged with, per root, its edge XOR the edges emitted from it. The source keeps the
//! XOR of everything reported per root: it returns to zero exactly when every edge created
//! has been acknowledged, so the tree is complete.
//!
//! A window holds the tuples it took in unacknowledged until each window they belong to has
//! fired, and anchors each result to all of them. Tuples emitted outside any tuple's
//! processing (by timers) are not anchored: Storm does not track them.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// A tuple's anchors: for each root it descends from, the id of its edge in that tree.
pub(crate) type Anchors = Vec<(u64, u64)>;

/// Exchange record tag of a tuple: its anchors, then the element.
const TAG_TUPLE: u8 = 0x10;
/// Anchors one tuple may carry: a window's result names every tuple of its window, which the
/// source's bound on open trees limits.
const ANCHORS_MAX: usize = 1 << 20;
/// Bits of a root id below the source subtask's index.
const ROOT_SUBTASK_SHIFT: u32 = 48;

/// Edge and root ids: a splitmix64 sequence seeded from the attempt and the subtask, so that
/// a run replays exactly; never zero, which would vanish from an XOR.
pub(crate) struct Ids(u64);

impl Ids {
    pub fn new(attempt: u64, stage: u32, subtask: u32) -> Self {
        Ids(attempt.rotate_left(32) ^ (u64::from(stage) << 20) ^ u64::from(subtask))
    }

    pub fn next(&mut self) -> u64 {
        loop {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    }

    /// A root id, with the source subtask that tracks it in its top bits.
    pub fn root(&mut self, subtask: u32) -> u64 {
        let low = self.next() & ((1 << ROOT_SUBTASK_SHIFT) - 1);
        (u64::from(subtask) << ROOT_SUBTASK_SHIFT) | low.max(1)
    }
}

/// The source subtask that tracks `root`.
pub(crate) fn root_owner(root: u64) -> usize {
    (root >> ROOT_SUBTASK_SHIFT) as usize
}

/// A tuple a window holds: its anchors, the windows it still waits for, and the XOR of the
/// edges emitted from it so far.
struct Held {
    anchors: Anchors,
    waits: u32,
    emitted: u64,
}

/// What is being processed.
enum Frame {
    /// A tuple: its anchors, the XOR of the edges emitted from it, and whether a window took
    /// it (then the window acknowledges it, not the end of its processing).
    Tuple {
        anchors: Anchors,
        emitted: u64,
        held: bool,
    },
    /// A window firing: the held tuples its results are anchored to.
    Fired { members: Vec<u64> },
}

#[derive(Default)]
struct Tracker {
    ids: Option<Ids>,
    /// The subtask's index among the job's source subtasks, if it is one: its roots carry it.
    source: u32,
    stack: Vec<Frame>,
    held: BTreeMap<u64, Held>,
    next_hold: u64,
    /// Acknowledgements to deliver: (root, XOR).
    acks: Vec<(u64, u64)>,
}

/// One subtask's tuple tracking, shared by the operators of its chain.
#[derive(Clone, Default)]
pub(crate) struct Tuples(Rc<RefCell<Tracker>>);

impl Tuples {
    /// Tracking for one subtask of one attempt; a source subtask's roots name `source`, its
    /// index among the job's source subtasks.
    pub fn new(ids: Ids, source: u32) -> Self {
        Self(Rc::new(RefCell::new(Tracker {
            ids: Some(ids),
            source,
            ..Tracker::default()
        })))
    }

    /// Starts processing a tuple with `anchors`.
    pub fn begin(&self, anchors: Anchors) {
        self.0.borrow_mut().stack.push(Frame::Tuple {
            anchors,
            emitted: 0,
            held: false,
        });
    }

    /// Ends processing the tuple begun last: unless a window holds it, it is acknowledged.
    pub fn end(&self) {
        let mut t = self.0.borrow_mut();
        match t.stack.pop() {
            Some(Frame::Tuple {
                anchors,
                emitted,
                held: false,
            }) => {
                let acks = anchors.iter().map(|(root, edge)| (*root, edge ^ emitted));
                t.acks.extend(acks);
            }
            Some(Frame::Tuple { held: true, .. }) => {}
            Some(Frame::Fired { .. }) | None => {
                unreachable!("a tuple's processing ends where it began")
            }
        }
    }

    /// The anchors of a tuple emitted now: a fresh edge for each root of what is being
    /// processed (none outside any tuple).
    pub fn emit(&self) -> Anchors {
        let mut t = self.0.borrow_mut();
        let t = &mut *t;
        let edge = t.ids.as_mut().expect("tracking has ids").next();
        match t.stack.last_mut() {
            None => Vec::new(),
            Some(Frame::Tuple {
                anchors, emitted, ..
            }) => {
                *emitted ^= edge;
                anchors.iter().map(|(root, _)| (*root, edge)).collect()
            }
            Some(Frame::Fired { members }) => {
                let mut roots: BTreeMap<u64, u64> = BTreeMap::new();
                for id in members.iter() {
                    let held = t.held.get_mut(id).expect("members are held");
                    held.emitted ^= edge;
                    for (root, _) in &held.anchors {
                        *roots.entry(*root).or_insert(0) ^= edge;
                    }
                }
                roots.into_iter().collect()
            }
        }
    }

    /// A window takes the tuple being processed into `windows` windows; returns its hold id,
    /// or `None` if it joined none (or no tuple is being processed).
    pub fn hold(&self, windows: u32) -> Option<u64> {
        let mut t = self.0.borrow_mut();
        let t = &mut *t;
        if windows == 0 {
            return None;
        }
        let Some(Frame::Tuple { anchors, held, .. }) = t.stack.last_mut() else {
            return None;
        };
        assert!(!*held, "one window operator holds a tuple once");
        *held = true;
        let id = t.next_hold;
        t.next_hold += 1;
        t.held.insert(
            id,
            Held {
                anchors: anchors.clone(),
                waits: windows,
                emitted: 0,
            },
        );
        Some(id)
    }

    /// A window holding `members` fires: results emitted until [`Tuples::fired`] are anchored
    /// to all of them.
    pub fn firing(&self, members: Vec<u64>) {
        self.0.borrow_mut().stack.push(Frame::Fired { members });
    }

    /// The firing begun last is over: its members wait for one window fewer, and those that
    /// wait for none are acknowledged.
    pub fn fired(&self) {
        let mut t = self.0.borrow_mut();
        let Some(Frame::Fired { members }) = t.stack.pop() else {
            unreachable!("a firing ends where it began");
        };
        for id in members {
            let h = t.held.get_mut(&id).expect("members are held");
            h.waits -= 1;
            if h.waits == 0 {
                let h = t.held.remove(&id).expect("held");
                let acks = h
                    .anchors
                    .iter()
                    .map(|(root, edge)| (*root, edge ^ h.emitted));
                t.acks.extend(acks);
            }
        }
    }

    /// Acknowledges tuples that left the chain (a sink's delivered writes).
    pub fn acknowledge(&self, anchors: &Anchors) {
        self.0.borrow_mut().acks.extend(anchors.iter().copied());
    }

    /// The acknowledgements to deliver.
    pub fn take_acks(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.0.borrow_mut().acks)
    }

    /// A fresh root and its first edge, for a source subtask's record.
    pub fn root(&self) -> (u64, u64) {
        let mut t = self.0.borrow_mut();
        let source = t.source;
        let ids = t.ids.as_mut().expect("tracking has ids");
        (ids.root(source), ids.next())
    }

    /// Tuples windows hold.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.0.borrow().held.len()
    }
}

/// An exchange record of a tuple: its anchors, then its element's bytes.
pub(crate) fn encode_tuple(anchors: &Anchors, element: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + 4 + 16 * anchors.len() + element.len());
    b.put_u8(TAG_TUPLE);
    b.put_slice(&encode_pairs(anchors));
    b.put_slice(element);
    b.freeze()
}

/// A tuple's anchors and element, or (an element sent without anchors, such as a watermark)
/// no anchors and the bytes as they are.
pub(crate) fn decode_tuple(mut bytes: Bytes) -> Result<(Option<Anchors>, Bytes), String> {
    if bytes.first() != Some(&TAG_TUPLE) {
        return Ok((None, bytes));
    }
    bytes.advance(1);
    let anchors = decode_pairs(&mut bytes)?;
    Ok((Some(anchors), bytes))
}

/// A count, then that many (u64, u64) pairs; the count is checked against the bytes there
/// before anything is allocated.
pub(crate) fn decode_pairs(bytes: &mut Bytes) -> Result<Vec<(u64, u64)>, String> {
    if bytes.remaining() < 4 {
        return Err("truncated pair count".into());
    }
    let n = bytes.get_u32() as usize;
    if n > ANCHORS_MAX || bytes.remaining() < n * 16 {
        return Err(format!(
            "{n} pairs do not fit the {} bytes left",
            bytes.remaining()
        ));
    }
    Ok((0..n).map(|_| (bytes.get_u64(), bytes.get_u64())).collect())
}

/// Pairs as [`decode_pairs`] reads them.
pub(crate) fn encode_pairs(pairs: &[(u64, u64)]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + 16 * pairs.len());
    b.put_u32(u32::try_from(pairs.len()).expect("pair lists are bounded"));
    for (a, x) in pairs {
        b.put_u64(*a);
        b.put_u64(*x);
    }
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The XOR of every acknowledgement of `root`.
    fn xor(acks: &[(u64, u64)], root: u64) -> u64 {
        acks.iter()
            .filter(|(r, _)| *r == root)
            .fold(0, |x, (_, e)| x ^ e)
    }

    #[test]
    fn a_tree_closes_when_every_emitted_tuple_is_acknowledged() {
        let t = Tuples::new(Ids::new(1, 0, 3), 3);
        let (root, first) = t.root();
        assert_eq!(root_owner(root), 3);
        // A map takes the root's tuple and emits two; each reaches a sink, which acknowledges.
        t.begin(vec![(root, first)]);
        let a = t.emit();
        let b = t.emit();
        t.end();
        t.acknowledge(&a);
        t.acknowledge(&b);
        let acks = t.take_acks();
        assert_eq!(first ^ xor(&acks, root), 0, "the tree is complete");
    }

    #[test]
    fn a_window_holds_its_tuples_until_it_fires() {
        let t = Tuples::new(Ids::new(1, 1, 0), 0);
        let (r1, e1) = t.root();
        let (r2, e2) = t.root();
        let mut members = Vec::new();
        for anchors in [vec![(r1, e1)], vec![(r2, e2)]] {
            t.begin(anchors);
            members.push(t.hold(1).unwrap());
            t.end();
        }
        assert!(t.take_acks().is_empty(), "held tuples wait");
        assert_eq!(t.held(), 2);
        t.firing(members);
        let result = t.emit();
        t.fired();
        assert_eq!(t.held(), 0);
        t.acknowledge(&result);
        let acks = t.take_acks();
        assert_eq!(e1 ^ xor(&acks, r1), 0);
        assert_eq!(e2 ^ xor(&acks, r2), 0);
    }

    #[test]
    fn tuples_round_trip_and_a_lying_count_is_refused() {
        let anchors = vec![(1, 2), (3, 4)];
        let (back, element) = decode_tuple(encode_tuple(&anchors, b"el")).unwrap();
        assert_eq!((back, &element[..]), (Some(anchors), &b"el"[..]));
        assert_eq!(decode_tuple(Bytes::from_static(b"\x01w")).unwrap().0, None);
        let mut lying = BytesMut::new();
        lying.put_u8(TAG_TUPLE);
        lying.put_u32(u32::MAX);
        assert!(decode_tuple(lying.freeze()).is_err());
        let mut pairs = encode_pairs(&[(5, 6)]);
        assert_eq!(decode_pairs(&mut pairs), Ok(vec![(5, 6)]));
    }
}

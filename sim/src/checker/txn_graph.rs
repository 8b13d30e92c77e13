//! Dependency cycles between committed transactions, after Adya's G0 and G1c.
//!
//! Nodes are the transactions that took effect. Edges say "must have committed before":
//!
//! - **ww**: two transactions of one transactional id wrote the same partition, and the log
//!   holds the first one's records before the second one's. Kafka orders nothing between the
//!   writes of different transactional ids (their records interleave freely in a partition), so
//!   ww edges join only transactions of one id, where fencing promises one transaction at a time.
//! - **wr**: a transaction read, under read_committed, a record another transaction wrote.
//!
//! A G0 cycle uses ww edges alone: two transactions of one id interleaved in the log, such as a
//! zombie's writes landing between its successor's. A G1c cycle needs at least one wr edge:
//! information flowed in a circle, so some transaction read a write that had not committed.

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Which kind of edge joins two transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dep {
    /// Write then write, by log order within one transactional id.
    Ww,
    /// Write then read.
    Wr,
}

/// The anomaly a cycle shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CycleKind {
    /// Only ww edges.
    G0,
    /// At least one wr edge.
    G1c,
}

/// A cycle, as the transaction labels along it; the last leads back to the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    /// G0 or G1c.
    pub kind: CycleKind,
    /// Transactions along the cycle, with the edge that leaves each.
    pub steps: Vec<(String, Dep)>,
}

/// A committed transaction as the graph sees it.
pub struct Node<'a> {
    /// Its label.
    pub label: &'a str,
    /// Its transactional id.
    pub writer: &'a str,
}

/// Builds the dependency graph and returns one cycle per strongly connected component that
/// has one: a G0 cycle where ww edges alone close it, else a G1c cycle.
///
/// - `nodes`: the committed transactions.
/// - `log`: each partition's visible records in offset order, as indices into `nodes`.
/// - `reads`: (writer, reader) index pairs, one per committed read of another's record.
pub fn find_cycles(nodes: &[Node<'_>], log: &[Vec<usize>], reads: &[(usize, usize)]) -> Vec<Cycle> {
    let mut edges: BTreeSet<(usize, usize, Dep)> = BTreeSet::new();
    for records in log {
        // The last transaction of each transactional id seen so far in this partition.
        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
        for &t in records {
            if let Some(prev) = last.insert(nodes[t].writer, t)
                && prev != t
            {
                edges.insert((prev, t, Dep::Ww));
            }
        }
    }
    for &(w, r) in reads {
        if w != r {
            edges.insert((w, r, Dep::Wr));
        }
    }
    let mut out = Vec::new();
    if let Some(c) = cycles_of(nodes, &edges, &[Dep::Ww]) {
        out.extend(c.into_iter().map(|steps| Cycle {
            kind: CycleKind::G0,
            steps,
        }));
    }
    if let Some(c) = cycles_of(nodes, &edges, &[Dep::Ww, Dep::Wr]) {
        out.extend(
            c.into_iter()
                .filter(|steps| steps.iter().any(|(_, d)| *d == Dep::Wr))
                .map(|steps| Cycle {
                    kind: CycleKind::G1c,
                    steps,
                }),
        );
    }
    out
}

/// One cycle per non-trivial strongly connected component of the graph restricted to
/// `kinds`, preferring one through a wr edge.
fn cycles_of(
    nodes: &[Node<'_>],
    edges: &BTreeSet<(usize, usize, Dep)>,
    kinds: &[Dep],
) -> Option<Vec<Vec<(String, Dep)>>> {
    let mut g: DiGraph<usize, Dep> = DiGraph::new();
    let idx: Vec<NodeIndex> = (0..nodes.len()).map(|i| g.add_node(i)).collect();
    for &(a, b, d) in edges.iter().filter(|(_, _, d)| kinds.contains(d)) {
        g.add_edge(idx[a], idx[b], d);
    }
    let mut found = Vec::new();
    for scc in tarjan_scc(&g) {
        if scc.len() < 2 {
            continue;
        }
        let members: BTreeSet<usize> = scc.iter().map(|n| g[*n]).collect();
        let inside: Vec<(usize, usize, Dep)> = edges
            .iter()
            .copied()
            .filter(|(a, b, d)| kinds.contains(d) && members.contains(a) && members.contains(b))
            .collect();
        // Start from a wr edge when there is one, so that a G1c cycle shows its read.
        let start = inside
            .iter()
            .find(|e| e.2 == Dep::Wr)
            .or(inside.first())
            .copied()
            .expect("a component of two or more nodes has an edge inside it");
        found.push(close_cycle(nodes, &inside, start));
    }
    (!found.is_empty()).then_some(found)
}

/// The shortest path back from `start`'s head to its tail, by breadth-first search inside
/// one component, prefixed with `start` itself.
fn close_cycle(
    nodes: &[Node<'_>],
    inside: &[(usize, usize, Dep)],
    start: (usize, usize, Dep),
) -> Vec<(String, Dep)> {
    let (from, to, dep) = start;
    let mut came: BTreeMap<usize, (usize, Dep)> = BTreeMap::new();
    let mut queue = VecDeque::from([to]);
    while let Some(at) = queue.pop_front() {
        if at == from {
            break;
        }
        for &(a, b, d) in inside.iter().filter(|e| e.0 == at) {
            if b != to && !came.contains_key(&b) {
                came.insert(b, (a, d));
                queue.push_back(b);
            }
        }
    }
    let mut back = Vec::new();
    let mut at = from;
    while at != to {
        let (prev, d) = came[&at];
        back.push((nodes[prev].label.to_string(), d));
        at = prev;
    }
    back.reverse();
    let mut steps = vec![(nodes[from].label.to_string(), dep)];
    steps.extend(back);
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes<'a>(spec: &[(&'a str, &'a str)]) -> Vec<Node<'a>> {
        spec.iter()
            .map(|(label, writer)| Node { label, writer })
            .collect()
    }

    #[test]
    fn serial_transactions_have_no_cycle() {
        let n = nodes(&[("a0", "a"), ("a1", "a"), ("b0", "b")]);
        // b0 interleaves with a's transactions: legal, different ids.
        let log = [vec![0, 2, 0, 1, 2], vec![0, 1]];
        assert!(find_cycles(&n, &log, &[(0, 2), (2, 1)]).is_empty());
    }

    #[test]
    fn interleaved_transactions_of_one_id_are_g0() {
        let n = nodes(&[("a0", "a"), ("a1", "a")]);
        let log = [vec![0, 1], vec![1, 0]];
        let c = find_cycles(&n, &log, &[]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, CycleKind::G0);
        assert_eq!(
            c[0].steps,
            [("a0".to_string(), Dep::Ww), ("a1".to_string(), Dep::Ww)]
        );
    }

    #[test]
    fn circular_reads_are_g1c() {
        // b0 read a1, a1 follows a0 in the log, and a0 read b0.
        let n = nodes(&[("a0", "a"), ("a1", "a"), ("b0", "b")]);
        let log = [vec![0, 1]];
        let c = find_cycles(&n, &log, &[(1, 2), (2, 0)]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, CycleKind::G1c);
        let labels: Vec<&str> = c[0].steps.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels.len(), 3);
        assert!(c[0].steps.iter().any(|(_, d)| *d == Dep::Wr));
        assert!(c[0].steps.iter().any(|(_, d)| *d == Dep::Ww));
    }

    #[test]
    fn two_transactions_reading_each_other_are_g1c() {
        let n = nodes(&[("a0", "a"), ("b0", "b")]);
        let c = find_cycles(&n, &[], &[(0, 1), (1, 0)]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, CycleKind::G1c);
    }
}

//! The metadata quorum on three simulated nodes: it elects a leader, commits proposals on every
//! node in the same order, survives the crash of its leader without handing out anything twice,
//! and replays bit for bit from its seed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_broker::cluster::metadata::{Applied, MetadataCommand};
use weir_broker::cluster::protocol::{Request, Response};
use weir_broker::cluster::quorum::{Quorum, QuorumConfig};
use weir_broker::cluster::rpc::{self, Peer};
use weir_seams::disk::{Disk, DiskFaults};
use weir_seams::net::Net;
use weir_seams::rng;

const NODES: u64 = 3;
const PORT: u16 = 9093;
const PROPOSE_UNTIL_MS: u64 = 12_000;
const FINAL_AT_MS: u64 = 16_000;

fn elapsed_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

fn host(id: u64) -> String {
    format!("n{id}")
}

#[derive(Default)]
struct Seen {
    /// Producer id blocks handed out, with the node that got each.
    handed_out: Vec<(i64, u64)>,
    /// Final (applied, next_producer_id) per node.
    finals: BTreeMap<u64, (u64, i64)>,
    /// Leaders observed, in order of observation.
    events: Vec<String>,
}

async fn node(id: u64, seed: u64, seen: Rc<RefCell<Seen>>) -> turmoil::Result {
    let voters: Vec<u64> = (1..=NODES).collect();
    let peers = voters
        .iter()
        .map(|v| {
            (
                *v,
                Arc::new(Peer::new(Net::Sim, format!("{}:{PORT}", host(*v)), 2_000)),
            )
        })
        .collect();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let disk = Disk::sim("/quorum", DiskFaults::seeded(seed ^ id));
    disk.create_root().await?;
    let q = Quorum::start(
        QuorumConfig::new(id, voters),
        disk,
        peers,
        rng::derive(seed, &host(id)),
        stop.clone(),
    );
    let listener = Net::Sim.bind(&format!("0.0.0.0:{PORT}")).await?;
    let handler_q = q.clone();
    let handler: rpc::Handler = Arc::new(move |req| {
        if let Request::Raft(bytes) = req {
            handler_q.deliver(&bytes);
        }
        Box::pin(async { Response::Done(Ok(())) })
    });
    tokio::spawn(rpc::serve(listener, handler, stop));
    let mut last_leader = None;
    while elapsed_ms() < PROPOSE_UNTIL_MS {
        let st = q.current();
        if st.leader != last_leader {
            last_leader = st.leader;
            seen.borrow_mut().events.push(format!(
                "{} sees leader {:?} in term {}",
                host(id),
                st.leader,
                st.term
            ));
        }
        if st.active
            && let Ok(Applied::ProducerIds(first)) = q
                .propose(MetadataCommand::AllocateProducerIds { count: 10 })
                .await
        {
            seen.borrow_mut().handed_out.push((first, id));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the followers catch up before reading the final image.
    tokio::time::sleep(Duration::from_millis(FINAL_AT_MS - elapsed_ms())).await;
    let st = q.current();
    seen.borrow_mut()
        .finals
        .insert(id, (st.applied, st.image.next_producer_id));
    stop_tx.send_replace(true);
    Ok(())
}

fn run(seed: u64) -> Seen {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(60))
        .tick_duration(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .build();
    for id in 1..=NODES {
        let seen = Rc::clone(&seen);
        sim.host(host(id), move || node(id, seed, Rc::clone(&seen)));
    }
    sim.client("driver", async {
        tokio::time::sleep(Duration::from_millis(FINAL_AT_MS + 1_000)).await;
        Ok(())
    });
    // Run until there is a leader, then crash it, and bring it back later.
    let mut crashed = None;
    let mut steps = 0u64;
    loop {
        steps += 1;
        let done = sim.step().expect("the simulation runs");
        if done {
            break;
        }
        if crashed.is_none() && steps == 6_000 {
            let leader = seen.borrow().events.iter().rev().find_map(|e| {
                e.split("leader Some(")
                    .nth(1)
                    .and_then(|s| s.split(')').next())
                    .and_then(|s| s.parse::<u64>().ok())
            });
            let leader = leader.expect("a leader within 6 s");
            sim.crash(host(leader));
            crashed = Some(leader);
        }
        if let Some(l) = crashed
            && steps == 7_000
        {
            sim.bounce(host(l));
        }
    }
    drop(sim);
    Rc::try_unwrap(seen)
        .ok()
        .expect("hosts are gone")
        .into_inner()
}

#[test]
fn proposals_commit_once_and_every_node_converges_through_a_leader_crash() {
    for seed in 0..3 {
        let seen = run(seed);
        let mut firsts: Vec<i64> = seen.handed_out.iter().map(|(f, _)| *f).collect();
        assert!(
            firsts.len() > 20,
            "seed {seed}: too few proposals committed: {}",
            firsts.len()
        );
        firsts.sort();
        firsts.dedup();
        assert_eq!(
            firsts.len(),
            seen.handed_out.len(),
            "seed {seed}: a producer id block was handed out twice"
        );
        let leaders: std::collections::BTreeSet<u64> =
            seen.handed_out.iter().map(|(_, n)| *n).collect();
        assert!(
            leaders.len() >= 2,
            "seed {seed}: leadership never moved after the crash"
        );
        let finals: Vec<(u64, i64)> = seen.finals.values().copied().collect();
        assert_eq!(finals.len(), NODES as usize);
        assert!(
            finals.windows(2).all(|w| w[0] == w[1]),
            "seed {seed}: nodes disagree: {finals:?}"
        );
        let max_first = *firsts.last().unwrap();
        assert!(
            finals[0].1 > max_first,
            "seed {seed}: the image lost a committed allocation"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_history() {
    let a = run(7);
    let b = run(7);
    assert_eq!(a.events, b.events);
    assert_eq!(a.handed_out, b.handed_out);
}

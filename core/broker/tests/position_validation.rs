//! Consumer position validation (KIP-320) on three simulated brokers.
//!
//! A partition leader is cut off from the other brokers (and the producer) but not from the
//! consumer: the controller elects a new leader, while the old one goes on believing it leads,
//! answering metadata requests and fetches from its stale, shorter log. A consumer that reads
//! on past the old leader's log end, and whose metadata refreshes land on the stale broker now
//! and then, must never be sent back to the earliest offset. OffsetsForLeaderEpoch is probed
//! on the same cluster: the end of an epoch on the new leader, and the fencing answers.
//!
//! Then an unclean election truncates records a consumer has read: the consumer must go on
//! from where the new leader's log diverges (the end offset of its last consumed epoch), not
//! from the log start.

mod sim_cluster;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sim_cluster::{Handles, PORT, host, now_ms, serve, sleep_until, voters};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_broker::BrokerConfig;
use weir_client::{
    Admin, ClientConfig, ClientError, Cluster, ConnConfig, Connection, Consumer, ConsumerConfig,
    NewTopic, Producer, ProducerConfig, Record,
};
use weir_seams::clock::Clock;
use weir_seams::disk::DiskFaults;
use weir_seams::net::Net;

const BROKERS: i32 = 3;
const TOPIC: &str = "t";
const PARTITION: i32 = 0;
/// Records written before the leader is cut off, and after.
const BEFORE_CUT: i64 = 20;
const AFTER_CUT: i64 = 20;
/// Pause between a client's attempts, in simulated milliseconds.
const RETRY_MS: u64 = 100;

/// (offset, value) of every record a consumer polled, in order.
type Polled = Rc<RefCell<Vec<(i64, String)>>>;

/// A broker's host name and a leader epoch.
type Leader = (String, i32);

/// An OffsetsForLeaderEpoch answer: error, leader epoch, end offset.
type EpochEnd = (Option<ResponseError>, i32, i64);

fn hosts() -> Vec<String> {
    (0..BROKERS).map(host).collect()
}

/// Adds broker `i`; every incarnation opens the same simulated disk.
fn add_broker(sim: &mut turmoil::Sim<'_>, i: i32, seed: u64, unclean: bool, handles: &Handles) {
    let faults = DiskFaults::seeded(seed ^ i as u64);
    let handles = Rc::clone(handles);
    sim.host(host(i), move || {
        broker(i, seed, unclean, faults.clone(), Rc::clone(&handles))
    });
}

async fn broker(
    i: i32,
    seed: u64,
    unclean: bool,
    faults: DiskFaults,
    handles: Handles,
) -> turmoil::Result {
    let config = BrokerConfig {
        node_id: i,
        advertised_host: host(i),
        advertised_port: PORT,
        net: Net::Sim,
        voters: voters(BROKERS),
        heartbeat_interval_ms: 200,
        session_timeout_ms: 2_000,
        replica_lag_time_max_ms: 2_000,
        internal_request_timeout_ms: 2_000,
        unclean_leader_election: unclean,
        ..BrokerConfig::default()
    };
    serve(config, faults, seed, handles).await
}

fn conn_config(name: &str) -> ConnConfig {
    ConnConfig {
        client_id: name.to_string(),
        connect_timeout_ms: 1_000,
        request_timeout_ms: 3_000,
        ..ConnConfig::default()
    }
}

fn client(name: &str) -> Arc<Cluster> {
    let mut c = ClientConfig::new(hosts().iter().map(|h| format!("{h}:{PORT}")), Net::Sim);
    c.conn = conn_config(name);
    Cluster::new(c)
}

/// The broker that leads `topic`-0 in the highest epoch, and that epoch.
fn leader_of(handles: &Handles, topic: &str) -> Option<Leader> {
    handles
        .borrow()
        .iter()
        .filter_map(|(h, b)| {
            let epoch = b.partition_marks(topic, PARTITION)?.leader_epoch?;
            Some((h.clone(), epoch))
        })
        .max_by_key(|(_, e)| *e)
}

/// The leader epoch `host` believes it leads `topic`-0 in.
fn epoch_on(handles: &Handles, host: &str, topic: &str) -> Option<i32> {
    handles
        .borrow()
        .get(host)?
        .partition_marks(topic, PARTITION)?
        .leader_epoch
}

async fn create_topic(cluster: &Arc<Cluster>, topic: &str, replicas: i16, until_ms: u64) {
    let admin = Admin::new(Arc::clone(cluster));
    while now_ms() < until_ms {
        match admin.create_topic(&NewTopic::new(topic, 1, replicas)).await {
            Ok(()) => return,
            Err(e) if e.code() == Some(ResponseError::TopicAlreadyExists) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(RETRY_MS)).await,
        }
    }
}

/// Writes `{prefix}-0`.. `{prefix}-{n-1}` to `topic`-0 with an idempotent acks=all producer;
/// returns the offsets they were acknowledged at.
async fn produce(
    cluster: &Arc<Cluster>,
    topic: &str,
    prefix: &str,
    n: i64,
    until_ms: u64,
) -> Result<Vec<i64>, ClientError> {
    let config = ProducerConfig {
        delivery_timeout_ms: 15_000,
        retry_backoff_ms: 50,
        retry_backoff_max_ms: 500,
        ack_timeout_ms: 3_000,
        ..ProducerConfig::default()
    };
    let producer = loop {
        match Producer::new(Arc::clone(cluster), config.clone(), Clock::starting_at(0)).await {
            Ok(p) => break p,
            Err(e) if now_ms() >= until_ms => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(RETRY_MS)).await,
        }
    };
    let mut deliveries = Vec::new();
    for i in 0..n {
        let r = Record {
            topic: topic.into(),
            partition: Some(PARTITION),
            value: Some(format!("{prefix}-{i}").into()),
            ..Default::default()
        };
        deliveries.push(producer.send(r).await?);
    }
    let mut offsets = Vec::new();
    for d in deliveries {
        offsets.push(d.wait().await?.offset);
    }
    producer.close().await;
    Ok(offsets)
}

/// Polls `topic`-0 from its start until `until_ms`. With `refresh_each_poll` the metadata is
/// dropped before every poll, so that each poll asks the next broker for it.
async fn consume(
    cluster: Arc<Cluster>,
    topic: &str,
    until_ms: u64,
    refresh_each_poll: bool,
    polled: Polled,
) {
    let config = ConsumerConfig {
        fetch_max_wait_ms: 100,
        ..ConsumerConfig::default()
    };
    let mut c = Consumer::new(Arc::clone(&cluster), config);
    c.assign([(topic.to_string(), PARTITION)]);
    while now_ms() < until_ms {
        if refresh_each_poll {
            cluster.forget(topic).await;
        }
        match c.poll(Duration::from_millis(100)).await {
            Ok(records) => {
                for r in records {
                    let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
                    polled.borrow_mut().push((r.offset, value.into_owned()));
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(RETRY_MS)).await,
        }
    }
}

fn values(prefix: &str, first_offset: i64, n: i64) -> Vec<(i64, String)> {
    (0..n)
        .map(|i| (first_offset + i, format!("{prefix}-{i}")))
        .collect()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// One OffsetsForLeaderEpoch question: (error, leader epoch, end offset) of the answer.
async fn end_of_epoch(
    host: &str,
    version: i16,
    topic: &str,
    current_leader_epoch: i32,
    epoch: i32,
) -> Result<EpochEnd, ClientError> {
    let conn =
        Connection::connect(Net::Sim, &format!("{host}:{PORT}"), conn_config("prober")).await?;
    let part = OffsetForLeaderPartition::default()
        .with_partition(PARTITION)
        .with_current_leader_epoch(current_leader_epoch)
        .with_leader_epoch(epoch);
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(s(topic)))
                .with_partitions(vec![part]),
        ]);
    let resp: OffsetForLeaderEpochResponse = conn
        .send(ApiKey::OffsetForLeaderEpoch, version, &req)
        .await?;
    let p = &resp.topics[0].partitions[0];
    Ok((
        ResponseError::try_from_code(p.error_code),
        p.leader_epoch,
        p.end_offset,
    ))
}

/// What the cut-off world saw.
#[derive(Debug, Default)]
struct CutOff {
    polled: Vec<(i64, String)>,
    /// Records polled before the heal.
    polled_before_heal: usize,
    /// Offsets the two producers were acknowledged at.
    acked: Vec<Result<Vec<i64>, ClientError>>,
    /// The cut-off broker, and the epoch it led in.
    old: Option<Leader>,
    /// Just before the heal: the epoch the cut-off broker still believed it led in, and the
    /// new leader with its epoch.
    at_heal: Option<(Option<i32>, Option<Leader>)>,
    /// The advertised OffsetsForLeaderEpoch version, and the probes' answers by name.
    advertised: Option<Result<i16, ClientError>>,
    probes: BTreeMap<&'static str, Result<EpochEnd, ClientError>>,
}

const CUT_AT_MS: u64 = 6_000;
const SECOND_WRITE_AT_MS: u64 = 10_000;
const PROBE_AT_MS: u64 = 17_000;
const HEAL_AT_MS: u64 = 20_000;
const CUT_END_MS: u64 = 26_000;

/// Asks the new leader, a follower and the cut-off broker where epochs end.
async fn probe(handles: Handles, world: Rc<RefCell<CutOff>>) -> turmoil::Result {
    sleep_until(PROBE_AT_MS).await;
    let Some((old, old_epoch)) = world.borrow().old.clone() else {
        return Ok(());
    };
    let Some((new, new_epoch)) = leader_of(&handles, TOPIC).filter(|(h, _)| *h != old) else {
        return Ok(());
    };
    let follower = hosts()
        .into_iter()
        .find(|h| *h != old && *h != new)
        .expect("three brokers");
    let advertised = match Connection::connect(
        Net::Sim,
        &format!("{new}:{PORT}"),
        conn_config("prober"),
    )
    .await
    {
        Ok(c) => c.version(ApiKey::OffsetForLeaderEpoch),
        Err(e) => Err(e),
    };
    world.borrow_mut().advertised = Some(advertised);
    let questions: [(&'static str, &str, i16, &str, i32, i32); 7] = [
        (
            "old epoch on the new leader",
            &new,
            4,
            TOPIC,
            new_epoch,
            old_epoch,
        ),
        (
            "current epoch on the new leader, v2 unfenced",
            &new,
            2,
            TOPIC,
            -1,
            new_epoch,
        ),
        (
            "client behind the new leader",
            &new,
            4,
            TOPIC,
            new_epoch - 1,
            old_epoch,
        ),
        (
            "client ahead of the new leader",
            &new,
            3,
            TOPIC,
            new_epoch + 1,
            old_epoch,
        ),
        ("follower", &follower, 4, TOPIC, new_epoch, old_epoch),
        (
            "cut-off former leader",
            &old,
            4,
            TOPIC,
            new_epoch,
            old_epoch,
        ),
        ("unknown topic", &new, 4, "nope", -1, 0),
    ];
    for (name, host, v, topic, current, epoch) in questions {
        let answer = end_of_epoch(host, v, topic, current, epoch).await;
        world.borrow_mut().probes.insert(name, answer);
    }
    Ok(())
}

/// A simulation of `end_ms` (plus a margin) with the brokers added.
fn sim_with_brokers<'a>(
    seed: u64,
    end_ms: u64,
    unclean: bool,
    handles: &Handles,
) -> turmoil::Sim<'a> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_millis(end_ms + 10_000))
        .tick_duration(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .build();
    for i in 0..BROKERS {
        add_broker(&mut sim, i, seed, unclean, handles);
    }
    sim
}

fn run_cut_off(seed: u64) -> CutOff {
    let handles: Handles = Rc::default();
    let world: Rc<RefCell<CutOff>> = Rc::default();
    let polled: Polled = Rc::default();
    let mut sim = sim_with_brokers(seed, CUT_END_MS, false, &handles);
    let w = Rc::clone(&world);
    sim.client("driver", async move {
        let cluster = client("driver");
        create_topic(&cluster, TOPIC, 3, CUT_AT_MS).await;
        let acked = produce(&cluster, TOPIC, "a", BEFORE_CUT, CUT_AT_MS).await;
        w.borrow_mut().acked.push(acked);
        Ok(())
    });
    let w = Rc::clone(&world);
    sim.client("producer", async move {
        sleep_until(SECOND_WRITE_AT_MS).await;
        let acked = produce(&client("producer"), TOPIC, "b", AFTER_CUT, HEAL_AT_MS).await;
        w.borrow_mut().acked.push(acked);
        Ok(())
    });
    let p = Rc::clone(&polled);
    sim.client("consumer", async move {
        consume(client("consumer"), TOPIC, CUT_END_MS, true, p).await;
        Ok(())
    });
    sim.client("prober", probe(Rc::clone(&handles), Rc::clone(&world)));
    let mut healed = false;
    loop {
        let now = sim.elapsed().as_millis() as u64;
        if now >= CUT_AT_MS && world.borrow().old.is_none() {
            let (old, epoch) = leader_of(&handles, TOPIC).expect("a leader before the cut");
            for other in hosts().iter().filter(|h| **h != old) {
                sim.partition(old.as_str(), other.as_str());
            }
            sim.partition(old.as_str(), "producer");
            world.borrow_mut().old = Some((old, epoch));
        }
        if now >= HEAL_AT_MS && !healed {
            let old = world.borrow().old.clone().expect("cut before the heal").0;
            let new = leader_of(&handles, TOPIC).filter(|(h, _)| *h != old);
            let mut w = world.borrow_mut();
            w.at_heal = Some((epoch_on(&handles, &old, TOPIC), new));
            w.polled_before_heal = polled.borrow().len();
            drop(w);
            for other in hosts().iter().filter(|h| **h != old) {
                sim.repair(old.as_str(), other.as_str());
            }
            sim.repair(old.as_str(), "producer");
            healed = true;
        }
        if sim.step().expect("the simulation runs") {
            break;
        }
    }
    drop(sim);
    let mut world = Rc::try_unwrap(world).expect("hosts are gone").into_inner();
    world.polled = polled.borrow().clone();
    world
}

#[test]
fn a_stale_leader_does_not_send_the_consumer_back_to_the_start() {
    for seed in 0..2 {
        let w = run_cut_off(seed);
        for acked in &w.acked {
            assert!(acked.is_ok(), "seed {seed}: a write failed: {acked:?}");
        }
        let (old, old_epoch) = w.old.clone().expect("the leader was cut off");
        let (still, new) = w.at_heal.clone().expect("healed");
        assert_eq!(
            still,
            Some(old_epoch),
            "seed {seed}: {old} still believes it leads until the heal"
        );
        let (new, new_epoch) = new.expect("a new leader was elected");
        assert!(
            new_epoch > old_epoch,
            "seed {seed}: {new} leads in {new_epoch}"
        );
        let mut want = values("a", 0, BEFORE_CUT);
        want.extend(values("b", BEFORE_CUT, AFTER_CUT));
        assert_eq!(
            w.polled, want,
            "seed {seed}: the consumer reads every record once, in order, never going back"
        );
        assert_eq!(
            w.polled_before_heal,
            want.len(),
            "seed {seed}: everything was read while {old} was stale"
        );

        // OffsetsForLeaderEpoch, served and fenced.
        assert_eq!(
            w.advertised.clone().map(|a| a.ok()),
            Some(Some(4)),
            "seed {seed}"
        );
        let answer = |name: &str| {
            w.probes
                .get(name)
                .cloned()
                .unwrap_or_else(|| panic!("seed {seed}: no probe {name}"))
                .unwrap_or_else(|e| panic!("seed {seed}: probe {name}: {e}"))
        };
        let (err, epoch, end) = answer("old epoch on the new leader");
        assert_eq!(err, None, "seed {seed}");
        assert!(epoch <= old_epoch, "seed {seed}: epoch {epoch}");
        assert_eq!(
            end, BEFORE_CUT,
            "seed {seed}: the old epoch ends where the new one began"
        );
        assert_eq!(
            answer("current epoch on the new leader, v2 unfenced"),
            (None, new_epoch, BEFORE_CUT + AFTER_CUT),
            "seed {seed}: the latest epoch ends at the log end"
        );
        for (name, code) in [
            (
                "client behind the new leader",
                ResponseError::FencedLeaderEpoch,
            ),
            (
                "client ahead of the new leader",
                ResponseError::UnknownLeaderEpoch,
            ),
            ("follower", ResponseError::NotLeaderOrFollower),
            ("cut-off former leader", ResponseError::UnknownLeaderEpoch),
            ("unknown topic", ResponseError::UnknownTopicOrPartition),
        ] {
            assert_eq!(answer(name), (Some(code), -1, -1), "seed {seed}: {name}");
        }
    }
}

#[test]
fn the_same_seed_reads_the_same_way() {
    let a = run_cut_off(5);
    let b = run_cut_off(5);
    assert_eq!(a.polled, b.polled);
    assert_eq!(a.old, b.old);
    assert_eq!(a.at_heal, b.at_heal);
}

/// What the unclean world saw.
#[derive(Debug, Default)]
struct Unclean {
    polled: Vec<(i64, String)>,
    acked: Vec<Result<Vec<i64>, ClientError>>,
    /// The leader, its epoch, and the follower left out of the ISR.
    roles: Option<(String, i32, String)>,
    /// The epoch the stale follower leads in at the end.
    elected: Option<i32>,
}

const UNCLEAN_TOPIC: &str = "u";
/// Records both replicas have; records only the leader has; records the stale follower takes
/// after its unclean election.
const SHARED: i64 = 10;
const LEADER_ONLY: i64 = 10;
const AFTER_ELECTION: i64 = 5;
const FOLLOWER_CRASH_AT_MS: u64 = 5_000;
const LEADER_ONLY_AT_MS: u64 = 9_000;
const LEADER_CRASH_AT_MS: u64 = 14_000;
const AFTER_ELECTION_AT_MS: u64 = 20_000;
const UNCLEAN_END_MS: u64 = 30_000;

fn run_unclean(seed: u64) -> Unclean {
    let handles: Handles = Rc::default();
    let world: Rc<RefCell<Unclean>> = Rc::default();
    let polled: Polled = Rc::default();
    let mut sim = sim_with_brokers(seed, UNCLEAN_END_MS, true, &handles);
    let w = Rc::clone(&world);
    sim.client("driver", async move {
        create_topic(&client("driver"), UNCLEAN_TOPIC, 2, FOLLOWER_CRASH_AT_MS).await;
        let plan = [
            ("a", SHARED, 0, FOLLOWER_CRASH_AT_MS),
            ("b", LEADER_ONLY, LEADER_ONLY_AT_MS, LEADER_CRASH_AT_MS),
            ("c", AFTER_ELECTION, AFTER_ELECTION_AT_MS, UNCLEAN_END_MS),
        ];
        for (prefix, n, at, until) in plan {
            sleep_until(at).await;
            // A fresh client each time: the producer does not look up a crashed leader again.
            let cluster = client(&format!("driver-{prefix}"));
            let acked = produce(&cluster, UNCLEAN_TOPIC, prefix, n, until).await;
            w.borrow_mut().acked.push(acked);
        }
        Ok(())
    });
    let p = Rc::clone(&polled);
    sim.client("consumer", async move {
        consume(client("consumer"), UNCLEAN_TOPIC, UNCLEAN_END_MS, false, p).await;
        Ok(())
    });
    let mut leader_crashed = false;
    loop {
        let now = sim.elapsed().as_millis() as u64;
        if now >= FOLLOWER_CRASH_AT_MS && world.borrow().roles.is_none() {
            let (leader, epoch) =
                leader_of(&handles, UNCLEAN_TOPIC).expect("a leader before the crash");
            let follower = handles
                .borrow()
                .iter()
                .find(|(h, b)| {
                    **h != leader && b.partition_marks(UNCLEAN_TOPIC, PARTITION).is_some()
                })
                .map(|(h, _)| h.clone())
                .expect("a second replica");
            sim.crash(follower.as_str());
            world.borrow_mut().roles = Some((leader, epoch, follower));
        }
        if now >= LEADER_CRASH_AT_MS && !leader_crashed {
            let (leader, _, follower) = world.borrow().roles.clone().expect("roles");
            sim.crash(leader.as_str());
            sim.bounce(follower.as_str());
            leader_crashed = true;
        }
        if now >= UNCLEAN_END_MS && world.borrow().elected.is_none() {
            let (_, _, follower) = world.borrow().roles.clone().expect("roles");
            world.borrow_mut().elected =
                Some(epoch_on(&handles, &follower, UNCLEAN_TOPIC).unwrap_or(-1));
        }
        if sim.step().expect("the simulation runs") {
            break;
        }
    }
    drop(sim);
    let mut world = Rc::try_unwrap(world).expect("hosts are gone").into_inner();
    world.polled = polled.borrow().clone();
    world
}

#[test]
fn truncation_moves_the_position_to_the_end_of_the_consumed_epoch() {
    for seed in 0..2 {
        let w = run_unclean(seed);
        let (leader, epoch, follower) = w.roles.clone().expect("roles");
        assert_eq!(w.acked.len(), 3, "seed {seed}");
        let offsets = |i: usize| {
            w.acked[i]
                .clone()
                .unwrap_or_else(|e| panic!("seed {seed}: write {i}: {e}"))
        };
        assert_eq!(offsets(0), (0..SHARED).collect::<Vec<_>>(), "seed {seed}");
        assert_eq!(
            offsets(1),
            (SHARED..SHARED + LEADER_ONLY).collect::<Vec<_>>(),
            "seed {seed}: written on {leader} alone"
        );
        assert_eq!(
            offsets(2),
            (SHARED..SHARED + AFTER_ELECTION).collect::<Vec<_>>(),
            "seed {seed}: the unclean election on {follower} dropped what {leader} had alone"
        );
        let elected = w.elected.expect("checked at the end");
        assert!(
            elected > epoch,
            "seed {seed}: {follower} leads in {elected}"
        );
        let mut want = values("a", 0, SHARED);
        want.extend(values("b", SHARED, LEADER_ONLY));
        want.extend(values("c", SHARED, AFTER_ELECTION));
        assert_eq!(
            w.polled, want,
            "seed {seed}: after the truncation the consumer goes on from offset {SHARED}, where epoch {epoch} ends on the new leader"
        );
    }
}

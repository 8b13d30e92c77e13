//! Consumer groups on three simulated brokers: two members split the partitions, a third
//! joins and they are spread again, a member that stops polling is dropped at the rebalance
//! and its late commit refused, a member that stops heartbeating is expelled, and committed
//! offsets and generations outlive a crash of the coordinator (the active controller). Every
//! served version of every group API is spoken once against a single broker, with its bounds.

mod sim_cluster;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sim_cluster::{Handles, PORT, host, now_ms, serve, sleep_until, voters};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_broker::BrokerConfig;
use weir_client::{
    Admin, Assignor, ClientConfig, ClientError, Cluster, ConnConfig, Connection, GroupConfig,
    GroupConsumer, NewTopic, TopicPartition,
};
use weir_seams::disk::DiskFaults;
use weir_seams::net::Net;

const BROKERS: i32 = 3;
const TOPIC: &str = "t";
const PARTITIONS: i32 = 4;
const GROUP: &str = "g";

/// When the driver's steps happen, in simulated milliseconds.
const FIRST_TWO_AT_MS: u64 = 4_000;
const COMMIT_AT_MS: u64 = 9_000;
const STALL_AT_MS: u64 = 10_000;
const THIRD_AT_MS: u64 = 11_000;
const ZOMBIE_COMMIT_AT_MS: u64 = 18_000;
const SILENCE_AT_MS: u64 = 20_000;
const CRASH_AT_MS: u64 = 28_000;
const RESTART_AT_MS: u64 = 32_000;
const READ_AT_MS: u64 = 42_000;
const END_MS: u64 = 46_000;

/// What the members saw, in order.
#[derive(Default)]
struct Seen {
    /// (time, member, generation, partitions) after every poll whose assignment changed.
    assignments: Vec<(u64, String, i32, Vec<TopicPartition>)>,
    /// Offsets the first member committed.
    committed: BTreeMap<TopicPartition, i64>,
    /// What the stalled member's late commit got.
    zombie_commit: Option<Result<(), ClientError>>,
    /// Committed offsets read after the coordinator's crash.
    read_back: Option<BTreeMap<TopicPartition, i64>>,
    /// Brokers that were the controller when the crash came.
    crashed: Vec<String>,
}

type Shared = Rc<RefCell<Seen>>;

impl Seen {
    /// Every assignment change, a line each, for failure messages.
    fn trace(&self) -> String {
        let lines: Vec<String> = self
            .assignments
            .iter()
            .map(|(t, m, g, p)| format!("{t} {m} gen {g}: {p:?}"))
            .collect();
        lines.join("\n")
    }
}

/// Creates the test topic with `replicas` replicas, retrying until it exists.
async fn create_test_topic(admin: &Admin, replicas: i16) {
    while let Err(e) = admin
        .create_topic(&NewTopic::new(TOPIC, PARTITIONS, replicas))
        .await
    {
        if e.code() == Some(ResponseError::TopicAlreadyExists) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Broker `i` of `brokers`, allowing `members_max` members per group, whose empty groups wait
/// `initial_delay_ms` for more members before their first generation.
async fn broker(
    i: i32,
    brokers: i32,
    members_max: usize,
    initial_delay_ms: u64,
    seed: u64,
    handles: Handles,
) -> turmoil::Result {
    let voters = if brokers == 1 {
        Vec::new()
    } else {
        voters(brokers)
    };
    let config = BrokerConfig {
        node_id: i,
        advertised_host: host(i),
        advertised_port: PORT,
        net: Net::Sim,
        voters,
        heartbeat_interval_ms: 200,
        session_timeout_ms: 2_000,
        internal_request_timeout_ms: 2_000,
        group_min_session_timeout_ms: 500,
        group_members_max: members_max,
        group_initial_rebalance_delay_ms: initial_delay_ms,
        offset_metadata_bytes_max: 16,
        ..BrokerConfig::default()
    };
    serve(config, DiskFaults::seeded(seed ^ i as u64), seed, handles).await
}

fn cluster(name: &str, brokers: i32) -> Arc<Cluster> {
    cluster_with_timeout(name, brokers, 3_000)
}

/// A client whose requests (a JoinGroup among them) wait up to `request_timeout_ms`.
fn cluster_with_timeout(name: &str, brokers: i32, request_timeout_ms: u64) -> Arc<Cluster> {
    let mut c = ClientConfig::new(
        (0..brokers).map(|i| format!("{}:{PORT}", host(i))),
        Net::Sim,
    );
    c.conn = ConnConfig {
        client_id: name.to_string(),
        connect_timeout_ms: 1_000,
        request_timeout_ms,
        ..ConnConfig::default()
    };
    Cluster::new(c)
}

fn group_config() -> GroupConfig {
    GroupConfig {
        session_timeout_ms: 2_000,
        rebalance_timeout_ms: 3_000,
        heartbeat_interval_ms: 200,
        enable_auto_commit: false,
        assignors: vec![Assignor::Range],
        commit_timeout_ms: 3_000,
        ..GroupConfig::new(GROUP)
    }
}

/// Polls until `until_ms`, noting every change of assignment.
async fn poll_until(c: &mut GroupConsumer, name: &str, seen: &Shared, until_ms: u64) {
    let mut last = None;
    while now_ms() < until_ms {
        if c.poll(Duration::from_millis(100)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let now = (c.generation(), c.assignment());
        if last.as_ref() != Some(&now) {
            seen.borrow_mut()
                .assignments
                .push((now_ms(), name.to_string(), now.0, now.1.clone()));
            last = Some(now);
        }
    }
}

/// Member 1: in the group from the start to the end; commits once.
async fn first(seen: Shared) -> turmoil::Result {
    sleep_until(FIRST_TWO_AT_MS).await;
    let mut c = GroupConsumer::new(cluster("m1", BROKERS), group_config());
    c.subscribe([TOPIC], None);
    poll_until(&mut c, "m1", &seen, COMMIT_AT_MS).await;
    let offsets: BTreeMap<TopicPartition, i64> = c
        .assignment()
        .into_iter()
        .map(|tp| {
            let o = 100 + i64::from(tp.1);
            (tp, o)
        })
        .collect();
    if c.commit_sync(Some(offsets.clone())).await.is_ok() {
        seen.borrow_mut().committed = offsets;
    }
    poll_until(&mut c, "m1", &seen, END_MS).await;
    c.close().await;
    Ok(())
}

/// Member 2: stops polling, so misses the rebalance the third member starts, then commits.
async fn staller(seen: Shared) -> turmoil::Result {
    sleep_until(FIRST_TWO_AT_MS).await;
    let mut c = GroupConsumer::new(cluster("m2", BROKERS), group_config());
    c.subscribe([TOPIC], None);
    poll_until(&mut c, "m2", &seen, STALL_AT_MS).await;
    let held = c.assignment();
    sleep_until(ZOMBIE_COMMIT_AT_MS).await;
    let offsets = held.into_iter().map(|tp| (tp, 1)).collect();
    seen.borrow_mut().zombie_commit = Some(c.commit_sync(Some(offsets)).await);
    // Dropped without leaving: its heartbeats stop.
    Ok(())
}

/// Member 3: joins late, then goes silent without leaving.
async fn third(seen: Shared) -> turmoil::Result {
    sleep_until(THIRD_AT_MS).await;
    let mut c = GroupConsumer::new(cluster("m3", BROKERS), group_config());
    c.subscribe([TOPIC], None);
    poll_until(&mut c, "m3", &seen, SILENCE_AT_MS).await;
    drop(c);
    Ok(())
}

/// Creates the topic, and after the coordinator's crash reads the committed offsets back.
async fn driver(seen: Shared) -> turmoil::Result {
    let cluster = cluster("driver", BROKERS);
    create_test_topic(&Admin::new(Arc::clone(&cluster)), 3).await;
    sleep_until(READ_AT_MS).await;
    let mut reader = GroupConsumer::new(cluster, group_config());
    let all: Vec<TopicPartition> = (0..PARTITIONS).map(|p| (TOPIC.to_string(), p)).collect();
    while now_ms() < END_MS {
        if let Ok(found) = reader.committed(&all).await {
            seen.borrow_mut().read_back = Some(found);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn run(seed: u64) -> Seen {
    let seen: Shared = Rc::default();
    let handles: Handles = Rc::default();
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_millis(END_MS + 10_000))
        .tick_duration(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .build();
    for i in 0..BROKERS {
        let handles = Rc::clone(&handles);
        sim.host(host(i), move || {
            broker(i, BROKERS, 1_000, 0, seed, Rc::clone(&handles))
        });
    }
    sim.client("m1", first(Rc::clone(&seen)));
    sim.client("m2", staller(Rc::clone(&seen)));
    sim.client("m3", third(Rc::clone(&seen)));
    sim.client("driver", driver(Rc::clone(&seen)));
    let mut crashed = Vec::new();
    loop {
        let now = sim.elapsed().as_millis() as u64;
        if now >= CRASH_AT_MS && crashed.is_empty() {
            crashed = handles
                .borrow()
                .iter()
                .filter(|(_, b)| b.is_controller())
                .map(|(h, _)| h.clone())
                .collect();
            for h in &crashed {
                sim.crash(h.as_str());
            }
            if crashed.is_empty() {
                crashed.push(String::new());
            }
        }
        if now >= RESTART_AT_MS && crashed.iter().any(|h| !h.is_empty()) {
            for h in crashed.iter_mut().filter(|h| !h.is_empty()) {
                sim.bounce(h.as_str());
                seen.borrow_mut().crashed.push(std::mem::take(h));
            }
        }
        if sim.step().expect("the simulation runs") {
            break;
        }
    }
    drop(sim);
    Rc::try_unwrap(seen)
        .ok()
        .expect("hosts are gone")
        .into_inner()
}

/// The last assignment of each member in `generation`, if every partition is held exactly once.
fn split_of(seen: &Seen, generation: i32) -> Option<BTreeMap<String, Vec<TopicPartition>>> {
    let mut by_member = BTreeMap::new();
    for (_, m, g, parts) in &seen.assignments {
        if *g == generation {
            by_member.insert(m.clone(), parts.clone());
        }
    }
    let mut all: Vec<&TopicPartition> = by_member.values().flatten().collect();
    all.sort();
    let want: Vec<TopicPartition> = (0..PARTITIONS).map(|p| (TOPIC.to_string(), p)).collect();
    (all.len() == want.len() && all.iter().zip(&want).all(|(a, b)| *a == b)).then_some(by_member)
}

#[test]
fn groups_rebalance_fence_stale_members_and_survive_a_coordinator_crash() {
    for seed in 0..2 {
        let seen = run(seed);
        let trace = seen.trace();
        let generations: BTreeSet<i32> = seen
            .assignments
            .iter()
            .map(|a| a.2)
            .filter(|g| *g > 0)
            .collect();
        let splits: Vec<BTreeMap<String, Vec<TopicPartition>>> = generations
            .iter()
            .filter_map(|g| split_of(&seen, *g))
            .collect();
        let members_of = |s: &BTreeMap<String, Vec<TopicPartition>>| -> Vec<String> {
            s.iter()
                .filter(|(_, p)| !p.is_empty())
                .map(|(m, _)| m.clone())
                .collect()
        };
        let shapes: Vec<Vec<String>> = splits.iter().map(members_of).collect();
        for want in [vec!["m1", "m2"], vec!["m1", "m3"], vec!["m1"]] {
            assert!(
                shapes.iter().any(|s| s == &want),
                "seed {seed}: no generation split the partitions over {want:?}:\n{trace}"
            );
        }
        assert!(
            splits
                .iter()
                .filter(|s| s.len() == 2)
                .all(|s| s.values().all(|p| p.len() == 2)),
            "seed {seed}: two members each get half:\n{trace}"
        );
        let zombie = seen.zombie_commit.clone().expect("the staller committed");
        let code = zombie
            .expect_err("a commit from a member dropped at a rebalance is refused")
            .code();
        assert!(
            matches!(
                code,
                Some(
                    kafka_protocol::error::ResponseError::UnknownMemberId
                        | kafka_protocol::error::ResponseError::IllegalGeneration
                )
            ),
            "seed {seed}: refused with {code:?}"
        );
        assert_eq!(seen.crashed.len(), 1, "seed {seed}: one controller crashed");
        let crash_gen = seen
            .assignments
            .iter()
            .filter(|a| a.0 < CRASH_AT_MS)
            .map(|a| a.2)
            .max()
            .unwrap_or(0);
        assert!(
            seen.assignments.iter().any(|(t, m, g, p)| *t > CRASH_AT_MS
                && m == "m1"
                && *g > crash_gen
                && p.len() == PARTITIONS as usize),
            "seed {seed}: after the crash m1 rejoins in a newer generation than {crash_gen}:\n{trace}"
        );
        assert!(!seen.committed.is_empty(), "seed {seed}: m1 committed");
        let read = seen.read_back.clone().expect("offsets read back");
        for (tp, o) in &seen.committed {
            assert_eq!(
                read.get(tp),
                Some(o),
                "seed {seed}: {tp:?} survives the crash"
            );
        }
        assert_eq!(
            read.len(),
            seen.committed.len(),
            "seed {seed}: only m1's commits exist"
        );
    }
}

/// The error code of a response, as a Kafka error.
fn err(code: i16) -> Option<ResponseError> {
    ResponseError::try_from_code(code)
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Joins `group` alone at JoinGroup version `v` (getting a member id first from v4); returns
/// (member id, generation).
async fn join_alone(conn: &Connection, group: &str, v: i16) -> (String, i32) {
    let protocol = JoinGroupRequestProtocol::default()
        .with_name(s("range"))
        .with_metadata(Bytes::from_static(b"sub"));
    let mut member = String::new();
    loop {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(2_000)
            .with_rebalance_timeout_ms(2_000)
            .with_member_id(s(&member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![protocol.clone()]);
        let resp: JoinGroupResponse = conn.send(ApiKey::JoinGroup, v, &req).await.unwrap();
        match err(resp.error_code) {
            None => {
                assert_eq!(resp.leader, resp.member_id, "v{v}: a lone member leads");
                assert_eq!(resp.members.len(), 1, "v{v}: the leader sees itself");
                return (resp.member_id.to_string(), resp.generation_id);
            }
            Some(ResponseError::MemberIdRequired) if v >= 4 && member.is_empty() => {
                member = resp.member_id.to_string();
            }
            other => panic!("v{v}: join answered {other:?}"),
        }
    }
}

fn commit_request(
    group: &str,
    generation: i32,
    member: &str,
    metadata: &str,
) -> OffsetCommitRequest {
    let part = |p: i32| {
        OffsetCommitRequestPartition::default()
            .with_partition_index(p)
            .with_committed_offset(40 + i64::from(p))
            .with_committed_metadata(Some(s(metadata)))
    };
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partitions(vec![part(0), part(1)]),
        ])
}

fn commit_errors(resp: &OffsetCommitResponse) -> Vec<Option<ResponseError>> {
    resp.topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| err(p.error_code))
        .collect()
}

/// Committed offsets an OffsetFetch at `v` returns for `group`, by partition.
async fn fetch_offsets(conn: &Connection, group: &str, v: i16) -> BTreeMap<i32, i64> {
    let parts = vec![0, 1];
    let req = if v >= 8 {
        OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s(TOPIC)))
                        .with_partition_indexes(parts),
                ])),
        ])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(TOPIC)))
                    .with_partition_indexes(parts),
            ]))
    };
    let resp: OffsetFetchResponse = conn.send(ApiKey::OffsetFetch, v, &req).await.unwrap();
    if v >= 8 {
        resp.groups
            .iter()
            .flat_map(|g| &g.topics)
            .flat_map(|t| &t.partitions)
            .map(|p| (p.partition_index, p.committed_offset))
            .collect()
    } else {
        resp.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| (p.partition_index, p.committed_offset))
            .collect()
    }
}

/// Every served version of every group API, and the bounds, against one broker.
async fn speak_every_version(out: Rc<RefCell<Vec<String>>>) -> turmoil::Result {
    let cluster = cluster("raw", 1);
    let admin = Admin::new(Arc::clone(&cluster));
    while admin
        .create_topic(&NewTopic::new(TOPIC, 2, 1))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let conn = Connection::connect(
        Net::Sim,
        &format!("{}:{PORT}", host(0)),
        ConnConfig::default(),
    )
    .await
    .unwrap();
    for v in 0..=4 {
        let req = if v >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("a"), s("b")])
        } else {
            FindCoordinatorRequest::default().with_key(s("a"))
        };
        let resp: FindCoordinatorResponse =
            conn.send(ApiKey::FindCoordinator, v, &req).await.unwrap();
        let found: Vec<(i16, i32)> = if v >= 4 {
            resp.coordinators
                .iter()
                .map(|c| (c.error_code, c.node_id.0))
                .collect()
        } else {
            vec![(resp.error_code, resp.node_id.0)]
        };
        assert!(
            found.iter().all(|f| *f == (0, 0)),
            "FindCoordinator v{v}: {found:?}"
        );
    }
    for v in 0..=9 {
        let group = format!("g{v}");
        let (member, generation) = join_alone(&conn, &group, v).await;
        let sync_v = v.min(5);
        let assignment = Bytes::from_static(b"mine");
        let mut sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(generation)
            .with_member_id(s(&member))
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(s(&member))
                    .with_assignment(assignment.clone()),
            ]);
        if sync_v >= 5 {
            sync = sync
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s("range")));
        }
        let synced: SyncGroupResponse = conn.send(ApiKey::SyncGroup, sync_v, &sync).await.unwrap();
        assert_eq!(
            (err(synced.error_code), synced.assignment),
            (None, assignment),
            "SyncGroup v{sync_v}"
        );
        let beat = |generation| {
            HeartbeatRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_generation_id(generation)
                .with_member_id(s(&member))
        };
        let hb: HeartbeatResponse = conn
            .send(ApiKey::Heartbeat, v.min(4), &beat(generation))
            .await
            .unwrap();
        assert_eq!(err(hb.error_code), None, "Heartbeat v{}", v.min(4));
        let hb: HeartbeatResponse = conn
            .send(ApiKey::Heartbeat, v.min(4), &beat(generation - 1))
            .await
            .unwrap();
        assert_eq!(err(hb.error_code), Some(ResponseError::IllegalGeneration));
        let commit_v = v.clamp(2, 8);
        let refused = [
            (
                commit_request(&group, generation - 1, &member, ""),
                ResponseError::IllegalGeneration,
            ),
            (
                commit_request(&group, generation, "stranger", ""),
                ResponseError::UnknownMemberId,
            ),
            (
                commit_request(&group, -1, "", ""),
                ResponseError::UnknownMemberId,
            ),
            (
                commit_request(&group, generation, &member, "far too long a note"),
                ResponseError::OffsetMetadataTooLarge,
            ),
        ];
        for (req, want) in refused {
            let resp: OffsetCommitResponse = conn
                .send(ApiKey::OffsetCommit, commit_v, &req)
                .await
                .unwrap();
            assert_eq!(
                commit_errors(&resp),
                vec![Some(want); 2],
                "OffsetCommit v{commit_v}"
            );
        }
        let resp: OffsetCommitResponse = conn
            .send(
                ApiKey::OffsetCommit,
                commit_v,
                &commit_request(&group, generation, &member, "ok"),
            )
            .await
            .unwrap();
        assert_eq!(
            commit_errors(&resp),
            vec![None, None],
            "OffsetCommit v{commit_v}"
        );
        let fetched = fetch_offsets(&conn, &group, v.clamp(1, 8)).await;
        assert_eq!(
            fetched,
            BTreeMap::from([(0, 40), (1, 41)]),
            "OffsetFetch v{}",
            v.clamp(1, 8)
        );
        let leave_v = v.min(5);
        let mut leave = LeaveGroupRequest::default().with_group_id(GroupId(s(&group)));
        leave = if leave_v >= 3 {
            leave.with_members(vec![MemberIdentity::default().with_member_id(s(&member))])
        } else {
            leave.with_member_id(s(&member))
        };
        let left: LeaveGroupResponse = conn
            .send(ApiKey::LeaveGroup, leave_v, &leave)
            .await
            .unwrap();
        let codes: Vec<i16> = std::iter::once(left.error_code)
            .chain(left.members.iter().map(|m| m.error_code))
            .collect();
        assert!(
            codes.iter().all(|c| *c == 0),
            "LeaveGroup v{leave_v}: {codes:?}"
        );
        // Once the group is empty, a standalone commit is allowed.
        let resp: OffsetCommitResponse = conn
            .send(
                ApiKey::OffsetCommit,
                commit_v,
                &commit_request(&group, -1, "", ""),
            )
            .await
            .unwrap();
        assert_eq!(
            commit_errors(&resp),
            vec![None, None],
            "standalone OffsetCommit v{commit_v}"
        );
        out.borrow_mut().push(format!("v{v} ok"));
    }
    // Two members ids handed out fill a group of two; a third is refused.
    let ask = JoinGroupRequest::default()
        .with_group_id(GroupId(s("full")))
        .with_session_timeout_ms(2_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name(s("range")),
        ]);
    let mut codes = Vec::new();
    for _ in 0..3 {
        let resp: JoinGroupResponse = conn.send(ApiKey::JoinGroup, 5, &ask).await.unwrap();
        codes.push(err(resp.error_code));
    }
    assert_eq!(
        codes,
        vec![
            Some(ResponseError::MemberIdRequired),
            Some(ResponseError::MemberIdRequired),
            Some(ResponseError::GroupMaxSizeReached)
        ]
    );
    let resp: JoinGroupResponse = conn
        .send(
            ApiKey::JoinGroup,
            5,
            &ask.clone().with_session_timeout_ms(1),
        )
        .await
        .unwrap();
    assert_eq!(
        err(resp.error_code),
        Some(ResponseError::InvalidSessionTimeout)
    );
    out.borrow_mut().push("bounds ok".into());
    Ok(())
}

#[test]
fn every_served_version_of_every_group_api_is_answered() {
    let out: Rc<RefCell<Vec<String>>> = Rc::default();
    let mut sim = turmoil::Builder::new()
        .rng_seed(5)
        .simulation_duration(Duration::from_secs(60))
        .tick_duration(Duration::from_millis(1))
        .build();
    let handles: Handles = Rc::default();
    sim.host(host(0), move || broker(0, 1, 2, 0, 5, Rc::clone(&handles)));
    sim.client("raw", speak_every_version(Rc::clone(&out)));
    sim.run().expect("every exchange succeeds");
    assert_eq!(out.borrow().len(), 11, "{:?}", out.borrow());
}

/// When the members of the initial-delay test join, in simulated milliseconds.
const BACK_TO_BACK_AT_MS: [u64; 2] = [4_000, 4_300];
/// The Kafka default of `group.initial.rebalance.delay.ms`.
const INITIAL_DELAY_MS: u64 = 3_000;
const BACK_TO_BACK_END_MS: u64 = 14_000;

/// A member that subscribes at `at_ms` and polls to the end, noting its assignments.
async fn back_to_back(name: &'static str, at_ms: u64, seen: Shared) -> turmoil::Result {
    sleep_until(at_ms).await;
    let config = GroupConfig {
        rebalance_timeout_ms: 10_000,
        ..group_config()
    };
    // A join waits out the initial delay, so the client's timeout must outlast it.
    let mut c = GroupConsumer::new(cluster_with_timeout(name, 1, 15_000), config);
    c.subscribe([TOPIC], None);
    poll_until(&mut c, name, &seen, BACK_TO_BACK_END_MS).await;
    c.close().await;
    Ok(())
}

#[test]
fn members_that_join_back_to_back_share_the_first_generation() {
    let seen: Shared = Rc::default();
    let handles: Handles = Rc::default();
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .simulation_duration(Duration::from_millis(BACK_TO_BACK_END_MS + 5_000))
        .tick_duration(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .build();
    sim.host(host(0), move || {
        broker(0, 1, 1_000, INITIAL_DELAY_MS, 7, Rc::clone(&handles))
    });
    sim.client("creator", async {
        create_test_topic(&Admin::new(cluster("creator", 1)), 1).await;
        Ok(())
    });
    sim.client(
        "m1",
        back_to_back("m1", BACK_TO_BACK_AT_MS[0], Rc::clone(&seen)),
    );
    sim.client(
        "m2",
        back_to_back("m2", BACK_TO_BACK_AT_MS[1], Rc::clone(&seen)),
    );
    sim.run().expect("the simulation runs");
    let seen = seen.borrow();
    let trace = seen.trace();
    let first = seen
        .assignments
        .iter()
        .map(|a| a.2)
        .filter(|g| *g > 0)
        .min()
        .expect("a generation formed");
    let split = split_of(&seen, first).unwrap_or_else(|| panic!("gen {first} split:\n{trace}"));
    assert!(
        split.len() == 2 && split.values().all(|p| p.len() == 2),
        "both members get half of generation {first}:\n{trace}"
    );
    // The second join extended the delay: the generation formed a delay after it, not before.
    let formed_at = seen
        .assignments
        .iter()
        .filter(|a| a.2 == first)
        .map(|a| a.0)
        .min()
        .expect("seen above");
    println!("generation {first} formed at {formed_at} ms:\n{trace}");
    assert!(
        formed_at >= BACK_TO_BACK_AT_MS[1] + INITIAL_DELAY_MS,
        "generation {first} formed at {formed_at} ms, before the extended delay:\n{trace}"
    );
    assert!(
        !seen.assignments.iter().any(|a| a.2 > first),
        "no second rebalance:\n{trace}"
    );
}

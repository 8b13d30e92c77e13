//! The group coordinator: membership and rebalances of consumer groups (Kafka's classic
//! protocol), in memory on the broker that is the active controller.
//!
//! Only two things are durable, both through the metadata quorum: committed offsets, and the
//! generation each completed rebalance reached. A coordinator that takes over starts with no
//! members, so every member must rejoin, and it numbers its generations above any generation
//! its predecessors handed out; a commit from a member of the old coordinator is refused.
//!
//! A group moves Empty -> Preparing (members rejoin) -> Persisting (the new generation is being
//! committed) -> Completing (the leader computes the assignment) -> Stable, and back to
//! Preparing whenever membership changes. Timers (session and rebalance timeouts) run on one
//! ticker task, so that every expiry happens at a tick of the simulated clock.

use crate::cluster::groups::CommittedOffset;
use crate::cluster::metadata::{Applied, MetadataCommand};
use crate::cluster::quorum::{Quorum, QuorumError};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// Interval of the coordinator's timer checks, in milliseconds.
const TICK_MS: u64 = 50;
/// Longest client id kept in a member id, in bytes.
const CLIENT_ID_IN_MEMBER_ID_BYTES_MAX: usize = 64;
/// Most protocols one member may offer.
const PROTOCOLS_PER_MEMBER_MAX: usize = 16;

/// Limits and timeouts of the coordinator, every one named with its unit.
#[derive(Clone, Debug)]
pub(crate) struct GroupSettings {
    /// Shortest session timeout a member may ask for, in milliseconds.
    pub min_session_timeout_ms: u64,
    /// Longest session timeout a member may ask for, in milliseconds.
    pub max_session_timeout_ms: u64,
    /// How long an empty group waits for more members before its first generation, in
    /// milliseconds; each new member in the wait extends it, up to the rebalance timeout.
    pub initial_rebalance_delay_ms: u64,
    /// Most groups with members at once, and most groups with committed offsets.
    pub groups_max: usize,
    /// Most members (joined or with a member id handed out) per group.
    pub members_per_group_max: usize,
    /// Most partitions with a committed offset per group.
    pub committed_partitions_per_group_max: usize,
    /// Largest protocol metadata a member may send, all protocols together, in bytes; the
    /// same bound caps each member's assignment.
    pub protocol_metadata_bytes_max: usize,
    /// Largest metadata string of a committed offset, in bytes.
    pub offset_metadata_bytes_max: usize,
    /// Accept commits from any generation or member (a deliberately broken variant).
    pub no_generation_fencing: bool,
}

impl GroupSettings {
    /// The settings a broker's configuration gives.
    pub(crate) fn of(c: &super::BrokerConfig) -> Self {
        Self {
            min_session_timeout_ms: c.group_min_session_timeout_ms,
            max_session_timeout_ms: c.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: c.group_initial_rebalance_delay_ms,
            groups_max: c.groups_max,
            members_per_group_max: c.group_members_max,
            committed_partitions_per_group_max: c.group_committed_partitions_max,
            protocol_metadata_bytes_max: c.group_protocol_metadata_bytes_max,
            offset_metadata_bytes_max: c.offset_metadata_bytes_max,
            no_generation_fencing: c.mutant == Some(super::BrokerMutant::NoGenerationFencing),
        }
    }
}

/// What a joining member learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Joined {
    /// The generation.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The protocol chosen.
    pub protocol: String,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// Every member and its metadata for the chosen protocol; empty except for the leader.
    pub members: Vec<(String, Bytes)>,
}

/// A JoinGroup request, decoded.
pub(crate) struct JoinRequest {
    /// Group id.
    pub group: String,
    /// Member id, empty for a new member.
    pub member_id: String,
    /// The client's id, used in the member id handed out.
    pub client_id: String,
    /// Session timeout, in milliseconds.
    pub session_timeout_ms: i32,
    /// Rebalance timeout, in milliseconds.
    pub rebalance_timeout_ms: i32,
    /// Protocol type, e.g. "consumer".
    pub protocol_type: String,
    /// Protocols the member supports, in order of preference, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// The member must get a member id before it joins (JoinGroup v4 and later).
    pub require_member_id: bool,
}

/// Why a JoinGroup did not join, with the member id handed out for MEMBER_ID_REQUIRED.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JoinError {
    /// The error.
    pub code: ResponseError,
    /// A member id the client should join with, if any.
    pub member_id: String,
}

type JoinOutcome = Result<Joined, JoinError>;
type SyncOutcome = Result<Bytes, ResponseError>;
/// An admitted join: where its answer will come, and the generation to persist if the join
/// completed the rebalance.
type Admitted = (oneshot::Receiver<JoinOutcome>, Option<(String, i32)>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Empty,
    Preparing,
    Persisting(i32),
    Completing,
    Stable,
}

struct Member {
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join: Option<oneshot::Sender<JoinOutcome>>,
    sync: Option<oneshot::Sender<SyncOutcome>>,
    last_seen: Instant,
}

impl Member {
    /// A member waiting for an answer is not expected to heartbeat.
    fn expired(&self, now: Instant) -> bool {
        self.join.is_none() && self.sync.is_none() && now - self.last_seen > self.session_timeout
    }
}

struct Group {
    phase: Phase,
    generation: i32,
    /// The last generation proposed, completed or not.
    attempted: i32,
    protocol_type: String,
    protocol: String,
    leader: String,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, and until when they may join.
    pending: BTreeMap<String, Instant>,
    rebalance_deadline: Instant,
    /// While set, a rebalance that started from Empty waits for more members until then.
    initial_delay_until: Option<Instant>,
}

impl Group {
    fn new(generation: i32, protocol_type: String) -> Self {
        Self {
            phase: Phase::Empty,
            generation,
            attempted: generation,
            protocol_type,
            protocol: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline: Instant::now(),
            initial_delay_until: None,
        }
    }

    /// Starts a rebalance: members must rejoin within the longest rebalance timeout. Members
    /// waiting for their assignment are told to rejoin.
    fn prepare(&mut self, now: Instant) {
        if self.phase != Phase::Preparing {
            let longest = self
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default();
            self.rebalance_deadline = now + longest;
        }
        self.phase = Phase::Preparing;
        for m in self.members.values_mut() {
            if let Some(tx) = m.sync.take() {
                let _ = tx.send(Err(ResponseError::RebalanceInProgress));
            }
        }
    }

    fn remove(&mut self, member: &str, now: Instant) {
        self.pending.remove(member);
        if let Some(m) = self.members.remove(member) {
            if let Some(tx) = m.join {
                let _ = tx.send(Err(JoinError {
                    code: ResponseError::UnknownMemberId,
                    member_id: String::new(),
                }));
            }
            if let Some(tx) = m.sync {
                let _ = tx.send(Err(ResponseError::UnknownMemberId));
            }
            self.prepare(now);
        }
    }

    /// The first protocol, in the order of the first member's preference, that every member
    /// supports.
    fn common_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .cloned()
    }

    /// If every member has rejoined (or the rebalance timed out, dropping those that did not),
    /// moves to Persisting and returns the generation to make durable.
    fn try_complete(&mut self, now: Instant, durable_generation: i32) -> Option<i32> {
        if self.phase != Phase::Preparing {
            return None;
        }
        if let Some(until) = self.initial_delay_until {
            if now < until {
                return None;
            }
            self.initial_delay_until = None;
        }
        let all_joined = self.members.values().all(|m| m.join.is_some());
        if !all_joined && now < self.rebalance_deadline {
            return None;
        }
        self.members.retain(|_, m| m.join.is_some());
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            return None;
        }
        // Admission lets a member in only if it shares a protocol with all the others.
        self.protocol = self.common_protocol().unwrap_or_default();
        if !self.members.contains_key(&self.leader) {
            self.leader = self.members.keys().next().cloned().unwrap_or_default();
        }
        // Above any generation already proposed, so that a membership change during a
        // proposal never hands the same number to two different member sets.
        let generation = self.generation.max(self.attempted).max(durable_generation) + 1;
        self.attempted = generation;
        self.phase = Phase::Persisting(generation);
        Some(generation)
    }
}

struct Inner {
    /// The quorum term the groups belong to: a new term means another coordinator may have
    /// served in between, so everything in memory is dropped.
    term: u64,
    groups: BTreeMap<String, Group>,
    next_member: u64,
}

/// A broker's group coordinator; it serves only while the broker is the active controller.
pub(crate) struct Coordinator {
    quorum: Quorum,
    settings: GroupSettings,
    inner: Mutex<Inner>,
}

fn join_err(code: ResponseError) -> JoinError {
    JoinError {
        code,
        member_id: String::new(),
    }
}

fn quorum_error(e: &QuorumError) -> ResponseError {
    match e {
        QuorumError::NotLeader { .. } => ResponseError::NotCoordinator,
        QuorumError::Timeout | QuorumError::Unavailable => ResponseError::CoordinatorNotAvailable,
    }
}

impl Coordinator {
    /// A coordinator over `quorum`.
    pub(crate) fn new(quorum: Quorum, settings: GroupSettings) -> Arc<Self> {
        assert!(settings.min_session_timeout_ms <= settings.max_session_timeout_ms);
        assert!(settings.groups_max >= 1 && settings.members_per_group_max >= 1);
        assert!(
            settings.groups_max <= crate::cluster::groups::GROUPS_MAX
                && settings.committed_partitions_per_group_max
                    <= crate::cluster::groups::COMMITTED_PARTITIONS_PER_GROUP_MAX
                && settings.offset_metadata_bytes_max
                    <= crate::cluster::groups::OFFSET_METADATA_BYTES_MAX,
            "the coordinator's bounds must fit the image's"
        );
        Arc::new(Self {
            quorum,
            settings,
            inner: Mutex::new(Inner {
                term: 0,
                groups: BTreeMap::new(),
                next_member: 0,
            }),
        })
    }

    /// The coordinator's settings.
    pub(crate) fn settings(&self) -> &GroupSettings {
        &self.settings
    }

    /// The groups, if this broker is the coordinator; a new term clears them.
    fn lock(&self) -> Result<(MutexGuard<'_, Inner>, Durable), ResponseError> {
        let st = self.quorum.current();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !st.active || st.term != inner.term {
            // Dropping the groups drops their waiters: those requests answer NOT_COORDINATOR.
            inner.groups.clear();
            inner.term = st.term;
        }
        if !st.active {
            return Err(ResponseError::NotCoordinator);
        }
        Ok((inner, Durable(st.image)))
    }

    /// Handles a JoinGroup; waits until the rebalance completes.
    pub(crate) async fn join(self: &Arc<Self>, req: JoinRequest) -> JoinOutcome {
        let (rx, completion) = {
            let (mut inner, durable) = self.lock().map_err(join_err)?;
            self.admit(&mut inner, &durable, req)?
        };
        if let Some((group, generation)) = completion {
            self.persist(group, generation);
        }
        rx.await
            .unwrap_or(Err(join_err(ResponseError::NotCoordinator)))
    }

    fn admit(
        &self,
        inner: &mut Inner,
        durable: &Durable,
        req: JoinRequest,
    ) -> Result<Admitted, JoinError> {
        let s = &self.settings;
        if req.group.is_empty() || req.group.len() > crate::cluster::groups::GROUP_ID_BYTES_MAX {
            return Err(join_err(ResponseError::InvalidGroupId));
        }
        let session = u64::try_from(req.session_timeout_ms).unwrap_or(0);
        if !(s.min_session_timeout_ms..=s.max_session_timeout_ms).contains(&session) {
            return Err(join_err(ResponseError::InvalidSessionTimeout));
        }
        if req.protocol_type.is_empty()
            || req.protocols.is_empty()
            || req.protocols.len() > PROTOCOLS_PER_MEMBER_MAX
        {
            return Err(join_err(ResponseError::InconsistentGroupProtocol));
        }
        let metadata_bytes: usize = req.protocols.iter().map(|(n, m)| n.len() + m.len()).sum();
        if metadata_bytes > s.protocol_metadata_bytes_max {
            return Err(join_err(ResponseError::InvalidRequest));
        }
        if !inner.groups.contains_key(&req.group) && inner.groups.len() >= s.groups_max {
            return Err(join_err(ResponseError::PolicyViolation));
        }
        let now = Instant::now();
        let generation = durable.generation(&req.group);
        let group = inner
            .groups
            .entry(req.group.clone())
            .or_insert_with(|| Group::new(generation, req.protocol_type.clone()));
        if group.members.is_empty() && group.pending.is_empty() {
            group.protocol_type = req.protocol_type.clone();
        }
        if group.protocol_type != req.protocol_type
            || (!group.members.is_empty()
                && !req.protocols.iter().any(|(name, _)| {
                    group
                        .members
                        .iter()
                        .filter(|(id, _)| **id != req.member_id)
                        .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == name))
                }))
        {
            return Err(join_err(ResponseError::InconsistentGroupProtocol));
        }
        let known = group.members.contains_key(&req.member_id);
        let handed_out = group.pending.contains_key(&req.member_id);
        if !req.member_id.is_empty() && !known && !handed_out {
            return Err(join_err(ResponseError::UnknownMemberId));
        }
        if req.member_id.is_empty()
            && group.members.len() + group.pending.len() >= s.members_per_group_max
        {
            return Err(join_err(ResponseError::GroupMaxSizeReached));
        }
        let member_id = if req.member_id.is_empty() {
            inner.next_member += 1;
            let client: String = req
                .client_id
                .chars()
                .scan(0usize, |bytes, c| {
                    *bytes += c.len_utf8();
                    (*bytes <= CLIENT_ID_IN_MEMBER_ID_BYTES_MAX).then_some(c)
                })
                .collect();
            let id = format!("{client}-{}-{}", inner.term, inner.next_member);
            let group = inner.groups.get_mut(&req.group).expect("inserted above");
            if req.require_member_id {
                group
                    .pending
                    .insert(id.clone(), now + Duration::from_millis(session));
                return Err(JoinError {
                    code: ResponseError::MemberIdRequired,
                    member_id: id,
                });
            }
            id
        } else {
            req.member_id.clone()
        };
        let group = inner.groups.get_mut(&req.group).expect("inserted above");
        group.pending.remove(&member_id);
        let (tx, rx) = oneshot::channel();
        let rebalance_ms = u64::try_from(req.rebalance_timeout_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .unwrap_or(session);
        let new_member = !group.members.contains_key(&member_id);
        let from_empty = group.phase == Phase::Empty;
        let member = group.members.entry(member_id).or_insert_with(|| Member {
            session_timeout: Duration::ZERO,
            rebalance_timeout: Duration::ZERO,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            join: None,
            sync: None,
            last_seen: now,
        });
        member.session_timeout = Duration::from_millis(session);
        member.rebalance_timeout = Duration::from_millis(rebalance_ms);
        member.protocols = req.protocols;
        member.last_seen = now;
        // A repeated JoinGroup supersedes the earlier one, whose client has given up on it.
        if let Some(old) = member.join.replace(tx) {
            let _ = old.send(Err(join_err(ResponseError::RebalanceInProgress)));
        }
        group.prepare(now);
        // Kafka's group.initial.rebalance.delay.ms: members that join an empty group back to
        // back share its first generation instead of one taking every partition.
        let delay = Duration::from_millis(s.initial_rebalance_delay_ms);
        if !delay.is_zero() && (from_empty || (new_member && group.initial_delay_until.is_some())) {
            group.initial_delay_until = Some((now + delay).min(group.rebalance_deadline));
        }
        let completion = group
            .try_complete(now, generation)
            .map(|g| (req.group.clone(), g));
        Ok((rx, completion))
    }

    /// Makes `generation` durable, then answers the members that joined it.
    fn persist(self: &Arc<Self>, group: String, generation: i32) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = this
                .quorum
                .propose(MetadataCommand::CompleteGeneration {
                    group: group.clone(),
                    generation,
                })
                .await;
            let Ok((mut inner, _)) = this.lock() else {
                return;
            };
            let Some(g) = inner.groups.get_mut(&group) else {
                return;
            };
            if g.phase != Phase::Persisting(generation) {
                return;
            }
            let now = Instant::now();
            match result {
                Ok(Applied::Done) => {
                    g.generation = generation;
                    g.phase = Phase::Completing;
                    let everyone: Vec<(String, Bytes)> = g
                        .members
                        .iter()
                        .map(|(id, m)| {
                            let meta = m
                                .protocols
                                .iter()
                                .find(|(n, _)| *n == g.protocol)
                                .map(|(_, b)| b.clone())
                                .unwrap_or_default();
                            (id.clone(), meta)
                        })
                        .collect();
                    let (protocol_type, protocol, leader) = (
                        g.protocol_type.clone(),
                        g.protocol.clone(),
                        g.leader.clone(),
                    );
                    for (id, m) in &mut g.members {
                        m.last_seen = now;
                        if let Some(tx) = m.join.take() {
                            let _ = tx.send(Ok(Joined {
                                generation,
                                protocol_type: protocol_type.clone(),
                                protocol: protocol.clone(),
                                leader: leader.clone(),
                                member_id: id.clone(),
                                members: if *id == leader {
                                    everyone.clone()
                                } else {
                                    Vec::new()
                                },
                            }));
                        }
                    }
                }
                Ok(Applied::Rejected(why)) => {
                    tracing::warn!(%group, %why, "generation not recorded");
                    fail_joins(g, ResponseError::PolicyViolation, now);
                }
                Ok(other) => {
                    tracing::warn!(%group, ?other, "unexpected answer to a generation record");
                    fail_joins(g, ResponseError::CoordinatorNotAvailable, now);
                }
                Err(e) => fail_joins(g, quorum_error(&e), now),
            }
        });
    }

    /// Handles a SyncGroup: the leader's call carries every member's assignment.
    pub(crate) async fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        protocol: Option<(&str, &str)>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        let rx = {
            let (mut inner, _) = self.lock()?;
            let g = inner
                .groups
                .get_mut(group)
                .ok_or(ResponseError::UnknownMemberId)?;
            if !g.members.contains_key(member_id) {
                return Err(ResponseError::UnknownMemberId);
            }
            if generation != g.generation {
                return Err(ResponseError::IllegalGeneration);
            }
            if let Some((ty, name)) = protocol
                && (ty != g.protocol_type || name != g.protocol)
            {
                return Err(ResponseError::InconsistentGroupProtocol);
            }
            let now = Instant::now();
            match g.phase {
                Phase::Empty | Phase::Preparing | Phase::Persisting(_) => {
                    return Err(ResponseError::RebalanceInProgress);
                }
                Phase::Stable => {
                    let m = g.members.get_mut(member_id).expect("checked above");
                    m.last_seen = now;
                    return Ok(m.assignment.clone());
                }
                Phase::Completing => {}
            }
            let (tx, rx) = oneshot::channel();
            let m = g.members.get_mut(member_id).expect("checked above");
            m.last_seen = now;
            m.sync = Some(tx);
            if member_id == g.leader {
                if assignments
                    .iter()
                    .any(|(_, a)| a.len() > self.settings.protocol_metadata_bytes_max)
                {
                    g.prepare(now);
                    return Err(ResponseError::InvalidRequest);
                }
                let mut given: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                for (id, m) in &mut g.members {
                    m.assignment = given.remove(id).unwrap_or_default();
                    if let Some(tx) = m.sync.take() {
                        let _ = tx.send(Ok(m.assignment.clone()));
                    }
                }
                g.phase = Phase::Stable;
            }
            rx
        };
        rx.await.unwrap_or(Err(ResponseError::NotCoordinator))
    }

    /// Handles a Heartbeat.
    pub(crate) fn heartbeat(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
    ) -> Result<(), ResponseError> {
        let (mut inner, _) = self.lock()?;
        let g = inner
            .groups
            .get_mut(group)
            .ok_or(ResponseError::UnknownMemberId)?;
        let phase = g.phase;
        let current = g.generation;
        let m = g
            .members
            .get_mut(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        m.last_seen = Instant::now();
        match phase {
            Phase::Preparing | Phase::Persisting(_) => Err(ResponseError::RebalanceInProgress),
            _ if generation != current => Err(ResponseError::IllegalGeneration),
            _ => Ok(()),
        }
    }

    /// Handles one member's LeaveGroup.
    pub(crate) fn leave(
        self: &Arc<Self>,
        group: &str,
        member_id: &str,
    ) -> Result<(), ResponseError> {
        let (mut inner, durable) = self.lock()?;
        let g = inner
            .groups
            .get_mut(group)
            .ok_or(ResponseError::UnknownMemberId)?;
        if !g.members.contains_key(member_id) && !g.pending.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        let now = Instant::now();
        g.remove(member_id, now);
        let completion = g.try_complete(now, durable.generation(group));
        drop(inner);
        if let Some(generation) = completion {
            self.persist(group.to_string(), generation);
        }
        Ok(())
    }

    /// Checks that a member may commit offsets now; refreshes its session, as a commit proves
    /// it alive.
    pub(crate) fn check_commit(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
    ) -> Result<(), ResponseError> {
        let (mut inner, _) = self.lock()?;
        if self.settings.no_generation_fencing {
            return Ok(());
        }
        let simple = generation < 0 && member_id.is_empty();
        let Some(g) = inner.groups.get_mut(group) else {
            return if simple {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        };
        if simple {
            return if g.members.is_empty() {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        }
        let phase = g.phase;
        let current = g.generation;
        let m = g
            .members
            .get_mut(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if generation != current {
            return Err(ResponseError::IllegalGeneration);
        }
        m.last_seen = Instant::now();
        match phase {
            // The current generation may still commit while the group prepares a rebalance: it
            // is how members commit what they processed before giving up their partitions.
            Phase::Preparing | Phase::Stable => Ok(()),
            Phase::Empty | Phase::Persisting(_) | Phase::Completing => {
                Err(ResponseError::RebalanceInProgress)
            }
        }
    }

    /// Makes a batch of offsets durable; the caller has checked the committer.
    pub(crate) async fn commit(
        &self,
        group: &str,
        offsets: Vec<CommittedOffset>,
    ) -> Result<(), ResponseError> {
        {
            let (_inner, durable) = self.lock()?;
            let image = &durable.0;
            let record = image.groups.get(group);
            if record.is_none() && image.groups.len() >= self.settings.groups_max {
                return Err(ResponseError::PolicyViolation);
            }
            let new = offsets
                .iter()
                .filter(|o| {
                    record.is_none_or(|r| {
                        r.offsets
                            .get(&o.topic)
                            .is_none_or(|p| !p.contains_key(&o.partition))
                    })
                })
                .count();
            if record.map_or(0, |r| r.partition_count()) + new
                > self.settings.committed_partitions_per_group_max
            {
                return Err(ResponseError::InvalidCommitOffsetSize);
            }
        }
        match self
            .quorum
            .propose(MetadataCommand::CommitOffsets {
                group: group.to_string(),
                offsets,
            })
            .await
        {
            Ok(Applied::Done) => Ok(()),
            Ok(_) => Err(ResponseError::InvalidCommitOffsetSize),
            Err(e) => Err(quorum_error(&e)),
        }
    }

    /// The image committed offsets are read from; errs unless this broker is the coordinator,
    /// whose image holds every commit it acknowledged.
    pub(crate) fn image(
        &self,
    ) -> Result<Arc<crate::cluster::metadata::MetadataImage>, ResponseError> {
        let (_inner, durable) = self.lock()?;
        Ok(durable.0)
    }

    /// Expires sessions, pending member ids and rebalances. Runs until `stop` is set.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Duration::from_millis(TICK_MS)) => {}
            }
            let completions = {
                let Ok((mut inner, durable)) = self.lock() else {
                    continue;
                };
                let now = Instant::now();
                let mut completions = Vec::new();
                for (name, g) in &mut inner.groups {
                    g.pending.retain(|_, until| *until > now);
                    let expired: Vec<String> = g
                        .members
                        .iter()
                        .filter(|(_, m)| m.expired(now))
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in expired {
                        tracing::info!(group = %name, member = %id, "session expired");
                        g.remove(&id, now);
                    }
                    if let Some(generation) = g.try_complete(now, durable.generation(name)) {
                        completions.push((name.clone(), generation));
                    }
                }
                inner
                    .groups
                    .retain(|_, g| !(g.members.is_empty() && g.pending.is_empty()));
                completions
            };
            for (group, generation) in completions {
                self.persist(group, generation);
            }
        }
    }
}

/// Answers every pending join of `g` with `code` and starts the rebalance again.
fn fail_joins(g: &mut Group, code: ResponseError, now: Instant) {
    for m in g.members.values_mut() {
        if let Some(tx) = m.join.take() {
            let _ = tx.send(Err(join_err(code)));
        }
    }
    // Leaving Preparing first restarts the rebalance timeout.
    g.phase = Phase::Empty;
    g.prepare(now);
}

/// Durable generations, read from the image the coordinator checked against.
struct Durable(Arc<crate::cluster::metadata::MetadataImage>);

impl Durable {
    fn generation(&self, group: &str) -> i32 {
        self.0.groups.get(group).map_or(0, |g| g.generation)
    }
}

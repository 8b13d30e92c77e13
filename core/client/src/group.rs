//! A consumer in a consumer group (Kafka's classic group protocol): it finds the group's
//! coordinator, joins, and, when it is the leader, computes the assignment with a client-side
//! assignor; then it consumes its partitions from their committed offsets through a
//! [`Consumer`], heartbeats from a background task, commits, and rejoins whenever the group
//! rebalances. Partitions are revoked all at once before every rejoin (the eager protocol).

use super::cluster::Cluster;
use super::conn::{ConnConfig, Connection};
use super::consumer::{Consumer, ConsumerConfig, ConsumerRecord, Isolation, TopicPartition};
use super::error::ClientError;
use bytes::{Buf, BufMut, Bytes, BytesMut};
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
    ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName, consumer_protocol_assignment,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The protocol type of consumer groups.
const PROTOCOL_TYPE: &str = "consumer";
/// Version of the subscription and assignment encodings this client writes.
const CONSUMER_PROTOCOL_VERSION: i16 = 0;

/// How partitions are spread over a group's members; the leader runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    /// Per topic, consecutive ranges of partitions, the first members taking one more.
    Range,
    /// Every subscribed partition, in order, dealt to the members in turn.
    RoundRobin,
}

impl Assignor {
    /// The protocol name, as Kafka's clients call it.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    /// The assignor called `name`, if this client has it.
    pub fn by_name(name: &str) -> Option<Self> {
        [Assignor::Range, Assignor::RoundRobin]
            .into_iter()
            .find(|a| a.name() == name)
    }

    /// Assigns the partitions of `partitions` (topic to partition count) to the members of
    /// `subscriptions` (member id to its topics). Every member gets an entry.
    pub fn assign(
        self,
        subscriptions: &BTreeMap<String, Vec<String>>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut out: BTreeMap<String, Vec<TopicPartition>> = subscriptions
            .keys()
            .map(|m| (m.clone(), Vec::new()))
            .collect();
        let subscribers = |topic: &str| -> Vec<&String> {
            subscriptions
                .iter()
                .filter(|(_, topics)| topics.iter().any(|t| t == topic))
                .map(|(m, _)| m)
                .collect()
        };
        match self {
            Assignor::Range => {
                for (topic, &count) in partitions {
                    let members = subscribers(topic);
                    if members.is_empty() {
                        continue;
                    }
                    let count = count.max(0) as usize;
                    let (each, extra) = (count / members.len(), count % members.len());
                    let mut next = 0;
                    for (i, m) in members.into_iter().enumerate() {
                        let take = each + usize::from(i < extra);
                        let mine = out.get_mut(m).expect("every member has an entry");
                        mine.extend((next..next + take).map(|p| (topic.clone(), p as i32)));
                        next += take;
                    }
                }
            }
            Assignor::RoundRobin => {
                let members: Vec<&String> = subscriptions.keys().collect();
                let mut turn = 0;
                for (topic, &count) in partitions {
                    for p in 0..count.max(0) {
                        // The next member in turn that subscribes to the topic.
                        let Some(k) = (0..members.len())
                            .map(|k| (turn + k) % members.len())
                            .find(|&k| subscriptions[members[k]].iter().any(|t| t == topic))
                        else {
                            break;
                        };
                        out.get_mut(members[k])
                            .expect("every member has an entry")
                            .push((topic.clone(), p));
                        turn = k + 1;
                    }
                }
            }
        }
        out
    }
}

/// A boxed future a rebalance listener returns.
pub type ListenerFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Told about partitions before they are taken away and after new ones are given. Both calls
/// get the consumer, so that a listener can commit what it processed before giving up its
/// partitions (the revocation happens while the old generation may still commit).
pub trait RebalanceListener {
    /// Called before rejoining, with every partition the consumer held.
    fn on_partitions_revoked<'a>(
        &'a mut self,
        consumer: &'a mut GroupConsumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a>;
    /// Called after a rebalance, with the partitions now held (possibly none).
    fn on_partitions_assigned<'a>(
        &'a mut self,
        consumer: &'a mut GroupConsumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a>;
}

/// Group consumer settings, with Kafka's defaults. Every duration is named with its unit.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// The group.
    pub group_id: String,
    /// The coordinator drops a member it has not heard from for this long, in milliseconds.
    pub session_timeout_ms: u64,
    /// Longest the coordinator waits for members to rejoin, in milliseconds.
    pub rebalance_timeout_ms: u64,
    /// Interval between heartbeats, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Whether `poll` commits the positions every `auto_commit_interval_ms`.
    pub enable_auto_commit: bool,
    /// Interval of automatic commits, in milliseconds.
    pub auto_commit_interval_ms: u64,
    /// Assignors offered, in order of preference.
    pub assignors: Vec<Assignor>,
    /// Pause after a failed coordinator call, in milliseconds.
    pub retry_backoff_ms: u64,
    /// Longest a commit keeps retrying through coordinator moves, in milliseconds.
    pub commit_timeout_ms: u64,
    /// Fetch settings, the offset reset policy and the isolation level.
    pub consumer: ConsumerConfig,
}

impl GroupConfig {
    /// Kafka's defaults for group `group_id`.
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 300_000,
            heartbeat_interval_ms: 3_000,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            assignors: vec![Assignor::Range, Assignor::RoundRobin],
            retry_backoff_ms: 100,
            commit_timeout_ms: 60_000,
            consumer: ConsumerConfig::default(),
        }
    }
}

/// Who commits a group's offsets inside a transaction: the group, and the member and
/// generation the committer holds, so that the coordinator refuses a member that a rebalance
/// has fenced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadata {
    /// The group.
    pub group_id: String,
    /// The committer's generation; -1 for a committer outside any generation.
    pub generation_id: i32,
    /// The committer's member id; empty outside any generation.
    pub member_id: String,
}

impl GroupMetadata {
    /// A committer that is not a member: the coordinator checks nothing but the group id.
    pub fn standalone(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
        }
    }
}

/// What the heartbeat task last learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heard {
    Fine,
    Rejoin,
    ForgetMember,
    LostCoordinator,
}

/// A consumer that shares its topics' partitions with the other members of its group.
pub struct GroupConsumer {
    cluster: Arc<Cluster>,
    config: GroupConfig,
    inner: Consumer,
    topics: Vec<String>,
    listener: Option<Box<dyn RebalanceListener>>,
    /// The connection to the coordinator, whose request timeout covers a JoinGroup's wait.
    coordinator: Option<Arc<Connection>>,
    member_id: String,
    generation: i32,
    /// The consumer must join (again) before it consumes.
    rejoin_needed: bool,
    /// Partitions held in the current generation; `None` until the consumer has joined.
    assigned: Option<Vec<TopicPartition>>,
    heard: Arc<Mutex<Heard>>,
    heartbeat: Option<JoinHandle<()>>,
    next_auto_commit: Instant,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn kafka(code: ResponseError, context: impl Into<String>) -> ClientError {
    ClientError::Kafka {
        code,
        context: context.into(),
    }
}

fn encode_versioned<T: Encodable>(msg: &T) -> Result<Bytes, ClientError> {
    let mut buf = BytesMut::new();
    buf.put_i16(CONSUMER_PROTOCOL_VERSION);
    msg.encode(&mut buf, CONSUMER_PROTOCOL_VERSION)
        .map_err(|e| ClientError::Invalid(e.to_string()))?;
    Ok(buf.freeze())
}

/// Decodes a versioned consumer-protocol message; newer versions only append fields, so a
/// newer one is read as the newest this client knows.
fn decode_versioned<T: Decodable + kafka_protocol::protocol::Message>(
    bytes: &Bytes,
) -> Result<T, ClientError> {
    let mut b = bytes.clone();
    if b.remaining() < 2 {
        return Err(ClientError::Protocol(
            "consumer protocol message too short".into(),
        ));
    }
    let v = b.get_i16().clamp(0, T::VERSIONS.max);
    T::decode(&mut b, v).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Errors after which the consumer finds its coordinator and joins again, rather than fail.
fn recoverable(e: &ClientError) -> bool {
    e.is_retriable()
        || matches!(
            e.code(),
            Some(
                ResponseError::RebalanceInProgress
                    | ResponseError::UnknownMemberId
                    | ResponseError::IllegalGeneration
                    | ResponseError::MemberIdRequired
            )
        )
}

impl GroupConsumer {
    /// A consumer of group `config.group_id` on `cluster`, subscribed to nothing yet.
    pub fn new(cluster: Arc<Cluster>, config: GroupConfig) -> Self {
        assert!(
            !config.assignors.is_empty(),
            "a group consumer needs at least one assignor"
        );
        assert!(
            config.heartbeat_interval_ms >= 1
                && config.heartbeat_interval_ms < config.session_timeout_ms
        );
        let inner = Consumer::new(Arc::clone(&cluster), config.consumer.clone());
        Self {
            cluster,
            config,
            inner,
            topics: Vec::new(),
            listener: None,
            coordinator: None,
            member_id: String::new(),
            generation: -1,
            rejoin_needed: true,
            assigned: None,
            heard: Arc::new(Mutex::new(Heard::Fine)),
            heartbeat: None,
            next_auto_commit: Instant::now(),
        }
    }

    /// Subscribes to `topics`, replacing any earlier subscription; the next poll rejoins.
    pub fn subscribe(
        &mut self,
        topics: impl IntoIterator<Item = impl Into<String>>,
        listener: Option<Box<dyn RebalanceListener>>,
    ) {
        let mut topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        topics.sort();
        topics.dedup();
        self.topics = topics;
        self.listener = listener;
        self.rejoin_needed = true;
    }

    /// The member id the coordinator gave this consumer, empty before it joined.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The generation of the current assignment, -1 before the first.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// What a transactional producer sends with this consumer's offsets.
    pub fn group_metadata(&self) -> GroupMetadata {
        GroupMetadata {
            group_id: self.config.group_id.clone(),
            generation_id: self.generation,
            member_id: self.member_id.clone(),
        }
    }

    /// The partitions held now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assigned.clone().unwrap_or_default()
    }

    /// The offset of the next record `poll` returns for `tp`, if known.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.inner.position(tp)
    }

    fn take_heard(&self) -> Heard {
        std::mem::replace(
            &mut *self.heard.lock().unwrap_or_else(|p| p.into_inner()),
            Heard::Fine,
        )
    }

    /// Takes in what an error says about the coordinator or the membership.
    fn absorb(&mut self, e: &ClientError) {
        match e.code() {
            Some(
                ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress,
            ) => self.coordinator = None,
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                self.generation = -1;
                self.rejoin_needed = true;
            }
            // The member id stays valid: the coordinator still expects it to rejoin.
            Some(ResponseError::IllegalGeneration) => {
                self.generation = -1;
                self.rejoin_needed = true;
            }
            Some(ResponseError::RebalanceInProgress) => self.rejoin_needed = true,
            _ if matches!(
                e,
                ClientError::Connection { .. } | ClientError::Timeout { .. }
            ) =>
            {
                self.coordinator = None
            }
            _ => {}
        }
    }

    /// Joins the group if needed, commits if due, and returns records of the partitions held,
    /// waiting up to `timeout`. While the group cannot be joined it returns nothing. A join in
    /// progress may hold it longer, up to the rebalance timeout, as the coordinator answers a
    /// JoinGroup only once the rebalance completes.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ensure_member().await {
                Ok(()) => break,
                Err(e) if recoverable(&e) => {
                    self.absorb(&e);
                    if Instant::now() >= deadline {
                        return Ok(Vec::new());
                    }
                    tokio::time::sleep(Duration::from_millis(self.config.retry_backoff_ms)).await;
                }
                Err(e) => return Err(e),
            }
        }
        if self.config.enable_auto_commit && Instant::now() >= self.next_auto_commit {
            self.next_auto_commit =
                Instant::now() + Duration::from_millis(self.config.auto_commit_interval_ms);
            if let Err(e) = self.commit_sync(None).await {
                tracing::debug!(error = %e, group = %self.config.group_id, "auto-commit failed");
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if self.assignment().is_empty() {
            tokio::time::sleep(left).await;
            return Ok(Vec::new());
        }
        let before: Vec<(TopicPartition, i64)> = self
            .assignment()
            .into_iter()
            .filter_map(|tp| self.inner.position(&tp).map(|o| (tp, o)))
            .collect();
        let records = self.inner.poll(left).await;
        self.keep_positions_past_the_end(before).await;
        records
    }

    /// Undoes the reset of positions a fetch found out of range, unless they fell below the
    /// log start (retention deleted the records). A leader that answers a position beyond its
    /// log end is most often a stale one that missed the records this group consumed; going
    /// back to the reset point would consume them again and move the committed offset back.
    async fn keep_positions_past_the_end(&mut self, before: Vec<(TopicPartition, i64)>) {
        for (tp, was) in before {
            if self.inner.position(&tp).is_some() {
                continue;
            }
            self.cluster.forget(&tp.0).await;
            let below_start =
                matches!(self.inner.list_offset(&tp, -2).await, Ok(start) if was < start);
            if !below_start {
                // Assigned above, so the seek cannot fail.
                let _ = self.inner.seek(tp, was);
            }
        }
    }

    /// Commits `offsets`, or the positions of every partition held, and waits until the
    /// coordinator made them durable. Retries while the coordinator moves.
    pub async fn commit_sync(
        &mut self,
        offsets: Option<BTreeMap<TopicPartition, i64>>,
    ) -> Result<(), ClientError> {
        let offsets = offsets.unwrap_or_else(|| {
            self.assignment()
                .into_iter()
                .filter_map(|tp| self.inner.position(&tp).map(|o| (tp, o)))
                .collect()
        });
        if offsets.is_empty() {
            return Ok(());
        }
        // Without a member id this would be a standalone commit, which a consumer that lost
        // its membership must not make.
        if self.member_id.is_empty() {
            return Err(kafka(
                ResponseError::UnknownMemberId,
                format!("commit to {} while not a member", self.config.group_id),
            ));
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.commit_timeout_ms);
        loop {
            match self.try_commit(&offsets).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.absorb(&e);
                    if !e.is_retriable() || Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(self.config.retry_backoff_ms)).await;
                }
            }
        }
    }

    async fn try_commit(
        &mut self,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), ClientError> {
        let conn = self.coordinator_conn().await?;
        let member = (self.generation, self.member_id.as_str());
        send_commit(&conn, &self.config.group_id, member, offsets).await
    }

    /// The committed offsets of `partitions` (absent when none is committed).
    pub async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let result = self.fetch_committed(partitions).await;
        if let Err(e) = &result {
            self.absorb(e);
        }
        result
    }

    /// Moves every partition held back to its committed offset, or to the reset point where
    /// none is committed. A transactional consume-transform-produce loop calls it after an
    /// abort, so that the records of the aborted transaction are processed again.
    pub async fn rewind_to_committed(&mut self) -> Result<(), ClientError> {
        let held = self.assignment();
        let committed = match self.fetch_stable_committed(&held).await {
            Ok(c) => c,
            Err(e) => {
                self.absorb(&e);
                return Err(e);
            }
        };
        self.inner.assign(Vec::new());
        self.inner.assign(held);
        for (tp, offset) in committed {
            self.inner.seek(tp, offset)?;
        }
        Ok(())
    }

    /// The committed offsets of newly assigned partitions. Under read_committed it waits, up to
    /// `commit_timeout_ms`, while a transaction that will commit some of them is still open:
    /// starting from the older offset would process again what that transaction covers.
    async fn fetch_stable_committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let deadline = Instant::now() + Duration::from_millis(self.config.commit_timeout_ms);
        loop {
            match self.fetch_committed(partitions).await {
                Err(e)
                    if e.code() == Some(ResponseError::UnstableOffsetCommit)
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(self.config.retry_backoff_ms)).await;
                }
                r => return r,
            }
        }
    }

    async fn fetch_committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let conn = self.coordinator_conn().await?;
        let stable = self.config.consumer.isolation == Isolation::ReadCommitted;
        fetch_offsets(&conn, &self.config.group_id, partitions, stable).await
    }

    /// The connection to the coordinator, finding it first if it is not known.
    async fn coordinator_conn(&mut self) -> Result<Arc<Connection>, ClientError> {
        if let Some(c) = self.coordinator.as_ref().filter(|c| !c.is_dead()) {
            return Ok(Arc::clone(c));
        }
        self.coordinator = None;
        let timeout_ms = self.config.rebalance_timeout_ms;
        let conn = find_coordinator(&self.cluster, &self.config.group_id, timeout_ms).await?;
        let conn = Arc::new(conn);
        self.coordinator = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Makes sure the consumer is a member with an assignment and a running heartbeat.
    async fn ensure_member(&mut self) -> Result<(), ClientError> {
        match self.take_heard() {
            Heard::Fine => {}
            Heard::Rejoin => self.rejoin_needed = true,
            Heard::ForgetMember => {
                self.member_id.clear();
                self.generation = -1;
                self.rejoin_needed = true;
            }
            Heard::LostCoordinator => self.coordinator = None,
        }
        if self.topics.is_empty() {
            return Ok(());
        }
        let conn = self.coordinator_conn().await?;
        if !self.rejoin_needed && self.assigned.is_some() {
            if self.heartbeat.as_ref().is_none_or(JoinHandle::is_finished) {
                self.start_heartbeat(conn);
            }
            return Ok(());
        }
        self.revoke().await;
        let assigned = self.join_and_sync(&conn).await?;
        // The session must stay alive while the committed offsets settle.
        self.start_heartbeat(Arc::clone(&conn));
        let committed = self.fetch_stable_committed(&assigned).await?;
        self.inner.assign(assigned.iter().cloned());
        for (tp, offset) in committed {
            self.inner.seek(tp, offset)?;
        }
        self.assigned = Some(assigned.clone());
        self.rejoin_needed = false;
        self.next_auto_commit =
            Instant::now() + Duration::from_millis(self.config.auto_commit_interval_ms);
        if let Some(mut l) = self.listener.take() {
            l.on_partitions_assigned(self, &assigned).await;
            self.listener = Some(l);
        }
        Ok(())
    }

    /// Gives up every partition held: commits them first when auto-commit is on, then tells
    /// the listener.
    async fn revoke(&mut self) {
        self.stop_heartbeat();
        let Some(held) = self.assigned.clone() else {
            return;
        };
        if self.config.enable_auto_commit
            && let Err(e) = self.commit_sync(None).await
        {
            tracing::debug!(error = %e, group = %self.config.group_id, "commit before rejoining failed");
        }
        if let Some(mut l) = self.listener.take() {
            l.on_partitions_revoked(self, &held).await;
            self.listener = Some(l);
        }
        self.assigned = None;
        self.inner.assign(Vec::new());
    }

    async fn join_and_sync(
        &mut self,
        conn: &Connection,
    ) -> Result<Vec<TopicPartition>, ClientError> {
        let subscription = encode_versioned(
            &ConsumerProtocolSubscription::default()
                .with_topics(self.topics.iter().map(|t| s(t)).collect()),
        )?;
        let protocols = self
            .config
            .assignors
            .iter()
            .map(|a| {
                JoinGroupRequestProtocol::default()
                    .with_name(s(a.name()))
                    .with_metadata(subscription.clone())
            })
            .collect::<Vec<_>>();
        let v = conn.version(ApiKey::JoinGroup)?;
        let joined: JoinGroupResponse = loop {
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(s(&self.config.group_id)))
                .with_session_timeout_ms(
                    i32::try_from(self.config.session_timeout_ms).unwrap_or(i32::MAX),
                )
                .with_rebalance_timeout_ms(
                    i32::try_from(self.config.rebalance_timeout_ms).unwrap_or(i32::MAX),
                )
                .with_member_id(s(&self.member_id))
                .with_protocol_type(s(PROTOCOL_TYPE))
                .with_protocols(protocols.clone());
            let resp: JoinGroupResponse = conn.send(ApiKey::JoinGroup, v, &req).await?;
            match ResponseError::try_from_code(resp.error_code) {
                None => break resp,
                Some(ResponseError::MemberIdRequired) => {
                    self.member_id = resp.member_id.to_string()
                }
                Some(code) => {
                    return Err(kafka(code, format!("join group {}", self.config.group_id)));
                }
            }
        };
        self.member_id = joined.member_id.to_string();
        self.generation = joined.generation_id;
        let protocol = joined
            .protocol_name
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let assignments = if joined.leader == joined.member_id {
            self.lead(&protocol, &joined).await?
        } else {
            Vec::new()
        };
        let v = conn.version(ApiKey::SyncGroup)?;
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&self.config.group_id)))
            .with_generation_id(self.generation)
            .with_member_id(s(&self.member_id))
            .with_protocol_type(Some(s(PROTOCOL_TYPE)))
            .with_protocol_name(Some(s(&protocol)))
            .with_assignments(assignments);
        let resp: SyncGroupResponse = conn.send(ApiKey::SyncGroup, v, &req).await?;
        if let Some(e) = ClientError::kafka(
            resp.error_code,
            format!("sync group {}", self.config.group_id),
        ) {
            return Err(e);
        }
        if resp.assignment.is_empty() {
            return Ok(Vec::new());
        }
        let a: ConsumerProtocolAssignment = decode_versioned(&resp.assignment)?;
        let mut held: Vec<TopicPartition> = a
            .assigned_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect();
        held.sort();
        Ok(held)
    }

    /// As the leader: assigns every member's subscribed partitions.
    async fn lead(
        &mut self,
        protocol: &str,
        joined: &JoinGroupResponse,
    ) -> Result<Vec<SyncGroupRequestAssignment>, ClientError> {
        let assignor = Assignor::by_name(protocol).ok_or_else(|| {
            kafka(
                ResponseError::InconsistentGroupProtocol,
                format!("the group chose assignor {protocol:?}, which this client lacks"),
            )
        })?;
        let mut subscriptions = BTreeMap::new();
        for m in &joined.members {
            let sub: ConsumerProtocolSubscription = decode_versioned(&m.metadata)?;
            subscriptions.insert(
                m.member_id.to_string(),
                sub.topics
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            );
        }
        let mut counts = BTreeMap::new();
        for topic in subscriptions.values().flatten() {
            if counts.contains_key(topic) {
                continue;
            }
            self.cluster.forget(topic).await;
            // A topic that does not exist (yet) gets no partitions; a later rebalance adds them.
            if let Ok(parts) = self.cluster.partitions(topic).await {
                counts.insert(topic.clone(), parts.len() as i32);
            }
        }
        assignor
            .assign(&subscriptions, &counts)
            .into_iter()
            .map(|(member, parts)| {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (t, p) in parts {
                    by_topic.entry(t).or_default().push(p);
                }
                let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
                    by_topic
                        .into_iter()
                        .map(|(t, ps)| {
                            consumer_protocol_assignment::TopicPartition::default()
                                .with_topic(TopicName(s(&t)))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(s(&member))
                    .with_assignment(encode_versioned(&a)?))
            })
            .collect()
    }

    fn start_heartbeat(&mut self, conn: Arc<Connection>) {
        self.stop_heartbeat();
        let (group, member, generation) = (
            self.config.group_id.clone(),
            self.member_id.clone(),
            self.generation,
        );
        let every = Duration::from_millis(self.config.heartbeat_interval_ms);
        let heard = Arc::clone(&self.heard);
        self.heartbeat = Some(tokio::spawn(async move {
            let outcome = heartbeat_until_told(&conn, group, member, generation, every).await;
            *heard.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
        }));
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    /// Commits (with auto-commit on), gives up the partitions and leaves the group.
    pub async fn close(mut self) {
        if self.assigned.is_some() {
            self.revoke().await;
        }
        if self.member_id.is_empty() {
            return;
        }
        let Ok(conn) = self.coordinator_conn().await else {
            return;
        };
        let Ok(v) = conn.version(ApiKey::LeaveGroup) else {
            return;
        };
        let mut req = LeaveGroupRequest::default().with_group_id(GroupId(s(&self.config.group_id)));
        if v >= 3 {
            req = req.with_members(vec![
                MemberIdentity::default().with_member_id(s(&self.member_id)),
            ]);
        } else {
            req = req.with_member_id(s(&self.member_id));
        }
        if let Err(e) = conn
            .send::<_, LeaveGroupResponse>(ApiKey::LeaveGroup, v, &req)
            .await
        {
            tracing::debug!(error = %e, "leave group failed; the session will expire instead");
        }
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

/// Heartbeats until the coordinator says something other than "fine"; returns what it said.
async fn heartbeat_until_told(
    conn: &Connection,
    group: String,
    member: String,
    generation: i32,
    every: Duration,
) -> Heard {
    let Ok(v) = conn.version(ApiKey::Heartbeat) else {
        return Heard::LostCoordinator;
    };
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s(&group)))
        .with_generation_id(generation)
        .with_member_id(s(&member));
    loop {
        tokio::time::sleep(every).await;
        let resp: HeartbeatResponse = match conn.send(ApiKey::Heartbeat, v, &req).await {
            Ok(r) => r,
            Err(_) => return Heard::LostCoordinator,
        };
        match ResponseError::try_from_code(resp.error_code) {
            None => {}
            Some(ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration) => {
                return Heard::Rejoin;
            }
            Some(ResponseError::UnknownMemberId) => return Heard::ForgetMember,
            Some(_) => return Heard::LostCoordinator,
        }
    }
}

/// Connects to group `group_id`'s coordinator; its requests may take `extra_timeout_ms` more
/// than the cluster's (a join waits out the rebalance).
async fn find_coordinator(
    cluster: &Cluster,
    group_id: &str,
    extra_timeout_ms: u64,
) -> Result<Connection, ClientError> {
    let any = cluster.any().await?;
    let v = any.version(ApiKey::FindCoordinator)?;
    let mut req = FindCoordinatorRequest::default();
    if v >= 4 {
        req = req.with_coordinator_keys(vec![s(group_id)]);
    } else {
        req = req.with_key(s(group_id));
    }
    let resp: FindCoordinatorResponse = any.send(ApiKey::FindCoordinator, v, &req).await?;
    let (error, host, port) = match resp.coordinators.first() {
        Some(c) if v >= 4 => (c.error_code, c.host.to_string(), c.port),
        None if v >= 4 => {
            return Err(ClientError::Protocol(
                "FindCoordinator answered no key".into(),
            ));
        }
        _ => (resp.error_code, resp.host.to_string(), resp.port),
    };
    if let Some(e) = ClientError::kafka(error, format!("find coordinator of {}", group_id)) {
        return Err(e);
    }
    let base = &cluster.config().conn;
    let conn = Connection::connect(
        cluster.config().net,
        &format!("{host}:{port}"),
        ConnConfig {
            request_timeout_ms: base.request_timeout_ms + extra_timeout_ms,
            ..base.clone()
        },
    )
    .await?;
    Ok(conn)
}

/// Commits `offsets` for group `group_id` as a committer outside any generation (the group
/// must have no members), as a reader that assigns itself its partitions does.
pub async fn commit_offsets(
    cluster: &Cluster,
    group_id: &str,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<(), ClientError> {
    let conn = find_coordinator(cluster, group_id, 0).await?;
    send_commit(&conn, group_id, (-1, ""), offsets).await
}

/// Commits `offsets` for group `group_id` at its coordinator `conn`, as the member
/// (generation, member id) given; (-1, "") commits as a reader outside any generation.
async fn send_commit(
    conn: &Connection,
    group_id: &str,
    (generation, member_id): (i32, &str),
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<(), ClientError> {
    let v = conn.version(ApiKey::OffsetCommit)?;
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((topic, partition), offset) in offsets {
        topics.entry(topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(s(""))),
        );
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group_id)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member_id))
        .with_retention_time_ms(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp: OffsetCommitResponse = conn.send(ApiKey::OffsetCommit, v, &req).await?;
    for t in &resp.topics {
        for p in &t.partitions {
            if let Some(e) = ClientError::kafka(
                p.error_code,
                format!("commit {}-{}", t.name.0.as_str(), p.partition_index),
            ) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Group `group_id`'s committed offsets of `partitions` (absent where none is committed),
/// for a reader that is not a member. With `stable`, offsets an open transaction holds are
/// refused with UnstableOffsetCommit, a retriable error, until it ends.
pub async fn committed_offsets(
    cluster: &Cluster,
    group_id: &str,
    partitions: &[TopicPartition],
    stable: bool,
) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
    let conn = find_coordinator(cluster, group_id, 0).await?;
    fetch_offsets(&conn, group_id, partitions, stable).await
}

/// Group `group_id`'s committed offsets of `partitions`, asked of its coordinator `conn`;
/// `stable` waits out offsets an open transaction holds (the broker answers
/// UnstableOffsetCommit until it ends).
async fn fetch_offsets(
    conn: &Connection,
    group_id: &str,
    partitions: &[TopicPartition],
    stable: bool,
) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
    let v = conn.version(ApiKey::OffsetFetch)?;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    let group = GroupId(s(group_id));
    let require_stable = v >= 7 && stable;
    let req = if v >= 8 {
        let topics = by_topic
            .iter()
            .map(|(t, ps)| {
                OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s(t)))
                    .with_partition_indexes(ps.clone())
            })
            .collect();
        OffsetFetchRequest::default()
            .with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(group)
                    .with_topics(Some(topics)),
            ])
            .with_require_stable(require_stable)
    } else {
        let topics = by_topic
            .iter()
            .map(|(t, ps)| {
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partition_indexes(ps.clone())
            })
            .collect();
        OffsetFetchRequest::default()
            .with_group_id(group)
            .with_topics(Some(topics))
            .with_require_stable(require_stable)
    };
    let resp: OffsetFetchResponse = conn.send(ApiKey::OffsetFetch, v, &req).await?;
    // The layouts before and from v8 are distinct types of one shape.
    macro_rules! flatten {
        ($topics:expr, $into:expr) => {
            for t in $topics {
                for p in &t.partitions {
                    let row = (
                        t.name.0.to_string(),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    );
                    $into.push(row);
                }
            }
        };
    }
    let mut found: Vec<(String, i32, i64, i16)> = Vec::new();
    if v >= 8 {
        for g in &resp.groups {
            if let Some(e) = ClientError::kafka(g.error_code, "offset fetch") {
                return Err(e);
            }
            flatten!(&g.topics, found);
        }
    } else {
        if let Some(e) = ClientError::kafka(resp.error_code, "offset fetch") {
            return Err(e);
        }
        flatten!(&resp.topics, found);
    }
    let mut out = BTreeMap::new();
    for (topic, partition, offset, error) in found {
        if let Some(e) = ClientError::kafka(error, format!("offset fetch {topic}-{partition}")) {
            return Err(e);
        }
        if offset >= 0 {
            out.insert((topic, partition), offset);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(members: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        members
            .iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    fn counts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
        topics.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn tps(list: &[(&str, i32)]) -> Vec<TopicPartition> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    /// Every subscribed partition is assigned exactly once, and only to a subscriber.
    fn assert_partition_of_topics(
        out: &BTreeMap<String, Vec<TopicPartition>>,
        s: &BTreeMap<String, Vec<String>>,
        c: &BTreeMap<String, i32>,
    ) {
        let mut seen: Vec<TopicPartition> = out.values().flatten().cloned().collect();
        seen.sort();
        let mut want: Vec<TopicPartition> = c
            .iter()
            .filter(|(t, _)| s.values().flatten().any(|x| x == *t))
            .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
            .collect();
        want.sort();
        assert_eq!(seen, want);
        for (m, parts) in out {
            assert!(
                parts.iter().all(|(t, _)| s[m].contains(t)),
                "{m} got a topic it did not subscribe to"
            );
        }
    }

    #[test]
    fn range_gives_the_first_members_one_more_per_topic() {
        let s = subs(&[("a", &["t", "u"]), ("b", &["t", "u"])]);
        let c = counts(&[("t", 3), ("u", 3)]);
        let out = Assignor::Range.assign(&s, &c);
        assert_eq!(out["a"], tps(&[("t", 0), ("t", 1), ("u", 0), ("u", 1)]));
        assert_eq!(out["b"], tps(&[("t", 2), ("u", 2)]));
        assert_partition_of_topics(&out, &s, &c);
    }

    #[test]
    fn round_robin_deals_all_partitions_in_turn_to_subscribers() {
        let s = subs(&[("a", &["t", "u"]), ("b", &["t", "u"])]);
        let c = counts(&[("t", 3), ("u", 3)]);
        let out = Assignor::RoundRobin.assign(&s, &c);
        assert_eq!(out["a"], tps(&[("t", 0), ("t", 2), ("u", 1)]));
        assert_eq!(out["b"], tps(&[("t", 1), ("u", 0), ("u", 2)]));
        assert_partition_of_topics(&out, &s, &c);

        let s = subs(&[("a", &["t"]), ("b", &["u"]), ("c", &["t", "u"])]);
        let c = counts(&[("t", 2), ("u", 2), ("v", 5)]);
        let out = Assignor::RoundRobin.assign(&s, &c);
        assert_eq!(out["a"], tps(&[("t", 0)]));
        assert_eq!(out["b"], tps(&[("u", 0)]));
        assert_eq!(out["c"], tps(&[("t", 1), ("u", 1)]));
        assert_partition_of_topics(&out, &s, &c);
    }

    #[test]
    fn more_members_than_partitions_leaves_some_empty() {
        let s = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let c = counts(&[("t", 2)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let out = assignor.assign(&s, &c);
            assert_eq!(out.len(), 3, "every member gets an entry");
            assert!(out["c"].is_empty());
            assert_partition_of_topics(&out, &s, &c);
            assert_eq!(Assignor::by_name(assignor.name()), Some(assignor));
        }
        assert_eq!(Assignor::by_name("sticky"), None);
    }

    #[test]
    fn consumer_protocol_messages_round_trip_with_their_version() {
        let sub = ConsumerProtocolSubscription::default().with_topics(vec![s("t"), s("u")]);
        let bytes = encode_versioned(&sub).unwrap();
        assert_eq!(&bytes[..2], &[0, 0]);
        let back: ConsumerProtocolSubscription = decode_versioned(&bytes).unwrap();
        assert_eq!(back.topics, sub.topics);
        assert!(decode_versioned::<ConsumerProtocolAssignment>(&Bytes::from_static(&[0])).is_err());
    }
}

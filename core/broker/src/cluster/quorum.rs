//! The metadata quorum: a Raft group (raft-rs) embedded in every broker, whose log is the
//! sequence of [`MetadataCommand`]s that builds the [`MetadataImage`].
//!
//! One task per broker drives the Raft node: it ticks, steps messages from peers, takes
//! proposals, and handles each `Ready` (persist entries and hard state, send messages, apply
//! committed commands). raft-rs is deterministic given its inputs once the election timeout
//! range is a single value; the jitter that breaks election ties comes from the tick interval,
//! drawn from the run's seeded RNG.
//!
//! A disk error restarts the node from what is on disk, as a crash would: nothing a peer was
//! told depends on a write that failed.

use super::metadata::{Applied, MetadataCommand, MetadataImage};
use super::protocol::Request;
use super::raft_store::RaftStore;
use super::rpc::Peer;
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{Config, RawNode, SnapshotStatus, StateRole};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use weir_seams::disk::Disk;
use weir_seams::rng::WeirRng;

/// Raft messages queued for one peer, at most; more are dropped (Raft resends).
const PEER_QUEUE_MAX: usize = 256;
/// Raft messages on the wire to one peer at once.
const RAFT_CALLS_IN_FLIGHT_MAX: usize = 32;
/// Raft messages received but not yet stepped, at most; more are dropped.
const INBOX_MAX: usize = 1024;
/// Proposals waiting for the driver, at most.
const PROPOSALS_MAX: usize = 1024;
/// Largest append message, in bytes.
const RAFT_MESSAGE_BYTES_MAX: u64 = 1024 * 1024;
/// Append messages in flight per follower.
const RAFT_INFLIGHT_MAX: usize = 256;

/// Quorum settings.
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    /// This node's Raft id.
    pub id: u64,
    /// Every voter's Raft id, this node's included.
    pub voters: Vec<u64>,
    /// Mean interval between ticks, in milliseconds; each tick is drawn from ±20% of it.
    pub tick_ms: u64,
    /// Ticks without a leader before a follower campaigns.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Log entries kept after the last snapshot before the log is compacted.
    pub snapshot_entries: usize,
    /// How long a proposal may wait to be committed, in milliseconds.
    pub proposal_timeout_ms: u64,
    /// Pause before reopening the node after a disk error, in milliseconds.
    pub restart_backoff_ms: u64,
}

impl QuorumConfig {
    /// Settings for node `id` of `voters`, with Weir's defaults.
    pub fn new(id: u64, voters: Vec<u64>) -> Self {
        Self {
            id,
            voters,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_entries: 1024,
            proposal_timeout_ms: 5_000,
            restart_backoff_ms: 500,
        }
    }
}

/// What the quorum looks like from this node.
#[derive(Clone, Debug)]
pub struct QuorumState {
    /// Raft id of the leader this node follows, if any.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// This node is the leader and has applied everything committed before its term: its image
    /// is complete, and it may act as the controller.
    pub active: bool,
    /// Index of the last applied entry.
    pub applied: u64,
    /// The image after `applied`.
    pub image: Arc<MetadataImage>,
}

/// Why a proposal did not commit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// This node is not the leader.
    #[error("not the metadata leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's Raft id, if known.
        leader: Option<u64>,
    },
    /// Not committed in time; it may still commit.
    #[error("proposal not committed within the timeout")]
    Timeout,
    /// The node restarted or stopped; the proposal may still commit.
    #[error("metadata quorum unavailable")]
    Unavailable,
}

#[derive(Serialize, Deserialize)]
struct Proposal {
    token: u64,
    cmd: MetadataCommand,
}

type Reply = oneshot::Sender<Result<Applied, QuorumError>>;

enum Report {
    Unreachable(u64),
    Snapshot(u64, SnapshotStatus),
}

/// A handle on this broker's quorum node.
#[derive(Clone)]
pub struct Quorum {
    id: u64,
    inbox: mpsc::Sender<Message>,
    proposals: mpsc::Sender<(MetadataCommand, Reply)>,
    state: watch::Receiver<QuorumState>,
}

fn codec() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl Quorum {
    /// Starts the node on `disk` (its own directory), talking to `peers` (Raft id to internal
    /// address). It runs until `stop` is set.
    pub fn start(
        config: QuorumConfig,
        disk: Disk,
        peers: BTreeMap<u64, Arc<Peer>>,
        rng: WeirRng,
        stop: watch::Receiver<bool>,
    ) -> Self {
        assert!(
            config.voters.contains(&config.id),
            "a node must be one of the voters"
        );
        assert!(config.election_ticks > config.heartbeat_ticks && config.heartbeat_ticks > 0);
        let (inbox, inbox_rx) = mpsc::channel(INBOX_MAX);
        let (proposals, proposals_rx) = mpsc::channel(PROPOSALS_MAX);
        let (reports_tx, reports_rx) = mpsc::channel(PEER_QUEUE_MAX);
        let state = watch::Sender::new(QuorumState {
            leader: None,
            term: 0,
            active: false,
            applied: 0,
            image: Arc::new(MetadataImage::default()),
        });
        let rx = state.subscribe();
        let mut outbox = BTreeMap::new();
        for (id, peer) in peers {
            if id == config.id {
                continue;
            }
            let (tx, q) = mpsc::channel(PEER_QUEUE_MAX);
            tokio::spawn(send_to_peer(peer, q, reports_tx.clone()));
            outbox.insert(id, tx);
        }
        let channels = Channels {
            inbox: inbox_rx,
            proposals: proposals_rx,
            reports: reports_rx,
            outbox,
            state,
            stop,
        };
        tokio::spawn(run(config.clone(), disk, channels, rng));
        Self {
            id: config.id,
            inbox,
            proposals,
            state: rx,
        }
    }

    /// This node's Raft id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Watches the quorum state.
    pub fn watch(&self) -> watch::Receiver<QuorumState> {
        self.state.clone()
    }

    /// The quorum state now.
    pub fn current(&self) -> QuorumState {
        self.state.borrow().clone()
    }

    /// Hands a Raft message from a peer to the node; dropped if it does not decode or the node
    /// is behind (Raft resends what matters).
    pub fn deliver(&self, bytes: &[u8]) {
        let mut m = Message::default();
        if m.merge_from_bytes(bytes).is_ok() && m.to == self.id {
            let _ = self.inbox.try_send(m);
        }
    }

    /// Proposes `cmd` and waits until it is committed and applied here.
    pub async fn propose(&self, cmd: MetadataCommand) -> Result<Applied, QuorumError> {
        let (tx, rx) = oneshot::channel();
        self.proposals
            .send((cmd, tx))
            .await
            .map_err(|_| QuorumError::Unavailable)?;
        rx.await.unwrap_or(Err(QuorumError::Unavailable))
    }
}

struct Channels {
    inbox: mpsc::Receiver<Message>,
    proposals: mpsc::Receiver<(MetadataCommand, Reply)>,
    reports: mpsc::Receiver<Report>,
    outbox: BTreeMap<u64, mpsc::Sender<Message>>,
    state: watch::Sender<QuorumState>,
    stop: watch::Receiver<bool>,
}

impl Channels {
    fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            if let Some(q) = self.outbox.get(&m.to) {
                let _ = q.try_send(m);
            }
        }
    }
}

async fn send_to_peer(
    peer: Arc<Peer>,
    mut queue: mpsc::Receiver<Message>,
    reports: mpsc::Sender<Report>,
) {
    // Each message is a call, not a one-way send: a connection that silently stops delivering
    // (a segment lost in a partition) then times out, is dropped and is dialled again, where a
    // one-way send would keep writing into it forever.
    let in_flight = Arc::new(Semaphore::new(RAFT_CALLS_IN_FLIGHT_MAX));
    while let Some(m) = queue.recv().await {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let (peer, reports) = (Arc::clone(&peer), reports.clone());
        tokio::spawn(async move {
            let (to, snapshot) = (m.to, m.get_msg_type() == MessageType::MsgSnapshot);
            let sent = match m.write_to_bytes() {
                Ok(bytes) => peer.call(&Request::Raft(bytes.into())).await.is_ok(),
                Err(_) => false,
            };
            drop(permit);
            if !sent {
                let _ = reports.try_send(Report::Unreachable(to));
            }
            if snapshot {
                let status = if sent {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                let _ = reports.try_send(Report::Snapshot(to, status));
            }
        });
    }
}

/// Runs the node, reopening it from disk after a disk error, until stopped.
async fn run(config: QuorumConfig, disk: Disk, mut ch: Channels, mut rng: WeirRng) {
    let mut incarnation = 0u64;
    loop {
        let outcome = match Node::open(&config, &disk, incarnation).await {
            Ok(mut node) => node.drive(&config, &mut ch, &mut rng).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "metadata quorum node failed; reopening from disk")
            }
        }
        ch.state.send_modify(|s| {
            s.leader = None;
            s.active = false;
        });
        incarnation += 1;
        tokio::select! {
            _ = ch.stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(config.restart_backoff_ms)) => {}
        }
    }
}

struct Node {
    raw: RawNode<super::raft_store::StoreHandle>,
    store: RaftStore,
    image: Arc<MetadataImage>,
    applied: u64,
    applied_term: u64,
    pending: BTreeMap<u64, (Instant, Reply)>,
    next_token: u64,
}

impl Node {
    async fn open(config: &QuorumConfig, disk: &Disk, incarnation: u64) -> io::Result<Self> {
        let store = RaftStore::open(disk.clone(), config.voters.clone()).await?;
        let snap = store.snapshot();
        let image: MetadataImage = if snap.get_data().is_empty() {
            MetadataImage::default()
        } else {
            bincode::serde::decode_from_slice(snap.get_data(), codec())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                .0
        };
        let applied = snap.get_metadata().index;
        let raft_config = Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            min_election_tick: config.election_ticks,
            max_election_tick: config.election_ticks + 1,
            applied,
            max_size_per_msg: RAFT_MESSAGE_BYTES_MAX,
            max_inflight_msgs: RAFT_INFLIGHT_MAX,
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw =
            RawNode::new(&raft_config, store.handle(), &logger).map_err(io::Error::other)?;
        if config.voters == [config.id] {
            raw.campaign().map_err(io::Error::other)?;
        }
        // Tokens are unique across nodes and restarts: node id, incarnation, counter.
        let next_token = (config.id << 56) | ((incarnation & 0xFF) << 48);
        Ok(Self {
            raw,
            store,
            image: Arc::new(image),
            applied,
            applied_term: snap.get_metadata().term,
            pending: BTreeMap::new(),
            next_token,
        })
    }

    fn leader(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|l| *l != 0)
    }

    /// Publishes the node's state. The image never goes back: a node reopened from disk starts
    /// again from its snapshot and re-applies the log as it learns the commit index, passing
    /// through images older than the one it had published. The broker acts on every image it is
    /// shown (roles, leader epochs, transactions), so until the node has applied as far as it had
    /// before, the image it had published stays; it is stale at worst, as it was while the node
    /// was down, never older.
    fn publish(&self, ch: &Channels) {
        let leader = self.leader();
        let term = self.raw.raft.term;
        ch.state.send_if_modified(|s| {
            let behind = self.applied < s.applied;
            let applied = self.applied.max(s.applied);
            let active =
                !behind && self.raw.raft.state == StateRole::Leader && self.applied_term == term;
            if s.leader == leader && s.term == term && s.active == active && s.applied == applied {
                return false;
            }
            let image = if behind {
                Arc::clone(&s.image)
            } else {
                Arc::clone(&self.image)
            };
            *s = QuorumState {
                leader,
                term,
                active,
                applied,
                image,
            };
            true
        });
    }

    async fn drive(
        &mut self,
        config: &QuorumConfig,
        ch: &mut Channels,
        rng: &mut WeirRng,
    ) -> io::Result<()> {
        let jitter = |rng: &mut WeirRng| {
            Duration::from_millis(config.tick_ms * rng.random_range(80..=120) / 100)
        };
        let mut next_tick = Instant::now() + jitter(rng);
        loop {
            self.publish(ch);
            tokio::select! {
                _ = ch.stop.wait_for(|s| *s) => return Ok(()),
                _ = tokio::time::sleep_until(next_tick) => {
                    self.raw.tick();
                    next_tick = Instant::now() + jitter(rng);
                    self.expire(Instant::now());
                }
                Some(m) = ch.inbox.recv() => {
                    let _ = self.raw.step(m);
                    // Step whatever else already arrived before paying for one Ready.
                    for _ in 0..INBOX_MAX {
                        let Ok(m) = ch.inbox.try_recv() else { break };
                        let _ = self.raw.step(m);
                    }
                }
                Some((cmd, reply)) = ch.proposals.recv() => self.propose(config, cmd, reply),
                Some(r) = ch.reports.recv() => match r {
                    Report::Unreachable(id) => self.raw.report_unreachable(id),
                    Report::Snapshot(id, status) => self.raw.report_snapshot(id, status),
                },
            }
            self.on_ready(config, ch).await?;
        }
    }

    fn propose(&mut self, config: &QuorumConfig, cmd: MetadataCommand, reply: Reply) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(QuorumError::NotLeader {
                leader: self.leader(),
            }));
            return;
        }
        self.next_token += 1;
        let token = self.next_token;
        let data = match bincode::serde::encode_to_vec(&Proposal { token, cmd }, codec()) {
            Ok(d) => d,
            Err(_) => {
                let _ = reply.send(Err(QuorumError::Unavailable));
                return;
            }
        };
        match self.raw.propose(Vec::new(), data) {
            Ok(()) => {
                let deadline = Instant::now() + Duration::from_millis(config.proposal_timeout_ms);
                self.pending.insert(token, (deadline, reply));
            }
            Err(_) => {
                let _ = reply.send(Err(QuorumError::NotLeader {
                    leader: self.leader(),
                }));
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (d, _))| *d <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            if let Some((_, reply)) = self.pending.remove(&t) {
                let _ = reply.send(Err(QuorumError::Timeout));
            }
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for e in entries {
            debug_assert!(e.index == self.applied + 1, "entries apply in order");
            self.applied = e.index;
            self.applied_term = e.term;
            if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                continue;
            }
            match bincode::serde::decode_from_slice::<Proposal, _>(&e.data, codec()) {
                Ok((p, _)) => {
                    let applied = Arc::make_mut(&mut self.image).apply(&p.cmd);
                    if let Some((_, reply)) = self.pending.remove(&p.token) {
                        let _ = reply.send(Ok(applied));
                    }
                }
                Err(err) => {
                    tracing::error!(index = e.index, error = %err, "committed metadata entry does not decode; skipped")
                }
            }
        }
    }

    async fn on_ready(&mut self, config: &QuorumConfig, ch: &Channels) -> io::Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        ch.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            let image: MetadataImage = bincode::serde::decode_from_slice(snap.get_data(), codec())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                .0;
            self.store.install_snapshot(snap.clone()).await?;
            self.image = Arc::new(image);
            self.applied = snap.get_metadata().index;
            self.applied_term = snap.get_metadata().term;
        }
        self.apply(ready.take_committed_entries());
        if !ready.entries().is_empty() {
            self.store.append(ready.entries()).await?;
        }
        if let Some(hs) = ready.hs() {
            self.store.set_hard_state(hs).await?;
        }
        ch.send(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.store.set_commit(commit);
        }
        ch.send(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.advance_apply();
        if self.store.entries_since_snapshot() >= config.snapshot_entries
            && self.applied > self.store.snapshot().get_metadata().index
        {
            let data =
                bincode::serde::encode_to_vec(&*self.image, codec()).map_err(io::Error::other)?;
            self.store.compact(self.applied, data).await?;
        }
        Ok(())
    }
}

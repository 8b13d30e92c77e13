//! The producer: records are batched per partition, sent by a background task, and retried
//! until their delivery timeout.
//!
//! - **Batching.** A batch is sent when it reaches `batch_bytes_max`, when it is `linger_ms`
//!   old, when another batch is queued behind it, or on [`Producer::flush`].
//! - **Ordering.** Each partition has at most one batch in flight, so retries cannot reorder
//!   records and an idempotent producer never has a sequence gap in flight.
//! - **Idempotence.** With `idempotent`, the producer takes a producer id and numbers every
//!   batch; a retried batch keeps its numbers, so the broker can drop it if it already has it.
//!   When a batch's outcome becomes unknown (its delivery timeout passed mid-flight), the
//!   producer waits until nothing is in flight and bumps its epoch before numbering new batches.
//! - **Memory.** Records waiting to be sent take at most `buffer_bytes_max`; `send` waits for
//!   room.

use super::cluster::Cluster;
use super::error::ClientError;
use super::partitioner::partition_for_key;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use weir_seams::clock::Clock;
use weir_wire::record::{Codec, Header, ProducerBatch, RecordToEncode, encode_batch};

mod txn;

/// Producer settings. Every limit is named with its unit.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// -1 (all in-sync replicas), 1 (leader) or 0 (no acknowledgement).
    pub acks: i16,
    /// How long a batch waits for more records, in milliseconds.
    pub linger_ms: u64,
    /// Largest batch, in bytes of record data.
    pub batch_bytes_max: usize,
    /// Compression of each batch.
    pub compression: Codec,
    /// Whether to deduplicate retries with a producer id (requires acks = -1).
    pub idempotent: bool,
    /// How long a record may wait for acknowledgement, retries included, in milliseconds.
    pub delivery_timeout_ms: u64,
    /// First retry backoff, in milliseconds; doubles per attempt.
    pub retry_backoff_ms: u64,
    /// Longest retry backoff, in milliseconds.
    pub retry_backoff_max_ms: u64,
    /// Memory for records not yet acknowledged, in bytes.
    pub buffer_bytes_max: usize,
    /// Largest single record, in bytes (key, value and headers).
    pub record_bytes_max: usize,
    /// How long the broker may wait for acks=all, in milliseconds.
    pub ack_timeout_ms: i32,
    /// Makes the producer transactional (it must also be idempotent); see
    /// [`Producer::init_transactions`].
    pub transactional_id: Option<String>,
    /// How long a transaction may stay open before the coordinator aborts it, in milliseconds.
    pub transaction_timeout_ms: i32,
    /// How long [`Producer::send`] waits for the topic's metadata while no broker answers, in
    /// milliseconds; after it the send fails.
    pub max_block_ms: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: -1,
            linger_ms: 5,
            batch_bytes_max: 16 * 1024,
            compression: Codec::None,
            idempotent: true,
            delivery_timeout_ms: 120_000,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1000,
            buffer_bytes_max: 32 * 1024 * 1024,
            record_bytes_max: 1024 * 1024,
            ack_timeout_ms: 30_000,
            transactional_id: None,
            transaction_timeout_ms: 60_000,
            max_block_ms: 60_000,
        }
    }
}

/// A record to send.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition; chosen from the key (or round-robin without one) when `None`.
    pub partition: Option<i32>,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
    /// Create time; the producer's clock when `None`.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record with a key and a value.
    pub fn new(
        topic: impl Into<String>,
        key: Option<impl Into<Bytes>>,
        value: impl Into<Bytes>,
    ) -> Self {
        Self {
            topic: topic.into(),
            key: key.map(Into::into),
            value: Some(value.into()),
            ..Default::default()
        }
    }
}

/// Where an acknowledged record landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset, or -1 for acks=0.
    pub offset: i64,
    /// Timestamp the record carries.
    pub timestamp: i64,
}

/// The eventual outcome of one [`Producer::send`].
pub struct Delivery {
    rx: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Delivery {
    /// Waits for the outcome.
    pub async fn wait(self) -> Result<RecordMetadata, ClientError> {
        self.rx.await.unwrap_or(Err(ClientError::Closed))
    }
}

type Reply = oneshot::Sender<Result<RecordMetadata, ClientError>>;

struct Sealed {
    bytes: Bytes,
    base_sequence: i32,
}

struct Batch {
    records: Vec<RecordToEncode>,
    replies: Vec<Reply>,
    bytes: usize,
    created: Instant,
    deadline: Instant,
    attempts: u32,
    /// Set when first sent: retries resend exactly these bytes.
    sealed: Option<Sealed>,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Batch>,
    in_flight: bool,
    next_sequence: i32,
    retry_at: Option<Instant>,
}

struct Accum {
    queues: BTreeMap<(String, i32), Queue>,
    buffered_bytes: usize,
    pending_records: usize,
    round_robin: BTreeMap<String, i32>,
    producer_id: i64,
    epoch: i16,
    bump_needed: bool,
    flushing: usize,
    txn: txn::TxnState,
}

struct Shared {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    clock: Clock,
    accum: Mutex<Accum>,
    wake: Notify,
    room: Notify,
    pending: watch::Sender<usize>,
    closed: watch::Sender<bool>,
}

/// A Kafka producer.
pub struct Producer {
    shared: Arc<Shared>,
}

const RECORD_OVERHEAD_BYTES: usize = 24;

fn record_size(r: &Record) -> usize {
    RECORD_OVERHEAD_BYTES
        + r.key.as_ref().map_or(0, Bytes::len)
        + r.value.as_ref().map_or(0, Bytes::len)
        + r.headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len) + 4)
            .sum::<usize>()
}

impl Producer {
    /// A producer on `cluster`. An idempotent producer takes its producer id first.
    pub async fn new(
        cluster: Arc<Cluster>,
        config: ProducerConfig,
        clock: Clock,
    ) -> Result<Self, ClientError> {
        if config.idempotent && config.acks != -1 {
            return Err(ClientError::Invalid(
                "an idempotent producer needs acks = -1".into(),
            ));
        }
        if !matches!(config.acks, -1..=1) {
            return Err(ClientError::Invalid(format!(
                "acks must be -1, 0 or 1, not {}",
                config.acks
            )));
        }
        let shared = Arc::new(Shared {
            cluster,
            config,
            clock,
            accum: Mutex::new(Accum {
                queues: BTreeMap::new(),
                buffered_bytes: 0,
                pending_records: 0,
                round_robin: BTreeMap::new(),
                producer_id: -1,
                epoch: -1,
                bump_needed: false,
                flushing: 0,
                txn: txn::TxnState::default(),
            }),
            wake: Notify::new(),
            room: Notify::new(),
            pending: watch::Sender::new(0),
            closed: watch::Sender::new(false),
        });
        if shared.config.transactional_id.is_some() && !shared.config.idempotent {
            return Err(ClientError::Invalid(
                "a transactional producer must be idempotent".into(),
            ));
        }
        if shared.config.idempotent && shared.config.transactional_id.is_none() {
            let (pid, epoch) = shared.init_producer_id(-1, -1).await?;
            let mut a = shared.lock();
            a.producer_id = pid;
            a.epoch = epoch;
        }
        tokio::spawn(Arc::clone(&shared).run());
        Ok(Self { shared })
    }

    /// The producer id and epoch, (-1, -1) when not idempotent.
    pub fn producer_id(&self) -> (i64, i16) {
        let a = self.shared.lock();
        (a.producer_id, a.epoch)
    }

    /// The topic's partition count. While the cluster cannot be reached (a leader that just
    /// crashed, a partition), waits for it up to `max_block_ms`, as a record would have waited
    /// in the batch being retried; a broker's answer (an unknown topic, say) is final.
    async fn partition_count(&self, topic: &str) -> Result<i32, ClientError> {
        let s = &self.shared;
        let deadline = Instant::now() + Duration::from_millis(s.config.max_block_ms);
        let mut attempt = 0;
        loop {
            match s.cluster.partitions(topic).await {
                Ok(p) => return Ok(p.len() as i32),
                Err(e @ (ClientError::Connection { .. } | ClientError::Timeout { .. }))
                    if Instant::now() < deadline =>
                {
                    attempt += 1;
                    tracing::debug!(topic, attempt, error = %e, "no metadata yet; waiting");
                    tokio::time::sleep(s.backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues a record. Waits while the buffer is full. The returned [`Delivery`] resolves once
    /// the record is acknowledged or has failed for good.
    pub async fn send(&self, record: Record) -> Result<Delivery, ClientError> {
        let s = &self.shared;
        if *s.closed.borrow() {
            return Err(ClientError::Closed);
        }
        let size = record_size(&record);
        if size > s.config.record_bytes_max || size > s.config.buffer_bytes_max {
            return Err(ClientError::Kafka {
                code: ResponseError::MessageTooLarge,
                context: format!(
                    "record of {size} bytes; the limit is {}",
                    s.config.record_bytes_max
                ),
            });
        }
        let partitions = self.partition_count(&record.topic).await?;
        if partitions == 0 {
            return Err(ClientError::Protocol(format!(
                "topic {} has no partitions",
                record.topic
            )));
        }
        loop {
            let room = s.room.notified();
            {
                let a = s.lock();
                if a.buffered_bytes + size <= s.config.buffer_bytes_max {
                    break;
                }
            }
            room.await;
        }
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if (0..partitions).contains(&p) => p,
            (Some(p), _) => {
                return Err(ClientError::Invalid(format!(
                    "{} has no partition {p}",
                    record.topic
                )));
            }
            (None, Some(k)) => partition_for_key(k, partitions),
            (None, None) => {
                let mut a = s.lock();
                let rr = a.round_robin.entry(record.topic.clone()).or_insert(0);
                *rr % partitions
            }
        };
        if s.config.transactional_id.is_some() {
            s.add_to_txn(&record.topic, partition).await?;
        }
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let mut a = s.lock();
        let encoded = RecordToEncode {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp: record.timestamp.unwrap_or_else(|| s.clock.now_ms()),
        };
        let queue = a
            .queues
            .entry((record.topic.clone(), partition))
            .or_default();
        let fits = queue
            .batches
            .back()
            .is_some_and(|b| b.sealed.is_none() && b.bytes + size <= s.config.batch_bytes_max);
        if !fits {
            queue.batches.push_back(Batch {
                records: Vec::new(),
                replies: Vec::new(),
                bytes: 0,
                created: now,
                deadline: now + Duration::from_millis(s.config.delivery_timeout_ms),
                attempts: 0,
                sealed: None,
            });
        }
        let batch = queue.batches.back_mut().expect("a batch was just ensured");
        batch.records.push(encoded);
        batch.replies.push(tx);
        batch.bytes += size;
        let full = batch.bytes >= s.config.batch_bytes_max || queue.batches.len() > 1;
        if record.partition.is_none() && full {
            // Null-keyed records move to the next partition once a batch fills (sticky).
            if let Some(rr) = a.round_robin.get_mut(&record.topic) {
                *rr = rr.wrapping_add(1);
            }
        }
        a.buffered_bytes += size;
        a.pending_records += 1;
        s.pending.send_replace(a.pending_records);
        drop(a);
        // A new batch needs its linger deadline scheduled; a full one can go now.
        if !fits || full || s.config.linger_ms == 0 {
            s.wake.notify_one();
        }
        Ok(Delivery { rx })
    }

    /// Sends everything queued now and waits until every record is acknowledged or failed.
    pub async fn flush(&self) {
        let s = &self.shared;
        s.lock().flushing += 1;
        s.wake.notify_one();
        let mut rx = s.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
        s.lock().flushing -= 1;
    }

    /// Flushes, then stops the background task.
    pub async fn close(self) {
        self.flush().await;
        self.shared.closed.send_replace(true);
        self.shared.wake.notify_one();
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.shared.closed.send_replace(true);
        self.shared.wake.notify_one();
    }
}

/// A batch taken off its queue to be sent.
struct Outgoing {
    topic: String,
    partition: i32,
    bytes: Bytes,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Accum> {
        self.accum.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn transactional_id(&self) -> Option<TransactionalId> {
        self.config
            .transactional_id
            .clone()
            .map(|t| TransactionalId(StrBytes::from_string(t)))
    }

    async fn init_producer_id(&self, pid: i64, epoch: i16) -> Result<(i64, i16), ClientError> {
        let conn = self.cluster.any().await?;
        let v = conn.version(ApiKey::InitProducerId)?;
        let mut req = InitProducerIdRequest::default()
            .with_transactional_id(self.transactional_id())
            .with_transaction_timeout_ms(self.config.transaction_timeout_ms);
        if v >= 3 {
            req = req
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch);
        }
        let resp: InitProducerIdResponse = conn.send(ApiKey::InitProducerId, v, &req).await?;
        if let Some(e) = ClientError::kafka(resp.error_code, "InitProducerId") {
            return Err(e);
        }
        Ok((resp.producer_id.0, resp.producer_epoch))
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let ms = self
            .config
            .retry_backoff_ms
            .saturating_mul(1u64 << attempts.min(16))
            .min(self.config.retry_backoff_max_ms);
        Duration::from_millis(ms.max(1))
    }

    fn settle(
        &self,
        a: &mut Accum,
        batch: Batch,
        topic: &str,
        partition: i32,
        result: Result<i64, ClientError>,
    ) {
        a.buffered_bytes -= batch.bytes;
        a.pending_records -= batch.replies.len();
        for (i, (reply, rec)) in batch
            .replies
            .into_iter()
            .zip(batch.records.iter())
            .enumerate()
        {
            let outcome = match &result {
                Ok(base) => Ok(RecordMetadata {
                    topic: topic.to_string(),
                    partition,
                    offset: if *base < 0 { -1 } else { base + i as i64 },
                    timestamp: rec.timestamp,
                }),
                Err(e) => {
                    a.txn.poison(&e.to_string());
                    Err(e.clone())
                }
            };
            let _ = reply.send(outcome);
        }
        self.pending.send_replace(a.pending_records);
        self.room.notify_waiters();
    }

    /// Fails batches past their delivery timeout that are not in flight.
    fn expire(&self, a: &mut Accum, now: Instant) {
        let keys: Vec<(String, i32)> = a.queues.keys().cloned().collect();
        for key in keys {
            loop {
                let q = a.queues.get_mut(&key).expect("key from the map");
                let expired = !q.in_flight && q.batches.front().is_some_and(|b| b.deadline <= now);
                if !expired {
                    break;
                }
                let batch = q.batches.pop_front().expect("checked");
                if batch.sealed.is_some() {
                    // It may have been written: its sequence numbers are spent or not, unknowably.
                    a.bump_needed = a.producer_id >= 0;
                    q.retry_at = None;
                }
                let err = ClientError::Timeout {
                    addr: format!("{}-{}", key.0, key.1),
                    ms: self.config.delivery_timeout_ms,
                };
                self.settle(a, batch, &key.0, key.1, Err(err));
            }
        }
    }

    /// Takes the batches that are ready to go and seals them. Returns them and the next time
    /// something will become ready.
    fn take_ready(&self, a: &mut Accum, now: Instant) -> (Vec<Outgoing>, Option<Instant>) {
        let linger = Duration::from_millis(self.config.linger_ms);
        let mut out = Vec::new();
        let mut next: Option<Instant> = None;
        let mut soonest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        let (pid, epoch, bump, flushing) = (a.producer_id, a.epoch, a.bump_needed, a.flushing > 0);
        for ((topic, partition), q) in a.queues.iter_mut() {
            let Some(front) = q.batches.front() else {
                continue;
            };
            if q.in_flight {
                // Its completion wakes the task.
                continue;
            }
            soonest(front.deadline);
            if let Some(t) = q.retry_at.filter(|t| *t > now) {
                soonest(t);
                continue;
            }
            let due = front.created + linger;
            let ready = front.sealed.is_some()
                || front.bytes >= self.config.batch_bytes_max
                || q.batches.len() > 1
                || flushing
                || due <= now;
            if !ready {
                soonest(due);
                continue;
            }
            if front.sealed.is_none() && bump {
                continue;
            }
            let front = q.batches.front_mut().expect("checked");
            if front.sealed.is_none() {
                let base_sequence = if pid >= 0 { q.next_sequence } else { -1 };
                let meta = ProducerBatch {
                    producer_id: pid,
                    producer_epoch: epoch,
                    base_sequence,
                    transactional: self.config.transactional_id.is_some(),
                    codec: self.config.compression,
                };
                match encode_batch(&front.records, &meta) {
                    Ok(bytes) => {
                        if pid >= 0 {
                            q.next_sequence = next_sequence(q.next_sequence, front.records.len());
                        }
                        front.sealed = Some(Sealed {
                            bytes,
                            base_sequence,
                        });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not encode a batch");
                        continue;
                    }
                }
            }
            q.in_flight = true;
            q.retry_at = None;
            let bytes = front.sealed.as_ref().expect("sealed above").bytes.clone();
            out.push(Outgoing {
                topic: topic.clone(),
                partition: *partition,
                bytes,
            });
        }
        (out, next)
    }

    /// The background task.
    async fn run(self: Arc<Self>) {
        let mut closed = self.closed.subscribe();
        loop {
            let now = Instant::now();
            let (ready, next, bump) = {
                let mut a = self.lock();
                self.expire(&mut a, now);
                let quiet = a
                    .queues
                    .values()
                    .all(|q| !q.in_flight && q.batches.front().is_none_or(|b| b.sealed.is_none()));
                let bump = a.bump_needed && quiet;
                let (ready, next) = if bump {
                    (Vec::new(), None)
                } else {
                    self.take_ready(&mut a, now)
                };
                (ready, next, bump)
            };
            if bump {
                if self.config.transactional_id.is_some() {
                    // Only the coordinator may bump a transactional epoch: the transaction
                    // must abort, and aborting re-initialises the producer.
                    let mut a = self.lock();
                    a.bump_needed = false;
                    a.txn.poison("a batch's outcome is unknown");
                } else {
                    self.bump_epoch().await;
                }
                continue;
            }
            if !ready.is_empty() {
                // Dispatching may have failed some batches and set their retry times, so the
                // next wake-up must be computed afresh.
                self.dispatch(ready).await;
                continue;
            }
            if *closed.borrow() && self.lock().pending_records == 0 {
                return;
            }
            // Never a zero sleep: that would spin without letting simulated time advance.
            let sleep = next
                .map_or(Duration::from_secs(3600), |t| {
                    t.saturating_duration_since(now)
                })
                .max(Duration::from_millis(1));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = closed.changed() => {}
            }
        }
    }

    async fn bump_epoch(&self) {
        let (pid, epoch) = {
            let a = self.lock();
            (a.producer_id, a.epoch)
        };
        match self.init_producer_id(pid, epoch).await {
            Ok((pid, epoch)) => {
                let mut a = self.lock();
                a.producer_id = pid;
                a.epoch = epoch;
                a.bump_needed = false;
                for q in a.queues.values_mut() {
                    q.next_sequence = 0;
                }
                tracing::debug!(pid, epoch, "producer epoch bumped");
            }
            Err(e) => {
                tracing::debug!(error = %e, "epoch bump failed; retrying");
                tokio::time::sleep(self.backoff(1)).await;
            }
        }
    }

    /// Groups ready batches by leader and sends one request per leader.
    async fn dispatch(self: &Arc<Self>, ready: Vec<Outgoing>) {
        let mut by_leader: BTreeMap<i32, Vec<Outgoing>> = BTreeMap::new();
        for o in ready {
            match self.cluster.leader(&o.topic, o.partition).await {
                Ok(info) => by_leader.entry(info.leader).or_default().push(o),
                Err(e) => self.complete(&o.topic, o.partition, Err(e)),
            }
        }
        for (leader, batches) in by_leader {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.send_to(leader, batches).await });
        }
    }

    async fn send_to(&self, leader: i32, batches: Vec<Outgoing>) {
        let result = self.produce(leader, &batches).await;
        match result {
            Err(e) => {
                for b in &batches {
                    self.complete(&b.topic, b.partition, Err(e.clone()));
                }
            }
            Ok(None) => {
                for b in &batches {
                    self.complete(&b.topic, b.partition, Ok(-1));
                }
            }
            Ok(Some(resp)) => {
                for b in &batches {
                    let r = resp
                        .responses
                        .iter()
                        .filter(|t| t.name.0.as_str() == b.topic)
                        .flat_map(|t| &t.partition_responses)
                        .find(|p| p.index == b.partition);
                    let outcome = match r {
                        None => Err(ClientError::Protocol(format!(
                            "no response for {}-{}",
                            b.topic, b.partition
                        ))),
                        Some(p) => match ClientError::kafka(
                            p.error_code,
                            format!("produce to {}-{}", b.topic, b.partition),
                        ) {
                            Some(e) => Err(e),
                            None => Ok(p.base_offset),
                        },
                    };
                    self.complete(&b.topic, b.partition, outcome);
                }
            }
        }
        self.wake.notify_one();
    }

    async fn produce(
        &self,
        leader: i32,
        batches: &[Outgoing],
    ) -> Result<Option<ProduceResponse>, ClientError> {
        let conn = self.cluster.node(leader).await?;
        let v = conn.version(ApiKey::Produce)?;
        let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
        for b in batches {
            topics.entry(&b.topic).or_default().push(
                PartitionProduceData::default()
                    .with_index(b.partition)
                    .with_records(Some(b.bytes.clone())),
            );
        }
        let topic_data = topics
            .into_iter()
            .map(|(t, parts)| {
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partition_data(parts)
            })
            .collect();
        let req = ProduceRequest::default()
            .with_transactional_id(self.transactional_id())
            .with_acks(self.config.acks)
            .with_timeout_ms(self.config.ack_timeout_ms)
            .with_topic_data(topic_data);
        if self.config.acks == 0 {
            conn.send_oneway(ApiKey::Produce, v, &req).await?;
            return Ok(None);
        }
        Ok(Some(conn.send(ApiKey::Produce, v, &req).await?))
    }

    /// Applies the outcome of the in-flight batch of a partition.
    fn complete(&self, topic: &str, partition: i32, outcome: Result<i64, ClientError>) {
        let now = Instant::now();
        let mut a = self.lock();
        let a = &mut *a;
        let key = (topic.to_string(), partition);
        let Some(q) = a.queues.get_mut(&key) else {
            return;
        };
        q.in_flight = false;
        let retriable = matches!(&outcome, Err(e) if e.is_retriable());
        // The leader moved, or may have: a broken connection or a timeout is how a crashed
        // or cut-off leader shows itself, so the next attempt asks for fresh metadata.
        if let Err(e) = &outcome
            && (matches!(
                e,
                ClientError::Connection { .. } | ClientError::Timeout { .. }
            ) || matches!(
                e.code(),
                Some(
                    ResponseError::NotLeaderOrFollower
                        | ResponseError::UnknownTopicOrPartition
                        | ResponseError::LeaderNotAvailable
                )
            ))
        {
            let cluster = Arc::clone(&self.cluster);
            let t = topic.to_string();
            tokio::spawn(async move { cluster.forget(&t).await });
        }
        let Some(front) = q.batches.front_mut() else {
            return;
        };
        if let Err(e) = &outcome {
            tracing::debug!(topic, partition, attempts = front.attempts, error = %e, "produce attempt failed");
        }
        if retriable && front.deadline > now {
            front.attempts += 1;
            q.retry_at = Some(now + self.backoff(front.attempts));
            return;
        }
        let batch = q.batches.pop_front().expect("front exists");
        if let (Err(e), Some(sealed)) = (&outcome, &batch.sealed)
            && sealed.base_sequence >= 0
        {
            if retriable {
                // Timed out while its fate was unknown.
                a.bump_needed = true;
            } else if e
                .code()
                .is_some_and(|c| c != ResponseError::OutOfOrderSequenceNumber)
            {
                // The broker refused it without writing it: its sequence numbers are unused.
                q.next_sequence = sealed.base_sequence;
                for later in q.batches.iter_mut() {
                    later.sealed = None;
                }
            } else {
                a.bump_needed = true;
            }
        }
        self.settle(a, batch, topic, partition, outcome);
    }
}

fn next_sequence(seq: i32, records: usize) -> i32 {
    let n = i32::try_from(records).expect("batch record count fits i32");
    let next = i64::from(seq) + i64::from(n);
    if next > i64::from(i32::MAX) {
        (next - i64::from(i32::MAX) - 1) as i32
    } else {
        next as i32
    }
}

//! The producing side: a result partition with one subpartition per consuming channel, served
//! to consumers over the network.

use super::config::ExchangeConfig;
use super::error::ExchangeError;
use super::event::Event;
use super::metrics::SenderMetrics;
use super::subpartition::{Append, Subpartition};
use super::wire::{RECORD_HEADER_BYTES, ToConsumer, ToProducer, WireError, read_frame_within};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use weir_seams::net::{Listener, Net, Stream};

/// Largest frame a consumer sends (hello or credit), in bytes.
const CONSUMER_FRAME_BYTES_MAX: usize = 16;

/// A producing task's output: records written to subpartition `i` reach the consumer that opens
/// subpartition `i`, in order, with at most `buffers_per_subpartition_max` buffers held for it.
pub struct ResultPartition {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    backpressured: Duration,
    /// The accept loop; dropping the partition stops it and every connection.
    _tasks: JoinSet<()>,
}

struct Shared {
    config: ExchangeConfig,
    slots: Vec<Slot>,
}

/// One subpartition and the signals around it.
struct Slot {
    state: Mutex<Subpartition>,
    /// Wakes the connection's writer: something was queued or credit arrived.
    wake_writer: Notify,
    /// Wakes the producer: a buffer was freed, or the connection failed.
    wake_producer: Notify,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, Subpartition> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResultPartition {
    /// Binds `addr` on `net` and serves `subpartitions` subpartitions to consumers that connect.
    ///
    /// Panics if `config` is not valid or `subpartitions` is zero.
    pub async fn bind(
        net: Net,
        addr: &str,
        subpartitions: usize,
        config: ExchangeConfig,
    ) -> Result<Self, ExchangeError> {
        config.assert_valid();
        assert!(
            subpartitions >= 1,
            "a result partition needs a subpartition"
        );
        let listener = net.bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let slots = (0..subpartitions)
            .map(|_| Slot {
                state: Mutex::new(Subpartition::new(&config)),
                wake_writer: Notify::new(),
                wake_producer: Notify::new(),
            })
            .collect();
        let shared = Arc::new(Shared { config, slots });
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self {
            shared,
            local_addr,
            backpressured: Duration::ZERO,
            _tasks: tasks,
        })
    }

    /// The address consumers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Number of subpartitions.
    pub fn subpartitions(&self) -> usize {
        self.shared.slots.len()
    }

    /// Writes `record` to `subpartition`, waiting while all its buffers are taken: that wait is
    /// the backpressure a slow consumer puts on this producer.
    ///
    /// Panics if `subpartition` is out of range.
    pub async fn send(&mut self, subpartition: usize, record: Bytes) -> Result<(), ExchangeError> {
        let max = self.shared.config.buffer_bytes_max;
        if RECORD_HEADER_BYTES + record.len() > max {
            return Err(ExchangeError::RecordTooLarge {
                record_bytes: record.len(),
                buffer_bytes_max: max,
            });
        }
        let slot = &self.shared.slots[subpartition];
        let mut blocked_since = None;
        loop {
            {
                let mut state = slot.state();
                check_usable(&state, subpartition)?;
                if state.append(&record, Instant::now()) == Append::Done {
                    break;
                }
            }
            blocked_since.get_or_insert_with(Instant::now);
            slot.wake_producer.notified().await;
        }
        slot.wake_writer.notify_one();
        if let Some(since) = blocked_since {
            self.backpressured += since.elapsed();
        }
        Ok(())
    }

    /// Sends every partly filled buffer now instead of at its timeout.
    pub fn flush(&self) {
        for slot in &self.shared.slots {
            slot.state().finish_filling();
            slot.wake_writer.notify_one();
        }
    }

    /// Sends `event` on every subpartition, behind the records already written.
    pub fn broadcast_event(&self, event: Event) -> Result<(), ExchangeError> {
        for (i, slot) in self.shared.slots.iter().enumerate() {
            let mut state = slot.state();
            check_usable(&state, i)?;
            state.push_event(event);
            drop(state);
            slot.wake_writer.notify_one();
        }
        Ok(())
    }

    /// Ends every subpartition and waits until each end-of-partition has been written, that is
    /// until every record has left this host. Waits for consumers that have not connected yet.
    pub async fn finish(&mut self) -> Result<(), ExchangeError> {
        self.broadcast_event(Event::EndOfPartition)?;
        for (i, slot) in self.shared.slots.iter().enumerate() {
            loop {
                {
                    let state = slot.state();
                    if state.end_sent() {
                        break;
                    }
                    if let Some(source) = &state.failed {
                        return Err(failure(i, source));
                    }
                }
                slot.wake_producer.notified().await;
            }
        }
        Ok(())
    }

    /// The partition's accounting now.
    pub fn metrics(&self) -> SenderMetrics {
        SenderMetrics {
            subpartitions: self
                .shared
                .slots
                .iter()
                .map(|s| s.state().metrics())
                .collect(),
            backpressured_ms: u64::try_from(self.backpressured.as_millis()).unwrap_or(u64::MAX),
            buffers_per_subpartition_max: self.shared.config.buffers_per_subpartition_max,
        }
    }
}

fn check_usable(state: &Subpartition, subpartition: usize) -> Result<(), ExchangeError> {
    if let Some(source) = &state.failed {
        return Err(failure(subpartition, source));
    }
    if state.ended() {
        return Err(ExchangeError::Finished(subpartition));
    }
    Ok(())
}

fn failure(subpartition: usize, source: &Arc<ExchangeError>) -> ExchangeError {
    ExchangeError::Subpartition {
        subpartition,
        source: Arc::clone(source),
    }
}

/// Accepts consumers until the partition is dropped.
async fn accept_loop(listener: Listener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                connections.spawn(serve(stream, peer, Arc::clone(&shared)));
            }
            Err(e) => tracing::warn!(error = %e, "exchange accept failed"),
        }
        while connections.try_join_next().is_some() {}
    }
}

/// Serves one consumer connection: reads its hello, then sends the subpartition it asked for.
async fn serve(mut stream: Stream, peer: SocketAddr, shared: Arc<Shared>) {
    let idle_ms = shared.config.idle_timeout_ms;
    let opened = async {
        let hello = read_frame_within(&mut stream, CONSUMER_FRAME_BYTES_MAX, idle_ms).await?;
        match ToProducer::decode(hello)? {
            ToProducer::Hello {
                subpartition,
                credit,
            } => Ok((subpartition as usize, credit)),
            ToProducer::Credit { .. } => Err(ExchangeError::Wire(WireError::Unexpected("credit"))),
        }
    };
    let (index, credit) = match opened.await {
        Ok(opened) => opened,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "exchange consumer sent no valid hello");
            return;
        }
    };
    let Some(slot) = shared.slots.get(index) else {
        tracing::warn!(%peer, index, "exchange consumer asked for a missing subpartition");
        return;
    };
    {
        let mut state = slot.state();
        // A second consumer would need the data the first already took: there is no replay.
        if state.connected {
            tracing::warn!(%peer, index, "exchange subpartition is already being read");
            return;
        }
        state.connected = true;
        state.grant_total(u64::from(credit));
    }
    let (reader, writer) = tokio::io::split(stream);
    let result = tokio::select! {
        biased;
        r = write_loop(slot, writer, &shared.config) => r,
        r = credit_loop(slot, reader, idle_ms) => r,
    };
    if let Err(e) = result {
        tracing::warn!(%peer, index, error = %e, "exchange subpartition failed");
        slot.state().failed = Some(Arc::new(e));
        slot.wake_producer.notify_one();
    }
}

/// Writes the subpartition's queue as credit allows, flushing partly filled buffers at their
/// timeout and sending a keepalive after `keepalive_interval_ms` of quiet, until the
/// end-of-partition is written.
async fn write_loop(
    slot: &Slot,
    mut writer: WriteHalf<Stream>,
    config: &ExchangeConfig,
) -> Result<(), ExchangeError> {
    let keepalive = Duration::from_millis(config.keepalive_interval_ms);
    // Numbers the frames, so that a consumer notices any the network lost.
    let mut seq = 0u32;
    let mut last_write = Instant::now();
    loop {
        let (message, flush_at) = {
            let mut state = slot.state();
            state.flush_if_due(Instant::now());
            (state.next_message(), state.flush_at())
        };
        let Some(message) = message else {
            let keepalive_at = last_write + keepalive;
            if Instant::now() >= keepalive_at {
                ToConsumer::Keepalive.write(seq, &mut writer).await?;
                seq = seq.wrapping_add(1);
                last_write = Instant::now();
                continue;
            }
            let wake_at = flush_at.map_or(keepalive_at, |at| at.min(keepalive_at));
            tokio::select! {
                biased;
                () = slot.wake_writer.notified() => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
            continue;
        };
        message.write(seq, &mut writer).await?;
        seq = seq.wrapping_add(1);
        last_write = Instant::now();
        let done = {
            let mut state = slot.state();
            state.sent();
            state.end_sent()
        };
        slot.wake_producer.notify_one();
        if done {
            return Ok(());
        }
    }
}

/// Reads the consumer's credit grants; returns only when the connection fails.
async fn credit_loop(
    slot: &Slot,
    mut reader: ReadHalf<Stream>,
    idle_ms: u64,
) -> Result<(), ExchangeError> {
    loop {
        let frame = read_frame_within(&mut reader, CONSUMER_FRAME_BYTES_MAX, idle_ms).await?;
        match ToProducer::decode(frame)? {
            ToProducer::Credit { total } => {
                slot.state().grant_total(total);
                slot.wake_writer.notify_one();
            }
            ToProducer::Hello { .. } => return Err(WireError::Unexpected("hello").into()),
        }
    }
}

//! The consuming side: an input gate with one input channel per upstream subpartition.

use super::config::ExchangeConfig;
use super::error::ExchangeError;
use super::event::Event;
use super::metrics::{ChannelMetrics, ReceiverMetrics};
use super::pool::{NoCredit, Origin, Pool};
use super::wire::{ToConsumer, ToProducer, WireError, read_frame_within, split_records};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use weir_seams::net::{Net, Stream};
use weir_wire::frame::write_frame;

/// Where an input channel reads from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelSource {
    /// The producer's result partition ("host:port").
    pub addr: String,
    /// The subpartition of it this channel reads.
    pub subpartition: u32,
}

/// What [`InputGate::next`] hands the consumer, with the channel it came on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// A serialized record.
    Record {
        /// The input channel.
        channel: usize,
        /// The record's bytes.
        record: Bytes,
    },
    /// An event, in order with the records.
    Event {
        /// The input channel.
        channel: usize,
        /// The event.
        event: Event,
    },
}

/// A consuming task's input: the records of several upstream subpartitions, each in order,
/// held in at most `channels * exclusive_buffers + floating_buffers` buffers.
pub struct InputGate {
    shared: Arc<Shared>,
    /// The buffer the consumer is reading; it is recycled when the consumer asks past its end.
    reading: Option<Reading>,
    channels_ended: usize,
    /// One task per channel; dropping the gate closes them all.
    _tasks: JoinSet<()>,
}

struct Reading {
    channel: usize,
    origin: Origin,
    bytes: usize,
    records: std::vec::IntoIter<Bytes>,
}

struct Shared {
    config: ExchangeConfig,
    state: Mutex<State>,
    /// Wakes the consumer: something arrived or a channel failed.
    arrived: Notify,
    /// Per channel, wakes the task that announces its credit.
    credit: Vec<Notify>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the credit writer of every channel with credit to announce.
    fn announce(&self, state: &State) {
        for channel in state.pool.channels_with_credit() {
            self.credit[channel].notify_one();
        }
    }
}

struct State {
    pool: Pool,
    queues: Vec<VecDeque<Arrived>>,
    /// Channels with something queued, in the order they became so: the consumer takes one
    /// item from the front channel and puts it back at the end, a round robin by buffer.
    ready: VecDeque<usize>,
    /// The first channel failure; the gate reports it from then on.
    failed: Option<(usize, Arc<ExchangeError>)>,
    /// Channels the consumer does not read for now (barrier alignment); their data waits in
    /// their buffers, so their credit stops and their producers feel the backpressure.
    blocked: Vec<bool>,
    received: Vec<ChannelMetrics>,
}

enum Arrived {
    Buffer {
        origin: Origin,
        bytes: usize,
        records: Vec<Bytes>,
    },
    Event(Event),
}

impl State {
    fn push(&mut self, channel: usize, item: Arrived) {
        let queue = &mut self.queues[channel];
        if queue.is_empty() {
            self.ready.push_back(channel);
        }
        queue.push_back(item);
    }
}

impl InputGate {
    /// Opens one channel per source, retrying each connection up to `connect_attempts_max`
    /// times, and announces each channel's exclusive buffers as its initial credit.
    ///
    /// Panics if `config` is not valid or there are no sources.
    pub async fn connect(
        net: Net,
        sources: &[ChannelSource],
        config: ExchangeConfig,
    ) -> Result<Self, ExchangeError> {
        config.assert_valid();
        assert!(!sources.is_empty(), "an input gate needs a channel");
        let n = sources.len();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pool: Pool::new(n, config.exclusive_buffers, config.floating_buffers),
                queues: (0..n).map(|_| VecDeque::new()).collect(),
                ready: VecDeque::new(),
                failed: None,
                blocked: vec![false; n],
                received: vec![ChannelMetrics::default(); n],
            }),
            arrived: Notify::new(),
            credit: (0..n).map(|_| Notify::new()).collect(),
            config,
        });
        let mut tasks = JoinSet::new();
        for (channel, source) in sources.iter().enumerate() {
            let mut stream = connect_with_retry(net, &source.addr, &shared.config).await?;
            let hello = ToProducer::Hello {
                subpartition: source.subpartition,
                credit: u32::try_from(shared.config.exclusive_buffers).unwrap_or(u32::MAX),
            };
            write_frame(&mut stream, &hello.encode()).await?;
            tasks.spawn(run_channel(Arc::clone(&shared), channel, stream));
        }
        Ok(Self {
            shared,
            reading: None,
            channels_ended: 0,
            _tasks: tasks,
        })
    }

    /// The next record or event, waiting for one; `None` once every channel has delivered its
    /// end-of-partition. After a channel fails, every call returns that failure.
    ///
    /// A buffer counts as processed, and its credit returns, on the call after its last record.
    /// Records share their buffer's memory, so a consumer that keeps them longer holds memory
    /// the accounting no longer sees; copy what must outlive the call.
    pub async fn next(&mut self) -> Result<Option<Delivery>, ExchangeError> {
        loop {
            if let Some(reading) = &mut self.reading
                && let Some(record) = reading.records.next()
            {
                return Ok(Some(Delivery::Record {
                    channel: reading.channel,
                    record,
                }));
            }
            {
                let mut state = self.shared.state();
                if let Some(done) = self.reading.take() {
                    state.pool.recycle(done.channel, done.origin, done.bytes);
                    self.shared.announce(&state);
                }
                if let Some((channel, source)) = &state.failed {
                    return Err(ExchangeError::Channel {
                        channel: *channel,
                        source: Arc::clone(source),
                    });
                }
                if self.channels_ended == state.queues.len() {
                    return Ok(None);
                }
                let unblocked = state.ready.iter().position(|c| !state.blocked[*c]);
                if let Some(channel) = unblocked.and_then(|i| state.ready.remove(i)) {
                    let queue = &mut state.queues[channel];
                    let item = queue.pop_front();
                    if !queue.is_empty() {
                        state.ready.push_back(channel);
                    }
                    match item {
                        Some(Arrived::Buffer {
                            origin,
                            bytes,
                            records,
                        }) => {
                            self.reading = Some(Reading {
                                channel,
                                origin,
                                bytes,
                                records: records.into_iter(),
                            });
                        }
                        Some(Arrived::Event(event)) => {
                            if event == Event::EndOfPartition {
                                self.channels_ended += 1;
                            }
                            return Ok(Some(Delivery::Event { channel, event }));
                        }
                        None => debug_assert!(false, "a ready channel had nothing queued"),
                    }
                    continue;
                }
            }
            self.shared.arrived.notified().await;
        }
    }

    /// Stops handing out `channel`'s records and events until [`InputGate::unblock_all`]: the
    /// aligned barrier's wait. Its data stays in its buffers, bounded by its credit.
    pub fn block(&mut self, channel: usize) {
        let mut state = self.shared.state();
        assert!(channel < state.blocked.len(), "no channel {channel}");
        state.blocked[channel] = true;
    }

    /// Reads every channel again.
    pub fn unblock_all(&mut self) {
        self.shared.state().blocked.fill(false);
    }

    /// The number of input channels.
    pub fn channels(&self) -> usize {
        self.shared.credit.len()
    }

    /// The gate's accounting now.
    pub fn metrics(&self) -> ReceiverMetrics {
        let state = self.shared.state();
        let mut metrics = ReceiverMetrics {
            channels: state.received.clone(),
            ..ReceiverMetrics::default()
        };
        state.pool.fill_metrics(&mut metrics);
        for (channel, m) in metrics.channels.iter_mut().enumerate() {
            state.pool.fill_channel_metrics(channel, m);
        }
        metrics
    }
}

async fn connect_with_retry(
    net: Net,
    addr: &str,
    config: &ExchangeConfig,
) -> Result<Stream, ExchangeError> {
    let mut attempt = 1;
    loop {
        match net.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) if attempt >= config.connect_attempts_max => return Err(e.into()),
            Err(e) => {
                tracing::debug!(addr, attempt, error = %e, "exchange connect failed, retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(config.connect_backoff_ms)).await;
            }
        }
    }
}

/// Runs one channel until its end-of-partition arrives or it fails.
async fn run_channel(shared: Arc<Shared>, channel: usize, stream: Stream) {
    let (reader, writer) = tokio::io::split(stream);
    let read = read_loop(&shared, channel, reader);
    tokio::pin!(read);
    let result = tokio::select! {
        biased;
        r = &mut read => r,
        // A producer that has sent its end-of-partition closes the connection, and a credit
        // announced meanwhile fails to go out: what decides is whether the end arrives.
        Err(e) = credit_loop(&shared, channel, writer) => match read.await {
            Ok(()) => Ok(()),
            Err(_) => Err(e),
        },
    };
    if let Err(e) = result {
        tracing::warn!(channel, error = %e, "exchange input channel failed");
        shared
            .state()
            .failed
            .get_or_insert_with(|| (channel, Arc::new(e)));
        shared.arrived.notify_one();
    }
}

/// Reads the producer's buffers and events into the channel's queue.
async fn read_loop(
    shared: &Shared,
    channel: usize,
    mut reader: ReadHalf<Stream>,
) -> Result<(), ExchangeError> {
    let config = &shared.config;
    let mut expected = 0u32;
    loop {
        let frame =
            read_frame_within(&mut reader, config.frame_bytes_max, config.idle_timeout_ms).await?;
        let (seq, message) = ToConsumer::decode(frame)?;
        if seq != expected {
            return Err(WireError::Gap { expected, got: seq }.into());
        }
        expected = expected.wrapping_add(1);
        let end = match message {
            ToConsumer::Keepalive => continue,
            ToConsumer::Buffer { backlog, records } => {
                let bytes = records.len();
                let records = split_records(records)?;
                let mut state = shared.state();
                let origin = state
                    .pool
                    .on_buffer(channel, bytes, backlog as usize)
                    .map_err(|NoCredit| ExchangeError::NoCredit { channel })?;
                let received = &mut state.received[channel];
                received.buffers_received += 1;
                received.records_received += records.len() as u64;
                received.bytes_received += bytes as u64;
                state.push(
                    channel,
                    Arrived::Buffer {
                        origin,
                        bytes,
                        records,
                    },
                );
                shared.announce(&state);
                false
            }
            ToConsumer::Event(event) => {
                let mut state = shared.state();
                state.received[channel].events_received += 1;
                let end = event == Event::EndOfPartition;
                if end {
                    state.pool.on_end(channel);
                    shared.announce(&state);
                }
                state.push(channel, Arrived::Event(event));
                end
            }
        };
        shared.arrived.notify_one();
        if end {
            return Ok(());
        }
    }
}

/// Announces the channel's credit to its producer whenever buffers free up, and again every
/// `keepalive_interval_ms` otherwise: grants are running totals, so a repeat is harmless, makes
/// good a grant the network lost, and tells the producer this end is alive.
async fn credit_loop(
    shared: &Shared,
    channel: usize,
    mut writer: WriteHalf<Stream>,
) -> Result<(), ExchangeError> {
    let mut total = shared.config.exclusive_buffers as u64;
    loop {
        let repeat = tokio::time::sleep(Duration::from_millis(shared.config.keepalive_interval_ms));
        tokio::select! {
            () = shared.credit[channel].notified() => {}
            () = repeat => {}
        }
        total += u64::from(shared.state().pool.take_credit(channel));
        write_frame(&mut writer, &ToProducer::Credit { total }.encode()).await?;
    }
}

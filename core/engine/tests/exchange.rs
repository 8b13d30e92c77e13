//! The credit-based exchange between a producer host and a consumer host in the simulator:
//! ordered and lossless delivery, bounded buffers under backpressure, the buffer timeout,
//! floating buffers following the backlog, determinism, and malformed input. Times are
//! simulated, so the bounds asserted on them are exact, not timing guesses.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rand::Rng;
use std::cell::RefCell;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use weir_engine::runtime::exchange::{
    ChannelSource, Delivery, Event, ExchangeConfig, ExchangeError, InputGate, ReceiverMetrics,
    ResultPartition, SenderMetrics, WireError,
};
use weir_seams::net::Net;
use weir_seams::rng;
use weir_wire::frame::{FrameError, read_frame};

const PORT: u16 = 7100;
/// Bytes at the front of every test record: channel, sequence number, simulated send time.
const RECORD_HEAD_BYTES: usize = 4 + 8 + 8;
/// Upper bound on one network hop, in simulated milliseconds.
const LATENCY_MS_MAX: u64 = 3;

/// One run of a producer feeding a consumer.
#[derive(Clone)]
struct Scenario {
    seed: u64,
    config: ExchangeConfig,
    /// Records the producer sends on each subpartition.
    records: Vec<u64>,
    /// Record size (head included); in random mode, the largest size.
    record_bytes: usize,
    /// Simulated milliseconds the producer waits between records; in random mode, the longest.
    producer_gap_ms: u64,
    /// Simulated milliseconds the consumer spends on each record.
    consumer_ms_per_record: u64,
    /// Draw sizes and gaps from the seed instead of using them as given.
    random: bool,
}

/// What one run saw.
#[derive(Debug, Default, Clone, PartialEq)]
struct Observed {
    sender: SenderMetrics,
    receiver: ReceiverMetrics,
    /// Hash of every delivery with its simulated time.
    fingerprint: u64,
    /// Shortest and longest time from `send` to delivery, in simulated milliseconds.
    delay_ms: (u64, u64),
    /// The most buffers one subpartition held, over every sample.
    sender_queue_peak: usize,
    /// The most buffers the gate had in use, over every sample.
    receiver_in_use_peak: usize,
}

impl Scenario {
    fn new(seed: u64, config: ExchangeConfig, records: Vec<u64>) -> Self {
        Self {
            seed,
            config,
            records,
            record_bytes: 100,
            producer_gap_ms: 0,
            consumer_ms_per_record: 0,
            random: false,
        }
    }

    fn run(self) -> Observed {
        let mut sim = turmoil::Builder::new()
            .rng_seed(self.seed)
            .simulation_duration(Duration::from_secs(600))
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(Duration::from_millis(LATENCY_MS_MAX))
            .build();
        let observed = Rc::new(RefCell::new(Observed::default()));
        let (s, out) = (self.clone(), Rc::clone(&observed));
        sim.client("producer", async move {
            let mut partition = ResultPartition::bind(
                Net::Sim,
                &format!("0.0.0.0:{PORT}"),
                s.records.len(),
                s.config.clone(),
            )
            .await?;
            let mut rng = rng::derive(s.seed, "producer");
            let mut peak = 0;
            let longest = s.records.iter().copied().max().unwrap_or(0);
            for seq in 0..longest {
                for (channel, &count) in s.records.iter().enumerate() {
                    if seq >= count {
                        continue;
                    }
                    let (len, gap) = if s.random {
                        (
                            rng.random_range(RECORD_HEAD_BYTES..=s.record_bytes),
                            rng.random_range(0..=s.producer_gap_ms),
                        )
                    } else {
                        (s.record_bytes, s.producer_gap_ms)
                    };
                    partition.send(channel, record(channel, seq, len)).await?;
                    peak = peak.max(check_sender(&partition.metrics()));
                    if gap > 0 {
                        tokio::time::sleep(Duration::from_millis(gap)).await;
                    }
                }
            }
            partition.finish().await?;
            let mut o = out.borrow_mut();
            o.sender = partition.metrics();
            o.sender_queue_peak = peak;
            Ok(())
        });
        let (s, out) = (self, Rc::clone(&observed));
        sim.client("consumer", async move {
            let mut gate =
                InputGate::connect(Net::Sim, &sources(s.records.len()), s.config).await?;
            let mut next_seq = vec![0; s.records.len()];
            let mut ended = vec![false; s.records.len()];
            let mut hasher = DefaultHasher::new();
            let (mut delay_min, mut delay_max, mut peak) = (u64::MAX, 0, 0);
            while let Some(delivery) = gate.next().await? {
                peak = peak.max(check_receiver(&gate.metrics()));
                (now_ms(), &delivery).hash(&mut hasher);
                match delivery {
                    Delivery::Record { channel, record } => {
                        let (from, seq, sent_ms) = parse(record);
                        assert_eq!(from, channel, "record came on the wrong channel");
                        assert!(!ended[channel], "record after end-of-partition");
                        assert_eq!(seq, next_seq[channel], "lost, duplicated or reordered");
                        next_seq[channel] += 1;
                        delay_min = delay_min.min(now_ms() - sent_ms);
                        delay_max = delay_max.max(now_ms() - sent_ms);
                        if s.consumer_ms_per_record > 0 {
                            tokio::time::sleep(Duration::from_millis(s.consumer_ms_per_record))
                                .await;
                        }
                    }
                    Delivery::Event { channel, event } => {
                        assert_eq!(event, Event::EndOfPartition);
                        assert!(!ended[channel], "two ends on channel {channel}");
                        assert_eq!(next_seq[channel], s.records[channel], "end came early");
                        ended[channel] = true;
                    }
                }
            }
            assert!(
                ended.iter().all(|&e| e),
                "the gate finished before every end"
            );
            let mut o = out.borrow_mut();
            o.receiver = gate.metrics();
            o.fingerprint = hasher.finish();
            o.delay_ms = (delay_min, delay_max);
            o.receiver_in_use_peak = peak;
            Ok(())
        });
        sim.run().expect("the simulation runs to completion");
        observed.take()
    }
}

/// Asserts the sender's bound; returns its fullest subpartition.
fn check_sender(m: &SenderMetrics) -> usize {
    let fullest = m
        .subpartitions
        .iter()
        .map(|s| s.buffers_queued)
        .max()
        .unwrap_or(0);
    assert!(fullest <= m.buffers_per_subpartition_max, "{m:?}");
    fullest
}

/// Asserts the receiver's bound; returns its buffers in use.
fn check_receiver(m: &ReceiverMetrics) -> usize {
    assert!(m.buffers_in_use <= m.buffers_in_use_max, "{m:?}");
    m.buffers_in_use
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

fn sources(channels: usize) -> Vec<ChannelSource> {
    (0..channels)
        .map(|i| ChannelSource {
            addr: format!("producer:{PORT}"),
            subpartition: i as u32,
        })
        .collect()
}

/// A record of `len` bytes naming its channel, sequence number and send time.
fn record(channel: usize, seq: u64, len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(len);
    b.put_u32(channel as u32);
    b.put_u64(seq);
    b.put_u64(now_ms());
    b.resize(len.max(RECORD_HEAD_BYTES), 0xab);
    b.freeze()
}

fn parse(mut record: Bytes) -> (usize, u64, u64) {
    (
        record.get_u32() as usize,
        record.get_u64(),
        record.get_u64(),
    )
}

fn total(records: &[u64]) -> u64 {
    records.iter().sum()
}

#[test]
fn records_arrive_in_order_exactly_once_with_an_end_per_channel() {
    let config = ExchangeConfig {
        buffer_bytes_max: 2048,
        buffer_timeout_ms: 10,
        ..ExchangeConfig::default()
    };
    let records = vec![400, 250, 1, 0];
    let mut scenario = Scenario::new(1, config, records.clone());
    scenario.record_bytes = 300;
    scenario.random = true;
    let o = scenario.run();
    assert_eq!(o.sender.records_sent(), total(&records));
    assert_eq!(o.receiver.records_received(), total(&records));
    assert_eq!(o.sender.buffers_sent(), o.receiver.buffers_received());
    assert!(o.receiver.channels.iter().all(|c| c.events_received == 1));
    assert_eq!(
        (o.receiver.buffers_in_use, o.receiver.bytes_in_use),
        (0, 0),
        "every buffer is returned once the gate is drained"
    );
}

#[test]
fn a_slow_consumer_blocks_the_producer_within_bounded_buffers() {
    let config = ExchangeConfig {
        buffer_bytes_max: 4096,
        buffers_per_subpartition_max: 4,
        exclusive_buffers: 2,
        floating_buffers: 3,
        ..ExchangeConfig::default()
    };
    let records = vec![200, 200];
    let mut scenario = Scenario::new(2, config.clone(), records.clone());
    scenario.record_bytes = 1000;
    scenario.consumer_ms_per_record = 2;
    let o = scenario.run();
    eprintln!(
        "backpressure: blocked {} ms, sender peak {} buffers, receiver peak {} buffers",
        o.sender.backpressured_ms, o.sender_queue_peak, o.receiver_in_use_peak
    );
    assert!(o.sender.backpressured_ms > 0, "the producer never waited");
    // The bounds were reached, not merely respected.
    assert_eq!(o.sender_queue_peak, config.buffers_per_subpartition_max);
    assert!(
        o.sender
            .subpartitions
            .iter()
            .all(|s| s.buffers_queued_peak == config.buffers_per_subpartition_max)
    );
    let bound = records.len() * config.exclusive_buffers + config.floating_buffers;
    assert_eq!(o.receiver.buffers_in_use_max, bound);
    assert_eq!(o.receiver.buffers_in_use_peak, bound);
    assert_eq!(o.receiver.records_received(), total(&records));
}

#[test]
fn a_trickle_of_small_records_is_flushed_by_the_buffer_timeout() {
    let config = ExchangeConfig {
        buffer_timeout_ms: 50,
        ..ExchangeConfig::default()
    };
    let mut scenario = Scenario::new(3, config.clone(), vec![20]);
    scenario.record_bytes = 24;
    scenario.producer_gap_ms = 200;
    let o = scenario.run();
    eprintln!("buffer timeout: delays {:?} ms", o.delay_ms);
    let (shortest, longest) = o.delay_ms;
    assert!(
        shortest >= config.buffer_timeout_ms,
        "a record went out before its buffer was full or timed out: {shortest} ms"
    );
    assert!(
        longest <= config.buffer_timeout_ms + 2 * LATENCY_MS_MAX,
        "a record waited {longest} ms, well past the {} ms timeout",
        config.buffer_timeout_ms
    );
    assert_eq!(o.sender.buffers_sent(), 20, "one timer flush per record");
}

#[test]
fn floating_buffers_go_to_the_channel_with_a_backlog() {
    let config = ExchangeConfig {
        buffer_bytes_max: 1024,
        buffers_per_subpartition_max: 16,
        exclusive_buffers: 2,
        floating_buffers: 6,
        ..ExchangeConfig::default()
    };
    let mut scenario = Scenario::new(4, config.clone(), vec![200, 0]);
    scenario.record_bytes = 500;
    // Slow enough that returned credit is used long before the next buffer is processed.
    scenario.consumer_ms_per_record = 5;
    let o = scenario.run();
    let (busy, idle) = (&o.receiver.channels[0], &o.receiver.channels[1]);
    eprintln!(
        "floating: busy channel peak {} buffers, idle channel peak {}",
        busy.buffers_in_use_peak, idle.buffers_in_use_peak
    );
    assert!(
        busy.buffers_in_use_peak > config.exclusive_buffers,
        "the busy channel never used a floating buffer: {busy:?}"
    );
    assert_eq!(
        busy.buffers_in_use_peak,
        config.exclusive_buffers + config.floating_buffers,
        "the whole pool followed the backlog"
    );
    assert_eq!(idle.buffers_in_use_peak, 0);
    assert_eq!(o.receiver.floating_free, config.floating_buffers);
}

#[test]
fn the_same_seed_replays_the_same_deliveries() {
    let scenario = |seed| {
        let config = ExchangeConfig {
            buffer_bytes_max: 1024,
            buffer_timeout_ms: 5,
            buffers_per_subpartition_max: 3,
            exclusive_buffers: 1,
            floating_buffers: 2,
            ..ExchangeConfig::default()
        };
        let mut s = Scenario::new(seed, config, vec![150, 100, 50]);
        s.record_bytes = 400;
        s.producer_gap_ms = 3;
        s.consumer_ms_per_record = 1;
        s.random = true;
        s
    };
    let first = scenario(5).run();
    assert_eq!(scenario(5).run(), first, "same seed, same run");
    assert_ne!(
        scenario(6).run().fingerprint,
        first.fingerprint,
        "the fingerprint sees the seed's effect"
    );
}

/// Serves `reply` to the gate's channel 0 from a fake producer, and returns what the gate says.
fn gate_error_for(reply: Vec<u8>) -> Option<ExchangeError> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(6)
        .tick_duration(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(LATENCY_MS_MAX))
        .build();
    sim.client("producer", async move {
        let listener = Net::Sim.bind(&format!("0.0.0.0:{PORT}")).await?;
        let (mut stream, _) = listener.accept().await?;
        read_frame(&mut stream, 64).await?;
        stream.write_all(&reply).await?;
        // Hold the connection open so the error comes from the bytes, not from a close.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    });
    let seen = Rc::new(RefCell::new(None));
    let out = Rc::clone(&seen);
    sim.client("consumer", async move {
        let config = ExchangeConfig {
            exclusive_buffers: 1,
            floating_buffers: 0,
            ..ExchangeConfig::default()
        };
        let mut gate = InputGate::connect(Net::Sim, &sources(1), config).await?;
        // Let everything the fake producer sent arrive before reading any of it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let first = gate.next().await;
        assert!(gate.next().await.is_err(), "a failed gate stays failed");
        *out.borrow_mut() = first.err();
        Ok(())
    });
    sim.run().expect("the simulation runs to completion");
    seen.take()
}

/// A frame around `body`.
fn frame(body: &[u8]) -> Vec<u8> {
    [&(body.len() as u32).to_be_bytes()[..], body].concat()
}

/// The error inside the gate's channel failure.
fn source(err: Option<ExchangeError>) -> Arc<ExchangeError> {
    match err {
        Some(ExchangeError::Channel { channel: 0, source }) => source,
        other => panic!("expected a failure on channel 0, got {other:?}"),
    }
}

#[test]
fn malformed_frames_are_typed_errors_on_the_receiver() {
    let max = ExchangeConfig::default().frame_bytes_max;
    let huge = gate_error_for(vec![0x7f, 0xff, 0xff, 0xff]);
    assert!(
        matches!(*source(huge), ExchangeError::Frame(FrameError::TooLarge { limit, .. }) if limit == max)
    );
    let negative = gate_error_for(vec![0xff; 4]);
    assert!(matches!(
        *source(negative),
        ExchangeError::Frame(FrameError::NegativeSize(_))
    ));
    let garbage = gate_error_for(frame(b"\x63garbage"));
    assert!(matches!(
        *source(garbage),
        ExchangeError::Wire(WireError::UnknownTag(0x63))
    ));
    let bad_event = gate_error_for(frame(&[4, 0, 0, 0, 0, 9]));
    assert!(matches!(
        *source(bad_event),
        ExchangeError::Wire(WireError::UnknownEvent(9))
    ));
    // A buffer whose one record claims 100 bytes and has 2.
    let overrun = gate_error_for(frame(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 1, 2]));
    assert!(matches!(
        *source(overrun),
        ExchangeError::Wire(WireError::RecordOverrun { claimed: 100, .. })
    ));
    // Two buffers where one credit was granted.
    let buffer = |seq: u8| frame(&[3, 0, 0, 0, seq, 0, 0, 0, 0, 0, 0, 0, 1, 7]);
    let greedy = gate_error_for([buffer(0), buffer(1)].concat());
    assert!(matches!(
        *source(greedy),
        ExchangeError::NoCredit { channel: 0 }
    ));
    // A frame the network lost shows as a gap in the numbering, not as missing records.
    let gap = gate_error_for(buffer(1));
    assert!(matches!(
        *source(gap),
        ExchangeError::Wire(WireError::Gap {
            expected: 0,
            got: 1
        })
    ));
}

/// A simulation with one-millisecond ticks and short latencies.
fn small_sim(seed: u64) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(LATENCY_MS_MAX))
        .build()
}

/// A partition with default settings on the test port.
async fn bind(subpartitions: usize) -> Result<ResultPartition, ExchangeError> {
    ResultPartition::bind(
        Net::Sim,
        &format!("0.0.0.0:{PORT}"),
        subpartitions,
        ExchangeConfig::default(),
    )
    .await
}

#[test]
fn bad_hellos_do_not_disturb_the_producer() {
    let mut sim = small_sim(7);
    sim.client("producer", async {
        let mut partition = bind(1).await?;
        for seq in 0..10 {
            partition.send(0, record(0, seq, 64)).await?;
        }
        partition.finish().await?;
        Ok(())
    });
    sim.client("rogue", async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let garbage = frame(b"\x63");
        let missing = frame(&[1, 0, 0, 0, 5, 0, 0, 0, 2]);
        for bytes in [vec![0x7f, 0xff, 0xff, 0xff], garbage, missing] {
            let mut stream = Net::Sim.connect(&format!("producer:{PORT}")).await?;
            stream.write_all(&bytes).await?;
        }
        Ok(())
    });
    sim.client("consumer", async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut gate = InputGate::connect(Net::Sim, &sources(1), ExchangeConfig::default()).await?;
        let mut records = 0;
        while let Some(delivery) = gate.next().await? {
            if let Delivery::Record { .. } = delivery {
                records += 1;
            }
        }
        assert_eq!(records, 10);
        Ok(())
    });
    sim.run().expect("the producer serves the real consumer");
}

#[test]
fn a_blocked_channel_holds_its_data_until_unblocked() {
    let mut sim = small_sim(3);
    sim.client("producer", async {
        let mut partition = bind(2).await?;
        partition.send(0, record(0, 0, 32)).await?;
        partition.broadcast_event(Event::Barrier { checkpoint_id: 1 })?;
        partition.send(0, record(0, 1, 32)).await?;
        partition.flush();
        // Channel 1's barrier comes late: channel 0 waits for it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        partition.send(1, record(1, 1, 32)).await?;
        partition.flush();
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    });
    sim.client("consumer", async {
        let mut gate = InputGate::connect(Net::Sim, &sources(2), ExchangeConfig::default()).await?;
        assert_eq!(gate.channels(), 2);
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let delivery = gate.next().await?.expect("no channel ends");
            match delivery {
                Delivery::Record { channel, record } => {
                    seen.push(format!("r{channel}.{}", parse(record).1));
                }
                Delivery::Event {
                    channel,
                    event: Event::Barrier { .. },
                } => {
                    seen.push(format!("b{channel}"));
                    if seen.iter().filter(|s| s.starts_with('b')).count() == 2 {
                        gate.unblock_all();
                    } else {
                        gate.block(channel);
                    }
                }
                Delivery::Event { .. } => {}
            }
        }
        // Channel 0's record after its barrier waited for channel 1's barrier.
        let at = |s: &str| seen.iter().position(|v| v == s).unwrap();
        assert!(at("r0.1") > at("b1"), "{seen:?}");
        assert!(at("r0.1") > at("b0"), "{seen:?}");
        Ok(())
    });
    sim.run().expect("the blocked channel resumes");
}

#[test]
fn a_connection_stalled_by_a_lost_segment_fails_within_the_idle_timeout() {
    let config = ExchangeConfig::default();
    let idle_ms = config.idle_timeout_ms;
    let mut sim = small_sim(8);
    let producer_error = Rc::new(RefCell::new(None));
    let out = Rc::clone(&producer_error);
    sim.client("producer", async move {
        let mut partition = bind(1).await?;
        partition.send(0, record(0, 0, 32)).await?;
        partition.flush();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The simulated network drops what is sent across a partition and delivers a
        // connection's segments in order only, so everything after the lost buffer waits
        // behind it for ever: the connection is stalled, not closed.
        turmoil::partition("producer", "consumer");
        partition.send(0, record(0, 1, 32)).await?;
        partition.flush();
        tokio::time::sleep(Duration::from_millis(100)).await;
        turmoil::repair("producer", "consumer");
        let mut seq = 2;
        let failed = loop {
            match partition.send(0, record(0, seq, 32)).await {
                Ok(()) => partition.flush(),
                Err(e) => break e,
            }
            seq += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        *out.borrow_mut() = Some((failed, now_ms()));
        Ok(())
    });
    let consumer_error = Rc::new(RefCell::new(None));
    let out = Rc::clone(&consumer_error);
    sim.client("consumer", async move {
        let mut gate = InputGate::connect(Net::Sim, &sources(1), config).await?;
        let mut records = 0;
        let failed = loop {
            match gate.next().await {
                Ok(Some(Delivery::Record { .. })) => records += 1,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(records, 1, "only the record before the partition arrives");
        *out.borrow_mut() = Some((failed, now_ms()));
        Ok(())
    });
    sim.run()
        .expect("both ends fail instead of waiting for ever");
    let (consumer, consumer_ms) = consumer_error.take().expect("the consumer failed");
    assert!(
        matches!(*source(Some(consumer)), ExchangeError::Silent { idle_ms: i } if i == idle_ms)
    );
    let (producer, producer_ms) = producer_error.take().expect("the producer failed");
    // The producer hears either its own silence or the consumer giving up on the connection.
    assert!(
        matches!(&producer, ExchangeError::Subpartition { .. }),
        "{producer:?}"
    );
    // Both notice within one idle timeout of the last frame that got through.
    for at in [consumer_ms, producer_ms] {
        assert!(
            at <= 100 + idle_ms + 2 * LATENCY_MS_MAX,
            "failed at {at} ms"
        );
    }
}

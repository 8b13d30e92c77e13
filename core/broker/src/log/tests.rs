use super::*;
use bytes::Bytes;
use weir_wire::record::{Codec, ProducerBatch, RecordToEncode, encode_batch};

fn clock() -> Clock {
    Clock::starting_at(1_700_000_000_000)
}

fn batch(tag: usize, n: usize, ts: i64) -> Vec<u8> {
    let records: Vec<_> = (0..n)
        .map(|i| RecordToEncode {
            key: None,
            value: Some(Bytes::from(format!("{tag}-{i}"))),
            headers: vec![],
            timestamp: ts + i as i64,
        })
        .collect();
    let meta = ProducerBatch::plain(Codec::None);
    encode_batch(&records, &meta).unwrap().to_vec()
}

fn small_segments() -> TopicConfig {
    TopicConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..TopicConfig::default()
    }
}

async fn open(dir: &std::path::Path, config: TopicConfig) -> (Log, RecoveryReport) {
    Log::open(Disk::real(dir), config, clock(), TailRecovery::Check)
        .await
        .unwrap()
}

fn values(bytes: &[u8]) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for item in BatchIter::new(bytes) {
        let (_, b) = item.unwrap();
        let (_, recs) = decode_batch_records(&Bytes::copy_from_slice(b), 1 << 20).unwrap();
        out.extend(recs.into_iter().map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            )
        }));
    }
    out
}

fn read_all(log: &Log) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let bytes = log.read(next, 4096, i64::MAX).unwrap();
        let vs = values(&bytes);
        let before = out.len();
        out.extend(vs.into_iter().filter(|(o, _)| *o >= next));
        next = out.last().map_or(next, |(o, _)| o + 1);
        assert!(out.len() > before, "read made progress");
    }
    out
}

#[tokio::test]
async fn appends_get_dense_offsets_and_roll_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_segments()).await;
    for i in 0..40 {
        let mut b = batch(i, 3, 1000 + i as i64 * 10);
        let h = log.append(&mut b).await.unwrap();
        assert_eq!(h.base_offset, i as i64 * 3);
    }
    assert_eq!(log.log_end_offset(), 120);
    assert!(
        log.segment_count() > 3,
        "small segment.bytes rolls segments"
    );
    let all = read_all(&log);
    assert_eq!(all.len(), 120);
    for (i, (o, v)) in all.iter().enumerate() {
        assert_eq!(*o, i as i64);
        assert_eq!(v, &format!("{}-{}", i / 3, i % 3));
    }
    // Reading from the middle of a batch returns the whole batch that holds the offset.
    let mid = values(&log.read(61, 1, i64::MAX).unwrap());
    assert_eq!(mid.first().unwrap().0, 60);
    // The limit (high watermark) hides batches that reach it.
    assert!(log.read(60, 4096, 62).unwrap().is_empty());
    assert!(matches!(
        log.read(121, 10, i64::MAX),
        Err(ReadError::OutOfRange { .. })
    ));
}

#[tokio::test]
async fn reopen_keeps_everything_and_rebuilds_a_garbled_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = open(dir.path(), small_segments()).await;
        for i in 0..30 {
            log.append(&mut batch(i, 2, 5000 + i as i64)).await.unwrap();
        }
        let (f, _) = log.flush_target().unwrap();
        f.sync().await.unwrap();
    }
    // Garble the index of the first (sealed) segment.
    std::fs::write(
        dir.path().join(format!("{:020}.index", 0)),
        b"garbage!garbage",
    )
    .unwrap();
    let (log, report) = open(dir.path(), small_segments()).await;
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(read_all(&log).len(), 60);
}

#[tokio::test]
async fn recovery_truncates_torn_and_corrupt_tails_but_keeps_whole_batches() {
    for damage in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut tail_start = 0;
        {
            let (mut log, _) = open(dir.path(), TopicConfig::default()).await;
            for i in 0..10 {
                if i == 9 {
                    tail_start = log.size_bytes();
                }
                log.append(&mut batch(i, 4, 100)).await.unwrap();
            }
        }
        let path = dir.path().join(format!("{:020}.log", 0));
        let mut bytes = std::fs::read(&path).unwrap();
        match damage {
            0 => bytes.truncate(tail_start as usize + 30), // torn mid-header
            1 => bytes[tail_start as usize + 70] ^= 0x5a,  // corrupt record byte: CRC mismatch
            _ => bytes.extend_from_slice(&[0xde; 200]),    // garbage after the last batch
        }
        std::fs::write(&path, &bytes).unwrap();
        let (log, report) = open(dir.path(), TopicConfig::default()).await;
        let expected_end = if damage == 2 { 40 } else { 36 };
        assert_eq!(log.log_end_offset(), expected_end, "damage {damage}");
        assert!(report.truncated_bytes > 0, "damage {damage}: {report:?}");
        assert_eq!(read_all(&log).len() as i64, expected_end);
    }
}

#[tokio::test]
async fn unsafe_skip_keeps_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = open(dir.path(), TopicConfig::default()).await;
        for i in 0..3 {
            log.append(&mut batch(i, 2, 100)).await.unwrap();
        }
    }
    let path = dir.path().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    bytes.extend_from_slice(&[0xab; 100]);
    std::fs::write(&path, &bytes).unwrap();
    let (mut log, report) = Log::open(
        Disk::real(dir.path()),
        TopicConfig::default(),
        clock(),
        TailRecovery::UnsafeSkip,
    )
    .await
    .unwrap();
    assert_eq!(report.truncated_bytes, 0);
    log.append(&mut batch(9, 1, 100)).await.unwrap();
    assert!(
        std::fs::read(&path).unwrap().len() > len + 100,
        "appended after the garbage"
    );
}

#[tokio::test]
async fn timestamp_lookup_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_segments()).await;
    for i in 0..50 {
        log.append(&mut batch(i, 2, 10_000 + i as i64 * 100))
            .await
            .unwrap();
    }
    assert_eq!(
        log.offset_for_timestamp(0, i64::MAX).unwrap(),
        Some((0, 10_000))
    );
    assert_eq!(
        log.offset_for_timestamp(10_001, i64::MAX).unwrap(),
        Some((1, 10_001))
    );
    assert_eq!(
        log.offset_for_timestamp(10_002, i64::MAX).unwrap(),
        Some((2, 10_100))
    );
    assert_eq!(
        log.offset_for_timestamp(14_901, i64::MAX).unwrap(),
        Some((99, 14_901))
    );
    assert_eq!(log.offset_for_timestamp(14_902, i64::MAX).unwrap(), None);
    assert_eq!(
        log.max_timestamp_record(i64::MAX).unwrap(),
        Some((99, 14_901))
    );
}

#[tokio::test]
async fn retention_deletes_old_segments_and_advances_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_segments();
    cfg.retention_bytes = 3000;
    let (mut log, _) = open(dir.path(), cfg).await;
    for i in 0..60 {
        log.append(&mut batch(i, 2, 100)).await.unwrap();
    }
    let before = log.segment_count();
    let deleted = log.enforce_retention(i64::MAX).await.unwrap();
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), before - deleted);
    assert!(log.size_bytes() <= 3000 + 1024);
    assert!(log.log_start_offset() > 0);
    assert!(matches!(
        log.read(0, 100, i64::MAX),
        Err(ReadError::OutOfRange { .. })
    ));
    let start = log.log_start_offset();
    assert_eq!(values(&log.read(start, 100, i64::MAX).unwrap())[0].0, start);

    // Time retention: everything sealed is older than retention.ms.
    let mut cfg = small_segments();
    cfg.retention_ms = 1000;
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), cfg).await;
    for i in 0..60 {
        log.append(&mut batch(i, 2, 100)).await.unwrap();
    }
    let n = log.segment_count();
    assert_eq!(log.enforce_retention(i64::MAX).await.unwrap(), n - 1);
    // Never past the limit.
    let (mut log2, _) = open(tempfile::tempdir().unwrap().path(), small_segments()).await;
    log2.append(&mut batch(0, 1, 1)).await.unwrap();
    assert_eq!(log2.enforce_retention(0).await.unwrap(), 0);
}

#[tokio::test]
async fn truncation_cuts_at_batch_boundaries_across_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_segments()).await;
    for tag in 0..30 {
        log.append(&mut batch(tag, 2, 1_000)).await.unwrap();
    }
    assert!(log.segment_count() >= 3, "{} segments", log.segment_count());
    assert_eq!(log.log_end_offset(), 60);
    // Offset 21 is inside the batch 20..=21: that batch goes too.
    assert_eq!(log.truncate_to(21).await.unwrap(), 20);
    assert_eq!(read_all(&log).last().map(|(o, _)| *o), Some(19));
    log.append(&mut batch(99, 1, 2_000)).await.unwrap();
    drop(log);
    let (mut log, report) = open(dir.path(), small_segments()).await;
    assert_eq!(report.truncation_reason, None);
    assert_eq!(log.log_end_offset(), 21);
    assert_eq!(read_all(&log).last().unwrap(), &(20, "99-0".to_string()));
    assert_eq!(log.truncate_to(0).await.unwrap(), 0);
    assert_eq!(log.segment_count(), 1);
    log.reset_to(500).await.unwrap();
    log.append(&mut batch(7, 1, 3_000)).await.unwrap();
    drop(log);
    let (log, _) = open(dir.path(), small_segments()).await;
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 501));
}

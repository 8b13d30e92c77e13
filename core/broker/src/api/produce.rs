//! Produce.

use super::super::State;
use super::super::txn::verify;
use super::super::validate_topic_name;
use crate::log::TopicCompression;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use std::sync::Arc;
use std::time::Duration;
use weir_wire::record::{
    BatchError, BatchHeader, Codec, ProducerBatch, RecordToEncode, decode_batch_records,
    encode_batch, validate_produced_batch,
};

fn batch_error_code(e: &BatchError) -> ResponseError {
    match e {
        BatchError::Crc { .. } | BatchError::Truncated(_) => ResponseError::CorruptMessage,
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
        BatchError::Magic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::Invalid(_) | BatchError::Compression(_) => ResponseError::InvalidRecord,
    }
}

/// Re-encodes a batch with the topic's codec, as Kafka does when `compression.type` names one.
fn recompress(bytes: &[u8], codec: Codec, max_decompressed: usize) -> Result<Vec<u8>, BatchError> {
    let (h, records) = decode_batch_records(&Bytes::copy_from_slice(bytes), max_decompressed)?;
    let records: Vec<RecordToEncode> = records
        .into_iter()
        .map(|r| RecordToEncode {
            key: r.key,
            value: r.value,
            headers: r.headers,
            timestamp: r.timestamp,
        })
        .collect();
    let meta = ProducerBatch {
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
        transactional: h.is_transactional(),
        codec,
    };
    Ok(encode_batch(&records, &meta)?.to_vec())
}

struct Pending {
    topic: usize,
    index: usize,
    partition: Arc<super::super::partition::Partition>,
    wait: super::super::partition::AckWait,
}

fn failed(index: i32, code: ResponseError, message: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(StrBytes::from_string))
}

/// Validates and appends each partition's batch, then waits for acks=all.
pub(super) async fn handle(state: &Arc<State>, req: ProduceRequest) -> ProduceResponse {
    let acks = req.acks;
    let timeout = Duration::from_millis(
        u64::try_from(req.timeout_ms)
            .unwrap_or(0)
            .min(state.config.produce_timeout_max_ms),
    );
    let mut topics = Vec::new();
    let mut waits = Vec::new();
    let image = state.image();
    for (ti, t) in req.topic_data.into_iter().enumerate() {
        let name = t.name.0.to_string();
        let mut parts = Vec::new();
        for (pi, p) in t.partition_data.into_iter().enumerate() {
            let reject = |code, msg: Option<String>| failed(p.index, code, msg);
            let response = if !matches!(acks, -1..=1) {
                reject(
                    ResponseError::InvalidRequiredAcks,
                    Some(format!("acks must be -1, 0 or 1, not {acks}")),
                )
            } else if let Err(m) = validate_topic_name(&name) {
                reject(ResponseError::InvalidTopicException, Some(m))
            } else {
                match super::replica(state, &image, &name, p.index) {
                    Err(code) => reject(code, None),
                    Ok(partition) => {
                        let config = &partition.config;
                        match prepare(
                            state,
                            p.records.as_deref(),
                            config.max_message_bytes,
                            config.compression,
                        ) {
                            Err((code, msg)) => reject(code, Some(msg)),
                            Ok((batch, header)) => match async {
                                if header.is_transactional() {
                                    verify(state, &name, p.index, &header).await?;
                                }
                                partition.append(batch, acks == -1).await
                            }
                            .await
                            {
                                Err(code) => reject(code, None),
                                Ok((appended, wait)) => {
                                    waits.push(Pending {
                                        topic: ti,
                                        index: pi,
                                        partition: Arc::clone(&partition),
                                        wait,
                                    });
                                    PartitionProduceResponse::default()
                                        .with_index(p.index)
                                        .with_base_offset(appended.base_offset)
                                        .with_log_append_time_ms(appended.log_append_time)
                                        .with_log_start_offset(appended.log_start)
                                }
                            },
                        }
                    }
                }
            };
            parts.push(response);
        }
        topics.push(
            TopicProduceResponse::default()
                .with_name(t.name)
                .with_partition_responses(parts),
        );
    }
    if acks == -1 {
        for w in waits {
            if let Err(code) = w.partition.await_ack(w.wait, timeout).await {
                let r = &mut topics[w.topic].partition_responses[w.index];
                *r = failed(r.index, code, None);
            }
        }
    }
    ProduceResponse::default().with_responses(topics)
}

/// Validates the records of one partition and applies the topic's compression; returns the
/// batch to store and the header the producer sent.
fn prepare(
    state: &State,
    records: Option<&[u8]>,
    max_message_bytes: usize,
    compression: TopicCompression,
) -> Result<(Vec<u8>, BatchHeader), (ResponseError, String)> {
    let bytes = records.ok_or((
        ResponseError::CorruptMessage,
        "records are null".to_string(),
    ))?;
    let max_decompressed = state.config.max_decompressed_bytes;
    let v = validate_produced_batch(bytes, max_message_bytes, max_decompressed)
        .map_err(|e| (batch_error_code(&e), e.to_string()))?;
    let batch = match compression {
        TopicCompression::Codec(c) if v.header.codec().ok() != Some(c) => {
            recompress(bytes, c, max_decompressed)
                .map_err(|e| (batch_error_code(&e), e.to_string()))?
        }
        _ => bytes.to_vec(),
    };
    Ok((batch, v.header))
}

//! Topic configuration: Kafka's topic-level settings, validated.
//!
//! A topic stores only its overrides (the keys a user set); the effective [`TopicConfig`] is the
//! broker's defaults with those overrides applied. Unknown keys and invalid values are refused
//! with a message naming the key, which the broker returns with `INVALID_CONFIG`.

use std::collections::BTreeMap;
use weir_wire::record::{Codec, TimestampType};

/// What a topic does with old data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Delete whole segments by time and size.
    Delete,
}

/// How the broker treats a produced batch's compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicCompression {
    /// Store batches as the producer compressed them.
    Producer,
    /// Require batches compressed with this codec.
    Codec(Codec),
}

/// The effective settings of one topic.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicConfig {
    /// `retention.ms`: delete segments whose newest record is older; -1 keeps them forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest segments while the log is larger; -1 for no limit.
    pub retention_bytes: i64,
    /// `segment.bytes`: roll the active segment before it would pass this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment once it is this old.
    pub segment_ms: i64,
    /// `min.insync.replicas`: replicas that must have a write for acks=all to succeed.
    pub min_insync_replicas: i32,
    /// `max.message.bytes`: largest batch accepted, in bytes.
    pub max_message_bytes: usize,
    /// `compression.type`.
    pub compression: TopicCompression,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `index.interval.bytes`: bytes of log between offset index entries.
    pub index_interval_bytes: u64,
    /// `flush.messages`: fsync after this many unflushed records; -1 leaves it to `flush.ms`.
    pub flush_messages: i64,
    /// `flush.ms`: fsync unflushed data at least this often.
    pub flush_ms: i64,
}

impl Default for TopicConfig {
    /// Kafka's defaults, except that unflushed data is synced every second.
    fn default() -> Self {
        Self {
            retention_ms: 7 * 24 * 3_600_000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3_600_000,
            min_insync_replicas: 1,
            max_message_bytes: 1_048_588,
            compression: TopicCompression::Producer,
            cleanup_policy: CleanupPolicy::Delete,
            timestamp_type: TimestampType::CreateTime,
            index_interval_bytes: 4096,
            flush_messages: -1,
            flush_ms: 1000,
        }
    }
}

/// Smallest `segment.bytes` accepted.
pub const SEGMENT_BYTES_MIN: u64 = 512;
/// Largest `segment.bytes` accepted (index positions are 32-bit).
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Largest `max.message.bytes` accepted.
pub const MAX_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The topic config keys Weir understands.
pub const KNOWN_KEYS: [&str; 12] = [
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "min.insync.replicas",
    "max.message.bytes",
    "compression.type",
    "cleanup.policy",
    "message.timestamp.type",
    "index.interval.bytes",
    "flush.messages",
    "flush.ms",
];

fn long(key: &str, value: &str, min: i64, max: i64) -> Result<i64, String> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{key}: {value:?} is not an integer"))?;
    if v < min || v > max {
        return Err(format!("{key}: {v} is outside [{min}, {max}]"));
    }
    Ok(v)
}

impl TopicConfig {
    /// Applies one `key = value` override, or explains why it is refused.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "retention.ms" => self.retention_ms = long(key, value, -1, i64::MAX)?,
            "retention.bytes" => self.retention_bytes = long(key, value, -1, i64::MAX)?,
            "segment.bytes" => {
                self.segment_bytes = long(
                    key,
                    value,
                    SEGMENT_BYTES_MIN as i64,
                    SEGMENT_BYTES_MAX as i64,
                )? as u64
            }
            "segment.ms" => self.segment_ms = long(key, value, 1, i64::MAX)?,
            "min.insync.replicas" => {
                self.min_insync_replicas = long(key, value, 1, i64::from(i32::MAX))? as i32
            }
            "max.message.bytes" => {
                self.max_message_bytes = long(key, value, 0, MAX_MESSAGE_BYTES_MAX as i64)? as usize
            }
            "compression.type" => {
                self.compression = match value {
                    "producer" => TopicCompression::Producer,
                    other => TopicCompression::Codec(
                        Codec::parse(other)
                            .ok_or_else(|| format!("{key}: unknown codec {other:?}"))?,
                    ),
                }
            }
            "cleanup.policy" => {
                self.cleanup_policy = match value {
                    "delete" => CleanupPolicy::Delete,
                    "compact" | "compact,delete" | "delete,compact" => {
                        return Err(format!(
                            "{key}: {value:?} is not supported: this broker does not compact logs"
                        ));
                    }
                    other => return Err(format!("{key}: unknown policy {other:?}")),
                }
            }
            "message.timestamp.type" => {
                self.timestamp_type = match value {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    other => {
                        return Err(format!(
                            "{key}: {other:?} is neither CreateTime nor LogAppendTime"
                        ));
                    }
                }
            }
            "index.interval.bytes" => {
                self.index_interval_bytes = long(key, value, 0, i64::from(i32::MAX))? as u64
            }
            "flush.messages" => self.flush_messages = long(key, value, -1, i64::MAX)?,
            "flush.ms" => self.flush_ms = long(key, value, 1, i64::MAX)?,
            other => return Err(format!("unknown topic config {other:?}")),
        }
        Ok(())
    }

    /// These defaults with every override applied, or the first refusal.
    pub fn with_overrides(&self, overrides: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut c = self.clone();
        for (k, v) in overrides {
            c.set(k, v)?;
        }
        Ok(c)
    }

    /// The current value of `key`, as Kafka would show it.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "compression.type" => match self.compression {
                TopicCompression::Producer => "producer".into(),
                TopicCompression::Codec(Codec::None) => "uncompressed".into(),
                TopicCompression::Codec(c) => c.name().into(),
            },
            "cleanup.policy" => "delete".into(),
            "message.timestamp.type" => match self.timestamp_type {
                TimestampType::CreateTime => "CreateTime".into(),
                TimestampType::LogAppendTime => "LogAppendTime".into(),
            },
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "flush.messages" => self.flush_messages.to_string(),
            "flush.ms" => self.flush_ms.to_string(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_overrides_apply_and_read_back() {
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "60000".to_string());
        o.insert("compression.type".to_string(), "lz4".to_string());
        o.insert("min.insync.replicas".to_string(), "2".to_string());
        o.insert("segment.bytes".to_string(), "4096".to_string());
        let c = TopicConfig::default().with_overrides(&o).unwrap();
        assert_eq!(c.retention_ms, 60_000);
        assert_eq!(c.compression, TopicCompression::Codec(Codec::Lz4));
        assert_eq!(c.min_insync_replicas, 2);
        for k in KNOWN_KEYS {
            let v = c.get(k).unwrap();
            let mut d = TopicConfig::default();
            d.set(k, &v).unwrap();
        }
    }

    #[test]
    fn unknown_and_invalid_overrides_are_refused() {
        let cases = [
            ("retention.ms", "soon"),
            ("retention.ms", "-2"),
            ("segment.bytes", "10"),
            ("compression.type", "brotli"),
            ("cleanup.policy", "compact"),
            ("cleanup.policy", "shred"),
            ("min.insync.replicas", "0"),
            ("message.timestamp.type", "Now"),
            ("no.such.config", "1"),
        ];
        for (k, v) in cases {
            assert!(
                TopicConfig::default().set(k, v).is_err(),
                "{k}={v} should be refused"
            );
        }
    }
}

//! Client errors.

use kafka_protocol::error::ResponseError;

/// Why a client operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Could not connect, or the connection broke.
    #[error("connection to {addr}: {reason}")]
    Connection {
        /// Broker address.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// No response within the request timeout; the request may or may not have taken effect.
    #[error("request to {addr} timed out after {ms} ms")]
    Timeout {
        /// Broker address.
        addr: String,
        /// The timeout.
        ms: u64,
    },
    /// The broker answered with a Kafka error code.
    #[error("{code} ({context})")]
    Kafka {
        /// The error.
        code: ResponseError,
        /// What the client was doing, and any message from the broker.
        context: String,
    },
    /// The broker's answer could not be understood.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A fetched batch failed its CRC or did not parse.
    #[error("corrupt batch in {topic}-{partition} at offset {offset}: {reason}")]
    Corrupt {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Fetch position.
        offset: i64,
        /// What was wrong.
        reason: String,
    },
    /// The caller asked for something invalid.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The producer was closed.
    #[error("producer closed")]
    Closed,
}

impl ClientError {
    /// Whether retrying the same operation may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connection { .. }
            | ClientError::Timeout { .. }
            | ClientError::Corrupt { .. } => true,
            ClientError::Kafka { code, .. } => code.is_retriable(),
            ClientError::Protocol(_) | ClientError::Invalid(_) | ClientError::Closed => false,
        }
    }

    /// The Kafka error code, if the broker sent one.
    pub fn code(&self) -> Option<ResponseError> {
        match self {
            ClientError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn kafka(code: i16, context: impl Into<String>) -> Option<Self> {
        ResponseError::try_from_code(code).map(|code| ClientError::Kafka {
            code,
            context: context.into(),
        })
    }
}

//! What flows through a job: records with event timestamps, and watermarks.

/// Event time, in milliseconds since the epoch.
pub type Timestamp = i64;

/// The watermark before any event time is known.
pub const MIN_WATERMARK: Timestamp = i64::MIN;
/// The watermark at the end of input: every event-time window may fire.
pub const MAX_WATERMARK: Timestamp = i64::MAX;

/// A value with its event timestamp, if it has one.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord<T> {
    /// The value.
    pub value: T,
    /// Event time.
    pub timestamp: Option<Timestamp>,
}

/// One element of a stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Element<T> {
    /// A record.
    Record(StreamRecord<T>),
    /// No record with a timestamp at or below this will follow (unless late).
    Watermark(Timestamp),
}

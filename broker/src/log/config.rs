//! What a log needs from its topic's configuration.

use crate::record::TimestampType;

pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment once the active one would grow past this.
    pub segment_bytes: u64,
    /// Roll once the active segment's first batch is older than this.
    pub segment_ms: i64,
    /// Size the index files are preallocated to.
    pub segment_index_bytes: u64,
    /// Bytes of log between two offset index entries.
    pub index_interval_bytes: u64,
    /// Delete closed segments whose newest record is older than this; -1 keeps forever.
    pub retention_ms: i64,
    /// Delete the oldest closed segments while the log is larger than this; -1: no limit.
    pub retention_bytes: i64,
    /// Largest record batch accepted.
    pub max_message_bytes: usize,
    /// fsync after this many records; i64::MAX (the default) leaves flushing to the OS.
    pub flush_messages: u64,
    /// fsync when the oldest unflushed write is this old; i64::MAX leaves it to the OS.
    pub flush_ms: u64,
    pub timestamp_type: TimestampType,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            segment_index_bytes: 10 << 20,
            index_interval_bytes: 4096,
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            flush_messages: i64::MAX as u64,
            flush_ms: i64::MAX as u64,
            timestamp_type: TimestampType::CreateTime,
        }
    }
}

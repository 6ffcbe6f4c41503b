//! The record format: Apache Kafka RecordBatch v2, byte for byte.
//!
//! The log stores batches exactly as producers built them (only the base offset and the
//! partition leader epoch, which the CRC does not cover, are set by the broker), and a fetch
//! returns the stored bytes. This module views, validates, builds and decodes them.

mod batch;
mod builder;
mod compression;
#[allow(clippy::module_inception)]
mod record;
mod varint;

pub use batch::{
    BatchError, BatchHeader, BatchInfo, HEADER_LEN, LOG_OVERHEAD, MAGIC, TimestampType,
    assign_offset, set_log_append_time, set_producer, validate_produced,
};
pub use builder::{BatchBuilder, NO_PRODUCER};
pub use compression::{Compression, MAX_DECOMPRESSED_BYTES};
pub use record::{Header, Record, RecordError, decode_batch};

/// Iterates over the batches laid end to end in `buf`, stopping at the first one that is not
/// whole. Checks nothing beyond the header being readable.
pub fn batches(buf: &[u8]) -> impl Iterator<Item = (usize, BatchHeader<'_>)> {
    let mut position = 0usize;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(&buf[position..]).ok()?;
        let total = header.total_len();
        if position + total > buf.len() {
            return None;
        }
        let at = position;
        position += total;
        Some((at, header))
    })
}

#[cfg(test)]
mod tests;

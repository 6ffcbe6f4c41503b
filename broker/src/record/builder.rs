//! Builds RecordBatch v2 bytes from records, as a producer sends them.

use std::io;

use bytes::Bytes;

use super::batch::{HEADER_LEN, write_header};
use super::compression::Compression;
use super::record;

/// Accumulates records into one batch. Uncompressed records are written straight after a
/// header placeholder, so building an uncompressed batch copies nothing.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    compression: Compression,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer: (i64, i16, i32),
}

/// Header fields of a batch that carries no idempotent producer state.
pub const NO_PRODUCER: (i64, i16, i32) = (-1, -1, -1);

impl BatchBuilder {
    pub fn new(compression: Compression, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            compression,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
            producer: NO_PRODUCER,
        }
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Records appended so far.
    pub fn record_count(&self) -> i32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch so far before compression, header included.
    pub fn uncompressed_size(&self) -> usize {
        self.buf.len()
    }

    /// What appending this record would add to `uncompressed_size`.
    pub fn record_size(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> usize {
        let (timestamp_delta, offset_delta) = self.deltas(timestamp);
        record::encoded_len(timestamp_delta, offset_delta, key, value, headers)
    }

    /// The most a record can add to any batch, whatever its timestamp and position.
    pub fn max_record_size(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> usize {
        record::encoded_len(i64::MAX, i32::MAX, key, value, headers)
    }

    fn deltas(&self, timestamp: i64) -> (i64, i32) {
        if self.count == 0 {
            (0, 0)
        } else {
            (timestamp.wrapping_sub(self.base_timestamp), self.count)
        }
    }

    /// Appends a record and returns its offset delta within the batch.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> i32 {
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        let (timestamp_delta, offset_delta) = self.deltas(timestamp);
        record::encode(
            &mut self.buf,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        );
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
        offset_delta
    }

    /// Sets the idempotent producer id, epoch and base sequence carried in the header.
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer = (producer_id, producer_epoch, base_sequence);
    }

    /// Compresses (if asked), writes the header and CRC, and returns the batch.
    pub fn build(self) -> io::Result<Bytes> {
        let Self {
            mut buf,
            compression,
            count,
            base_timestamp,
            max_timestamp,
            producer,
        } = self;
        if compression != Compression::None {
            let mut out = Vec::with_capacity(HEADER_LEN + (buf.len() - HEADER_LEN) / 2);
            out.resize(HEADER_LEN, 0);
            compression.compress(&buf[HEADER_LEN..], &mut out)?;
            buf = out;
        }
        let max_timestamp = if count == 0 {
            base_timestamp
        } else {
            max_timestamp
        };
        write_header(
            &mut buf,
            0,
            compression.attribute_bits(),
            (count - 1).max(0),
            base_timestamp,
            max_timestamp,
            producer,
            count,
        );
        Ok(Bytes::from(buf))
    }
}

//! Kafka RecordBatch v2: a zero-copy view of the header and the checks a batch passes
//! before the log accepts it.
//!
//! ```text
//!  0 base_offset i64        21 attributes i16          43 producer_id i64
//!  8 batch_length i32       23 last_offset_delta i32   51 producer_epoch i16
//! 12 partition_leader_epoch 27 base_timestamp i64      53 base_sequence i32
//! 16 magic i8               35 max_timestamp i64       57 records_count i32
//! 17 crc u32 (CRC-32C of bytes 21..end)                61 records ...
//! ```

use super::compression::Compression;
use super::record::{self, RecordError};

/// Bytes before the batch length field counts from: base offset (8) + length (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the RecordBatch v2 header, records excluded.
pub const HEADER_LEN: usize = 61;
pub const MAGIC: i8 = 2;

const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC_AT: usize = 16;
const CRC: usize = 17;
pub(crate) const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Whether record timestamps were set by the producer or by the broker on append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    #[default]
    CreateTime,
    LogAppendTime,
}

/// Why a batch was refused. The messages are what the producer sees.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch is truncated: {needed} bytes needed but only {available} remain")]
    Truncated { needed: usize, available: usize },
    #[error("record batch length {length} is too small for a RecordBatch v2 header")]
    LengthTooSmall { length: i32 },
    #[error("unsupported record batch magic {found}: only RecordBatch v2 (magic 2) is accepted")]
    BadMagic { found: i8 },
    #[error(
        "record batch CRC mismatch: header says {stored:#010x}, bytes give {computed:#010x}; \
         the batch was damaged on its way"
    )]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record batch has unknown compression type {bits} in its attributes")]
    UnknownCompression { bits: i16 },
    #[error("record batch is empty: a batch must hold at least one record")]
    Empty,
    #[error(
        "record batch says it holds {count} records but its last offset delta is {last_offset_delta}; \
         they must differ by one"
    )]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("transactional and control batches are not supported")]
    Transactional,
    #[error("record batch of {size} bytes is larger than max.message.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("records could not be decompressed ({codec}): {reason}")]
    Decompression { codec: Compression, reason: String },
    #[error("record {index} of the batch is malformed: {source}")]
    Record { index: i32, source: RecordError },
    #[error("record batch declares {declared} records but holds {found}")]
    RecordCount { declared: i32, found: i32 },
    #[error("record {index} has offset delta {found}; deltas must count up from 0")]
    OffsetDelta { index: i32, found: i32 },
    #[error("record batch max timestamp {stored} does not match its records' largest {computed}")]
    MaxTimestamp { stored: i64, computed: i64 },
}

impl BatchError {
    /// True when the bytes were damaged (retrying a fresh copy may work), false when the
    /// batch is well formed but unacceptable.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Self::Truncated { .. } | Self::LengthTooSmall { .. } | Self::CrcMismatch { .. }
        )
    }
}

/// A read-only view of a batch header. Construct with [`BatchHeader::parse`], which checks
/// that at least a whole header is present.
#[derive(Clone, Copy)]
pub struct BatchHeader<'a> {
    buf: &'a [u8],
}

impl<'a> BatchHeader<'a> {
    /// Views the batch at the start of `buf`: checks that the header is there and that the
    /// batch length is plausible, nothing more (no CRC).
    pub fn parse(buf: &'a [u8]) -> Result<Self, BatchError> {
        if buf.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated {
                needed: LOG_OVERHEAD,
                available: buf.len(),
            });
        }
        let header = Self { buf };
        let length = header.batch_length();
        if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::LengthTooSmall { length });
        }
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        Ok(header)
    }

    pub fn base_offset(&self) -> i64 {
        i64_at(self.buf, 0)
    }
    pub fn batch_length(&self) -> i32 {
        i32_at(self.buf, BATCH_LENGTH)
    }
    /// Bytes of the whole batch, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length() as usize
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        i32_at(self.buf, PARTITION_LEADER_EPOCH)
    }
    pub fn magic(&self) -> i8 {
        self.buf[MAGIC_AT] as i8
    }
    pub fn crc(&self) -> u32 {
        u32::from_be_bytes(array_at(self.buf, CRC))
    }
    pub fn attributes(&self) -> i16 {
        i16::from_be_bytes(array_at(self.buf, ATTRIBUTES))
    }
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_attributes(self.attributes())
    }
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        i32_at(self.buf, LAST_OFFSET_DELTA)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + i64::from(self.last_offset_delta())
    }
    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn base_timestamp(&self) -> i64 {
        i64_at(self.buf, BASE_TIMESTAMP)
    }
    pub fn max_timestamp(&self) -> i64 {
        i64_at(self.buf, MAX_TIMESTAMP)
    }
    pub fn producer_id(&self) -> i64 {
        i64_at(self.buf, PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> i16 {
        i16::from_be_bytes(array_at(self.buf, PRODUCER_EPOCH))
    }
    pub fn base_sequence(&self) -> i32 {
        i32_at(self.buf, BASE_SEQUENCE)
    }
    pub fn records_count(&self) -> i32 {
        i32_at(self.buf, RECORDS_COUNT)
    }

    /// A copy of the header bytes.
    pub fn header_bytes(&self) -> [u8; HEADER_LEN] {
        array_at(self.buf, 0)
    }

    /// The whole batch, if all of it is in the buffer.
    pub fn bytes(&self) -> Result<&'a [u8], BatchError> {
        let total = self.total_len();
        self.buf.get(..total).ok_or(BatchError::Truncated {
            needed: total,
            available: self.buf.len(),
        })
    }

    /// Checks magic and CRC: enough to trust bytes this broker wrote itself.
    pub fn verify_checksum(&self) -> Result<&'a [u8], BatchError> {
        let bytes = self.bytes()?;
        if self.magic() != MAGIC {
            return Err(BatchError::BadMagic {
                found: self.magic(),
            });
        }
        let computed = crc32c::crc32c(&bytes[ATTRIBUTES..]);
        if computed != self.crc() {
            return Err(BatchError::CrcMismatch {
                stored: self.crc(),
                computed,
            });
        }
        Ok(bytes)
    }
}

/// What the log needs to know about a validated batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Length of the batch in bytes, header included.
    pub len: usize,
    pub records_count: i32,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Fully validates the batch at the start of `buf` as a producer sent it: length, magic,
/// CRC-32C, compression, record count and that every record parses with offset deltas
/// 0, 1, 2, ... Compressed batches are decompressed to check their records, as Kafka does.
pub fn validate_produced(buf: &[u8], max_batch_bytes: usize) -> Result<BatchInfo, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let bytes = header.verify_checksum()?;
    if bytes.len() > max_batch_bytes {
        return Err(BatchError::TooLarge {
            size: bytes.len(),
            max: max_batch_bytes,
        });
    }
    if header.is_transactional() || header.is_control() {
        return Err(BatchError::Transactional);
    }
    let codec = header.compression().ok_or(BatchError::UnknownCompression {
        bits: header.attributes() & 0x07,
    })?;
    let count = header.records_count();
    if count <= 0 {
        return Err(BatchError::Empty);
    }
    if i64::from(header.last_offset_delta()) != i64::from(count) - 1 {
        return Err(BatchError::CountMismatch {
            count,
            last_offset_delta: header.last_offset_delta(),
        });
    }
    let body = &bytes[HEADER_LEN..];
    let max_timestamp = match codec {
        Compression::None => check_records(body, &header)?,
        codec => {
            let plain =
                codec
                    .decompress(body, body.len() * 2)
                    .map_err(|e| BatchError::Decompression {
                        codec,
                        reason: e.to_string(),
                    })?;
            check_records(&plain, &header)?
        }
    };
    if header.timestamp_type() == TimestampType::CreateTime
        && max_timestamp != header.max_timestamp()
    {
        return Err(BatchError::MaxTimestamp {
            stored: header.max_timestamp(),
            computed: max_timestamp,
        });
    }
    Ok(BatchInfo {
        len: bytes.len(),
        records_count: count,
        last_offset_delta: header.last_offset_delta(),
        max_timestamp: header.max_timestamp(),
        producer_id: header.producer_id(),
        producer_epoch: header.producer_epoch(),
        base_sequence: header.base_sequence(),
    })
}

/// Walks the records, checking each parses and that offset deltas count up from zero.
/// Returns the largest record timestamp.
fn check_records(mut body: &[u8], header: &BatchHeader<'_>) -> Result<i64, BatchError> {
    let declared = header.records_count();
    let base_timestamp = header.base_timestamp();
    let mut max_timestamp = i64::MIN;
    let mut index = 0i32;
    while !body.is_empty() {
        if index == declared {
            return Err(BatchError::RecordCount {
                declared,
                found: index + 1,
            });
        }
        let (fields, used) =
            record::parse_fields(body).map_err(|source| BatchError::Record { index, source })?;
        if fields.offset_delta != index {
            return Err(BatchError::OffsetDelta {
                index,
                found: fields.offset_delta,
            });
        }
        max_timestamp = max_timestamp.max(base_timestamp.wrapping_add(fields.timestamp_delta));
        body = &body[used..];
        index += 1;
    }
    if index != declared {
        return Err(BatchError::RecordCount {
            declared,
            found: index,
        });
    }
    Ok(max_timestamp)
}

/// Sets the base offset and partition leader epoch of a batch header in place. Neither field
/// is covered by the CRC, so the batch stays valid.
pub fn assign_offset(header: &mut [u8; HEADER_LEN], base_offset: i64, leader_epoch: i32) {
    header[..8].copy_from_slice(&base_offset.to_be_bytes());
    header[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Marks a batch as LogAppendTime with the given time and recomputes its CRC.
pub fn set_log_append_time(batch: &mut [u8], time_ms: i64) {
    let attributes = i16::from_be_bytes(array_at(batch, ATTRIBUTES)) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&time_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Sets the idempotent producer fields of a built batch and recomputes its CRC (a producer
/// that had to start over with a new producer id).
pub fn set_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    batch[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Writes a complete header at the start of `batch` (whose records follow at HEADER_LEN)
/// and computes its CRC. Used by the batch builder.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_header(
    batch: &mut [u8],
    base_offset: i64,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer: (i64, i16, i32),
    records_count: i32,
) {
    let length = (batch.len() - LOG_OVERHEAD) as i32;
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&(-1i32).to_be_bytes());
    batch[MAGIC_AT] = MAGIC as u8;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&last_offset_delta.to_be_bytes());
    batch[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&base_timestamp.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    batch[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&producer.0.to_be_bytes());
    batch[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&producer.1.to_be_bytes());
    batch[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&producer.2.to_be_bytes());
    batch[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&records_count.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

fn array_at<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

fn i32_at(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(array_at(buf, at))
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(array_at(buf, at))
}

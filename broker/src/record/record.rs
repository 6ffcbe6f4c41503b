//! Single records inside a batch: parsing (zero-copy) and encoding.
//!
//! ```text
//! length varint | attributes i8 | timestamp_delta varlong | offset_delta varint
//! key_length varint | key | value_length varint | value
//! header_count varint | (key_length varint | key | value_length varint | value)*
//! ```

use bytes::Bytes;

use super::batch::{BatchError, BatchHeader, HEADER_LEN};
use super::varint::{
    read_varint, read_varlong, varint_len, varlong_len, write_varint, write_varlong,
};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("a length or delta field is truncated or malformed")]
    Varint,
    #[error("record length {0} is negative")]
    NegativeLength(i32),
    #[error("record claims {claimed} bytes but {available} remain")]
    Truncated { claimed: usize, available: usize },
    #[error("field length {0} is invalid")]
    FieldLength(i32),
    #[error("record length says {declared} bytes but its fields use {used}")]
    SizeMismatch { declared: usize, used: usize },
    #[error("header key is not valid UTF-8")]
    HeaderKey,
}

/// A record header: a string key and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// A record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// The fields of one record, borrowed from the batch.
#[derive(Debug)]
pub(crate) struct RecordFields<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Result<i32, RecordError> {
        let (value, used) = read_varint(&self.buf[self.pos..]).map_err(|_| RecordError::Varint)?;
        self.pos += used;
        Ok(value)
    }

    fn varlong(&mut self) -> Result<i64, RecordError> {
        let (value, used) = read_varlong(&self.buf[self.pos..]).map_err(|_| RecordError::Varint)?;
        self.pos += used;
        Ok(value)
    }

    fn byte(&mut self) -> Result<u8, RecordError> {
        let byte = *self.buf.get(self.pos).ok_or(RecordError::Varint)?;
        self.pos += 1;
        Ok(byte)
    }

    /// A length-prefixed field where -1 means null.
    fn nullable(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        let len_usize = usize::try_from(len).map_err(|_| RecordError::FieldLength(len))?;
        let field = self
            .buf
            .get(self.pos..self.pos + len_usize)
            .ok_or(RecordError::FieldLength(len))?;
        self.pos += len_usize;
        Ok(Some(field))
    }
}

/// Parses the record at the start of `buf`; returns it and the bytes it used.
pub(crate) fn parse_fields(buf: &[u8]) -> Result<(RecordFields<'_>, usize), RecordError> {
    let (length, prefix) = read_varint(buf).map_err(|_| RecordError::Varint)?;
    let length = usize::try_from(length).map_err(|_| RecordError::NegativeLength(length))?;
    let available = buf.len() - prefix;
    if length > available {
        return Err(RecordError::Truncated {
            claimed: length,
            available,
        });
    }
    let mut cursor = Cursor {
        buf: &buf[prefix..prefix + length],
        pos: 0,
    };
    let _attributes = cursor.byte()?;
    let timestamp_delta = cursor.varlong()?;
    let offset_delta = cursor.varint()?;
    let key = cursor.nullable()?;
    let value = cursor.nullable()?;
    let header_count = cursor.varint()?;
    let header_count =
        usize::try_from(header_count).map_err(|_| RecordError::FieldLength(header_count))?;
    // Every header takes at least two bytes, which bounds the allocation.
    let mut headers = Vec::with_capacity(header_count.min(length / 2));
    for _ in 0..header_count {
        let key = cursor.nullable()?.ok_or(RecordError::FieldLength(-1))?;
        let value = cursor.nullable()?;
        headers.push((key, value));
    }
    if cursor.pos != length {
        return Err(RecordError::SizeMismatch {
            declared: length,
            used: cursor.pos,
        });
    }
    Ok((
        RecordFields {
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        },
        prefix + length,
    ))
}

/// Appends the records of one stored batch to `out`, skipping those before `from_offset`.
/// Key, value and header values are slices of `batch` (or of its decompressed copy).
pub fn decode_batch(
    batch: &Bytes,
    from_offset: i64,
    out: &mut Vec<Record>,
) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    header.verify_checksum()?;
    let codec = header.compression().ok_or(BatchError::UnknownCompression {
        bits: header.attributes() & 0x07,
    })?;
    let body = batch.slice(HEADER_LEN..header.total_len());
    let body = match codec {
        super::Compression::None => body,
        codec => Bytes::from(codec.decompress(&body, body.len() * 2).map_err(|e| {
            BatchError::Decompression {
                codec,
                reason: e.to_string(),
            }
        })?),
    };
    let log_append_time = (header.timestamp_type() == super::TimestampType::LogAppendTime)
        .then(|| header.max_timestamp());
    let mut rest: &[u8] = &body;
    let mut index = 0;
    while !rest.is_empty() {
        let (fields, used) =
            parse_fields(rest).map_err(|source| BatchError::Record { index, source })?;
        let offset = header.base_offset() + i64::from(fields.offset_delta);
        if offset >= from_offset {
            let headers = fields
                .headers
                .iter()
                .map(|(key, value)| {
                    Ok(Header {
                        key: std::str::from_utf8(key)
                            .map_err(|_| BatchError::Record {
                                index,
                                source: RecordError::HeaderKey,
                            })?
                            .to_string(),
                        value: value.map(|v| body.slice_ref(v)),
                    })
                })
                .collect::<Result<_, BatchError>>()?;
            out.push(Record {
                offset,
                timestamp: log_append_time
                    .unwrap_or(header.base_timestamp().wrapping_add(fields.timestamp_delta)),
                key: fields.key.map(|k| body.slice_ref(k)),
                value: fields.value.map(|v| body.slice_ref(v)),
                headers,
            });
        }
        rest = &rest[used..];
        index += 1;
    }
    Ok(())
}

/// Size of the record body (after its length prefix).
fn body_len(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> usize {
    let field = |f: Option<&[u8]>| match f {
        None => varint_len(-1),
        Some(bytes) => varint_len(bytes.len() as i32) + bytes.len(),
    };
    1 + varlong_len(timestamp_delta)
        + varint_len(offset_delta)
        + field(key)
        + field(value)
        + varint_len(headers.len() as i32)
        + headers
            .iter()
            .map(|(k, v)| field(Some(k.as_bytes())) + field(*v))
            .sum::<usize>()
}

/// Size of a record in a batch, length prefix included.
pub(crate) fn encoded_len(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> usize {
    let body = body_len(timestamp_delta, offset_delta, key, value, headers);
    varint_len(body as i32) + body
}

/// Appends one encoded record to `out`.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) {
    let write_field = |out: &mut Vec<u8>, f: Option<&[u8]>| match f {
        None => write_varint(out, -1),
        Some(bytes) => {
            write_varint(out, bytes.len() as i32);
            out.extend_from_slice(bytes);
        }
    };
    write_varint(
        out,
        body_len(timestamp_delta, offset_delta, key, value, headers) as i32,
    );
    out.push(0); // attributes: unused in v2
    write_varlong(out, timestamp_delta);
    write_varint(out, offset_delta);
    write_field(out, key);
    write_field(out, value);
    write_varint(out, headers.len() as i32);
    for (k, v) in headers {
        write_field(out, Some(k.as_bytes()));
        write_field(out, *v);
    }
}

//! Framing: every request and response is a 4-byte big-endian size and that many bytes.
//! A request starts with its header (API key, version, correlation id, client id, and
//! tagged fields from header v2); a response with the correlation id it answers.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Kafka's `socket.request.max.bytes`: larger requests are refused and the connection
/// closed.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "a request of {size} bytes is larger than the broker's limit of {max} bytes (socket.request.max.bytes); send smaller requests (max.request.size, fetch.max.bytes)"
    )]
    TooLarge { size: i64, max: usize },
    #[error("a request frame declares a negative size ({0}); this is not the Kafka protocol")]
    NegativeSize(i32),
    #[error("the connection closed after {read} of {expected} bytes of a request")]
    Truncated { read: usize, expected: usize },
    #[error("a request of {0} bytes is too short to hold a request header")]
    ShortHeader(usize),
    #[error("cannot read the header of a {api} v{version} request: {reason}")]
    Header {
        api: String,
        version: i16,
        reason: String,
    },
    #[error("reading a request failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame's payload (without its size). `None` when the peer closed the connection
/// between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<BytesMut>, FrameError> {
    let mut size = [0u8; 4];
    let mut read = 0;
    while read < size.len() {
        match reader.read(&mut size[read..]).await? {
            0 if read == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated { read, expected: 4 }),
            n => read += n,
        }
    }
    let size = i32::from_be_bytes(size);
    let Ok(len) = usize::try_from(size) else {
        return Err(FrameError::NegativeSize(size));
    };
    if len > max {
        return Err(FrameError::TooLarge {
            size: i64::from(size),
            max,
        });
    }
    let mut payload = BytesMut::zeroed(len);
    let mut read = 0;
    while read < len {
        match reader.read(&mut payload[read..]).await? {
            0 => {
                return Err(FrameError::Truncated {
                    read,
                    expected: len,
                });
            }
            n => read += n,
        }
    }
    Ok(Some(payload))
}

/// A request's header, and its body still encoded.
#[derive(Debug, Clone)]
pub struct Request {
    /// The API key as sent; `api` is None for a key this crate does not know.
    pub api_key: i16,
    pub api: Option<ApiKey>,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub body: Bytes,
}

/// Splits a frame's payload into its header and body. The API key, version and correlation
/// id are read first, so even a request whose key or version is unknown can be answered.
pub fn parse_request(payload: Bytes) -> Result<Request, FrameError> {
    if payload.len() < 8 {
        return Err(FrameError::ShortHeader(payload.len()));
    }
    let api_key = i16::from_be_bytes([payload[0], payload[1]]);
    let api_version = i16::from_be_bytes([payload[2], payload[3]]);
    let correlation_id = i32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let api = ApiKey::try_from(api_key).ok();
    let mut request = Request {
        api_key,
        api,
        api_version,
        correlation_id,
        client_id: None,
        body: Bytes::new(),
    };
    let Some(key) = api else {
        return Ok(request);
    };
    let range = key.valid_versions();
    if api_version < range.min || api_version > range.max {
        // Not decodable at this version; the caller answers UNSUPPORTED_VERSION. Versions
        // below the schemas' are old and so have header v1: client id, then the body.
        if api_version < range.min {
            let mut rest = payload.slice(8..);
            if rest.len() >= 2 {
                let len = i16::from_be_bytes([rest[0], rest[1]]);
                rest.advance(2);
                if let Ok(len) = usize::try_from(len)
                    && len <= rest.len()
                {
                    request.client_id = Some(String::from_utf8_lossy(&rest[..len]).into_owned());
                    rest.advance(len);
                }
                request.body = rest;
            }
        }
        return Ok(request);
    }
    let mut buf = payload;
    let header =
        RequestHeader::decode(&mut buf, key.request_header_version(api_version)).map_err(|e| {
            FrameError::Header {
                api: format!("{key:?}"),
                version: api_version,
                reason: e.to_string(),
            }
        })?;
    request.client_id = header.client_id.map(|c| c.to_string());
    request.body = buf;
    Ok(request)
}

/// A response frame: size, the header for `api` at `api_version`, and the body.
pub fn response<B: Encodable>(
    api: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &B,
) -> Result<Bytes, String> {
    let header_version = api.response_header_version(api_version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let encode = || -> anyhow::Result<Bytes> {
        let size = header.compute_size(header_version)? + body.compute_size(api_version)?;
        let mut out = BytesMut::with_capacity(4 + size);
        out.put_i32(i32::try_from(size)?);
        header.encode(&mut out, header_version)?;
        body.encode(&mut out, api_version)?;
        Ok(out.freeze())
    };
    encode().map_err(|e| format!("cannot encode a {api:?} v{api_version} response: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, ResponseHeader};

    fn request_frame(key: ApiKey, version: i16, correlation_id: i32) -> BytesMut {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some("test".into()));
        let mut out = BytesMut::new();
        out.put_i32(0);
        header
            .encode(&mut out, key.request_header_version(version))
            .expect("a header encodes");
        MetadataRequest::default()
            .encode(&mut out, version)
            .expect("a body encodes");
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_their_headers_parsed() {
        let mut bytes = request_frame(ApiKey::Metadata, 12, 7).to_vec();
        bytes.extend(request_frame(ApiKey::Metadata, 4, 8));
        let mut reader = bytes.as_slice();
        for (version, correlation_id) in [(12, 7), (4, 8)] {
            let payload = read_frame(&mut reader, 1024).await.unwrap().unwrap();
            let request = parse_request(payload.freeze()).unwrap();
            assert_eq!(request.api, Some(ApiKey::Metadata));
            assert_eq!(request.api_version, version);
            assert_eq!(request.correlation_id, correlation_id);
            assert_eq!(request.client_id.as_deref(), Some("test"));
            let mut body = request.body;
            MetadataRequest::decode(&mut body, version).expect("the body decodes");
        }
        assert!(read_frame(&mut reader, 1024).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_negative_and_cut_frames_are_errors() {
        let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut huge, DEFAULT_MAX_REQUEST_BYTES).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xfe];
        assert!(matches!(
            read_frame(&mut negative, 1024).await,
            Err(FrameError::NegativeSize(-2))
        ));
        let mut cut: &[u8] = &[0, 0, 0, 10, 1, 2, 3];
        assert!(matches!(
            read_frame(&mut cut, 1024).await,
            Err(FrameError::Truncated {
                read: 3,
                expected: 10
            })
        ));
        let mut cut_size: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame(&mut cut_size, 1024).await,
            Err(FrameError::Truncated {
                read: 2,
                expected: 4
            })
        ));
    }

    #[test]
    fn unknown_keys_and_versions_keep_their_correlation_id() {
        let mut payload = BytesMut::new();
        payload.put_i16(999);
        payload.put_i16(3);
        payload.put_i32(42);
        let request = parse_request(payload.freeze()).unwrap();
        assert_eq!(
            (request.api, request.api_key, request.correlation_id),
            (None, 999, 42)
        );
        let mut payload = BytesMut::new();
        payload.put_i16(ApiKey::Metadata as i16);
        payload.put_i16(99);
        payload.put_i32(43);
        let request = parse_request(payload.freeze()).unwrap();
        assert_eq!(
            (request.api, request.api_version),
            (Some(ApiKey::Metadata), 99)
        );
        assert!(matches!(
            parse_request(Bytes::from_static(&[0, 3, 0])),
            Err(FrameError::ShortHeader(3))
        ));
    }

    #[test]
    fn a_response_carries_its_size_and_correlation_id() {
        let body = kafka_protocol::messages::ApiVersionsResponse::default();
        let frame = response(ApiKey::ApiVersions, 3, 9, &body).unwrap();
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(size, frame.len() - 4);
        let mut rest = frame.slice(4..);
        // ApiVersions answers with header v0 whatever its version.
        let header = ResponseHeader::decode(&mut rest, 0).unwrap();
        assert_eq!(header.correlation_id, 9);
    }
}

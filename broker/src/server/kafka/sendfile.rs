//! Fetch answers whose record data goes from the segment files to the socket with
//! `sendfile(2)`, as on Kafka's brokers, never through the broker's memory.
//!
//! The response is encoded with a unique 16-byte marker in place of each partition's
//! records; the encoded frame is then cut at the markers, each marker's length prefix is
//! rewritten with the real length, and the file slice takes the marker's place. A socket
//! that cannot take `sendfile` gets the bytes copied through memory instead.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use crate::log::{FileSlice, Records};
use crate::protocol::kafka::frame;
use crate::protocol::kafka::{Encodable, messages::ApiKey};
use crate::server::metrics::Metrics;

const MARKER_LEN: usize = 16;
const NONCE_LEN: usize = 12;

/// One piece of a response on its way to the socket.
#[derive(Debug)]
pub(super) enum Part {
    Bytes(Bytes),
    File(FileSlice),
}

/// The file slices of one response, each standing in the encoded response as a marker.
pub(super) struct FileRecords {
    nonce: [u8; NONCE_LEN],
    slices: Vec<FileSlice>,
}

impl FileRecords {
    pub(super) fn new() -> Self {
        Self {
            nonce: rand::random(),
            slices: Vec::new(),
        }
    }

    /// What to encode for `records`: the bytes when they are in memory, a marker when they
    /// are in a file.
    pub(super) fn stand_in(&mut self, records: Records) -> Bytes {
        match records {
            Records::Memory(bytes) => bytes,
            Records::File(slice) if slice.is_empty() => Bytes::new(),
            Records::File(slice) => {
                let index = u32::try_from(self.slices.len()).expect("fewer than 2^32 partitions");
                self.slices.push(slice);
                let mut marker = BytesMut::with_capacity(MARKER_LEN);
                marker.put_slice(&self.nonce);
                marker.put_u32(index);
                marker.freeze()
            }
        }
    }

    /// Encodes `body` as the answer to a request of `api` at `version`, in parts.
    pub(super) fn encode<B: Encodable>(
        self,
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &B,
    ) -> Result<Vec<Part>, String> {
        let frame = frame::response(api, version, correlation_id, body)?;
        // Flexible versions have a response header v1; their records are COMPACT_RECORDS.
        let compact = api.response_header_version(version) >= 1;
        self.splice(frame, compact)
            .map_err(|why| format!("cannot lay out a {api:?} v{version} response: {why}"))
    }

    /// Cuts `frame` at each marker and puts its file slice, with its real length, in its
    /// place; the frame's size prefix then counts the slices' bytes.
    fn splice(self, frame: Bytes, compact: bool) -> Result<Vec<Part>, &'static str> {
        if self.slices.is_empty() {
            return Ok(vec![Part::Bytes(frame)]);
        }
        let marker_prefix: &[u8] = if compact {
            &[MARKER_LEN as u8 + 1]
        } else {
            &[0, 0, 0, MARKER_LEN as u8]
        };
        let mut parts = Vec::with_capacity(self.slices.len() * 3 + 1);
        let mut slices: Vec<Option<FileSlice>> = self.slices.into_iter().map(Some).collect();
        let mut size = frame.len() - 4;
        let mut from = 0;
        let mut search = 0;
        while let Some(found) = find(&frame[search..], &self.nonce) {
            let at = search + found;
            search = at + 1;
            let Some(index) = frame
                .get(at + NONCE_LEN..at + MARKER_LEN)
                .map(|i| u32::from_be_bytes(i.try_into().expect("four bytes")) as usize)
            else {
                continue;
            };
            if at < from + marker_prefix.len()
                || &frame[at - marker_prefix.len()..at] != marker_prefix
            {
                continue;
            }
            let Some(slice) = slices.get_mut(index).and_then(Option::take) else {
                continue;
            };
            let mut length = BytesMut::with_capacity(5);
            if compact {
                put_unsigned_varint(&mut length, slice.len() as u64 + 1);
            } else {
                let len = i32::try_from(slice.len()).map_err(|_| "records over 2 GiB")?;
                length.put_i32(len);
            }
            size = size - marker_prefix.len() - MARKER_LEN + length.len() + slice.len();
            parts.push(Part::Bytes(frame.slice(from..at - marker_prefix.len())));
            parts.push(Part::Bytes(length.freeze()));
            parts.push(Part::File(slice));
            from = at + MARKER_LEN;
            search = from;
        }
        if slices.iter().any(Option::is_some) {
            return Err("a partition's records were not found where they were encoded");
        }
        parts.push(Part::Bytes(frame.slice(from..)));
        // The size prefix is in the first part, which ends before the first marker.
        let Some(Part::Bytes(first)) = parts.first_mut() else {
            unreachable!("the first part is the frame's start")
        };
        let mut start = BytesMut::from(&first[..]);
        start[..4].copy_from_slice(
            &i32::try_from(size)
                .map_err(|_| "a response over 2 GiB")?
                .to_be_bytes(),
        );
        *first = start.freeze();
        Ok(parts)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn put_unsigned_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Writes `parts` to the connection in order, file slices with `sendfile`.
pub(super) async fn write_parts(
    writer: &mut OwnedWriteHalf,
    parts: Vec<Part>,
    metrics: &Metrics,
) -> io::Result<()> {
    for part in parts {
        match part {
            Part::Bytes(bytes) => writer.write_all(&bytes).await?,
            Part::File(slice) => {
                let copied = send_file(writer.as_ref(), &slice).await?;
                if copied {
                    let bytes = slice.read()?;
                    writer.write_all(&bytes).await?;
                    metrics.kafka_records_sent("copy", bytes.len() as u64);
                } else {
                    metrics.kafka_records_sent("sendfile", slice.len() as u64);
                }
            }
        }
    }
    Ok(())
}

/// Sends `slice` to `stream` with `sendfile`. True when the socket cannot take it and
/// nothing was sent, so the caller copies instead. A file that ends early (a follower cut
/// its log back while it was sent) is an error: the frame is already promised at its size.
async fn send_file(stream: &TcpStream, slice: &FileSlice) -> io::Result<bool> {
    let mut offset = slice.position();
    let end = offset + slice.len() as u64;
    while offset < end {
        stream.writable().await?;
        let count = usize::try_from(end - offset).unwrap_or(usize::MAX);
        let sent = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, slice.file(), Some(&mut offset), count)
                .map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a segment file ended before the bytes promised from it (its log was cut back)",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e)
                if offset == slice.position()
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                    ) =>
            {
                return Ok(true);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TopicPartition;
    use crate::log::{Log, LogConfig};
    use crate::protocol::kafka::Decodable;
    use crate::protocol::kafka::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use crate::protocol::kafka::messages::{FetchResponse, ResponseHeader, TopicName};
    use crate::record::{BatchBuilder, Compression};
    use tokio::io::AsyncReadExt;

    /// A log with `batches` batches of 10 records, in `dir`.
    fn log_with(dir: &std::path::Path, batches: usize) -> Log {
        let tp = TopicPartition::new("orders", 0);
        let (log, _) = Log::open(dir, tp, LogConfig::default(), true, (None, None)).unwrap();
        for b in 0..batches {
            let mut builder = BatchBuilder::new(Compression::None, 1024);
            for r in 0..10 {
                builder.append(0, None, Some(format!("{b}-{r}").as_bytes()), &[]);
            }
            log.append_as_leader(&builder.build().unwrap(), 0, 0)
                .unwrap();
        }
        log
    }

    fn file_records(log: &Log, offset: i64) -> Records {
        log.read_file(offset, 1 << 20, i64::MAX).unwrap().records
    }

    fn response(records: Vec<Bytes>) -> FetchResponse {
        let partitions = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_records(Some(r))
            })
            .collect();
        FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName("orders".into()))
                .with_partitions(partitions),
        ])
    }

    /// Sends `parts` over a real TCP connection and reads back the one frame.
    async fn round_trip(parts: Vec<Part>) -> io::Result<Bytes> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let (server, _) = listener.accept().await?;
        let (_reader, mut writer) = server.into_split();
        let sending =
            tokio::spawn(async move { write_parts(&mut writer, parts, &Metrics::new()).await });
        let mut client = client;
        let mut frame = Vec::new();
        client.read_to_end(&mut frame).await?;
        sending.await.expect("the sender ends")?;
        Ok(Bytes::from(frame))
    }

    #[tokio::test]
    async fn file_records_reach_the_socket_as_if_they_were_encoded_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with(dir.path(), 20);
        // Compact (v12+) and classic (below v12) record lengths.
        for version in [4, 11, 12, 16, 17] {
            let mut files = FileRecords::new();
            let stand_ins = vec![
                files.stand_in(file_records(&log, 0)),
                files.stand_in(Records::default()),
                files.stand_in(file_records(&log, 150)),
            ];
            let parts = files
                .encode(ApiKey::Fetch, version, 7, &response(stand_ins))
                .unwrap();
            assert!(parts.iter().filter(|p| matches!(p, Part::File(_))).count() == 2);
            let sent = round_trip(parts).await.unwrap();
            let expected = response(vec![
                log.read(0, 1 << 20, i64::MAX).unwrap().records,
                Bytes::new(),
                log.read(150, 1 << 20, i64::MAX).unwrap().records,
            ]);
            let in_memory = frame::response(ApiKey::Fetch, version, 7, &expected).unwrap();
            assert_eq!(sent, in_memory, "v{version}");
            let mut body = sent.slice(4..);
            let header_version = ApiKey::Fetch.response_header_version(version);
            let header = ResponseHeader::decode(&mut body, header_version).unwrap();
            assert_eq!(header.correlation_id, 7);
            let decoded = FetchResponse::decode(&mut body, version).unwrap();
            let records: Vec<_> = decoded.responses[0]
                .partitions
                .iter()
                .map(|p| p.records.clone().unwrap_or_default())
                .collect();
            let expected: Vec<_> = expected.responses[0]
                .partitions
                .iter()
                .map(|p| p.records.clone().unwrap_or_default())
                .collect();
            assert!(
                records == expected,
                "v{version}: the records decode as sent"
            );
        }
    }

    #[tokio::test]
    async fn a_segment_cut_short_while_it_is_sent_ends_the_connection_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with(dir.path(), 20);
        let mut files = FileRecords::new();
        let stand_in = files.stand_in(file_records(&log, 0));
        let parts = files
            .encode(ApiKey::Fetch, 16, 1, &response(vec![stand_in]))
            .unwrap();
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(segment)
            .unwrap()
            .set_len(100)
            .unwrap();
        let error = round_trip(parts).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
    }

    #[test]
    fn responses_without_file_records_are_left_whole() {
        let files = FileRecords::new();
        let body = response(vec![Bytes::from_static(b"in memory")]);
        let parts = files.encode(ApiKey::Fetch, 12, 3, &body).unwrap();
        let [Part::Bytes(frame)] = &parts[..] else {
            panic!("one part: {parts:?}")
        };
        assert_eq!(
            frame,
            &frame::response(ApiKey::Fetch, 12, 3, &body).unwrap()
        );
    }
}

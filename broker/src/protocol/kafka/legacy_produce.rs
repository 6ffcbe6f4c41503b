//! Produce v0 to v2, which Kafka 4 lists in ApiVersions (librdkafka before 2.x decides from
//! that list whether a broker takes compressed batches) but no longer accepts: each
//! partition of such a request is answered with UNSUPPORTED_VERSION, in the request's own
//! version, so the client reports a clear error instead of a dropped connection. The
//! `kafka-protocol` crate knows these versions no more, so their few fields are read and
//! written here.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ResponseError;

fn string(body: &mut Bytes) -> Option<Bytes> {
    let len = usize::try_from(body.try_get_i16().ok()?).ok()?;
    (body.remaining() >= len).then(|| body.split_to(len))
}

fn count(body: &mut Bytes) -> Option<usize> {
    let n = usize::try_from(body.try_get_i32().ok()?).ok()?;
    // Every element takes at least a byte: a larger count is not a real request.
    (n <= body.remaining()).then_some(n)
}

/// The response frame to a Produce request of version 0, 1 or 2 (`body` after the request
/// header): every partition refused with UNSUPPORTED_VERSION. None for acks=0, which gets
/// no response, or for a body that does not parse.
pub fn refuse(version: i16, correlation_id: i32, mut body: Bytes) -> Option<Bytes> {
    let acks = body.try_get_i16().ok()?;
    let _timeout = body.try_get_i32().ok()?;
    let mut topics = Vec::new();
    for _ in 0..count(&mut body)? {
        let name = string(&mut body)?;
        let mut partitions = Vec::new();
        for _ in 0..count(&mut body)? {
            partitions.push(body.try_get_i32().ok()?);
            let size = usize::try_from(body.try_get_i32().ok()?).unwrap_or(0);
            if body.remaining() < size {
                return None;
            }
            body.advance(size);
        }
        topics.push((name, partitions));
    }
    if acks == 0 {
        return None;
    }
    let mut out = BytesMut::new();
    out.put_i32(0);
    out.put_i32(correlation_id);
    out.put_i32(topics.len() as i32);
    for (name, partitions) in topics {
        out.put_i16(name.len() as i16);
        out.put_slice(&name);
        out.put_i32(partitions.len() as i32);
        for partition in partitions {
            out.put_i32(partition);
            out.put_i16(ResponseError::UnsupportedVersion.code());
            out.put_i64(-1); // base offset
            if version >= 2 {
                out.put_i64(-1); // log append time
            }
        }
    }
    if version >= 1 {
        out.put_i32(0); // throttle time
    }
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(acks: i16) -> Bytes {
        let mut body = BytesMut::new();
        body.put_i16(acks);
        body.put_i32(1000);
        body.put_i32(1);
        body.put_i16(2);
        body.put_slice(b"t1");
        body.put_i32(2);
        for partition in [0, 3] {
            body.put_i32(partition);
            body.put_i32(4);
            body.put_slice(b"junk");
        }
        body.freeze()
    }

    #[test]
    fn each_partition_is_refused_in_the_requests_version() {
        for (version, per_partition, tail) in [(0, 14, 0), (1, 14, 4), (2, 22, 4)] {
            let frame = refuse(version, 7, request(1)).expect("an answer");
            let mut r = frame.clone();
            assert_eq!(r.get_i32() as usize, frame.len() - 4);
            assert_eq!(r.get_i32(), 7);
            assert_eq!(r.get_i32(), 1);
            assert_eq!(r.get_i16(), 2);
            r.advance(2);
            assert_eq!(r.get_i32(), 2);
            assert_eq!(r.get_i32(), 0);
            assert_eq!(r.get_i16(), 35, "UNSUPPORTED_VERSION");
            assert_eq!(r.remaining(), per_partition - 6 + per_partition + tail);
        }
    }

    #[test]
    fn acks_0_and_bodies_that_do_not_parse_get_nothing() {
        assert!(refuse(2, 1, request(0)).is_none());
        let mut cut = request(1);
        cut.truncate(cut.len() - 3);
        assert!(refuse(2, 1, cut).is_none());
        let mut huge = BytesMut::new();
        huge.put_i16(1);
        huge.put_i32(0);
        huge.put_i32(i32::MAX);
        assert!(refuse(0, 1, huge.freeze()).is_none());
    }
}

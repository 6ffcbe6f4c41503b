//! Zig-zag variable-length integers, as the Kafka record format writes them.

/// A varint ran past the end of its buffer or was longer than its type allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarintError;

/// Reads a zig-zag varint (up to 5 bytes) and returns it with the bytes it used.
pub fn read_varint(buf: &[u8]) -> Result<(i32, usize), VarintError> {
    let (raw, used) = read_unsigned(buf, 5)?;
    let raw = u32::try_from(raw).map_err(|_| VarintError)?;
    Ok((((raw >> 1) as i32) ^ -((raw & 1) as i32), used))
}

/// Reads a zig-zag varlong (up to 10 bytes) and returns it with the bytes it used.
pub fn read_varlong(buf: &[u8]) -> Result<(i64, usize), VarintError> {
    let (raw, used) = read_unsigned(buf, 10)?;
    Ok((((raw >> 1) as i64) ^ -((raw & 1) as i64), used))
}

fn read_unsigned(buf: &[u8], max_len: usize) -> Result<(u64, usize), VarintError> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().take(max_len).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(VarintError)
}

pub fn write_varint(out: &mut Vec<u8>, value: i32) {
    write_unsigned(out, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

pub fn write_varlong(out: &mut Vec<u8>, value: i64) {
    write_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn write_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// How many bytes `write_varint(value)` writes.
pub fn varint_len(value: i32) -> usize {
    unsigned_len(((value << 1) ^ (value >> 31)) as u32 as u64)
}

/// How many bytes `write_varlong(value)` writes.
pub fn varlong_len(value: i64) -> usize {
    unsigned_len(((value << 1) ^ (value >> 63)) as u64)
}

fn unsigned_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_report_their_length() {
        for value in [0, 1, -1, 63, -64, 64, 300, -300, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
            assert_eq!(read_varint(&out), Ok((value, out.len())));
        }
        for value in [0, 1, -1, 1 << 40, -(1 << 40), i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_varlong(&mut out, value);
            assert_eq!(out.len(), varlong_len(value), "{value}");
            assert_eq!(read_varlong(&out), Ok((value, out.len())));
        }
    }

    #[test]
    fn kafka_encodings_match_the_spec() {
        // Zig-zag: 0 -> 0, -1 -> 1, 1 -> 2, -2 -> 3; 150 -> 300 -> [0xac, 0x02].
        let mut out = Vec::new();
        write_varint(&mut out, -1);
        write_varint(&mut out, 150);
        assert_eq!(out, [0x01, 0xac, 0x02]);
    }

    #[test]
    fn truncated_or_overlong_varints_are_errors() {
        assert_eq!(read_varint(&[0x80]), Err(VarintError));
        assert_eq!(read_varint(&[]), Err(VarintError));
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(VarintError)
        );
        assert_eq!(read_varlong(&[0xff; 11]), Err(VarintError));
    }
}

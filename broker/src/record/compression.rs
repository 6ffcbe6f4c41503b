//! The compression codecs of the Kafka record format, framed exactly as Kafka frames them:
//! gzip streams, snappy in the xerial framing of snappy-java (raw snappy is also read),
//! LZ4 frames, and zstd frames.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

/// The codec named by the low three bits of a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// No batch decompresses to more than this; anything larger is refused as corrupt rather
/// than allowed to exhaust memory.
pub const MAX_DECOMPRESSED_BYTES: usize = 256 * 1024 * 1024;

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_BLOCK_SIZE: usize = 32 * 1024;

impl Compression {
    pub fn from_attributes(attributes: i16) -> Option<Self> {
        match attributes & 0x07 {
            0 => Some(Self::None),
            1 => Some(Self::Gzip),
            2 => Some(Self::Snappy),
            3 => Some(Self::Lz4),
            4 => Some(Self::Zstd),
            _ => None,
        }
    }

    pub fn attribute_bits(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }

    /// Appends the compressed form of `input` to `out`.
    pub fn compress(self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Self::None => out.extend_from_slice(input),
            Self::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
                encoder.write_all(input)?;
                encoder.finish()?;
            }
            Self::Snappy => xerial_compress(input, out)?,
            Self::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent);
                let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
                encoder.write_all(input)?;
                encoder.finish().map_err(io::Error::other)?;
            }
            Self::Zstd => {
                let compressed = zstd::bulk::compress(input, 3)?;
                out.extend_from_slice(&compressed);
            }
        }
        Ok(())
    }

    /// Decompresses `input`; `size_hint` is a guess of the output size used to size buffers.
    pub fn decompress(self, input: &[u8], size_hint: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(size_hint.min(MAX_DECOMPRESSED_BYTES));
        match self {
            Self::None => out.extend_from_slice(input),
            Self::Gzip => read_bounded(flate2::read::GzDecoder::new(input), &mut out)?,
            Self::Snappy => xerial_decompress(input, &mut out)?,
            Self::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(input), &mut out)?,
            Self::Zstd => read_bounded(zstd::stream::read::Decoder::with_buffer(input)?, &mut out)?,
        }
        Ok(out)
    }
}

fn read_bounded(reader: impl Read, out: &mut Vec<u8>) -> io::Result<()> {
    let limit = MAX_DECOMPRESSED_BYTES as u64 + 1;
    reader.take(limit).read_to_end(out)?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(too_large());
    }
    Ok(())
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes"),
    )
}

/// snappy-java's stream format, which Kafka's producers write: a 16-byte header, then
/// blocks of raw snappy each preceded by its big-endian length.
fn xerial_compress(input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.extend_from_slice(XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes()); // version
    out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
    let mut encoder = snap::raw::Encoder::new();
    for chunk in input.chunks(XERIAL_BLOCK_SIZE) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.resize(start + 4 + snap::raw::max_compress_len(chunk.len()), 0);
        let written = encoder
            .compress(chunk, &mut out[start + 4..])
            .map_err(io::Error::other)?;
        out.truncate(start + 4 + written);
        out[start..start + 4].copy_from_slice(&(written as u32).to_be_bytes());
    }
    Ok(())
}

fn xerial_decompress(input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let mut decoder = snap::raw::Decoder::new();
    if !input.starts_with(XERIAL_MAGIC) {
        // Some clients write a bare snappy block; Kafka reads those too.
        return snappy_block(&mut decoder, input, out);
    }
    let mut rest = input
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| invalid("snappy header is truncated"))?;
    while !rest.is_empty() {
        let Some((len, body)) = rest.split_first_chunk::<4>() else {
            return Err(invalid("snappy block length is truncated"));
        };
        let len = u32::from_be_bytes(*len) as usize;
        let block = body
            .get(..len)
            .ok_or_else(|| invalid("snappy block is truncated"))?;
        snappy_block(&mut decoder, block, out)?;
        rest = &body[len..];
    }
    Ok(())
}

fn snappy_block(
    decoder: &mut snap::raw::Decoder,
    block: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let len = snap::raw::decompress_len(block).map_err(|e| invalid(&e.to_string()))?;
    if out.len() + len > MAX_DECOMPRESSED_BYTES {
        return Err(too_large());
    }
    let start = out.len();
    out.resize(start + len, 0);
    decoder
        .decompress(block, &mut out[start..])
        .map_err(|e| invalid(&e.to_string()))?;
    Ok(())
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "uncompressed" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            "snappy" => Ok(Self::Snappy),
            "lz4" => Ok(Self::Lz4),
            "zstd" => Ok(Self::Zstd),
            other => Err(format!(
                "unknown compression '{other}': use one of none, gzip, snappy, lz4, zstd"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let input = sample();
        for codec in ALL {
            let mut compressed = Vec::new();
            codec.compress(&input, &mut compressed).expect("compress");
            let output = codec
                .decompress(&compressed, input.len())
                .expect("decompress");
            assert_eq!(output, input, "{codec}");
        }
    }

    #[test]
    fn snappy_uses_the_xerial_framing_and_reads_bare_blocks() {
        let input = sample();
        let mut framed = Vec::new();
        Compression::Snappy
            .compress(&input, &mut framed)
            .expect("compress");
        assert!(framed.starts_with(XERIAL_MAGIC));
        let bare = snap::raw::Encoder::new()
            .compress_vec(&input)
            .expect("compress");
        assert_eq!(
            Compression::Snappy.decompress(&bare, 0).expect("bare"),
            input
        );
    }

    #[test]
    fn lz4_writes_a_standard_frame() {
        let mut framed = Vec::new();
        Compression::Lz4
            .compress(b"hello hello hello", &mut framed)
            .expect("compress");
        assert_eq!(&framed[..4], &0x184D2204u32.to_le_bytes());
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        let input = sample();
        for codec in ALL.into_iter().skip(1) {
            let mut compressed = Vec::new();
            codec.compress(&input, &mut compressed).expect("compress");
            compressed.truncate(compressed.len() / 2);
            assert!(codec.decompress(&compressed, 0).is_err(), "{codec}");
        }
    }

    #[test]
    fn codec_names_parse_and_unknown_names_say_what_is_allowed() {
        assert_eq!("ZSTD".parse::<Compression>(), Ok(Compression::Zstd));
        let err = "brotli".parse::<Compression>().unwrap_err();
        assert!(err.contains("none, gzip, snappy, lz4, zstd"), "{err}");
    }
}

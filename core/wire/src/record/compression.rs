//! Compression codecs with bounded decompression.
//!
//! Decompression is where a small batch can demand a huge buffer, so every codec reads through a
//! cap and fails once the output would pass it.

use super::batch::BatchError;
use std::io::Read;

/// Compression of a batch's records section.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// Snappy (raw, or xerial-framed as the Java client writes it).
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// Largest zstd window a batch may ask for (2^24 = 16 MiB), bounding the decoder's own buffers.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;
/// The xerial snappy-java stream header.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

impl Codec {
    /// All codecs, in attribute order.
    pub const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    /// The codec named by the low three bits of a batch's attributes.
    pub fn from_attributes(attributes: i16) -> Result<Self, BatchError> {
        match attributes & 0x07 {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(BatchError::Compression(format!("unknown codec id {other}"))),
        }
    }

    /// The codec's name as Kafka configs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    /// Parses a codec name (`none`/`uncompressed`, `gzip`, `snappy`, `lz4`, `zstd`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "none" | "uncompressed" => Some(Codec::None),
            "gzip" => Some(Codec::Gzip),
            "snappy" => Some(Codec::Snappy),
            "lz4" => Some(Codec::Lz4),
            "zstd" => Some(Codec::Zstd),
            _ => None,
        }
    }

    pub(crate) fn to_protocol(self) -> kafka_protocol::records::Compression {
        use kafka_protocol::records::Compression as C;
        match self {
            Codec::None => C::None,
            Codec::Gzip => C::Gzip,
            Codec::Snappy => C::Snappy,
            Codec::Lz4 => C::Lz4,
            Codec::Zstd => C::Zstd,
        }
    }
}

fn err(codec: Codec, e: impl std::fmt::Display) -> BatchError {
    BatchError::Compression(format!("{}: {e}", codec.name()))
}

/// Reads `r` to the end, failing if it yields more than `max_out` bytes.
fn read_capped(codec: Codec, r: impl Read, max_out: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    r.take(max_out as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| err(codec, e))?;
    if out.len() > max_out {
        return Err(err(codec, format!("expands past the {max_out}-byte cap")));
    }
    Ok(out)
}

fn snappy_raw(input: &[u8], max_out: usize, out: &mut Vec<u8>) -> Result<(), BatchError> {
    let len = snap::raw::decompress_len(input).map_err(|e| err(Codec::Snappy, e))?;
    if out.len() + len > max_out {
        return Err(err(
            Codec::Snappy,
            format!("expands past the {max_out}-byte cap"),
        ));
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(input, &mut out[start..])
        .map_err(|e| err(Codec::Snappy, e))?;
    Ok(())
}

/// Decompresses `input` with `codec`, refusing output over `max_out` bytes.
pub fn decompress(codec: Codec, input: &[u8], max_out: usize) -> Result<Vec<u8>, BatchError> {
    match codec {
        Codec::None => {
            if input.len() > max_out {
                return Err(err(
                    codec,
                    format!("{} bytes is over the {max_out}-byte cap", input.len()),
                ));
            }
            Ok(input.to_vec())
        }
        Codec::Gzip => read_capped(codec, flate2::read::GzDecoder::new(input), max_out),
        Codec::Lz4 => read_capped(
            codec,
            lz4::Decoder::new(input).map_err(|e| err(codec, e))?,
            max_out,
        ),
        Codec::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(input).map_err(|e| err(codec, e))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| err(codec, e))?;
            read_capped(codec, d, max_out)
        }
        Codec::Snappy => {
            let mut out = Vec::new();
            if input.starts_with(XERIAL_MAGIC) {
                let mut rest = input
                    .get(XERIAL_HEADER_LEN..)
                    .ok_or_else(|| err(codec, "short xerial header"))?;
                while !rest.is_empty() {
                    let len_bytes: [u8; 4] = rest
                        .get(..4)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| err(codec, "short block length"))?;
                    let len = u32::from_be_bytes(len_bytes) as usize;
                    let block = rest
                        .get(4..4 + len)
                        .ok_or_else(|| err(codec, "block longer than the batch"))?;
                    snappy_raw(block, max_out, &mut out)?;
                    rest = &rest[4 + len..];
                }
            } else {
                snappy_raw(input, max_out, &mut out)?;
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_bomb_is_capped() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 10 * 1024 * 1024]).unwrap();
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 64 * 1024);
        assert!(matches!(
            decompress(Codec::Gzip, &bomb, 1024 * 1024),
            Err(BatchError::Compression(_))
        ));
        assert_eq!(
            decompress(Codec::Gzip, &bomb, 10 * 1024 * 1024)
                .unwrap()
                .len(),
            10 * 1024 * 1024
        );
    }

    #[test]
    fn snappy_declared_length_is_checked_before_allocating() {
        // A raw snappy stream whose varint preamble claims ~4 GiB.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert!(decompress(Codec::Snappy, &claim, 1 << 20).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in Codec::ALL {
            let _ = decompress(codec, b"\x00\x01garbage\xff\xff\xff\xff", 1 << 20);
        }
    }

    #[test]
    fn codec_names_round_trip() {
        for c in Codec::ALL {
            assert_eq!(Codec::parse(c.name()), Some(c));
        }
        assert_eq!(Codec::parse("uncompressed"), Some(Codec::None));
        assert_eq!(Codec::parse("brotli"), None);
    }
}

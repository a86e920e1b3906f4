//! Capped decompression. Output grows from a small start as data arrives (never from a
//! declared size) and stops with an error one byte past the limit, so a gzip bomb costs at
//! most `limit` bytes of memory (vector M13). Multi-member gzip (what fluentd's buffer sends,
//! one member per emit, V11) is read to the end.

use super::DecodeError;
use std::io::{Read, Write};

/// gzip magic bytes.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Gunzips every member of `input`, failing once the output would pass `limit` bytes.
pub fn gunzip_capped(input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut dec = flate2::bufread::MultiGzDecoder::new(input);
    let mut out = Vec::with_capacity((input.len() * 4).min(limit).min(1 << 20));
    let mut buf = [0u8; 32 * 1024];
    loop {
        let n = dec
            .read(&mut buf)
            .map_err(|e| DecodeError::BadCompression(e.to_string()))?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(DecodeError::DecompressedTooLarge { limit });
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// zstd frame magic bytes.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Decompresses every zstd frame of `input`, failing once the output would pass `limit`.
pub fn unzstd_capped(input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut dec = zstd::stream::read::Decoder::with_buffer(input)
        .map_err(|e| DecodeError::BadCompression(e.to_string()))?;
    let mut out = Vec::with_capacity((input.len() * 4).min(limit).min(1 << 20));
    let mut buf = [0u8; 32 * 1024];
    loop {
        let n = dec
            .read(&mut buf)
            .map_err(|e| DecodeError::BadCompression(e.to_string()))?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(DecodeError::DecompressedTooLarge { limit });
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// zstd-compresses `input` as one frame at `level`.
pub fn zstd(input: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(input, level).unwrap_or_default()
}

/// Gzips `input` as one member at `level` (0-9).
pub fn gzip(input: &[u8], level: u32) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(input.len() / 4 + 64),
        flate2::Compression::new(level.min(9)),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(input);
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_member_is_read_to_the_end() {
        let mut two = gzip(b"hello ", 6);
        two.extend(gzip(b"world", 1));
        assert_eq!(gunzip_capped(&two, 100).unwrap(), b"hello world");
    }

    #[test]
    fn decompression_limit_stops_a_bomb() {
        let bomb = gzip(&vec![0u8; 8 << 20], 9);
        assert!(bomb.len() < 20_000);
        assert_eq!(
            gunzip_capped(&bomb, 1 << 20),
            Err(DecodeError::DecompressedTooLarge { limit: 1 << 20 })
        );
    }

    #[test]
    fn zstd_multi_frame_and_bomb() {
        let mut two = zstd(b"hello ", 3);
        two.extend(zstd(b"world", 1));
        assert_eq!(unzstd_capped(&two, 100).unwrap(), b"hello world");
        let bomb = zstd(&vec![0u8; 8 << 20], 19);
        assert_eq!(
            unzstd_capped(&bomb, 1 << 20),
            Err(DecodeError::DecompressedTooLarge { limit: 1 << 20 })
        );
        assert!(unzstd_capped(b"\x28\xb5\x2f\xfdgarbage", 100).is_err());
    }

    #[test]
    fn not_gzip_is_an_error() {
        assert!(matches!(
            gunzip_capped(b"notgzip", 100),
            Err(DecodeError::BadCompression(_))
        ));
    }
}

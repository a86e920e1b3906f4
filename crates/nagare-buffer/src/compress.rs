//! `compress gzip`: one gzip member per stored frame, decompressed with an exact, declared
//! length (never more: a corrupt frame cannot make the reader allocate without bound).

use std::io::{Read, Write};

/// Level 1: a buffer trades ratio for speed (see docs/benchmarks.md and the design notes'
/// per-event CPU budget). The output compresses again for its destination if it wants to.
const LEVEL: u32 = 1;

/// Appends `data` as one gzip member to `out`.
pub fn gzip_into(out: &mut Vec<u8>, data: &[u8]) {
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(LEVEL));
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    let _ = enc.finish();
}

/// Decompresses one gzip member that must inflate to exactly `raw_len` bytes, appending to
/// `out`. Anything else (bad data, a different length) is an error.
pub fn gunzip_exact(input: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    out.reserve(raw_len);
    let dec = flate2::read::GzDecoder::new(input);
    let n = match dec.take(raw_len as u64 + 1).read_to_end(out) {
        Ok(n) => n,
        Err(e) => {
            out.truncate(start);
            return Err(format!("gzip: {e}"));
        }
    };
    if n != raw_len {
        out.truncate(start);
        return Err(format!(
            "gzip member inflates to {n} bytes, header says {raw_len}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_length_check() {
        let mut z = Vec::new();
        gzip_into(&mut z, b"hello hello hello");
        let mut out = b"x".to_vec();
        gunzip_exact(&z, 17, &mut out).unwrap();
        assert_eq!(&out, b"xhello hello hello");
        let mut out = Vec::new();
        assert!(gunzip_exact(&z, 5, &mut out).is_err());
        assert!(out.is_empty());
        assert!(gunzip_exact(b"nonsense", 5, &mut out).is_err());
    }
}

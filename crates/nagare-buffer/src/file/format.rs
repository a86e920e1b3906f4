//! The chunk file format (pure: bytes in, bytes out). See the module docs of [`super`] for the
//! layout; every multi-byte integer is little-endian and every checksum is CRC-32 (IEEE).

use bytes::Bytes;
use nagare_core::{ChunkId, ChunkKey, Tag};

/// First bytes of every chunk file (format version 1).
pub const FILE_MAGIC: &[u8; 8] = b"NGRCHK01";
/// First bytes of every frame.
pub const FRAME_MAGIC: &[u8; 4] = b"NGFR";
/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 20;
/// Upper bound on a header body (a tag and record-key values; sanity check only).
pub const MAX_HEADER_LEN: usize = 1 << 20;
/// Upper bound on one frame's stored or raw length (sanity check only).
pub const MAX_FRAME_LEN: usize = 1 << 30;

/// Header flag: frames are gzip members.
pub const FLAG_GZIP: u8 = 1;

/// What a chunk file's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub id: ChunkId,
    /// Creation time, unix milliseconds.
    pub created_ms: u64,
    /// Frames are gzip members.
    pub gzip: bool,
    /// The events' tag.
    pub tag: Tag,
    /// The chunk key.
    pub key: ChunkKey,
}

/// Why bytes are not a valid header or frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// More bytes are needed (a torn tail when at the end of a file).
    Incomplete,
    /// The bytes are wrong: bad magic, bad checksum, impossible length.
    Corrupt(&'static str),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Incomplete => f.write_str("incomplete"),
            FormatError::Corrupt(why) => f.write_str(why),
        }
    }
}

fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

impl Header {
    /// The file prefix: magic, body length, body, body checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64 + self.tag.as_bytes().len());
        body.extend_from_slice(&self.id.0);
        body.extend_from_slice(&self.created_ms.to_le_bytes());
        body.push(if self.gzip { FLAG_GZIP } else { 0 });
        let tag = self.tag.as_bytes();
        body.extend_from_slice(&(tag.len() as u32).to_le_bytes());
        body.extend_from_slice(tag);
        let kf = (self.key.tag.is_some() as u8) | ((self.key.timekey.is_some() as u8) << 1);
        body.push(kf);
        if let Some(t) = &self.key.tag {
            body.extend_from_slice(&(t.as_bytes().len() as u32).to_le_bytes());
            body.extend_from_slice(t.as_bytes());
        }
        if let Some(tk) = self.key.timekey {
            body.extend_from_slice(&tk.to_le_bytes());
        }
        body.extend_from_slice(&(self.key.vars.len() as u16).to_le_bytes());
        for (k, v) in &self.key.vars {
            body.extend_from_slice(&(k.len() as u16).to_le_bytes());
            body.extend_from_slice(k.as_bytes());
            body.extend_from_slice(&(v.len() as u32).to_le_bytes());
            body.extend_from_slice(v);
        }
        let mut out = Vec::with_capacity(body.len() + 16);
        out.extend_from_slice(FILE_MAGIC);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc(&[&body]).to_le_bytes());
        out
    }

    /// Bytes [`Header::encode`] writes for this tag and key.
    pub fn encoded_len(tag: &Tag, key: &ChunkKey) -> usize {
        16 + 16
            + 8
            + 1
            + 4
            + tag.as_bytes().len()
            + 1
            + key.tag.as_ref().map_or(0, |t| 4 + t.as_bytes().len())
            + key.timekey.map_or(0, |_| 8)
            + 2
            + key
                .vars
                .iter()
                .map(|(k, v)| 2 + k.len() + 4 + v.len())
                .sum::<usize>()
    }

    /// Parses a file prefix; returns the header and the offset of the first frame.
    pub fn decode(buf: &[u8]) -> Result<(Header, usize), FormatError> {
        if buf.len() < 12 {
            return Err(FormatError::Incomplete);
        }
        if &buf[..8] != FILE_MAGIC {
            return Err(FormatError::Corrupt("bad file magic"));
        }
        let n = u32::from_le_bytes(buf[8..12].try_into().unwrap_or_default()) as usize;
        if n > MAX_HEADER_LEN {
            return Err(FormatError::Corrupt("header length out of range"));
        }
        if buf.len() < 12 + n + 4 {
            return Err(FormatError::Incomplete);
        }
        let body = &buf[12..12 + n];
        let want = u32::from_le_bytes(buf[12 + n..16 + n].try_into().unwrap_or_default());
        if crc(&[body]) != want {
            return Err(FormatError::Corrupt("header checksum mismatch"));
        }
        let h = parse_body(body).ok_or(FormatError::Corrupt("malformed header"))?;
        Ok((h, 16 + n))
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
}

fn parse_body(body: &[u8]) -> Option<Header> {
    let mut c = Cursor(body);
    let id = ChunkId(c.take(16)?.try_into().ok()?);
    let created_ms = c.u64()?;
    let flags = c.u8()?;
    let n = c.u32()? as usize;
    let tag = Tag::new(Bytes::copy_from_slice(c.take(n)?));
    let kf = c.u8()?;
    let key_tag = if kf & 1 != 0 {
        let n = c.u32()? as usize;
        Some(Tag::new(Bytes::copy_from_slice(c.take(n)?)))
    } else {
        None
    };
    let timekey = if kf & 2 != 0 {
        Some(c.u64()? as i64)
    } else {
        None
    };
    let nv = c.u16()? as usize;
    let mut vars = Vec::with_capacity(nv.min(64));
    for _ in 0..nv {
        let kl = c.u16()? as usize;
        let k = String::from_utf8(c.take(kl)?.to_vec()).ok()?;
        let vl = c.u32()? as usize;
        vars.push((k, Bytes::copy_from_slice(c.take(vl)?)));
    }
    if !c.0.is_empty() {
        return None;
    }
    Some(Header {
        id,
        created_ms,
        gzip: flags & FLAG_GZIP != 0,
        tag,
        key: ChunkKey {
            tag: key_tag,
            timekey,
            vars,
        },
    })
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of payload that follow the header.
    pub stored_len: usize,
    /// Bytes of entries after decompression (`stored_len` when not compressed).
    pub raw_len: usize,
    /// Events in the frame.
    pub records: u32,
    crc: u32,
}

impl FrameHeader {
    /// Parses the 20 header bytes (no payload check: see [`FrameHeader::verify`]).
    pub fn parse(b: &[u8]) -> Result<FrameHeader, FormatError> {
        if b.len() < FRAME_HEADER_LEN {
            return Err(FormatError::Incomplete);
        }
        if &b[..4] != FRAME_MAGIC {
            return Err(FormatError::Corrupt("bad frame magic"));
        }
        let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let (stored_len, raw_len) = (u(4) as usize, u(8) as usize);
        if stored_len > MAX_FRAME_LEN || raw_len > MAX_FRAME_LEN {
            return Err(FormatError::Corrupt("frame length out of range"));
        }
        Ok(FrameHeader {
            stored_len,
            raw_len,
            records: u(12),
            crc: u(16),
        })
    }

    /// Checks the payload (and the header fields) against the frame's checksum.
    pub fn verify(&self, header: &[u8], payload: &[u8]) -> bool {
        payload.len() == self.stored_len && crc(&[&header[4..16], payload]) == self.crc
    }
}

/// Appends one frame (header and payload) to `out`.
pub fn write_frame(out: &mut Vec<u8>, payload: &[u8], raw_len: usize, records: u32) {
    let start = out.len();
    out.extend_from_slice(FRAME_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&(raw_len as u32).to_le_bytes());
    out.extend_from_slice(&records.to_le_bytes());
    let c = crc(&[&out[start + 4..start + 16], payload]);
    out.extend_from_slice(&c.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Fills in the header of a frame built in place: `frame` is [`FRAME_HEADER_LEN`] reserved
/// bytes followed by the uncompressed payload (the same bytes [`write_frame`] writes, without
/// copying the payload).
pub fn seal_frame(frame: &mut [u8], records: u32) {
    let len = (frame.len() - FRAME_HEADER_LEN) as u32;
    let (head, payload) = frame.split_at_mut(FRAME_HEADER_LEN);
    head[..4].copy_from_slice(FRAME_MAGIC);
    head[4..8].copy_from_slice(&len.to_le_bytes());
    head[8..12].copy_from_slice(&len.to_le_bytes());
    head[12..16].copy_from_slice(&records.to_le_bytes());
    let c = crc(&[&head[4..16], payload]);
    head[16..20].copy_from_slice(&c.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_sealed_in_place_is_the_written_frame() {
        let mut written = Vec::new();
        write_frame(&mut written, b"payload bytes", 13, 3);
        let mut in_place = vec![0u8; FRAME_HEADER_LEN];
        in_place.extend_from_slice(b"payload bytes");
        seal_frame(&mut in_place, 3);
        assert_eq!(in_place, written);
        let h = FrameHeader::parse(&in_place).unwrap();
        assert!(h.verify(&in_place[..FRAME_HEADER_LEN], &in_place[FRAME_HEADER_LEN..]));
    }

    fn header() -> Header {
        Header {
            id: ChunkId([7; 16]),
            created_ms: 1_700_000_000_123,
            gzip: true,
            tag: Tag::from("app.web"),
            key: ChunkKey {
                tag: Some(Tag::from("app.web")),
                timekey: Some(-300),
                vars: vec![
                    ("service".into(), Bytes::from_static(b"api")),
                    ("$.a.b".into(), Bytes::new()),
                ],
            },
        }
    }

    #[test]
    fn header_round_trip_and_damage() {
        let enc = header().encode();
        assert_eq!(enc.len(), Header::encoded_len(&header().tag, &header().key));
        let (h, off) = Header::decode(&enc).unwrap();
        assert_eq!((h, off), (header(), enc.len()));
        for cut in 0..enc.len() {
            assert_eq!(Header::decode(&enc[..cut]), Err(FormatError::Incomplete));
        }
        let mut bad = enc.clone();
        bad[20] ^= 1;
        assert!(matches!(Header::decode(&bad), Err(FormatError::Corrupt(_))));
        let mut bad = enc;
        bad[0] = b'X';
        assert!(matches!(Header::decode(&bad), Err(FormatError::Corrupt(_))));
    }

    #[test]
    fn frame_round_trip_and_damage() {
        let mut out = Vec::new();
        write_frame(&mut out, b"payload", 7, 3);
        let fh = FrameHeader::parse(&out).unwrap();
        assert_eq!((fh.stored_len, fh.raw_len, fh.records), (7, 7, 3));
        assert!(fh.verify(&out[..20], &out[20..]));
        let mut bad = out.clone();
        bad[22] ^= 0x40;
        assert!(!fh.verify(&bad[..20], &bad[20..]));
        let mut bad = out.clone();
        bad[12] = 4; // records changed: the checksum covers the header fields too
        let fh2 = FrameHeader::parse(&bad).unwrap();
        assert!(!fh2.verify(&bad[..20], &bad[20..]));
        assert_eq!(FrameHeader::parse(&out[..19]), Err(FormatError::Incomplete));
    }
}

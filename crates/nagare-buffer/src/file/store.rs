//! Chunk files in a directory: create, append, seal, read back, quarantine, recover.

use super::format::{FormatError, FrameHeader, Header, FRAME_HEADER_LEN};
use crate::compress;
use nagare_core::ChunkId;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Sub-directory (of the buffer path) for chunks that cannot be delivered as they are.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Sub-directory where `nagare-forwarder buffer reinject` puts chunks for the buffer to adopt.
pub const INCOMING_DIR: &str = "incoming";
/// The lock file that keeps two processes (or two outputs) off one directory.
pub const LOCK_FILE: &str = ".lock";

/// Where a chunk file is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    Staged,
    /// Sealed, with the totals recorded in the name (records, raw bytes, file length).
    Queued {
        records: u64,
        raw: u64,
        len: u64,
    },
}

/// A chunk file's name, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkName {
    pub seq: u64,
    pub id: ChunkId,
    pub state: FileState,
}

impl ChunkName {
    /// `<seq>-<id>.staged` or `<seq>-<id>.<records>.<raw>.<len>.queued` (seq 16 hex digits,
    /// id 32 hex digits).
    pub fn render(&self) -> String {
        let id = self.id.hex();
        match self.state {
            FileState::Staged => format!("{:016x}-{id}.staged", self.seq),
            FileState::Queued { records, raw, len } => {
                format!("{:016x}-{id}.{records}.{raw}.{len}.queued", self.seq)
            }
        }
    }

    pub fn parse(name: &str) -> Option<ChunkName> {
        let (seq, rest) = name.split_once('-')?;
        if seq.len() != 16 {
            return None;
        }
        let seq = u64::from_str_radix(seq, 16).ok()?;
        let (id, rest) = rest.split_once('.')?;
        let id = parse_id(id)?;
        let state = if rest == "staged" {
            FileState::Staged
        } else {
            let mut it = rest.split('.');
            let records = it.next()?.parse().ok()?;
            let raw = it.next()?.parse().ok()?;
            let len = it.next()?.parse().ok()?;
            if it.next()? != "queued" || it.next().is_some() {
                return None;
            }
            FileState::Queued { records, raw, len }
        };
        Some(ChunkName { seq, id, state })
    }
}

/// Parses 32 hex digits.
pub fn parse_id(s: &str) -> Option<ChunkId> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(ChunkId(out))
}

/// A staged chunk's open file.
#[derive(Debug)]
pub struct StagedFile {
    pub file: Arc<File>,
    pub path: PathBuf,
    /// Bytes written and known good (header plus whole frames).
    pub len: u64,
    /// Written since the last fsync.
    pub dirty: bool,
}

/// What a walk over a chunk file's frame headers found.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub header: Header,
    pub frames: u64,
    pub records: u64,
    pub raw: u64,
    /// End of the last whole frame.
    pub valid_len: u64,
    pub file_len: u64,
    /// Why the bytes after `valid_len` are not a frame, when they are damaged rather than an
    /// incomplete frame: a bad frame header followed by nothing that looks like a frame (a
    /// zero-filled tail after a power loss: the size was written, the blocks were not).
    pub damaged: Option<String>,
}

impl Scanned {
    /// Whether bytes after the last whole frame remain (an append cut short by a crash, or a
    /// damaged tail: see [`Scanned::damaged`]).
    pub fn torn(&self) -> bool {
        self.valid_len < self.file_len
    }
}

/// Whether the frame magic occurs in `f` from `from` to the end (read in blocks: constant
/// memory).
fn magic_from(f: &mut (impl Read + Seek), from: u64) -> io::Result<bool> {
    let magic = super::format::FRAME_MAGIC;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut keep = 0usize;
    loop {
        let n = read_full(f, &mut buf[keep..])?;
        if n == 0 {
            return Ok(false);
        }
        let end = keep + n;
        if buf[..end].windows(magic.len()).any(|w| w == magic) {
            return Ok(true);
        }
        // The last bytes may begin a magic that continues in the next block.
        let k = (magic.len() - 1).min(end);
        buf.copy_within(end - k..end, 0);
        keep = k;
    }
}

/// Whether the frame magic occurs in `data` from `from` on.
fn magic_in(data: &[u8], from: usize) -> bool {
    let magic = super::format::FRAME_MAGIC;
    data.get(from..)
        .is_some_and(|d| d.windows(magic.len()).any(|w| w == magic))
}

/// Why a chunk file cannot be used as it is.
#[derive(Debug)]
pub enum ChunkFileError {
    Io(io::Error),
    /// Shorter than its header: created, never appended to (nothing was acknowledged).
    NoHeader,
    /// Damaged (bad magic, checksum, impossible length) at `offset`.
    Corrupt {
        reason: String,
        offset: u64,
    },
}

impl std::fmt::Display for ChunkFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkFileError::Io(e) => write!(f, "i/o error: {e}"),
            ChunkFileError::NoHeader => f.write_str("file shorter than its header"),
            ChunkFileError::Corrupt { reason, offset } => {
                write!(f, "corrupt at byte {offset}: {reason}")
            }
        }
    }
}

impl From<io::Error> for ChunkFileError {
    fn from(e: io::Error) -> Self {
        ChunkFileError::Io(e)
    }
}

/// Reads up to `buf.len()` bytes; fewer only at end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_header(r: &mut impl Read) -> Result<(Header, u64), ChunkFileError> {
    let mut pre = [0u8; 12];
    let n = read_full(r, &mut pre)?;
    if n < 12 {
        return match Header::decode(&pre[..n]) {
            Err(FormatError::Corrupt(why)) => Err(ChunkFileError::Corrupt {
                reason: why.into(),
                offset: 0,
            }),
            _ => Err(ChunkFileError::NoHeader),
        };
    }
    // The length is checked by decode before anything is allocated from it.
    match Header::decode(&pre) {
        Err(FormatError::Corrupt(why)) => {
            return Err(ChunkFileError::Corrupt {
                reason: why.into(),
                offset: 0,
            })
        }
        Err(FormatError::Incomplete) | Ok(_) => {}
    }
    let body = u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]) as usize;
    let mut buf = pre.to_vec();
    buf.resize(12 + body + 4, 0);
    let n = read_full(r, &mut buf[12..])?;
    buf.truncate(12 + n);
    match Header::decode(&buf) {
        Ok((h, off)) => Ok((h, off as u64)),
        Err(FormatError::Incomplete) => Err(ChunkFileError::NoHeader),
        Err(FormatError::Corrupt(why)) => Err(ChunkFileError::Corrupt {
            reason: why.into(),
            offset: 0,
        }),
    }
}

/// Walks the header and the frame headers (seeking over payloads: nothing is held in memory
/// and payloads are not read). Checksums of payloads are checked by [`read_chunk`].
pub fn scan(path: &Path) -> Result<Scanned, ChunkFileError> {
    let mut f = BufReader::with_capacity(4096, File::open(path)?);
    let file_len = f.get_ref().metadata()?.len();
    let (header, mut pos) = read_header(&mut f)?;
    let (mut frames, mut records, mut raw) = (0u64, 0u64, 0u64);
    let mut damaged = None;
    let mut hb = [0u8; FRAME_HEADER_LEN];
    loop {
        f.seek(SeekFrom::Start(pos))?;
        let n = read_full(&mut f, &mut hb)?;
        if n == 0 {
            break;
        }
        // A bad frame header is the damaged tail when nothing after it looks like a frame
        // (the good frames before it are kept); otherwise the file is corrupt (the CLI can
        // salvage the frames on both sides).
        let parsed = if n < FRAME_HEADER_LEN {
            // A header cut short: a torn tail if what is there is a prefix of a frame header.
            if n >= 4 && &hb[..4] != super::format::FRAME_MAGIC {
                Err("bad frame magic".to_string())
            } else {
                break;
            }
        } else {
            FrameHeader::parse(&hb).map_err(|e| e.to_string())
        };
        let fh = match parsed {
            Ok(fh) => fh,
            Err(reason) => {
                if magic_from(&mut f, pos + 1)? {
                    return Err(ChunkFileError::Corrupt {
                        reason,
                        offset: pos,
                    });
                }
                damaged = Some(reason);
                break;
            }
        };
        let end = pos + FRAME_HEADER_LEN as u64 + fh.stored_len as u64;
        if end > file_len {
            break;
        }
        frames += 1;
        records += fh.records as u64;
        raw += fh.raw_len as u64;
        pos = end;
    }
    Ok(Scanned {
        header,
        frames,
        records,
        raw,
        valid_len: pos,
        file_len,
        damaged,
    })
}

/// A chunk read back for writing.
#[derive(Debug)]
pub struct ReadChunk {
    pub header: Header,
    /// The entries, uncompressed.
    pub bytes: Vec<u8>,
    pub records: u64,
    pub frames: u64,
    /// Offset of an incomplete or damaged last frame, if any (its bytes are not in `bytes`).
    pub torn_at: Option<u64>,
    /// Why the tail at `torn_at` was left out, when it is damaged rather than incomplete (a
    /// bad frame header or checksum, with nothing that looks like a frame after it).
    pub damaged: Option<String>,
}

/// Reads and verifies a whole chunk file: every frame's checksum, every gzip member's length.
/// Memory: the file's bytes (plus the uncompressed entries with `compress gzip`).
///
/// The file is read in one go into memory that is not zeroed first (std reads into the
/// vector's spare capacity, sized from the file's length: one `read` for the whole chunk, and a
/// short one that finds the end);
/// the payloads of a plain chunk are then moved down over the frame headers in place, so the
/// entries end up contiguous at the start of the same allocation.
pub fn read_chunk(path: &Path) -> Result<ReadChunk, ChunkFileError> {
    let mut raw = std::fs::read(path)?;
    let (header, start) = read_header(&mut &raw[..])?;
    let mut pos = start as usize;
    // Plain: payload bytes moved to the front so far. Gzip: the entries go to `unpacked`.
    let mut kept = 0usize;
    let mut unpacked = Vec::new();
    let (mut frames, mut records) = (0u64, 0u64);
    let mut torn_at = None;
    let mut damaged = None;
    // A damaged frame (bad header or checksum) after good ones, with nothing that looks like
    // a frame after it, is the damaged tail (a power loss: the last appends' blocks never
    // written): the good frames are delivered. Anything else is a corrupt chunk.
    let tail_or_corrupt = |raw: &[u8], frames: u64, pos: usize, reason: String| {
        if frames > 0 && !magic_in(raw, pos + 1) {
            Ok(reason)
        } else {
            Err(ChunkFileError::Corrupt {
                reason,
                offset: pos as u64,
            })
        }
    };
    while pos < raw.len() {
        let hb = &raw[pos..raw.len().min(pos + FRAME_HEADER_LEN)];
        let n = hb.len();
        let fh = match FrameHeader::parse(hb) {
            Ok(fh) => fh,
            Err(FormatError::Incomplete)
                if hb[..n.min(4)] == super::format::FRAME_MAGIC[..n.min(4)] =>
            {
                torn_at = Some(pos as u64);
                break;
            }
            Err(e) => {
                damaged = Some(tail_or_corrupt(&raw, frames, pos, e.to_string())?);
                torn_at = Some(pos as u64);
                break;
            }
        };
        let a = pos + FRAME_HEADER_LEN;
        let Some(e) = a.checked_add(fh.stored_len).filter(|&e| e <= raw.len()) else {
            torn_at = Some(pos as u64);
            break;
        };
        if !fh.verify(&raw[pos..a], &raw[a..e]) {
            let reason = "frame checksum mismatch".to_string();
            damaged = Some(tail_or_corrupt(&raw, frames, pos, reason)?);
            torn_at = Some(pos as u64);
            break;
        }
        if header.gzip {
            compress::gunzip_exact(&raw[a..e], fh.raw_len, &mut unpacked).map_err(|e| {
                ChunkFileError::Corrupt {
                    reason: e,
                    offset: pos as u64,
                }
            })?;
        } else if fh.raw_len != fh.stored_len {
            return Err(ChunkFileError::Corrupt {
                reason: "raw length differs from stored length in an uncompressed chunk".into(),
                offset: pos as u64,
            });
        } else {
            raw.copy_within(a..e, kept);
            kept += fh.stored_len;
        }
        frames += 1;
        records += fh.records as u64;
        pos = e;
    }
    let bytes = if header.gzip {
        unpacked
    } else {
        raw.truncate(kept);
        raw
    };
    Ok(ReadChunk {
        header,
        bytes,
        records,
        frames,
        torn_at,
        damaged,
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One buffer directory.
#[derive(Debug)]
pub struct FileStore {
    pub dir: PathBuf,
    _lock: File,
}

/// A file found in the directory at startup.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub name: ChunkName,
}

impl FileStore {
    /// Creates the directory if needed and takes its lock (one buffer per directory).
    pub fn open(dir: &Path) -> io::Result<FileStore> {
        std::fs::create_dir_all(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "buffer path {} is in use by another buffer (another output or another process holds {})",
                        dir.display(),
                        lock_path.display()
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok(FileStore {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Chunk files in the directory, oldest (lowest sequence) first. Unknown files are left
    /// alone.
    pub fn list(&self) -> io::Result<Vec<Found>> {
        list_chunks(&self.dir)
    }

    /// Chunk files in the directory, oldest first, and the names of the other regular files
    /// (not the lock): files the buffer does not know and leaves alone, such as a previous
    /// Fluentd's `buffer.*.log` / `.meta` chunks, which are not read.
    pub fn list_all(&self) -> io::Result<(Vec<Found>, Vec<String>)> {
        list_dir(&self.dir)
    }

    /// Creates a staged chunk file holding just the header.
    pub fn create(&self, seq: u64, header: &Header) -> io::Result<StagedFile> {
        let name = ChunkName {
            seq,
            id: header.id,
            state: FileState::Staged,
        };
        let path = self.dir.join(name.render());
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        let h = header.encode();
        file.write_all(&h)?;
        Ok(StagedFile {
            file: Arc::new(file),
            path,
            len: h.len() as u64,
            dirty: true,
        })
    }

    /// Appends whole frames. On failure the file is cut back to its last good length, so a
    /// failed (unacknowledged) append leaves no partial frame behind when possible.
    pub fn append(&self, sf: &mut StagedFile, bytes: &[u8]) -> io::Result<()> {
        match (&*sf.file).write_all(bytes) {
            Ok(()) => {
                sf.len += bytes.len() as u64;
                sf.dirty = true;
                Ok(())
            }
            Err(e) => {
                let _ = sf.file.set_len(sf.len);
                Err(e)
            }
        }
    }

    /// Seals a staged file: renames it to its queued name (the totals go into the name).
    pub fn seal(
        &self,
        sf: &StagedFile,
        seq: u64,
        id: ChunkId,
        records: u64,
        raw: u64,
    ) -> io::Result<PathBuf> {
        let name = ChunkName {
            seq,
            id,
            state: FileState::Queued {
                records,
                raw,
                len: sf.len,
            },
        };
        let to = self.dir.join(name.render());
        std::fs::rename(&sf.path, &to)?;
        Ok(to)
    }

    /// Renames a recovered file to its queued name.
    pub fn seal_path(&self, from: &Path, name: &ChunkName) -> io::Result<PathBuf> {
        let to = self.dir.join(name.render());
        std::fs::rename(from, &to)?;
        Ok(to)
    }

    /// Deletes a written chunk.
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Moves a chunk file to `quarantine/<reason>/`.
    pub fn quarantine(&self, path: &Path, reason: &str) -> io::Result<PathBuf> {
        let qdir = self.dir.join(QUARANTINE_DIR).join(reason);
        std::fs::create_dir_all(&qdir)?;
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other("chunk path has no file name"))?;
        let to = qdir.join(name);
        std::fs::rename(path, &to)?;
        let _ = sync_dir(&qdir);
        let _ = sync_dir(&self.dir);
        Ok(to)
    }

    /// Cuts a torn tail off a file, saving the cut bytes to
    /// `quarantine/torn_tail/<name>.tail` first (they were never acknowledged, but an operator
    /// may want to see them).
    pub fn cut_tail(&self, path: &Path, valid_len: u64) -> io::Result<PathBuf> {
        cut_tail(&self.dir, path, valid_len)
    }

    /// Makes created, renamed and removed names durable.
    pub fn sync_dir(&self) -> io::Result<()> {
        sync_dir(&self.dir)
    }

    /// Chunk files waiting in `incoming/`.
    pub fn incoming(&self) -> io::Result<Vec<Found>> {
        let d = self.dir.join(INCOMING_DIR);
        if !d.is_dir() {
            return Ok(Vec::new());
        }
        list_chunks(&d)
    }
}

/// [`FileStore::cut_tail`] for the buffer directory `dir` (usable off the store, in a blocking
/// task).
pub fn cut_tail(dir: &Path, path: &Path, valid_len: u64) -> io::Result<PathBuf> {
    let qdir = dir.join(QUARANTINE_DIR).join("torn_tail");
    std::fs::create_dir_all(&qdir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let to = qdir.join(format!("{name}.tail"));
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    f.seek(SeekFrom::Start(valid_len))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    std::fs::write(&to, &tail)?;
    f.set_len(valid_len)?;
    f.sync_all()?;
    Ok(to)
}

/// Chunk files in `dir`, lowest sequence first.
pub fn list_chunks(dir: &Path) -> io::Result<Vec<Found>> {
    list_dir(dir).map(|(found, _)| found)
}

/// Chunk files in `dir` (lowest sequence first) and the names of the other regular files,
/// except the lock.
fn list_dir(dir: &Path) -> io::Result<(Vec<Found>, Vec<String>)> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let file_name = e.file_name();
        let Some(name) = file_name.to_str().and_then(ChunkName::parse) else {
            if file_name != LOCK_FILE {
                unknown.push(file_name.to_string_lossy().into_owned());
            }
            continue;
        };
        out.push(Found {
            path: e.path(),
            name,
        });
    }
    out.sort_by_key(|f| f.name.seq);
    unknown.sort();
    Ok((out, unknown))
}

#[cfg(test)]
mod tests {
    use super::super::format::write_frame;
    use super::*;
    use nagare_core::ChunkKey;

    #[test]
    fn names_round_trip() {
        let n = ChunkName {
            seq: 42,
            id: ChunkId([0xab; 16]),
            state: FileState::Queued {
                records: 10,
                raw: 300,
                len: 400,
            },
        };
        let s = n.render();
        assert_eq!(ChunkName::parse(&s), Some(n.clone()));
        let st = ChunkName {
            state: FileState::Staged,
            ..n
        };
        assert_eq!(ChunkName::parse(&st.render()), Some(st));
        assert_eq!(ChunkName::parse("junk.queued"), None);
        assert_eq!(ChunkName::parse(".lock"), None);
    }

    fn plain_chunk(frames: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
        let header = Header {
            id: ChunkId([7; 16]),
            created_ms: 1,
            gzip: false,
            tag: nagare_core::Tag::from("t"),
            key: ChunkKey::default(),
        };
        let mut file = header.encode();
        let mut starts = Vec::new();
        for f in frames {
            starts.push(file.len() as u64);
            write_frame(&mut file, f, f.len(), 1);
        }
        (file, starts)
    }

    #[test]
    fn read_chunk_joins_the_frames_payloads_in_place_and_stops_at_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("nagare-read-chunk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c");
        let big = vec![b'z'; 100_000];
        let (mut file, starts) = plain_chunk(&[b"first", b"", &big, b"last"]);
        std::fs::write(&path, &file).unwrap();
        let r = read_chunk(&path).unwrap();
        let mut want = b"first".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"last");
        assert_eq!((r.bytes.len(), r.frames, r.records), (want.len(), 4, 4));
        assert!(r.bytes == want && r.torn_at.is_none());

        // The last frame cut short: the whole frames before it, and where it starts.
        file.truncate(file.len() - 2);
        std::fs::write(&path, &file).unwrap();
        let r = read_chunk(&path).unwrap();
        assert_eq!(r.bytes, want[..want.len() - 4]);
        assert_eq!((r.frames, r.torn_at), (3, Some(starts[3])));

        // A flipped payload byte with a frame after it: refused, with the frame's offset.
        let (good, starts) = plain_chunk(&[b"first", b"second", b"third"]);
        let mut file = good.clone();
        file[starts[1] as usize + FRAME_HEADER_LEN + 2] ^= 1;
        std::fs::write(&path, &file).unwrap();
        match read_chunk(&path) {
            Err(ChunkFileError::Corrupt { offset, .. }) => assert_eq!(offset, starts[1]),
            other => panic!("{other:?}"),
        }

        // The same in the last frame: a damaged tail (a power loss); the frames before it.
        let mut file = good.clone();
        let at = file.len() - 1;
        file[at] ^= 1;
        std::fs::write(&path, &file).unwrap();
        let r = read_chunk(&path).unwrap();
        assert_eq!(r.bytes, b"firstsecond");
        assert_eq!((r.frames, r.torn_at), (2, Some(starts[2])));
        assert!(r.damaged.is_some());

        // A zero-filled tail after the frames: the same; zeros alone are no chunk.
        let mut file = good.clone();
        file.extend_from_slice(&[0; 64]);
        std::fs::write(&path, &file).unwrap();
        let r = read_chunk(&path).unwrap();
        assert_eq!(r.bytes, b"firstsecondthird");
        assert_eq!(r.torn_at, Some(good.len() as u64));
        let header_only = &good[..starts[0] as usize];
        let mut file = header_only.to_vec();
        file.extend_from_slice(&[0; 64]);
        std::fs::write(&path, &file).unwrap();
        assert!(matches!(
            read_chunk(&path),
            Err(ChunkFileError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

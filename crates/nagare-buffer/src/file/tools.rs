//! Offline tools over a buffer directory, behind `nagare-forwarder buffer list|inspect|reinject`.
//!
//! * [`list`]: every chunk file (live, incoming, quarantined) from its name alone.
//! * [`inspect`]: walks a file frame by frame, checking every checksum; when a frame header is
//!   damaged it searches for the next frame magic, so the frames after a damaged one are still
//!   found. Returns the entries of the good frames.
//! * [`reinject`]: writes the good frames of a file as a new chunk into `incoming/` (a running
//!   buffer adopts it within 5 s; a stopped one at its next start) and moves the original to
//!   `quarantine/reinjected/`.

use super::format::{self, FrameHeader, Header, FRAME_HEADER_LEN, FRAME_MAGIC};
use super::store::{ChunkName, FileState, INCOMING_DIR, QUARANTINE_DIR};
use nagare_core::{ChunkId, ChunkKey, Tag};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A chunk file, from its name.
#[derive(Debug, Clone)]
pub struct ListEntry {
    pub path: PathBuf,
    /// `staged`, `queued`, `incoming`, `quarantine/<reason>`.
    pub location: String,
    pub name: Option<ChunkName>,
    pub file_len: u64,
}

fn push_dir(out: &mut Vec<ListEntry>, dir: &Path, location: Option<&str>) -> io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut v = Vec::new();
    for e in rd {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let fname = e.file_name().to_string_lossy().into_owned();
        if fname.starts_with('.') {
            continue;
        }
        let name = ChunkName::parse(&fname);
        if location.is_none() && name.is_none() {
            continue;
        }
        let loc = match (location, &name) {
            (Some(l), _) => l.to_string(),
            (None, Some(n)) => match n.state {
                FileState::Staged => "staged".into(),
                FileState::Queued { .. } => "queued".into(),
            },
            (None, None) => continue,
        };
        v.push(ListEntry {
            path: e.path(),
            location: loc,
            name,
            file_len: e.metadata()?.len(),
        });
    }
    v.sort_by(|a, b| a.path.cmp(&b.path));
    out.extend(v);
    Ok(())
}

/// Every chunk file under a buffer directory: live ones, `incoming/`, and `quarantine/*/`.
pub fn list(dir: &Path) -> io::Result<Vec<ListEntry>> {
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut out = Vec::new();
    push_dir(&mut out, dir, None)?;
    push_dir(&mut out, &dir.join(INCOMING_DIR), Some("incoming"))?;
    let q = dir.join(QUARANTINE_DIR);
    if let Ok(rd) = std::fs::read_dir(&q) {
        let mut reasons: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        reasons.sort();
        for r in reasons {
            let reason = r
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            push_dir(&mut out, &r, Some(&format!("quarantine/{reason}")))?;
        }
    }
    Ok(out)
}

/// Finds chunk files by path, file name, or (a prefix of) the chunk id.
pub fn find(dir: &Path, needle: &str) -> io::Result<Vec<PathBuf>> {
    let p = Path::new(needle);
    if p.is_file() {
        return Ok(vec![p.to_path_buf()]);
    }
    let needle = needle.to_ascii_lowercase();
    Ok(list(dir)?
        .into_iter()
        .filter(|e| {
            let fname = e
                .path
                .file_name()
                .map(|n| n.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            fname == needle
                || e.name
                    .as_ref()
                    .is_some_and(|n| n.id.hex().starts_with(&needle))
        })
        .map(|e| e.path)
        .collect())
}

/// What one frame looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameStatus {
    Ok,
    /// The checksum does not match: the frame is skipped.
    ChecksumMismatch,
    /// The gzip member does not inflate to its declared length.
    BadGzip(String),
    /// Bytes without a frame header (damage): skipped up to the next frame magic.
    Garbage,
    /// The file ends inside this frame.
    Torn,
}

/// One frame (or one damaged stretch) of a chunk file.
#[derive(Debug, Clone)]
pub struct FrameInfo {
    pub offset: u64,
    /// Bytes this entry covers in the file.
    pub len: u64,
    /// Records the frame header declares (0 for garbage).
    pub records: u32,
    pub status: FrameStatus,
}

/// A chunk file checked frame by frame.
#[derive(Debug, Clone)]
pub struct Report {
    pub path: PathBuf,
    pub file_len: u64,
    pub header: Option<Header>,
    pub header_error: Option<String>,
    pub frames: Vec<FrameInfo>,
}

impl Report {
    pub fn good_records(&self) -> u64 {
        self.frames
            .iter()
            .filter(|f| f.status == FrameStatus::Ok)
            .map(|f| f.records as u64)
            .sum()
    }
    /// Records declared by frames that failed (garbage stretches declare none).
    pub fn bad_records(&self) -> u64 {
        self.frames
            .iter()
            .filter(|f| f.status != FrameStatus::Ok)
            .map(|f| f.records as u64)
            .sum()
    }
    pub fn bad_frames(&self) -> usize {
        self.frames
            .iter()
            .filter(|f| f.status != FrameStatus::Ok)
            .count()
    }
    pub fn is_clean(&self) -> bool {
        self.header_error.is_none() && self.bad_frames() == 0
    }
}

fn find_magic(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(FRAME_MAGIC.len())
        .position(|w| w == FRAME_MAGIC)
        .map(|i| from + i)
}

/// Checks a chunk file frame by frame; returns the report and the entries of the good frames.
pub fn inspect(path: &Path) -> io::Result<(Report, Vec<u8>)> {
    let data = std::fs::read(path)?;
    let (header, header_error, mut pos) = match Header::decode(&data) {
        Ok((h, off)) => (Some(h), None, off),
        Err(e) => (
            None,
            Some(e.to_string()),
            find_magic(&data, 0).unwrap_or(data.len()),
        ),
    };
    let mut frames = Vec::new();
    let mut good = Vec::new();
    if header.is_none() && pos > 0 {
        frames.push(FrameInfo {
            offset: 0,
            len: pos as u64,
            records: 0,
            status: FrameStatus::Garbage,
        });
    }
    while pos < data.len() {
        let fh = match FrameHeader::parse(&data[pos..]) {
            Ok(fh) => fh,
            Err(format::FormatError::Incomplete)
                if data[pos..].starts_with(&FRAME_MAGIC[..(data.len() - pos).min(4)]) =>
            {
                frames.push(FrameInfo {
                    offset: pos as u64,
                    len: (data.len() - pos) as u64,
                    records: 0,
                    status: FrameStatus::Torn,
                });
                break;
            }
            Err(_) => {
                let next = find_magic(&data, pos + 1).unwrap_or(data.len());
                frames.push(FrameInfo {
                    offset: pos as u64,
                    len: (next - pos) as u64,
                    records: 0,
                    status: FrameStatus::Garbage,
                });
                pos = next;
                continue;
            }
        };
        let start = pos + FRAME_HEADER_LEN;
        let end = start + fh.stored_len;
        if end > data.len() {
            frames.push(FrameInfo {
                offset: pos as u64,
                len: (data.len() - pos) as u64,
                records: fh.records,
                status: FrameStatus::Torn,
            });
            break;
        }
        let payload = &data[start..end];
        let status = if !fh.verify(&data[pos..start], payload) {
            FrameStatus::ChecksumMismatch
        } else {
            let gz = header
                .as_ref()
                .map(|h| h.gzip)
                .unwrap_or(payload.starts_with(&[0x1f, 0x8b]) && fh.raw_len != fh.stored_len);
            if gz {
                match crate::compress::gunzip_exact(payload, fh.raw_len, &mut good) {
                    Ok(()) => FrameStatus::Ok,
                    Err(e) => FrameStatus::BadGzip(e),
                }
            } else {
                good.extend_from_slice(payload);
                FrameStatus::Ok
            }
        };
        let ok = status == FrameStatus::Ok;
        frames.push(FrameInfo {
            offset: pos as u64,
            len: (end - pos) as u64,
            records: fh.records,
            status,
        });
        pos = if ok {
            end
        } else {
            // The length may be the damaged part: look for the next frame after this header.
            find_magic(&data, pos + 1).unwrap_or(data.len())
        };
    }
    Ok((
        Report {
            path: path.to_path_buf(),
            file_len: data.len() as u64,
            header,
            header_error,
            frames,
        },
        good,
    ))
}

/// What [`reinject`] did.
#[derive(Debug, Clone)]
pub struct Reinjected {
    /// The new chunk file in `incoming/`.
    pub new_path: PathBuf,
    pub new_id: ChunkId,
    pub records: u64,
    /// Frames (or damaged stretches) left out.
    pub bad_frames: usize,
    /// Records the left-out frames declared.
    pub bad_records: u64,
    /// Where the original went.
    pub original_moved_to: PathBuf,
}

/// Reinjects the good frames of `file` into the buffer at `dir` (see the module docs). `tag`
/// replaces the events' tag (needed when the header is damaged: otherwise the tag becomes
/// `nagare.reinjected`).
pub fn reinject(dir: &Path, file: &Path, tag: Option<&str>) -> io::Result<Reinjected> {
    let (report, good) = inspect(file)?;
    let records = report.good_records();
    if records == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no valid frames to reinject", file.display()),
        ));
    }
    let (old_tag, key) = match &report.header {
        Some(h) => (h.tag.clone(), h.key.clone()),
        None => (Tag::from("nagare.reinjected"), ChunkKey::default()),
    };
    let tag = tag.map(Tag::from).unwrap_or(old_tag);
    let key = ChunkKey {
        tag: key.tag.map(|_| tag.clone()),
        ..key
    };
    let id = ChunkId::random();
    let header = Header {
        id,
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64,
        gzip: false,
        tag,
        key,
    };
    let mut bytes = header.encode();
    format::write_frame(
        &mut bytes,
        &good,
        good.len(),
        records.min(u32::MAX as u64) as u32,
    );
    let inc = dir.join(INCOMING_DIR);
    std::fs::create_dir_all(&inc)?;
    let name = ChunkName {
        seq: 0,
        id,
        state: FileState::Queued {
            records,
            raw: good.len() as u64,
            len: bytes.len() as u64,
        },
    };
    let tmp = inc.join(format!(".{}.tmp", id.hex()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    let new_path = inc.join(name.render());
    std::fs::rename(&tmp, &new_path)?;
    let done = dir.join(QUARANTINE_DIR).join("reinjected");
    std::fs::create_dir_all(&done)?;
    let moved = done.join(file.file_name().unwrap_or_default());
    std::fs::rename(file, &moved)?;
    for d in [&inc, &done] {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(Reinjected {
        new_path,
        new_id: id,
        records,
        bad_frames: report.bad_frames(),
        bad_records: report.bad_records(),
        original_moved_to: moved,
    })
}

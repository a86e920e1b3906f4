//! Chunk -> object body: packed msgpack `[time, record]` entries -> lines (`<format>`) ->
//! compression (`store_as`).
//!
//! * `json` (default): one JSON object per line, transcoded straight from msgpack in one pass
//!   (no value tree); strings that are not UTF-8 get U+FFFD replacements, counted.
//! * `single_value`: the value of `message_key` (raw bytes; `add_newline`).
//! * `ltsv`: `label:value` pairs joined by `delimiter`; tabs and newlines inside values are
//!   written as `\t` and `\n` so a record stays one line.
//! * Injected fields (`include_time_key`/`time_key`, `include_tag_key`/`tag_key`, or an
//!   `<inject>` section) are appended to each record; a record field of the same name is
//!   replaced, as Fluentd's inject does.
//!
//! Compression: `gzip` is always a single gzip member. Levels 0-3 stream through zlib-rs
//! (flate2) in its gzip mode (zlib-rs writes the header and trailer and takes the CRC of the
//! input from its window copy while it is still in cache: 1-2 % faster than a separate pass).
//! Its state is reset and reused; the lines are produced into a reused 64 KiB window and fed
//! to it, so the compressor reads hot data. Levels 4-9 ([`LIBDEFLATE_MIN_LEVEL`]) go through
//! libdeflate in one call over the whole chunk's text (faster at these levels; its level N is
//! not zlib's: at 6, 15.5 vs 16.5 on small events, 7.9 vs 7.9 on the corpus); a chunk whose
//! text passes [`WHOLE_CHUNK_MAX`] is finished by streaming zlib-rs instead, so memory stays
//! bounded. `zstd` compresses the whole text with a reused context. Output goes into a pooled
//! buffer (see [`Scratch`]). Freshly allocated memory costs 4-5x the formatting itself on
//! these machines, so every buffer here is reused.
//!
//! Deterministic: the same chunk always gives the same bytes (gzip mtime 0), which is what lets
//! a retry recognise its own earlier upload on the on-disk store.

use super::key::{TimeFormat, Zone};
use nagare_core::json::{
    write_key, write_str, write_time_float, write_u64, write_value_to, write_value_vec, Out,
};
use nagare_core::msgpack::{read_array_len, read_map_len, read_str_or_bin, skip_complete};
use nagare_core::EventTime;
use std::io;

/// `store_as`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreAs {
    Gzip,
    Zstd,
    Json,
    Text,
}

impl StoreAs {
    pub fn parse(s: &str) -> Option<StoreAs> {
        Some(match s {
            "gzip" => StoreAs::Gzip,
            "zstd" => StoreAs::Zstd,
            "json" => StoreAs::Json,
            "text" | "txt" => StoreAs::Text,
            _ => return None,
        })
    }

    /// `%{file_extension}` (as fluent-plugin-s3).
    pub fn extension(self) -> &'static str {
        match self {
            StoreAs::Gzip => "gz",
            StoreAs::Zstd => "zst",
            StoreAs::Json => "json",
            StoreAs::Text => "txt",
        }
    }

    /// `Content-Type` (as fluent-plugin-s3's compressors).
    pub fn content_type(self) -> &'static str {
        match self {
            StoreAs::Gzip => "application/x-gzip",
            StoreAs::Zstd => "application/x-zst",
            StoreAs::Json => "application/json",
            StoreAs::Text => "text/plain",
        }
    }

    /// Default `Content-Encoding`.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            StoreAs::Gzip => Some("gzip"),
            StoreAs::Zstd => Some("zstd"),
            _ => None,
        }
    }

    /// Default `compression_level`.
    pub fn default_level(self) -> i32 {
        match self {
            StoreAs::Gzip => 6,
            StoreAs::Zstd => 3,
            _ => 0,
        }
    }
}

/// How injected time values are written (`time_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeType {
    /// Seconds with up to 9 decimals, as a JSON number.
    Float,
    /// Integer seconds.
    Unixtime,
    /// `time_format` (strftime), as a string.
    String(TimeFormat),
}

/// Fields added to every record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inject {
    /// `time_key` when time is injected.
    pub time_key: Option<String>,
    pub time_type: Option<TimeType>,
    pub zone: Zone,
    /// `tag_key` when the tag is injected.
    pub tag_key: Option<String>,
}

impl Inject {
    fn is_empty(&self) -> bool {
        self.time_key.is_none() && self.tag_key.is_none()
    }
}

/// `<format>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineFormat {
    Json,
    SingleValue {
        message_key: String,
        add_newline: bool,
    },
    Ltsv {
        delimiter: String,
        label_delimiter: String,
        add_newline: bool,
    },
}

/// What one chunk became.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EncodeStats {
    /// Lines written.
    pub records: usize,
    /// Entries that were not `[time, map]` (skipped, counted).
    pub skipped: usize,
    /// Strings with invalid UTF-8 (replaced, counted).
    pub invalid_utf8: usize,
    /// Bytes of lines before compression.
    pub text_bytes: usize,
}

/// Reusable state of one encoding job: the line buffer and the compressor contexts.
/// Kept in a pool by the output, one per concurrent flush.
pub struct Scratch {
    /// The lines: a 64 KiB window when streaming, the whole chunk's text for libdeflate and
    /// zstd (reused: its capacity stays, up to [`RETAIN_MAX`]).
    lines: Vec<u8>,
    /// zlib-rs' output window.
    zbuf: Vec<u8>,
    /// One JSON line being written (kept initialised and at its size; see `Out`).
    rec: Vec<u8>,
    deflate: Option<(u32, flate2::Compress)>,
    libdeflate: Option<(i32, libdeflater::Compressor)>,
    zstd: Option<(i32, zstd::bulk::Compressor<'static>)>,
    /// [`WHOLE_CHUNK_MAX`] (smaller in tests).
    whole_max: usize,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            lines: Vec::with_capacity(WINDOW + 64 * 1024),
            zbuf: vec![0; 64 * 1024],
            rec: Vec::new(),
            deflate: None,
            libdeflate: None,
            zstd: None,
            whole_max: WHOLE_CHUNK_MAX,
        }
    }
}

/// Bytes of lines handed to a streaming compressor at a time (L2-sized: the compressor reads
/// what was just written).
const WINDOW: usize = 64 * 1024;
/// gzip levels from this one up use libdeflate on the whole chunk; below it, zlib-rs streams
/// (at levels 1-2 zlib-rs is 1.2-1.8x faster than libdeflate on JSON lines, at 3 they are
/// even, from 4 up libdeflate is as fast or faster, 1.4x at 6 on the whole corpus; see
/// docs/benchmarks.md, "S3 output").
pub const LIBDEFLATE_MIN_LEVEL: u32 = 4;
/// A chunk whose text grows past this is finished by streaming zlib-rs instead of libdeflate
/// (which needs the whole input and an output of its compress bound): memory stays bounded
/// whatever the chunk size. Default chunks (8 MiB of msgpack, about 10 MiB of JSON) are far
/// below.
pub const WHOLE_CHUNK_MAX: usize = 32 << 20;
/// libdeflate's first attempt has room for the text divided by this (see `Sink::finish`).
const WHOLE_FIRST_TRY_RATIO: usize = 4;
/// Buffers grown past this by a huge chunk are not kept for the next one.
const RETAIN_MAX: usize = 64 << 20;
/// The line scratch is not kept past a chunk once a record grew it beyond this.
const REC_RETAIN_MAX: usize = 1 << 20;

/// A compiled `<format>` + `store_as` + `compression_level`.
#[derive(Debug, Clone)]
pub struct Formatter {
    pub line: LineFormat,
    pub inject: Inject,
    pub store_as: StoreAs,
    pub level: i32,
}

impl Formatter {
    /// Encodes the packed entries of a chunk into `out` (cleared first).
    pub fn encode(
        &self,
        entries: &[u8],
        tag: &str,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> io::Result<EncodeStats> {
        out.clear();
        let mut st = EncodeStats::default();
        let mut sink = Sink::new(self.store_as, self.level, scratch, out)?;
        let mut pos = 0;
        let mut tsbuf = String::new();
        while pos < entries.len() {
            // JSON lines, `[time, map]` (what buffers store): the record is transcoded in one
            // pass that also finds its end; no separate scan of the entry.
            if self.line == LineFormat::Json {
                if let Some((time, rec_off)) = entry_head(&entries[pos..]) {
                    // The line is written into a scratch and appended whole (see `Out`).
                    let flush_at = sink.flush_at;
                    let (lines, line) = sink.lines_and_line();
                    let mut w = Out::scratch(line);
                    let rec = &entries[pos + rec_off..];
                    if let Some(used) =
                        write_json_record(&mut w, rec, &self.inject, time, tag, &mut tsbuf, &mut st)
                    {
                        lines.extend_from_slice(w.text());
                        pos += rec_off + used;
                        st.text_bytes += w.len();
                        st.records += 1;
                        if lines.len() >= flush_at {
                            sink.flush_window()?;
                        }
                        continue;
                    }
                }
            }
            let Ok(end) = skip_complete(entries, pos) else {
                // A torn tail cannot be resynchronised: count it as one skipped entry.
                st.skipped += 1;
                break;
            };
            let entry = &entries[pos..end];
            pos = end;
            let Some((time, rec_off)) = split_entry(entry) else {
                st.skipped += 1;
                continue;
            };
            let rec = &entry[rec_off..];
            let flush_at = sink.flush_at;
            let lines = sink.lines();
            let before = lines.len();
            let ok = match &self.line {
                LineFormat::Json => {
                    let mut w = Out::append(lines);
                    let ok = write_json_record(
                        &mut w,
                        rec,
                        &self.inject,
                        time,
                        tag,
                        &mut tsbuf,
                        &mut st,
                    )
                    .is_some_and(|used| used == rec.len());
                    w.done();
                    ok
                }
                LineFormat::SingleValue {
                    message_key,
                    add_newline,
                } => write_single_value(lines, rec, message_key, *add_newline, &mut st),
                LineFormat::Ltsv {
                    delimiter,
                    label_delimiter,
                    add_newline,
                } => write_ltsv(
                    lines,
                    rec,
                    delimiter.as_bytes(),
                    label_delimiter.as_bytes(),
                    *add_newline,
                    &self.inject,
                    time,
                    tag,
                    &mut tsbuf,
                    &mut st,
                ),
            };
            if !ok {
                lines.truncate(before);
                st.skipped += 1;
                continue;
            }
            st.text_bytes += lines.len() - before;
            st.records += 1;
            if lines.len() >= flush_at {
                sink.flush_window()?;
            }
        }
        sink.finish()?;
        Ok(st)
    }
}

/// How a chunk's lines are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// json / text: lines go straight into the body.
    Direct,
    /// gzip through zlib-rs, a 64 KiB window at a time.
    Stream,
    /// gzip through libdeflate, the whole text in one call at the end.
    Whole,
    /// zstd: the whole text in one call at the end.
    Zstd,
}

/// Where lines go: straight into `out` (json/text) or through a compressor.
struct Sink<'a> {
    mode: Mode,
    /// gzip level (0-9).
    gz_level: u32,
    /// `lines` is handed on once it holds this many bytes.
    flush_at: usize,
    scratch: &'a mut Scratch,
    out: &'a mut Vec<u8>,
}

impl<'a> Sink<'a> {
    fn new(
        store_as: StoreAs,
        level: i32,
        scratch: &'a mut Scratch,
        out: &'a mut Vec<u8>,
    ) -> io::Result<Sink<'a>> {
        scratch.lines.clear();
        let gz_level = level.clamp(0, 9) as u32;
        let mode = match store_as {
            StoreAs::Gzip if gz_level >= LIBDEFLATE_MIN_LEVEL => {
                let lvl = gz_level as i32;
                if !matches!(&scratch.libdeflate, Some((l, _)) if *l == lvl) {
                    let cl = libdeflater::CompressionLvl::new(lvl)
                        .map_err(|e| io::Error::other(format!("gzip level {lvl}: {e:?}")))?;
                    scratch.libdeflate = Some((lvl, libdeflater::Compressor::new(cl)));
                }
                Mode::Whole
            }
            StoreAs::Gzip => Mode::Stream,
            StoreAs::Zstd => {
                let ok = matches!(&scratch.zstd, Some((l, _)) if *l == level);
                if !ok {
                    scratch.zstd = Some((level, zstd::bulk::Compressor::new(level)?));
                }
                Mode::Zstd
            }
            StoreAs::Json | StoreAs::Text => Mode::Direct,
        };
        let mut sink = Sink {
            mode,
            gz_level,
            flush_at: match mode {
                Mode::Stream => WINDOW,
                Mode::Whole => scratch.whole_max,
                Mode::Zstd | Mode::Direct => usize::MAX,
            },
            scratch,
            out,
        };
        if mode == Mode::Stream {
            sink.start_stream();
        }
        Ok(sink)
    }

    /// Resets (or creates) the zlib-rs context and writes the gzip member header.
    fn start_stream(&mut self) {
        let lvl = self.gz_level;
        match &mut self.scratch.deflate {
            Some((l, c)) if *l == lvl => c.reset(),
            d => {
                *d = Some((
                    lvl,
                    flate2::Compress::new_gzip(flate2::Compression::new(lvl), 15),
                ))
            }
        }
        self.mode = Mode::Stream;
        self.flush_at = WINDOW;
    }

    fn lines(&mut self) -> &mut Vec<u8> {
        match self.mode {
            Mode::Direct => self.out,
            _ => &mut self.scratch.lines,
        }
    }

    /// [`Sink::lines`] and the scratch one JSON line is written into.
    fn lines_and_line(&mut self) -> (&mut Vec<u8>, &mut Vec<u8>) {
        match self.mode {
            Mode::Direct => (self.out, &mut self.scratch.rec),
            _ => (&mut self.scratch.lines, &mut self.scratch.rec),
        }
    }

    fn flush_window(&mut self) -> io::Result<()> {
        if self.mode == Mode::Whole {
            // Past the whole-chunk limit: stream the rest through zlib-rs.
            self.start_stream();
        }
        if self.mode == Mode::Stream {
            let Scratch {
                lines,
                deflate,
                zbuf,
                ..
            } = &mut *self.scratch;
            let c = &mut deflate.as_mut().expect("deflate state").1;
            deflate_into(c, lines, zbuf, self.out, flate2::FlushCompress::None)?;
            lines.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        match self.mode {
            Mode::Stream => {
                self.flush_window()?;
                let Scratch { deflate, zbuf, .. } = &mut *self.scratch;
                let c = &mut deflate.as_mut().expect("deflate state").1;
                deflate_into(c, &[], zbuf, self.out, flate2::FlushCompress::Finish)?;
            }
            Mode::Whole => {
                let Scratch {
                    lines, libdeflate, ..
                } = &mut *self.scratch;
                let c = &mut libdeflate.as_mut().expect("libdeflate state").1;
                // Straight into the (pooled) body, first with room for a quarter of the text:
                // JSON lines compress 5-17x, and room for the compress bound (the text's size
                // and a bit) kept megabytes resident for nothing. Text that compresses less
                // than that is compressed again with room for the bound.
                let at = self.out.len();
                let bound = c.gzip_compress_bound(lines.len());
                let guess = (lines.len() / WHOLE_FIRST_TRY_RATIO + 64 * 1024).min(bound);
                self.out.resize(at + guess, 0);
                let n = match c.gzip_compress(lines, &mut self.out[at..]) {
                    Ok(n) => n,
                    Err(libdeflater::CompressionError::InsufficientSpace) => {
                        self.out.resize(at + bound, 0);
                        c.gzip_compress(lines, &mut self.out[at..])
                            .map_err(|e| io::Error::other(format!("gzip: {e}")))?
                    }
                };
                self.out.truncate(at + n);
            }
            Mode::Zstd => {
                let Scratch { zstd, lines, .. } = &mut *self.scratch;
                let c = &mut zstd.as_mut().expect("zstd context").1;
                self.out
                    .reserve(zstd::zstd_safe::compress_bound(lines.len()));
                c.compress_to_buffer(&lines[..], self.out)?;
            }
            Mode::Direct => {}
        }
        if self.scratch.rec.len() > REC_RETAIN_MAX {
            self.scratch.rec = Vec::new();
        }
        let lines = &mut self.scratch.lines;
        lines.clear();
        if lines.capacity() > RETAIN_MAX {
            *lines = Vec::with_capacity(WINDOW + 64 * 1024);
        }
        Ok(())
    }
}

/// Deflates `input` into `out` through `zbuf`, a fixed scratch window (flate2's
/// `compress_vec` zero-fills the whole spare capacity of the vector on every call: with pooled
/// multi-megabyte bodies that memset cost more than the compression).
fn deflate_into(
    c: &mut flate2::Compress,
    mut input: &[u8],
    zbuf: &mut [u8],
    out: &mut Vec<u8>,
    flush: flate2::FlushCompress,
) -> io::Result<()> {
    let finish = matches!(flush, flate2::FlushCompress::Finish);
    loop {
        let (before_in, before_out) = (c.total_in(), c.total_out());
        let status = c
            .compress(input, zbuf, flush)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        input = &input[(c.total_in() - before_in) as usize..];
        let produced = (c.total_out() - before_out) as usize;
        out.extend_from_slice(&zbuf[..produced]);
        if finish {
            if status == flate2::Status::StreamEnd {
                return Ok(());
            }
        } else if input.is_empty() {
            return Ok(());
        }
    }
}

// ---- entries -------------------------------------------------------------------------------

/// The time (unix seconds) of the first entry of packed entries.
pub fn first_event_time(entries: &[u8]) -> Option<u32> {
    let end = skip_complete(entries, 0).ok()?;
    split_entry(&entries[..end]).map(|(t, _)| t.0)
}

/// A two-element entry `[time, map]`: (time, offset of the map), reading common time
/// encodings without a scan.
#[inline]
fn entry_head(e: &[u8]) -> Option<((u32, u32), usize)> {
    if *e.first()? != 0x92 {
        return None;
    }
    let t = e.get(1..)?;
    let tl = match *t.first()? {
        0xd7 => 10,
        0xc7 => 11,
        0x00..=0x7f => 1,
        0xcc => 2,
        0xcd => 3,
        0xce | 0xd2 => 5,
        0xcf | 0xd3 => 9,
        _ => return None,
    };
    let time = read_time(t.get(..tl)?).unwrap_or((0, 0));
    match *e.get(1 + tl)? {
        0x80..=0x8f | 0xde | 0xdf => Some((time, 1 + tl)),
        _ => None,
    }
}

/// `[time, record]` -> (time, offset of the record map).
fn split_entry(e: &[u8]) -> Option<((u32, u32), usize)> {
    let (n, hl) = read_array_len(e)?;
    if n < 2 {
        return None;
    }
    let t_end = skip_complete(e, hl).ok()?;
    let time = read_time(&e[hl..t_end]).unwrap_or((0, 0));
    read_map_len(&e[t_end..])?;
    Some((time, t_end))
}

/// An entry's time as (seconds, nanoseconds): [`EventTime::read_msgpack`], the buffer's reader.
fn read_time(t: &[u8]) -> Option<(u32, u32)> {
    EventTime::read_msgpack(t).map(|(t, _)| (t.secs(), t.nanos()))
}

// ---- JSON ----------------------------------------------------------------------------------
// The writer is nagare_core::json's (a cursor over the line scratch); what is S3's own is the
// record around it: injected fields, and the LTSV / single-value lines.

/// The string key at `buf[p..]`, if it is one.
fn key_bytes(buf: &[u8], p: usize) -> Option<&[u8]> {
    let s = buf.get(p..)?;
    let (a, e) = read_str_or_bin(s)?;
    Some(&s[a..e])
}

fn write_inject_value(
    w: &mut Out,
    inject: &Inject,
    time: (u32, u32),
    tsbuf: &mut String,
    json: bool,
) {
    match inject.time_type.as_ref().unwrap_or(&TimeType::Float) {
        TimeType::Float => write_time_float(w, time.0 as u64, time.1),
        TimeType::Unixtime => write_u64(w, time.0 as u64),
        TimeType::String(f) => {
            tsbuf.clear();
            f.format(time.0 as i64, time.1, inject.zone, tsbuf);
            if json {
                let mut inv = 0;
                let s = tsbuf.as_bytes();
                write_str(w, s, 0, s.len(), &mut inv, false, false);
            } else {
                w.extend(tsbuf.as_bytes());
            }
        }
    }
}

fn is_injected(inject: &Inject, k: &[u8]) -> bool {
    inject.time_key.as_deref().map(str::as_bytes) == Some(k)
        || inject.tag_key.as_deref().map(str::as_bytes) == Some(k)
}

/// One record as a JSON line.
fn write_json_record(
    w: &mut Out,
    rec: &[u8],
    inject: &Inject,
    time: (u32, u32),
    tag: &str,
    tsbuf: &mut String,
    st: &mut EncodeStats,
) -> Option<usize> {
    let mut inv = 0;
    let used = if inject.is_empty() {
        match *rec.first()? {
            0x80..=0x8f | 0xde | 0xdf => write_value_to(w, rec, 0, &mut inv, 0),
            _ => None,
        }
    } else {
        (|| {
            let (n, hl) = read_map_len(rec)?;
            w.push(b'{');
            let mut p = hl;
            let mut first = true;
            for _ in 0..n {
                let k_end = skip_complete(rec, p).ok()?;
                if key_bytes(rec, p).is_some_and(|k| is_injected(inject, k)) {
                    p = skip_complete(rec, k_end).ok()?;
                    continue;
                }
                p = write_key(w, rec, p, &mut inv, 0, !first)?;
                first = false;
                p = write_value_to(w, rec, p, &mut inv, 1)?;
            }
            if let Some(k) = &inject.tag_key {
                let k = k.as_bytes();
                write_str(w, k, 0, k.len(), &mut inv, !first, true);
                first = false;
                write_str(w, tag.as_bytes(), 0, tag.len(), &mut inv, false, false);
            }
            if let Some(k) = &inject.time_key {
                let k = k.as_bytes();
                write_str(w, k, 0, k.len(), &mut inv, !first, true);
                write_inject_value(w, inject, time, tsbuf, true);
            }
            w.push(b'}');
            Some(p)
        })()
    };
    w.push(b'\n');
    // Only a written line counts: a failed one is retried by the caller's slow path (or
    // skipped and counted there), so counting here too would count it twice.
    if used.is_some() {
        st.invalid_utf8 += inv;
    }
    used
}
fn write_single_value(
    out: &mut Vec<u8>,
    rec: &[u8],
    message_key: &str,
    add_newline: bool,
    st: &mut EncodeStats,
) -> bool {
    let Some((n, hl)) = read_map_len(rec) else {
        return false;
    };
    let mut p = hl;
    for _ in 0..n {
        let Ok(k_end) = skip_complete(rec, p) else {
            return false;
        };
        let Ok(v_end) = skip_complete(rec, k_end) else {
            return false;
        };
        if key_bytes(rec, p) == Some(message_key.as_bytes()) {
            match read_str_or_bin(&rec[k_end..v_end]) {
                Some((a, e)) => out.extend_from_slice(&rec[k_end + a..k_end + e]),
                None => {
                    let mut inv = 0;
                    write_value_vec(out, rec, k_end, &mut inv, 1);
                    st.invalid_utf8 += inv;
                }
            }
            break;
        }
        p = v_end;
    }
    if add_newline {
        out.push(b'\n');
    }
    true
}

fn push_ltsv_text(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_ltsv(
    out: &mut Vec<u8>,
    rec: &[u8],
    delim: &[u8],
    label_delim: &[u8],
    add_newline: bool,
    inject: &Inject,
    time: (u32, u32),
    tag: &str,
    tsbuf: &mut String,
    st: &mut EncodeStats,
) -> bool {
    let Some((n, hl)) = read_map_len(rec) else {
        return false;
    };
    let mut p = hl;
    let mut first = true;
    let mut inv = 0;
    for _ in 0..n {
        let Ok(k_end) = skip_complete(rec, p) else {
            return false;
        };
        let Ok(v_end) = skip_complete(rec, k_end) else {
            return false;
        };
        let key = key_bytes(rec, p);
        if key.is_some_and(|k| is_injected(inject, k)) {
            p = v_end;
            continue;
        }
        if !first {
            out.extend_from_slice(delim);
        }
        first = false;
        match key {
            Some(k) => push_ltsv_text(out, k),
            None => {
                write_value_vec(out, rec, p, &mut inv, 1);
            }
        }
        out.extend_from_slice(label_delim);
        match read_str_or_bin(&rec[k_end..v_end]) {
            Some((a, e)) => push_ltsv_text(out, &rec[k_end + a..k_end + e]),
            None => {
                write_value_vec(out, rec, k_end, &mut inv, 1);
            }
        }
        p = v_end;
    }
    if let Some(k) = &inject.tag_key {
        if !first {
            out.extend_from_slice(delim);
        }
        first = false;
        push_ltsv_text(out, k.as_bytes());
        out.extend_from_slice(label_delim);
        push_ltsv_text(out, tag.as_bytes());
    }
    if let Some(k) = &inject.time_key {
        if !first {
            out.extend_from_slice(delim);
        }
        push_ltsv_text(out, k.as_bytes());
        out.extend_from_slice(label_delim);
        let mut w = Out::append(out);
        write_inject_value(&mut w, inject, time, tsbuf, false);
        w.done();
    }
    if add_newline {
        out.push(b'\n');
    }
    st.invalid_utf8 += inv;
    true
}

/// The JSON writer as it was before [`Out`] (appending to a vector): the reference the
/// current one must match byte for byte.
#[cfg(test)]
mod reference {
    use super::{
        read_array_len, read_map_len, read_str_or_bin, skip_complete, EncodeStats, Inject, TimeType,
    };
    use nagare_core::json::{key_text_len, MAX_DEPTH};

    /// Bytes that need escaping inside a JSON string (ASCII only; 0 = copy as is).
    static ESC: [u8; 128] = {
        let mut t = [0u8; 128];
        let mut i = 0;
        while i < 0x20 {
            t[i] = b'u';
            i += 1;
        }
        t[b'\n' as usize] = b'n';
        t[b'\r' as usize] = b'r';
        t[b'\t' as usize] = b't';
        t[0x08] = b'b';
        t[0x0c] = b'f';
        t[b'"' as usize] = b'"';
        t[b'\\' as usize] = b'\\';
        t
    };

    const HEX: &[u8; 16] = b"0123456789abcdef";

    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const LOWS: u64 = 0x7f7f_7f7f_7f7f_7f7f;

    /// The bytes of `w` that need escaping (`"`, `\\`, below 0x20), as their high bits. Exact per
    /// byte (no carries between bytes); bytes >= 0x80 are never flagged.
    #[inline(always)]
    fn special_bytes(w: u64) -> u64 {
        let is_zero = |y: u64| !(((y & LOWS).wrapping_add(LOWS)) | y) & HIGHS;
        let below_0x20 = !(((w & LOWS).wrapping_add(ONES * 0x60)) | w) & HIGHS;
        is_zero(w ^ (ONES * b'"' as u64)) | is_zero(w ^ (ONES * b'\\' as u64)) | below_0x20
    }

    #[inline(always)]
    fn escape_byte(tmp: &mut [u8], j: usize, b: u8) -> usize {
        let e = if b < 0x80 { ESC[b as usize] } else { 0 };
        if e == b'u' {
            tmp[j..j + 6].copy_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
            return 6;
        }
        let special = (e != 0) as usize;
        tmp[j] = if special == 1 { b'\\' } else { b };
        tmp[j + 1] = e;
        1 + special
    }

    /// Appends up to 8 bytes with escapes, without a branch per byte (quotes in JSON-in-a-string
    /// come at random positions: branches would mispredict): room for the worst case is appended
    /// as a fixed-size block, the bytes are written into it, and the vector is cut back. (Building
    /// the bytes on the stack and copying them costs a store-forwarding stall per word.)
    #[inline(always)]
    fn escape_small(out: &mut Vec<u8>, bytes: &[u8]) {
        const ROOM: [u8; 48] = [0; 48];
        let at = out.len();
        out.extend_from_slice(&ROOM);
        let buf = &mut out[at..];
        let mut j = 0;
        for &b in bytes.iter().take(8) {
            j += escape_byte(buf, j, b);
        }
        out.truncate(at + j);
    }

    /// Appends `s` (any bytes) with JSON escapes, eight bytes at a time: a word with nothing to
    /// escape is copied whole (a fixed-size store), one with something goes through
    /// [`escape_small`]. Returns whether `s` had a byte >= 0x80 (the caller validates UTF-8 only
    /// then: most log text is ASCII).
    #[inline]
    fn escape_run(out: &mut Vec<u8>, s: &[u8]) -> bool {
        out.reserve(s.len() + 48);
        let mut high = 0u64;
        let mut chunks = s.chunks_exact(8);
        for word in &mut chunks {
            let word = <[u8; 8]>::try_from(word).unwrap_or_default();
            let w = u64::from_le_bytes(word);
            high |= w;
            if special_bytes(w) == 0 {
                out.extend_from_slice(&word);
            } else {
                escape_small(out, &word);
            }
        }
        let rest = chunks.remainder();
        let n = rest.len();
        if n > 0 {
            // The tail as a zero-padded word, read without a trip through the stack: the last
            // eight bytes of `s` shifted down when there are eight. The padding zeros would read
            // as control bytes: they are masked out.
            let w = match s.len().checked_sub(8).and_then(|i| s.get(i..)) {
                Some(last) => {
                    u64::from_le_bytes(<[u8; 8]>::try_from(last).unwrap_or_default())
                        >> (8 * (8 - n))
                }
                None => rest.iter().rev().fold(0u64, |a, &b| (a << 8) | b as u64),
            };
            high |= w;
            let live = u64::MAX >> (8 * (8 - n));
            if special_bytes(w) & live == 0 {
                let at = out.len();
                out.extend_from_slice(&w.to_le_bytes());
                out.truncate(at + n);
            } else {
                escape_small(out, rest);
            }
        }
        high & HIGHS != 0
    }

    /// Writes `s` as a JSON string; invalid UTF-8 becomes U+FFFD (counted).
    #[inline(always)]
    fn write_json_str(out: &mut Vec<u8>, s: &[u8], invalid: &mut usize) {
        let start = out.len();
        out.push(b'"');
        if escape_run(out, s) && std::str::from_utf8(s).is_err() {
            // Not UTF-8: write it again with replacements (rare).
            out.truncate(start + 1);
            let mut rest = s;
            loop {
                match std::str::from_utf8(rest) {
                    Ok(_) => {
                        escape_run(out, rest);
                        break;
                    }
                    Err(e) => {
                        let (good, bad) = rest.split_at(e.valid_up_to());
                        escape_run(out, good);
                        out.extend_from_slice("\u{FFFD}".as_bytes());
                        *invalid += 1;
                        rest = &bad[e.error_len().unwrap_or(bad.len())..];
                    }
                }
            }
        }
        out.push(b'"');
    }

    fn write_u64(out: &mut Vec<u8>, mut v: u64) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        out.extend_from_slice(&buf[i..]);
    }

    fn write_i64(out: &mut Vec<u8>, v: i64) {
        if v < 0 {
            out.push(b'-');
        }
        write_u64(out, v.unsigned_abs());
    }

    fn write_f64(out: &mut Vec<u8>, f: f64) {
        use std::io::Write;
        if f.is_finite() {
            let _ = write!(out, "{f}");
            if f.fract() == 0.0 && f.abs() < 1e16 {
                out.extend_from_slice(b".0");
            }
        } else {
            out.extend_from_slice(b"null");
        }
    }

    fn be(b: &[u8]) -> u64 {
        b.iter().fold(0u64, |a, &x| (a << 8) | x as u64)
    }

    /// Transcodes the msgpack value at `buf[pos..]` into JSON; returns the end offset.
    pub(super) fn write_value(
        out: &mut Vec<u8>,
        buf: &[u8],
        pos: usize,
        invalid: &mut usize,
        depth: usize,
    ) -> Option<usize> {
        let b = *buf.get(pos)?;
        let s = &buf[pos..];
        let need = |n: usize| if s.len() >= n { Some(pos + n) } else { None };
        match b {
            0x00..=0x7f => {
                write_u64(out, b as u64);
                Some(pos + 1)
            }
            0xe0..=0xff => {
                write_i64(out, b as i8 as i64);
                Some(pos + 1)
            }
            0xc0 => {
                out.extend_from_slice(b"null");
                Some(pos + 1)
            }
            0xc2 => {
                out.extend_from_slice(b"false");
                Some(pos + 1)
            }
            0xc3 => {
                out.extend_from_slice(b"true");
                Some(pos + 1)
            }
            0xcc..=0xcf => {
                let n = 1usize << (b - 0xcc);
                let end = need(1 + n)?;
                write_u64(out, be(&s[1..1 + n]));
                Some(end)
            }
            0xd0..=0xd3 => {
                let n = 1usize << (b - 0xd0);
                let end = need(1 + n)?;
                let v = be(&s[1..1 + n]);
                let shift = 64 - 8 * n as u32;
                write_i64(out, ((v << shift) as i64) >> shift);
                Some(end)
            }
            0xca => {
                let end = need(5)?;
                write_f64(out, f32::from_be_bytes([s[1], s[2], s[3], s[4]]) as f64);
                Some(end)
            }
            0xcb => {
                let end = need(9)?;
                write_f64(out, f64::from_be_bytes(s[1..9].try_into().ok()?));
                Some(end)
            }
            0xa0..=0xbf => {
                // fixstr: the common case (keys and short values), decoded inline.
                let end = 1 + (b & 0x1f) as usize;
                write_json_str(out, s.get(1..end)?, invalid);
                Some(pos + end)
            }
            0xd9..=0xdb | 0xc4..=0xc6 => {
                let (a, e) = read_str_or_bin(s)?;
                write_json_str(out, &s[a..e], invalid);
                Some(pos + e)
            }
            0x90..=0x9f | 0xdc | 0xdd => {
                if depth >= MAX_DEPTH {
                    out.extend_from_slice(b"null");
                    return skip_complete(buf, pos).ok();
                }
                let (n, hl) = read_array_len(s)?;
                out.push(b'[');
                let mut p = pos + hl;
                for i in 0..n {
                    if i > 0 {
                        out.push(b',');
                    }
                    p = write_value(out, buf, p, invalid, depth + 1)?;
                }
                out.push(b']');
                Some(p)
            }
            0x80..=0x8f | 0xde | 0xdf => {
                if depth >= MAX_DEPTH {
                    out.extend_from_slice(b"null");
                    return skip_complete(buf, pos).ok();
                }
                let (n, hl) = read_map_len(s)?;
                out.push(b'{');
                let mut p = pos + hl;
                for i in 0..n {
                    if i > 0 {
                        out.push(b',');
                    }
                    p = write_key(out, buf, p, invalid, depth)?;
                    out.push(b':');
                    p = write_value(out, buf, p, invalid, depth + 1)?;
                }
                out.push(b'}');
                Some(p)
            }
            // fixext 1/2/4/8/16, ext 8/16/32: EventTime (type 0, 8 bytes) as float seconds.
            0xd4..=0xd8 | 0xc7..=0xc9 => {
                let end = skip_complete(buf, pos).ok()?;
                let (ty, data) = match b {
                    0xd4..=0xd8 => (s[1], &s[2..end - pos]),
                    0xc7 => (s[2], &s[3..end - pos]),
                    0xc8 => (s[3], &s[4..end - pos]),
                    _ => (s[5], &s[6..end - pos]),
                };
                if ty == 0 && data.len() == 8 {
                    let secs = be(&data[..4]);
                    let nanos = be(&data[4..]) as u32;
                    write_time_float(out, secs, nanos);
                } else {
                    out.extend_from_slice(b"null");
                }
                Some(end)
            }
            _ => None,
        }
    }

    /// A map key: strings as they are, anything else as its JSON text in quotes.
    #[inline]
    fn write_key(
        out: &mut Vec<u8>,
        buf: &[u8],
        p: usize,
        invalid: &mut usize,
        depth: usize,
    ) -> Option<usize> {
        let kb = *buf.get(p)?;
        if let 0xa0..=0xbf = kb {
            // A fixstr: nearly every key. Straight to the string writer, no dispatch.
            let end = p + 1 + (kb & 0x1f) as usize;
            write_json_str(out, buf.get(p + 1..end)?, invalid);
            Some(end)
        } else if matches!(kb, 0xd9..=0xdb | 0xc4..=0xc6) {
            write_value(out, buf, p, invalid, depth + 1)
        } else {
            let mut tmp = Vec::new();
            let end = write_value(&mut tmp, buf, p, invalid, depth + 1)?;
            write_json_str(out, &tmp[..key_text_len(&tmp)], invalid);
            Some(end)
        }
    }

    fn write_time_float(out: &mut Vec<u8>, secs: u64, nanos: u32) {
        write_u64(out, secs);
        out.push(b'.');
        if nanos == 0 {
            out.push(b'0');
            return;
        }
        let mut d = [0u8; 9];
        let mut n = nanos;
        for i in (0..9).rev() {
            d[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let len = 9 - d.iter().rev().take_while(|c| **c == b'0').count();
        out.extend_from_slice(&d[..len]);
    }

    /// The string key at `buf[p..]`, if it is one.
    fn key_bytes(buf: &[u8], p: usize) -> Option<&[u8]> {
        let s = buf.get(p..)?;
        let (a, e) = read_str_or_bin(s)?;
        Some(&s[a..e])
    }

    fn write_inject_value(
        out: &mut Vec<u8>,
        inject: &Inject,
        time: (u32, u32),
        tsbuf: &mut String,
        json: bool,
    ) {
        match inject.time_type.as_ref().unwrap_or(&TimeType::Float) {
            TimeType::Float => write_time_float(out, time.0 as u64, time.1),
            TimeType::Unixtime => write_u64(out, time.0 as u64),
            TimeType::String(f) => {
                tsbuf.clear();
                f.format(time.0 as i64, time.1, inject.zone, tsbuf);
                if json {
                    let mut inv = 0;
                    write_json_str(out, tsbuf.as_bytes(), &mut inv);
                } else {
                    out.extend_from_slice(tsbuf.as_bytes());
                }
            }
        }
    }

    fn is_injected(inject: &Inject, k: &[u8]) -> bool {
        inject.time_key.as_deref().map(str::as_bytes) == Some(k)
            || inject.tag_key.as_deref().map(str::as_bytes) == Some(k)
    }

    /// One record as a JSON line.
    pub(super) fn write_json_record(
        out: &mut Vec<u8>,
        rec: &[u8],
        inject: &Inject,
        time: (u32, u32),
        tag: &str,
        tsbuf: &mut String,
        st: &mut EncodeStats,
    ) -> Option<usize> {
        let mut inv = 0;
        // Room for the whole line at once (escapes rarely double it): the writes below then never
        // reallocate.
        out.reserve(rec.len() + rec.len() / 4 + 64);
        let used = if inject.is_empty() {
            match *rec.first()? {
                0x80..=0x8f | 0xde | 0xdf => write_value(out, rec, 0, &mut inv, 0),
                _ => None,
            }
        } else {
            (|| {
                let (n, hl) = read_map_len(rec)?;
                out.push(b'{');
                let mut p = hl;
                let mut first = true;
                for _ in 0..n {
                    let k_end = skip_complete(rec, p).ok()?;
                    if key_bytes(rec, p).is_some_and(|k| is_injected(inject, k)) {
                        p = skip_complete(rec, k_end).ok()?;
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    p = write_key(out, rec, p, &mut inv, 0)?;
                    out.push(b':');
                    p = write_value(out, rec, p, &mut inv, 1)?;
                }
                if let Some(k) = &inject.tag_key {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    write_json_str(out, k.as_bytes(), &mut inv);
                    out.push(b':');
                    write_json_str(out, tag.as_bytes(), &mut inv);
                }
                if let Some(k) = &inject.time_key {
                    if !first {
                        out.push(b',');
                    }
                    write_json_str(out, k.as_bytes(), &mut inv);
                    out.push(b':');
                    write_inject_value(out, inject, time, tsbuf, true);
                }
                out.push(b'}');
                Some(p)
            })()
        };
        out.push(b'\n');
        // Only a written line counts: a failed one is retried by the caller's slow path (or
        // skipped and counted there), so counting here too would count it twice.
        if used.is_some() {
            st.invalid_utf8 += inv;
        }
        used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use nagare_core::json::{write_value_vec, MAX_DEPTH};
    use nagare_core::{Event, EventTime, Record};
    use std::io::Read;

    const HEX: &[u8; 16] = b"0123456789abcdef";

    fn entries(recs: &[rmpv::Value], time: EventTime) -> Vec<u8> {
        let mut out = BytesMut::new();
        for r in recs {
            let mut b = Vec::new();
            rmpv::encode::write_value(&mut b, r).unwrap();
            Event {
                time,
                record: Record::from_msgpack(b.into()).unwrap(),
            }
            .write_entry(&mut out, false);
        }
        out.to_vec()
    }

    fn fmt(line: LineFormat, store_as: StoreAs, inject: Inject) -> Formatter {
        Formatter {
            line,
            inject,
            store_as,
            level: store_as.default_level(),
        }
    }

    fn map(pairs: &[(&str, rmpv::Value)]) -> rmpv::Value {
        rmpv::Value::Map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), v.clone()))
                .collect(),
        )
    }

    fn gunzip(b: &[u8]) -> String {
        let mut s = String::new();
        flate2::read::GzDecoder::new(b)
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    #[test]
    fn json_lines_match_serde_for_every_kind_of_value() {
        let r = map(&[
            ("s", "a\"b\\c\n\u{1}é😀".into()),
            ("i", rmpv::Value::from(-129)),
            ("u", rmpv::Value::from(u64::MAX)),
            ("f", rmpv::Value::from(1.5)),
            ("b", true.into()),
            ("n", rmpv::Value::Nil),
            ("l", rmpv::Value::Array(vec![1.into(), "x".into()])),
            ("m", map(&[("k", rmpv::Value::from(-3))])),
            ("bin", rmpv::Value::Binary(b"raw".to_vec())),
        ]);
        let e = entries(&[r.clone(), r], EventTime::new(1_700_000_000, 5));
        let mut sc = Scratch::default();
        let mut out = Vec::new();
        let st = fmt(LineFormat::Json, StoreAs::Json, Inject::default())
            .encode(&e, "t", &mut sc, &mut out)
            .unwrap();
        assert_eq!(st.records, 2);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["s"], "a\"b\\c\n\u{1}é😀");
        assert_eq!(v["i"], -129);
        assert_eq!(v["u"], u64::MAX);
        assert_eq!(v["f"], 1.5);
        assert_eq!(v["m"]["k"], -3);
        assert_eq!(v["bin"], "raw");
        assert_eq!(v["l"][1], "x");
    }

    /// Random msgpack values of every kind and encoding width, strings full of what needs
    /// escaping (quotes, backslashes, control bytes, non-ASCII, invalid UTF-8).
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }

        fn text(&mut self, len: usize) -> Vec<u8> {
            const PARTS: &[&[u8]] = &[
                b"a",
                b"xyz",
                b"\"",
                b"\\",
                b"\n",
                b"\t",
                b"\r",
                b"\x00",
                b"\x01",
                b"\x08",
                b"\x0c",
                b"\x1f",
                b"\x7f",
                b" ",
                b"{\"k\":",
                "é".as_bytes(),
                "😀".as_bytes(),
                b"\xff",
                b"\xc0\xaf",
                b"\xe2\x82",
                b"\xed\xa0\x80",
                b"0123456789abcdef",
            ];
            let mut t = Vec::new();
            while t.len() < len {
                // Mostly plain text with the odd special, sometimes nothing but specials.
                let part = if self.below(3) == 0 {
                    PARTS[self.below(PARTS.len() as u64)]
                } else {
                    PARTS[self.below(2) * 21]
                };
                t.extend_from_slice(part);
            }
            t
        }

        fn str_len(&mut self) -> usize {
            match self.below(10) {
                0..=5 => self.below(12),
                6..=8 => self.below(300),
                _ => self.below(10_000),
            }
        }

        fn string(&mut self, out: &mut Vec<u8>, t: &[u8]) {
            let n = t.len();
            match (n, self.below(4)) {
                (0..=31, 0 | 1) => out.push(0xa0 | n as u8),
                (0..=255, 0..=2) => out.extend_from_slice(&[0xd9, n as u8]),
                (_, 3) => {
                    out.push(0xc6);
                    out.extend_from_slice(&(n as u32).to_be_bytes());
                }
                _ => {
                    out.push(0xda);
                    out.extend_from_slice(&(n as u16).to_be_bytes());
                }
            }
            out.extend_from_slice(t);
        }

        fn value(&mut self, out: &mut Vec<u8>, depth: usize) {
            let kinds = if depth > 4 { 9 } else { 12 };
            match self.below(kinds) {
                0 => out.push(self.next() as u8),
                1 => out.push([0xc0, 0xc2, 0xc3][self.below(3)]),
                2 => {
                    let w = self.below(4);
                    out.push(0xcc + w as u8);
                    let v = self.next() >> (self.below(64) as u32);
                    out.extend_from_slice(&v.to_be_bytes()[8 - (1 << w)..]);
                }
                3 => {
                    let w = self.below(4);
                    out.push(0xd0 + w as u8);
                    let v = (self.next() as i64) >> (self.below(64) as u32);
                    out.extend_from_slice(&v.to_be_bytes()[8 - (1 << w)..]);
                }
                4 => {
                    const F: [f64; 8] = [0.0, -0.0, 1.0, -2.5, 1e15, 1e16, 1e300, 5e-324];
                    if self.below(2) == 0 {
                        out.push(0xcb);
                        let f = match self.below(3) {
                            0 => F[self.below(8)],
                            1 => f64::from_bits(self.next()),
                            _ => (self.next() % 1_000_000) as f64 / 8.0,
                        };
                        out.extend_from_slice(&f.to_be_bytes());
                    } else {
                        out.push(0xca);
                        out.extend_from_slice(&(self.next() as u32).to_be_bytes());
                    }
                }
                5 => {
                    // Ext: EventTime (fixext 8 or ext 8 of length 8, nanos sometimes out of
                    // range) or another type.
                    let nanos = match self.below(3) {
                        0 => 0,
                        1 => self.below(1_000_000_000) as u32,
                        _ => self.next() as u32,
                    };
                    let mut data = (self.next() as u32).to_be_bytes().to_vec();
                    data.extend_from_slice(&nanos.to_be_bytes());
                    match self.below(3) {
                        0 => out.extend_from_slice(&[0xd7, 0]),
                        1 => out.extend_from_slice(&[0xc7, 8, 0]),
                        _ => {
                            out.extend_from_slice(&[0xd4, 5]);
                            data.truncate(1);
                        }
                    }
                    out.extend_from_slice(&data);
                }
                6..=8 => {
                    let n = self.str_len();
                    let t = self.text(n);
                    self.string(out, &t);
                }
                9 | 10 => {
                    let n = self.below(6);
                    out.extend_from_slice(&[0xdc, 0, n as u8]);
                    for _ in 0..n {
                        self.value(out, depth + 1);
                    }
                }
                _ => self.map(out, depth + 1),
            }
        }

        fn map(&mut self, out: &mut Vec<u8>, depth: usize) {
            let n = self.below(20);
            if n < 16 && self.below(2) == 0 {
                out.push(0x80 | n as u8);
            } else {
                out.extend_from_slice(&[0xde, 0, n as u8]);
            }
            for _ in 0..n {
                if self.below(8) == 0 {
                    // A key that is not a string: written as its JSON text, quoted.
                    self.value(out, depth + 1);
                } else {
                    let n = self.below(20);
                    let t = self.text(n);
                    self.string(out, &t);
                }
                self.value(out, depth);
            }
        }
    }

    #[test]
    fn json_writer_matches_the_reference_on_random_records() {
        let mut g = Gen(0x2545_f491_4f6c_dd1d);
        let injects = [
            Inject::default(),
            Inject {
                time_key: Some("time".into()),
                time_type: Some(TimeType::Float),
                tag_key: Some("ta\"g".into()),
                ..Inject::default()
            },
            Inject {
                time_key: Some("t".into()),
                time_type: Some(TimeType::String(
                    TimeFormat::parse("%Y-%m-%dT%H:%M:%S.%L%z").unwrap(),
                )),
                zone: Zone::UTC,
                tag_key: None,
            },
        ];
        let mut line = Vec::new();
        let mut tsbuf = String::new();
        let mut high_water = 0;
        for i in 0..3000 {
            let mut rec = Vec::new();
            g.map(&mut rec, 0);
            if i % 7 == 0 {
                // Bytes after the record (as in a chunk) and, now and then, a torn record.
                rec.extend_from_slice(&[0x92, 0xc3]);
            }
            if i % 97 == 0 {
                rec.truncate(g.below(rec.len() as u64 + 1));
            }
            let inject = &injects[i % injects.len()];
            let time = (1_700_000_000 + i as u32, g.below(1_000_000_000) as u32);
            let mut want = Vec::new();
            let mut want_st = EncodeStats::default();
            let want_used = reference::write_json_record(
                &mut want,
                &rec,
                inject,
                time,
                "app",
                &mut tsbuf,
                &mut want_st,
            );
            let mut got_st = EncodeStats::default();
            let mut w = Out::scratch(&mut line);
            let got_used =
                write_json_record(&mut w, &rec, inject, time, "app", &mut tsbuf, &mut got_st);
            assert_eq!(got_used, want_used, "record {i}");
            assert_eq!(got_st, want_st, "record {i}");
            if want_used.is_some() {
                assert_eq!(
                    String::from_utf8_lossy(w.text()),
                    String::from_utf8_lossy(&want),
                    "record {i}"
                );
                assert_eq!(w.text(), &want[..], "record {i}");
                let v: serde_json::Value = serde_json::from_slice(w.text()).unwrap();
                assert!(v.is_object());
            }
            high_water = high_water.max(line.len());
            // The vector form (LTSV, single value) from a value inside the record.
            let mut want = b"x".to_vec();
            let mut got = b"x".to_vec();
            let (mut a, mut b) = (0, 0);
            let r = reference::write_value(&mut want, &rec, 0, &mut a, 1);
            assert_eq!(write_value_vec(&mut got, &rec, 0, &mut b, 1), r);
            // (What a failed value leaves behind may differ by a separator: its callers only
            // write values that were validated.)
            if r.is_some() {
                assert_eq!((got, b), (want, a), "record {i}");
            }
        }
        assert!(high_water < 512 * 1024, "the line scratch stays bounded");
    }

    #[test]
    fn keys_that_are_maps_of_maps_stay_bounded() {
        // Each level's key text is escaped again by the level above: without the cap the
        // backslashes doubled per level (2^60 here).
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(|| {
                let mut v = rmpv::Value::from("q\"\"\"\"");
                // Records nest at most 64 deep (Record::from_msgpack): 60 levels of keys.
                for _ in 0..60 {
                    v = rmpv::Value::Map(vec![(v, rmpv::Value::from(1))]);
                }
                let e = entries(&[map(&[("k", v)])], EventTime::new(1, 0));
                let mut out = Vec::new();
                fmt(LineFormat::Json, StoreAs::Json, Inject::default())
                    .encode(&e, "t", &mut Scratch::default(), &mut out)
                    .unwrap();
                assert!(out.len() < 64 * 1024, "{} bytes", out.len());
                let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
                assert!(line["k"].is_object());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn nesting_past_the_limit_and_odd_numbers_match_the_reference() {
        let mut rec = Vec::new();
        rec.push(0x81);
        rec.extend_from_slice(&[0xa1, b'k']);
        // Two levels each: past the writer's limit, within the scanner's.
        for _ in 0..MAX_DEPTH / 2 + 10 {
            rec.extend_from_slice(&[0x92, 0x81, 0xa1, b'"']);
        }
        rec.push(0xc0);
        rec.extend_from_slice(&[0x01; MAX_DEPTH / 2 + 10]);
        for f in [5e-324, -f64::MAX, 1e16, -1e15, f64::NAN, 0.1] {
            rec.push(0xcb);
            rec.extend_from_slice(&f64::to_be_bytes(f));
        }
        for v in [0, 9, 10, 99, 100, u64::MAX, 10_000_000_000_000_000_000] {
            rec.push(0xcf);
            rec.extend_from_slice(&v.to_be_bytes());
        }
        for v in [i64::MIN, -1, -10, -100] {
            rec.push(0xd3);
            rec.extend_from_slice(&v.to_be_bytes());
        }
        let mut want = Vec::new();
        let mut got = Vec::new();
        let (mut a, mut b) = (0, 0);
        // (Unoptimised frames are large: room for 256 levels of recursion.)
        let (r, want, got) = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || {
                let r = reference::write_value(&mut want, &rec, 0, &mut a, 0);
                let r2 = write_value_vec(&mut got, &rec, 0, &mut b, 0);
                assert_eq!(r2, r);
                assert_eq!((a, b), (0, 0));
                (r, want, got)
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(r.is_some());
        assert!(
            want.windows(5).any(|x| x == b"null,"),
            "the depth limit is reached"
        );
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(want).unwrap()
        );
    }

    #[test]
    fn gzip_output_is_one_valid_member_and_deterministic() {
        let recs: Vec<rmpv::Value> = (0..5000)
            .map(|i| map(&[("log", format!("line {i} {}", "x".repeat(i % 300)).into())]))
            .collect();
        let e = entries(&recs, EventTime::new(1, 0));
        let f = fmt(LineFormat::Json, StoreAs::Gzip, Inject::default());
        let mut sc = Scratch::default();
        let mut a = Vec::new();
        f.encode(&e, "t", &mut sc, &mut a).unwrap();
        let mut b = Vec::new();
        f.encode(&e, "t", &mut sc, &mut b).unwrap();
        assert_eq!(a, b, "same chunk, same bytes (the reset context is reused)");
        let text = gunzip(&a);
        assert_eq!(text.lines().count(), 5000);
        assert!(text
            .lines()
            .nth(4999)
            .unwrap()
            .starts_with("{\"log\":\"line 4999 "));
        // The standard library decoder agrees with the gzip framing (crc, size).
        let mut d = flate2::read::MultiGzDecoder::new(&a[..]);
        let mut s = Vec::new();
        d.read_to_end(&mut s).unwrap();
        assert_eq!(s.len(), text.len());
    }

    /// Records with escapes, non-ASCII and lines of every length up to about 1 KB.
    fn varied_entries(n: usize) -> Vec<u8> {
        let recs: Vec<rmpv::Value> = (0..n)
            .map(|i| {
                map(&[
                    (
                        "log",
                        format!("line {i} \"q\" \\ é\t{}", "xy".repeat(i % 500)).into(),
                    ),
                    ("n", i.into()),
                    ("level", ["info", "warn", "error"][i % 3].into()),
                ])
            })
            .collect();
        entries(&recs, EventTime::new(1_700_000_000, 0))
    }

    /// The single-member decoder reads the whole text: one gzip member, nothing after it.
    fn gunzip_one_member(b: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        flate2::read::GzDecoder::new(b).read_to_end(&mut s).unwrap();
        let mut all = Vec::new();
        flate2::read::MultiGzDecoder::new(b)
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(s, all, "one gzip member per object");
        s
    }

    #[test]
    fn every_gzip_level_gunzips_to_exactly_the_json_lines() {
        // Levels below LIBDEFLATE_MIN_LEVEL stream through zlib-rs, the others go through
        // libdeflate in one call: both must give one member holding exactly the lines.
        let e = varied_entries(3000);
        let mut json = Vec::new();
        fmt(LineFormat::Json, StoreAs::Json, Inject::default())
            .encode(&e, "t", &mut Scratch::default(), &mut json)
            .unwrap();
        assert!(json.len() > WINDOW * 4, "several streaming windows");
        // One scratch for every level, in both directions: contexts switch and reset.
        let mut sc = Scratch::default();
        for level in (0..=9).chain([6, 1, 9, 0]) {
            let f = Formatter {
                level,
                ..fmt(LineFormat::Json, StoreAs::Gzip, Inject::default())
            };
            let mut out = Vec::new();
            let st = f.encode(&e, "t", &mut sc, &mut out).unwrap();
            assert_eq!(
                (st.records, st.text_bytes),
                (3000, json.len()),
                "level {level}"
            );
            assert_eq!(gunzip_one_member(&out), json, "level {level}");
            // Deterministic header: deflate, no flags, mtime 0 (bytes 4-7).
            assert_eq!(out[..8], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0], "level {level}");
            if level >= 2 {
                assert!(out.len() * 4 < json.len(), "level {level} compresses");
            }
        }
        // An empty chunk is still a valid (empty) gzip object.
        for level in [1, 6] {
            let f = Formatter {
                level,
                ..fmt(LineFormat::Json, StoreAs::Gzip, Inject::default())
            };
            let mut out = Vec::new();
            f.encode(&[], "t", &mut sc, &mut out).unwrap();
            assert!(gunzip_one_member(&out).is_empty());
        }
    }

    #[test]
    fn text_that_compresses_less_than_the_first_try_expects_is_compressed_again_whole() {
        // Random hex compresses about 2x: libdeflate's first attempt (room for a quarter of
        // the text) fails and the retry with room for the bound must give the same object.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let recs: Vec<rmpv::Value> = (0..2000)
            .map(|_| {
                let hex: String = (0..600)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        HEX[(x & 15) as usize] as char
                    })
                    .collect();
                map(&[("blob", hex.into())])
            })
            .collect();
        let e = entries(&recs, EventTime::new(1_700_000_000, 0));
        let mut json = Vec::new();
        fmt(LineFormat::Json, StoreAs::Json, Inject::default())
            .encode(&e, "t", &mut Scratch::default(), &mut json)
            .unwrap();
        let mut sc = Scratch::default();
        for level in LIBDEFLATE_MIN_LEVEL as i32..=9 {
            let f = Formatter {
                level,
                ..fmt(LineFormat::Json, StoreAs::Gzip, Inject::default())
            };
            let mut out = Vec::new();
            f.encode(&e, "t", &mut sc, &mut out).unwrap();
            assert!(
                out.len() > json.len() / WHOLE_FIRST_TRY_RATIO + 64 * 1024,
                "level {level}: the first try must not fit"
            );
            assert_eq!(gunzip_one_member(&out), json, "level {level}");
            let mut fresh = Vec::new();
            f.encode(&e, "t", &mut Scratch::default(), &mut fresh)
                .unwrap();
            assert_eq!(out, fresh, "level {level}: deterministic");
        }
    }

    #[test]
    fn a_chunk_past_the_whole_chunk_limit_is_streamed_as_the_same_single_member() {
        let e = varied_entries(2000);
        let mut json = Vec::new();
        fmt(LineFormat::Json, StoreAs::Json, Inject::default())
            .encode(&e, "t", &mut Scratch::default(), &mut json)
            .unwrap();
        let f = fmt(LineFormat::Json, StoreAs::Gzip, Inject::default());
        let mut sc = Scratch {
            whole_max: json.len() / 3,
            ..Scratch::default()
        };
        let mut out = Vec::new();
        f.encode(&e, "t", &mut sc, &mut out).unwrap();
        assert_eq!(gunzip_one_member(&out), json);
        // Deterministic (a retry must recognise its own upload), and the next chunk under the
        // limit goes through libdeflate again.
        let mut again = Vec::new();
        f.encode(&e, "t", &mut sc, &mut again).unwrap();
        assert_eq!(out, again);
        let small = varied_entries(10);
        f.encode(&small, "t", &mut sc, &mut out).unwrap();
        let mut direct = Vec::new();
        f.encode(&small, "t", &mut Scratch::default(), &mut direct)
            .unwrap();
        assert_eq!(out, direct);
        assert_eq!(
            gunzip_one_member(&out)
                .iter()
                .filter(|b| **b == b'\n')
                .count(),
            10
        );
    }

    #[test]
    fn zstd_round_trips() {
        let recs: Vec<rmpv::Value> = (0..100).map(|i| map(&[("n", i.into())])).collect();
        let e = entries(&recs, EventTime::new(1, 0));
        let mut out = Vec::new();
        fmt(LineFormat::Json, StoreAs::Zstd, Inject::default())
            .encode(&e, "t", &mut Scratch::default(), &mut out)
            .unwrap();
        let text = zstd::stream::decode_all(&out[..]).unwrap();
        assert_eq!(String::from_utf8(text).unwrap().lines().count(), 100);
    }

    #[test]
    fn inject_time_and_tag_replacing_record_fields() {
        let e = entries(
            &[map(&[("time", "old".into()), ("a", 1.into())])],
            EventTime::new(1_700_000_000, 250_000_000),
        );
        let inject = Inject {
            time_key: Some("time".into()),
            time_type: Some(TimeType::String(
                TimeFormat::parse("%Y-%m-%dT%H:%M:%S.%L%z").unwrap(),
            )),
            zone: Zone::UTC,
            tag_key: Some("tag".into()),
        };
        let mut out = Vec::new();
        fmt(LineFormat::Json, StoreAs::Text, inject.clone())
            .encode(&e, "app.x", &mut Scratch::default(), &mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":1,\"tag\":\"app.x\",\"time\":\"2023-11-14T22:13:20.250+0000\"}\n"
        );
        let float = Inject {
            time_type: Some(TimeType::Float),
            tag_key: None,
            ..inject
        };
        let mut out = Vec::new();
        fmt(LineFormat::Json, StoreAs::Text, float)
            .encode(&e, "t", &mut Scratch::default(), &mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":1,\"time\":1700000000.25}\n"
        );
    }

    #[test]
    fn single_value_and_ltsv() {
        let e = entries(
            &[map(&[("message", "hello\tworld".into()), ("n", 2.into())])],
            EventTime::new(0, 0),
        );
        let mut out = Vec::new();
        fmt(
            LineFormat::SingleValue {
                message_key: "message".into(),
                add_newline: true,
            },
            StoreAs::Text,
            Inject::default(),
        )
        .encode(&e, "t", &mut Scratch::default(), &mut out)
        .unwrap();
        assert_eq!(out, b"hello\tworld\n");
        let mut out = Vec::new();
        fmt(
            LineFormat::Ltsv {
                delimiter: "\t".into(),
                label_delimiter: ":".into(),
                add_newline: true,
            },
            StoreAs::Text,
            Inject::default(),
        )
        .encode(&e, "t", &mut Scratch::default(), &mut out)
        .unwrap();
        assert_eq!(out, b"message:hello\\tworld\tn:2\n");
    }

    #[test]
    fn bad_entries_are_skipped_and_counted() {
        let mut e = entries(&[map(&[("a", 1.into())])], EventTime::new(0, 0));
        // [1, "not a map"]
        e.extend_from_slice(&[0x92, 0x01, 0xa1, b'x']);
        e.extend_from_slice(&entries(&[map(&[("b", 2.into())])], EventTime::new(0, 0)));
        let mut out = Vec::new();
        let st = fmt(LineFormat::Json, StoreAs::Text, Inject::default())
            .encode(&e, "t", &mut Scratch::default(), &mut out)
            .unwrap();
        assert_eq!((st.records, st.skipped), (2, 1));
        assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n");
    }
}

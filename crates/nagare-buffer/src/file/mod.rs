//! The file buffer (`<buffer> @type file`): crash-safe, checksummed, self-healing.
//!
//! # Directory layout
//!
//! ```text
//! <path>/
//!   .lock                                          flock'ed by the one buffer using the directory
//!   <seq>-<id>.staged                              a chunk being filled (one per chunk key)
//!   <seq>-<id>.<records>.<raw>.<len>.queued        a sealed chunk waiting to be written
//!   incoming/<seq>-<id>....queued                  reinjected by the CLI; adopted within 5 s
//!   quarantine/<reason>/<file>                     corrupt | unreadable | retry_exhausted |
//!                                                  unrecoverable | reinjected
//!   quarantine/torn_tail/<file>.tail               bytes cut off an incomplete last append
//! ```
//!
//! `seq` is 16 hex digits, increasing in creation order (recovery queues chunks in that order);
//! `id` is the chunk id, 32 hex digits (also the forward protocol `chunk` option of the
//! chunk's writes). A queued name carries its totals: records, uncompressed entry bytes and the
//! file length; at startup a queued file whose length matches its name is queued without being
//! opened.
//!
//! # Chunk file format (version 1; integers little-endian, checksums CRC-32/IEEE)
//!
//! ```text
//! file   := header frame*
//! header := "NGRCHK01"  body_len:u32  body[body_len]  crc32(body):u32
//! body   := chunk_id[16]  created_unix_ms:u64  flags:u8 (bit 0: frames are gzip members)
//!           tag_len:u32 tag            (the events' tag)
//!           key_flags:u8               (bit 0: key has a tag, bit 1: key has a timekey)
//!           [key_tag_len:u32 key_tag]  [timekey:i64 (unix seconds, slice start)]
//!           nvars:u16 (name_len:u16 name value_len:u32 value)*     (record chunk keys)
//! frame  := "NGFR"  stored_len:u32  raw_len:u32  records:u32  crc:u32  payload[stored_len]
//!           crc = crc32(stored_len, raw_len, records as bytes ++ payload)
//!           payload = msgpack [time, record]* entries (raw_len == stored_len), or with
//!           `compress gzip` one gzip member inflating to exactly raw_len bytes
//! ```
//!
//! One append writes one frame per chunk it touches, with one `write(2)` each.
//!
//! # Durability points
//!
//! * An append returns `Ok` (and in_forward may ack) once its frames were written to the
//!   chunk files: in the page cache, so a process crash (kill -9, OOM kill) loses nothing
//!   acknowledged, with every `fsync_policy`.
//! * `fsync_policy always`: the files written (and the directory, when a file was created) are
//!   `fdatasync`ed before the append returns: power loss loses nothing acknowledged.
//! * `fsync_policy interval` (default, `fsync_interval 1s`): the flush loop `fdatasync`s every
//!   file written since the last round, and the directory; power loss may lose up to one
//!   interval of acknowledged appends.
//! * `fsync_policy never`: the kernel writes back on its own.
//! * Shutdown syncs everything (except with `never`). Sealing is a rename; writing a chunk is
//!   followed by an unlink: a crash between a successful write and the unlink delivers that
//!   chunk again after the restart (at-least-once).
//!
//! # Recovery (at startup; never a full reload, never a crash loop)
//!
//! 1. Take the lock; list the directory (files with other names are left alone, counted in
//!    `nagare_buffer_unknown_files` and named in one warning).
//! 2. A queued file whose length matches its name is queued as it is (no read).
//! 3. Any other chunk file is walked: header checked (magic, CRC), frame headers read and
//!    payloads skipped (seek), so memory stays constant whatever the backlog.
//!    * Incomplete last frame (a crash during an append, which was therefore never
//!      acknowledged): its bytes are saved to `quarantine/torn_tail/` and cut off
//!      (`nagare_buffer_torn_tails_total`); the whole frames are kept.
//!    * A damaged tail: a bad frame header (a zero-filled tail after a power loss: the size
//!      reached the disk, the blocks did not) with nothing that looks like a frame after it.
//!      Cut off and saved the same way (error log); the whole frames before it are kept. With
//!      no whole frame before it, the file is quarantined as corrupt instead.
//!    * A file shorter than its header or without frames (nothing acknowledged): deleted.
//!    * Bad magic, header CRC, impossible length (with frames after the damage), or an
//!      unreadable file: moved to
//!      `quarantine/corrupt/` (or `unreadable/`), counted
//!      (`nagare_buffer_quarantined_chunks_total{reason}`) and logged; the rest continues.
//!    * Otherwise renamed to its queued name and queued (staged chunks are not appended to
//!      again).
//! 4. Payload checksums are verified when a chunk is read back to be written (dequeue): a
//!    frame CRC mismatch or a gzip member of the wrong length quarantines the whole chunk
//!    (`quarantine/corrupt/`), counted and logged, and the next chunk is written. Except a
//!    damaged tail (a bad header or CRC after whole frames, nothing frame-like after it): it
//!    is saved to `quarantine/torn_tail/` and cut off, the records it held are counted
//!    (`nagare_buffer_quarantined_records_total{reason="damaged_tail"}`) and the frames before
//!    it are written.
//!
//! `nagare-forwarder buffer list|inspect|reinject --path DIR` ([`tools`]) shows quarantined
//! chunks frame by frame and reinjects their valid frames through `incoming/`.

pub mod format;
pub mod store;
pub mod tools;

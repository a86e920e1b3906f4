//! The file buffer's crash safety: recovery after a crash (the buffer dropped without
//! closing), torn tails, corrupt chunks quarantined and counted while the rest continues,
//! bounded memory on recovery, the lock, fsync policies, and the quarantine tools.

mod common;

use common::*;
use nagare_buffer::file::{store, tools};
use nagare_buffer::{
    Buffer, BufferConfig, ChunkKeys, Compress, FsyncPolicy, RecordKey, Storage, TimeKey,
};
use nagare_core::Tag;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn file_cfg(dir: &Path, fsync: FsyncPolicy) -> BufferConfig {
    BufferConfig {
        storage: Storage::File {
            path: dir.join("buf"),
            fsync,
        },
        flush_at_shutdown: false,
        ..Default::default()
    }
}

fn chunk_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("buf"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn flip_byte(path: &Path, offset_from_end: u64) {
    let mut data = std::fs::read(path).unwrap();
    let i = data.len() - offset_from_end as usize;
    data[i] ^= 0x5a;
    std::fs::write(path, data).unwrap();
}

#[tokio::test]
async fn crash_recovery_resumes_staged_and_queued_chunks() {
    let d = TempDir::new("recover");
    let cfg = BufferConfig {
        chunk_limit_records: Some(3),
        ..file_cfg(d.path(), FsyncPolicy::Never)
    };
    let b = Buffer::open(cfg.clone(), "fb-recover").unwrap();
    b.append(&Tag::from("a"), &evs(0..10)).await.unwrap();
    b.append(&Tag::from("b"), &evs(100..102)).await.unwrap();
    assert_eq!(chunk_files(d.path(), "queued").len(), 3);
    assert_eq!(chunk_files(d.path(), "staged").len(), 2);
    drop(b); // a crash: nothing closed, nothing synced

    let b = Buffer::open(cfg, "fb-recover-2").unwrap();
    assert_eq!(b.stats().recovered_chunks.get(), 5);
    assert_eq!(b.stats().recovered_records.get(), 12);
    assert_eq!(b.stats().memory_bytes.get(), 0, "recovery loads nothing");
    assert_eq!(
        chunk_files(d.path(), "staged").len(),
        0,
        "staged chunks are queued"
    );
    let chunks = take_all(&b).await;
    let a: Vec<u64> = chunks
        .iter()
        .filter(|c| c.tag == Tag::from("a"))
        .flat_map(seqs)
        .collect();
    assert_eq!(a, (0..10).collect::<Vec<_>>(), "order kept per key");
    let bb: Vec<u64> = chunks
        .iter()
        .filter(|c| c.tag == Tag::from("b"))
        .flat_map(seqs)
        .collect();
    assert_eq!(bb, vec![100, 101]);
    assert_eq!(b.usage(), (0, 0));
    assert!(
        chunk_files(d.path(), "queued").is_empty(),
        "written chunks are deleted"
    );
}

#[tokio::test]
async fn keys_and_compression_survive_a_restart() {
    let d = TempDir::new("keys");
    let cfg = BufferConfig {
        compress: Compress::Gzip,
        chunk_keys: ChunkKeys {
            tag: true,
            time: Some(TimeKey {
                unit: 300,
                wait: Duration::ZERO,
                utc_offset: 0,
            }),
            records: vec![RecordKey::parse("service").unwrap()],
        },
        ..file_cfg(d.path(), FsyncPolicy::Always)
    };
    let b = Buffer::open(cfg.clone(), "fb-keys").unwrap();
    let events: Vec<_> = (0..50).map(|i| ev(i, 1_700_000_000, "api")).collect();
    for part in events.chunks(10) {
        b.append(&Tag::from("t"), part).await.unwrap();
    }
    assert!(
        b.stats().fsyncs.get() >= 5,
        "fsync_policy always syncs every append"
    );
    drop(b);
    let b = Buffer::open(cfg, "fb-keys-2").unwrap();
    let chunks = take_all(&b).await;
    assert_eq!(chunks.len(), 1);
    let c = &chunks[0];
    assert_eq!(c.key.tag, Some(Tag::from("t")));
    assert_eq!(c.key.timekey, Some(1_700_000_000 - 1_700_000_000 % 300));
    assert_eq!(c.key.var("service"), Some(&b"api"[..]));
    assert_eq!(seqs(c), (0..50).collect::<Vec<_>>());
}

#[tokio::test]
async fn torn_tail_is_cut_and_the_whole_frames_are_delivered() {
    let d = TempDir::new("torn");
    let cfg = file_cfg(d.path(), FsyncPolicy::Never);
    let b = Buffer::open(cfg.clone(), "fb-torn").unwrap();
    b.append(&Tag::from("a"), &evs(0..3)).await.unwrap();
    b.append(&Tag::from("a"), &evs(3..5)).await.unwrap();
    drop(b);
    // A crash in the middle of a third append: a frame header promising more than is there.
    let staged = chunk_files(d.path(), "staged").pop().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&staged)
        .unwrap();
    let mut partial = Vec::new();
    nagare_buffer::file::format::write_frame(&mut partial, &[0x92; 300], 300, 7);
    f.write_all(&partial[..120]).unwrap();
    drop(f);

    let b = Buffer::open(cfg, "fb-torn-2").unwrap();
    assert_eq!(b.stats().torn_tails.get(), 1);
    let tails: Vec<_> = std::fs::read_dir(d.path().join("buf/quarantine/torn_tail"))
        .unwrap()
        .collect();
    assert_eq!(tails.len(), 1, "the cut bytes are kept for inspection");
    let got: Vec<u64> = take_all(&b).await.iter().flat_map(seqs).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn an_empty_file_from_a_crash_during_creation_is_removed() {
    let d = TempDir::new("empty");
    let cfg = file_cfg(d.path(), FsyncPolicy::Never);
    drop(Buffer::open(cfg.clone(), "fb-empty").unwrap());
    let name = store::ChunkName {
        seq: 7,
        id: nagare_core::ChunkId([1; 16]),
        state: store::FileState::Staged,
    };
    std::fs::write(d.path().join("buf").join(name.render()), b"NGRCH").unwrap();
    let b = Buffer::open(cfg, "fb-empty-2").unwrap();
    assert_eq!(b.usage(), (0, 0));
    assert!(chunk_files(d.path(), "staged").is_empty());
    assert_eq!(b.stats().quarantined_chunks.total(), 0);
}

#[tokio::test]
async fn corrupt_payload_is_quarantined_at_dequeue_and_the_rest_continue() {
    let d = TempDir::new("corrupt");
    let cfg = BufferConfig {
        chunk_limit_records: Some(4),
        ..file_cfg(d.path(), FsyncPolicy::Never)
    };
    let b = Buffer::open(cfg.clone(), "fb-corrupt").unwrap();
    b.append(&Tag::from("a"), &evs(0..12)).await.unwrap();
    drop(b);
    let queued = chunk_files(d.path(), "queued");
    assert_eq!(queued.len(), 3);
    flip_byte(&queued[1], 10); // inside the last frame's payload: same length, bad CRC

    let b = Buffer::open(cfg, "fb-corrupt-2").unwrap();
    assert_eq!(b.stats().recovered_chunks.get(), 3);
    let got: Vec<u64> = take_all(&b).await.iter().flat_map(seqs).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 8, 9, 10, 11]);
    assert_eq!(b.stats().quarantined_chunks.get("corrupt").get(), 1);
    assert_eq!(b.stats().quarantined_records.get("corrupt").get(), 4);
    let q: Vec<_> = std::fs::read_dir(d.path().join("buf/quarantine/corrupt"))
        .unwrap()
        .collect();
    assert_eq!(q.len(), 1);
    assert_eq!(b.usage(), (0, 0));
}

#[tokio::test]
async fn corrupt_header_is_quarantined_at_startup() {
    let d = TempDir::new("badheader");
    let cfg = file_cfg(d.path(), FsyncPolicy::Never);
    let b = Buffer::open(cfg.clone(), "fb-badheader").unwrap();
    b.append(&Tag::from("a"), &evs(0..3)).await.unwrap();
    b.append(&Tag::from("b"), &evs(3..5)).await.unwrap();
    drop(b);
    let staged = chunk_files(d.path(), "staged");
    let mut data = std::fs::read(&staged[0]).unwrap();
    data[20] ^= 0xff; // inside the header body: header CRC mismatch
    std::fs::write(&staged[0], data).unwrap();
    let b = Buffer::open(cfg, "fb-badheader-2").unwrap();
    assert_eq!(b.stats().quarantined_chunks.get("corrupt").get(), 1);
    assert_eq!(
        b.stats().recovered_chunks.get(),
        1,
        "the other chunk continues"
    );
    let got: Vec<u64> = take_all(&b).await.iter().flat_map(seqs).collect();
    assert_eq!(got, vec![3, 4]);
}

#[tokio::test]
async fn recovery_is_bounded_in_memory_and_fast() {
    let d = TempDir::new("many");
    let cfg = BufferConfig {
        chunk_limit_size: 64 * 1024,
        total_limit_size: 1 << 30,
        ..file_cfg(d.path(), FsyncPolicy::Never)
    };
    let b = Buffer::open(cfg.clone(), "fb-many").unwrap();
    let events = bigs(0..100);
    for _ in 0..300 {
        b.append(&Tag::from("a"), &events).await.unwrap();
    }
    let (_, bytes) = b.usage();
    drop(b);
    assert!(bytes > 12_000_000, "{bytes}");
    let t = std::time::Instant::now();
    let b = Buffer::open(cfg, "fb-many-2").unwrap();
    let took = t.elapsed();
    assert_eq!(b.usage().1, bytes);
    assert_eq!(b.stats().memory_bytes.get(), 0);
    assert_eq!(b.held_records(), 30_000);
    // Recovery reads chunk metadata, not the 12 MB of data (measured: a few ms). The bound
    // catches "reads everything, many times over" without being a benchmark a loaded CI
    // machine can fail.
    eprintln!("recovery of {bytes} bytes in 300 appends took {took:?}");
    assert!(took < Duration::from_secs(20), "recovery took {took:?}");
    // Reading back holds one chunk at a time.
    let c = b.try_dequeue().await.unwrap();
    assert!(b.stats().memory_bytes.get() as usize <= 64 * 1024 + 1024);
    b.purge(&c);
    assert_eq!(b.stats().memory_bytes.get(), 0);
}

#[tokio::test]
async fn one_buffer_per_directory() {
    let d = TempDir::new("lock");
    let cfg = file_cfg(d.path(), FsyncPolicy::Never);
    let b = Buffer::open(cfg.clone(), "fb-lock").unwrap();
    let e = Buffer::open(cfg.clone(), "fb-lock-2").unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    drop(b);
    Buffer::open(cfg, "fb-lock-3").unwrap();
}

#[tokio::test]
async fn fsync_interval_syncs_written_files() {
    let d = TempDir::new("interval");
    let cfg = file_cfg(d.path(), FsyncPolicy::Interval(Duration::from_secs(1)));
    let b = Buffer::open(cfg, "fb-interval").unwrap();
    b.append(&Tag::from("a"), &evs(0..3)).await.unwrap();
    assert_eq!(
        b.stats().fsyncs.get(),
        0,
        "interval: the append does not wait for a sync"
    );
    b.sync_dirty().await;
    assert!(b.stats().fsyncs.get() >= 1);
    let n = b.stats().fsyncs.get();
    b.sync_dirty().await;
    assert_eq!(b.stats().fsyncs.get(), n, "nothing new to sync");
}

#[tokio::test]
async fn fsync_interval_skips_chunks_already_written() {
    // A chunk written and deleted before the interval fsync is not synced: syncing it would
    // only force its data to the disk after nobody needs it.
    let d = TempDir::new("interval-written");
    let cfg = BufferConfig {
        chunk_limit_records: Some(3),
        ..file_cfg(d.path(), FsyncPolicy::Interval(Duration::from_secs(3600)))
    };
    let b = Buffer::open(cfg, "fb-interval-written").unwrap();
    b.append(&Tag::from("a"), &evs(0..6)).await.unwrap();
    assert_eq!(chunk_files(d.path(), "queued").len(), 2);
    assert_eq!(chunk_files(d.path(), "staged").len(), 0);
    let c = b.try_dequeue().await.unwrap();
    b.purge(&c);
    assert_eq!(chunk_files(d.path(), "queued").len(), 1);
    b.sync_dirty().await;
    assert_eq!(
        b.stats().fsyncs.get(),
        2,
        "the queued chunk's file and the directory; not the written chunk's"
    );
}

#[tokio::test]
async fn inspect_and_reinject_salvage_the_good_frames() {
    let d = TempDir::new("reinject");
    let cfg = file_cfg(d.path(), FsyncPolicy::Never);
    let b = Buffer::open(cfg.clone(), "fb-reinject").unwrap();
    for i in 0..3 {
        b.append(&Tag::from("a"), &evs(i * 3..i * 3 + 3))
            .await
            .unwrap();
    }
    b.enqueue_all();
    drop(b);
    let q = chunk_files(d.path(), "queued").pop().unwrap();
    // Corrupt the middle frame's payload.
    let (report, _) = tools::inspect(&q).unwrap();
    assert!(report.is_clean());
    let mid = &report.frames[1];
    let mut data = std::fs::read(&q).unwrap();
    data[(mid.offset + mid.len - 3) as usize] ^= 1;
    std::fs::write(&q, data).unwrap();

    let b = Buffer::open(cfg, "fb-reinject-2").unwrap();
    assert!(take_all(&b).await.is_empty());
    assert_eq!(b.stats().quarantined_records.get("corrupt").get(), 9);
    let listed = tools::list(&d.path().join("buf")).unwrap();
    let qf = listed
        .iter()
        .find(|e| e.location == "quarantine/corrupt")
        .expect("listed in quarantine");
    let (report, good) = tools::inspect(&qf.path).unwrap();
    let st: Vec<_> = report.frames.iter().map(|f| f.status.clone()).collect();
    assert_eq!(
        st,
        vec![
            tools::FrameStatus::Ok,
            tools::FrameStatus::ChecksumMismatch,
            tools::FrameStatus::Ok
        ]
    );
    assert_eq!((report.good_records(), report.bad_records()), (6, 3));
    assert!(!good.is_empty());
    let found = tools::find(
        &d.path().join("buf"),
        &qf.name.as_ref().unwrap().id.hex()[..8],
    )
    .unwrap();
    assert_eq!(found, vec![qf.path.clone()]);

    let r = tools::reinject(&d.path().join("buf"), &qf.path, None).unwrap();
    assert_eq!((r.records, r.bad_frames, r.bad_records), (6, 1, 3));
    assert!(r.original_moved_to.exists());
    assert_eq!(b.adopt_incoming(), 1);
    let got: Vec<u64> = take_all(&b).await.iter().flat_map(seqs).collect();
    assert_eq!(got, vec![0, 1, 2, 6, 7, 8]);
}

#[tokio::test]
async fn garbage_in_incoming_is_quarantined() {
    let d = TempDir::new("incoming");
    let cfg = file_cfg(d.path(), FsyncPolicy::Never);
    let b = Buffer::open(cfg, "fb-incoming").unwrap();
    let inc = d.path().join("buf/incoming");
    std::fs::create_dir_all(&inc).unwrap();
    let name = store::ChunkName {
        seq: 0,
        id: nagare_core::ChunkId([9; 16]),
        state: store::FileState::Queued {
            records: 1,
            raw: 1,
            len: 5,
        },
    };
    std::fs::write(inc.join(name.render()), b"hello").unwrap();
    assert_eq!(b.adopt_incoming(), 0);
    assert_eq!(b.stats().quarantined_chunks.get("corrupt").get(), 1);
    assert_eq!(b.usage(), (0, 0));
}

/// The quarantine folder cannot be written (here a plain file where it should be; also
/// no space, permissions): a chunk the output refuses for good is neither deleted nor counted
/// as dropped; its file stays, the chunk is retried, and once the quarantine works again it
/// moves there.
#[tokio::test(start_paused = true)]
async fn a_chunk_that_cannot_be_quarantined_stays_on_disk() {
    let d = TempDir::new("noquarantine");
    let cfg = BufferConfig {
        flush_mode: nagare_buffer::FlushMode::Immediate,
        retry_randomize: false,
        ..file_cfg(d.path(), FsyncPolicy::Never)
    };
    let b = std::sync::Arc::new(Buffer::open(cfg, "fb-noquarantine").unwrap());
    let blocker = d.path().join("buf").join(store::QUARANTINE_DIR);
    std::fs::write(&blocker, b"not a directory").unwrap();
    let out = TestOutput::failing(usize::MAX);
    out.unrecoverable
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (trigger, sd) = nagare_core::shutdown::channel();
    let task = tokio::spawn(nagare_buffer::flush::run(
        b.clone(),
        out.clone(),
        sd,
        Duration::from_secs(1),
        "fb-noquarantine".into(),
    ));
    b.append(&Tag::from("a"), &evs(0..3)).await.unwrap();
    while b.stats().quarantine_errors.get() < 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(chunk_files(d.path(), "queued").len(), 1, "the file is kept");
    assert_eq!(b.stats().dropped_records.total(), 0);
    assert_eq!(b.stats().quarantined_chunks.total(), 0);
    assert_eq!(b.held_records(), 3, "still in the buffer");
    // The quarantine works again: the next attempt moves the chunk there.
    std::fs::remove_file(&blocker).unwrap();
    while b.stats().quarantined_chunks.get("unrecoverable").get() < 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.stats().quarantined_records.get("unrecoverable").get(), 3);
    assert!(chunk_files(d.path(), "queued").is_empty());
    let q = std::fs::read_dir(d.path().join("buf/quarantine/unrecoverable")).unwrap();
    assert_eq!(q.count(), 1);
    trigger.fire();
    task.await.unwrap();
}

/// A chunk of three appends (three frames of three records: seqs 0..9), left staged or sealed
/// (queued, its totals in its name) by a crash; returns its file.
async fn three_frame_chunk(cfg: &BufferConfig, id: &str, seal: bool) -> PathBuf {
    let b = Buffer::open(cfg.clone(), id).unwrap();
    for i in 0..3 {
        b.append(&Tag::from("a"), &evs(i * 3..i * 3 + 3))
            .await
            .unwrap();
    }
    if seal {
        b.enqueue_all();
    }
    drop(b);
    let Storage::File { path, .. } = &cfg.storage else {
        unreachable!()
    };
    let files = chunk_files(
        path.parent().unwrap(),
        if seal { "queued" } else { "staged" },
    );
    assert_eq!(files.len(), 1);
    files[0].clone()
}

/// Appends `tail` to a sealed chunk's file and renames it as if the name had been written
/// with the tail's appends in it (`extra_records` more records, the new length): what a power
/// loss leaves when the size and the rename reached the disk but the last blocks did not.
fn extend_queued(path: &Path, tail: &[u8], extra_records: u64) -> PathBuf {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(tail).unwrap();
    drop(f);
    let name = store::ChunkName::parse(path.file_name().unwrap().to_str().unwrap()).unwrap();
    let store::FileState::Queued { records, raw, len } = name.state else {
        panic!("not queued")
    };
    let to = path.with_file_name(
        store::ChunkName {
            state: store::FileState::Queued {
                records: records + extra_records,
                raw,
                len: len + tail.len() as u64,
            },
            ..name
        }
        .render(),
    );
    std::fs::rename(path, &to).unwrap();
    to
}

/// A zero-filled tail (ext4 delalloc after a power loss: the size was extended, the blocks
/// never written) is cut off; the whole frames before it are delivered, not quarantined.
#[tokio::test]
async fn a_zero_filled_tail_is_cut_and_the_good_frames_are_delivered() {
    // Staged: found by the recovery walk.
    let d = TempDir::new("zerotail-staged");
    let cfg = file_cfg(d.path(), FsyncPolicy::Never);
    let staged = three_frame_chunk(&cfg, "fb-zerotail", false).await;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&staged)
        .unwrap();
    f.write_all(&[0u8; 64]).unwrap();
    drop(f);
    let b = Buffer::open(cfg, "fb-zerotail-2").unwrap();
    assert_eq!(b.stats().torn_tails.get(), 1);
    assert_eq!(b.stats().quarantined_chunks.total(), 0);
    let got: Vec<u64> = take_all(&b).await.iter().flat_map(seqs).collect();
    assert_eq!(got, (0..9).collect::<Vec<_>>());
    let tails = std::fs::read_dir(d.path().join("buf/quarantine/torn_tail")).unwrap();
    assert_eq!(tails.count(), 1, "the cut bytes are kept");

    // Queued with a name that counts the lost appends: found when it is read back.
    let d = TempDir::new("zerotail-queued");
    let cfg = file_cfg(d.path(), FsyncPolicy::Never);
    let queued = three_frame_chunk(&cfg, "fb-zerotail-q", true).await;
    extend_queued(&queued, &[0u8; 64], 2);
    let b = Buffer::open(cfg, "fb-zerotail-q2").unwrap();
    let got: Vec<u64> = take_all(&b).await.iter().flat_map(seqs).collect();
    assert_eq!(got, (0..9).collect::<Vec<_>>());
    assert_eq!(b.stats().torn_tails.get(), 1);
    assert_eq!(b.stats().quarantined_chunks.total(), 0);
    assert_eq!(
        b.stats().quarantined_records.get("damaged_tail").get(),
        2,
        "the records the name promised beyond the good frames are counted"
    );
    assert_eq!(b.usage(), (0, 0));
}

/// A damaged tail found at read-back that cannot be saved (quarantine/ unusable): the good
/// frames are delivered, the failure is counted, and a retry of the chunk does not count the
/// damage a second time.
#[tokio::test]
async fn a_damaged_tail_that_cannot_be_saved_is_counted_once() {
    let d = TempDir::new("zerotail-nosave");
    let cfg = file_cfg(d.path(), FsyncPolicy::Never);
    let queued = three_frame_chunk(&cfg, "fb-zerotail-ns", true).await;
    extend_queued(&queued, &[0u8; 64], 2);
    let b = Buffer::open(cfg, "fb-zerotail-ns2").unwrap();
    // A plain file where the quarantine directory would go.
    let q = d.path().join("buf/quarantine");
    let _ = std::fs::remove_dir_all(&q);
    std::fs::write(&q, b"").unwrap();
    let first = b.try_dequeue().await.expect("the chunk");
    assert_eq!(first.records, 9);
    b.takeback(first); // the output failed: retried later
    let again = b.try_dequeue().await.expect("the chunk again");
    assert_eq!(again.records, 9);
    b.purge(&again);
    assert_eq!(b.stats().torn_tails.get(), 1);
    assert_eq!(b.stats().quarantine_errors.get(), 1);
    assert_eq!(b.stats().quarantined_records.get("damaged_tail").get(), 2);
    assert_eq!(b.usage(), (0, 0));
}

/// A last frame whose checksum fails (its payload's blocks lost) is cut off; the frames before
/// it are delivered. A damaged frame with good frames after it still quarantines the chunk.
#[tokio::test]
async fn a_bad_last_frame_is_cut_and_the_earlier_frames_are_delivered() {
    let d = TempDir::new("badlast");
    let cfg = file_cfg(d.path(), FsyncPolicy::Never);
    let staged = three_frame_chunk(&cfg, "fb-badlast", false).await;
    flip_byte(&staged, 3); // inside the last frame's payload
    let b = Buffer::open(cfg, "fb-badlast-2").unwrap();
    let got: Vec<u64> = take_all(&b).await.iter().flat_map(seqs).collect();
    assert_eq!(got, (0..6).collect::<Vec<_>>());
    assert_eq!(b.stats().torn_tails.get(), 1);
    assert_eq!(b.stats().quarantined_chunks.total(), 0);
    assert_eq!(b.stats().quarantined_records.get("damaged_tail").get(), 3);
    let tails = std::fs::read_dir(d.path().join("buf/quarantine/torn_tail")).unwrap();
    assert_eq!(tails.count(), 1, "the damaged frame is kept for inspection");
}

/// A staged chunk quarantined at startup reports the records its frames declare.
#[tokio::test]
async fn a_quarantined_staged_chunk_counts_its_records() {
    let d = TempDir::new("staged-corrupt");
    let cfg = file_cfg(d.path(), FsyncPolicy::Never);
    let staged = three_frame_chunk(&cfg, "fb-staged-corrupt", false).await;
    let (report, _) = tools::inspect(&staged).unwrap();
    let mut data = std::fs::read(&staged).unwrap();
    data[report.frames[1].offset as usize] ^= 0xff; // the middle frame's magic
    std::fs::write(&staged, data).unwrap();
    let b = Buffer::open(cfg, "fb-staged-corrupt-2").unwrap();
    assert_eq!(b.stats().quarantined_chunks.get("corrupt").get(), 1);
    assert_eq!(
        b.stats().quarantined_records.get("corrupt").get(),
        6,
        "the two readable frames' records (the damaged header declares none)"
    );
    assert!(take_all(&b).await.is_empty());
}

/// Files the buffer does not know (a previous Fluentd's chunks) are left alone, counted and
/// warned about at startup (one warning with the count and a sample name).
#[tokio::test]
async fn unknown_files_are_left_alone_and_reported() {
    let d = TempDir::new("unknown");
    let cfg = file_cfg(d.path(), FsyncPolicy::Never);
    drop(Buffer::open(cfg.clone(), "fb-unknown").unwrap());
    let dir = d.path().join("buf");
    std::fs::write(dir.join("buffer.b5f1e2a3.log"), b"fluentd chunk").unwrap();
    std::fs::write(dir.join("buffer.b5f1e2a3.log.meta"), b"meta").unwrap();
    let b = Buffer::open(cfg, "fb-unknown-2").unwrap();
    assert_eq!(b.stats().unknown_files.get(), 2);
    assert_eq!(b.usage(), (0, 0));
    assert!(dir.join("buffer.b5f1e2a3.log").exists());
    assert!(dir.join("buffer.b5f1e2a3.log.meta").exists());
}

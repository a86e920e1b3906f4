//! Codec throughput, in events per second.
//!
//! `cargo bench -p nagare-forward --bench codec`
//!
//! Records are Docker-style (`container_id` 64 hex, `container_name`, `source`, a `log` JSON line
//! of about 250 bytes): about 390 bytes of msgpack each, 1,000 events per batch message. The
//! decode benches time what in_forward does per read buffer: [`Framer::next_frame`] then
//! [`parse_message`] into `Vec<Event>`, and dropping the events. Copying the bytes into the
//! read buffer (the socket read) is setup and is not timed.
//!
//! With `../shared/corpus/sample.jsonl` present, `decode/packed_corpus` replays the real corpus
//! (about 1.5 KB per record on average) the same way.

use bytes::BytesMut;
use criterion::measurement::WallTime;
use criterion::{black_box, criterion_group, BatchSize, BenchmarkGroup, Criterion, Throughput};
use nagare_core::msgpack::{write_array_len, write_map_len, write_str};
use nagare_core::{Event, EventTime, Record};
use nagare_forward::codec::compress::gzip;
use nagare_forward::codec::encode::{write_forward, write_packed_forward};
use nagare_forward::codec::{parse_message, DecodeLimits, Framer, Options, Parsed};

const BATCH: usize = 1000;
const TAG: &[u8] = b"docker.checkout.8f219e9cb0eb";

/// Deterministic xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::new();
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(n);
        s
    }
}

/// About 390-byte Docker-style records (the same shape `nagare-loadgen --synthetic` sends).
fn docker_events(n: usize) -> Vec<Event> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let ids: Vec<String> = (0..6).map(|_| rng.hex(64)).collect();
    (0..n)
        .map(|i| {
            let r = rng.next();
            let log = format!(
                concat!(
                    r#"{{"level":"info","ts":"2023-11-15T07:13:{:02}.{:03}+0900","service":"checkout","#,
                    r#""msg":"request and response log","trace_id":"{}","#,
                    r#""request":{{"method":"GET","path":"/v1/orders"}},"response":{{"status":200}},"duration":{}}}"#
                ),
                r % 60,
                (r >> 8) % 1000,
                rng.hex(32),
                10_000_000 + (r >> 24) % 90_000_000,
            );
            Event {
                time: EventTime::new(1_700_000_000 + i as u32, (r % 1_000_000_000) as u32),
                record: Record::from_pairs(&[
                    ("container_id", ids[i % 6].as_str()),
                    ("container_name", &format!("/ecs-checkout-app-{}-6e53a130", i % 6)),
                    ("source", "stdout"),
                    ("log", &log),
                ]),
            }
        })
        .collect()
}

fn corpus_events() -> Option<Vec<Event>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpus/sample.jsonl"
    );
    let text = std::fs::read_to_string(path).ok()?;
    // A tiny reader for this corpus: each line is {"tag","time","record":{str: str}}; values
    // are JSON strings, so decode them with a minimal unescaper rather than pull in serde_json.
    let mut out = Vec::new();
    for line in text.lines() {
        let rec_at = line.find("\"record\": {")? + "\"record\": {".len();
        let time: u32 = line
            .split("\"time\": ")
            .nth(1)?
            .split(',')
            .next()?
            .trim()
            .parse()
            .ok()?;
        let pairs = parse_flat_json_object(&line[rec_at..])?;
        out.push(Event {
            time: EventTime::from_secs(time),
            record: Record::from_pairs(&pairs),
        });
    }
    Some(out)
}

/// Parses `"k": "v", ...}` (the rest of a flat object of strings).
fn parse_flat_json_object(s: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while matches!(it.peek(), Some(' ') | Some(',')) {
            it.next();
        }
        match it.peek()? {
            '}' => return Some(pairs),
            '"' => {}
            _ => return None,
        }
        let k = json_string(&mut it)?;
        while matches!(it.peek(), Some(' ') | Some(':')) {
            it.next();
        }
        let v = json_string(&mut it)?;
        pairs.push((k, v));
    }
}

fn json_string(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    if it.next()? != '"' {
        return None;
    }
    let mut s = String::new();
    loop {
        match it.next()? {
            '"' => return Some(s),
            '\\' => match it.next()? {
                'n' => s.push('\n'),
                't' => s.push('\t'),
                'r' => s.push('\r'),
                'b' => s.push('\u{8}'),
                'f' => s.push('\u{c}'),
                'u' => {
                    let h: String = (0..4).filter_map(|_| it.next()).collect();
                    s.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?).unwrap_or('\u{fffd}'));
                }
                c => s.push(c),
            },
            c => s.push(c),
        }
    }
}

fn packed_entries(events: &[Event]) -> BytesMut {
    let mut entries = BytesMut::new();
    for e in events {
        e.write_entry(&mut entries, false);
    }
    entries
}

fn chunk_opts(n: usize) -> Options<'static> {
    Options {
        chunk: Some(b"AAECAwQFBgcICQoLDA0ODw=="),
        size: Some(n as u64),
        compressed: None,
    }
}

/// Frames and parses every message in `wire`, returning the number of events.
#[inline]
fn decode_all(mut buf: BytesMut, framer: &mut Framer, limits: &DecodeLimits) -> usize {
    let mut n = 0;
    while let Some(frame) = framer.next_frame(&mut buf, limits.max_frame).unwrap() {
        match parse_message(frame, limits).unwrap() {
            Parsed::Message(m) => {
                n += m.events.len();
                black_box(m.events);
            }
            other => panic!("{other:?}"),
        }
    }
    n
}

fn run(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    wire: &[u8],
    n: usize,
    limits: &DecodeLimits,
) {
    // Sanity: the wire decodes to exactly n events.
    assert_eq!(
        decode_all(BytesMut::from(wire), &mut Framer::new(), limits),
        n,
        "{name}"
    );
    g.throughput(Throughput::Elements(n as u64));
    let mut framer = Framer::new();
    g.bench_function(name, |b| {
        b.iter_batched(
            || BytesMut::from(wire),
            |buf| decode_all(buf, &mut framer, limits),
            BatchSize::LargeInput,
        )
    });
}

fn bench_decode(c: &mut Criterion) {
    let events = docker_events(BATCH);
    let avg = events
        .iter()
        .map(|e| e.record.as_bytes().len())
        .sum::<usize>()
        / events.len();
    eprintln!("docker-style records: {avg} bytes of msgpack on average, {BATCH} per batch");
    let limits = DecodeLimits::default();
    let mut g = c.benchmark_group("decode");

    // PackedForward (fluentd out_forward, our out_forward).
    let entries = packed_entries(&events);
    let mut wire = BytesMut::new();
    write_packed_forward(&mut wire, TAG, &entries, Some(&chunk_opts(BATCH)), false);
    run(&mut g, "packed", &wire, BATCH, &limits);

    // Forward (Fluent Bit's default).
    let mut wire = BytesMut::new();
    write_forward(&mut wire, TAG, &events, Some(&chunk_opts(BATCH)), false);
    run(&mut g, "forward", &wire, BATCH, &limits);

    // CompressedPackedForward, gzip level 6 (fluentd's default); decompression dominates.
    let gz = gzip(&entries, 6);
    let mut wire = BytesMut::new();
    let o = Options {
        compressed: Some("gzip"),
        ..chunk_opts(BATCH)
    };
    write_packed_forward(&mut wire, TAG, &gz, Some(&o), false);
    run(&mut g, "compressed_gzip", &wire, BATCH, &limits);

    // Message mode as Docker sends it: [tag, int32 time, record, {}], BATCH messages back to back.
    let mut wire = BytesMut::new();
    for e in &events {
        write_array_len(&mut wire, 4);
        write_str(&mut wire, TAG);
        wire.extend_from_slice(&[0xd2]);
        wire.extend_from_slice(&(e.time.secs() as i32).to_be_bytes());
        wire.extend_from_slice(e.record.as_bytes());
        write_map_len(&mut wire, 0);
    }
    run(&mut g, "message_docker", &wire, BATCH, &limits);

    if let Some(corpus) = corpus_events() {
        let n = corpus.len();
        let avg = corpus
            .iter()
            .map(|e| e.record.as_bytes().len())
            .sum::<usize>()
            / n;
        eprintln!("corpus: {n} records, {avg} bytes of msgpack on average");
        let entries = packed_entries(&corpus);
        let mut wire = BytesMut::new();
        write_packed_forward(&mut wire, TAG, &entries, Some(&chunk_opts(n)), false);
        run(&mut g, "packed_corpus", &wire, n, &limits);
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let events = docker_events(BATCH);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(BATCH as u64));
    // Entries into a reused buffer, then the PackedForward message around them (what
    // out_forward would do if it built messages from events rather than sending chunk bytes).
    let mut entries = BytesMut::with_capacity(512 * BATCH);
    let mut out = BytesMut::with_capacity(512 * BATCH);
    g.bench_function("packed", |b| {
        b.iter(|| {
            entries.clear();
            out.clear();
            for e in &events {
                e.write_entry(&mut entries, false);
            }
            write_packed_forward(&mut out, TAG, &entries, Some(&chunk_opts(BATCH)), false);
            black_box(out.len())
        })
    });
    g.bench_function("packed_gzip1", |b| {
        b.iter(|| {
            entries.clear();
            out.clear();
            for e in &events {
                e.write_entry(&mut entries, false);
            }
            let gz = gzip(&entries, 1);
            let o = Options {
                compressed: Some("gzip"),
                ..chunk_opts(BATCH)
            };
            write_packed_forward(&mut out, TAG, &gz, Some(&o), false);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode, bench_encode);

/// `CODEC_PROFILE=<packed|forward|message_docker> ITERS=n` runs only that decode, `n` times,
/// outside criterion: a steady loop to look at with `valgrind --tool=callgrind` or `perf`.
fn profile(which: &str) {
    let events = docker_events(BATCH);
    let mut wire = BytesMut::new();
    match which {
        "packed" => write_packed_forward(
            &mut wire,
            TAG,
            &packed_entries(&events),
            Some(&chunk_opts(BATCH)),
            false,
        ),
        "forward" => write_forward(&mut wire, TAG, &events, Some(&chunk_opts(BATCH)), false),
        "message_docker" => {
            for e in &events {
                write_array_len(&mut wire, 4);
                write_str(&mut wire, TAG);
                wire.extend_from_slice(&[0xd2]);
                wire.extend_from_slice(&(e.time.secs() as i32).to_be_bytes());
                wire.extend_from_slice(e.record.as_bytes());
                write_map_len(&mut wire, 0);
            }
        }
        other => panic!("CODEC_PROFILE={other}: use packed, forward or message_docker"),
    }
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let limits = DecodeLimits::default();
    let mut framer = Framer::new();
    let mut buf = BytesMut::with_capacity(wire.len());
    let mut n = 0;
    for _ in 0..iters {
        buf.clear();
        buf.extend_from_slice(&wire);
        n += decode_all(buf.split(), &mut framer, &limits);
        buf.reserve(wire.len());
    }
    eprintln!("{which}: {n} events decoded");
}

fn main() {
    if let Ok(which) = std::env::var("CODEC_PROFILE") {
        profile(&which);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

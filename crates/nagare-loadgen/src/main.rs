//! `nagare-loadgen`: drives a forward-protocol server with pre-encoded traffic and reports one
//! JSON line of throughput.
//!
//! * Records come from a Docker-driver corpus (`../shared/corpus/sample.jsonl` format, cycled) or
//!   are synthetic Docker-style records (about 390 bytes of msgpack each).
//! * Every mode: `message` (Docker's `[tag, int32 time, record, {}]`), `forward`, `packed`
//!   (PackedForward, bin or str32) and `compressed` (CompressedPackedForward, gzip).
//! * Messages are encoded before the timed phase into write blocks of about `--write-size` bytes.
//!   With `--ack` each message carries a unique 24-character `chunk` (base64 of the connection
//!   number and a sequence number), patched into the pre-encoded bytes in place; at most
//!   `--window` messages per connection are unacknowledged at any time, and every ack must echo
//!   the expected chunk, in order.
//! * `--rate`: a steady load instead of a burst; each connection holds a write until its events
//!   are due (its share of the rate since the start).
//! * The timed phase starts once every connection is open and ends when the last ack arrived
//!   (`--ack`) or, without acks, when the server closed each connection after our FIN: in_forward
//!   reads EOF only after handling everything before it, so the time includes the server's work.
//!
//! Exit status: 0 when every event was written and (with `--ack`) every message acked; 1 on any
//! error (refused connection, write error, wrong or missing ack, timeout).

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use bytes::{BufMut, BytesMut};
use clap::{Parser, ValueEnum};
use nagare_core::msgpack::{write_array_len, write_map_len, write_str};
use nagare_core::{Event, EventTime, Record};
use nagare_forward::codec::encode::{write_forward, write_packed_forward};
use nagare_forward::codec::{compress, encode::parse_ack, Framer, Options};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Barrier, Semaphore};

/// Length of every chunk id we send: base64 of 16 bytes, as fluent-logger-golang and Fluent Bit.
const CHUNK_LEN: usize = 24;
const CHUNK_PLACEHOLDER: &[u8; CHUNK_LEN] = b"AAAAAAAAAAAAAAAAAAAAAA==";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One event per message, as Docker's fluentd driver: `[tag, int32 time, record, {}]`.
    Message,
    /// `[tag, [[time, record], ...], {size}]`.
    Forward,
    /// `[tag, <entries as bin (or str32)>, {size}]`.
    Packed,
    /// `[tag, gzip(entries), {size, compressed: "gzip"}]`.
    Compressed,
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Forward-protocol load generator: one JSON line of results on stdout"
)]
struct Args {
    /// Server address (host:port).
    #[arg(long)]
    addr: SocketAddr,
    /// Event mode.
    #[arg(long, value_enum, default_value = "packed")]
    mode: Mode,
    /// Events per message (forward, packed, compressed).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Ask for an ack on every message (a `chunk` option) and check each one.
    #[arg(long)]
    ack: bool,
    /// Unacknowledged messages allowed per connection (with --ack).
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Concurrent connections; events are split evenly between them.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Total events to send.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Tag for every message. Default: one tag per connection, the tag of the first record
    /// that connection sends (Docker's driver opens one connection per container, so each
    /// connection carries one tag).
    #[arg(long)]
    tag: Option<String>,
    /// Instead, give every message the tag of its (first) record: consecutive messages on a
    /// connection then change tags, as from a relay multiplexing many containers.
    #[arg(long, conflicts_with = "tag")]
    tag_per_record: bool,
    /// Corpus to replay (jsonl: {"tag","time","record"} per line), cycled.
    #[arg(long, default_value = "../shared/corpus/sample.jsonl")]
    corpus: PathBuf,
    /// Use synthetic Docker-style records (about 390 bytes of msgpack) instead of the corpus.
    #[arg(long)]
    synthetic: bool,
    /// gzip level for --mode compressed (fluentd's default is 6).
    #[arg(long, default_value_t = 6)]
    gzip_level: u32,
    /// Send PackedForward entries as str32, as fluentd's out_forward does (default: bin).
    #[arg(long)]
    packed_as_str: bool,
    /// Bytes per write: small messages are grouped into blocks of about this size.
    #[arg(long, default_value_t = 256 * 1024)]
    write_size: usize,
    /// Runtime worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds without progress (ack or server close) before giving up.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Sustained load instead of a burst: at most this many events per second in all (split
    /// evenly between the connections; each write waits until its events are due).
    #[arg(long)]
    rate: Option<f64>,
}

/// One source record.
struct Rec {
    tag: Vec<u8>,
    time: u32,
    record: Record,
}

fn load_corpus(path: &PathBuf) -> Result<Vec<Rec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading corpus {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let tag = v["tag"]
            .as_str()
            .unwrap_or("docker.loadgen")
            .as_bytes()
            .to_vec();
        let time = v["time"].as_u64().unwrap_or(0) as u32;
        let obj = v["record"]
            .as_object()
            .ok_or_else(|| anyhow!("{}:{}: record is not an object", path.display(), i + 1))?;
        let pairs: Vec<(&str, Vec<u8>)> = obj
            .iter()
            .map(|(k, v)| {
                let val = match v {
                    serde_json::Value::String(s) => s.as_bytes().to_vec(),
                    other => other.to_string().into_bytes(),
                };
                (k.as_str(), val)
            })
            .collect();
        out.push(Rec {
            tag,
            time,
            record: Record::from_pairs(&pairs),
        });
    }
    if out.is_empty() {
        bail!("corpus {} has no records", path.display());
    }
    Ok(out)
}

/// A small deterministic PRNG (xorshift64*): synthetic records are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(n);
        s
    }
}

/// Docker-style records: `container_id` (64 hex), `container_name`, `source`, and a `log` JSON
/// line of about 250 bytes; about 390 bytes of msgpack each.
fn synthetic(n: usize) -> Vec<Rec> {
    const SERVICES: [&str; 3] = ["condor", "falcon", "heron"];
    const PATHS: [&str; 4] = ["/v1/orders", "/v1/users/me", "/v1/cart/items", "/healthz"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let containers: Vec<(String, String, &str)> = (0..6)
        .map(|i| {
            let svc = SERVICES[i % 3];
            let id = rng.hex(64);
            let name = format!("/ecs-{svc}-app-{}-{}", i / 3 + 1, rng.hex(8));
            (id, name, svc)
        })
        .collect();
    (0..n)
        .map(|i| {
            let (id, name, svc) = &containers[i % containers.len()];
            let r = rng.next();
            let log = format!(
                concat!(
                    r#"{{"level":"info","ts":"2023-11-15T07:13:{:02}.{:03}+0900","service":"{}","#,
                    r#""msg":"request and response log","trace_id":"{}","#,
                    r#""request":{{"method":"GET","path":"{}"}},"response":{{"status":200}},"duration":{}}}"#
                ),
                r % 60,
                (r >> 8) % 1000,
                svc,
                rng.hex(32),
                PATHS[(r >> 20) as usize % PATHS.len()],
                10_000_000 + (r >> 24) % 90_000_000,
            );
            let record = Record::from_pairs(&[
                ("container_id", id.as_str()),
                ("container_name", name.as_str()),
                ("source", "stdout"),
                ("log", log.as_str()),
            ]);
            Rec {
                tag: format!("docker.loadgen.{}", &id[..12]).into_bytes(),
                time: 1_700_000_000 + (i as u32 % 3600),
                record,
            }
        })
        .collect()
}

/// The settings message encoding needs.
#[derive(Clone)]
struct Enc {
    mode: Mode,
    ack: bool,
    tag: Option<Vec<u8>>,
    gzip_level: u32,
    packed_as_str: bool,
}

/// Appends one message holding `recs` to `out`. With acks, the chunk placeholder is the last
/// 24 bytes of the message.
fn encode_message(out: &mut BytesMut, enc: &Enc, recs: &[&Rec]) {
    let tag: &[u8] = enc.tag.as_deref().unwrap_or(&recs[0].tag);
    let chunk = enc.ack.then_some(&CHUNK_PLACEHOLDER[..]);
    let opts = Options {
        chunk,
        size: Some(recs.len() as u64),
        compressed: None,
    };
    match enc.mode {
        Mode::Message => {
            // fluent-logger-golang: int64 seconds as the smallest signed encoding (int32 0xd2),
            // map[string]string options: {} or {"chunk": ...}.
            let r = recs[0];
            write_array_len(out, 4);
            write_str(out, tag);
            out.put_u8(0xd2);
            out.put_i32(r.time as i32);
            out.put_slice(r.record.as_bytes());
            match chunk {
                Some(c) => {
                    write_map_len(out, 1);
                    write_str(out, b"chunk");
                    write_str(out, c);
                }
                None => write_map_len(out, 0),
            }
        }
        Mode::Forward => {
            let events: Vec<Event> = recs
                .iter()
                .map(|r| Event {
                    time: EventTime::from_secs(r.time),
                    record: r.record.clone(),
                })
                .collect();
            write_forward(out, tag, &events, Some(&opts), false);
        }
        Mode::Packed | Mode::Compressed => {
            let mut entries =
                BytesMut::with_capacity(recs.iter().map(|r| r.record.as_bytes().len() + 11).sum());
            for r in recs {
                Event {
                    time: EventTime::from_secs(r.time),
                    record: r.record.clone(),
                }
                .write_entry(&mut entries, false);
            }
            if enc.mode == Mode::Compressed {
                let gz = compress::gzip(&entries, enc.gzip_level);
                let opts = Options {
                    compressed: Some("gzip"),
                    ..opts
                };
                write_packed_forward(out, tag, &gz, Some(&opts), enc.packed_as_str);
            } else {
                write_packed_forward(out, tag, &entries, Some(&opts), enc.packed_as_str);
            }
        }
    }
}

/// Whole messages laid out back to back, written with one `write_all`.
struct Block {
    data: Vec<u8>,
    /// End offset of each message in `data`.
    ends: Vec<usize>,
    /// Events in each message.
    events: Vec<u64>,
}

impl Block {
    fn new() -> Self {
        Block {
            data: Vec::new(),
            ends: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// What one connection sends: a ring of blocks of full messages (`full_msgs` messages in
/// all, cycling through the ring), then an optional final message with the remainder.
struct Plan {
    ring: Vec<Block>,
    full_msgs: u64,
    tail: Option<Block>,
    events: u64,
}

fn plan(
    pool: &[Rec],
    start: usize,
    events: u64,
    batch: usize,
    enc: &Enc,
    write_size: usize,
    max_per_block: usize,
) -> Plan {
    let batch = if enc.mode == Mode::Message {
        1
    } else {
        batch.max(1)
    };
    let full_msgs = events / batch as u64;
    let rest = (events % batch as u64) as usize;
    let mut cursor = start % pool.len();
    let mut take = |n: usize| -> Vec<&Rec> {
        (0..n)
            .map(|_| {
                let r = &pool[cursor];
                cursor = (cursor + 1) % pool.len();
                r
            })
            .collect()
    };
    // Enough distinct messages to go once through the pool, but never more than will be sent.
    let ring_msgs = (pool.len().div_ceil(batch) as u64).clamp(1, full_msgs.max(1));
    let mut ring = Vec::new();
    let mut cur = Block::new();
    let mut buf = BytesMut::new();
    if full_msgs > 0 {
        for _ in 0..ring_msgs {
            buf.clear();
            encode_message(&mut buf, enc, &take(batch));
            cur.data.extend_from_slice(&buf);
            cur.ends.push(cur.data.len());
            cur.events.push(batch as u64);
            if cur.data.len() >= write_size || cur.ends.len() >= max_per_block {
                ring.push(std::mem::replace(&mut cur, Block::new()));
            }
        }
        if !cur.ends.is_empty() {
            ring.push(cur);
        }
    }
    let tail = (rest > 0).then(|| {
        buf.clear();
        encode_message(&mut buf, enc, &take(rest));
        Block {
            data: buf.to_vec(),
            ends: vec![buf.len()],
            events: vec![rest as u64],
        }
    });
    Plan {
        ring,
        full_msgs,
        tail,
        events,
    }
}

/// The chunk id of message `seq` on connection `conn`: base64 of 16 bytes.
fn chunk_id(conn: u32, seq: u64) -> [u8; CHUNK_LEN] {
    let mut raw = [0u8; 16];
    raw[..4].copy_from_slice(b"nlg0");
    raw[4..8].copy_from_slice(&conn.to_be_bytes());
    raw[8..].copy_from_slice(&seq.to_be_bytes());
    let mut out = [0u8; CHUNK_LEN];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(raw, &mut out)
        .unwrap_or(0);
    debug_assert_eq!(n, CHUNK_LEN);
    out
}

#[derive(Default)]
struct ConnResult {
    events: u64,
    messages: u64,
    bytes: u64,
    acked: u64,
    errors: Vec<String>,
    end: Option<Instant>,
}

struct Shared {
    addr: SocketAddr,
    ack: bool,
    window: usize,
    timeout: Duration,
    barrier: Barrier,
    /// Events per second per connection (`--rate`).
    pace: Option<f64>,
}

async fn read_acks(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    conn: u32,
    expected: u64,
    credits: Arc<Semaphore>,
    timeout: Duration,
) -> Result<u64> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut framer = Framer::new();
    let mut seq = 0u64;
    loop {
        while let Some(frame) = framer
            .next_frame(&mut buf, 1 << 16)
            .context("reply is not msgpack")?
        {
            let got = parse_ack(&frame)
                .ok_or_else(|| anyhow!("reply is not an ack map: {:02x?}", &frame[..]))?;
            let want = chunk_id(conn, seq);
            if got != want {
                bail!(
                    "ack {} out of order or wrong: got {:?}, want {:?}",
                    seq,
                    String::from_utf8_lossy(got),
                    String::from_utf8_lossy(&want)
                );
            }
            seq += 1;
            credits.add_permits(1);
        }
        if seq >= expected {
            return Ok(seq);
        }
        match tokio::time::timeout(timeout, rd.read_buf(&mut buf)).await {
            Err(_) => bail!(
                "no ack for {timeout:?}: {} of {expected} messages acked",
                seq
            ),
            Ok(Err(e)) => bail!("reading acks: {e} ({} of {expected} messages acked)", seq),
            Ok(Ok(0)) => bail!(
                "server closed the connection: {} of {expected} messages acked",
                seq
            ),
            Ok(Ok(_)) => {}
        }
    }
}

/// Writes every message of the plan, patching chunk ids and waiting for credit with acks.
async fn send_all(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    p: &mut Plan,
    conn: u32,
    sh: &Shared,
    credits: &Semaphore,
    res: &mut ConnResult,
) -> Result<()> {
    let t0 = tokio::time::Instant::now();
    let mut seq = 0u64;
    let mut left = p.full_msgs;
    let mut i = 0;
    while left > 0 {
        let ring_len = p.ring.len();
        let blk = &mut p.ring[i % ring_len];
        i += 1;
        let k = blk.ends.len().min(left as usize);
        left -= k as u64;
        pace(sh, t0, res).await;
        send_block(wr, blk, k, conn, &mut seq, sh, credits, res).await?;
    }
    if let Some(t) = p.tail.as_mut() {
        pace(sh, t0, res).await;
        send_block(wr, t, 1, conn, &mut seq, sh, credits, res).await?;
    }
    Ok(())
}

/// With `--rate`, waits until the events this connection already sent have had their share of
/// time since `t0`.
async fn pace(sh: &Shared, t0: tokio::time::Instant, res: &ConnResult) {
    if let Some(pace) = sh.pace {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(res.events as f64 / pace)).await;
    }
}

async fn run_conn(conn: u32, mut p: Plan, sh: Arc<Shared>) -> ConnResult {
    let mut res = ConnResult::default();
    let stream = match TcpStream::connect(sh.addr).await {
        Ok(s) => s,
        Err(e) => {
            res.errors
                .push(format!("connection {conn}: connect {}: {e}", sh.addr));
            sh.barrier.wait().await;
            return res;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let total_msgs = p.full_msgs + p.tail.is_some() as u64;
    let credits = Arc::new(Semaphore::new(sh.window));
    sh.barrier.wait().await;

    if !sh.ack {
        let r: Result<()> = async {
            send_all(&mut wr, &mut p, conn, &sh, &credits, &mut res).await?;
            wr.shutdown().await.context("shutdown")?;
            drain_until_close(&mut rd, sh.timeout).await
        }
        .await;
        match r {
            Ok(()) => res.end = Some(Instant::now()),
            Err(e) => res.errors.push(format!("connection {conn}: {e:#}")),
        }
        return res;
    }

    let reader = {
        let credits = credits.clone();
        let timeout = sh.timeout;
        tokio::spawn(async move {
            let r = read_acks(rd, conn, total_msgs, credits.clone(), timeout).await;
            // Wake a writer waiting for credit that will never come.
            credits.close();
            r
        })
    };
    if let Err(e) = send_all(&mut wr, &mut p, conn, &sh, &credits, &mut res).await {
        // The reader's error (wrong ack, close) explains a stalled writer better.
        match reader.await {
            Ok(Err(re)) => res.errors.push(format!("connection {conn}: {re:#}")),
            _ => res.errors.push(format!("connection {conn}: {e:#}")),
        }
        return res;
    }
    match reader.await {
        Ok(Ok(n)) => {
            res.acked = n;
            res.end = Some(Instant::now());
        }
        Ok(Err(e)) => res.errors.push(format!("connection {conn}: {e:#}")),
        Err(e) => res
            .errors
            .push(format!("connection {conn}: ack reader: {e}")),
    }
    let _ = wr.shutdown().await;
    res
}

#[allow(clippy::too_many_arguments)]
async fn send_block(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    blk: &mut Block,
    k: usize,
    conn: u32,
    seq: &mut u64,
    sh: &Shared,
    credits: &Semaphore,
    res: &mut ConnResult,
) -> Result<()> {
    if sh.ack {
        for &end in &blk.ends[..k] {
            blk.data[end - CHUNK_LEN..end].copy_from_slice(&chunk_id(conn, *seq));
            *seq += 1;
        }
        credits
            .acquire_many(k as u32)
            .await
            .map_err(|_| anyhow!("the ack reader stopped"))?
            .forget();
    }
    let n = blk.ends[k - 1];
    wr.write_all(&blk.data[..n]).await.context("write")?;
    res.bytes += n as u64;
    res.messages += k as u64;
    res.events += blk.events[..k].iter().sum::<u64>();
    Ok(())
}

/// Without acks, waits for the server to close after our FIN: in_forward only reads EOF once it
/// has handled every byte before it.
async fn drain_until_close(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    timeout: Duration,
) -> Result<()> {
    let mut sink = [0u8; 4096];
    loop {
        match tokio::time::timeout(timeout, rd.read(&mut sink)).await {
            Err(_) => bail!("server did not close within {timeout:?} after our FIN"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match real_main(args) {
        Ok(ok) if ok => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("nagare-loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> Result<bool> {
    if args.connections == 0 || args.window == 0 || args.threads == 0 {
        bail!("--connections, --window and --threads must be at least 1");
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be a positive number of events per second");
    }
    let pool = if args.synthetic {
        synthetic(1024)
    } else {
        load_corpus(&args.corpus)?
    };
    let avg_record = pool
        .iter()
        .map(|r| r.record.as_bytes().len())
        .sum::<usize>() as f64
        / pool.len() as f64;
    let enc = Enc {
        mode: args.mode,
        ack: args.ack,
        tag: args.tag.as_ref().map(|t| t.as_bytes().to_vec()),
        gzip_level: args.gzip_level,
        packed_as_str: args.packed_as_str,
    };
    let max_per_block = if args.ack { args.window } else { usize::MAX };
    let conns = args.connections as u64;
    let plans: Vec<Plan> = (0..conns)
        .map(|c| {
            let events = args.events / conns + u64::from(c < args.events % conns);
            let start = (c as usize * pool.len()) / args.connections;
            let tag = enc
                .tag
                .clone()
                .or_else(|| (!args.tag_per_record).then(|| pool[start].tag.clone()));
            let conn_enc = Enc { tag, ..enc.clone() };
            plan(
                &pool,
                start,
                events,
                args.batch,
                &conn_enc,
                args.write_size,
                max_per_block,
            )
        })
        .collect();
    let planned: u64 = plans.iter().map(|p| p.events).sum();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    let shared = Arc::new(Shared {
        addr: args.addr,
        ack: args.ack,
        window: args.window,
        timeout: Duration::from_secs(args.timeout),
        barrier: Barrier::new(args.connections + 1),
        pace: args.rate.map(|r| r / args.connections as f64),
    });
    let (results, start) = rt.block_on(async {
        let handles: Vec<_> = plans
            .into_iter()
            .enumerate()
            .map(|(c, p)| tokio::spawn(run_conn(c as u32, p, shared.clone())))
            .collect();
        shared.barrier.wait().await;
        let start = Instant::now();
        let mut results = Vec::new();
        for h in handles {
            results.push(h.await.unwrap_or_else(|e| ConnResult {
                errors: vec![format!("connection task failed: {e}")],
                ..Default::default()
            }));
        }
        (results, start)
    });
    let events: u64 = results.iter().map(|r| r.events).sum();
    let messages: u64 = results.iter().map(|r| r.messages).sum();
    let bytes: u64 = results.iter().map(|r| r.bytes).sum();
    let acked: u64 = results.iter().map(|r| r.acked).sum();
    let mut errors: Vec<String> = results
        .iter()
        .flat_map(|r| r.errors.iter().cloned())
        .collect();
    if events != planned && errors.is_empty() {
        errors.push(format!("sent {events} of {planned} events"));
    }
    if args.ack && acked != messages && errors.is_empty() {
        errors.push(format!(
            "{} of {messages} messages not acked",
            messages - acked
        ));
    }
    let end = results
        .iter()
        .filter_map(|r| r.end)
        .max()
        .unwrap_or_else(Instant::now);
    let secs = end.duration_since(start).as_secs_f64().max(1e-9);
    let report = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "source": if args.synthetic { "synthetic".to_string() } else { args.corpus.display().to_string() },
        "avg_record_bytes": (avg_record * 10.0).round() / 10.0,
        "connections": args.connections,
        "batch": if args.mode == Mode::Message { 1 } else { args.batch },
        "ack": args.ack,
        "tags": if args.tag.is_some() { "fixed" } else if args.tag_per_record { "per_record" } else { "per_connection" },
        "window": if args.ack { Some(args.window) } else { None },
        "rate": args.rate,
        "events": events,
        "messages": messages,
        "bytes": bytes,
        "seconds": (secs * 1e6).round() / 1e6,
        "events_per_sec": (events as f64 / secs).round(),
        "mb_per_sec": ((bytes as f64 / 1e6 / secs) * 100.0).round() / 100.0,
        "acked_messages": acked,
        "errors": errors.len(),
        "error_messages": errors.iter().take(5).collect::<Vec<_>>(),
    });
    println!("{report}");
    Ok(errors.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nagare_forward::codec::{parse_message, DecodeLimits, Parsed};

    fn enc(mode: Mode, ack: bool) -> Enc {
        Enc {
            mode,
            ack,
            tag: None,
            gzip_level: 1,
            packed_as_str: false,
        }
    }

    fn decode_all(data: &[u8]) -> Vec<nagare_forward::codec::Message> {
        let mut buf = BytesMut::from(data);
        let mut f = Framer::new();
        let mut out = Vec::new();
        while let Some(frame) = f.next_frame(&mut buf, 1 << 30).unwrap() {
            match parse_message(frame, &DecodeLimits::default()).unwrap() {
                Parsed::Message(m) => out.push(m),
                o => panic!("{o:?}"),
            }
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn synthetic_records_are_about_390_bytes() {
        let pool = synthetic(1024);
        let avg = pool
            .iter()
            .map(|r| r.record.as_bytes().len())
            .sum::<usize>()
            / pool.len();
        assert!((370..=410).contains(&avg), "{avg}");
    }

    #[test]
    fn every_mode_decodes_with_patched_chunks() {
        let pool = synthetic(100);
        for mode in [Mode::Message, Mode::Forward, Mode::Packed, Mode::Compressed] {
            let e = enc(mode, true);
            let mut p = plan(&pool, 0, 1005, 10, &e, 4096, 4);
            let mut seq = 0;
            let mut all = Vec::new();
            let mut left = p.full_msgs;
            let mut i = 0;
            while left > 0 {
                let n = p.ring.len();
                let blk = &mut p.ring[i % n];
                i += 1;
                let k = blk.ends.len().min(left as usize);
                left -= k as u64;
                for &end in &blk.ends[..k] {
                    blk.data[end - CHUNK_LEN..end].copy_from_slice(&chunk_id(3, seq));
                    seq += 1;
                }
                all.extend(decode_all(&blk.data[..blk.ends[k - 1]]));
            }
            if let Some(t) = p.tail.as_mut() {
                let end = t.ends[0];
                t.data[end - CHUNK_LEN..end].copy_from_slice(&chunk_id(3, seq));
                all.extend(decode_all(&t.data));
            }
            let events: usize = all.iter().map(|m| m.events.len()).sum();
            assert_eq!(events, 1005, "{mode:?}");
            for (s, m) in all.iter().enumerate() {
                assert_eq!(
                    m.chunk.as_deref(),
                    Some(&chunk_id(3, s as u64)[..]),
                    "{mode:?}"
                );
            }
        }
    }

    #[test]
    fn docker_message_shape() {
        let pool = synthetic(1);
        let mut out = BytesMut::new();
        encode_message(&mut out, &enc(Mode::Message, false), &[&pool[0]]);
        assert_eq!(out[0], 0x94);
        assert_eq!(*out.last().unwrap(), 0x80);
        let m = decode_all(&out);
        assert_eq!(m[0].events[0].record, pool[0].record);
    }

    #[test]
    fn corpus_loads() {
        let p = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/corpus/sample.jsonl"
        ));
        if !p.exists() {
            let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
            assert!(!ci, "the corpus is missing: {}", p.display());
            return;
        }
        let pool = load_corpus(&p).unwrap();
        assert_eq!(pool.len(), 2077);
        assert!(pool[0].record.get_str(b"log").is_some());
    }

    #[test]
    fn rate_spreads_the_events_over_time() {
        // A server that reads everything and closes after our FIN, as in_forward does.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::Read;
            let (mut s, _) = listener.accept().unwrap();
            let mut sink = vec![0u8; 64 * 1024];
            let mut n = 0u64;
            while let Ok(k) = s.read(&mut sink) {
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            n
        });
        let args = Args::parse_from([
            "nagare-loadgen",
            "--addr",
            &addr.to_string(),
            "--synthetic",
            "--events",
            "1050",
            "--batch",
            "100",
            "--write-size",
            "1",
            "--rate",
            "4000",
        ]);
        let t = Instant::now();
        assert!(real_main(args).unwrap());
        // 10 messages of 100 and a last one of 50, due after 1,000 events at 4,000/s: the
        // run cannot be shorter (a floor set by the pacing, not a speed assertion).
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        assert!(server.join().unwrap() > 0);
        let bad = Args::parse_from(["nagare-loadgen", "--addr", &addr.to_string(), "--rate", "0"]);
        assert!(real_main(bad).is_err());
    }
}

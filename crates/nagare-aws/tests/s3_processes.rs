//! Two processes, four flush threads each, one key family (same host name, same service,
//! same 5-minute slice): every chunk gets its own object, none is overwritten. The processes
//! are this test binary run again in child mode (`NAGARE_S3_CHILD`), on the disk store and on
//! moto.

mod s3_common;

use nagare_aws::out_s3::{Endpoint, S3Output};
use s3_common::*;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const T: u32 = 1_700_000_000;
const CHUNKS: usize = 40;
const PER_CHUNK: usize = 20;

fn config(backend: &str, bucket: &str, id: &str) -> nagare_aws::out_s3::S3Config {
    let b = if let Some(dir) = backend.strip_prefix("disk:") {
        let mut c = Backend::Moto(String::new()).config(id, bucket);
        c.endpoint = Endpoint::Disk(dir.into());
        c.force_path_style = false;
        c
    } else {
        Backend::Moto(backend.strip_prefix("moto:").unwrap().to_string()).config(id, bucket)
    };
    let mut c = b;
    c.path = "applications/${service}/app/%Y/%m/%d/%H/".into();
    c.object_key_format = "%{path}%M_%{hostname}_%{index}.%{file_extension}".into();
    c.timekey = Some(300);
    c
}

fn lines_of(writer: usize) -> Vec<Line> {
    synthetic(
        "condor",
        T,
        writer,
        CHUNKS * PER_CHUNK,
        &format!("process{writer}"),
    )
}

/// Child mode: write this writer's chunks with four concurrent writers, then exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn child_writer() {
    let Ok(spec) = std::env::var("NAGARE_S3_CHILD") else {
        return;
    };
    let mut it = spec.splitn(3, '|');
    let (backend, bucket, writer) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let writer: usize = writer.parse().unwrap();
    let out = S3Output::start(&config(backend, bucket, &format!("child{writer}")))
        .await
        .unwrap();
    let lines = lines_of(writer);
    let refs: Vec<&Line> = lines.iter().collect();
    let chunks: Vec<_> = refs
        .chunks(PER_CHUNK)
        .map(|c| chunk("condor", (T - T % 300) as i64, c))
        .collect();
    let r = drive(
        Arc::new(out),
        chunks,
        4,
        Duration::from_millis(20),
        Duration::from_secs(60),
    )
    .await;
    assert!(r.unrecoverable.is_empty(), "{:?}", r.unrecoverable);
    assert_eq!(r.written, CHUNKS);
    let conflicts = nagare_core::metrics::counter(
        "nagare_s3_key_conflicts_total",
        "",
        &[("plugin_id", &format!("child{writer}"))],
    )
    .get();
    println!("NAGARE_S3_CONFLICTS={conflicts}");
}

async fn two_processes(backend: String) {
    let bucket = bucket("procs");
    let first = S3Output::start(&config(&backend, &bucket, "procs-parent"))
        .await
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|w| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "child_writer",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("NAGARE_S3_CHILD", format!("{backend}|{bucket}|{w}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a writer process")
        })
        .collect();
    let mut conflicts = 0u64;
    for c in children {
        let o = tokio::task::spawn_blocking(move || c.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "a writer process failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        conflicts += stdout
            .lines()
            .find_map(|l| l.split("NAGARE_S3_CONFLICTS=").nth(1))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    eprintln!("{backend}: {conflicts} key conflicts between the two processes, all resolved");
    let objects = read_all(&*first.store(), "applications/condor/").await;
    assert_eq!(
        objects.len(),
        2 * CHUNKS,
        "one object per chunk: none overwritten"
    );
    let idx: BTreeSet<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(idx.len(), 2 * CHUNKS);
    let expected: Vec<String> = (0..2)
        .flat_map(lines_of)
        .map(|l| l.expected_json())
        .collect();
    assert_exactly_once(&objects, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_two_processes_four_flush_threads() {
    if std::env::var("NAGARE_S3_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    two_processes(format!("disk:{}", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_two_processes_four_flush_threads() {
    if std::env::var("NAGARE_S3_CHILD").is_ok() {
        return;
    }
    let Some(m) = moto::moto() else { return };
    two_processes(format!("moto:{}", m.endpoint)).await;
}

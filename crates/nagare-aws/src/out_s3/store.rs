//! The object store behind the key logic: [`S3Store`] (the real S3 API, also moto and MinIO)
//! and [`DiskStore`] (`s3_endpoint file:///var/lib/nagare/s3`: the same keys as files).
//!
//! Both give the one primitive the output needs: **create an object only if its key is
//! free** ([`ObjectStore::put_new`]). S3 does it with `If-None-Match: *` on `PutObject` and
//! `CompleteMultipartUpload` (412 when the key exists); the disk store writes a temporary file
//! and publishes it with `link(2)`, which fails with `EEXIST` instead of replacing a file.
//! Nothing ever overwrites an object, and there is no HEAD-then-PUT probing.
//!
//! Disk layout: `<root>/<bucket>/<key>`, keys split on `/` into directories; temporary files
//! live in `<root>/<bucket>/.nagare-tmp/` (same file system, so the link is atomic) and are
//! fsynced before they are published. Keys with `.`/`..` segments, empty segments or NUL
//! bytes are refused.

use super::errors::{self, ErrorClass, StoreError};
use super::upload::{self, ObjectOptions};
use crate::client::{sdk_config, AwsSettings};
use bytes::Bytes;
use std::path::PathBuf;

/// One object to create.
#[derive(Debug, Clone)]
pub struct PutRequest<'a> {
    pub key: &'a str,
    pub body: Bytes,
    /// The chunk id (hex), stored as `x-amz-meta-nagare-chunk-id` so a retry can recognise
    /// its own earlier upload.
    pub chunk_id: &'a str,
    pub content_type: &'a str,
    pub content_encoding: Option<&'a str>,
}

/// What `put_new` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The key was taken (412 / `EEXIST`); nothing was written.
    Exists,
}

/// Who wrote an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The chunk asking (an earlier attempt whose reply was lost).
    Us,
    Other,
    /// Cannot tell (no permission to read it, or it disappeared).
    Unknown,
}

/// The metadata key holding the writer's chunk id.
pub const CHUNK_ID_META: &str = "nagare-chunk-id";

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// `s3://bucket/key` or `file:///root/bucket/key`, for messages.
    fn describe(&self, key: &str) -> String;
    /// Creates `req.key` unless it exists.
    async fn put_new(&self, req: &PutRequest<'_>) -> Result<PutOutcome, StoreError>;
    /// Who wrote the existing object `key` (compared with `chunk_id`, or `body` on disk).
    async fn owner(&self, key: &str, chunk_id: &str, body: &Bytes) -> Result<Owner, StoreError>;
    /// Keys starting with `prefix` (bounded; used to skip past indexes in use after a 412).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Checks that the bucket exists; creates it when `create`.
    async fn ensure_bucket(&self, create: bool) -> Result<(), StoreError>;
    /// Reads an object (tests, tools).
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
}

// ---- S3 ----------------------------------------------------------------------------------

/// Multipart settings.
#[derive(Debug, Clone, Copy)]
pub struct Multipart {
    /// Bodies larger than this go up in parts.
    pub threshold: usize,
    /// Part size (S3: at least 5 MiB except the last).
    pub part_size: usize,
    /// Parts in flight at once.
    pub concurrency: usize,
}

/// The S3 API.
pub struct S3Store {
    pub(crate) client: aws_sdk_s3::Client,
    pub(crate) bucket: String,
    pub(crate) region: Option<String>,
    pub(crate) opts: ObjectOptions,
    pub(crate) multipart: Multipart,
}

/// Pages of 1,000 keys read at most when looking for the highest index.
const MAX_LIST_PAGES: usize = 20;

impl S3Store {
    /// Builds the client (credentials chain, region, endpoint; path-style when asked).
    pub async fn connect(
        settings: &AwsSettings,
        force_path_style: bool,
        bucket: &str,
        opts: ObjectOptions,
        multipart: Multipart,
    ) -> S3Store {
        let cfg = sdk_config(settings).await;
        let conf = aws_sdk_s3::config::Builder::from(&cfg)
            .force_path_style(force_path_style)
            .build();
        S3Store {
            client: aws_sdk_s3::Client::from_conf(conf),
            bucket: bucket.to_string(),
            region: cfg.region().map(|r| r.to_string()),
            opts,
            multipart,
        }
    }

    fn target(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    fn describe(&self, key: &str) -> String {
        self.target(key)
    }

    async fn put_new(&self, req: &PutRequest<'_>) -> Result<PutOutcome, StoreError> {
        if req.body.len() > self.multipart.threshold {
            upload::multipart(&self.client, &self.bucket, req, &self.opts, self.multipart).await
        } else {
            upload::put_object(&self.client, &self.bucket, req, &self.opts).await
        }
    }

    async fn owner(&self, key: &str, chunk_id: &str, _body: &Bytes) -> Result<Owner, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(h) => Ok(match h.metadata().and_then(|m| m.get(CHUNK_ID_META)) {
                Some(id) if id == chunk_id => Owner::Us,
                _ => Owner::Other,
            }),
            Err(e) => {
                let se = errors::from_sdk("HeadObject", self.target(key), &e);
                match (se.class, se.status) {
                    // Gone between the 412 and now (deleted): try the same key again later.
                    (_, Some(404)) => Err(StoreError {
                        class: ErrorClass::Transient,
                        message: "the object that refused the write has disappeared".into(),
                        ..se
                    }),
                    (ErrorClass::Transient, _) => Err(se),
                    _ => {
                        tracing::warn!(target = %se.target, error = %se, "cannot read the metadata of an existing object: its writer is unknown");
                        Ok(Owner::Unknown)
                    }
                }
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| errors::from_sdk("ListObjectsV2", self.target(prefix), &e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(keys)
    }

    async fn ensure_bucket(&self, create: bool) -> Result<(), StoreError> {
        let target = format!("s3://{}", self.bucket);
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let se = errors::from_sdk("HeadBucket", target.clone(), &e);
                if se.status != Some(404) {
                    return Err(se);
                }
            }
        }
        if !create {
            return Err(StoreError {
                class: ErrorClass::Access,
                op: "HeadBucket",
                target,
                code: "NoSuchBucket".into(),
                status: Some(404),
                message: format!("bucket '{}' does not exist", self.bucket),
            });
        }
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        if let Some(r) = self.region.as_deref().filter(|r| *r != "us-east-1") {
            req = req.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(r))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, "created the bucket (auto_create_bucket true)");
                Ok(())
            }
            Err(e) => {
                let se = errors::from_sdk("CreateBucket", target, &e);
                if se.code == "BucketAlreadyOwnedByYou" {
                    Ok(())
                } else {
                    Err(se)
                }
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => {
                let b = o.body.collect().await.map_err(|e| StoreError {
                    class: ErrorClass::Transient,
                    op: "GetObject",
                    target: self.target(key),
                    code: "ReadError".into(),
                    status: None,
                    message: e.to_string(),
                })?;
                Ok(Some(b.into_bytes()))
            }
            Err(e) => {
                let se = errors::from_sdk("GetObject", self.target(key), &e);
                if se.code == "NoSuchKey" || se.status == Some(404) {
                    Ok(None)
                } else {
                    Err(se)
                }
            }
        }
    }
}

// ---- disk --------------------------------------------------------------------------------

/// Objects as files under `<root>/<bucket>/`.
#[derive(Debug, Clone)]
pub struct DiskStore {
    root: PathBuf,
    bucket: String,
}

const TMP_DIR: &str = ".nagare-tmp";
/// Temporary files older than this are removed at startup (a crash left them).
const STALE_TMP_SECS: u64 = 3600;

impl DiskStore {
    pub fn new(root: impl Into<PathBuf>, bucket: &str) -> DiskStore {
        DiskStore {
            root: root.into(),
            bucket: bucket.to_string(),
        }
    }

    /// `file:///var/lib/nagare/s3` -> `/var/lib/nagare/s3`.
    pub fn path_from_url(url: &str) -> Option<PathBuf> {
        let p = url.strip_prefix("file://")?;
        (p.starts_with('/') && p.len() > 1).then(|| PathBuf::from(p))
    }

    fn bucket_dir(&self) -> PathBuf {
        self.root.join(&self.bucket)
    }

    fn target(&self, key: &str) -> String {
        format!("file://{}/{}", self.bucket_dir().display(), key)
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let bad = |why: &str| StoreError {
            class: ErrorClass::Data,
            op: "put",
            target: self.target(key),
            code: "InvalidKey".into(),
            status: None,
            message: format!("key cannot be stored on disk: {why}"),
        };
        if key.is_empty() || key.len() > super::key::MAX_KEY_BYTES {
            return Err(bad("empty or longer than 1024 bytes"));
        }
        if key.contains('\0') {
            return Err(bad("NUL byte"));
        }
        let mut p = self.bucket_dir();
        for (i, seg) in key.split('/').enumerate() {
            if seg.is_empty() || seg == "." || seg == ".." || (i == 0 && seg == TMP_DIR) {
                return Err(bad("empty, '.', '..' or reserved path segment"));
            }
            p.push(seg);
        }
        Ok(p)
    }

    fn put_blocking(
        &self,
        key: &str,
        body: &[u8],
        chunk_id: &str,
    ) -> Result<PutOutcome, StoreError> {
        use std::io::Write;
        let path = self.path_of(key)?;
        let io = |op: &'static str, e: std::io::Error| errors::from_io(op, self.target(key), &e);
        let bucket = self.bucket_dir();
        if !bucket.is_dir() {
            return Err(StoreError {
                class: ErrorClass::Access,
                op: "put",
                target: self.target(key),
                code: "NoSuchBucket".into(),
                status: None,
                message: format!("bucket directory {} does not exist", bucket.display()),
            });
        }
        let tmp_dir = bucket.join(TMP_DIR);
        std::fs::create_dir_all(&tmp_dir).map_err(|e| io("mkdir", e))?;
        let parent = path.parent().unwrap_or(&bucket).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| {
            let mut se = io("mkdir", e);
            if se.class == ErrorClass::Transient {
                // A file where a directory is needed (key "a/b" and key "a/b/c").
                se.class = ErrorClass::Data;
            }
            se
        })?;
        let tmp = tmp_dir.join(format!(
            "{chunk_id}-{}.tmp",
            nagare_core::ChunkId::random().hex()
        ));
        let res = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| io("write", e))?;
            f.write_all(body).map_err(|e| io("write", e))?;
            f.sync_all().map_err(|e| io("fsync", e))?;
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Ok(PutOutcome::Exists)
                }
                Err(e) => return Err(io("link", e)),
            }
            if let Ok(d) = std::fs::File::open(&parent) {
                let _ = d.sync_all();
            }
            Ok(PutOutcome::Created)
        })();
        let _ = std::fs::remove_file(&tmp);
        res
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let base = self.bucket_dir();
        let start = if dir_part.is_empty() {
            base.clone()
        } else {
            match self.path_of(dir_part) {
                Ok(p) => p,
                Err(_) => return Ok(Vec::new()),
            }
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(d) = stack.pop() {
            let rd = match std::fs::read_dir(&d) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(errors::from_io("list", self.target(prefix), &e)),
            };
            for ent in rd.flatten() {
                let p = ent.path();
                let Ok(rel) = p.strip_prefix(&base) else {
                    continue;
                };
                let key = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                if key.starts_with(TMP_DIR) {
                    continue;
                }
                if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    if prefix.starts_with(&key) || key.starts_with(prefix) {
                        stack.push(p);
                    }
                } else if key.starts_with(prefix) {
                    out.push(key);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes temporary files a crash left behind (older than an hour, so a second process
    /// sharing the directory keeps its own).
    pub fn clean_stale_temporaries(&self) {
        let Ok(rd) = std::fs::read_dir(self.bucket_dir().join(TMP_DIR)) else {
            return;
        };
        for ent in rd.flatten() {
            let old = ent
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > STALE_TMP_SECS);
            if old {
                let _ = std::fs::remove_file(ent.path());
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError {
            class: ErrorClass::Transient,
            op: "disk",
            target: String::new(),
            code: "TaskFailed".into(),
            status: None,
            message: e.to_string(),
        })
    })
}

#[async_trait::async_trait]
impl ObjectStore for DiskStore {
    fn describe(&self, key: &str) -> String {
        self.target(key)
    }

    async fn put_new(&self, req: &PutRequest<'_>) -> Result<PutOutcome, StoreError> {
        let (s, key, body, id) = (
            self.clone(),
            req.key.to_string(),
            req.body.clone(),
            req.chunk_id.to_string(),
        );
        blocking(move || s.put_blocking(&key, &body, &id)).await
    }

    async fn owner(&self, key: &str, _chunk_id: &str, body: &Bytes) -> Result<Owner, StoreError> {
        let path = self.path_of(key)?;
        let body = body.clone();
        blocking(move || {
            // Encoding is deterministic: the same chunk always gives the same bytes.
            Ok(match std::fs::read(&path) {
                Ok(b) if b == body[..] => Owner::Us,
                Ok(_) => Owner::Other,
                Err(_) => Owner::Unknown,
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let (s, p) = (self.clone(), prefix.to_string());
        blocking(move || s.list_blocking(&p)).await
    }

    async fn ensure_bucket(&self, create: bool) -> Result<(), StoreError> {
        let dir = self.bucket_dir();
        if dir.is_dir() {
            self.clean_stale_temporaries();
            return Ok(());
        }
        if create {
            std::fs::create_dir_all(&dir)
                .map_err(|e| errors::from_io("mkdir", self.target(""), &e))?;
            tracing::info!(dir = %dir.display(), "created the bucket directory (auto_create_bucket true)");
            return Ok(());
        }
        Err(StoreError {
            class: ErrorClass::Access,
            op: "check_bucket",
            target: format!("file://{}", dir.display()),
            code: "NoSuchBucket".into(),
            status: None,
            message: format!("bucket '{}' does not exist", self.bucket),
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let path = self.path_of(key)?;
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(errors::from_io("get", self.target(key), &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(key: &'a str, body: &'static [u8]) -> PutRequest<'a> {
        PutRequest {
            key,
            body: Bytes::from_static(body),
            chunk_id: "c1",
            content_type: "text/plain",
            content_encoding: None,
        }
    }

    #[tokio::test]
    async fn disk_store_never_overwrites_and_lists_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskStore::new(dir.path(), "b");
        let e = s.put_new(&req("a/x_0.gz", b"1")).await.unwrap_err();
        assert_eq!(e.code, "NoSuchBucket");
        assert!(e.to_string().contains("/b/a/x_0.gz"), "{e}");
        s.ensure_bucket(true).await.unwrap();
        assert_eq!(
            s.put_new(&req("a/x_0.gz", b"1")).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            s.put_new(&req("a/x_0.gz", b"2")).await.unwrap(),
            PutOutcome::Exists
        );
        assert_eq!(s.get("a/x_0.gz").await.unwrap().unwrap(), &b"1"[..]);
        assert_eq!(
            s.put_new(&req("a/x_1.gz", b"3")).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            s.put_new(&req("a/y/z", b"4")).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(s.list("a/x_").await.unwrap(), vec!["a/x_0.gz", "a/x_1.gz"]);
        assert_eq!(s.list("").await.unwrap().len(), 3);
        assert_eq!(
            s.owner("a/x_0.gz", "c1", &Bytes::from_static(b"1"))
                .await
                .unwrap(),
            Owner::Us
        );
        assert_eq!(
            s.owner("a/x_0.gz", "c1", &Bytes::from_static(b"9"))
                .await
                .unwrap(),
            Owner::Other
        );
        // No temporaries left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("b/.nagare-tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn disk_keys_cannot_escape_the_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskStore::new(dir.path(), "b");
        s.ensure_bucket(true).await.unwrap();
        for k in ["../x", "a/../../x", "/abs", "a//b", ".nagare-tmp/x", ""] {
            let e = s.put_new(&req(k, b"1")).await.unwrap_err();
            assert_eq!(e.class, ErrorClass::Data, "{k}");
        }
        assert!(DiskStore::path_from_url("file:///var/lib/nagare/s3").is_some());
        assert!(DiskStore::path_from_url("file://relative").is_none());
    }
}

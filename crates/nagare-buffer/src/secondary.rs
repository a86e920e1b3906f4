//! `<secondary> @type secondary_file`: writes a chunk's entries, as they are (msgpack
//! `[time, record]*`, what Fluentd's `secondary_file` writes), to one file per chunk.
//!
//! * `directory` (required), `basename` (default `dump.bin`; `${chunk_id}` and `${tag}` are
//!   replaced; without `${chunk_id}` the name gets `.<chunk_id>` appended, so two chunks never
//!   share a file), `compress` `text` (default) or `gzip` (adds `.gz`).
//! * Durable before `Ok`: written to a temporary name, `fsync`ed, renamed, directory synced.
//!   Writing the same chunk again replaces its own file (idempotent per chunk id).
//! * Read a dump back with `nagare_buffer::entries::decode`, or any msgpack reader.

use crate::config::Compress;
use nagare_core::{Chunk, Output, WriteError};
use std::io::Write;
use std::path::PathBuf;

/// `secondary_file` settings.
#[derive(Debug, Clone)]
pub struct SecondaryFileConfig {
    pub directory: PathBuf,
    pub basename: String,
    pub compress: Compress,
}

impl SecondaryFileConfig {
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        SecondaryFileConfig {
            directory: directory.into(),
            basename: "dump.bin".into(),
            compress: Compress::Text,
        }
    }
}

/// The `secondary_file` output.
#[derive(Debug, Clone)]
pub struct SecondaryFile {
    cfg: SecondaryFileConfig,
}

fn sanitize(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        "_".into()
    } else {
        s
    }
}

impl SecondaryFile {
    pub fn new(cfg: SecondaryFileConfig) -> Self {
        SecondaryFile { cfg }
    }

    /// The file a chunk is written to.
    pub fn path_for(&self, chunk: &Chunk) -> PathBuf {
        let id = chunk.id.hex();
        let mut name = self
            .cfg
            .basename
            .replace("${tag}", &sanitize(&chunk.tag.to_str_lossy()));
        if name.contains("${chunk_id}") {
            name = name.replace("${chunk_id}", &id);
        } else {
            name = format!("{name}.{id}");
        }
        let mut name = sanitize(&name);
        if self.cfg.compress == Compress::Gzip {
            name.push_str(".gz");
        }
        self.cfg.directory.join(name)
    }

    fn write_sync(&self, chunk: &Chunk) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.cfg.directory)?;
        let path = self.path_for(chunk);
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let mut f = std::fs::File::create(&tmp)?;
        match self.cfg.compress {
            Compress::Text => f.write_all(&chunk.bytes)?,
            Compress::Gzip => {
                let mut z = Vec::with_capacity(chunk.bytes.len() / 4);
                crate::compress::gzip_into(&mut z, &chunk.bytes);
                f.write_all(&z)?;
            }
        }
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.cfg.directory)?.sync_all()?;
        Ok(path)
    }
}

#[async_trait::async_trait]
impl Output for SecondaryFile {
    async fn write(&self, chunk: &Chunk) -> Result<(), WriteError> {
        let this = self.clone();
        let c = chunk.clone();
        match tokio::task::spawn_blocking(move || this.write_sync(&c)).await {
            Ok(Ok(path)) => {
                tracing::info!(chunk = %chunk.id.hex(), records = chunk.records, path = %path.display(), "secondary_file: chunk written");
                Ok(())
            }
            Ok(Err(e)) => Err(WriteError::Retryable(format!(
                "secondary_file {}: {e}",
                self.cfg.directory.display()
            ))),
            Err(e) => Err(WriteError::Retryable(e.to_string())),
        }
    }
}

//! `@type s3` settings, with fluent-plugin-s3's parameter names. The pipeline's
//! `plugins/out_s3.rs` fills [`S3Config`] from a `<match>` section; [`S3Config::compile`]
//! validates everything once (key template, formats, enums) so the running output cannot hold
//! an invalid state.

use super::format::{Formatter, Inject, LineFormat, StoreAs};
use super::key::{default_time_slice_format, KeyParams, KeyTemplate, Zone};
use super::store::Multipart;
use super::upload::ObjectOptions;
use crate::client::{AssumeRole, AwsSettings, Secret};
use aws_sdk_s3::types::{ObjectCannedAcl, ServerSideEncryption, StorageClass};
use std::path::PathBuf;
use std::time::Duration;

/// `s3_object_key_format` default (fluent-plugin-s3's).
pub const DEFAULT_OBJECT_KEY_FORMAT: &str = "%{path}%{time_slice}_%{index}.%{file_extension}";
/// `index_format` default.
pub const DEFAULT_INDEX_FORMAT: &str = "%d";
/// `hex_random_length` default (fluent-plugin-s3's).
pub const DEFAULT_HEX_RANDOM_LENGTH: usize = 4;
/// The on-disk store's conventional location (`s3_endpoint file:///var/lib/nagare/s3`).
pub const EMBEDDED_ENDPOINT: &str = "file:///var/lib/nagare/s3";
/// Bodies above this size are uploaded in parts (AWS suggests multipart from about 100 MB).
pub const DEFAULT_MULTIPART_THRESHOLD: usize = 64 << 20;
/// Part size (S3's minimum is 5 MiB).
pub const DEFAULT_MULTIPART_CHUNK_SIZE: usize = 16 << 20;
/// Parts uploaded at once.
pub const DEFAULT_MULTIPART_CONCURRENCY: usize = 4;
/// Attempts the SDK makes itself (with its own jittered backoff) before an error reaches the
/// buffer's retry schedule.
pub const DEFAULT_SDK_MAX_ATTEMPTS: u32 = 3;
/// Per-attempt timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// S3's smallest part.
pub const MIN_PART_SIZE: usize = 5 << 20;

/// Where objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// AWS S3 (the region's endpoint).
    Aws,
    /// An S3-compatible endpoint (`http://127.0.0.1:5000` for moto, MinIO).
    Url(String),
    /// The on-disk store (`file:///var/lib/nagare/s3`).
    Disk(PathBuf),
}

impl Endpoint {
    /// `s3_endpoint` as written.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if s.starts_with("file:") {
            return super::store::DiskStore::path_from_url(s)
                .map(Endpoint::Disk)
                .ok_or_else(|| {
                    format!("s3_endpoint '{s}' must be an absolute file URL such as {EMBEDDED_ENDPOINT}")
                });
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(Endpoint::Url(s.trim_end_matches('/').to_string()));
        }
        Err(format!(
            "s3_endpoint '{s}' must start with https://, http:// or file:///"
        ))
    }
}

/// Everything `@type s3` takes.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `@id`: the metrics label.
    pub id: String,
    /// `s3_bucket` (required).
    pub bucket: String,
    /// `s3_endpoint`: AWS when absent; `http(s)://` for S3-compatible servers; `file:///dir`
    /// for the on-disk store.
    pub endpoint: Endpoint,
    /// `s3_region` (else `AWS_REGION`, the profile, IMDS).
    pub region: Option<String>,
    /// `force_path_style` (moto, MinIO).
    pub force_path_style: bool,
    /// `aws_key_id`.
    pub access_key_id: Option<String>,
    /// `aws_sec_key`.
    pub secret_access_key: Option<Secret>,
    /// `<assume_role_credentials>`.
    pub assume_role: Option<AssumeRole>,
    /// `path`: the key prefix (`%{path}`), itself a template.
    pub path: String,
    /// `s3_object_key_format`.
    pub object_key_format: String,
    /// `time_slice_format` (`%{time_slice}`); default from the buffer's `timekey`.
    pub time_slice_format: Option<String>,
    /// The buffer's `timekey` in seconds (`<buffer time>`), for the default time slice format.
    pub timekey: Option<u64>,
    /// `timekey_zone` / `utc`: the zone strftime placeholders render in (UTC by default;
    /// fixed offsets only).
    pub zone: Zone,
    /// `index_format` (`%{index}`).
    pub index_format: String,
    /// `hex_random_length` (`%{hex_random}`, 1..=32).
    pub hex_random_length: usize,
    /// `%{hostname}`.
    pub hostname: String,
    /// `store_as`: gzip (default), zstd, json, text.
    pub store_as: StoreAs,
    /// `compression_level` (gzip 0-9, default 6; zstd 1-22, default 3).
    pub compression_level: Option<i32>,
    /// `<format>` (`json` by default).
    pub line: LineFormat,
    /// `include_time_key`/`time_key`/`include_tag_key`/`tag_key` or `<inject>`.
    pub inject: Inject,
    /// `content_type` override (default from `store_as`).
    pub content_type: Option<String>,
    /// `content_encoding` override: `Some("")` sends none (default `gzip`/`zstd` for
    /// compressed objects).
    pub content_encoding: Option<String>,
    /// `storage_class` (`STANDARD`, `STANDARD_IA`, `GLACIER_IR`, ...).
    pub storage_class: Option<String>,
    /// `use_server_side_encryption` / `sse`: `AES256`, `aws:kms`, `aws:kms:dsse`.
    pub sse: Option<String>,
    /// `ssekms_key_id` (with `aws:kms`).
    pub ssekms_key_id: Option<String>,
    /// `acl` (canned: `private`, `bucket-owner-full-control`, ...).
    pub acl: Option<String>,
    /// `tagging`: `k1=v1&k2=v2`.
    pub tagging: Option<String>,
    /// `check_bucket`: at startup, fail unless the bucket exists (default false).
    pub check_bucket: bool,
    /// `auto_create_bucket`: create a missing bucket at startup (default false).
    pub auto_create_bucket: bool,
    /// `multipart_threshold`.
    pub multipart_threshold: usize,
    /// `multipart_chunk_size`.
    pub multipart_chunk_size: usize,
    /// `multipart_concurrency`.
    pub multipart_concurrency: usize,
    /// `sdk_max_attempts`.
    pub sdk_max_attempts: u32,
    /// `request_timeout`: per attempt.
    pub request_timeout: Duration,
    /// Whether access errors (bad credentials, missing bucket, denied) leave the chunk in the
    /// buffer (`true`: there is no `<secondary>` to hand it to) or go to the secondary.
    pub access_errors_retryable: bool,
}

impl S3Config {
    /// Defaults for `bucket` (fluent-plugin-s3's, except `check_bucket`/`auto_create_bucket`
    /// false, `<format> json`, UTC).
    pub fn new(id: &str, bucket: &str) -> S3Config {
        S3Config {
            id: id.to_string(),
            bucket: bucket.to_string(),
            endpoint: Endpoint::Aws,
            region: None,
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            assume_role: None,
            path: String::new(),
            object_key_format: DEFAULT_OBJECT_KEY_FORMAT.into(),
            time_slice_format: None,
            timekey: None,
            zone: Zone::UTC,
            index_format: DEFAULT_INDEX_FORMAT.into(),
            hex_random_length: DEFAULT_HEX_RANDOM_LENGTH,
            hostname: std::env::var("NAGARE_HOSTNAME")
                .ok()
                .or_else(|| {
                    hostname::get()
                        .ok()
                        .map(|h| h.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "localhost".into()),
            store_as: StoreAs::Gzip,
            compression_level: None,
            line: LineFormat::Json,
            inject: Inject::default(),
            content_type: None,
            content_encoding: None,
            storage_class: None,
            sse: None,
            ssekms_key_id: None,
            acl: None,
            tagging: None,
            check_bucket: false,
            auto_create_bucket: false,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            multipart_chunk_size: DEFAULT_MULTIPART_CHUNK_SIZE,
            multipart_concurrency: DEFAULT_MULTIPART_CONCURRENCY,
            sdk_max_attempts: DEFAULT_SDK_MAX_ATTEMPTS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            access_errors_retryable: true,
        }
    }

    /// The AWS settings for the client.
    pub fn aws_settings(&self) -> AwsSettings {
        AwsSettings {
            region: self.region.clone(),
            endpoint: match &self.endpoint {
                Endpoint::Url(u) => Some(u.clone()),
                _ => None,
            },
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            assume_role: self.assume_role.clone(),
            sdk_max_attempts: self.sdk_max_attempts,
            operation_timeout: Some(self.request_timeout),
        }
    }

    /// Validates and compiles. Errors name the parameter.
    pub fn compile(&self) -> Result<Compiled, String> {
        validate_bucket(&self.bucket, &self.endpoint)?;
        let level = self
            .compression_level
            .unwrap_or(self.store_as.default_level());
        match self.store_as {
            StoreAs::Gzip if !(0..=9).contains(&level) => {
                return Err(format!(
                    "compression_level {level} is out of range 0..=9 for gzip"
                ))
            }
            StoreAs::Zstd if !(-7..=22).contains(&level) => {
                return Err(format!(
                    "compression_level {level} is out of range -7..=22 for zstd"
                ))
            }
            _ => {}
        }
        let slice_fmt = self
            .time_slice_format
            .clone()
            .unwrap_or_else(|| default_time_slice_format(self.timekey).to_string());
        let key = KeyTemplate::compile(
            &self.object_key_format,
            &KeyParams {
                path: &self.path,
                file_extension: self.store_as.extension(),
                hostname: &self.hostname,
                time_slice_format: &slice_fmt,
                index_format: &self.index_format,
                hex_random_length: self.hex_random_length,
                zone: self.zone,
            },
        )?;
        let storage_class = match &self.storage_class {
            None => None,
            Some(s) => Some(parse_known::<StorageClass>(
                "storage_class",
                s,
                StorageClass::values(),
            )?),
        };
        let sse = match &self.sse {
            None => None,
            Some(s) => Some(parse_known::<ServerSideEncryption>(
                "use_server_side_encryption",
                s,
                ServerSideEncryption::values(),
            )?),
        };
        if self.ssekms_key_id.is_some()
            && !matches!(
                sse,
                Some(ServerSideEncryption::AwsKms) | Some(ServerSideEncryption::AwsKmsDsse)
            )
        {
            return Err("ssekms_key_id needs use_server_side_encryption aws:kms".into());
        }
        let acl = match &self.acl {
            None => None,
            Some(s) => Some(parse_known::<ObjectCannedAcl>(
                "acl",
                s,
                ObjectCannedAcl::values(),
            )?),
        };
        if let Some(t) = &self.tagging {
            if t.split('&')
                .any(|kv| kv.split('=').next().unwrap_or("").is_empty())
            {
                return Err(format!(
                    "tagging '{t}' must look like key1=value1&key2=value2"
                ));
            }
        }
        if self.multipart_chunk_size < MIN_PART_SIZE {
            return Err(format!(
                "multipart_chunk_size {} is below S3's minimum part size of 5 MiB",
                self.multipart_chunk_size
            ));
        }
        if self.multipart_concurrency == 0 || self.multipart_concurrency > 64 {
            return Err("multipart_concurrency must be 1..=64".into());
        }
        Ok(Compiled {
            key,
            formatter: Formatter {
                line: self.line.clone(),
                inject: self.inject.clone(),
                store_as: self.store_as,
                level,
            },
            content_type: self
                .content_type
                .clone()
                .unwrap_or_else(|| self.store_as.content_type().to_string()),
            content_encoding: match &self.content_encoding {
                Some(s) if s.is_empty() => None,
                Some(s) => Some(s.clone()),
                None => self.store_as.content_encoding().map(str::to_string),
            },
            options: ObjectOptions {
                storage_class,
                sse,
                ssekms_key_id: self.ssekms_key_id.clone(),
                acl,
                tagging: self.tagging.clone(),
            },
            multipart: Multipart {
                threshold: self.multipart_threshold,
                part_size: self.multipart_chunk_size,
                concurrency: self.multipart_concurrency,
            },
        })
    }
}

/// The validated, compiled form.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub key: KeyTemplate,
    pub formatter: Formatter,
    pub content_type: String,
    pub content_encoding: Option<String>,
    pub options: ObjectOptions,
    pub multipart: Multipart,
}

fn parse_known<T: for<'a> From<&'a str>>(
    name: &str,
    v: &str,
    known: &[&'static str],
) -> Result<T, String> {
    if known.contains(&v) {
        Ok(T::from(v))
    } else {
        Err(format!("{name} '{v}' is not one of: {}", known.join(", ")))
    }
}

/// S3 bucket naming rules (3-63 of `a-z0-9.-`, starting and ending with a letter or digit).
fn validate_bucket(b: &str, ep: &Endpoint) -> Result<(), String> {
    if b.is_empty() {
        return Err("s3_bucket is required".into());
    }
    let ok = (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..");
    if !ok {
        return Err(format!(
            "s3_bucket '{b}' is not a valid bucket name (3-63 characters of a-z, 0-9, '.', '-')"
        ));
    }
    if matches!(ep, Endpoint::Disk(_)) && b.starts_with('.') {
        return Err(format!("s3_bucket '{b}' cannot start with '.'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_compile_and_errors_name_the_parameter() {
        let c = S3Config::new("s3", "my-logs");
        let k = c.compile().unwrap();
        assert_eq!(k.content_type, "application/x-gzip");
        assert_eq!(k.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(k.formatter.level, 6);
        for (f, want) in [
            (
                Box::new(|c: &mut S3Config| c.bucket = "Bad_Name".into())
                    as Box<dyn Fn(&mut S3Config)>,
                "s3_bucket",
            ),
            (
                Box::new(|c| c.storage_class = Some("FAST".into())),
                "storage_class",
            ),
            (Box::new(|c| c.acl = Some("everyone".into())), "acl"),
            (
                Box::new(|c| c.ssekms_key_id = Some("k".into())),
                "ssekms_key_id",
            ),
            (
                Box::new(|c| c.compression_level = Some(12)),
                "compression_level",
            ),
            (
                Box::new(|c| c.multipart_chunk_size = 1 << 20),
                "multipart_chunk_size",
            ),
            (Box::new(|c| c.tagging = Some("=x".into())), "tagging"),
            (
                Box::new(|c| c.object_key_format = "%{path}x.gz".into()),
                "s3_object_key_format",
            ),
        ] {
            let mut c = S3Config::new("s3", "my-logs");
            f(&mut c);
            let e = c.compile().unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        let mut c = S3Config::new("s3", "my-logs");
        c.storage_class = Some("STANDARD_IA".into());
        c.sse = Some("aws:kms".into());
        c.ssekms_key_id = Some("arn:aws:kms:...".into());
        c.acl = Some("bucket-owner-full-control".into());
        c.content_encoding = Some(String::new());
        let k = c.compile().unwrap();
        assert_eq!(k.options.storage_class, Some(StorageClass::StandardIa));
        assert_eq!(k.content_encoding, None);
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("file:///var/lib/nagare/s3").unwrap(),
            Endpoint::Disk("/var/lib/nagare/s3".into())
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:5000/").unwrap(),
            Endpoint::Url("http://127.0.0.1:5000".into())
        );
        assert!(Endpoint::parse("s3.amazonaws.com").is_err());
        assert!(Endpoint::parse("file://relative/dir").is_err());
    }
}

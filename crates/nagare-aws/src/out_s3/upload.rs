//! Conditional uploads: `PutObject` with `If-None-Match: *`, or a multipart upload completed
//! with `If-None-Match: *` and aborted on any failure, and when the write is cancelled (the
//! drain deadline at shutdown) by [`AbortOnDrop`]: parts are not left behind to be billed. A
//! lifecycle rule `AbortIncompleteMultipartUpload` is still advised for crashes.

use super::errors::{self, StoreError};
use super::store::{Multipart, PutOutcome, PutRequest, CHUNK_ID_META};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectCannedAcl,
    ServerSideEncryption, StorageClass,
};

/// Per-object settings (`storage_class`, `sse`, `ssekms_key_id`, `acl`, `tagging`).
#[derive(Debug, Clone, Default)]
pub struct ObjectOptions {
    pub storage_class: Option<StorageClass>,
    pub sse: Option<ServerSideEncryption>,
    pub ssekms_key_id: Option<String>,
    pub acl: Option<ObjectCannedAcl>,
    /// URL-encoded `k1=v1&k2=v2`.
    pub tagging: Option<String>,
}

fn is_precondition_failed(e: &StoreError) -> bool {
    e.status == Some(412) || e.code == "PreconditionFailed"
}

/// One `PutObject` that only creates.
pub async fn put_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    req: &PutRequest<'_>,
    o: &ObjectOptions,
) -> Result<PutOutcome, StoreError> {
    let r = client
        .put_object()
        .bucket(bucket)
        .key(req.key)
        .if_none_match("*")
        .body(ByteStream::from(req.body.clone()))
        .content_length(req.body.len() as i64)
        .content_type(req.content_type)
        .set_content_encoding(req.content_encoding.map(str::to_string))
        .metadata(CHUNK_ID_META, req.chunk_id)
        .set_storage_class(o.storage_class.clone())
        .set_server_side_encryption(o.sse.clone())
        .set_ssekms_key_id(o.ssekms_key_id.clone())
        .set_acl(o.acl.clone())
        .set_tagging(o.tagging.clone())
        .send()
        .await;
    match r {
        Ok(_) => Ok(PutOutcome::Created),
        Err(e) => {
            let se = errors::from_sdk("PutObject", format!("s3://{bucket}/{}", req.key), &e);
            if is_precondition_failed(&se) {
                Ok(PutOutcome::Exists)
            } else {
                Err(se)
            }
        }
    }
}

/// A multipart upload that only creates; aborted on any failure.
pub async fn multipart(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    req: &PutRequest<'_>,
    o: &ObjectOptions,
    mp: Multipart,
) -> Result<PutOutcome, StoreError> {
    let target = format!("s3://{bucket}/{}", req.key);
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(req.key)
        .content_type(req.content_type)
        .set_content_encoding(req.content_encoding.map(str::to_string))
        .metadata(CHUNK_ID_META, req.chunk_id)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .set_storage_class(o.storage_class.clone())
        .set_server_side_encryption(o.sse.clone())
        .set_ssekms_key_id(o.ssekms_key_id.clone())
        .set_acl(o.acl.clone())
        .set_tagging(o.tagging.clone())
        .send()
        .await
        .map_err(|e| errors::from_sdk("CreateMultipartUpload", target.clone(), &e))?;
    let upload_id = created.upload_id().unwrap_or_default().to_string();
    let mut guard = AbortOnDrop::new(client, bucket, req.key, &upload_id);
    let res = upload_parts_and_complete(client, bucket, req, &upload_id, mp, &target).await;
    guard.disarm();
    if !matches!(res, Ok(PutOutcome::Created)) {
        abort_upload(client, bucket, req.key, &upload_id, "failed").await;
    }
    res
}

/// Aborts a multipart upload (`NoSuchUpload`: already gone, fine); a failure is logged, as
/// the parts then stay billed until a lifecycle rule removes them.
async fn abort_upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    what: &str,
) {
    let r = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    if let Err(e) = r {
        let se = errors::from_sdk("AbortMultipartUpload", format!("s3://{bucket}/{key}"), &e);
        if se.code != "NoSuchUpload" {
            tracing::warn!(upload_id = %upload_id, error = %se, "could not abort a {what} multipart upload: its parts stay billed until a lifecycle rule removes them");
        }
    }
}

/// Aborts a multipart upload when dropped armed: the write future was cancelled between
/// `CreateMultipartUpload` and the end of the upload (the drain deadline at shutdown cancels
/// in-flight writes), so no failure path ran. The abort is spawned on the current runtime,
/// best effort: a runtime that is itself shutting down may not run it.
pub struct AbortOnDrop {
    armed: Option<(aws_sdk_s3::Client, String, String, String)>,
}

impl AbortOnDrop {
    pub fn new(client: &aws_sdk_s3::Client, bucket: &str, key: &str, upload_id: &str) -> Self {
        AbortOnDrop {
            armed: Some((client.clone(), bucket.into(), key.into(), upload_id.into())),
        }
    }

    /// The upload ended (completed, or its failure path aborts it): nothing to do on drop.
    pub fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some((client, bucket, key, upload_id)) = self.armed.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(bucket = %bucket, key = %key, upload_id = %upload_id, "multipart upload cancelled outside a runtime: not aborted, its parts stay billed until a lifecycle rule removes them");
            return;
        };
        tracing::info!(bucket = %bucket, key = %key, upload_id = %upload_id, "multipart upload cancelled: aborting it");
        rt.spawn(async move {
            abort_upload(&client, &bucket, &key, &upload_id, "cancelled").await;
        });
    }
}

async fn upload_parts_and_complete(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    req: &PutRequest<'_>,
    upload_id: &str,
    mp: Multipart,
    target: &str,
) -> Result<PutOutcome, StoreError> {
    let size = mp.part_size.max(5 << 20);
    let n_parts = req.body.len().div_ceil(size).max(1);
    let mut parts: Vec<Option<CompletedPart>> = vec![None; n_parts];
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0usize;
    let mut failure: Option<StoreError> = None;
    loop {
        while failure.is_none() && next < n_parts && set.len() < mp.concurrency.max(1) {
            let i = next;
            next += 1;
            let body = req
                .body
                .slice(i * size..((i + 1) * size).min(req.body.len()));
            let fut = client
                .upload_part()
                .bucket(bucket)
                .key(req.key)
                .upload_id(upload_id)
                .part_number(i as i32 + 1)
                .content_length(body.len() as i64)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(body))
                .send();
            set.spawn(async move { (i, fut.await) });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        match joined {
            Ok((i, Ok(out))) => {
                parts[i] = Some(
                    CompletedPart::builder()
                        .part_number(i as i32 + 1)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                        .build(),
                );
            }
            Ok((i, Err(e))) => {
                let se = errors::from_sdk("UploadPart", format!("{target} part {}", i + 1), &e);
                failure.get_or_insert(se);
            }
            Err(e) => {
                failure.get_or_insert(StoreError {
                    class: errors::ErrorClass::Transient,
                    op: "UploadPart",
                    target: target.to_string(),
                    code: "TaskFailed".into(),
                    status: None,
                    message: e.to_string(),
                });
            }
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let parts: Vec<CompletedPart> = parts.into_iter().flatten().collect();
    let r = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(req.key)
        .upload_id(upload_id)
        .if_none_match("*")
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    match r {
        Ok(_) => Ok(PutOutcome::Created),
        Err(e) => {
            let se = errors::from_sdk("CompleteMultipartUpload", target.to_string(), &e);
            if is_precondition_failed(&se) {
                Ok(PutOutcome::Exists)
            } else {
                Err(se)
            }
        }
    }
}

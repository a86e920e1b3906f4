//! Error classification: what the flush loop should do about a failed store operation.
//!
//! | class | examples | `write` returns |
//! | --- | --- | --- |
//! | [`ErrorClass::Transient`] | `SlowDown` (503), any 5xx, `RequestTimeout`, throttling, timeouts, connection resets, refused connections, unparseable responses, credentials not loadable yet | `Retryable`: the chunk stays in the buffer, retried with backoff |
//! | [`ErrorClass::Access`] | `AccessDenied`, `NoSuchBucket`, `InvalidAccessKeyId`, `SignatureDoesNotMatch`, `AllAccessDisabled`, KMS key errors | `Unrecoverable` when a `<secondary>` is configured, otherwise `Retryable` (the data stays in the buffer until an operator fixes the bucket or the credentials) — logged as an error naming the bucket either way |
//! | [`ErrorClass::Data`] | `EntityTooLarge`, `KeyTooLongError`, `InvalidArgument`, `InvalidStorageClass`, other 4xx | `Unrecoverable`: retrying the same request cannot succeed |
//!
//! 412 `PreconditionFailed` is not an error here: the store reports it as
//! [`crate::out_s3::store::PutOutcome::Exists`] and the key logic picks the next index.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::fmt;

/// What retrying can achieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retrying later may succeed.
    Transient,
    /// The destination refuses us (credentials, permissions, bucket): an operator must act;
    /// retrying the same data after that succeeds.
    Access,
    /// This request can never succeed (the object itself is refused).
    Data,
}

impl ErrorClass {
    /// A stable metric label.
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Access => "access",
            ErrorClass::Data => "data",
        }
    }
}

/// A failed store operation, with enough context to act on it.
#[derive(Debug, Clone)]
pub struct StoreError {
    pub class: ErrorClass,
    /// The operation (`PutObject`, `CompleteMultipartUpload`, `write`, ...).
    pub op: &'static str,
    /// Where: `s3://bucket/key` or `file:///root/bucket/key`.
    pub target: String,
    /// The service's error code (`SlowDown`, `NoSuchBucket`) or an I/O error kind.
    pub code: String,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    pub message: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} failed: {}", self.op, self.target, self.code)?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        match (self.class, self.code.as_str()) {
            (ErrorClass::Access, "NoSuchBucket") => {
                f.write_str(" — the bucket does not exist: create it, fix s3_bucket, or set auto_create_bucket true")
            }
            (ErrorClass::Access, _) => {
                f.write_str(" — check the credentials and the IAM policy for this bucket (s3:PutObject, s3:GetObject, s3:ListBucket)")
            }
            _ => Ok(()),
        }
    }
}

impl std::error::Error for StoreError {}

/// Error codes an operator has to fix (the data itself is fine).
const ACCESS_CODES: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "NoSuchBucket",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidSecurity",
    "InvalidToken",
    "AccountProblem",
    "NotSignedUp",
    "InvalidBucketName",
    "InvalidBucketState",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "InvalidObjectState",
    "KMS.DisabledException",
    "KMS.NotFoundException",
    "KMS.KMSInvalidStateException",
    "KMS.AccessDeniedException",
    "UnrecognizedClientException",
];

/// Codes that are transient even though their status is 4xx.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "TokenRefreshRequired",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "RequestLimitExceeded",
    "OperationAborted",
    "ConditionalRequestConflict",
    "InternalError",
    "ServiceUnavailable",
    "KMS.ThrottlingException",
    // A body damaged or cut short in transit (400): the next attempt sends it whole.
    "IncompleteBody",
    "BadDigest",
    "XAmzContentSHA256Mismatch",
    // A multipart upload aborted or expired under us: the next attempt starts a new one.
    "NoSuchUpload",
];

/// Classifies an error code and HTTP status.
pub fn classify(code: Option<&str>, status: Option<u16>) -> ErrorClass {
    if let Some(c) = code {
        if TRANSIENT_CODES.contains(&c) {
            return ErrorClass::Transient;
        }
        if ACCESS_CODES.contains(&c) {
            return ErrorClass::Access;
        }
    }
    match status {
        Some(403) | Some(401) => ErrorClass::Access,
        Some(408) | Some(409) | Some(429) => ErrorClass::Transient,
        Some(s) if s >= 500 => ErrorClass::Transient,
        Some(s) if (400..500).contains(&s) => ErrorClass::Data,
        _ => ErrorClass::Transient,
    }
}

/// Converts an SDK error into a [`StoreError`].
pub fn from_sdk<E, R>(op: &'static str, target: String, err: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: HttpStatus + std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(se) => {
            let status = Some(se.raw().status_u16());
            let e = se.err();
            let code = e
                .code()
                .map(str::to_string)
                .unwrap_or_else(|| match status {
                    Some(404) => "NotFound".into(),
                    Some(403) => "AccessDenied".into(),
                    Some(s) => format!("HTTP{s}"),
                    None => "Unknown".into(),
                });
            StoreError {
                class: classify(Some(&code), status),
                op,
                target,
                status,
                message: e.message().unwrap_or_default().to_string(),
                code,
            }
        }
        SdkError::TimeoutError(_) => StoreError {
            class: ErrorClass::Transient,
            op,
            target,
            code: "Timeout".into(),
            status: None,
            message: "no response within the attempt timeout (the request may have been applied)"
                .into(),
        },
        SdkError::DispatchFailure(d) => StoreError {
            class: ErrorClass::Transient,
            op,
            target,
            code: if d.is_timeout() {
                "Timeout".into()
            } else if d.is_io() {
                "ConnectionError".into()
            } else {
                "DispatchFailure".into()
            },
            status: None,
            message: source_chain(err),
        },
        SdkError::ResponseError(r) => StoreError {
            class: ErrorClass::Transient,
            op,
            target,
            code: "ResponseError".into(),
            status: Some(r.raw().status_u16()),
            message: source_chain(err),
        },
        SdkError::ConstructionFailure(_) => StoreError {
            // Bad parameters (a key the SDK refuses, an invalid header value) or credentials
            // that could not be loaded: retrying later helps with the latter, and the former
            // shows up loudly in the retry log.
            class: ErrorClass::Transient,
            op,
            target,
            code: "ConstructionFailure".into(),
            status: None,
            message: source_chain(err),
        },
        _ => StoreError {
            class: ErrorClass::Transient,
            op,
            target,
            code: "Unknown".into(),
            status: None,
            message: source_chain(err),
        },
    }
}

/// Converts an I/O error from the on-disk store.
pub fn from_io(op: &'static str, target: String, e: &std::io::Error) -> StoreError {
    use std::io::ErrorKind as K;
    let (class, code) = match e.kind() {
        K::PermissionDenied => (ErrorClass::Access, "AccessDenied"),
        K::NotFound => (ErrorClass::Access, "NoSuchBucket"),
        K::InvalidInput | K::InvalidData => (ErrorClass::Data, "InvalidKey"),
        // ENOSPC, EIO, ...: an operator may free space; keep the data and retry.
        _ => (ErrorClass::Transient, "IoError"),
    };
    StoreError {
        class,
        op,
        target,
        code: code.into(),
        status: None,
        message: e.to_string(),
    }
}

/// The HTTP status of a raw response (lets [`from_sdk`] stay generic over the SDK's response
/// type).
pub trait HttpStatus {
    fn status_u16(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_u16(&self) -> u16 {
        self.status().as_u16()
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_damaged_in_transit_are_retried() {
        for c in ["IncompleteBody", "BadDigest", "XAmzContentSHA256Mismatch"] {
            assert_eq!(classify(Some(c), Some(400)), ErrorClass::Transient, "{c}");
        }
        assert_eq!(
            classify(Some("NoSuchUpload"), Some(404)),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(Some("InvalidArgument"), Some(400)),
            ErrorClass::Data
        );
    }

    #[test]
    fn the_issue_classes() {
        assert_eq!(classify(Some("SlowDown"), Some(503)), ErrorClass::Transient);
        assert_eq!(
            classify(Some("InternalError"), Some(500)),
            ErrorClass::Transient
        );
        assert_eq!(classify(None, Some(502)), ErrorClass::Transient);
        assert_eq!(classify(None, None), ErrorClass::Transient);
        assert_eq!(
            classify(Some("RequestTimeout"), Some(400)),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(Some("AccessDenied"), Some(403)),
            ErrorClass::Access
        );
        assert_eq!(
            classify(Some("NoSuchBucket"), Some(404)),
            ErrorClass::Access
        );
        assert_eq!(
            classify(Some("InvalidAccessKeyId"), Some(403)),
            ErrorClass::Access
        );
        assert_eq!(
            classify(Some("EntityTooLarge"), Some(400)),
            ErrorClass::Data
        );
        assert_eq!(classify(None, Some(403)), ErrorClass::Access);
    }

    #[test]
    fn messages_name_the_target_and_say_what_to_do() {
        let e = StoreError {
            class: ErrorClass::Access,
            op: "PutObject",
            target: "s3://logs-bucket/a/b.gz".into(),
            code: "NoSuchBucket".into(),
            status: Some(404),
            message: "The specified bucket does not exist".into(),
        };
        let s = e.to_string();
        assert!(s.contains("s3://logs-bucket/a/b.gz"), "{s}");
        assert!(s.contains("NoSuchBucket (HTTP 404)"), "{s}");
        assert!(s.contains("auto_create_bucket"), "{s}");
    }
}

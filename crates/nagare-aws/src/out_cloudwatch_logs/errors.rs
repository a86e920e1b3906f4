//! What went wrong talking to CloudWatch Logs, and what the caller can do about it.
//!
//! Every SDK error becomes an [`ApiError`] with an [`ErrorKind`]; the kind alone decides
//! whether a request is retried, recreates a resource, counts as delivered, or is given up:
//!
//! | kind | source | handling |
//! | --- | --- | --- |
//! | `Throttled` | `ThrottlingException` (unmodelled on PutLogEvents), `LimitExceededException`, 429 | retried with backoff |
//! | `Unavailable` / `ServerError` | `ServiceUnavailableException`, any 5xx | retried |
//! | `Network` / `Timeout` | connection errors, attempt timeouts, unreadable responses | retried |
//! | `ResourceNotFound` | group or stream missing (deleted out of band) | recreated and retried (`auto_create_stream`), else retried |
//! | `ResourceAlreadyExists` | create raced another writer | success |
//! | `InvalidSequenceToken` | legacy endpoints | retried at once with the expected token |
//! | `DataAlreadyAccepted` | legacy endpoints | the batch counts as delivered |
//! | `OperationAborted` | concurrent create on the same group | retried |
//! | `Auth` | bad keys, access denied | unrecoverable |
//! | `InvalidRequest` | `InvalidParameterException`, validation | unrecoverable for that batch |
//! | `Other` | anything unknown | retried (losing data on an unknown code is worse) |

use aws_sdk_cloudwatchlogs::config::http::HttpResponse;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};

/// The class of a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Throttled,
    Unavailable,
    ServerError,
    Network,
    Timeout,
    ResourceNotFound,
    ResourceAlreadyExists,
    InvalidSequenceToken,
    DataAlreadyAccepted,
    OperationAborted,
    Auth,
    InvalidRequest,
    Other,
}

impl ErrorKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Network => "network",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ResourceNotFound => "resource_not_found",
            ErrorKind::ResourceAlreadyExists => "resource_already_exists",
            ErrorKind::InvalidSequenceToken => "invalid_sequence_token",
            ErrorKind::DataAlreadyAccepted => "data_already_accepted",
            ErrorKind::OperationAborted => "operation_aborted",
            ErrorKind::Auth => "auth",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Other => "other",
        }
    }

    /// Whether waiting and sending the same request again can succeed.
    pub fn is_retryable(self) -> bool {
        !matches!(self, ErrorKind::Auth | ErrorKind::InvalidRequest)
    }

    /// Errors that mean "slow down": they feed the backoff, not the error log.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled
                | ErrorKind::Unavailable
                | ErrorKind::ServerError
                | ErrorKind::Network
                | ErrorKind::Timeout
                | ErrorKind::OperationAborted
        )
    }
}

/// A failed call to CloudWatch Logs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} failed ({}{}): {message}", kind.label(), code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
pub struct ApiError {
    /// The operation (`PutLogEvents`, `CreateLogStream`, ...).
    pub op: &'static str,
    pub kind: ErrorKind,
    /// The AWS error code, when the service answered.
    pub code: Option<String>,
    pub message: String,
    /// HTTP status, when the service answered.
    pub status: Option<u16>,
    /// From `InvalidSequenceTokenException` / `DataAlreadyAcceptedException` (legacy).
    pub expected_sequence_token: Option<String>,
}

impl ApiError {
    pub fn new(op: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            op,
            kind,
            code: None,
            message: message.into(),
            status: None,
            expected_sequence_token: None,
        }
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_string());
        self
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.expected_sequence_token = token;
        self
    }
}

/// The kind for an AWS error code and HTTP status.
pub fn kind_for(code: Option<&str>, status: Option<u16>) -> ErrorKind {
    match code {
        Some("ThrottlingException" | "Throttling" | "TooManyRequestsException")
        | Some("LimitExceededException" | "RequestLimitExceeded") => ErrorKind::Throttled,
        Some("ServiceUnavailableException" | "ServiceUnavailable") => ErrorKind::Unavailable,
        Some("InternalFailure" | "InternalServerError" | "InternalError") => ErrorKind::ServerError,
        Some("ResourceNotFoundException") => ErrorKind::ResourceNotFound,
        Some("ResourceAlreadyExistsException") => ErrorKind::ResourceAlreadyExists,
        Some("InvalidSequenceTokenException") => ErrorKind::InvalidSequenceToken,
        Some("DataAlreadyAcceptedException") => ErrorKind::DataAlreadyAccepted,
        Some("OperationAbortedException") => ErrorKind::OperationAborted,
        Some(
            "UnrecognizedClientException"
            | "AccessDeniedException"
            | "AccessDenied"
            | "InvalidSignatureException"
            | "InvalidClientTokenId"
            | "MissingAuthenticationToken"
            | "IncompleteSignature"
            | "SignatureDoesNotMatch",
        ) => ErrorKind::Auth,
        Some("InvalidParameterException" | "ValidationException" | "SerializationException") => {
            ErrorKind::InvalidRequest
        }
        _ => match status {
            Some(429) => ErrorKind::Throttled,
            Some(503) => ErrorKind::Unavailable,
            Some(s) if s >= 500 => ErrorKind::ServerError,
            Some(401 | 403) => ErrorKind::Auth,
            _ => ErrorKind::Other,
        },
    }
}

/// Turns an SDK error into an [`ApiError`].
pub fn from_sdk<E>(op: &'static str, err: &SdkError<E, HttpResponse>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = |e: &dyn std::error::Error| {
        let mut s = e.to_string();
        let mut src = e.source();
        while let Some(x) = src {
            s.push_str(": ");
            s.push_str(&x.to_string());
            src = x.source();
        }
        s
    };
    match err {
        SdkError::ConstructionFailure(_) => {
            ApiError::new(op, ErrorKind::InvalidRequest, detail(err))
        }
        SdkError::TimeoutError(_) => ApiError::new(op, ErrorKind::Timeout, detail(err)),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Network
            };
            ApiError::new(op, kind, detail(err))
        }
        SdkError::ResponseError(r) => {
            let status = Some(r.raw().status().as_u16());
            let mut e = ApiError::new(
                op,
                match status {
                    Some(s) if s >= 500 => ErrorKind::ServerError,
                    _ => ErrorKind::Network,
                },
                detail(err),
            );
            e.status = status;
            e
        }
        SdkError::ServiceError(ctx) => {
            let status = Some(ctx.raw().status().as_u16());
            let code = ctx.err().code();
            let mut e = ApiError::new(
                op,
                kind_for(code, status),
                ctx.err()
                    .message()
                    .map(str::to_string)
                    .unwrap_or_else(|| detail(ctx.err())),
            );
            e.code = code.map(str::to_string);
            e.status = status;
            e
        }
        _ => ApiError::new(op, ErrorKind::Other, detail(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        assert_eq!(
            kind_for(Some("ThrottlingException"), Some(400)),
            ErrorKind::Throttled
        );
        assert_eq!(
            kind_for(Some("ServiceUnavailableException"), Some(500)),
            ErrorKind::Unavailable
        );
        assert_eq!(kind_for(None, Some(502)), ErrorKind::ServerError);
        assert_eq!(kind_for(Some("Weird"), Some(504)), ErrorKind::ServerError);
        assert_eq!(kind_for(None, Some(429)), ErrorKind::Throttled);
        assert_eq!(
            kind_for(Some("UnrecognizedClientException"), Some(400)),
            ErrorKind::Auth
        );
        assert_eq!(
            kind_for(Some("InvalidParameterException"), Some(400)),
            ErrorKind::InvalidRequest
        );
        assert_eq!(kind_for(Some("Unknown"), Some(400)), ErrorKind::Other);
        assert!(ErrorKind::Other.is_retryable());
        assert!(!ErrorKind::Auth.is_retryable());
        assert!(ErrorKind::Throttled.is_transient());
    }
}

//! Shared AWS client setup.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use std::fmt;
use std::time::Duration;

/// A secret that never prints.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `<assume_role_credentials>`.
#[derive(Debug, Clone, Default)]
pub struct AssumeRole {
    /// `role_arn`.
    pub role_arn: String,
    /// `role_session_name` (default `nagare`).
    pub role_session_name: String,
    /// `external_id`.
    pub external_id: Option<String>,
}

/// Connection settings every AWS output takes.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Region (`s3_region` / `region`); else `AWS_REGION` / the profile / IMDS.
    pub region: Option<String>,
    /// Endpoint override (`s3_endpoint` / `endpoint`), e.g. moto on 127.0.0.1 in tests.
    pub endpoint: Option<String>,
    /// `aws_key_id`.
    pub access_key_id: Option<String>,
    /// `aws_sec_key`.
    pub secret_access_key: Option<Secret>,
    /// `<assume_role_credentials>`.
    pub assume_role: Option<AssumeRole>,
    /// Attempts the SDK makes itself before an error reaches our retry logic (1 = none: our
    /// buffer's retry schedule decides).
    pub sdk_max_attempts: u32,
    /// Per-attempt timeout.
    pub operation_timeout: Option<Duration>,
}

/// Builds the SDK configuration for `settings`.
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(settings.sdk_max_attempts.max(1)));
    if let Some(r) = &settings.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(e) = &settings.endpoint {
        loader = loader.endpoint_url(e.clone());
    }
    if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(
            id.clone(),
            secret.0.clone(),
            None,
            None,
            "nagare-static",
        ));
    }
    if let Some(t) = settings.operation_timeout {
        loader = loader.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(t)
                .connect_timeout(Duration::from_secs(10))
                .build(),
        );
    }
    let base = loader.load().await;
    match &settings.assume_role {
        None => base,
        Some(ar) => {
            let mut b = aws_config::sts::AssumeRoleProvider::builder(ar.role_arn.clone())
                .session_name(if ar.role_session_name.is_empty() {
                    "nagare".to_string()
                } else {
                    ar.role_session_name.clone()
                })
                .configure(&base);
            if let Some(x) = &ar.external_id {
                b = b.external_id(x.clone());
            }
            let provider = b.build().await;
            base.into_builder()
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                )
                .build()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = AwsSettings {
            secret_access_key: Some(Secret("hunter2".into())),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn static_keys_region_and_endpoint_are_applied() {
        let cfg = sdk_config(&AwsSettings {
            region: Some("eu-west-1".into()),
            endpoint: Some("http://127.0.0.1:1".into()),
            access_key_id: Some("AKID".into()),
            secret_access_key: Some(Secret("s".into())),
            sdk_max_attempts: 1,
            ..Default::default()
        })
        .await;
        assert_eq!(cfg.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(cfg.endpoint_url(), Some("http://127.0.0.1:1"));
        let s3 = aws_sdk_s3::Client::new(&cfg);
        let _ = s3;
    }
}

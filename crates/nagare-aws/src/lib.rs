//! AWS outputs.
//!
//! * [`client`]: one place that turns plugin settings (region, endpoint, static keys,
//!   `<assume_role_credentials>`) into an `aws_config::SdkConfig`: the default credential
//!   chain (environment, profile, web identity, ECS task role, IMDSv2) unless keys are given.
//! * `out_s3/`, `out_cloudwatch_logs/`: the outputs (one folder each, files split by role).

pub mod client;
pub mod out_cloudwatch_logs;
pub mod out_s3;

pub use client::{AssumeRole, AwsSettings, Secret};

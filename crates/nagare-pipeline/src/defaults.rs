//! The built-in configurations, used when a binary runs without `-c` and printed by
//! `--print-default-config`.
//!
//! The texts are templates (`defaults/forwarder.conf`, `defaults/aggregator.conf`). Most
//! per-task settings stay embedded Ruby (`"#{ENV.fetch('NAGARE_S3_BUCKET', 'nagare-logs')}"`),
//! evaluated when the text is parsed; what the Ruby subset cannot express is filled in here,
//! from the environment, before parsing:
//!
//! * [`FORWARD_TARGETS_VAR`] (`host:port[,host:port]`): the forwarder's `<store>` that forwards
//!   every event there with acks (none when unset or empty);
//! * the default of `auto_create_bucket`: `true` when the S3 endpoint is the embedded on-disk
//!   store (`file://`, the default), `false` for AWS and S3-compatible servers.

use crate::cli::Role;

/// The forwarder's template.
pub const FORWARDER_TEMPLATE: &str = include_str!("../defaults/forwarder.conf");
/// The aggregator's template (nothing to fill in today).
pub const AGGREGATOR_TEMPLATE: &str = include_str!("../defaults/aggregator.conf");

/// Comma-separated `host:port` list the default forwarder also forwards to.
pub const FORWARD_TARGETS_VAR: &str = "NAGARE_FORWARD_TARGETS";
/// The S3 endpoint variable (read here only to choose the `auto_create_bucket` default).
pub const S3_ENDPOINT_VAR: &str = "NAGARE_S3_ENDPOINT";
/// The forwarder's S3 endpoint when [`S3_ENDPOINT_VAR`] is unset: the embedded store.
pub const DEFAULT_S3_ENDPOINT: &str = "file:///var/lib/nagare/s3";
/// The port of a forward target given without one.
pub const DEFAULT_FORWARD_PORT: u16 = 24224;

const FORWARD_STORE_MARK: &str = "{{FORWARD_STORE}}";
const AUTO_CREATE_MARK: &str = "{{AUTO_CREATE_DEFAULT}}";

/// The role's default configuration rendered with the process environment.
pub fn render_from_env(role: Role) -> Result<String, String> {
    render(role, |k| std::env::var(k).ok())
}

/// The role's default configuration, with `env` for the values filled in before parsing. An
/// error names the variable and what is wrong with it.
pub fn render(role: Role, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    match role {
        Role::Aggregator => Ok(AGGREGATOR_TEMPLATE.to_string()),
        Role::Forwarder => {
            let endpoint = env(S3_ENDPOINT_VAR).unwrap_or_else(|| DEFAULT_S3_ENDPOINT.into());
            let auto_create = endpoint.trim_start().starts_with("file://");
            let targets = match env(FORWARD_TARGETS_VAR) {
                Some(v) => parse_targets(&v)?,
                None => Vec::new(),
            };
            Ok(FORWARDER_TEMPLATE
                .replace(AUTO_CREATE_MARK, if auto_create { "true" } else { "false" })
                .replace(FORWARD_STORE_MARK, &forward_store(&targets)))
        }
    }
}

/// `host:port[,host:port]` (spaces around entries ignored; `[v6]:port`; a missing port is
/// [`DEFAULT_FORWARD_PORT`]).
pub fn parse_targets(v: &str) -> Result<Vec<(String, u16)>, String> {
    let bad = |e: &str, why: &str| {
        format!(
            "{FORWARD_TARGETS_VAR}: '{e}' {why}; expected host:port[,host:port], \
             e.g. aggregators.internal:24224,10.0.0.5:24224"
        )
    };
    let mut out = Vec::new();
    for e in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, port) = if let Some(rest) = e.strip_prefix('[') {
            // [v6] or [v6]:port
            let (h, tail) = rest
                .split_once(']')
                .ok_or_else(|| bad(e, "has no closing ']'"))?;
            match tail {
                "" => (h, None),
                t => (
                    h,
                    Some(
                        t.strip_prefix(':')
                            .ok_or_else(|| bad(e, "has text after ']'"))?,
                    ),
                ),
            }
        } else {
            match e.split_once(':') {
                Some((h, p)) if !p.contains(':') => (h, Some(p)),
                Some(_) => return Err(bad(e, "is an IPv6 address without [brackets]")),
                None => (e, None),
            }
        };
        if host.is_empty() {
            return Err(bad(e, "has no host"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(bad(e, "is not a host name or address"));
        }
        let port = match port {
            None => DEFAULT_FORWARD_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad(e, "has no valid port (1-65535)")),
            },
        };
        out.push((host.to_string(), port));
    }
    Ok(out)
}

/// The `<store>` forwarding to `targets`, or a comment when there are none.
fn forward_store(targets: &[(String, u16)]) -> String {
    if targets.is_empty() {
        return format!("  # ({FORWARD_TARGETS_VAR} was not set: no forwarding)");
    }
    let mut s = format!(
        "  # Forwarding to {FORWARD_TARGETS_VAR}. Behind an NLB a heartbeat only proves the NLB\n  \
         # is up: rely on acks instead.\n  <store>\n    @type forward\n    @id to_aggregators\n    \
         heartbeat_type none\n    require_ack_response true\n    ack_response_timeout 30s\n    \
         keepalive true\n    keepalive_max_age 5m\n"
    );
    for (host, port) in targets {
        s.push_str(&format!(
            "    <server>\n      host {host}\n      port {port}\n    </server>\n"
        ));
    }
    s.push_str(
        "    <buffer>\n      chunk_limit_size 1m\n      total_limit_size 256m\n      \
         flush_interval 1s\n      retry_wait 1s\n      retry_max_interval 30s\n      \
         retry_forever true\n      overflow_action throw_exception\n    </buffer>\n  </store>",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        let m: HashMap<&str, &str> = pairs.iter().copied().collect();
        move |k| m.get(k).map(|v| v.to_string())
    }

    /// Renders, parses with the same environment, validates; returns the text.
    fn load(role: Role, pairs: &[(&str, &str)]) -> (String, crate::Pipeline) {
        let text = render(role, env_of(pairs)).unwrap();
        let opts = nagare_config::ParseOptions::fixed(pairs.iter().copied(), "host-1");
        let root = nagare_config::parse_str_with(&text, Path::new("<built-in default>"), &opts)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let p = crate::Pipeline::validate(&root).unwrap_or_else(|e| panic!("{e}\n{text}"));
        (text, p)
    }

    #[test]
    fn defaults_validate_without_overrides() {
        for role in [Role::Forwarder, Role::Aggregator] {
            let (text, p) = load(role, &[]);
            assert!(!text.contains("{{"), "{text}");
            assert!(p.warnings().is_empty(), "{role:?}: {:#?}", p.warnings());
        }
        let (text, _) = load(Role::Forwarder, &[]);
        assert!(text.contains("'NAGARE_S3_AUTO_CREATE', 'true'"));
        assert!(!text.contains("@type forward\n    @id to_aggregators"));
    }

    #[test]
    fn defaults_validate_with_overrides() {
        let env = [
            ("AWS_REGION", "eu-west-1"),
            ("NAGARE_S3_BUCKET", "my-logs"),
            ("NAGARE_S3_ENDPOINT", ""),
            (
                "NAGARE_FORWARD_TARGETS",
                "agg-1.internal:24225, 10.0.0.5 ,[::1]:7000",
            ),
            ("NAGARE_CLOUDWATCH_ENDPOINT", "http://127.0.0.1:5000"),
            ("NAGARE_DATA_DIR", "/data"),
        ];
        let (text, _) = load(Role::Forwarder, &env);
        assert!(text.contains("'NAGARE_S3_AUTO_CREATE', 'false'"), "{text}");
        for (h, p) in [
            ("agg-1.internal", 24225),
            ("10.0.0.5", 24224),
            ("::1", 7000),
        ] {
            assert!(
                text.contains(&format!("host {h}\n      port {p}\n")),
                "{h}:{p}\n{text}"
            );
        }
        load(Role::Aggregator, &env);
    }

    #[test]
    fn bad_forward_targets_name_the_variable() {
        for bad in ["agg:", "agg:0", "agg:x", ":24224", "::1:5", "[::1", "a b:1"] {
            let e = render(Role::Forwarder, env_of(&[(FORWARD_TARGETS_VAR, bad)])).unwrap_err();
            assert!(e.starts_with(FORWARD_TARGETS_VAR), "{bad}: {e}");
            assert!(e.contains(bad.trim()), "{bad}: {e}");
        }
        assert_eq!(parse_targets(" , ").unwrap(), vec![]);
    }
}

//! `@type forward` as a `<source>`: see `nagare_forward::server`.

use crate::BuildCtx;
use nagare_config::{ConfigError, Section};
use nagare_forward::codec::handshake::{ClientRule, IpNet, ServerSecurity};
use nagare_forward::server::config::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_PARTIAL_FRAME_TIMEOUT, DEFAULT_PORT,
};
use nagare_forward::server::{InForwardConfig, TlsServerConfig};
use std::time::Duration;

pub fn parse(sec: &Section, ctx: &mut BuildCtx) -> Result<InForwardConfig, ConfigError> {
    let id = super::plugin_id(sec, ctx, "in_forward");
    let d = InForwardConfig::default();
    let mut p = sec.params();
    p.ignore("@type");
    p.ignore("@id");
    p.ignore("@label");
    p.ignore("@log_level");
    let mut cfg = InForwardConfig {
        id,
        bind: p.str_or("bind", &d.bind)?,
        port: p.int("port", DEFAULT_PORT)?,
        unix_path: p.str("unix_path")?.map(Into::into),
        unix_perm: u32::from_str_radix(&p.str_or("unix_perm", "0644")?, 8).map_err(|_| {
            ConfigError::new(sec.span.clone(), "unix_perm must be octal, like 0644")
        })?,
        chunk_size_warn_limit: p.opt_size("chunk_size_warn_limit")?.map(|v| v as usize),
        tag: p.str("tag")?,
        add_tag_prefix: p.str("add_tag_prefix")?,
        source_address_key: p.str("source_address_key")?,
        source_hostname_key: p.str("source_hostname_key")?,
        deny_keepalive: p.bool("deny_keepalive", false)?,
        send_keepalive_packet: p.bool("send_keepalive_packet", false)?,
        linger_timeout: Some(p.duration("linger_timeout", Duration::ZERO)?),
        max_connections: p.int("max_connections", DEFAULT_MAX_CONNECTIONS)?,
        partial_frame_timeout: p
            .duration("partial_frame_timeout", DEFAULT_PARTIAL_FRAME_TIMEOUT)?,
        handshake_timeout: p.duration("handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT)?,
        read_buffer_total_limit: p
            .size("read_buffer_total_limit", d.read_buffer_total_limit as u64)?
            as usize,
        ..d
    };
    cfg.limits.max_frame = p.size("chunk_size_limit", cfg.limits.max_frame as u64)? as usize;
    cfg.limits.max_decompressed = p.size(
        "decompression_size_limit",
        cfg.limits.max_decompressed as u64,
    )? as usize;
    cfg.limits.skip_invalid_event = p.bool("skip_invalid_event", true)?;
    if cfg.read_buffer_total_limit < cfg.limits.max_frame {
        return Err(ConfigError::new(
            sec.span.clone(),
            format!(
                "read_buffer_total_limit ({}) is smaller than chunk_size_limit ({}): a message \
                 that large could never be read (every resend would be closed again)",
                cfg.read_buffer_total_limit, cfg.limits.max_frame
            ),
        ));
    }
    p.ignore("resolve_hostname");
    cfg.dedupe_resends = p.bool("dedupe_resends", cfg.dedupe_resends)?;
    cfg.dedupe_window = p.duration("dedupe_window", cfg.dedupe_window)?;
    cfg.dedupe_max_entries = p.int("dedupe_max_entries", cfg.dedupe_max_entries)?;
    if let Some(s) = p.section("security")? {
        cfg.security = Some(parse_security(s, ctx)?);
    }
    if let Some(t) = p.section("transport")? {
        cfg.tls = parse_transport(t, &mut ctx.warnings)?;
    }
    p.finish()?;
    Ok(cfg)
}

fn parse_security(sec: &Section, ctx: &BuildCtx) -> Result<ServerSecurity, ConfigError> {
    let mut p = sec.params();
    let mut s = ServerSecurity {
        self_hostname: p.str_or("self_hostname", &ctx.hostname)?,
        shared_key: p.required_str("shared_key")?.into_bytes(),
        user_auth: p.bool("user_auth", false)?,
        allow_anonymous_source: p.bool("allow_anonymous_source", true)?,
        ..Default::default()
    };
    for u in p.sections("user") {
        let mut up = u.params();
        s.users
            .push((up.required_str("username")?, up.required_str("password")?));
        up.finish()?;
    }
    for c in p.sections("client") {
        let mut cp = c.params();
        let mut rule = ClientRule::default();
        if let Some(h) = cp.str("host")? {
            // Resolved once at startup (fluentd resolves by reverse lookup per connection).
            let addrs =
                std::net::ToSocketAddrs::to_socket_addrs(&(h.as_str(), 0)).map_err(|e| {
                    ConfigError::new(
                        c.span.clone(),
                        format!("cannot resolve <client> host '{h}': {e}"),
                    )
                })?;
            rule.networks.extend(addrs.map(|a| IpNet {
                addr: a.ip(),
                prefix: if a.is_ipv4() { 32 } else { 128 },
            }));
        }
        if let Some(n) = cp.str("network")? {
            rule.networks.push(IpNet::parse(&n).ok_or_else(|| {
                ConfigError::new(
                    c.span.clone(),
                    format!("bad network '{n}', expected a CIDR like 10.0.0.0/8"),
                )
            })?);
        }
        rule.shared_key = cp.str("shared_key")?.map(String::into_bytes);
        rule.users = cp.array("users")?.unwrap_or_default();
        cp.finish()?;
        s.clients.push(rule);
    }
    if !s.allow_anonymous_source && s.clients.is_empty() {
        return Err(ConfigError::new(
            sec.span.clone(),
            "allow_anonymous_source false needs at least one <client> (otherwise every peer would be refused)",
        ));
    }
    p.finish()?;
    Ok(s)
}

fn parse_transport(
    t: &Section,
    warnings: &mut Vec<String>,
) -> Result<Option<TlsServerConfig>, ConfigError> {
    let mut p = t.params();
    let kind = if t.arg.is_empty() {
        "tcp".to_string()
    } else {
        t.arg.clone()
    };
    let out = match kind.as_str() {
        "tcp" => None,
        "tls" => Some(TlsServerConfig {
            cert_path: p.required_str("cert_path")?.into(),
            private_key_path: p.required_str("private_key_path")?.into(),
            ca_path: p.str("ca_path")?.map(Into::into),
            client_cert_auth: p.bool("client_cert_auth", false)?,
        }),
        other => {
            return Err(ConfigError::new(
                t.span.clone(),
                format!("unknown transport '{other}' (expected tcp or tls)"),
            ))
        }
    };
    for key in [
        "version",
        "min_version",
        "max_version",
        "ciphers",
        "insecure",
    ] {
        if p.str(key)?.is_some() {
            warnings.push(format!(
                "{}: {key} is accepted and ignored (TLS 1.2 and 1.3 with rustls' default ciphers)",
                t.span
            ));
        }
    }
    p.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn read_buffer_total_limit_must_hold_one_message() {
        let conf = |extra: &str| {
            format!("<source>\n  @type forward\n  port 0\n{extra}</source>\n<match **>\n  @type null\n</match>\n")
        };
        let load = |text: &str| {
            let root = nagare_config::parse_str(text, Path::new("f.conf")).unwrap();
            crate::Pipeline::validate(&root).map(|_| ())
        };
        let e = load(&conf(
            "  chunk_size_limit 8m\n  read_buffer_total_limit 4m\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("f.conf:1") && e.contains("read_buffer_total_limit"),
            "{e}"
        );
        assert!(load(&conf(
            "  chunk_size_limit 4m\n  read_buffer_total_limit 4m\n"
        ))
        .is_ok());
    }
}

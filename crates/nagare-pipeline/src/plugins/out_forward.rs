//! `@type forward` as an output: see `nagare_forward::client`. Buffered; the chunk id is the
//! forward `chunk` option, so resends are recognisable downstream.

use crate::buffer;
use crate::plugin::{OutputPlugin, Tasks};
use crate::BuildCtx;
use nagare_config::{ConfigError, Section};
use nagare_forward::client::config::*;
use nagare_forward::client::OutForward;
use std::sync::Arc;

pub fn build(
    sec: &Section,
    ctx: &mut BuildCtx,
    tasks: &mut Tasks,
) -> Result<Arc<dyn OutputPlugin>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "out_forward");
    let d = OutForwardConfig::default();
    let mut p = sec.params();
    p.ignore("@type");
    p.ignore("@id");
    p.ignore("@log_level");
    let mut servers = Vec::new();
    for s in p.sections("server") {
        let mut sp = s.params();
        let host = sp.required_str("host")?;
        let port = sp.int("port", DEFAULT_PORT)?;
        let mut spec = ServerSpec::new(&host, port);
        spec.weight = sp.int("weight", DEFAULT_WEIGHT)?;
        spec.standby = sp.bool("standby", false)?;
        if let Some(n) = sp.str("name")? {
            spec.name = n;
        }
        spec.shared_key = sp.str("shared_key")?;
        spec.username = sp.str_or("username", "")?;
        spec.password = sp.str_or("password", "")?;
        sp.finish()?;
        servers.push(spec);
    }
    if servers.is_empty() {
        return Err(ConfigError::new(
            sec.span.clone(),
            "forward output needs at least one <server>",
        ));
    }
    let transport = p.enumeration("transport", &["tcp", "tls"], "tcp")?;
    let tls = if transport == "tls" {
        Some(TlsClientConfig {
            ca_path: p.str("tls_cert_path")?.map(Into::into),
            client_cert_path: p.str("tls_client_cert_path")?.map(Into::into),
            client_key_path: p.str("tls_client_private_key_path")?.map(Into::into),
            insecure: p.bool("tls_insecure_mode", false)?,
            verify_hostname: p.bool("tls_verify_hostname", true)?,
        })
    } else {
        None
    };
    for key in ["tls_version", "tls_ciphers", "tls_allow_self_signed_cert"] {
        if p.str(key)?.is_some() {
            ctx.warnings.push(format!(
                "{}: {key} is accepted and ignored (TLS 1.2 and 1.3 with rustls' default ciphers; a self-signed server needs tls_cert_path or tls_insecure_mode)",
                sec.span
            ));
        }
    }
    let security = match p.section("security")? {
        Some(s) => {
            let mut sp = s.params();
            let c = ClientSecurityConfig {
                self_hostname: sp.str_or("self_hostname", &ctx.hostname)?,
                shared_key: sp.required_str("shared_key")?,
            };
            sp.finish()?;
            Some(c)
        }
        None => None,
    };
    let cfg = OutForwardConfig {
        id: id.clone(),
        servers,
        require_ack_response: p.bool("require_ack_response", false)?,
        ack_response_timeout: p.duration("ack_response_timeout", d.ack_response_timeout)?,
        heartbeat_type: match p
            .enumeration(
                "heartbeat_type",
                &["transport", "tcp", "udp", "none"],
                "transport",
            )?
            .as_str()
        {
            "udp" => HeartbeatType::Udp,
            "none" => HeartbeatType::None,
            _ => HeartbeatType::Transport,
        },
        heartbeat_interval: p.duration("heartbeat_interval", d.heartbeat_interval)?,
        phi_failure_detector: p.bool("phi_failure_detector", true)?,
        phi_threshold: p.float("phi_threshold", d.phi_threshold)?,
        hard_timeout: p.duration("hard_timeout", d.hard_timeout)?,
        recover_wait: p.duration("recover_wait", d.recover_wait)?,
        keepalive: p.bool("keepalive", false)?,
        keepalive_timeout: p.opt_duration("keepalive_timeout")?,
        keepalive_max_age: match p.opt_duration("keepalive_max_age")? {
            Some(z) if z.is_zero() => None,
            Some(v) => Some(v),
            None => d.keepalive_max_age,
        },
        compress: match p
            .enumeration("compress", &["text", "gzip"], "text")?
            .as_str()
        {
            "gzip" => Compress::Gzip,
            _ => Compress::Text,
        },
        compression_level: p.int("compression_level", 6u32)?,
        time_as_integer: p.bool("time_as_integer", false)?,
        send_timeout: p.duration("send_timeout", d.send_timeout)?,
        connect_timeout: p.duration("connect_timeout", d.connect_timeout)?,
        expire_dns_cache: p.opt_duration("expire_dns_cache")?,
        dns_round_robin: p.bool("dns_round_robin", false)?,
        security,
        tls,
    };
    p.ignore("verify_connection_at_startup");
    p.ignore("ignore_network_errors_at_startup");
    let plan = buffer::BufferPlan::parse(
        &mut p,
        &buffer::Defaults {
            require_tag: true,
            ..Default::default()
        },
        ctx,
        &id,
    )?;
    p.finish()?;
    let out = Arc::new(
        OutForward::new(cfg).map_err(|e| ConfigError::new(sec.span.clone(), e.to_string()))?,
    );
    let buffered = plan.start(out.clone(), &id, ctx, tasks)?;
    {
        let o = out.clone();
        tasks.add(move |sd| async move {
            if let Some(h) = o.spawn_heartbeat(sd) {
                let _ = h.await;
            }
        });
    }
    Ok(buffered)
}

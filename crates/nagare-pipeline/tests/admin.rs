//! The admin endpoint: /metrics, /health, /api/plugins.json, unknown paths.

use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, req: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn metrics_health_and_plugins_json() {
    let conf = "<system>\n  admin_bind 127.0.0.1\n  admin_port 0\n</system>\n<source>\n  @type forward\n  @id adm_in\n  bind 127.0.0.1\n  port 0\n</source>\n<match **>\n  @type null\n  @id adm_null\n</match>\n";
    let root = nagare_config::parse_str(conf, Path::new("admin.conf")).unwrap();
    let (trigger, sd) = nagare_core::shutdown::channel();
    let running = nagare_pipeline::Pipeline::build(&root)
        .unwrap()
        .start(sd)
        .await
        .unwrap();
    let admin = running.admin.expect("admin endpoint");

    let (st, body) = get(admin, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(st, 200);
    assert!(
        body.contains("# TYPE nagare_input_connections_open gauge"),
        "{body}"
    );
    assert!(
        body.contains("nagare_input_events_total{plugin_id=\"adm_in\"} 0"),
        "{body}"
    );
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (_, value) = line.rsplit_once(' ').expect("name value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample line {line}"));
    }

    let (st, body) = get(admin, "GET /health HTTP/1.1\r\n\r\n").await;
    assert_eq!((st, body.as_str()), (200, "ok\n"));

    let (st, body) = get(admin, "GET /api/plugins.json HTTP/1.1\r\n\r\n").await;
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["plugin_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"adm_in") && ids.contains(&"adm_null"),
        "{ids:?}"
    );
    let input = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plugin_id"] == "adm_in")
        .unwrap();
    assert_eq!(input["plugin_category"], "input");
    assert_eq!(input["type"], "forward");

    // monitor_agent's filters: by id, by type (`@` spelled out or %40-encoded), without config.
    let ids_of = |body: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["plugin_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (st, body) = get(admin, "GET /api/plugins.json?@id=adm_in HTTP/1.1\r\n\r\n").await;
    assert_eq!((st, ids_of(&body)), (200, vec!["adm_in".to_string()]));
    let (st, body) = get(admin, "GET /api/plugins.json?%40type=null HTTP/1.1\r\n\r\n").await;
    assert_eq!((st, ids_of(&body)), (200, vec!["adm_null".to_string()]));
    let (_, body) = get(
        admin,
        "GET /api/plugins.json?type=forward&with_config=false HTTP/1.1\r\n\r\n",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["plugins"].as_array().unwrap().len(), 1);
    assert!(v["plugins"][0].get("config").is_none(), "{body}");
    let (st, _) = get(admin, "GET /api/plugins.json?tag=app.** HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        st, 400,
        "a filter Nagare cannot apply is refused, not ignored"
    );

    let (st, _) = get(admin, "GET /nope HTTP/1.1\r\n\r\n").await;
    assert_eq!(st, 404);
    trigger.fire();
    running.wait().await;
}

#[tokio::test]
async fn health_is_503_while_an_output_fails_too_long() {
    let conf = "<system>\n  admin_bind 127.0.0.1\n  admin_port 0\n  health_max_failing 0s\n</system>\n<source>\n  @type forward\n  bind 127.0.0.1\n  port 0\n</source>\n<match **>\n  @type null\n</match>\n";
    let root = nagare_config::parse_str(conf, Path::new("admin.conf")).unwrap();
    let (trigger, sd) = nagare_core::shutdown::channel();
    let running = nagare_pipeline::Pipeline::build(&root)
        .unwrap()
        .start(sd)
        .await
        .unwrap();
    let admin = running.admin.unwrap();
    nagare_core::health::output_failed("adm-failing-output", "throttled");
    let (st, body) = get(admin, "GET /health HTTP/1.1\r\n\r\n").await;
    assert_eq!(st, 503);
    assert!(
        body.contains("adm-failing-output") && body.contains("throttled"),
        "{body}"
    );
    nagare_core::health::output_succeeded("adm-failing-output");
    let (st, _) = get(admin, "GET /health HTTP/1.1\r\n\r\n").await;
    assert_eq!(st, 200);
    trigger.fire();
    running.wait().await;
}

/// `POST /api/config.reload`: 501 when reload is not wired (a pipeline started by a test);
/// wired as the binaries do it: 200 with the report, 422 for an invalid file (the pipeline
/// keeps running), 409 when the configuration came from stdin.
#[tokio::test]
async fn config_reload_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let conf = |v: &str| {
        format!("<system>\n  admin_bind 127.0.0.1\n  admin_port 0\n</system>\n<source>\n  @type forward\n  @id rl_adm_in\n  bind 127.0.0.1\n  port 0\n</source>\n<match **>\n  @type {v}\n  @id rl_adm_out\n</match>\n")
    };
    let req = "POST /api/config.reload HTTP/1.1\r\nContent-Length: 0\r\n\r\n";

    // Not wired.
    let root = nagare_config::parse_str(&conf("null"), Path::new("admin.conf")).unwrap();
    let (trigger, sd) = nagare_core::shutdown::channel();
    let running = nagare_pipeline::Pipeline::build(&root)
        .unwrap()
        .start(sd)
        .await
        .unwrap();
    let (st, body) = get(running.admin.unwrap(), req).await;
    assert_eq!(st, 501, "{body}");
    trigger.fire();
    running.wait().await;

    // Wired to a file.
    let file = dir.path().join("reload.conf");
    std::fs::write(&file, conf("null")).unwrap();
    let root = nagare_config::parse_file(&file).unwrap();
    for (source, ok) in [
        (
            nagare_pipeline::reload::ConfigSource::File(file.clone()),
            true,
        ),
        (nagare_pipeline::reload::ConfigSource::Stdin, false),
    ] {
        std::fs::write(&file, conf("null")).unwrap();
        let (trigger, sd) = nagare_core::shutdown::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let running = nagare_pipeline::Pipeline::build(&root)
            .unwrap()
            .start_with(
                sd,
                nagare_pipeline::StartOptions {
                    reload_requests: Some(tx),
                },
            )
            .await
            .unwrap();
        tokio::spawn(nagare_pipeline::reload::serve_requests(
            running.reload_handle(),
            source,
            rx,
            |_| {},
        ));
        let admin = running.admin.unwrap();
        if ok {
            std::fs::write(&file, conf("stdout")).unwrap();
            let (st, body) = get(admin, req).await;
            assert_eq!(st, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["ok"], true);
            assert_eq!(v["kept_inputs"], serde_json::json!(["rl_adm_in"]));
            let (_, plugins) = get(admin, "GET /api/plugins.json HTTP/1.1\r\n\r\n").await;
            assert!(plugins.contains("\"type\":\"stdout\""), "{plugins}");

            std::fs::write(&file, conf("no_such_output")).unwrap();
            let (st, body) = get(admin, req).await;
            assert_eq!(st, 422, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["result"], "invalid");
            assert!(
                v["error"].as_str().unwrap().contains("reload.conf:11:"),
                "{body}"
            );
            let (st, _) = get(admin, "GET /health HTTP/1.1\r\n\r\n").await;
            assert_eq!(st, 200, "the running pipeline is kept");
        } else {
            let (st, body) = get(admin, req).await;
            assert_eq!(st, 409, "{body}");
            assert!(body.contains("stdin"), "{body}");
        }
        trigger.fire();
        running.wait().await;
    }
}

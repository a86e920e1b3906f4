//! out_forward `tls_verify_hostname false`: the chain must still verify against the trusted
//! CA, only the name check is skipped (fluentd's meaning); `true` refuses a certificate issued
//! for another name.

use nagare_core::shutdown;
use nagare_e2e::*;
use std::path::Path;
use std::time::Duration;

async fn run(verify_hostname: bool, id: &str) -> u64 {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let dir = TempDir::new(id);
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "ca");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["aggregator.internal".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let ca_p = dir.write("ca.pem", ca.pem());
    let c_p = dir.write("c.pem", cert.pem());
    let k_p = dir.write("k.pem", key.serialize_pem());
    let recv_cfg = format!("<source>\n @type forward\n @id {id}_in\n bind 127.0.0.1\n port 0\n <transport tls>\n cert_path {}\n private_key_path {}\n </transport>\n</source>\n<match **>\n @type null\n</match>\n", c_p.display(), k_p.display());
    let root = nagare_config::parse_str(&recv_cfg, Path::new("r.conf")).unwrap();
    let (_t1, sd1) = shutdown::channel();
    let r = nagare_pipeline::Pipeline::build(&root)
        .unwrap()
        .start(sd1)
        .await
        .unwrap();
    let port = r.inputs[0].addr.port();
    let stats = r.inputs[0].stats.clone();
    let send_cfg = format!("<source>\n @type forward\n @id {id}_src\n bind 127.0.0.1\n port 0\n</source>\n<match **>\n @type forward\n @id {id}_out\n transport tls\n tls_cert_path {}\n tls_verify_hostname {verify_hostname}\n heartbeat_type none\n require_ack_response true\n <server>\n host 127.0.0.1\n port {port}\n </server>\n <buffer>\n flush_interval 100ms\n retry_wait 100ms\n retry_forever true\n </buffer>\n</match>\n", ca_p.display());
    let root = nagare_config::parse_str(&send_cfg, Path::new("s.conf")).unwrap();
    let (_t2, sd2) = shutdown::channel();
    let s = nagare_pipeline::Pipeline::build(&root)
        .unwrap()
        .start(sd2)
        .await
        .unwrap();
    let addr = s.inputs[0].addr;
    tokio::task::spawn_blocking(move || ForwardSender::new(addr).send_seqs("vh", 0..3))
        .await
        .unwrap();
    if verify_hostname {
        // Several retries' worth of time: none may get through.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        return stats.events.get();
    }
    // A liveness bound (TLS handshakes in a debug build on a loaded machine), not a speed one.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stats.events.get() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stats.events.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_hostname_false_accepts_a_cert_for_another_name_from_the_trusted_ca() {
    assert_eq!(run(false, "vh_off").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_hostname_true_refuses_a_cert_for_another_name() {
    assert_eq!(run(true, "vh_on").await, 0);
}

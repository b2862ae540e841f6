//! `corral up` with TLS on its listener: session hosts under one wildcard certificate, the
//! session-host cookie marked Secure, `X-Forwarded-Proto: https` for the sandbox, and a new
//! certificate written over the files served without a restart. curl is the client.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use corral_testkit::Gateway;
use corral_testkit::gateway::SandboxReaper;
use corral_testkit::ingress::{ECHO_PORT, WS_ECHO};
use corral_testkit::tls::TestCa;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const DOMAIN: &str = "corral.test";

/// curl against the gateway at `host` (resolved to its loopback port), trusting `ca`;
/// returns the exit status's success and what curl printed (headers with `-i`).
fn curl(gw: &Gateway, ca: &Path, host: &str, args: &[&str], path: &str) -> (bool, String) {
    let port = gw.url.rsplit(':').next().unwrap();
    let output = Command::new("curl")
        .args(["-s", "-i", "--max-time", "60", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(args)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("run curl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn body(answer: &str) -> Value {
    serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap()
}

#[test]
fn https_session_hosts_secure_cookies_and_a_certificate_reloaded_in_place() {
    let root = tempfile::tempdir().unwrap();
    let first = TestCa::new("first CA");
    let ca_file = first.write_cert(root.path(), "first.pem");
    let (cert, key) = first.issue_pem(&[DOMAIN, &format!("*.{DOMAIN}")]);
    let (cert_file, key_file) = (root.path().join("cert.pem"), root.path().join("key.pem"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let gw = Gateway::start(
        Path::new(BIN),
        &root.path().join("data"),
        &["--domain", DOMAIN],
        &[
            ("CORRAL_TLS_CERT", cert_file.to_str().unwrap()),
            ("CORRAL_TLS_KEY", key_file.to_str().unwrap()),
        ],
    );
    let _reaper = SandboxReaper(root.path().join("data"));
    assert!(gw.url.starts_with("https://"), "{}", gw.url);
    let admin = gw.printed_token.clone().unwrap();
    let auth = format!("Authorization: Bearer {admin}");

    let create = json!({
        "profile": "full",
        "command": ["python3", "-c", WS_ECHO, ECHO_PORT.to_string()],
        "ports": [ECHO_PORT],
    })
    .to_string();
    let (ok, answer) = curl(
        &gw,
        &ca_file,
        DOMAIN,
        &[
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "--data",
            &create,
        ],
        "/api/v1/sandboxes",
    );
    assert!(ok && answer.starts_with("HTTP/1.1 201"), "{answer}");
    let sandbox = body(&answer);
    let id = sandbox["id"].as_str().unwrap();
    let port = gw.url.rsplit(':').next().unwrap();
    let session = format!("{id}.{DOMAIN}");
    assert_eq!(sandbox["url"], format!("https://{session}:{port}"));

    let (ok, answer) = curl(&gw, &ca_file, &session, &["-H", &auth], "/");
    assert!(ok && answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-forwarded-proto=https"), "{answer}");

    let (_, answer) = curl(
        &gw,
        &ca_file,
        DOMAIN,
        &["-X", "POST", "-H", &auth],
        &format!("/api/v1/sandboxes/{id}/ticket"),
    );
    let ticket = body(&answer)["url"].as_str().unwrap().to_owned();
    assert!(
        ticket.starts_with(&format!("https://{session}:{port}/_corral/auth?ticket=")),
        "{ticket}"
    );
    let path = ticket.split_once(port).unwrap().1;
    let (_, answer) = curl(&gw, &ca_file, &session, &[], path);
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {answer}"));
    assert!(cookie.contains("; Secure"), "{cookie}");

    // A new certificate from another CA, written over the served files.
    let second = TestCa::new("second CA");
    let second_ca = second.write_cert(root.path(), "second.pem");
    let (cert, key) = second.issue_pem(&[DOMAIN, &format!("*.{DOMAIN}")]);
    std::fs::write(root.path().join("key.new"), key).unwrap();
    std::fs::write(root.path().join("cert.new"), cert).unwrap();
    std::fs::rename(root.path().join("key.new"), &key_file).unwrap();
    std::fs::rename(root.path().join("cert.new"), &cert_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !curl(&gw, &second_ca, DOMAIN, &[], "/api/v1/openapi.json").0 {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !curl(&gw, &ca_file, DOMAIN, &[], "/api/v1/openapi.json").0,
        "the old one is gone"
    );
}

//! How the gateway reaches a sandbox's ports (its supervisor hands over the server's own TCP
//! socket): a served port answers, again and again over kept connections, while a port the
//! sandbox declares but nothing listens on gets the documented 502 naming that port.

use std::path::Path;

use corral_testkit::Gateway;
use corral_testkit::gateway::{SandboxReaper, post};
use corral_testkit::ingress::{ECHO_PORT, WS_ECHO, address, get_at};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");
/// Declared by the sandbox, listened on by nothing.
const SILENT_PORT: u16 = 8799;

#[test]
fn a_port_nothing_listens_on_gets_a_502_naming_it_while_a_served_port_answers() {
    let root = tempfile::tempdir().unwrap();
    let gw = Gateway::start(Path::new(BIN), &root.path().join("data"), &[], &[]);
    let _reaper = SandboxReaper(root.path().join("data"));
    let admin = gw.printed_token.clone().unwrap();
    let (status, sandbox) = post(
        &gw.api("/sandboxes"),
        &admin,
        json!({
            "profile": "full",
            "command": ["python3", "-c", WS_ECHO, ECHO_PORT.to_string()],
            "ports": [ECHO_PORT, SILENT_PORT],
        }),
    );
    assert_eq!(status, 201, "{sandbox}");
    let id = sandbox["id"].as_str().unwrap();
    let gateway_port = address(&gw).rsplit(':').next().unwrap().to_owned();
    let served = format!("{id}.localhost:{gateway_port}");
    let silent = format!("{id}-{SILENT_PORT}.localhost:{gateway_port}");

    // The first request starts the sandbox and is held until the port accepts.
    let answer = get_at(&gw, &served, "/first", Some(&admin), &[]);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("path=/first"), "{}", answer.body);

    let answer = get_at(&gw, &silent, "/", Some(&admin), &[]);
    assert_eq!(answer.status, 502, "{answer:?}");
    let error: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(error["error"]["code"], "upstream_unavailable", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("port {SILENT_PORT}")) && message.contains("server up"),
        "{message}"
    );

    // The served port still answers, each request on a connection the gateway keeps or makes.
    for round in 0..20 {
        let path = format!("/again/{round}");
        let answer = get_at(&gw, &served, &path, Some(&admin), &[]);
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(
            answer.body.contains(&format!("path={path}")),
            "{}",
            answer.body
        );
    }
}

//! A sandbox just started through the API (as the web page's Open does) whose server is not
//! listening yet: a request to its session host is held until the server accepts, like a
//! request that resumes a stopped sandbox, instead of failing with 502 while the agent is
//! still starting.

use std::path::Path;

use corral_testkit::Gateway;
use corral_testkit::gateway::{SandboxReaper, post, start_sandbox};
use corral_testkit::ingress::{address, get_at};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

#[test]
fn a_request_right_after_start_waits_for_the_server_to_listen() {
    let root = tempfile::tempdir().unwrap();
    let gw = Gateway::fresh(Path::new(BIN), root.path());
    let _reaper = SandboxReaper(root.path().join("data"));
    let admin = gw.printed_token.clone().unwrap();
    // The server listens only a while after the sandbox is up (an agent loading itself).
    let (status, created) = post(
        &gw.api("/sandboxes"),
        &admin,
        json!({
            "name": "slow",
            "profile": "full",
            "command": ["sh", "-c", "sleep 2; exec python3 -m http.server 8000"],
            "ports": [8000],
        }),
    );
    assert_eq!(status, 201, "{created}");
    start_sandbox(&gw, &admin, "slow");

    let port = address(&gw).rsplit(':').next().unwrap().to_owned();
    let answer = get_at(
        &gw,
        &format!("slow.localhost:{port}"),
        "/",
        Some(&admin),
        &[],
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer.body.contains("Directory listing for /"),
        "{answer:?}"
    );
}

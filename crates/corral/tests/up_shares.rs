//! `corral up` sharing: an owner lets another user open a sandbox's session host, and only
//! that. The one it is shared with sees it and reaches its server (with their token or a
//! ticket's cookie); everyone else still gets 404; they cannot act on it through the API;
//! unsharing (or deleting the sandbox) ends it; and the CLI does the same through `corral
//! sandbox share|unshare`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use corral_testkit::Gateway;
use corral_testkit::gateway::{SandboxReaper, add_user, call, delete, error_message, get, post};
use corral_testkit::ingress::{RawResponse, address, echo_sandbox, get_at, raw};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

fn host(gw: &Gateway, label: &str) -> String {
    let port = address(gw).rsplit(':').next().unwrap().to_owned();
    format!("{label}.localhost:{port}")
}

fn put(url: &str, token: &str) -> (u16, Value) {
    call("PUT", url, Some(token), &[], None)
}

/// Asks `visit` until it answers `status`: session hosts remember a sandbox's record (its
/// shares too) for a couple of seconds. A hang guard, not a timing claim.
fn until_status(status: u16, visit: impl Fn() -> RawResponse) -> RawResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = visit();
        if answer.status == status || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn corral(gw: &Gateway, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("CORRAL_URL", &gw.url)
        .env("CORRAL_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_shared_session_host_opens_for_that_user_only() {
    let root = tempfile::tempdir().unwrap();
    let gw = Gateway::fresh(Path::new(BIN), root.path());
    let _reaper = SandboxReaper(root.path().join("data"));
    let admin = gw.printed_token.clone().unwrap();
    let alice = add_user(&gw, &admin, "alice@example.com");
    let bob = add_user(&gw, &admin, "bob@example.com");
    let carol = add_user(&gw, &admin, "carol@example.com");
    let id = echo_sandbox(&gw, &alice)["id"].as_str().unwrap().to_owned();
    let url = gw.api(&format!("/sandboxes/{id}"));
    let shares = |email: &str| gw.api(&format!("/sandboxes/{id}/shares/{email}"));
    let at_host = |token: &str| get_at(&gw, &host(&gw, &id), "/", Some(token), &[]);
    assert_eq!(at_host(&alice).status, 200, "the owner's host resumes it");
    assert_eq!(at_host(&bob).status, 404);

    // Only the owner shares, only with a user who exists and is not the owner.
    error_message(put(&shares("bob@example.com"), &bob), 404);
    let unknown = error_message(put(&shares("dave@example.com"), &alice), 404);
    assert!(unknown.contains("no user with email"), "{unknown}");
    error_message(put(&shares("alice@example.com"), &alice), 400);
    error_message(put(&shares("not-an-email"), &alice), 400);
    let (status, shared) = put(&shares("Bob@Example.com"), &alice);
    assert_eq!(status, 200, "{shared}");
    assert_eq!(shared["shared_with"], json!(["bob@example.com"]));

    // Bob sees it and opens its host, with his token or a ticket's cookie.
    let (_, listed) = get(&gw.api("/sandboxes"), &bob);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(get(&url, &bob).0, 200);
    let opened = until_status(200, || at_host(&bob));
    assert_eq!(opened.status, 200, "{opened:?}");
    let (status, ticket) = post(&gw.api(&format!("/sandboxes/{id}/ticket")), &bob, json!({}));
    assert_eq!(status, 200, "{ticket}");
    let path = ticket["url"]
        .as_str()
        .unwrap()
        .rsplit_once("/_corral")
        .unwrap()
        .1
        .to_owned();
    let spent = raw(
        &gw,
        &format!("GET /_corral{path} HTTP/1.1\r\nHost: {}", host(&gw, &id)),
    );
    assert_eq!(spent.status, 303, "{spent:?}");

    // Seeing and opening is all: the API's actions stay with the owner.
    for action in ["start", "stop", "exec"] {
        let action_url = gw.api(&format!("/sandboxes/{id}/{action}"));
        error_message(post(&action_url, &bob, json!({"argv": ["true"]})), 404);
    }
    for read in ["logs", "audit", "files?path=."] {
        error_message(get(&gw.api(&format!("/sandboxes/{id}/{read}")), &bob), 404);
    }
    error_message(put(&shares("carol@example.com"), &bob), 404);
    error_message(delete(&url, &bob), 404);
    // Carol, with whom nothing is shared, sees nothing.
    assert_eq!(at_host(&carol).status, 404);
    error_message(get(&url, &carol), 404);
    assert_eq!(get(&gw.api("/sandboxes"), &carol), (200, json!([])));

    // Unsharing ends it.
    let (status, unshared) = call(
        "DELETE",
        &shares("bob@example.com"),
        Some(&alice),
        &[],
        None,
    );
    assert_eq!((status, &unshared["shared_with"]), (200, &json!([])));
    error_message(
        call(
            "DELETE",
            &shares("bob@example.com"),
            Some(&alice),
            &[],
            None,
        ),
        404,
    );
    error_message(get(&url, &bob), 404);
    let closed = until_status(404, || at_host(&bob));
    assert_eq!(closed.status, 404, "{closed:?}");
}

#[test]
fn the_cli_shares_and_unshares_by_name() {
    let root = tempfile::tempdir().unwrap();
    let gw = Gateway::fresh(Path::new(BIN), root.path());
    let admin = gw.printed_token.clone().unwrap();
    let alice = add_user(&gw, &admin, "alice@example.com");
    add_user(&gw, &admin, "bob+ops@example.com");
    let (ok, _, stderr) = corral(&gw, &alice, &["sandbox", "create", "pairing"]);
    assert!(ok, "{stderr}");

    let (ok, stdout, stderr) = corral(
        &gw,
        &alice,
        &[
            "sandbox",
            "share",
            "pairing",
            "bob+ops@example.com",
            "--json",
        ],
    );
    assert!(ok, "{stderr}");
    let shared: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shared["shared_with"], json!(["bob+ops@example.com"]));

    let (ok, _, stderr) = corral(
        &gw,
        &alice,
        &["sandbox", "share", "pairing", "x@example.com"],
    );
    assert!(!ok);
    assert!(stderr.contains("no user with email"), "{stderr}");

    let (ok, stdout, stderr) = corral(
        &gw,
        &alice,
        &[
            "sandbox",
            "unshare",
            "pairing",
            "bob+ops@example.com",
            "--json",
        ],
    );
    assert!(ok, "{stderr}");
    let unshared: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(unshared["shared_with"], json!([]));
}

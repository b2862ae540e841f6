//! `corral up` sandbox records: profiles, per-user visibility, repo-session ids and idempotent
//! create, the OpenAPI document matching the routes, and the URLs handed out behind a proxy.

use std::path::Path;

use corral_testkit::Gateway;
use corral_testkit::gateway::{add_user, call, delete, error_message, get, post, sha256_hex};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

fn start(root: &Path) -> Gateway {
    Gateway::fresh(Path::new(BIN), root)
}

#[test]
fn a_bad_profile_is_refused_naming_the_valid_ones() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    for profile in ["paranoid", "/etc/passwd", "../profiles/full.toml"] {
        let message = error_message(
            post(&gw.api("/sandboxes"), &admin, json!({ "profile": profile })),
            400,
        );
        for valid in ["full", "moderate", "restricted"] {
            assert!(message.contains(valid), "{message}");
        }
    }
    let (status, body) = post(
        &gw.api("/sandboxes"),
        &admin,
        json!({ "profile": "moderate" }),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["profile"], "moderate");
    assert_eq!(body["state"], "stopped");
}

#[test]
fn users_see_and_touch_only_their_own_sandboxes() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let alice = add_user(&gw, &admin, "alice@example.com");
    let bob = add_user(&gw, &admin, "bob@example.com");

    let (status, created) = post(
        &gw.api("/sandboxes"),
        &alice,
        json!({"name": "dev", "ports": [8080]}),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["owner"], "alice@example.com");
    let url = gw.api(&format!("/sandboxes/{id}"));

    // To bob, alice's sandbox looks exactly like one that does not exist.
    let hidden = error_message(get(&url, &bob), 404);
    let absent = error_message(get(&gw.api("/sandboxes/000000000000"), &bob), 404);
    assert_eq!(
        hidden.replace(&id, "ID"),
        absent.replace("000000000000", "ID")
    );
    error_message(delete(&url, &bob), 404);
    assert_eq!(get(&gw.api("/sandboxes"), &bob), (200, json!([])));

    // A name is the sandbox's id and session host, so it is unique across users: bob cannot
    // have a "dev" too, and alice cannot have two.
    assert_eq!(id, "dev");
    for token in [&bob, &alice] {
        let taken = error_message(
            post(&gw.api("/sandboxes"), token, json!({"name": "dev"})),
            409,
        );
        assert!(taken.contains("choose another name"), "{taken}");
    }
    assert_eq!(
        post(&gw.api("/sandboxes"), &bob, json!({"name": "bobs-dev"})).0,
        201
    );

    let (status, mine) = get(&url, &alice);
    assert_eq!((status, &mine["ports"]), (200, &json!([8080])));
    let (_, all) = get(&gw.api("/sandboxes"), &admin);
    assert_eq!(
        all.as_array().unwrap().len(),
        2,
        "admins see every sandbox: {all}"
    );
    assert_eq!(get(&url, &admin).0, 200);

    assert_eq!(delete(&url, &alice).0, 204);
    error_message(get(&url, &alice), 404);
}

#[test]
fn a_repo_session_has_the_hash_id_and_creating_it_again_returns_it() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let alice = add_user(&gw, &admin, "alice@example.com");
    let bob = add_user(&gw, &admin, "bob@example.com");
    let repo = "https://git.example/acme/app.git";
    let request =
        json!({"repo": repo, "branch": "ai/fix", "profile": "moderate", "agent": "opencode"});

    let (status, first) = post(&gw.api("/sandboxes"), &alice, request.clone());
    assert_eq!(status, 201, "{first}");
    let expected = sha256_hex(&format!("alice@example.com\n{repo}\nai/fix"))[..12].to_owned();
    assert_eq!(first["id"], expected.as_str());
    assert_eq!(
        (first["branch"].as_str(), first["agent"].as_str()),
        (Some("ai/fix"), Some("opencode"))
    );

    let (status, again) = post(&gw.api("/sandboxes"), &alice, request.clone());
    assert_eq!(status, 200, "the same session, not a new one: {again}");
    assert_eq!(again, first);
    assert_eq!(
        get(&gw.api("/sandboxes"), &alice)
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let (status, bobs) = post(&gw.api("/sandboxes"), &bob, request);
    assert_eq!(status, 201);
    assert_ne!(bobs["id"], first["id"], "the id includes the owner");

    let (status, main) = post(&gw.api("/sandboxes"), &alice, json!({"repo": repo}));
    assert_eq!(status, 201);
    let expected = sha256_hex(&format!("alice@example.com\n{repo}\nmain"))[..12].to_owned();
    assert_eq!(
        (main["id"].as_str(), main["branch"].as_str()),
        (Some(expected.as_str()), Some("main"))
    );
}

#[test]
fn concurrent_creates_of_one_repo_session_make_one_sandbox() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let request = json!({"repo": "https://git.example/acme/app.git", "branch": "dev"});
    let statuses: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| post(&gw.api("/sandboxes"), &admin, request.clone())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = statuses.iter().filter(|(s, _)| *s == 201).count();
    let existing = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, existing), (1, 7), "{statuses:?}");
    assert!(statuses.iter().all(|(_, b)| b["id"] == statuses[0].1["id"]));
    assert_eq!(
        get(&gw.api("/sandboxes"), &admin)
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn the_openapi_document_describes_the_routes_the_server_has() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let (status, doc) = call("GET", &gw.api("/openapi.json"), None, &[], None);
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            // A parameter is in the path only if the path has a place for it; the rest are
            // query parameters (`?purge=true`, `?follow=true`, ...), as the server reads them.
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                let place = if path.contains(&format!("{{{name}}}")) {
                    "path"
                } else {
                    "query"
                };
                assert_eq!(parameter["in"], place, "{method} {path}: {parameter}");
            }
            let url = format!("{}{}", gw.url, path.replace("{id}", "x"));
            let (status, body) = call(&method.to_uppercase(), &url, None, &[], None);
            // Without credentials or a body every documented operation refuses, but it
            // exists: never "no such endpoint" or "method not allowed".
            assert!(
                status != 405 && body["error"]["message"] != "no such endpoint",
                "{method} {path}: {status} {body}"
            );
            assert!(
                (400..500).contains(&status),
                "{method} {path}: {status} {body}"
            );
        }
    }
    assert_eq!(operations, 30, "{paths:?}");
    let create = &paths["/api/v1/sandboxes"]["post"]["responses"];
    assert!(
        create["200"].is_object() && create["201"].is_object(),
        "{create}"
    );
    assert!(doc["components"]["schemas"]["CreateSandbox"].is_object());
}

/// Behind a TLS-terminating proxy (`--public-url https://corral.test`), the URLs the gateway
/// hands out are the ones browsers use: session hosts and ticket links are
/// `https://<id>.corral.test` (the public host is the domain), a ticket's cookie and the
/// page's are `Secure`, and the start-up lines say where the gateway is public. A URL with a path is
/// refused at start, saying what to write instead.
#[test]
fn a_public_url_names_the_session_hosts_behind_a_proxy() {
    let root = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        Path::new(BIN),
        &root.path().join("data"),
        &["--public-url", "https://corral.test"],
        &[],
    );
    assert!(
        gw.stdout
            .contains("public URL (through your proxy): https://corral.test\n"),
        "{}",
        gw.stdout
    );
    let admin = gw.printed_token.clone().unwrap();
    let (status, created) = post(
        &gw.api("/sandboxes"),
        &admin,
        json!({"name": "site", "command": ["sleep", "60"], "ports": [8000]}),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["url"], "https://site.corral.test", "{created}");
    let (status, ticket) = post(&gw.api("/sandboxes/site/ticket"), &admin, json!({}));
    assert_eq!(status, 200, "{ticket}");
    let link = ticket["url"].as_str().unwrap();
    let path = link
        .strip_prefix("https://site.corral.test/_corral")
        .unwrap_or_else(|| panic!("{link}"));
    // The proxy passes the browser's Host on to the gateway's plain-HTTP listener.
    let redeemed = corral_testkit::ingress::raw(
        &gw,
        &format!("GET /_corral{path} HTTP/1.1\r\nHost: site.corral.test"),
    );
    assert_eq!(redeemed.status, 303, "{redeemed:?}");
    let cookie = redeemed.header("set-cookie").unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    // The page's own cookies too (here the sign-in form's).
    let login = corral_testkit::ingress::raw(&gw, "GET /login HTTP/1.1\r\nHost: corral.test");
    let cookie = login.header("set-cookie").unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");

    let refused = std::process::Command::new(BIN)
        .args([
            "up",
            "--print-config",
            "--public-url",
            "https://corral.test/app",
        ])
        .env("HOME", root.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("must not have a path"), "{stderr}");
}

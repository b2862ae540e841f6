//! `corral up` deciding who calls: bearer tokens (stored only as hashes, revocable),
//! password login, the trusted-proxy identity header, and refusals that are JSON and say why.

use std::path::Path;

use corral_testkit::Gateway;
use corral_testkit::gateway::{
    add_user, call, delete, error_message, get, oversized_post, post, sha256_hex,
};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

fn start(root: &Path) -> Gateway {
    Gateway::fresh(Path::new(BIN), root)
}

#[test]
fn refusals_are_json_and_say_why() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let me = gw.api("/me");

    let missing = error_message(call("GET", &me, None, &[], None), 401);
    assert!(missing.contains("Bearer"), "{missing}");
    let wrong = error_message(get(&me, "corral_not-a-real-token"), 401);
    assert!(wrong.contains("invalid token"), "{wrong}");
    let scheme = error_message(
        call("GET", &me, None, &[("Authorization", "Basic YTpi")], None),
        401,
    );
    assert!(scheme.contains("Bearer"), "{scheme}");

    let user = add_user(&gw, &admin, "carol@example.com");
    let forbidden = error_message(post(&gw.api("/users"), &user, json!({"email": "x@y"})), 403);
    assert!(forbidden.contains("admin"), "{forbidden}");
    error_message(
        post(
            &gw.api("/tokens"),
            &user,
            json!({"name": "t", "user": "admin@localhost"}),
        ),
        403,
    );
    error_message(
        post(
            &gw.api("/users"),
            &admin,
            json!({"email": "carol@example.com"}),
        ),
        409,
    );

    // Malformed input is the caller's mistake: 4xx JSON, never a 5xx.
    let sandboxes = gw.api("/sandboxes");
    error_message(
        call("POST", &sandboxes, Some(&user), &[], Some("{not json")),
        400,
    );
    let unknown = error_message(
        post(&sandboxes, &user, json!({"profile": "full", "colour": 1})),
        400,
    );
    assert!(unknown.contains("colour"), "{unknown}");
    error_message(post(&sandboxes, &user, json!({"name": "Not_A_Label"})), 400);
    let port_like = error_message(post(&sandboxes, &user, json!({"name": "web-3000"})), 400);
    assert!(port_like.contains("port 3000"), "{port_like}");
    error_message(post(&sandboxes, &user, json!({"branch": "main"})), 400);
    error_message(
        post(&sandboxes, &user, json!({"repo": "r", "branch": "a..b"})),
        400,
    );
    error_message(post(&sandboxes, &user, json!({"ports": [8080, 8080]})), 400);
    error_message(post(&sandboxes, &user, json!({"ports": [70000]})), 400);
    error_message(oversized_post(&sandboxes, &user), 413);
    error_message(get(&gw.api("/sandboxes/%FF"), &user), 400);
    error_message(delete(&gw.api("/tokens/%FF"), &user), 400);
    error_message(
        call(
            "POST",
            &sandboxes,
            Some(&user),
            &[("Content-Type", "text/plain")],
            Some("{}"),
        ),
        415,
    );
    error_message(get(&gw.api("/nowhere"), &user), 404);
    error_message(call("PUT", &me, Some(&user), &[], None), 405);
}

#[test]
fn tokens_are_stored_only_as_hashes() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let user = add_user(&gw, &admin, "dave@example.com");
    let (status, extra) = post(&gw.api("/tokens"), &user, json!({"name": "laptop"}));
    assert_eq!(status, 201, "{extra}");
    let extra = extra["token"].as_str().unwrap().to_owned();
    assert_eq!(get(&gw.api("/me"), &extra).1["email"], "dave@example.com");
    let (_, listed) = get(&gw.api("/tokens"), &user);
    assert!(
        !listed.to_string().contains(&extra),
        "a listing never shows values: {listed}"
    );

    // Every byte the gateway wrote (database, WAL, shared memory), while it runs and after
    // it stops: no token value, only token hashes.
    let raw = |dir: &Path| -> Vec<u8> {
        std::fs::read_dir(dir)
            .unwrap()
            .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect()
    };
    let contains = |haystack: &[u8], needle: &str| {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    };
    let tokens = [&admin, &user, &extra];
    let running = raw(&data);
    assert_eq!(gw.terminate().code(), Some(0));
    let stopped = raw(&data);
    for bytes in [&running, &stopped] {
        for token in tokens {
            let body = &token["corral_".len()..];
            assert!(!contains(bytes, body), "a raw token is in the data dir");
        }
    }

    let db = rusqlite::Connection::open(data.join("corral.db")).unwrap();
    let mut stmt = db.prepare("SELECT hash FROM tokens ORDER BY id").unwrap();
    let hashes: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<String> = tokens.iter().map(|t| sha256_hex(t)).collect();
    assert_eq!(hashes, expected);
}

#[test]
fn an_identity_header_counts_only_from_a_trusted_proxy() {
    let root = tempfile::tempdir().unwrap();
    let untrusting = start(root.path());
    for header in ["X-Forwarded-Email", "X-Auth-Request-Email"] {
        let message = error_message(
            call(
                "GET",
                &untrusting.api("/me"),
                None,
                &[(header, "admin@localhost")],
                None,
            ),
            401,
        );
        assert!(message.contains("trusted_proxies"), "{message}");
    }
    // A header from an untrusted peer does not change who a token belongs to either.
    let admin = untrusting.printed_token.clone().unwrap();
    let user = add_user(&untrusting, &admin, "erin@example.com");
    let (_, me) = call(
        "GET",
        &untrusting.api("/me"),
        Some(&user),
        &[("X-Forwarded-Email", "admin@localhost")],
        None,
    );
    assert_eq!(me["email"], "erin@example.com");
    drop(untrusting);

    let other = tempfile::tempdir().unwrap();
    let trusting = Gateway::start(
        Path::new(BIN),
        &other.path().join("data"),
        &["--trusted-proxy", "127.0.0.1"],
        &[],
    );
    let (status, me) = call(
        "GET",
        &trusting.api("/me"),
        None,
        &[("X-Auth-Request-Email", "frank@example.com")],
        None,
    );
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["email"].as_str(), me["role"].as_str()),
        (Some("frank@example.com"), Some("user"))
    );
    error_message(
        call(
            "GET",
            &trusting.api("/me"),
            None,
            &[("X-Forwarded-Email", "not an email")],
            None,
        ),
        401,
    );
}

#[test]
fn password_login_gives_a_token() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let (status, body) = post(
        &gw.api("/users"),
        &admin,
        json!({"email": "gina@example.com", "password": "correct horse battery"}),
    );
    assert_eq!(status, 201, "{body}");
    let login = |email: &str, password: &str| {
        call(
            "POST",
            &gw.api("/login"),
            None,
            &[],
            Some(&json!({"email": email, "password": password}).to_string()),
        )
    };
    let wrong = error_message(login("gina@example.com", "wrong"), 401);
    let nobody = error_message(login("nobody@example.com", "correct horse battery"), 401);
    assert_eq!(
        wrong, nobody,
        "a refusal does not reveal which emails exist"
    );
    // The admin has no password: it cannot log in with one.
    error_message(login("admin@localhost", ""), 401);

    let (status, body) = login("gina@example.com", "correct horse battery");
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    assert_eq!(get(&gw.api("/me"), token).1["email"], "gina@example.com");
}

#[test]
fn a_revoked_token_stops_working_and_only_its_owner_can_revoke_it() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let hal = add_user(&gw, &admin, "hal@example.com");
    let (_, extra) = post(&gw.api("/tokens"), &hal, json!({"name": "ci"}));
    let (id, extra) = (
        extra["id"].as_i64().unwrap(),
        extra["token"].as_str().unwrap().to_owned(),
    );
    let url = gw.api(&format!("/tokens/{id}"));

    error_message(delete(&url, &admin), 404);
    assert_eq!(get(&gw.api("/me"), &extra).0, 200);
    assert_eq!(delete(&url, &hal).0, 204);
    error_message(get(&gw.api("/me"), &extra), 401);
    assert_eq!(
        get(&gw.api("/me"), &hal).0,
        200,
        "the other token still works"
    );

    // An admin may make a token for another user; it acts as that user.
    let (status, made) = post(
        &gw.api("/tokens"),
        &admin,
        json!({"name": "support", "user": "hal@example.com"}),
    );
    assert_eq!(status, 201, "{made}");
    let made = made["token"].as_str().unwrap();
    assert_eq!(get(&gw.api("/me"), made).1["email"], "hal@example.com");
    let (_, users) = get(&gw.api("/users"), &admin);
    let emails: Vec<_> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].clone())
        .collect();
    assert_eq!(emails, [json!("admin@localhost"), json!("hal@example.com")]);
}

/// The page's sign-in form as a browser submits it: its double-submit cookie and field, then
/// the email and `secret`. Returns the status and the session cookie, if one was set.
fn sign_in_on_the_page(gw: &Gateway, email: &str, secret: &str) -> (u16, Option<String>) {
    let base = gw.api("").trim_end_matches("/api/v1").to_owned();
    let form = ureq::get(&format!("{base}/login")).call().unwrap();
    let login_cookie = form
        .all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("corral_login="))
        .expect("sign-in cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = form.into_string().unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf field")
        .to_owned();
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let response = match agent
        .post(&format!("{base}/login"))
        .set("Cookie", &login_cookie)
        .send_form(&[("csrf", &csrf), ("email", email), ("password", secret)])
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let session = response
        .all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("corral_session="))
        .map(str::to_owned);
    (response.status(), session)
}

#[test]
fn the_first_admin_signs_in_on_the_page_with_the_printed_token() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let (status, session) = sign_in_on_the_page(&gw, "admin@localhost", &admin);
    assert_eq!(status, 303, "{session:?}");
    assert!(session.is_some());
    // Someone else's token, or a made-up one, does not.
    let bob = add_user(&gw, &admin, "bob@example.com");
    for wrong in [bob.as_str(), "corral_0000"] {
        let (status, session) = sign_in_on_the_page(&gw, "admin@localhost", wrong);
        assert_eq!((status, session), (401, None));
    }
}

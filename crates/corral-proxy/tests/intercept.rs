//! TLS interception against real HTTPS servers on loopback: HTTP rules decided per request
//! inside the tunnel, the git push guard with the real git client, the token injected on the
//! way out, and hosts without rules left untouched.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::echo_http_server;
use corral_policy::{
    AuditEvent, AuditLog, PolicyEngine, PolicyHandle, Profile, SandboxIdentity, TrafficLog,
    TrafficRecord,
};
use corral_proxy::ca::CertificateAuthority;
use corral_proxy::{Credentials, EgressProxy, Interception, ProxyLimits};
use corral_testkit::GitServer;
use corral_testkit::tls::{TestCa, tls_front};
use rustls::pki_types::ServerName;

/// A proxy with interception, the upstream trusting only `upstream_ca`.
struct Proxy {
    dir: tempfile::TempDir,
    socket: PathBuf,
    corral_ca: Arc<CertificateAuthority>,
}

impl Proxy {
    fn start(profile_toml: &str, upstream_ca: Option<&TestCa>, credentials: Credentials) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("egress.sock");
        let profile = Profile::from_toml("test.toml", profile_toml).unwrap();
        let policy = Arc::new(PolicyHandle::from_engine(
            "test",
            PolicyEngine::new(profile).unwrap(),
        ));
        let audit = Arc::new(AuditLog::open(&dir.path().join("audit.jsonl")).unwrap());
        let corral_ca =
            Arc::new(CertificateAuthority::load_or_create(&dir.path().join("ca")).unwrap());
        let sandbox = SandboxIdentity {
            id: "sb1".into(),
            ..SandboxIdentity::default()
        };
        let traffic = Arc::new(TrafficLog::open(&dir.path().join("egress.jsonl")).unwrap());
        let mut proxy = EgressProxy::new(sandbox, policy, Some(audit), ProxyLimits::default())
            .with_traffic_log(traffic);
        if let Some(upstream_ca) = upstream_ca {
            let interception = Interception::new(Arc::clone(&corral_ca), upstream_ca.roots())
                .map_err(|e| e.to_string());
            proxy = proxy.with_interception(interception, credentials);
        }
        let listener = EgressProxy::bind(&socket).unwrap();
        std::thread::spawn(move || proxy.serve_blocking(listener));
        Self {
            dir,
            socket,
            corral_ca,
        }
    }

    /// Opens a CONNECT tunnel to `authority`; returns the proxy's status line and, when it
    /// answered 200, the stream.
    fn connect(&self, authority: &str) -> (String, UnixStream) {
        let mut stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        (head.lines().next().unwrap_or_default().to_string(), stream)
    }

    /// Sends `request` over TLS (server name `host`, trusting `roots`) through a tunnel to
    /// `host:port`, and returns the whole response, or the TLS error.
    fn https(
        &self,
        host: &str,
        port: u16,
        roots: rustls::RootCertStore,
        request: &str,
    ) -> Result<String, String> {
        let (status, stream) = self.connect(&format!("{host}:{port}"));
        assert!(status.contains(" 200"), "CONNECT answered {status}");
        let mut tls = tls_client(stream, host, roots);
        tls.write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        match tls.read_to_end(&mut response) {
            Ok(_) => Ok(String::from_utf8_lossy(&response).into_owned()),
            Err(_) if !response.is_empty() => Ok(String::from_utf8_lossy(&response).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Roots trusting corral's CA, as a sandbox's bundle does.
    fn sandbox_roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let der =
            rustls::pki_types::pem::PemObject::from_pem_slice(self.corral_ca.cert_pem().as_bytes())
                .unwrap();
        roots.add(der).unwrap();
        roots
    }

    /// A bundle file holding corral's CA, for git and curl.
    fn sandbox_bundle(&self) -> PathBuf {
        let path = self.dir.path().join("bundle.pem");
        std::fs::write(&path, self.corral_ca.cert_pem()).unwrap();
        path
    }

    /// A TCP port on loopback relaying to the proxy's socket, the way the sandbox's bridge
    /// does, so real clients (git, curl) can use it as their HTTP proxy.
    fn tcp_bridge(&self) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let socket = self.socket.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let upstream = UnixStream::connect(&socket).unwrap();
                let (mut client_in, mut upstream_out) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_in, &mut upstream_out);
                    let _ = upstream_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut upstream_in, mut client_out) = (upstream, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut upstream_in, &mut client_out);
                    let _ = client_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        port
    }

    /// The traffic records written so far.
    fn traffic(&self) -> Vec<TrafficRecord> {
        std::fs::read_to_string(self.dir.path().join("egress.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn audit(&self) -> Vec<AuditEvent> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// A TLS client for `host` over `stream`, trusting `roots`.
fn tls_client(
    stream: UnixStream,
    host: &str,
    roots: rustls::RootCertStore,
) -> rustls::StreamOwned<rustls::ClientConnection, UnixStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connection = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(host.to_string()).unwrap(),
    )
    .unwrap();
    rustls::StreamOwned::new(connection, stream)
}

fn profile(port: u16, extra: &str) -> String {
    format!("[network]\nallow = [\"localhost:{port}\"]\nallow_private = [\"localhost\"]\n{extra}")
}

const HTTP_RULES: &str = r#"
[[http.allow]]
host = "localhost"
methods = ["GET"]
paths = ["/allowed/*"]
"#;

fn get(path: &str, extra_headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra_headers}Connection: close\r\n\r\n")
}

#[test]
fn http_rules_decide_each_request_inside_an_intercepted_tunnel() {
    let upstream_ca = TestCa::new("upstream test CA");
    let https = tls_front(&upstream_ca, "localhost", echo_http_server());
    let proxy = Proxy::start(
        &profile(https.port(), HTTP_RULES),
        Some(&upstream_ca),
        Credentials::new(),
    );
    let roots = || proxy.sandbox_roots();

    let allowed = proxy
        .https(
            "localhost",
            https.port(),
            roots(),
            &get("/allowed/page?x=1", ""),
        )
        .unwrap();
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    assert!(
        allowed.contains("GET /allowed/page?x=1 HTTP/1.1"),
        "{allowed}"
    );

    let post = "POST /allowed/page HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    let denied = proxy
        .https("localhost", https.port(), roots(), post)
        .unwrap();
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    let deny_header = denied
        .lines()
        .find_map(|l| l.strip_prefix("x-corral-deny: "))
        .unwrap_or_default();
    assert!(!deny_header.is_empty(), "no policy named: {denied}");
    assert!(
        denied.contains(&format!("denied by policy {deny_header}")),
        "{denied}"
    );
    assert!(
        denied.contains("POST https://localhost/allowed/page denied"),
        "{denied}"
    );

    let elsewhere = proxy
        .https("localhost", https.port(), roots(), &get("/private", ""))
        .unwrap();
    assert!(elsewhere.starts_with("HTTP/1.1 403"), "{elsewhere}");

    let decisions: Vec<(String, String)> = proxy
        .audit()
        .into_iter()
        .filter(|e| e.action == "http_request")
        .map(|e| (e.resource, e.decision))
        .collect();
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert_eq!(decisions[0].1, "allow");
    assert_eq!(decisions[1].1, "deny");
    assert_eq!(decisions[2].1, "deny");
}

#[test]
fn intercepted_bytes_are_recorded_once_when_the_connection_ends() {
    let upstream_ca = TestCa::new("upstream test CA");
    let https = tls_front(&upstream_ca, "localhost", echo_http_server());
    let proxy = Proxy::start(
        &profile(https.port(), HTTP_RULES),
        Some(&upstream_ca),
        Credentials::new(),
    );
    let request = get(&format!("/allowed/{}", "x".repeat(5000)), "");
    let response = proxy
        .https("localhost", https.port(), proxy.sandbox_roots(), &request)
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Written when the proxy's upstream connection has ended, just after the response.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while proxy.traffic().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no traffic record");
        std::thread::sleep(Duration::from_millis(20));
    }
    let records = proxy.traffic();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(
        (record.host.as_str(), record.port),
        ("localhost", https.port())
    );
    // TLS to the host: at least the plaintext each way.
    assert!(record.sent >= request.len() as u64, "{record:?}");
    assert!(record.received >= response.len() as u64, "{record:?}");
}

#[test]
fn a_request_for_another_host_inside_the_tunnel_is_refused() {
    let upstream_ca = TestCa::new("upstream test CA");
    let https = tls_front(&upstream_ca, "localhost", echo_http_server());
    let proxy = Proxy::start(
        &profile(https.port(), HTTP_RULES),
        Some(&upstream_ca),
        Credentials::new(),
    );
    let fronted = "GET /allowed/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    let response = proxy
        .https("localhost", https.port(), proxy.sandbox_roots(), fronted)
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 421"), "{response}");
    assert!(response.contains("not evil.example"), "{response}");
}

#[test]
fn the_configured_token_replaces_whatever_the_agent_sends() {
    let upstream_ca = TestCa::new("upstream test CA");
    let https = tls_front(&upstream_ca, "localhost", echo_http_server());
    let mut credentials = Credentials::new();
    credentials
        .add_token("localhost", "s3cret-host-token")
        .unwrap();
    let proxy = Proxy::start(&profile(https.port(), ""), Some(&upstream_ca), credentials);
    let response = proxy
        .https(
            "localhost",
            https.port(),
            proxy.sandbox_roots(),
            &get("/", "Authorization: Bearer agents-own\r\n"),
        )
        .unwrap();
    let expected =
        base64::engine::general_purpose::STANDARD.encode("x-access-token:s3cret-host-token");
    assert!(
        response.contains(&format!("authorization: Basic {expected}")),
        "{response}"
    );
    assert!(!response.contains("agents-own"), "{response}");
    let audit = std::fs::read_to_string(proxy.dir.path().join("audit.jsonl")).unwrap();
    assert!(!audit.contains("s3cret") && !audit.contains(&expected));
}

#[test]
fn an_upstream_certificate_the_proxy_does_not_trust_is_a_502_that_says_so() {
    let upstream_ca = TestCa::new("upstream test CA");
    let https = tls_front(&upstream_ca, "localhost", echo_http_server());
    let unrelated = TestCa::new("some other CA");
    let proxy = Proxy::start(
        &profile(https.port(), HTTP_RULES),
        Some(&unrelated),
        Credentials::new(),
    );
    let response = proxy
        .https(
            "localhost",
            https.port(),
            proxy.sandbox_roots(),
            &get("/allowed/x", ""),
        )
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    assert!(
        response.to_lowercase().contains("certificate"),
        "{response}"
    );
}

#[test]
fn a_host_that_must_be_read_is_refused_when_interception_is_unavailable() {
    let upstream_ca = TestCa::new("upstream test CA");
    let https = tls_front(&upstream_ca, "localhost", echo_http_server());
    let proxy = Proxy::start(&profile(https.port(), HTTP_RULES), None, Credentials::new());
    let (status, mut stream) = proxy.connect(&format!("localhost:{}", https.port()));
    assert!(status.contains(" 502"), "{status}");
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    assert!(body.contains("TLS interception is unavailable"), "{body}");
}

#[test]
fn hosts_without_rules_to_apply_are_tunnelled_untouched() {
    let upstream_ca = TestCa::new("upstream test CA");
    let https = tls_front(&upstream_ca, "localhost", echo_http_server());
    let proxy = Proxy::start(
        &profile(https.port(), ""),
        Some(&upstream_ca),
        Credentials::new(),
    );
    // Only the real server's certificate verifies here: corral's CA is not trusted.
    let response = proxy
        .https(
            "localhost",
            https.port(),
            upstream_ca.roots(),
            &get("/", ""),
        )
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // And corral's CA alone does not verify it: nothing was intercepted.
    let refused = proxy.https(
        "localhost",
        https.port(),
        proxy.sandbox_roots(),
        &get("/", ""),
    );
    assert!(refused.is_err(), "{refused:?}");
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_SSL_CAINFO")
        .output()
        .unwrap()
}

#[test]
fn real_git_over_intercepted_https_pushes_allowed_branches_and_is_refused_main() {
    let upstream_ca = TestCa::new("upstream test CA");
    let token = "ghp_hosttoken123";
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
    );
    let server = GitServer::start_requiring(&expected);
    server.create_repo("acme/app.git");
    let main_before = server.rev("acme/app.git", "main").unwrap();
    let https = tls_front(&upstream_ca, "localhost", server.address());
    let mut credentials = Credentials::new();
    credentials.add_token("localhost", token).unwrap();
    let rules = r#"
[git]
intercept = ["localhost"]
[[git.push]]
remote = "*"
allow = ["ai/*"]
deny = ["main"]
"#;
    let proxy = Proxy::start(
        &profile(https.port(), rules),
        Some(&upstream_ca),
        credentials,
    );
    let bridge = proxy.tcp_bridge();
    let bundle = proxy.sandbox_bundle();
    let work = tempfile::tempdir().unwrap();
    let proxy_config = format!("http.proxy=http://127.0.0.1:{bridge}");
    let ca_config = format!("http.sslCAInfo={}", bundle.display());
    let url = format!("https://localhost:{}/acme/app.git", https.port());
    let with = |args: &[&str]| {
        let mut all = vec!["-c", &proxy_config, "-c", &ca_config];
        all.extend_from_slice(args);
        git(work.path(), &all)
    };

    let clone = with(&["clone", "-q", &url, "app"]);
    assert!(
        clone.status.success(),
        "{}",
        String::from_utf8_lossy(&clone.stderr)
    );
    let app = work.path().join("app");
    std::fs::write(app.join("change.txt"), "by the agent\n").unwrap();
    let in_app = |args: &[&str]| {
        let mut all = vec!["-C", app.to_str().unwrap()];
        all.extend_from_slice(args);
        with(&all)
    };
    assert!(in_app(&["add", "change.txt"]).status.success());
    assert!(in_app(&["commit", "-qm", "agent change"]).status.success());

    let pushed = in_app(&["push", "origin", "HEAD:ai/x"]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let head = String::from_utf8_lossy(&in_app(&["rev-parse", "HEAD"]).stdout)
        .trim()
        .to_string();
    assert_eq!(
        server.rev("acme/app.git", "ai/x").as_deref(),
        Some(head.as_str())
    );

    let refused = in_app(&["push", "origin", "HEAD:main"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("! [remote rejected] HEAD -> main (corral: test/git/push-deny:main"),
        "{stderr}"
    );
    assert_eq!(server.rev("acme/app.git", "main"), Some(main_before));

    let fetched = in_app(&["fetch", "-q", "origin"]);
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );

    // Every request reached the server with the token the proxy holds, none without it.
    let seen = server.authorizations_seen();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|a| a == &expected), "{seen:?}");
    let pushes: Vec<(String, String)> = proxy
        .audit()
        .into_iter()
        .filter(|e| e.action == "git_push")
        .map(|e| (e.resource, e.decision))
        .collect();
    assert!(
        pushes
            .iter()
            .any(|(r, d)| r.contains("ai/x") && d == "allow"),
        "{pushes:?}"
    );
    assert!(
        pushes
            .iter()
            .any(|(r, d)| r.contains("main") && d == "deny"),
        "{pushes:?}"
    );
}

#[test]
fn an_intercepted_response_streams_without_waiting_for_its_end() {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            line.clear();
        }
        let mut stream = stream;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nfirst \r\n")
            .unwrap();
        // The rest is sent only once the client has read the first chunk through the proxy.
        released.recv().unwrap();
        stream.write_all(b"4\r\nlast\r\n0\r\n\r\n").unwrap();
    });
    let upstream_ca = TestCa::new("upstream test CA");
    let https = tls_front(&upstream_ca, "localhost", backend);
    let proxy = Proxy::start(
        &profile(https.port(), HTTP_RULES),
        Some(&upstream_ca),
        Credentials::new(),
    );
    let (status, stream) = proxy.connect(&format!("localhost:{}", https.port()));
    assert!(status.contains(" 200"), "{status}");
    let mut tls = tls_client(stream, "localhost", proxy.sandbox_roots());
    tls.write_all(get("/allowed/stream", "").as_bytes())
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("first ") {
        let n = tls
            .read(&mut buffer)
            .expect("the first chunk arrives before the last is sent");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..n]);
    }
    release.send(()).unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    seen.extend_from_slice(&rest);
    assert!(
        String::from_utf8_lossy(&seen).contains("last"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
}

#[test]
fn plain_http_git_pushes_are_guarded_and_get_the_token_too() {
    let token = "plain-http-token";
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
    );
    let server = GitServer::start_requiring(&expected);
    server.create_repo("acme/app.git");
    let main_before = server.rev("acme/app.git", "main").unwrap();
    let mut credentials = Credentials::new();
    credentials.add_token("localhost", token).unwrap();
    let rules = "[[git.push]]\nallow = [\"ai/*\"]\ndeny = [\"main\"]\n";
    let proxy = Proxy::start(
        &profile(server.address().port(), rules),
        Some(&TestCa::new("unused")),
        credentials,
    );
    let bridge = proxy.tcp_bridge();
    let work = tempfile::tempdir().unwrap();
    let proxy_config = format!("http.proxy=http://127.0.0.1:{bridge}");
    let url = format!("http://localhost:{}/acme/app.git", server.address().port());
    let run = |args: &[&str]| {
        let mut all = vec!["-c", proxy_config.as_str()];
        all.extend_from_slice(args);
        git(work.path(), &all)
    };
    let clone = run(&["clone", "-q", &url, "app"]);
    assert!(
        clone.status.success(),
        "{}",
        String::from_utf8_lossy(&clone.stderr)
    );
    let app = work.path().join("app");
    let app = app.to_str().unwrap();
    std::fs::write(work.path().join("app/f.txt"), "x\n").unwrap();
    assert!(run(&["-C", app, "add", "f.txt"]).status.success());
    assert!(run(&["-C", app, "commit", "-qm", "f"]).status.success());
    let allowed = run(&["-C", app, "push", "-q", "origin", "HEAD:ai/plain"]);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let refused = run(&["-C", app, "push", "origin", "HEAD:main"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("[remote rejected] HEAD -> main (corral: test/git/push-deny:main"),
        "{stderr}"
    );
    assert_eq!(server.rev("acme/app.git", "main"), Some(main_before));
    assert!(server.rev("acme/app.git", "ai/plain").is_some());
    assert!(server.authorizations_seen().iter().all(|a| a == &expected));
}

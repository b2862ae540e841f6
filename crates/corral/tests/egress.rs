//! `corral run`'s way out: the in-process egress proxy behind 127.0.0.1:3128, deciding every
//! connection with the run's profile and recording it in the audit log.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use corral_policy::AuditEvent;
use corral_testkit::{Caller, Corral, OutputExt, TestDir};

/// An HTTP server on the host's loopback answering `hello from the host`.
fn host_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let mut stream = stream;
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 21\r\nconnection: close\r\n\r\nhello from the host\r\n",
            );
        }
    });
    port
}

/// Python inside the sandbox: one request per port through the bridge, printing the status
/// line, the deny header and the body's first line.
const CLIENT: &str = r#"
import socket, sys
for port in sys.argv[1:]:
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    deny = [l for l in lines if l.lower().startswith("x-corral-deny")]
    print(lines[0], deny[0] if deny else "-", body.splitlines()[0] if body else "")
"#;

fn audit(path: &std::path::Path) -> Vec<AuditEvent> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_profile_rule_lets_one_host_port_through_and_denies_the_rest() {
    let allowed = host_server();
    let other = host_server();
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let profile = ws.write(
            caller,
            "net.toml",
            &format!("extends = \"restricted\"\n[network]\nallow = [\"127.0.0.1:{allowed}\"]\n"),
        );
        let log = ws.path().join("audit.jsonl");
        let out = Corral::new(env!("CARGO_BIN_EXE_corral"), caller)
            .args(["run", "--policy"])
            .args([&profile])
            .args(["--audit-log"])
            .args([&log])
            .args([
                "--",
                "python3",
                "-c",
                CLIENT,
                &allowed.to_string(),
                &other.to_string(),
            ])
            .current_dir(ws.path())
            .output();
        assert_eq!(
            out.stdout_text(),
            format!(
                "HTTP/1.1 200 OK - hello from the host\n\
                 HTTP/1.1 403 Forbidden x-corral-deny: default-deny \
                 corral: connect to 127.0.0.1:{other} denied by policy default-deny (profile net).\n"
            ),
            "{caller:?}: {}",
            out.stderr_text()
        );
        let events = audit(&log);
        let connects: Vec<(String, String)> = events
            .iter()
            .filter(|e| e.action == "connect")
            .map(|e| (e.resource.clone(), e.decision.clone()))
            .collect();
        assert_eq!(
            connects,
            [
                (format!("127.0.0.1:{allowed}"), "allow".to_string()),
                (format!("127.0.0.1:{other}"), "deny".to_string())
            ],
            "{caller:?}"
        );
        assert!(events.iter().all(|e| e.sandbox.starts_with("run-")));
    }
}

#[test]
fn allow_net_opens_a_host_for_one_run() {
    let port = host_server();
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let run = |extra: &[String]| {
            Corral::new(env!("CARGO_BIN_EXE_corral"), caller)
                .args(["run", "--audit-log"])
                .args([ws.path().join("audit.jsonl")])
                .args(extra)
                .args(["--", "python3", "-c", CLIENT, &port.to_string()])
                .current_dir(ws.path())
                .output()
        };
        let denied = run(&[]);
        assert!(
            denied.stdout_text().starts_with(
                "HTTP/1.1 403 Forbidden x-corral-deny: restricted/network/non-public-address"
            ),
            "{caller:?}: {}{}",
            denied.stdout_text(),
            denied.stderr_text()
        );
        let allowed = run(&["--allow-net".into(), format!("127.0.0.1:{port}")]);
        assert_eq!(
            allowed.stdout_text(),
            "HTTP/1.1 200 OK - hello from the host\n",
            "{caller:?}: {}",
            allowed.stderr_text()
        );
    }
}

#[test]
fn a_bad_allow_net_rule_is_refused_before_anything_runs() {
    let ws = TestDir::new(Caller::Unprivileged);
    let out = Corral::new(env!("CARGO_BIN_EXE_corral"), Caller::Unprivileged)
        .args(["run", "--allow-net", "example.com:https", "--", "true"])
        .current_dir(ws.path())
        .output();
    assert_eq!(out.code(), 125);
    assert!(
        out.stderr_text().contains(
            "--allow-net example.com:https: \"example.com:https\": \"https\" is not a port"
        ),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn corral_audit_prints_the_recorded_decisions_and_follows_new_ones() {
    let port = host_server();
    let ws = TestDir::new(Caller::Unprivileged);
    let log = ws.path().join("audit.jsonl");
    let run = Corral::new(env!("CARGO_BIN_EXE_corral"), Caller::Unprivileged)
        .args(["run", "--audit-log"])
        .args([&log])
        .args(["--", "python3", "-c", CLIENT, &port.to_string()])
        .current_dir(ws.path())
        .output();
    assert!(run.stdout_text().contains("403"), "{}", run.stderr_text());
    let printed = Corral::new(env!("CARGO_BIN_EXE_corral"), Caller::Unprivileged)
        .args(["audit", "--file"])
        .args([&log])
        .output()
        .stdout_text();
    let last = printed.lines().last().unwrap_or_default().to_string();
    assert!(
        last.contains(" deny ")
            && last.contains(&format!("connect      127.0.0.1:{port}"))
            && last.ends_with("restricted/network/non-public-address"),
        "{printed}"
    );

    // -f prints a decision recorded after it started.
    let mut follow = Corral::new(env!("CARGO_BIN_EXE_corral"), Caller::Unprivileged)
        .args(["audit", "-f", "--json", "--file"])
        .args([&log])
        .command();
    let mut child = follow.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let existing = std::fs::read_to_string(&log).unwrap().lines().count();
    for _ in 0..existing {
        lines.next().unwrap().unwrap();
    }
    let marker = r#"{"time":"t","sandbox":"later","user":"","profile":"p","action":"connect","resource":"x:1","context":{},"decision":"deny","policies":["marker"]}"#;
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(file, "{marker}").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), marker);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn an_edited_policy_file_applies_to_the_running_sandbox() {
    let port = host_server();
    let caller = Caller::Unprivileged;
    let ws = TestDir::new(caller);
    let profile = ws.write(caller, "live.toml", "extends = \"restricted\"\n");
    // The sandbox asks once, reports, then retries until the answer changes (bounded).
    let script = format!(
        "import socket, time\n\
         def ask():\n\
         \x20   s = socket.create_connection(('127.0.0.1', 3128))\n\
         \x20   s.sendall(b'GET http://127.0.0.1:{port}/ HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n\
         \x20   return s.recv(100).split(b'\\r\\n')[0].decode()\n\
         print(ask(), flush=True)\n\
         for _ in range(600):\n\
         \x20   answer = ask()\n\
         \x20   if '200' in answer:\n\
         \x20       print(answer, flush=True)\n\
         \x20       break\n\
         \x20   time.sleep(0.1)\n"
    );
    let mut command = Corral::new(env!("CARGO_BIN_EXE_corral"), caller)
        .args(["run", "--audit-log"])
        .args([ws.path().join("audit.jsonl")])
        .args(["--policy"])
        .args([&profile])
        .args(["--", "python3", "-c", &script])
        .current_dir(ws.path())
        .command();
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "HTTP/1.1 403 Forbidden");
    std::fs::write(
        &profile,
        format!("extends = \"restricted\"\n[network]\nallow = [\"127.0.0.1:{port}\"]\n"),
    )
    .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "HTTP/1.1 200 OK");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("profile changed; new connections use it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Inside the sandbox: clone over HTTPS through the proxy, commit, push an allowed branch and
/// then main, and show what the sandbox can see of credentials.
const GIT_SCRIPT: &str = r#"
set -u
cd /workspace
git clone -q "$1" app || exit 10
cd app
echo change > change.txt
git add change.txt
git -c user.name=agent -c user.email=agent@example.com commit -qm change || exit 11
git push -q origin "HEAD:$3" || exit 12
git rev-parse HEAD > /workspace/pushed
if git push origin HEAD:main 2> /workspace/refused; then exit 13; fi
env
cat /proc/self/environ | tr '\0' '\n'
grep -rl "$2" /workspace /tmp "$HOME" /run/corral 2>/dev/null | sed 's/^/found: /'
echo done
"#;

#[test]
fn git_in_the_sandbox_pushes_through_the_guard_with_a_token_it_never_sees() {
    use base64::Engine as _;
    use corral_testkit::GitServer;
    use corral_testkit::tls::{TestCa, tls_front};

    let token = "s3cret-git-token";
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
    );
    let upstream_ca = TestCa::new("test git host CA");
    let server = GitServer::start_requiring(&expected);
    server.create_repo("acme/app.git");
    let main_before = server.rev("acme/app.git", "main").unwrap();
    let https = tls_front(&upstream_ca, "localhost", server.address());
    for caller in Caller::all() {
        let branch = format!("ai/{caller:?}").to_lowercase();
        let ws = TestDir::new(caller);
        let profile = ws.write(
            caller,
            "git.toml",
            &format!(
                "extends = \"restricted\"\n[network]\nallow = [\"localhost:{}\"]\n\
                 allow_private = [\"localhost\"]\n[git]\nintercept = [\"localhost\"]\n",
                https.port()
            ),
        );
        let roots = upstream_ca.write_cert(ws.path(), "upstream-ca.pem");
        let ca_dir = ws.path().join("ca");
        let out = Corral::new(env!("CARGO_BIN_EXE_corral"), caller)
            .args(["run", "--policy"])
            .args([&profile])
            .args(["--ca-dir"])
            .args([&ca_dir])
            .args(["--git-token", "localhost=env:TEST_GIT_TOKEN"])
            .args(["--env", "NO_PROXY=", "--env", "no_proxy="])
            .args(["--", "sh", "-c", GIT_SCRIPT, "sh"])
            .args([format!("https://localhost:{}/acme/app.git", https.port())])
            .args([token, &branch])
            .env("TEST_GIT_TOKEN", token)
            // The proxy verifies the git host against this root, as it would the system's.
            .env("SSL_CERT_FILE", roots.to_str().unwrap())
            .current_dir(ws.path())
            .output();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{caller:?}: {stdout}\n{stderr}");
        assert!(stdout.ends_with("done\n"), "{caller:?}: {stdout}");
        assert!(
            !stdout.contains(token) && !stdout.contains("found:"),
            "{caller:?}: {stdout}"
        );
        assert!(
            stdout.contains("SSL_CERT_FILE=/run/corral/ca-bundle.pem"),
            "{stdout}"
        );

        let pushed = std::fs::read_to_string(ws.path().join("pushed")).unwrap();
        assert_eq!(
            server.rev("acme/app.git", &branch).as_deref(),
            Some(pushed.trim())
        );
        let refused = std::fs::read_to_string(ws.path().join("refused")).unwrap();
        assert!(
            refused.contains("! [remote rejected] HEAD -> main (corral: ")
                && refused.contains("/git/push-deny:main"),
            "{caller:?}: {refused}"
        );
        assert_eq!(
            server.rev("acme/app.git", "main").as_deref(),
            Some(main_before.as_str())
        );
        let key = std::fs::metadata(ca_dir.join("ca.key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
            0o600
        );
    }
    let seen = server.authorizations_seen();
    assert!(
        !seen.is_empty() && seen.iter().all(|a| a == &expected),
        "{seen:?}"
    );
}

/// Inside the sandbox: curl through the proxy (its environment points curl there), printing
/// one line per attempt: label, curl's exit code, HTTP status (000: no answer), deny header.
const CURL_SCRIPT: &str = r#"
try() {
  label=$1; shift
  out=$(curl -s -o /dev/null -w '%{http_code} %header{x-corral-deny}' "$@")
  echo "$label $? $out"
}
try allowed-path https://127.0.0.1:$1/public/page
try denied-path https://127.0.0.1:$1/admin
try denied-port http://127.0.0.1:$2/public/page
try loopback-by-name http://localhost:$2/
try metadata http://169.254.169.254/latest/meta-data/
try direct-dns --noproxy '*' https://example.com/
try direct-tcp --noproxy '*' http://127.0.0.1:$1/
"#;

#[test]
fn curl_in_the_sandbox_reaches_only_what_the_profile_allows() {
    use corral_testkit::tls::{TestCa, tls_front};

    let upstream_ca = TestCa::new("test web host CA");
    let https = tls_front(
        &upstream_ca,
        "127.0.0.1",
        std::net::SocketAddr::from(([127, 0, 0, 1], host_server())),
    );
    let other = host_server();
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        // Naming 127.0.0.1 in an allow rule grants that address; `localhost` is allowed by
        // name only, so the loopback address it resolves to stays refused.
        let profile = ws.write(
            caller,
            "web.toml",
            &format!(
                "extends = \"moderate\"\n[network]\n\
                 allow = [\"127.0.0.1:{https}\", \"127.0.0.1:{other}\", \"localhost:{other}\"]\n\
                 deny = [\"127.0.0.1:{other}\"]\n\
                 [[http.allow]]\nhost = \"127.0.0.1\"\nmethods = [\"GET\"]\npaths = [\"/public/*\"]\n",
                https = https.port()
            ),
        );
        let roots = upstream_ca.write_cert(ws.path(), "upstream-ca.pem");
        let out = Corral::new(env!("CARGO_BIN_EXE_corral"), caller)
            .args(["run", "--policy"])
            .args([&profile])
            .args(["--ca-dir"])
            .args([ws.path().join("ca")])
            .args(["--env", "NO_PROXY=", "--env", "no_proxy="])
            .args(["--", "sh", "-c", CURL_SCRIPT, "sh"])
            .args([https.port().to_string(), other.to_string()])
            .env("SSL_CERT_FILE", roots.to_str().unwrap())
            .current_dir(ws.path())
            .output();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = |label: &str| -> Vec<String> {
            let found = stdout
                .lines()
                .find(|l| l.starts_with(&format!("{label} ")))
                .unwrap_or_else(|| panic!("{caller:?}: no {label} in {stdout}"));
            found.split(' ').skip(1).map(str::to_string).collect()
        };
        let expect = |label: &str, exit: &str, status: &str, policy: &str| {
            let got = line(label);
            assert_eq!(got[..2], [exit, status], "{caller:?} {label}: {stdout}");
            let header = got.get(2).map(String::as_str).unwrap_or_default();
            assert!(header.contains(policy), "{caller:?} {label}: {stdout}");
        };
        expect("allowed-path", "0", "200", "");
        expect("denied-path", "0", "403", "default-deny");
        expect(
            "denied-port",
            "0",
            "403",
            &format!("web/network/deny:127.0.0.1:{other}"),
        );
        expect(
            "loopback-by-name",
            "0",
            "403",
            "web/network/non-public-address",
        );
        expect("metadata", "0", "403", "web/network/non-public-address");
        expect("direct-dns", "6", "000", "");
        expect("direct-tcp", "7", "000", "");
    }
}

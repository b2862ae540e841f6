//! A real git smart-HTTP server for tests: `git http-backend` behind a small HTTP server on
//! loopback, serving bare repositories from a temporary directory, pushes enabled.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A running git server; stops when dropped.
pub struct GitServer {
    root: tempfile::TempDir,
    address: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    authorizations: Arc<Mutex<Vec<String>>>,
}

impl GitServer {
    /// Starts a server with no repositories, open to anyone.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a server that answers 401 to any request whose `Authorization` header is not
    /// exactly `authorization` (as a git host requiring a token does).
    pub fn start_requiring(authorization: &str) -> Self {
        Self::start_with(Some(authorization.to_string()))
    }

    fn start_with(required: Option<String>) -> Self {
        let root = tempfile::tempdir().expect("git server root");
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind git server"));
        let address = server
            .server_addr()
            .to_ip()
            .expect("git server listens on TCP");
        let project_root = root.path().to_path_buf();
        let serving = Arc::clone(&server);
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&authorizations);
        let thread = std::thread::spawn(move || {
            for request in serving.incoming_requests() {
                let given = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.to_string());
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(given.clone().unwrap_or_default());
                if required.is_some() && given != required {
                    let challenge = tiny_http::Header::from_bytes(
                        &b"WWW-Authenticate"[..],
                        &b"Basic realm=\"git\""[..],
                    )
                    .expect("static header");
                    let _ = request.respond(tiny_http::Response::empty(401).with_header(challenge));
                    continue;
                }
                serve(&project_root, request);
            }
        });
        Self {
            root,
            address,
            server,
            thread: Some(thread),
            authorizations,
        }
    }

    /// The `Authorization` header of every request served so far (empty when absent).
    pub fn authorizations_seen(&self) -> Vec<String> {
        self.authorizations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Creates a bare repository `name` (e.g. `acme/app.git`) holding one commit on `main`,
    /// and returns its path on disk.
    pub fn create_repo(&self, name: &str) -> PathBuf {
        let bare = self.root.path().join(name);
        std::fs::create_dir_all(&bare).expect("repo dir");
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        let seed = tempfile::tempdir().expect("seed dir");
        git(seed.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(seed.path().join("README.md"), "hello\n").expect("seed file");
        git(seed.path(), &["add", "README.md"]);
        git(seed.path(), &["commit", "-qm", "initial"]);
        git(
            seed.path(),
            &["push", "-q", bare.to_str().expect("utf-8 path"), "main"],
        );
        bare
    }

    /// The clone URL of repository `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.address)
    }

    /// Where the server listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The commit `reference` points to in repository `name`, if it exists.
    pub fn rev(&self, name: &str, reference: &str) -> Option<String> {
        let out = Command::new("git")
            .args(["rev-parse", "--verify", "-q", reference])
            .current_dir(self.root.path().join(name))
            .output()
            .expect("run git rev-parse");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs git with a fixed identity, panicking with its output if it fails.
fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=corral-test",
            "-c",
            "user.email=test@corral.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hands one request to `git http-backend` (CGI) and relays its answer.
fn serve(project_root: &Path, mut request: tiny_http::Request) {
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.to_string())
            .unwrap_or_default()
    };
    let child = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.receivepack")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("REQUEST_METHOD", request.method().as_str())
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("Content-Type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("Content-Encoding"))
        .env("GIT_PROTOCOL", header("Git-Protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        let _ = request.respond(tiny_http::Response::empty(500));
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = std::io::Write::write_all(&mut stdin, &body);
    }
    let output = child
        .wait_with_output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let _ = request.respond(cgi_response(&output));
}

/// Turns CGI output (headers, blank line, body) into an HTTP response.
fn cgi_response(output: &[u8]) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| {
            output
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|at| (at, 2))
        });
    let Some((at, gap)) = split else {
        return tiny_http::Response::from_data(Vec::new()).with_status_code(500);
    };
    let head = String::from_utf8_lossy(&output[..at]);
    let mut response = tiny_http::Response::from_data(output[at + gap..].to_vec());
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("Status") {
            let code = value
                .split(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            response = response.with_status_code(code);
        } else if let Ok(header) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        {
            response.add_header(header);
        }
    }
    response
}

//! `corral up` as a test starts it: the real binary on a free loopback port with a data
//! directory of its own, and the URL and admin token read from what it prints.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How long a gateway may take to print its URL.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A running `corral up`. Killed when dropped.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin token it printed (only on a first start without `CORRAL_ADMIN_TOKEN`).
    pub printed_token: Option<String>,
    /// Everything it printed on stdout up to and including the ready lines.
    pub stdout: String,
}

impl Gateway {
    /// Starts `binary up --listen 127.0.0.1:0 --data-dir DATA_DIR ARGS...` with a clean
    /// environment (HOME pointing into `data_dir`'s parent, plus `envs`) and waits for it to
    /// print its URL.
    pub fn start(binary: &Path, data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let home = data_dir.parent().unwrap_or(data_dir).join("home");
        let mut command = Command::new(binary);
        command
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("spawn corral up");
        let stdout = child.stdout.take().expect("piped stdout");

        // Read lines on a thread so a gateway that never prints cannot hang the test.
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_LIMIT;
        let mut printed = String::new();
        let mut url = None;
        let mut token = None;
        // The URL line comes first; on a first start the admin lines follow at once (they are
        // written together), so after the URL a short wait is enough to see them.
        loop {
            let wait = match url {
                None => deadline.saturating_duration_since(Instant::now()),
                Some(_) => Duration::from_millis(500),
            };
            let Ok(line) = lines.recv_timeout(wait) else {
                break;
            };
            printed.push_str(&line);
            printed.push('\n');
            if let Some(rest) = line.strip_prefix("corral gateway: ") {
                url = Some(rest.trim().to_owned());
            } else if line.starts_with("admin token (shown only now") {
                token = line.rsplit(' ').next().map(str::to_owned);
                break;
            } else if line.starts_with("admin token") {
                break;
            }
        }
        let Some(url) = url else {
            let _ = child.kill();
            panic!("corral up printed no URL within {START_LIMIT:?}; stdout:\n{printed}");
        };
        Gateway {
            child,
            url,
            printed_token: token,
            stdout: printed,
        }
    }

    /// Starts a first-time gateway with its data directory at `root/data` and no extra
    /// arguments or environment.
    pub fn fresh(binary: &Path, root: &Path) -> Self {
        Self::start(binary, &root.join("data"), &[], &[])
    }

    /// The URL of an API path, e.g. `api("/sandboxes")`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    /// Sends SIGTERM and waits (up to 10 s) for the gateway to exit.
    pub fn terminate(self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends `signal` (a name such as `INT`) and waits (up to 10 s) for the gateway to exit.
    pub fn stop_with(mut self, signal: &str) -> ExitStatus {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for corral up") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "corral up did not exit within 10 s of SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A method, a URL, an optional bearer token, extra headers and an optional JSON body;
/// returns the status and the JSON body (Null when empty).
pub fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = ureq::request(method, url);
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.set("Content-Type", "application/json");
    }
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let text = response.into_string().expect("read body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, value)
}

/// POSTs a 200 kB body the way careful clients do (`Expect: 100-continue`) over a raw
/// connection, sending the body only if the server asks for it.
pub fn oversized_post(url: &str, token: &str) -> (u16, Value) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let body = json!({ "name": "x".repeat(200_000) }).to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    assert!(
        !status_line.contains(" 100 "),
        "the server asked for a body it cannot accept: {status_line}"
    );
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut text = vec![0; length];
    reader.read_exact(&mut text).unwrap();
    (status, serde_json::from_slice(&text).unwrap())
}

/// `GET url` with a bearer token.
pub fn get(url: &str, token: &str) -> (u16, Value) {
    call("GET", url, Some(token), &[], None)
}

/// `POST url` with a bearer token and a JSON body.
pub fn post(url: &str, token: &str, body: Value) -> (u16, Value) {
    call("POST", url, Some(token), &[], Some(&body.to_string()))
}

/// Starts sandbox `id` through the API as `token` and asserts it is running; its JSON.
pub fn start_sandbox(gw: &Gateway, token: &str, id: &str) -> Value {
    let start = gw.api(&format!("/sandboxes/{id}/start"));
    let (status, started) = call("POST", &start, Some(token), &[], None);
    assert_eq!(
        (status, &started["state"]),
        (200, &json!("running")),
        "{started}"
    );
    started
}

/// `DELETE url` with a bearer token.
pub fn delete(url: &str, token: &str) -> (u16, Value) {
    call("DELETE", url, Some(token), &[], None)
}

/// Asserts a JSON error with this status and returns its message.
pub fn error_message(response: (u16, Value), status: u16) -> String {
    assert_eq!(response.0, status, "{}", response.1);
    let message = response.1["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message in {}", response.1));
    assert!(response.1["error"]["code"].is_string(), "{}", response.1);
    message.to_owned()
}

/// Admin creates a user; returns the user's first token.
pub fn add_user(gw: &Gateway, admin: &str, email: &str) -> String {
    let (status, body) = post(&gw.api("/users"), admin, json!({ "email": email }));
    assert_eq!(status, 201, "{body}");
    body["token"]["token"]
        .as_str()
        .expect("first token")
        .to_owned()
}

/// Lowercase hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `corral run` processes a gateway started for sandboxes under `data_dir` (the
/// launchers only, not the supervisors they fork), found through `/proc`.
pub fn sandbox_processes(data_dir: &Path) -> Vec<u32> {
    let needle = data_dir.as_os_str().as_encoded_bytes();
    let is_sandbox = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.get(1) == Some(&&b"run"[..])
                && args
                    .iter()
                    .any(|a| a.windows(needle.len()).any(|w| w == needle))
        })
    };
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_ascii_whitespace().nth(1)?.parse().ok()
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_sandbox(*pid) && !parent(*pid).is_some_and(is_sandbox))
        .collect()
}

/// Kills, when dropped, every sandbox process a gateway started under its data directory, so
/// a failed test leaves no sandbox running (they outlive the gateway on purpose).
pub struct SandboxReaper(pub std::path::PathBuf);

impl Drop for SandboxReaper {
    fn drop(&mut self) {
        for pid in sandbox_processes(&self.0) {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// `GET url` with a bearer token; returns the status and the body as text, read to its end
/// (a streamed body until the server ends it).
pub fn get_text(url: &str, token: &str) -> (u16, String) {
    let result = ureq::get(url)
        .set("Authorization", &format!("Bearer {token}"))
        .call();
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = response.status();
    (status, response.into_string().expect("read body"))
}

//! `corral up` as a test starts it: the real binary on a free loopback port with a data
//! directory of its own, and the URL and admin token read from what it prints.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

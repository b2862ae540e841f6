//! `corral up` execs never outlive their request: one that runs out of `timeout_secs` is
//! killed and says so, and one whose client disconnects is killed in the sandbox. Checked
//! through the host's `/proc`, which sees every process of every sandbox.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use corral_testkit::fixture::Fixture;
use corral_testkit::gateway::{call, error_message, post};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// Pids of processes anywhere on the host whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

/// Polls `check` every 20 ms until it holds; panics after 20 s (a hang guard).
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting until {what}");
}

struct Setup {
    fx: Fixture,
    id: String,
}

impl Setup {
    /// A gateway with one running shell sandbox.
    fn new() -> Self {
        let fx = Fixture::fresh(Path::new(BIN));
        let id = fx.create_sandbox(&fx.admin, json!({}));
        let url = fx.gw.api(&format!("/sandboxes/{id}/start"));
        assert_eq!(call("POST", &url, Some(&fx.admin), &[], None).0, 200);
        Setup { fx, id }
    }

    fn exec(&self, body: Value) -> (u16, Value) {
        post(
            &self.fx.gw.api(&format!("/sandboxes/{}/exec", self.id)),
            &self.fx.admin,
            body,
        )
    }
}

#[test]
fn an_exec_that_runs_out_of_time_is_killed_and_says_so() {
    let s = Setup::new();
    let sleeper = ["sleep", "6101"];
    let (status, body) = s.exec(json!({
        "argv": ["sh", "-c", "echo started; sleep 6101; echo never"],
        "timeout_secs": 1,
    }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["timed_out"], true, "{body}");
    assert_eq!(body["exit_code"], 137, "{body}");
    assert_eq!(body["stdout"], "started\n", "{body}");
    wait_until("the timed-out command's children are gone too", || {
        processes_running(&sleeper).is_empty()
    });

    // One that ends in time says it did not time out; the sandbox runs on.
    let (status, body) = s.exec(json!({ "argv": ["echo", "ok"], "timeout_secs": 30 }));
    assert_eq!((status, &body["stdout"]), (200, &json!("ok\n")), "{body}");
    assert_eq!(body["timed_out"], false, "{body}");

    for bad in [json!(0), json!(1_000_000), json!(-1), json!("5")] {
        let response = s.exec(json!({ "argv": ["true"], "timeout_secs": bad }));
        let message = error_message(response, 400);
        assert!(message.contains("timeout_secs"), "{bad}: {message}");
    }
}

#[test]
fn a_client_that_disconnects_kills_its_command_in_the_sandbox() {
    let s = Setup::new();
    let sleeper = ["sleep", "6102"];
    let body = json!({ "argv": ["sh", "-c", "sleep 6102"] }).to_string();
    let address = s.fx.gw.url.strip_prefix("http://").unwrap();
    let mut client = std::net::TcpStream::connect(address).unwrap();
    write!(
        client,
        "POST /api/v1/sandboxes/{}/exec HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        s.id,
        s.fx.admin,
        body.len()
    )
    .unwrap();
    wait_until("the command runs", || {
        !processes_running(&sleeper).is_empty()
    });
    drop(client);
    wait_until("the command is killed", || {
        processes_running(&sleeper).is_empty()
    });
    let (status, body) = s.exec(json!({ "argv": ["echo", "still here"] }));
    assert_eq!(
        (status, &body["stdout"]),
        (200, &json!("still here\n")),
        "{body}"
    );
}

//! `corral up` running sandboxes: start, stop, exec, logs and delete over real HTTP, with
//! real `corral run` sandboxes, and sandboxes that outlive a killed gateway and are adopted
//! (or reconciled as ended) when it restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_testkit::fixture::Fixture;
use corral_testkit::gateway::{
    add_user, call, error_message, get, get_text, post, sandbox_processes,
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// A first-time gateway (see [`Fixture`]) with this file's own helpers.
struct Setup(Fixture);

impl std::ops::Deref for Setup {
    type Target = Fixture;

    fn deref(&self) -> &Fixture {
        &self.0
    }
}

impl Setup {
    fn new() -> Self {
        Setup(Fixture::fresh(Path::new(BIN)))
    }

    /// Kills the gateway with SIGKILL, runs `while_down` with the data directory, and starts
    /// the gateway again on it.
    fn kill_and_restart(self, while_down: impl FnOnce(&Path)) -> Self {
        Setup(self.0.restarted(Path::new(BIN), |gw, data| {
            let status = gw.stop_with("KILL");
            assert!(!status.success(), "{status:?}");
            while_down(data);
        }))
    }

    fn create(&self, token: &str) -> String {
        self.create_sandbox(token, json!({}))
    }

    fn act(&self, token: &str, id: &str, action: &str) -> (u16, Value) {
        let url = self.gw.api(&format!("/sandboxes/{id}/{action}"));
        call("POST", &url, Some(token), &[], None)
    }

    fn exec(&self, token: &str, id: &str, script: &str) -> (u16, Value) {
        let url = self.gw.api(&format!("/sandboxes/{id}/exec"));
        post(&url, token, json!({ "argv": ["sh", "-c", script] }))
    }

    fn state(&self, id: &str) -> String {
        let (status, body) = get(&self.gw.api(&format!("/sandboxes/{id}")), &self.admin);
        assert_eq!(status, 200, "{body}");
        body["state"].as_str().unwrap().to_owned()
    }

    fn processes(&self) -> Vec<u32> {
        sandbox_processes(&self.data())
    }
}

/// Polls `check` every 20 ms until it holds; panics after 20 s (a hang guard, not a
/// performance threshold).
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting until {what}");
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim()
            .starts_with('Z')
    })
}

#[test]
fn a_shell_sandbox_runs_commands_and_keeps_its_workspace_across_stop_and_start() {
    let s = Setup::new();
    let id = s.create(&s.admin);
    error_message(s.exec(&s.admin, &id, "true"), 409);

    let (status, started) = s.act(&s.admin, &id, "start");
    assert_eq!(
        (status, started["state"].as_str()),
        (200, Some("running")),
        "{started}"
    );
    // Starting a running sandbox changes nothing and starts nothing more.
    let (status, again) = s.act(&s.admin, &id, "start");
    assert_eq!(
        (status, again["state"].as_str()),
        (200, Some("running")),
        "{again}"
    );
    assert_eq!(s.processes().len(), 1);

    let (status, ran) = s.exec(&s.admin, &id, "echo hi; id -u; exit 3");
    assert_eq!(status, 200, "{ran}");
    assert_eq!(
        (&ran["exit_code"], &ran["stdout"], &ran["stdout_truncated"]),
        (&json!(3), &json!("hi\n1000\n"), &json!(false))
    );
    let (_, ran) = s.exec(&s.admin, &id, "echo oops >&2; echo kept > /workspace/note");
    assert_eq!(
        (&ran["exit_code"], &ran["stderr"]),
        (&json!(0), &json!("oops\n"))
    );
    assert_eq!(
        std::fs::read_to_string(s.workspace(&id).join("note")).unwrap(),
        "kept\n"
    );
    // Output past 1 MiB is cut, and said to be.
    let (_, big) = s.exec(&s.admin, &id, "head -c 1100000 /dev/zero | tr '\\0' x");
    assert_eq!(big["stdout"].as_str().unwrap().len(), 1024 * 1024);
    assert_eq!(big["stdout_truncated"], true);

    let (status, stopped) = s.act(&s.admin, &id, "stop");
    assert_eq!(
        (status, stopped["state"].as_str()),
        (200, Some("stopped")),
        "{stopped}"
    );
    assert_eq!(s.processes(), Vec::<u32>::new());
    let (status, again) = s.act(&s.admin, &id, "stop");
    assert_eq!(
        (status, again["state"].as_str()),
        (200, Some("stopped")),
        "{again}"
    );
    let message = error_message(s.exec(&s.admin, &id, "true"), 409);
    assert!(message.contains("not running"), "{message}");

    assert_eq!(s.act(&s.admin, &id, "start").0, 200);
    let (_, ran) = s.exec(&s.admin, &id, "cat /workspace/note");
    assert_eq!(ran["stdout"], "kept\n");
    assert_eq!(s.act(&s.admin, &id, "stop").0, 200);
}

#[test]
fn other_users_cannot_start_stop_exec_read_logs_or_delete() {
    let s = Setup::new();
    let alice = add_user(&s.gw, &s.admin, "alice@example.com");
    let bob = add_user(&s.gw, &s.admin, "bob@example.com");
    let id = s.create(&alice);
    assert_eq!(s.act(&alice, &id, "start").0, 200);
    for action in ["start", "stop"] {
        error_message(s.act(&bob, &id, action), 404);
    }
    error_message(s.exec(&bob, &id, "true"), 404);
    error_message(get(&s.gw.api(&format!("/sandboxes/{id}/logs")), &bob), 404);
    let url = s.gw.api(&format!("/sandboxes/{id}?purge=true"));
    error_message(call("DELETE", &url, Some(&bob), &[], None), 404);
    // Nothing happened to it; an admin may act on it.
    assert_eq!(s.state(&id), "running");
    assert_eq!(s.exec(&s.admin, &id, "true").1["exit_code"], 0);
    assert_eq!(s.act(&alice, &id, "stop").0, 200);
}

#[test]
fn an_agent_that_cannot_start_ends_exited_with_its_reason_in_the_logs() {
    // The sandbox's command must fail: opencode must not be installed.
    let installed = ["/usr/bin", "/usr/local/bin", "/bin"]
        .iter()
        .any(|dir| Path::new(dir).join("opencode").exists());
    if installed {
        eprintln!("skipped: opencode is installed, so its agent would start");
        return;
    }
    let s = Setup::new();
    let (status, body) = post(
        &s.gw.api("/sandboxes"),
        &s.admin,
        json!({ "agent": "opencode" }),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(s.act(&s.admin, &id, "start").0, 200);
    wait_until("the sandbox has exited", || s.state(&id) == "exited");
    let (_, record) = get(&s.gw.api(&format!("/sandboxes/{id}")), &s.admin);
    let code = record["exit_code"].as_i64().unwrap();
    assert_ne!(code, 0, "{record}");
    // Following the log of a sandbox that ended returns what there is and ends.
    let (status, logs) = get_text(
        &s.gw.api(&format!("/sandboxes/{id}/logs?follow=true")),
        &s.admin,
    );
    assert_eq!(status, 200);
    assert!(logs.contains("opencode"), "{logs}");
    error_message(
        get(&s.gw.api(&format!("/sandboxes/{id}/logs?tail=1")), &s.admin),
        400,
    );
}

#[test]
fn following_the_logs_ends_when_the_sandbox_stops() {
    let s = Setup::new();
    let id = s.create(&s.admin);
    assert_eq!(s.act(&s.admin, &id, "start").0, 200);
    let url = s.gw.api(&format!("/sandboxes/{id}/logs?follow=true"));
    let token = s.admin.clone();
    let follower = std::thread::spawn(move || get_text(&url, &token));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !follower.is_finished(),
        "follow ended while the sandbox runs"
    );
    assert_eq!(s.act(&s.admin, &id, "stop").0, 200);
    wait_until("the follow ended", || follower.is_finished());
    assert_eq!(follower.join().unwrap().0, 200);
}

#[test]
fn a_sandbox_outlives_a_killed_gateway_and_is_adopted_when_it_restarts() {
    let s = Setup::new();
    let id = s.create(&s.admin);
    assert_eq!(s.act(&s.admin, &id, "start").0, 200);
    let pids = s.processes();
    assert_eq!(pids.len(), 1);
    let s = s.kill_and_restart(|_| {
        assert!(alive(pids[0]), "the sandbox died with the gateway");
    });
    assert_eq!(s.state(&id), "running");
    assert_eq!(s.processes(), pids, "adopted, not started again");
    let (_, ran) = s.exec(&s.admin, &id, "echo still here");
    assert_eq!(ran["stdout"], "still here\n");
    // Starting an adopted sandbox does not start a second one.
    assert_eq!(s.act(&s.admin, &id, "start").1["state"], "running");
    assert_eq!(s.processes(), pids);

    let (status, stopped) = s.act(&s.admin, &id, "stop");
    assert_eq!(
        (status, stopped["state"].as_str()),
        (200, Some("stopped")),
        "{stopped}"
    );
    wait_until("the adopted process is gone", || !alive(pids[0]));
    assert!(s.processes().is_empty());
}

#[test]
fn a_sandbox_that_died_while_the_gateway_was_down_is_reconciled_as_exited() {
    let s = Setup::new();
    let id = s.create(&s.admin);
    assert_eq!(s.act(&s.admin, &id, "start").0, 200);
    let pids = s.processes();
    let control = s.data().join("sandboxes").join(&id).join("control.sock");
    let s = s.kill_and_restart(|_| {
        let killed = std::process::Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", pids[0])])
            .status()
            .unwrap();
        assert!(killed.success());
        wait_until("the sandbox is gone", || !alive(pids[0]));
        assert!(control.exists(), "a killed sandbox leaves its socket");
    });
    assert_eq!(s.state(&id), "exited");
    assert!(!control.exists(), "the stale socket is removed");
    error_message(s.exec(&s.admin, &id, "true"), 409);
    // It starts again as usual.
    assert_eq!(s.act(&s.admin, &id, "start").1["state"], "running");
    assert_eq!(s.exec(&s.admin, &id, "true").1["exit_code"], 0);
    assert_eq!(s.act(&s.admin, &id, "stop").0, 200);
}

/// The one directory under `DATA_DIR/deleted` that holds sandbox `id`'s kept files.
fn kept_files(s: &Setup, id: &str) -> PathBuf {
    let kept: Vec<PathBuf> = std::fs::read_dir(s.data().join("deleted"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{id}."))
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    kept.into_iter().next().unwrap()
}

/// Delete keeps the files on the host (moved to `DATA_DIR/deleted/ID.TIME`) unless purged;
/// either way the id is free, and whoever takes it next (a sandbox's id is its name) starts
/// with an empty workspace, never the deleted sandbox's files.
#[test]
fn delete_stops_the_sandbox_and_keeps_its_workspace_unless_purged() {
    let s = Setup::new();
    let alice = add_user(&s.gw, &s.admin, "alice@example.com");
    let bob = add_user(&s.gw, &s.admin, "bob@example.com");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), "mine").unwrap();

    let named = |token: &str| {
        let (status, body) = post(&s.gw.api("/sandboxes"), token, json!({"name": "shared"}));
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    };
    let kept = named(&alice);
    assert_eq!(s.act(&alice, &kept, "start").0, 200);
    s.exec(&alice, &kept, "echo work > /workspace/file");
    let url = s.gw.api(&format!("/sandboxes/{kept}"));
    assert_eq!(call("DELETE", &url, Some(&alice), &[], None).0, 204);
    assert!(s.processes().is_empty(), "delete stops the sandbox");
    error_message(get(&url, &alice), 404);
    let kept_dir = kept_files(&s, &kept);
    assert_eq!(
        std::fs::read_to_string(kept_dir.join("workspace/file")).unwrap(),
        "work\n"
    );
    let taken = named(&bob);
    assert_eq!(taken, kept);
    assert_eq!(s.act(&bob, &taken, "start").0, 200);
    let (_, listed) = s.exec(&bob, &taken, "ls -A /workspace");
    assert_eq!(listed["stdout"], "", "{listed}");
    assert_eq!(s.act(&bob, &taken, "stop").0, 200);

    let purged = s.create(&s.admin);
    assert_eq!(s.act(&s.admin, &purged, "start").0, 200);
    // The sandbox plants a link to a host directory; purging removes the link, not the
    // directory it points to.
    let script = format!("ln -s {} /workspace/link", outside.path().display());
    assert_eq!(s.exec(&s.admin, &purged, &script).1["exit_code"], 0);
    assert!(s.workspace(&purged).join("link").is_symlink());
    let url = s.gw.api(&format!("/sandboxes/{purged}?purge=true"));
    assert_eq!(call("DELETE", &url, Some(&s.admin), &[], None).0, 204);
    assert!(!s.data().join("sandboxes").join(&purged).exists());
    assert_eq!(
        std::fs::read_to_string(outside.path().join("precious")).unwrap(),
        "mine"
    );
    assert!(kept_dir.join("workspace/file").exists());
}

#[test]
fn sigterm_ends_open_follows_and_execs_and_leaves_the_sandboxes_running() {
    let s = Setup::new();
    let id = s.create(&s.admin);
    assert_eq!(s.act(&s.admin, &id, "start").0, 200);
    let pids = s.processes();
    let follow = s.gw.api(&format!("/sandboxes/{id}/logs?follow=true"));
    let exec = s.gw.api(&format!("/sandboxes/{id}/exec"));
    let token = s.admin.clone();
    let follower = std::thread::spawn({
        let token = token.clone();
        move || get_text(&follow, &token)
    });
    let execer =
        std::thread::spawn(move || post(&exec, &token, json!({ "argv": ["sleep", "600"] })));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!follower.is_finished() && !execer.is_finished());

    let s = Setup(s.0.restarted(Path::new(BIN), |gw, _| {
        assert!(gw.terminate().success(), "SIGTERM is a clean exit");
        assert_eq!(follower.join().unwrap().0, 200);
        error_message(execer.join().unwrap(), 503);
        assert!(alive(pids[0]), "the sandbox outlives the gateway");
    }));
    assert_eq!(s.state(&id), "running");
    assert_eq!(s.act(&s.admin, &id, "stop").1["state"], "stopped");
}

/// Runs `sql` on the gateway's store (while the gateway is down), standing in for a crash at
/// a point no test can hit on purpose.
fn edit_store(data: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(data.join("corral.db")).unwrap();
    conn.execute_batch(sql).unwrap();
}

#[test]
fn a_sandbox_started_but_never_recorded_is_adopted_and_one_without_a_record_is_killed() {
    let s = Setup::new();
    let unrecorded = s.create(&s.admin);
    let deleted = s.create(&s.admin);
    for id in [&unrecorded, &deleted] {
        assert_eq!(s.act(&s.admin, id, "start").0, 200);
    }
    let before = s.processes();
    assert_eq!(before.len(), 2);
    // As if the gateway died after starting `unrecorded` but before recording it, and
    // `deleted` lost its record.
    let s = s.kill_and_restart(|data| {
        edit_store(
            data,
            &format!(
                "UPDATE sandboxes SET state = 'stopped', pid = NULL, start_time = NULL \
                 WHERE id = '{unrecorded}'; DELETE FROM sandboxes WHERE id = '{deleted}';"
            ),
        );
    });
    assert_eq!(s.state(&unrecorded), "running");
    assert_eq!(
        s.exec(&s.admin, &unrecorded, "echo adopted").1["stdout"],
        "adopted\n"
    );
    wait_until("only the recorded sandbox runs", || {
        s.processes().len() == 1
    });
    assert!(before.contains(&s.processes()[0]));
    assert_eq!(s.act(&s.admin, &unrecorded, "stop").1["state"], "stopped");
    wait_until("no sandbox runs", || s.processes().is_empty());
}

#[test]
fn concurrent_starts_make_one_sandbox_process() {
    let s = Setup::new();
    let id = s.create(&s.admin);
    let states: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| s.act(&s.admin, &id, "start")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        states
            .iter()
            .all(|(status, body)| *status == 200 && body["state"] == "running"),
        "{states:?}"
    );
    assert_eq!(s.processes().len(), 1);
    assert_eq!(s.act(&s.admin, &id, "stop").1["state"], "stopped");
}

#[test]
fn a_gateway_killed_during_an_exec_restarts_with_the_sandbox_and_its_workspace() {
    let s = Setup::new();
    let id = s.create(&s.admin);
    assert_eq!(s.act(&s.admin, &id, "start").0, 200);
    let exec = s.gw.api(&format!("/sandboxes/{id}/exec"));
    let token = s.admin.clone();
    let script = "echo before > /workspace/f; sleep 600";
    // The client sees the connection drop when the gateway dies: a panic in this thread.
    let pending =
        std::thread::spawn(move || post(&exec, &token, json!({ "argv": ["sh", "-c", script] })));
    let file = s.workspace(&id).join("f");
    wait_until("the exec has begun", || file.exists());
    let pids = s.processes();
    let s = s.kill_and_restart(|_| {});
    assert!(pending.join().is_err(), "the exec's connection dropped");
    assert_eq!(s.state(&id), "running");
    assert_eq!(s.processes(), pids);
    assert_eq!(
        s.exec(&s.admin, &id, "cat /workspace/f").1["stdout"],
        "before\n"
    );
    assert_eq!(s.act(&s.admin, &id, "stop").1["state"], "stopped");
}

#[test]
fn a_stop_the_killed_gateway_began_is_finished_after_it_restarts() {
    let s = Setup::new();
    let still_running = s.create(&s.admin);
    let already_gone = s.create(&s.admin);
    for id in [&still_running, &already_gone] {
        assert_eq!(s.act(&s.admin, id, "start").0, 200);
    }
    let gone_pid = s.processes().into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(already_gone.as_str()))
    });
    // As if the gateway died right after recording both stops: one sandbox had already
    // ended, the other had not.
    let s = s.kill_and_restart(|data| {
        edit_store(data, "UPDATE sandboxes SET state = 'stopping';");
        let killed = std::process::Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", gone_pid.unwrap())])
            .status()
            .unwrap();
        assert!(killed.success());
    });
    assert_eq!(s.state(&already_gone), "stopped");
    wait_until("the begun stop is finished", || {
        s.state(&still_running) == "stopped"
    });
    wait_until("no sandbox runs", || s.processes().is_empty());
}

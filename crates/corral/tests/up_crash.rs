//! A gateway killed with SIGKILL in the middle of a create (and first start), an exec or a
//! stop, at a different moment on each round, restarts with every sandbox and workspace
//! intact and reconciled: each sandbox's state is true (running exactly when one `corral run`
//! runs for it), no sandbox process is orphaned or doubled, every workspace keeps its files,
//! and an interrupted stop ends stopped or running, never both or neither.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_testkit::Gateway;
use corral_testkit::gateway::{SandboxReaper, call, get, post, sandbox_processes};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// How long after the request is sent the gateway is killed, one round each: from before it
/// has read the request to after it has answered.
const KILL_AFTER_MS: [u64; 6] = [0, 3, 10, 25, 60, 150];

/// Polls `check` every 20 ms until it holds; panics after 30 s (a hang guard).
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting until {what}");
}

struct Setup {
    gw: Option<Gateway>,
    args: Vec<String>,
    _reaper: SandboxReaper,
    admin: String,
    root: tempfile::TempDir,
    /// Each sandbox made so far, with the line its workspace's `marker` file holds.
    markers: BTreeMap<String, String>,
}

impl Setup {
    fn new() -> Self {
        Self::with_config("")
    }

    /// A gateway started (and restarted) with this config file.
    fn with_config(config: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("gateway.toml");
        std::fs::write(&file, config).unwrap();
        let args = vec!["--config".to_owned(), file.to_string_lossy().into_owned()];
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let gw = Gateway::start(Path::new(BIN), &root.path().join("data"), &arg_refs, &[]);
        let admin = gw.printed_token.clone().unwrap();
        Setup {
            gw: Some(gw),
            args,
            _reaper: SandboxReaper(root.path().join("data")),
            admin,
            root,
            markers: BTreeMap::new(),
        }
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn api(&self, path: &str) -> String {
        self.gw.as_ref().unwrap().api(path)
    }

    fn act(&self, id: &str, action: &str) -> (u16, Value) {
        let url = self.api(&format!("/sandboxes/{id}/{action}"));
        call("POST", &url, Some(&self.admin), &[], None)
    }

    fn exec(&self, id: &str, script: &str) -> (u16, Value) {
        let url = self.api(&format!("/sandboxes/{id}/exec"));
        post(&url, &self.admin, json!({ "argv": ["sh", "-c", script] }))
    }

    /// A running sandbox with a marker file in its workspace.
    fn running_sandbox(&mut self) -> String {
        let (status, body) = post(&self.api("/sandboxes"), &self.admin, json!({}));
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(self.act(&id, "start").1["state"], "running");
        let marker = format!("marker of {id}");
        let (status, ran) = self.exec(&id, &format!("echo '{marker}' > /workspace/marker"));
        assert_eq!((status, &ran["exit_code"]), (200, &json!(0)), "{ran}");
        self.markers.insert(id.clone(), marker);
        id
    }

    /// Runs `request` (given the gateway's API URL and the admin token) on a thread, kills
    /// the gateway `after` it was sent, and starts it again. The request's own outcome does
    /// not matter: it may have been answered, or cut off.
    fn kill_during(
        &mut self,
        after: Duration,
        request: impl FnOnce(String, String) + Send + 'static,
    ) {
        let (url, token) = (self.api(""), self.admin.clone());
        let pending = std::thread::spawn(move || request(url, token));
        std::thread::sleep(after);
        let status = self.gw.take().unwrap().stop_with("KILL");
        assert!(!status.success(), "{status:?}");
        // A cut-off request panics in its thread; that is expected.
        let _ = pending.join();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.gw = Some(Gateway::start(Path::new(BIN), &self.data(), &args, &[]));
    }

    /// Live `corral run` launchers by sandbox id (zombies, which have ended, are not counted).
    fn launchers(&self) -> BTreeMap<String, Vec<u32>> {
        let mut by_id: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for pid in sandbox_processes(&self.data()) {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim()
                .starts_with('Z')
            {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let control = args
                .windows(2)
                .find(|pair| pair[0] == "--control-socket")
                .map(|pair| PathBuf::from(&pair[1]))
                .unwrap_or_default();
            let id = control
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            by_id.entry(id).or_default().push(pid);
        }
        by_id
    }

    /// Every recorded sandbox's state, once no stop is still being finished.
    fn states(&self) -> BTreeMap<String, String> {
        let mut states = BTreeMap::new();
        wait_until("no stop is in progress", || {
            let (status, list) = get(&self.api("/sandboxes"), &self.admin);
            assert_eq!(status, 200, "{list}");
            states = list
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let field = |k: &str| s[k].as_str().unwrap().to_owned();
                    (field("id"), field("state"))
                })
                .collect();
            states.values().all(|s| s != "stopping")
        });
        states
    }

    /// The invariants after a restart: states match processes one to one, no process runs
    /// without a record, every workspace holds its marker (read inside the sandbox when it
    /// runs), and every sandbox still starts, execs and stops.
    fn assert_reconciled(&mut self, round: &str) {
        let states = self.states();
        let launchers = self.launchers();
        for (id, pids) in &launchers {
            assert!(
                states.contains_key(id),
                "{round}: orphan {pids:?} for {id:?}"
            );
            assert_eq!(pids.len(), 1, "{round}: {id} has processes {pids:?}");
        }
        for (id, state) in &states {
            let runs = launchers.contains_key(id);
            assert!(
                matches!(state.as_str(), "running" | "stopped" | "exited"),
                "{round}: {id} is {state}"
            );
            assert_eq!(state == "running", runs, "{round}: {id} is {state}");
        }
        // A create cut off before its marker was written has none: it gets one now.
        for id in states.keys() {
            if self.act(id, "start").1["state"] != "running" {
                panic!("{round}: {id} does not start again");
            }
            let (status, ran) = self.exec(id, "cat /workspace/marker");
            let log = self.data().join("sandboxes").join(id).join("agent.log");
            let log = std::fs::read_to_string(log).unwrap_or_default();
            assert_eq!(
                status,
                200,
                "{round}: {ran}\nlog: {log}\n{:?}",
                self.launchers()
            );
            match self.markers.get(id) {
                Some(marker) => assert_eq!(ran["stdout"], format!("{marker}\n"), "{round}"),
                None => {
                    let marker = format!("marker of {id}");
                    let (_, ran) = self.exec(id, &format!("echo '{marker}' > /workspace/marker"));
                    assert_eq!(ran["exit_code"], 0, "{round}: {ran}");
                    self.markers.insert(id.clone(), marker);
                }
            }
        }
        for (id, marker) in &self.markers {
            let file = self
                .data()
                .join("sandboxes")
                .join(id)
                .join("workspace/marker");
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                format!("{marker}\n"),
                "{round}"
            );
        }
        assert_eq!(
            self.launchers().len(),
            states.len(),
            "{round}: one process per sandbox"
        );
    }

    /// Stops every sandbox (between rounds, so each round starts from the same place).
    fn stop_all(&self) {
        for id in self.markers.keys() {
            let (status, body) = self.act(id, "stop");
            assert_eq!((status, &body["state"]), (200, &json!("stopped")), "{body}");
        }
        wait_until("no sandbox runs", || self.launchers().is_empty());
    }
}

#[test]
fn a_gateway_killed_during_create_and_first_start_restarts_reconciled() {
    let mut s = Setup::new();
    for (round, ms) in KILL_AFTER_MS.into_iter().enumerate() {
        s.kill_during(Duration::from_millis(ms), move |api, token| {
            let (_, body) = post(&format!("{api}/sandboxes"), &token, json!({}));
            let id = body["id"].as_str().unwrap().to_owned();
            let start = format!("{api}/sandboxes/{id}/start");
            call("POST", &start, Some(&token), &[], None);
        });
        s.assert_reconciled(&format!("create round {round} ({ms} ms)"));
        s.stop_all();
    }
}

#[test]
fn a_gateway_killed_during_an_exec_restarts_reconciled() {
    let mut s = Setup::new();
    let id = s.running_sandbox();
    for (round, ms) in KILL_AFTER_MS.into_iter().enumerate() {
        let target = id.clone();
        s.kill_during(Duration::from_millis(ms), move |api, token| {
            let url = format!("{api}/sandboxes/{target}/exec");
            let script = format!("echo {round} >> /workspace/rounds; sleep 0.1");
            post(&url, &token, json!({ "argv": ["sh", "-c", script] }));
        });
        s.assert_reconciled(&format!("exec round {round} ({ms} ms)"));
    }
    s.stop_all();
}

#[test]
fn a_gateway_killed_during_a_stop_restarts_with_it_stopped_or_running() {
    let mut s = Setup::new();
    let id = s.running_sandbox();
    for (round, ms) in KILL_AFTER_MS.into_iter().enumerate() {
        let target = id.clone();
        s.kill_during(Duration::from_millis(ms), move |api, token| {
            let url = format!("{api}/sandboxes/{target}/stop");
            call("POST", &url, Some(&token), &[], None);
        });
        // assert_reconciled starts it again for the next round.
        s.assert_reconciled(&format!("stop round {round} ({ms} ms)"));
    }
    s.stop_all();
}

#[test]
fn a_gateway_killed_during_a_repo_sessions_first_clone_clones_again_on_the_next_start() {
    let server = corral_testkit::GitServer::start();
    server.create_repo("acme/app.git");
    let port = server.address().port();
    let profiles = tempfile::tempdir().unwrap();
    let profile = profiles.path().join("local.toml");
    std::fs::write(
        &profile,
        format!(
            "extends = \"restricted\"\n[network]\nallow = [\"localhost:{port}\"]\n\
             allow_private = [\"localhost\"]\n"
        ),
    )
    .unwrap();
    let mut s = Setup::with_config(&format!("[profiles]\nlocal = \"{}\"\n", profile.display()));
    let repo = format!("http://localhost:{port}/acme/app.git");
    for (round, ms) in KILL_AFTER_MS.into_iter().enumerate() {
        let repo = repo.clone();
        s.kill_during(Duration::from_millis(ms * 4), move |api, token| {
            let branch = format!("ai/r{round}");
            let body = json!({ "repo": repo, "branch": branch, "profile": "local" });
            let (_, body) = post(&format!("{api}/sandboxes"), &token, body);
            let id = body["id"].as_str().unwrap().to_owned();
            let start = format!("{api}/sandboxes/{id}/start");
            call("POST", &start, Some(&token), &[], None);
        });
        let round = format!("clone round {round} ({} ms)", ms * 4);
        s.assert_reconciled(&round);
        // Every session holds its whole checkout, on its branch, and nothing else.
        let (_, list) = get(&s.api("/sandboxes"), &s.admin);
        for sandbox in list.as_array().unwrap() {
            let id = sandbox["id"].as_str().unwrap();
            let (status, ran) = s.exec(
                id,
                "git branch --show-current; cat README.md; git status --porcelain",
            );
            assert_eq!(status, 200, "{round}: {ran}");
            assert_eq!(
                ran["stdout"],
                format!(
                    "{}\nhello\n?? marker\n",
                    sandbox["branch"].as_str().unwrap()
                ),
                "{round}: {ran}"
            );
        }
        s.stop_all();
    }
}

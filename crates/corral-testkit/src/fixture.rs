//! The set-up most gateway tests share: a first-time `corral up` in a temporary directory of
//! its own, its admin token, and a reaper for the sandboxes it starts.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::gateway::{Gateway, SandboxReaper, post};

/// A first-time gateway and its admin token; its sandboxes are killed when this is dropped.
pub struct Fixture {
    // Dropped first: the gateway, then its sandboxes, then the directory.
    /// The gateway.
    pub gw: Gateway,
    _reaper: SandboxReaper,
    /// The admin token it printed.
    pub admin: String,
    /// The temporary directory: the data directory is `data` in it.
    pub root: tempfile::TempDir,
}

impl Fixture {
    /// Starts `binary up` on a fresh data directory.
    pub fn fresh(binary: &Path) -> Self {
        let root = tempfile::tempdir().unwrap();
        let gw = Gateway::fresh(binary, root.path());
        let admin = gw.printed_token.clone().unwrap();
        let reaper = SandboxReaper(root.path().join("data"));
        Fixture {
            gw,
            _reaper: reaper,
            admin,
            root,
        }
    }

    /// The gateway's data directory.
    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Sandbox `id`'s workspace on the host.
    pub fn workspace(&self, id: &str) -> PathBuf {
        self.data().join("sandboxes").join(id).join("workspace")
    }

    /// Creates a sandbox from `body` as `token`'s user (asserting 201); returns its id.
    pub fn create_sandbox(&self, token: &str, body: Value) -> String {
        let (status, body) = post(&self.gw.api("/sandboxes"), token, body);
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Hands the gateway to `while_down` (which stops it as the test needs, and may look at
    /// the data directory meanwhile), then starts `binary up` again on the same directory.
    pub fn restarted(self, binary: &Path, while_down: impl FnOnce(Gateway, &Path)) -> Self {
        let Fixture {
            gw,
            _reaper,
            admin,
            root,
        } = self;
        let data = root.path().join("data");
        while_down(gw, &data);
        Fixture {
            gw: Gateway::start(binary, &data, &[], &[]),
            _reaper,
            admin,
            root,
        }
    }
}

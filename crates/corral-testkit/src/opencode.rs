//! The real opencode (npm `opencode-ai`, installed under `target/npm` by scripts/test), put
//! where a sandbox can run it.
//!
//! A sandbox does not see every host path: its `/tmp` is its own, so a checkout under `/tmp`
//! (as CI may use) is invisible even in the `full` profile. Tests therefore place the binary
//! in the sandbox's workspace on the host, and run it from there inside.

use std::path::{Path, PathBuf};

/// Where the binary placed by [`place_in_workspace`] is inside the sandbox.
pub const IN_SANDBOX: &str = "/workspace/.opencode-bin/opencode";

/// The installed binary on the host; panics saying how to install it when it is missing.
pub fn installed() -> PathBuf {
    let bin =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/npm/node_modules/.bin/opencode");
    bin.canonicalize().unwrap_or_else(|_| {
        panic!(
            "{} is missing: run scripts/test, or npm install --prefix target/npm opencode-ai@1.18.33",
            bin.display()
        )
    })
}

/// Links (or, across file systems, copies) the installed binary into `workspace`, a
/// sandbox's workspace directory on the host, at the place [`IN_SANDBOX`] names.
pub fn place_in_workspace(workspace: &Path) {
    let dir = workspace.join(".opencode-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("opencode");
    let source = installed();
    if std::fs::hard_link(&source, &target).is_err() {
        std::fs::copy(&source, &target).unwrap();
    }
}

//! Where a sandbox's usage records are, for the gateway to follow: its audit log (every
//! policy decision made for it, by its egress proxy and by the gateway's inference router)
//! and its traffic log (the bytes each egress connection carried), both JSON lines written
//! by processes outside the sandbox.

impl super::Runtime {
    /// Sandbox `id`'s audit log (its policy decisions) and traffic log (its egress bytes).
    pub fn usage_logs(&self, id: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let paths = self.paths(id);
        (paths.audit(), paths.traffic())
    }

    /// Where every sandbox's directory is, named by its id.
    pub fn sandboxes_dir(&self) -> &std::path::Path {
        &self.sandboxes_dir
    }
}

impl super::SandboxPaths {
    /// Where `corral run`'s egress proxy writes each connection's byte counts.
    pub(super) fn traffic(&self) -> std::path::PathBuf {
        self.dir.join("egress.jsonl")
    }
}

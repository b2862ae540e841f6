//! Agent templates: what a sandbox runs and which ports it serves. Three are built in
//! (`shell`, `opencode`, `code-server`); the operator adds more as `[agents.NAME]` in the
//! config file. A caller picks a template by name, or gives a custom command with its ports.
//!
//! Servers bind 127.0.0.1 inside the sandbox: its network namespace has only loopback, and the
//! gateway reaches the ports through the sandbox's ingress socket. code-server runs with its
//! own auth off because the gateway authenticates every request to a session host.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The name a sandbox with a caller-given command records as its agent.
pub const CUSTOM: &str = "custom";

/// Most ports a template or a sandbox may declare.
pub const MAX_PORTS: usize = 16;

/// One agent template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTemplate {
    /// The command and its arguments, run in the sandbox's workspace.
    pub command: Vec<String>,
    /// Ports the agent serves on the sandbox's loopback.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// The port `<id><suffix>.<domain>` reaches (default: the first of `ports`).
    #[serde(default)]
    pub primary_port: Option<u16>,
    /// Variables added to the agent's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// One line for people choosing an agent.
    #[serde(default)]
    pub description: String,
}

impl AgentTemplate {
    /// The port its session host reaches: `primary_port`, else the first port, else none.
    pub fn primary(&self) -> Option<u16> {
        self.primary_port.or_else(|| self.ports.first().copied())
    }

    /// Checks the template (a config file's): a command, valid ports, a primary among them,
    /// sane environment names. Returns a sentence naming what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.command.first().is_none_or(|c| c.is_empty()) {
            return Err("command must name a program".into());
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err("command must not contain NUL".into());
        }
        check_ports(&self.ports)?;
        if let Some(primary) = self.primary_port
            && !self.ports.contains(&primary)
        {
            return Err(format!("primary_port {primary} is not one of ports"));
        }
        for (name, value) in &self.env {
            let valid_name = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid_name || value.contains('\0') {
                return Err(format!("env {name:?} is not a valid variable"));
            }
        }
        Ok(())
    }
}

/// Ports must be 1..=65535, distinct, and at most [`MAX_PORTS`].
pub fn check_ports(ports: &[u16]) -> Result<(), String> {
    if ports.len() > MAX_PORTS {
        return Err(format!("at most {MAX_PORTS} ports"));
    }
    if ports.contains(&0) {
        return Err("port 0 is not a port".into());
    }
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != ports.len() {
        return Err("ports must not repeat".into());
    }
    Ok(())
}

/// The built-in templates.
pub fn builtins() -> BTreeMap<String, AgentTemplate> {
    let template = |command: &[&str], port: Option<u16>, description: &str| AgentTemplate {
        command: command.iter().map(|s| s.to_string()).collect(),
        ports: port.into_iter().collect(),
        primary_port: port,
        env: BTreeMap::new(),
        description: description.into(),
    };
    BTreeMap::from([
        (
            "shell".to_owned(),
            template(
                // Nothing to serve: something that idles until stopped. `wait` (unlike a
                // foreground sleep) lets the TERM trap run at once.
                &[
                    "sh",
                    "-c",
                    "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done",
                ],
                None,
                "No server: a sandbox to exec and attach terminals into",
            ),
        ),
        (
            "opencode".to_owned(),
            template(
                &[
                    "opencode",
                    "serve",
                    "--hostname",
                    "127.0.0.1",
                    "--port",
                    "4096",
                ],
                Some(4096),
                "opencode's server and web UI on port 4096",
            ),
        ),
        (
            "code-server".to_owned(),
            template(
                &[
                    "code-server",
                    "--auth",
                    "none",
                    "--bind-addr",
                    "127.0.0.1:8080",
                ],
                Some(8080),
                "VS Code in the browser (code-server) on port 8080; the gateway authenticates",
            ),
        ),
    ])
}

/// Every template a gateway offers: the built-ins, then the configured ones (which may not
/// reuse a built-in's name; the config check refuses that).
pub fn catalog(configured: &BTreeMap<String, AgentTemplate>) -> BTreeMap<String, AgentTemplate> {
    let mut all = builtins();
    all.extend(configured.iter().map(|(k, v)| (k.clone(), v.clone())));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid_and_serve_where_the_docs_say() {
        let all = builtins();
        for (name, template) in &all {
            template.check().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(all["shell"].primary(), None);
        assert_eq!(all["opencode"].primary(), Some(4096));
        assert_eq!(all["code-server"].primary(), Some(8080));
    }

    #[test]
    fn a_bad_template_is_named() {
        let good = AgentTemplate {
            command: vec!["srv".into()],
            ports: vec![3000, 3001],
            primary_port: Some(3001),
            env: BTreeMap::from([("MODE".into(), "dev".into())]),
            description: String::new(),
        };
        assert_eq!(good.check(), Ok(()));
        assert_eq!(good.primary(), Some(3001));
        let cases = [
            AgentTemplate {
                command: vec![],
                ..good.clone()
            },
            AgentTemplate {
                primary_port: Some(9),
                ..good.clone()
            },
            AgentTemplate {
                ports: vec![1, 1],
                ..good.clone()
            },
            AgentTemplate {
                env: BTreeMap::from([("A=B".into(), "x".into())]),
                ..good.clone()
            },
        ];
        for bad in cases {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}

//! `corral run`: a one-shot sandbox around one command, like `bwrap` or `srt`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use corral_policy::{HostRule, Profile};

use crate::egress::{self, InProcessEgress, InterceptionSetup};
use corral_sandbox::{Identity, Limits, PlanInput, launch};

/// Exit status when corral itself failed (the command's own statuses pass through).
pub const CORRAL_FAILED: u8 = 125;

/// Unprivileged host uid/gid sandboxes run as when corral runs as root.
const DEFAULT_HOST_ID: u32 = 65534;

/// Toolchain directories in a home that go on `PATH` when the profile makes them readable.
const TOOLCHAIN_BIN_DIRS: &[&str] = &["~/.cargo/bin", "~/.local/bin", "~/.pyenv/shims"];

/// Terminal and locale settings passed through from the caller.
const INHERITED_VARIABLES: &[&str] = &["TERM", "COLORTERM", "LANG", "LC_ALL", "TZ"];

/// Arguments of `corral run`.
#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Built-in profile: full, moderate or restricted.
    #[arg(
        long,
        env = "CORRAL_PROFILE",
        default_value = "restricted",
        conflicts_with = "policy"
    )]
    profile: String,
    /// A profile file (TOML) instead of a built-in profile.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Directory mounted read-write at /workspace (default: the current directory).
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// A host directory used as the sandbox's home (read-write, kept after the run) instead
    /// of a fresh tmpfs.
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Bind a unix socket at PATH through which the host reaches servers inside the sandbox:
    /// a connection that starts with a port number and a newline (`8080\n`) is carried to
    /// that port on the sandbox's loopback. Nothing listens on the host's network.
    #[arg(long, value_name = "PATH")]
    ingress_socket: Option<PathBuf>,
    /// Bind a unix socket at PATH through which host-side callers run more commands in this
    /// running sandbox, under the same restrictions (corral_sandbox::control).
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
    /// Make a host path readable (at the same path) for this run.
    #[arg(long = "read", value_name = "PATH")]
    read: Vec<PathBuf>,
    /// Make a host path writable (at the same path) for this run.
    #[arg(long = "write", value_name = "PATH")]
    write: Vec<PathBuf>,
    /// Hide a host path from the sandbox for this run (it appears empty or unreadable), on top
    /// of the profile's hidden paths and corral's own state, which is always hidden.
    #[arg(long = "hide", value_name = "PATH")]
    hide: Vec<PathBuf>,
    /// Pass a variable: NAME=VALUE, or NAME to pass the caller's value.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Allow connections to HOST[:PORT] (or *.domain, ports as 22,443) for this run.
    #[arg(long = "allow-net", value_name = "HOST[:PORT]")]
    allow_net: Vec<String>,
    /// Append every egress decision to this JSON-lines file
    /// (default: $XDG_STATE_HOME/corral/audit.jsonl or ~/.local/state/corral/audit.jsonl).
    #[arg(long, env = "CORRAL_AUDIT_LOG", value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Memory limit, e.g. 2G or 512M (overrides the profile).
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// CPU limit in cores, e.g. 1.5 (overrides the profile).
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Maximum number of processes and threads (overrides the profile).
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// Host uid the sandbox runs as when corral runs as root.
    #[arg(long, env = "CORRAL_HOST_UID", default_value_t = DEFAULT_HOST_ID)]
    host_uid: u32,
    /// Host gid the sandbox runs as when corral runs as root.
    #[arg(long, env = "CORRAL_HOST_GID", default_value_t = DEFAULT_HOST_ID)]
    host_gid: u32,
    /// A git token the egress proxy adds to requests to HOST (HOST=env:VARIABLE or
    /// HOST=file:PATH, read on the host); the sandbox never sees it. Pushes stay subject to
    /// the profile's [git] rules.
    #[arg(long = "git-token", value_name = "HOST=SOURCE")]
    git_token: Vec<String>,
    /// Where corral keeps its TLS interception CA
    /// (default: $XDG_DATA_HOME/corral/ca or ~/.local/share/corral/ca).
    #[arg(long, env = "CORRAL_CA_DIR", value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// Use the egress proxy listening on this unix socket (a gateway's, say) instead of
    /// corral's own: programs inside reach it as http://127.0.0.1:3128.
    #[arg(long, value_name = "PATH")]
    egress_socket: Option<PathBuf>,
    /// The unix socket of a gateway's inference router for this sandbox: the egress proxy
    /// relays http://127.0.0.1:3128/inference/... there (the gateway passes it).
    #[arg(long, value_name = "PATH")]
    inference_socket: Option<PathBuf>,
    /// Append the bytes each egress connection carried (JSON lines, written when it ends) to
    /// this file (a gateway passes it; by default they are not recorded).
    #[arg(long, value_name = "FILE")]
    traffic_log: Option<PathBuf>,
    /// Print the sandbox plan as JSON instead of running it.
    #[arg(long)]
    dry_run: bool,
    /// The command and its arguments.
    #[arg(value_name = "CMD")]
    command: Vec<String>,
}

/// What `corral run` takes from the caller's environment, read once at the edge.
struct Caller {
    cwd: PathBuf,
    home: Option<PathBuf>,
    variables: Vec<(String, String)>,
}

impl Caller {
    fn from_process() -> anyhow::Result<Self> {
        Ok(Self {
            cwd: std::env::current_dir().context("cannot read the current directory")?,
            home: std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|h| h.is_absolute()),
            variables: std::env::vars().collect(),
        })
    }

    fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `corral run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let caller = Caller::from_process()?;
    let mut profile = match &args.policy {
        Some(path) => Profile::load(path)?,
        None => Profile::builtin(&args.profile)?,
    };
    for rule in &args.allow_net {
        let parsed = rule
            .parse::<HostRule>()
            .map_err(|e| anyhow::anyhow!("--allow-net {rule}: {e}"))?;
        profile.network.allow.push(parsed);
    }
    let mut warn = |warning: &str| eprintln!("corral: warning: {warning}");
    let mut input = plan_input(&args, &profile, &caller)?;
    let mut egress_warnings = Vec::new();
    let egress = match &args.egress_socket {
        None if !profile.network.allow.is_empty() && !args.dry_run => {
            let reloadable = args.policy.as_deref().filter(|_| args.allow_net.is_empty());
            let audit_log = args.audit_log.clone().or_else(|| {
                egress::default_audit_log(caller.variable("XDG_STATE_HOME"), caller.home.as_deref())
            });
            let sandbox_id = format!("run-{}", std::process::id());
            let setup = InterceptionSetup {
                ca_dir: args.ca_dir.clone().or_else(|| {
                    egress::default_ca_dir(caller.variable("XDG_DATA_HOME"), caller.home.as_deref())
                }),
                credentials: egress::git_tokens(&args.git_token, |name| {
                    caller.variable(name).map(str::to_string)
                })?,
                inference_socket: args.inference_socket.as_ref().map(|p| caller.cwd.join(p)),
                traffic_log: args.traffic_log.as_ref().map(|p| caller.cwd.join(p)),
            };
            let egress = InProcessEgress::prepare(
                profile,
                reloadable,
                &sandbox_id,
                audit_log.as_deref(),
                setup,
                &mut egress_warnings,
            )?;
            input.egress_socket = Some(egress.socket().to_path_buf());
            input.egress_handoff = true;
            input.ca_bundle = egress.ca_bundle().map(Path::to_path_buf);
            input.ca_certificate = egress.ca_certificate();
            Some(egress)
        }
        _ => None,
    };
    if egress.is_none() && !args.git_token.is_empty() && !args.dry_run {
        bail!(
            "--git-token needs corral's own egress proxy, which runs only when the profile allows \
             some network (add --allow-net HOST) and --egress-socket is not given"
        );
    }
    let plan = input.build()?;
    for warning in &egress_warnings {
        warn(warning.as_str());
    }
    if args.dry_run {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut running = None;
    let code = launch::run_then(
        &plan,
        &mut warn,
        Box::new(|| running = egress.map(InProcessEgress::start)),
    )?;
    drop(running);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(CORRAL_FAILED)))
}

fn plan_input(args: &RunArgs, profile: &Profile, caller: &Caller) -> anyhow::Result<PlanInput> {
    let fs = &profile.filesystem;
    let mut read_only = fs.read_only.clone();
    read_only.extend(absolute_all(&args.read, &caller.cwd)?);
    let mut read_write = fs.read_write.clone();
    read_write.extend(absolute_all(&args.write, &caller.cwd)?);
    let path_prepend = TOOLCHAIN_BIN_DIRS
        .iter()
        .filter(|dir| read_only.iter().any(|r| dir.starts_with(r.as_str())))
        .map(|dir| dir.to_string())
        .collect();
    Ok(PlanInput {
        command: args.command.clone(),
        workspace: args.workspace.clone().unwrap_or_else(|| caller.cwd.clone()),
        caller_cwd: Some(caller.cwd.clone()),
        caller_home: caller.home.clone(),
        read_only: read_only.clone(),
        read_write,
        hidden: fs
            .hidden
            .iter()
            .cloned()
            .chain(corral_private_paths(args, caller))
            .collect(),
        protected: fs.protected.clone(),
        exec_allow: profile.exec.allow.clone(),
        home_writable: fs.home_writable,
        path_prepend,
        extra_env: environment(args, caller, &read_only)?,
        limits: limits(args, profile)?,
        identity: Some(Identity::for_caller(args.host_uid, args.host_gid)),
        hostname: None,
        egress_socket: args.egress_socket.as_ref().map(|p| caller.cwd.join(p)),
        // Set once corral's own proxy is set up; a foreign socket gets a stream per connection.
        egress_handoff: false,
        ca_bundle: None,
        ca_certificate: None,
        ingress_socket: args.ingress_socket.as_ref().map(|p| caller.cwd.join(p)),
        control_socket: args.control_socket.as_ref().map(|p| caller.cwd.join(p)),
        persistent_home: args.home.as_ref().map(|p| caller.cwd.join(p)),
    })
}

/// Host paths that hold corral's own state and secrets, hidden in every sandbox whatever its
/// profile makes readable: the CLI's credentials and the gateway's config
/// (`$XDG_CONFIG_HOME/corral`), the default data dir (a gateway's store, CA key and every
/// other sandbox's workspace: `$XDG_DATA_HOME/corral`), the audit log's dir, the CA dir in
/// use, each `--git-token` file, and every `--hide` path. Both the XDG and the `~/.…`
/// locations are hidden, since either may be in use by another corral process.
fn corral_private_paths(args: &RunArgs, caller: &Caller) -> Vec<String> {
    let mut paths = Vec::new();
    for (variable, under_home) in [
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
    ] {
        if let Some(base) = caller.variable(variable).filter(|d| d.starts_with('/')) {
            paths.push(Path::new(base).join("corral"));
        }
        if let Some(home) = &caller.home {
            paths.push(home.join(under_home).join("corral"));
        }
    }
    paths.extend(args.ca_dir.iter().cloned());
    paths.extend(
        args.git_token
            .iter()
            .filter_map(|spec| spec.split_once("=file:"))
            .map(|(_, file)| PathBuf::from(file)),
    );
    paths.extend(args.hide.iter().cloned());
    // Missing paths are fine: the plan hides what exists.
    paths
        .iter()
        .map(|p| caller.cwd.join(p).to_string_lossy().into_owned())
        .collect()
}

fn absolute_all(paths: &[PathBuf], cwd: &Path) -> anyhow::Result<Vec<String>> {
    paths
        .iter()
        .map(|p| {
            let absolute = cwd.join(p);
            let canonical = absolute.canonicalize().with_context(|| {
                format!(
                    "{} does not exist: --read and --write take existing paths",
                    absolute.display()
                )
            })?;
            Ok(canonical.to_string_lossy().into_owned())
        })
        .collect()
}

/// Terminal and locale settings from the caller, toolchain homes the profile makes visible,
/// then `--env` (which wins).
fn environment(
    args: &RunArgs,
    caller: &Caller,
    read_only: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = INHERITED_VARIABLES
        .iter()
        .filter_map(|name| {
            caller
                .variable(name)
                .map(|v| (name.to_string(), v.to_string()))
        })
        .collect();
    if let Some(home) = &caller.home {
        for (variable, dir) in [
            ("RUSTUP_HOME", ".rustup"),
            ("PYENV_ROOT", ".pyenv"),
            ("NVM_DIR", ".nvm"),
        ] {
            let visible = read_only.iter().any(|r| r == &format!("~/{dir}"));
            if visible && home.join(dir).is_dir() {
                env.push((
                    variable.into(),
                    home.join(dir).to_string_lossy().into_owned(),
                ));
            }
        }
    }
    for item in &args.env {
        let (name, value) = match item.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => {
                let value = caller.variable(item).with_context(|| {
                    format!("--env {item}: {item} is not set in your environment; pass --env {item}=VALUE")
                })?;
                (item.clone(), value.to_string())
            }
        };
        if name.is_empty() || name.contains(['\0']) {
            bail!("--env {item:?}: expected NAME=VALUE or NAME");
        }
        env.push((name, value));
    }
    Ok(env)
}

fn limits(args: &RunArgs, profile: &Profile) -> anyhow::Result<Limits> {
    let resources = &profile.resources;
    let mut limits = Limits {
        memory_max: resources.memory_max,
        memory_high: resources.memory_high,
        cpus: resources.cpus,
        pids: resources.pids,
    };
    if let Some(memory) = &args.memory {
        let bytes =
            corral_policy::parse_size(memory).with_context(|| format!("--memory {memory}"))?;
        limits.memory_max = Some(bytes);
        limits.memory_high = limits.memory_high.filter(|high| *high < bytes);
    }
    if let Some(cpus) = args.cpus {
        if !(cpus > 0.0 && cpus.is_finite()) {
            bail!("--cpus {cpus}: expected a positive number of cores, e.g. 1.5");
        }
        limits.cpus = Some(cpus);
    }
    if let Some(pids) = args.pids {
        if pids == 0 {
            bail!("--pids 0: the command itself needs at least one process");
        }
        limits.pids = Some(pids);
    }
    Ok(limits)
}

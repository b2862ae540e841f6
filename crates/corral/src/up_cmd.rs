//! `corral up`: the gateway. Builds the configuration (file < environment < flags) and hands
//! it to `corral_gateway::run`; prints the URL and, on first start, the admin token.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use corral_gateway::{AdminBootstrap, Config, ConfigLayer, LogFormat, Ready};

/// Arguments of `corral up`. Each flag overrides the matching `CORRAL_*` variable, which
/// overrides the config file.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Config file (TOML; default: $XDG_CONFIG_HOME/corral/gateway.toml if it exists).
    #[arg(long, env = "CORRAL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070; env CORRAL_LISTEN].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Where the store lives [default: $XDG_DATA_HOME/corral; env CORRAL_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Domain sandbox hosts are named under [default: localhost; env CORRAL_DOMAIN].
    #[arg(long)]
    domain: Option<String>,
    /// Added to a sandbox id in its session host, `<id><suffix>.<domain>` (e.g. -oc)
    /// [default: none; env CORRAL_SUFFIX].
    #[arg(long)]
    suffix: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM; reloaded when it changes) [env
    /// CORRAL_TLS_CERT].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) for --tls-cert [env CORRAL_TLS_KEY].
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The URL browsers use when a TLS-terminating proxy is in front, e.g.
    /// https://corral.example.com: session hosts take its scheme and port, and its host is
    /// the domain [env CORRAL_PUBLIC_URL].
    #[arg(long, value_name = "URL")]
    public_url: Option<corral_gateway::config::PublicUrl>,
    /// Log format on stderr: text or json [default: text; env CORRAL_LOG_FORMAT].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Idle time before a sandbox is stopped, e.g. 30m [env CORRAL_IDLE_TIMEOUT].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Email of the admin created on first start [default: admin@localhost; env
    /// CORRAL_ADMIN_EMAIL].
    #[arg(long, value_name = "EMAIL")]
    admin_email: Option<String>,
    /// A proxy address whose X-Forwarded-Email / X-Auth-Request-Email is believed
    /// (repeatable) [env CORRAL_TRUSTED_PROXIES, comma-separated].
    #[arg(long = "trusted-proxy", value_name = "IP")]
    trusted_proxies: Vec<IpAddr>,
    /// A git token sandboxes' egress proxies add to requests to HOST, as HOST=env:VARIABLE or
    /// HOST=file:PATH (repeatable; replaces [git_tokens]) [env CORRAL_GIT_TOKENS,
    /// comma-separated].
    #[arg(long = "git-token", value_name = "HOST=SOURCE")]
    git_tokens: Vec<String>,
    /// How long an exec may run when it names no timeout, e.g. 10m [env CORRAL_EXEC_TIMEOUT].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    exec_timeout: Option<Duration>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

/// Runs `corral up`.
pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let lookup = |name: &str| std::env::var(name).ok();
    // A relative --data-dir means relative to where the command was typed.
    let data_dir = args
        .data_dir
        .map(std::path::absolute)
        .transpose()
        .context("--data-dir")?;
    let flags = ConfigLayer {
        listen: args.listen,
        data_dir,
        domain: args.domain,
        log_format: args.log_format,
        idle_timeout: args.idle_timeout,
        admin_email: args.admin_email,
        admin_token: None,
        trusted_proxies: (!args.trusted_proxies.is_empty()).then_some(args.trusted_proxies),
        // Extra profiles name files on the host: the config file only.
        profiles: None,
        exec_timeout: args.exec_timeout,
        max_exec_timeout: None,
        log_max_size: None,
        git_tokens: (!args.git_tokens.is_empty())
            .then(|| {
                corral_gateway::git_tokens::git_token_pairs(
                    args.git_tokens.iter().map(String::as_str),
                )
            })
            .transpose()
            .map_err(|e| anyhow::anyhow!("--git-token: {e}"))?,
        // The upload limit: the config file or CORRAL_MAX_UPLOAD.
        max_upload: None,
        suffix: args.suffix,
        // Agent templates name commands to run: the config file only.
        agents: None,
        tls_cert: args
            .tls_cert
            .map(std::path::absolute)
            .transpose()
            .context("--tls-cert")?,
        tls_key: args
            .tls_key
            .map(std::path::absolute)
            .transpose()
            .context("--tls-key")?,
        public_url: args.public_url,
    };
    let file = args
        .config
        .or_else(|| corral_gateway::config::default_config_file(lookup));
    let config = Config::load(file.as_deref(), lookup, flags).context("configuration")?;
    if args.print_config {
        print!("{}", config.to_redacted_toml());
        return Ok(ExitCode::SUCCESS);
    }
    corral_gateway::init_logging(config.log_format);
    corral_gateway::run(config, print_ready)?;
    Ok(ExitCode::SUCCESS)
}

/// Tells the operator where the gateway is and, once only, the new admin token.
fn print_ready(ready: &Ready) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the gateway; the log has the address too.
    let _ = writeln!(out, "corral gateway: {}", ready.url);
    if let Some(public) = &ready.public_url {
        let _ = writeln!(out, "public URL (through your proxy): {public}");
    }
    let _ = match &ready.admin {
        AdminBootstrap::Created { email, token } => writeln!(
            out,
            "admin user: {email}\nadmin token (shown only now; keep it): {}",
            token.expose()
        ),
        AdminBootstrap::CreatedWithConfiguredToken { email } => writeln!(
            out,
            "admin user: {email}\nadmin token: the one in CORRAL_ADMIN_TOKEN / admin_token"
        ),
        AdminBootstrap::Existing => Ok(()),
    };
    let _ = out.flush();
}

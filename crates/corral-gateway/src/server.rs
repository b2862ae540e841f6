//! Running the gateway: bind, open the store, make the first admin, adopt the sandboxes that
//! still run, serve until SIGTERM or SIGINT, then finish the requests in flight and return
//! (leaving the sandboxes running).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::api::{AppState, router};
use crate::auth::{AuthError, new_token, token_hash};
use crate::config::{Config, LogFormat, Secret};
use crate::connections;
use crate::ingress::Ingress;
use crate::ingress::front::Front;
use crate::ingress::idle::Reaper;
use crate::runtime::{Runtime, RuntimeError};
use crate::store::{Role, Store, StoreError};
use crate::tls::TlsListener;

/// How long blocking work (execs, store writes) may still run once the server has stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The store could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The first admin token could not be made.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot listen for SIGTERM and SIGINT: {0}")]
    Signals(std::io::Error),
    /// The path of the running `corral` binary (which starts sandboxes) is unknown.
    #[error("cannot find the corral binary to start sandboxes with: {0}")]
    CurrentExe(std::io::Error),
    /// The runtime could not reconcile the sandboxes recorded as running.
    #[error("reconciling running sandboxes: {0}")]
    Reconcile(#[from] RuntimeError),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Serving failed.
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// What the gateway tells its operator once it is listening.
#[derive(Debug)]
pub struct Ready {
    /// Where the API is, e.g. `http://127.0.0.1:7070`.
    pub url: String,
    /// Where browsers reach it, when a proxy is in front (`public_url`).
    pub public_url: Option<String>,
    /// What happened to the admin user on this start.
    pub admin: AdminBootstrap,
}

/// The admin user on this start.
#[derive(Debug)]
pub enum AdminBootstrap {
    /// First start: the admin was created with this new random token, to be shown once.
    Created {
        /// The admin's email.
        email: String,
        /// The token; it exists nowhere else.
        token: Secret,
    },
    /// First start: the admin was created with the configured `admin_token`.
    CreatedWithConfiguredToken {
        /// The admin's email.
        email: String,
    },
    /// Users already existed; nothing was created.
    Existing,
}

/// Sends log lines to stderr as text or JSON. Call once, before [`run`].
pub fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(tracing::Level::INFO);
    // A second call (tests in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the gateway until SIGTERM or SIGINT. `on_ready` is called once, after the port is
/// bound and the store is ready, with the URL and (on first start) the admin token.
pub fn run(config: Config, on_ready: impl FnOnce(&Ready)) -> Result<(), GatewayError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(GatewayError::Runtime)?;
    let result = runtime.block_on(serve(config, on_ready));
    // An exec still blocked on a command in a sandbox must not hold the exit up (the command
    // runs on in the sandbox); store writes in flight get a moment to finish.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

async fn serve(mut config: Config, on_ready: impl FnOnce(&Ready)) -> Result<(), GatewayError> {
    let signals = ShutdownSignals::install()?;
    // Bind before creating the admin: a token printed by a gateway that then failed to
    // listen would be lost.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| GatewayError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(GatewayError::Serve)?;
    // Session-host URLs name the port actually bound (`--listen 127.0.0.1:0` picks one).
    config.listen = addr;
    let listener = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            Listening::Tls(TlsListener::new(listener, cert.clone(), key.clone())?)
        }
        _ => Listening::Plain(listener),
    };
    let store = Arc::new(Store::open(&config.data_dir)?);
    let admin = bootstrap_admin(&store, &config)?;
    // Sandboxes are `corral run` processes of this very binary.
    let corral = std::env::current_exe().map_err(GatewayError::CurrentExe)?;
    let runtime = Arc::new(Runtime::new(store.clone(), &config, corral));
    runtime.set_inference(Arc::new(crate::inference::Inference::new(
        store.clone(),
        &config,
    )));
    runtime.reconcile().await?;
    runtime.spawn_log_rotation();
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "gateway listening");
    on_ready(&Ready {
        url: format!("{}://{addr}", listener.scheme()),
        public_url: config.public_url.as_ref().map(ToString::to_string),
        admin,
    });

    let config = Arc::new(config);
    let ingress = Ingress::new(store.clone(), runtime.clone(), config.clone());
    tokio::spawn(Reaper::new(ingress.clone()).run());
    let state = AppState::new(store, config, runtime.clone());
    let front = Front::new(ingress, router(state));
    let shutdown = async move {
        signals.recv().await;
        runtime.begin_shutdown();
    };
    match listener {
        Listening::Tls(tls) => connections::serve(tls, front, shutdown).await,
        // Responses go out as soon as they are written, as nginx's `tcp_nodelay` does: a
        // short answer never waits for the client's acknowledgement of the previous one.
        Listening::Plain(tcp) => {
            let tcp = tcp.tap_io(|stream| {
                let _ = stream.set_nodelay(true);
            });
            connections::serve(tcp, front, shutdown).await
        }
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// The listener: plain HTTP, or HTTPS when a certificate is configured.
enum Listening {
    Plain(TcpListener),
    Tls(TlsListener),
}

impl Listening {
    fn scheme(&self) -> &'static str {
        match self {
            Self::Plain(_) => "http",
            Self::Tls(_) => "https",
        }
    }
}

/// Creates the admin user on first start (no users yet).
fn bootstrap_admin(store: &Store, config: &Config) -> Result<AdminBootstrap, GatewayError> {
    if store.user_count()? > 0 {
        if let Some(token) = &config.admin_token
            && store
                .user_by_token_hash(&token_hash(token.expose()))?
                .is_none()
        {
            tracing::warn!(
                "admin_token (CORRAL_ADMIN_TOKEN) is ignored: it only applies on first start, \
                 and this store already has users"
            );
        }
        return Ok(AdminBootstrap::Existing);
    }
    let email = config.admin_email.clone();
    let (token, configured) = match &config.admin_token {
        Some(token) => (token.clone(), true),
        None => (Secret::new(new_token()?), false),
    };
    store.create_user_with_token(
        &email,
        Role::Admin,
        None,
        "first-start",
        &token_hash(token.expose()),
    )?;
    tracing::info!(admin = %email, "first start: admin user created");
    Ok(if configured {
        AdminBootstrap::CreatedWithConfiguredToken { email }
    } else {
        AdminBootstrap::Created { email, token }
    })
}

/// SIGTERM and SIGINT, listened for from the start of [`serve`]: a signal that arrives
/// while the store opens is kept and stops the server as soon as it runs, instead of
/// killing the process with the default action.
struct ShutdownSignals {
    term: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    fn install() -> Result<Self, GatewayError> {
        let install = |kind| signal(kind).map_err(GatewayError::Signals);
        Ok(Self {
            term: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT.
    async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

//! corral's egress proxy: the only way out of a sandbox, every connection a Cedar decision.
//!
//! Threat model: everything arriving on a sandbox's egress socket comes from an agent that may
//! be hostile. The socket, not anything the agent sends, says which sandbox is talking (one
//! socket per sandbox). The proxy resolves names itself (the sandbox has no DNS to exfiltrate
//! through) and decides `connect` for each resolved address, so a name that resolves to
//! loopback, a private network or cloud metadata is refused unless the profile grants that
//! address (Cedar's `non-public-address` forbid). A TLS tunnel must name, in its ClientHello,
//! the host that was allowed (no domain fronting). Headers are bounded in size, reading them
//! is bounded in time, and each sandbox gets a bounded number of concurrent connections, so a
//! slow or malicious client cannot exhaust the proxy. Denials are 403s whose body and
//! `X-Corral-Deny` header name the deciding policy; every decision is an audit event.
//!
//! It speaks HTTP CONNECT (any TCP: HTTPS, SSH for git) and absolute-URI HTTP/1.1 forwarding
//! with keep-alive. TLS to hosts the profile must read (HTTP rules, guarded git hosts, hosts
//! with an injected credential) is intercepted with corral's CA ([`Interception`]); each
//! request there is an `http_request` decision, a smart-HTTP push is decided ref by ref before
//! any of it reaches the remote, and a configured git token replaces whatever `Authorization`
//! the agent sent. Other TLS passes through untouched. In a sandbox with an inference router,
//! tunnels to the real provider hosts are intercepted too and served by the router, never
//! reaching the host (`provider_host`).
//!
//! For speed, a CONNECT that opens a connection is read from the raw socket (anything else
//! goes to hyper) and a passthrough tunnel's bytes are spliced between the sockets
//! ([`corral_splice`]); the sandbox's bridge hands its listening socket over the egress
//! socket, so the proxy accepts the sandbox's connections itself.
#![forbid(unsafe_code)]

pub mod ca;
mod client;
mod connect;
pub mod credentials;
mod exchange;
mod forward;
mod gate;
pub mod git_receive_pack;
pub mod inference;
mod intercept;
mod provider_host;
mod replay;
mod reply;
pub mod sni;
mod traffic;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corral_policy::{AuditLog, PolicyHandle, SandboxIdentity, TrafficLog};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

pub use credentials::Credentials;
pub use gate::Gate;
pub use intercept::Interception;

/// Bounds that keep one sandbox from exhausting the proxy.
///
/// # Defaults
/// 256 concurrent connections, 16 KiB of request head, 100 headers, 30 s to send a request
/// head, 10 s to connect upstream, 10 s for a tunnel's TLS ClientHello.
#[derive(Debug, Clone)]
pub struct ProxyLimits {
    /// Connections served at once; more wait in the socket's backlog.
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes; larger gets 431.
    pub max_head_bytes: usize,
    /// Most headers in one request; more gets 431.
    pub max_headers: usize,
    /// Time allowed to send a complete request head.
    pub head_timeout: Duration,
    /// Time allowed to connect to the upstream host.
    pub connect_timeout: Duration,
    /// Time allowed for a tunnel's first bytes (the TLS ClientHello) to arrive.
    pub hello_timeout: Duration,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_head_bytes: 16 * 1024,
            max_headers: 100,
            head_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
        }
    }
}

impl ProxyLimits {
    /// An HTTP/1 server for a sandbox's side of a connection (its requests to the proxy, or
    /// inside an intercepted tunnel), bounded by these limits.
    pub(crate) fn http1_server(&self) -> hyper::server::conn::http1::Builder {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.head_timeout)
            .max_buf_size(self.max_head_bytes.max(8192))
            // The read buffer cannot be smaller than 8 KiB; this bounds the head exactly.
            .max_header_size(self.max_head_bytes)
            .max_headers(self.max_headers);
        builder
    }
}

/// The proxy for one sandbox: its identity, the policy that decides for it, where decisions
/// are recorded, and its limits.
#[derive(Clone)]
pub struct EgressProxy {
    shared: Arc<Shared>,
}

/// What every connection of one sandbox's proxy shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) gate: Arc<Gate>,
    pub(crate) limits: ProxyLimits,
    /// Interception, or why it is unavailable (connections that need it are then refused).
    pub(crate) interception: Result<Arc<Interception>, String>,
    pub(crate) credentials: Credentials,
    /// The gateway's inference router for this sandbox, when it has one.
    pub(crate) inference: Option<inference::InferenceRoute>,
}

impl Shared {
    /// Whether connections to `host` must be read: the profile has HTTP rules for it or
    /// guards its git pushes, or a credential is to be injected there.
    pub(crate) fn must_inspect(&self, host: &str) -> bool {
        self.credentials.for_host(host).is_some() || self.gate.profile_intercepts(host)
    }
}

impl EgressProxy {
    /// A proxy deciding with `policy` for `sandbox`, recording to `audit` when given.
    pub fn new(
        sandbox: SandboxIdentity,
        policy: Arc<PolicyHandle>,
        audit: Option<Arc<AuditLog>>,
        limits: ProxyLimits,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                gate: Arc::new(Gate::new(sandbox, policy, audit, limits.connect_timeout)),
                limits,
                interception: Err("no interception CA was configured".into()),
                credentials: Credentials::new(),
                inference: None,
            }),
        }
    }

    /// Adds TLS interception (`Err`: why it is unavailable; connections that need it are then
    /// refused with that reason) and the credentials to inject.
    pub fn with_interception(
        mut self,
        interception: Result<Interception, String>,
        credentials: Credentials,
    ) -> Self {
        let shared = Arc::make_mut(&mut self.shared);
        shared.interception = interception.map(Arc::new);
        shared.credentials = credentials;
        self
    }

    /// Writes the bytes each upstream connection carried to `log` when it ends (see
    /// [`corral_policy::TrafficRecord`]).
    pub fn with_traffic_log(self, log: Arc<TrafficLog>) -> Self {
        self.shared.gate.count_traffic(log);
        self
    }

    /// Relays `http://127.0.0.1:3128/inference/...` to the gateway's inference router.
    pub fn with_inference(mut self, route: inference::InferenceRoute) -> Self {
        Arc::make_mut(&mut self.shared).inference = Some(route);
        self
    }

    /// Binds the sandbox's egress socket at `path` (mode 0666: the socket is reached only
    /// through its private directory and the bind mount into the sandbox). Binding starts no
    /// thread, so it can happen before the sandbox is forked; connections wait in the backlog
    /// until [`EgressProxy::serve_blocking`].
    pub fn bind(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
        use std::os::unix::fs::PermissionsExt;
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        Ok(listener)
    }

    /// Serves `listener` on the calling thread with its own single-threaded runtime, for as
    /// long as the process lives (run it on a thread of its own).
    pub fn serve_blocking(self, listener: std::os::unix::net::UnixListener) -> std::io::Result<()> {
        self.serve_blocking_after(None, listener)
    }

    /// Like [`EgressProxy::serve_blocking`], serving `first` (a connection already accepted
    /// from `listener`, by a caller that waited for one before building the proxy) as well.
    pub fn serve_blocking_after(
        self,
        first: Option<std::os::unix::net::UnixStream>,
        listener: std::os::unix::net::UnixListener,
    ) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let slots = Arc::new(Semaphore::new(self.shared.limits.max_connections));
            if let Some(first) = first {
                first.set_nonblocking(true)?;
                let first = tokio::net::UnixStream::from_std(first)?;
                let permit = Arc::clone(&slots).try_acquire_owned().ok();
                let (proxy, slots) = (self.clone(), Arc::clone(&slots));
                tokio::spawn(async move {
                    proxy.serve_unix(first, slots).await;
                    drop(permit);
                });
            }
            let listener = UnixListener::from_std(listener)?;
            self.serve_with(listener, slots).await;
            Ok(())
        })
    }

    /// Serves connections from `listener` until the task is dropped.
    pub async fn serve(self, listener: UnixListener) {
        let slots = Arc::new(Semaphore::new(self.shared.limits.max_connections));
        self.serve_with(listener, slots).await
    }

    /// Serves connections from `listener`, each holding one of `slots` while it is served.
    async fn serve_with(self, listener: UnixListener, slots: Arc<Semaphore>) {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "egress socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (proxy, slots) = (self.clone(), Arc::clone(&slots));
            tokio::spawn(async move {
                proxy.serve_unix(stream, slots).await;
                drop(permit);
            });
        }
    }

    /// Serves one connection to the egress socket: a client, or the sandbox's bridge handing
    /// over its listening socket (its first message passes a descriptor,
    /// [`corral_splice::handoff`]), whose connections the proxy then accepts itself for as
    /// long as the bridge keeps this connection open. Anyone able to reach the egress socket
    /// could hand over a listener of their own the same way; its connections are then served
    /// as if they had come through the egress socket, each holding one of `slots`.
    async fn serve_unix(&self, stream: tokio::net::UnixStream, slots: Arc<Semaphore>) {
        let limits = &self.shared.limits;
        let first = corral_splice::handoff::receive(&stream, limits.max_head_bytes.min(4096));
        let first = match tokio::time::timeout(limits.head_timeout, first).await {
            Ok(Ok(first)) => first,
            Ok(Err(_)) | Err(_) => return,
        };
        if first.fds.is_empty() {
            if !first.data.is_empty() {
                self.serve_client(stream, first.data).await;
            }
            return;
        }
        // One listener per hand-over connection (any other descriptor is closed), served for
        // as long as that connection stays open: listeners are bounded like connections.
        let Some(fd) = first.fds.into_iter().next() else {
            return;
        };
        let listener = match corral_splice::handoff::tcp_listener(fd) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(sandbox = %self.shared.gate.sandbox_id(), error = %e, "handed-over descriptor refused");
                return;
            }
        };
        tokio::select! {
            () = self.clone().serve_tcp(listener, slots) => {}
            () = closed(&stream) => {}
        }
    }

    /// Accepts connections on the sandbox's own listening socket (handed over by its bridge),
    /// each holding one of `slots` while it is served.
    async fn serve_tcp(self, listener: tokio::net::TcpListener, slots: Arc<Semaphore>) {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "sandbox bridge accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            tokio::spawn(async move {
                proxy.serve_client(stream, Vec::new()).await;
                drop(permit);
            });
        }
    }

    /// Serves one client connection (any byte stream: the sandbox's socket, or an in-memory
    /// pipe in tests and fuzzing) until it closes.
    pub async fn serve_connection<S>(&self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_client(client::Opaque(stream), Vec::new()).await
    }

    /// Serves one client connection (`read`: bytes already read from it): a CONNECT as its
    /// first request is answered from the raw stream ([`connect::tunnel_raw`]), anything else
    /// by hyper.
    async fn serve_client<C: client::Client>(&self, mut client: C, read: Vec<u8>) {
        let limits = &self.shared.limits;
        let opening = client::read_opening(
            &mut client,
            read,
            limits.max_head_bytes,
            limits.max_headers,
            limits.head_timeout,
        )
        .await;
        match opening {
            client::Opening::Connect(head) => {
                connect::tunnel_raw(client, head, Arc::clone(&self.shared)).await
            }
            client::Opening::Other(read) => {
                self.serve_http(replay::Replay::new(read, client)).await
            }
            client::Opening::Closed => {}
        }
    }

    /// Serves HTTP/1.1 requests on `stream` with hyper until it closes. (A head that started
    /// to arrive before hyper got the stream may take up to twice `head_timeout` in all.)
    async fn serve_http<S>(&self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let service = service_fn(move |request| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, std::convert::Infallible>(route(request, shared).await) }
        });
        let served = self
            .shared
            .limits
            .http1_server()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
        if let Err(e) = served {
            tracing::debug!(sandbox = %self.shared.gate.sandbox_id(), error = %e, "egress connection ended");
        }
    }
}

/// Returns when the peer of `channel` closes it (or it fails); whatever it sends meanwhile,
/// descriptors included, is read and dropped.
async fn closed(channel: &tokio::net::UnixStream) {
    while let Ok(received) = corral_splice::handoff::receive(channel, 64).await {
        if received.data.is_empty() {
            return;
        }
    }
}

/// The body type of every response the proxy sends.
pub(crate) type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

async fn route(
    request: hyper::Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
) -> hyper::Response<Body> {
    if request.method() == hyper::Method::CONNECT {
        connect::tunnel(request, shared).await
    } else if let Some(path) = inference::router_path(&request, &shared) {
        inference::relay(request, &path, shared.inference.as_ref()).await
    } else {
        forward::forward(request, shared).await
    }
}

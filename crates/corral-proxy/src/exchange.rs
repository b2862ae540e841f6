//! One HTTP request the proxy can read (plain HTTP, or HTTPS it intercepts), from decision to
//! upstream: the `http_request` decision, the git push guard, credential injection, and the
//! request streamed on to the host it was allowed to reach; a request to upgrade (WebSocket)
//! that the host accepts becomes a byte stream both ways.
//!
//! Threat model: the request comes from the agent. Its target is the host the connection was
//! decided for, never what its `Host` header claims (a different `Host` is refused, so an
//! allowed host cannot front for another), a credential configured for the host replaces any
//! `Authorization` the agent sent, and a push is decided on its ref updates before any byte
//! of it reaches the remote.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use corral_policy::Action;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{
    AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_TYPE, HOST, HeaderMap, HeaderName,
    HeaderValue, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use crate::credentials::Credentials;
use crate::gate::{Gate, Refusal, normalize};
use crate::git_receive_pack::{self, PushCommands};
use crate::traffic::Metered;
use crate::{Body, reply};

/// Hop-by-hop headers (RFC 9110 §7.6.1) that a proxy must not pass on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Most bytes of a push read to find its ref updates (the list precedes the pack; 10 000
/// updates of ~100 bytes fit).
const MAX_PUSH_COMMAND_BYTES: usize = 4 * 1024 * 1024;

/// Time allowed for a push's ref updates to arrive.
const PUSH_COMMANDS_TIMEOUT: Duration = Duration::from_secs(30);

/// Where requests on one client connection go: the host and port the connection was decided
/// for, and whether it is spoken over TLS.
#[derive(Debug, Clone)]
pub struct Target {
    /// Normalized host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the upstream speaks TLS (intercepted HTTPS).
    pub tls: bool,
}

impl Target {
    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// `host[:port]` as a `Host` header carries it (the default port left out).
    fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The upstream side of one client connection: opened on first use (through the gate, so
/// every connection is a `connect` decision) and opened again if the host closed it.
pub struct Upstream {
    target: Target,
    gate: Arc<Gate>,
    tls: Option<Arc<rustls::ClientConfig>>,
    first: Option<tokio::net::TcpStream>,
    sender: Option<SendRequest<Body>>,
}

impl Upstream {
    /// An upstream for `target`; `first` is a connection already opened for it, and `tls` the
    /// client configuration when the target speaks TLS.
    pub fn new(
        target: Target,
        gate: Arc<Gate>,
        tls: Option<Arc<rustls::ClientConfig>>,
        first: Option<tokio::net::TcpStream>,
    ) -> Self {
        Self {
            target,
            gate,
            tls,
            first,
            sender: None,
        }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Body>, Refusal> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            let sender = self.connect().await?;
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| Refusal::Unreachable("no upstream connection".into()))
    }

    /// Opens a connection for the target (the one already open, first) and starts HTTP/1.1
    /// on it, over TLS when the target speaks it.
    async fn connect(&mut self) -> Result<SendRequest<Body>, Refusal> {
        let tcp = match self.first.take() {
            Some(tcp) => tcp,
            None => self.gate.open(&self.target.host, self.target.port).await?,
        };
        let tcp = Metered::new(tcp, self.gate.tally(&self.target.host, self.target.port));
        let unreachable = |e: &dyn std::fmt::Display| {
            Refusal::Unreachable(format!("{}:{}: {e}", self.target.host, self.target.port))
        };
        let sender = match &self.tls {
            Some(config) => {
                let name =
                    ServerName::try_from(self.target.host.clone()).map_err(|e| unreachable(&e))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(&format!("TLS: {e}")))?;
                handshake(tls).await.map_err(|e| unreachable(&e))?
            }
            None => handshake(tcp).await.map_err(|e| unreachable(&e))?,
        };
        Ok(sender)
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Body>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // With upgrades: a 101 hands the connection over to `carry_upgraded`.
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// Decides `request` and, when allowed, sends it upstream and returns the host's answer.
pub async fn exchange(
    request: Request<Incoming>,
    upstream: &mut Upstream,
    credentials: &Credentials,
) -> Response<Body> {
    match exchange_inner(request, upstream, credentials).await {
        Ok(response) => response,
        Err(refusal) => reply::refusal(refusal),
    }
}

async fn exchange_inner(
    mut request: Request<Incoming>,
    upstream: &mut Upstream,
    credentials: &Credentials,
) -> Result<Response<Body>, Refusal> {
    let target = upstream.target.clone();
    let gate = Arc::clone(&upstream.gate);
    check_addressed_to(&request, &target)?;
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let decision = gate.decide(Action::HttpRequest {
        host: target.host.clone(),
        path: path.clone(),
        method: method.as_str().to_string(),
    });
    if !decision.allowed {
        return Err(Refusal::Denied {
            what: format!("{method} {}://{}{path}", target.scheme(), target.host),
            profile: gate.profile_name(),
            reasons: decision.reasons,
        });
    }
    // A WebSocket (or other upgrade) asked for: decided like any request, then carried as
    // bytes once the host agrees (101).
    let upgrade = upgrade_protocol(request.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|_| Refusal::BadRequest("bad request target".into()))?;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = upgrade {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, protocol);
    }
    let authority = target.authority();
    parts.headers.insert(
        HOST,
        authority
            .parse()
            .map_err(|_| Refusal::BadRequest(format!("bad host {authority}")))?,
    );
    if let Some(value) = credentials.for_host(&target.host) {
        parts.headers.insert(AUTHORIZATION, value.clone());
    }
    let body = if method == Method::POST && path.ends_with("/git-receive-pack") {
        match guard_push(&gate, &target, &path, &parts.headers, body).await? {
            Guarded::Allowed(body) => body,
            Guarded::Refused(response) => return Ok(response),
        }
    } else {
        body.boxed()
    };
    let sender = upstream.sender().await?;
    let mut response = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| Refusal::Unreachable(format!("{}:{}: {e}", target.host, target.port)))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade else {
            return Err(Refusal::Unreachable(format!(
                "{}:{} switched protocols without being asked to",
                target.host, target.port
            )));
        };
        let server = hyper::upgrade::on(&mut response);
        tokio::spawn(carry_upgraded(client, server));
        // The 101 keeps its Connection/Upgrade pair: it is what the client asked for.
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, reply::empty()));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed()))
}

/// The protocol a request asks to switch to (`Connection: upgrade` and `Upgrade: X`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(UPGRADE).cloned()).flatten()
}

/// Carries an upgraded connection's bytes both ways until both sides end (the upstream side
/// is metered where it was opened).
async fn carry_upgraded(client: hyper::upgrade::OnUpgrade, server: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, server) {
        Ok((client, server)) => {
            let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}

/// Refuses a request whose `Host` header, or absolute URI, names another host than the one
/// the connection was allowed to: the upstream could route it there (domain fronting).
fn check_addressed_to(request: &Request<Incoming>, target: &Target) -> Result<(), Refusal> {
    let claimed = request.uri().host().map(str::to_string).or_else(|| {
        let host = request.headers().get(HOST)?.to_str().ok()?;
        let authority: hyper::http::uri::Authority = host.parse().ok()?;
        Some(authority.host().to_string())
    });
    match claimed.map(|h| normalize(&h)) {
        None => Ok(()),
        Some(Ok(host)) if host == target.host => Ok(()),
        Some(Ok(host)) => Err(Refusal::Misdirected(format!(
            "this connection was allowed to {}, not {host}; open a connection to {host} instead",
            target.host
        ))),
        Some(Err(refusal)) => Err(refusal),
    }
}

/// What the push guard made of a `git-receive-pack` request.
enum Guarded {
    /// Every ref update is allowed: the body to send, unchanged.
    Allowed(Body),
    /// At least one was denied: the receive-pack answer to give the client instead.
    Refused(Response<Body>),
}

/// Reads a push's ref updates, decides `git_push` for each, and either lets the whole body
/// through unchanged or answers it the way a git server refusing the push would.
async fn guard_push(
    gate: &Gate,
    target: &Target,
    path: &str,
    headers: &HeaderMap,
    mut body: Incoming,
) -> Result<Guarded, Refusal> {
    let mut decoder = PushDecoder::for_encoding(headers.get(CONTENT_ENCODING))?;
    let mut raw = Vec::new();
    // The parser starts from the beginning each time, so it runs again only once the decoded
    // bytes have doubled (or the body ended, or hit the bound): a push sent in tiny frames
    // costs linear time, not quadratic.
    let mut parse_at = 0;
    let mut ended = false;
    let read = tokio::time::timeout(PUSH_COMMANDS_TIMEOUT, async {
        loop {
            let decoded = decoder.decoded();
            // Both sides bounded: a small gzip body can decode to gigabytes.
            let over = raw.len().max(decoded.len()) > MAX_PUSH_COMMAND_BYTES;
            if ended || over || decoded.len() >= parse_at {
                if let Some(commands) = git_receive_pack::parse_commands(decoded)
                    .map_err(|e| Refusal::BadRequest(format!("git push: {e}")))?
                {
                    return Ok(Some(commands));
                }
                if over {
                    return Err(Refusal::BadRequest(format!(
                        "git push: the ref updates exceed {MAX_PUSH_COMMAND_BYTES} bytes"
                    )));
                }
                if ended {
                    return Ok(None);
                }
                parse_at = decoded.len().saturating_mul(2).max(4);
            }
            match body.frame().await {
                None => ended = true,
                Some(Err(e)) => return Err(Refusal::BadRequest(format!("git push: {e}"))),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        raw.extend_from_slice(data);
                        decoder.push(data)?;
                    }
                }
            }
        }
    })
    .await
    .map_err(|_| Refusal::BadRequest("git push: timed out waiting for the ref updates".into()))??;
    let Some(commands) = read else {
        return Err(Refusal::BadRequest(
            "git push: the request ended before its ref updates".into(),
        ));
    };
    let repo = path
        .trim_end_matches("/git-receive-pack")
        .trim_start_matches('/')
        .to_string();
    let denied = decide_updates(gate, target, &repo, &commands);
    if denied.is_empty() {
        let prefix = Prefixed {
            prefix: Some(Bytes::from(raw)),
            rest: body,
        };
        return Ok(Guarded::Allowed(prefix.boxed()));
    }
    let mut response = Response::new(reply::bytes(git_receive_pack::refusal(&commands, &denied)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-git-receive-pack-result"),
    );
    Ok(Guarded::Refused(response))
}

/// Decides each ref update; returns the denied ones with the reason git will print.
fn decide_updates(
    gate: &Gate,
    target: &Target,
    repo: &str,
    commands: &PushCommands,
) -> Vec<(usize, String)> {
    let mut denied = Vec::new();
    for (i, update) in commands.updates.iter().enumerate() {
        let decision = gate.decide(Action::GitPush {
            remote: target.host.clone(),
            repo: repo.to_string(),
            branch: update.branch().to_string(),
        });
        if !decision.allowed {
            denied.push((i, format!("corral: {}", decision.reasons_text())));
        }
    }
    denied
}

/// The request body as the guard reads it: as sent, or gunzipped (git compresses large
/// requests). Any other encoding is refused rather than passed unread.
enum PushDecoder {
    Identity(Vec<u8>),
    Gzip(Box<flate2::write::GzDecoder<Vec<u8>>>),
}

impl PushDecoder {
    fn for_encoding(encoding: Option<&hyper::header::HeaderValue>) -> Result<Self, Refusal> {
        match encoding.map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase()) {
            None => Ok(Self::Identity(Vec::new())),
            Some(e) if e.is_empty() || e == "identity" => Ok(Self::Identity(Vec::new())),
            Some(e) if e == "gzip" || e == "x-gzip" => Ok(Self::Gzip(Box::new(
                flate2::write::GzDecoder::new(Vec::new()),
            ))),
            Some(other) => Err(Refusal::BadRequest(format!(
                "git push: corral cannot inspect a push sent with content-encoding {other:?}"
            ))),
        }
    }

    fn push(&mut self, data: &[u8]) -> Result<(), Refusal> {
        use std::io::Write as _;
        match self {
            Self::Identity(buffer) => buffer.extend_from_slice(data),
            // Flushed after each write: the decoder otherwise keeps the last output it
            // produced, and a push that fits in one frame would never show its flush-pkt.
            Self::Gzip(decoder) => decoder
                .write_all(data)
                .and_then(|()| decoder.flush())
                .map_err(|e| Refusal::BadRequest(format!("git push: bad gzip body: {e}")))?,
        }
        Ok(())
    }

    fn decoded(&self) -> &[u8] {
        match self {
            Self::Identity(buffer) => buffer,
            Self::Gzip(decoder) => decoder.get_ref(),
        }
    }
}

/// A body that replays bytes already read before streaming the rest.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Incoming,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(prefix) = self.prefix.take().filter(|p| !p.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty) && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        // Upper first: SizeHint asserts lower <= upper at every step.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + extra);
        }
        hint.set_lower(hint.lower() + extra);
        hint
    }
}

/// Removes hop-by-hop headers, including any the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

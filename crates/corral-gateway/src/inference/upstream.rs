//! The router's side towards providers: resolve the provider's host, refuse private
//! addresses unless its entry allows them, connect (TLS verified against the system roots
//! for `https`) and send one HTTP/1.1 request.
//!
//! Threat model: the base URL is an admin's, but the name may resolve anywhere (DNS
//! rebinding); a provider on a loopback, private, link-local or cloud-metadata address is
//! reached only when its entry says `allow_private`, checked on the resolved address.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{Request, Response, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::store::Provider;

/// Time allowed to connect (and finish TLS) to a provider.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a provider could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The base URL does not parse as `http(s)://host[:port][/prefix]`.
    #[error("provider {provider}: bad base URL: {reason}")]
    BadUrl {
        /// The provider.
        provider: String,
        /// What is wrong.
        reason: String,
    },
    /// The host resolved only to addresses the entry does not allow.
    #[error(
        "provider {provider}: {host} resolves to the non-public address {ip}; if it is a local \
         model server, add the provider with --allow-private"
    )]
    Private {
        /// The provider.
        provider: String,
        /// Its host.
        host: String,
        /// The refused address.
        ip: IpAddr,
    },
    /// Resolving, connecting, TLS or HTTP failed.
    #[error("provider {provider}: cannot reach {host}: {reason}")]
    Unreachable {
        /// The provider.
        provider: String,
        /// Its host.
        host: String,
        /// What failed.
        reason: String,
    },
}

/// Where one request goes, from the provider's base URL and the path asked for.
pub struct Destination {
    uri: Uri,
    host: String,
    port: u16,
    tls: bool,
}

impl Destination {
    /// `provider`'s base URL joined with `path_and_query` (which starts with `/`).
    pub fn new(provider: &Provider, path_and_query: &str) -> Result<Self, UpstreamError> {
        let bad = |reason: String| UpstreamError::BadUrl {
            provider: provider.name.clone(),
            reason,
        };
        let base: Uri = provider.base_url.parse().map_err(|e| bad(format!("{e}")))?;
        let tls = match base.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme must be http or https".into())),
        };
        let host = base
            .host()
            .ok_or_else(|| bad("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = base.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let prefix = base.path().trim_end_matches('/');
        let uri: Uri = format!("{prefix}{path_and_query}")
            .parse()
            .map_err(|e| bad(format!("{e}")))?;
        Ok(Self {
            uri,
            host,
            port,
            tls,
        })
    }

    /// The request target to send (origin form).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
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

/// Sends `request` to `destination` for `provider` on a new connection and returns the
/// response head; its body streams as the provider sends it.
pub async fn send(
    provider: &Provider,
    destination: &Destination,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, UpstreamError> {
    let unreachable = |reason: String| UpstreamError::Unreachable {
        provider: provider.name.clone(),
        host: destination.host.clone(),
        reason,
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect(provider, destination))
        .await
        .map_err(|_| unreachable("timed out connecting".into()))??;
    let _ = tcp.set_nodelay(true);
    let mut sender = if destination.tls {
        let name = rustls::pki_types::ServerName::try_from(destination.host.clone())
            .map_err(|e| unreachable(e.to_string()))?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(client_config()).connect(name, tcp),
        )
        .await
        .map_err(|_| unreachable("timed out in the TLS handshake".into()))?
        .map_err(|e| unreachable(format!("TLS: {e}")))?;
        handshake(tls).await
    } else {
        handshake(tcp).await
    }
    .map_err(|e| unreachable(e.to_string()))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))
}

/// Resolves the host and connects to the first address the provider's entry allows.
async fn connect(
    provider: &Provider,
    destination: &Destination,
) -> Result<TcpStream, UpstreamError> {
    let unreachable = |reason: String| UpstreamError::Unreachable {
        provider: provider.name.clone(),
        host: destination.host.clone(),
        reason,
    };
    let addresses: Vec<SocketAddr> = match destination.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, destination.port)],
        Err(_) => tokio::net::lookup_host((destination.host.as_str(), destination.port))
            .await
            .map_err(|e| unreachable(format!("cannot resolve: {e}")))?
            .collect(),
    };
    let mut refused = None;
    let mut last_error = None;
    for address in addresses {
        let ip = address.ip().to_canonical();
        if corral_policy::is_non_public(ip) && !provider.allow_private {
            refused.get_or_insert(ip);
            continue;
        }
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(format!("{address}: {e}")),
        }
    }
    Err(match (last_error, refused) {
        (Some(error), _) => unreachable(error),
        (None, Some(ip)) => UpstreamError::Private {
            provider: provider.name.clone(),
            host: destination.host.clone(),
            ip,
        },
        (None, None) => unreachable("no addresses".into()),
    })
}

async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "provider connection ended");
        }
    });
    Ok(sender)
}

/// TLS towards providers: the system's roots, HTTP/1.1. Built on first use.
fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("no system root certificates: HTTPS providers will fail (install ca-certificates)");
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                // ring implements every default protocol version.
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

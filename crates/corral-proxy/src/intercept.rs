//! TLS interception for hosts whose traffic the profile needs to read (HTTP rules, guarded git
//! pushes, injected credentials): the proxy answers the sandbox's TLS with a certificate for
//! the allowed host signed by corral's CA, opens its own TLS to the host (verified against the
//! system roots), and passes each request through [`crate::exchange`].
//!
//! Threat model: the leaf is issued only for the host the tunnel was allowed to (its SNI was
//! checked before this point), the upstream certificate is verified as any client would, and a
//! failed verification is answered with a 502 that says so rather than relayed.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::sign::SingleCertAndKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::Shared;
use crate::ca::{CaError, CertificateAuthority};
use crate::exchange::{Target, Upstream, exchange};

/// ALPN protocols offered on both sides: HTTP/1.1 only (the request pipeline is HTTP/1.1).
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// What interception needs: the CA that signs leaves for the sandbox, and the client
/// configuration (trusted roots) for the real hosts.
pub struct Interception {
    ca: Arc<CertificateAuthority>,
    upstream_tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Interception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interception").finish_non_exhaustive()
    }
}

impl Interception {
    /// Interception with `ca`, trusting `roots` upstream.
    pub fn new(ca: Arc<CertificateAuthority>, roots: RootCertStore) -> Result<Self, CaError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CaError::Certificate(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(Self {
            ca,
            upstream_tls: Arc::new(config),
        })
    }

    /// Interception with `ca`, trusting the system's root certificates upstream (those of
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, as OpenSSL would).
    pub fn with_system_roots(ca: Arc<CertificateAuthority>) -> Result<Self, CaError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(CaError::Certificate(
                "no system root certificates found (install the ca-certificates package)".into(),
            ));
        }
        Self::new(ca, roots)
    }

    /// The TLS server configuration presenting a certificate for `host` signed by the CA.
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let leaf = self.ca.leaf_for(host)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CaError::Certificate(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(leaf)));
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Terminates the sandbox's TLS for `target` and serves its requests, each decided and sent
/// on over `upstream` (the connection already opened and decided for the tunnel).
pub async fn serve_tls<S>(client: S, upstream: TcpStream, target: Target, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(interception) = &shared.interception else {
        return;
    };
    let config = match interception.server_config(&target.host) {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(host = %target.host, error = %e, "cannot issue an interception certificate");
            return;
        }
    };
    let accepted = tokio::time::timeout(
        shared.limits.hello_timeout,
        tokio_rustls::TlsAcceptor::from(config).accept(client),
    )
    .await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(host = %target.host, error = %e, "sandbox TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let tls_config = Some(Arc::clone(&interception.upstream_tls));
    let upstream = Upstream::new(target, Arc::clone(&shared.gate), tls_config, Some(upstream));
    serve_http(tls, upstream, shared).await;
}

/// Serves HTTP/1.1 requests read from `client` (decrypted, or a plain-HTTP tunnel to a host
/// whose requests must be read), each through [`exchange`] to `upstream`.
pub async fn serve_http<S>(client: S, upstream: Upstream, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upstream = Arc::new(Mutex::new(upstream));
    let service_shared = Arc::clone(&shared);
    let service = service_fn(move |request| {
        let upstream = Arc::clone(&upstream);
        let shared = Arc::clone(&service_shared);
        async move {
            let mut upstream = upstream.lock().await;
            Ok::<_, std::convert::Infallible>(
                exchange(request, &mut upstream, &shared.credentials).await,
            )
        }
    });
    let served = shared
        .limits
        .http1_server()
        .serve_connection(TokioIo::new(client), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "intercepted connection ended");
    }
}

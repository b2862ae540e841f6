//! HTTPS on the gateway's listener: a certificate chain and key from PEM files (one wildcard
//! certificate for `*.<domain>` covers every session host), reloaded when either file
//! changes, so a renewed certificate (certbot, cert-manager) is served without a restart.
//!
//! Handshakes run on their own tasks, so a slow or silent client never holds up accepting
//! the next connection; a handshake gets `HANDSHAKE_LIMIT`. A reload that fails (a file
//! half-written, a key that does not match) keeps the certificate already served and says
//! why in the log.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);
/// Finished handshakes waiting for the server to take them.
const BACKLOG: usize = 128;

/// Why the certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key is of a kind rustls cannot sign with, or does not match the certificate.
    #[error("tls_key {}: {message}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The certificate being served, swapped in place on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// Reads the chain and key and checks that they belong together.
fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let file_error = |path: &Path, message: String| TlsError::File {
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no CERTIFICATE block".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e.to_string()))?;
    let key_error = |message: String| TlsError::Key {
        path: key.to_owned(),
        message,
    };
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        CertifiedKey::from_der(chain, private, &provider).map_err(|e| key_error(e.to_string()))?;
    Ok(Arc::new(certified))
}

/// A TCP listener that hands out TLS streams.
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS on `tcp` with the chain in `cert` and the key in `key`, reloading them
    /// when they change. Fails if they cannot be loaded now.
    pub fn new(tcp: TcpListener, cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let current = Arc::new(Current(RwLock::new(load(&cert, &key)?)));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Key {
            path: key.clone(),
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let local = tcp.local_addr().map_err(|e| TlsError::File {
            path: cert.clone(),
            message: format!("listener: {e}"),
        })?;
        let (sender, handshaken) = mpsc::channel(BACKLOG);
        tokio::spawn(accept_loop(tcp, acceptor, sender));
        tokio::spawn(reload_loop(current, cert, key));
        Ok(Self { handshaken, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(next) => next,
            // The accept loop only ends if the process is ending; wait for that.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshaken: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, handshaken) = (acceptor.clone(), handshaken.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = handshaken.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Reloads the certificate whenever either file's modification time changes.
async fn reload_loop(current: Arc<Current>, cert: PathBuf, key: PathBuf) {
    let stamp = |cert: &Path, key: &Path| -> Option<(SystemTime, SystemTime)> {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((modified(cert)?, modified(key)?))
    };
    let mut seen = stamp(&cert, &key);
    loop {
        tokio::time::sleep(RELOAD_POLL).await;
        let now = stamp(&cert, &key);
        if now == seen {
            continue;
        }
        match load(&cert, &key) {
            Ok(loaded) => {
                *current.0.write().unwrap_or_else(|e| e.into_inner()) = loaded;
                seen = now;
                tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
            }
            // Perhaps one file is written and the other not yet: try again next time.
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate not reloaded; serving the old one")
            }
        }
    }
}

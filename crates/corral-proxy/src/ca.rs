//! corral's interception CA (for TLS interception, which is not wired yet): created on first use, kept on disk (key 0600), issuing a leaf
//! certificate per intercepted host, cached in memory.
//!
//! Threat model: the CA key lets whoever holds it impersonate any host to sandboxes that
//! trust it, so it never leaves the data directory (created 0700, key 0600) and never enters a
//! sandbox; sandboxes get only the certificate. Leaves are issued for the host a connection
//! was allowed to, never for names the client asks for beyond that.

use std::collections::HashMap;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// File name of the CA certificate (PEM) in the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (PEM, mode 0600) in the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// The CA's common name; also how its subject is rebuilt when the CA is loaded again.
const CA_COMMON_NAME: &str = "corral egress interception CA";
/// Leaves cached before the cache is cleared (bounds memory for a sandbox trying many hosts).
const MAX_CACHED_LEAVES: usize = 4096;

/// Why the CA could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing a CA file failed.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said (part of the message, not a separate cause, so it is said once).
        reason: std::io::Error,
    },
    /// The CA key is readable by others; corral refuses to use it.
    #[error("{} is readable by other users (mode {mode:o}); run: chmod 600 {}", path.display(), path.display())]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// A certificate or key could not be generated or parsed.
    #[error("{0}")]
    Certificate(String),
}

/// The interception CA and its leaf cache.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    leaves: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA from `dir`, creating the directory (0700) and a new CA on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |reason| CaError::Io { path, reason }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if !key_path.exists() {
            let key = KeyPair::generate().map_err(certificate)?;
            let cert = ca_params().self_signed(&key).map_err(certificate)?;
            write_new(
                &key_path,
                key.serialize_pem().as_bytes(),
                0o600,
                Durable::Yes,
            )?;
            write_new(&cert_path, cert.pem().as_bytes(), 0o644, Durable::Yes)?;
        }
        let mode = std::fs::metadata(&key_path)
            .map_err(io(&key_path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(CaError::KeyExposed {
                path: key_path,
                mode: mode & 0o777,
            });
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(certificate)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CaError::Certificate(format!("{}: {e}", cert_path.display())))?;
        Ok(Self {
            cert_pem,
            cert_der,
            issuer: Issuer::new(ca_params(), key),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM, for sandboxes' trust bundles.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate and key for `host` (a DNS name or IP address), signed by this CA.
    pub fn leaf_for(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(leaf) = leaves.get(host) {
            return Ok(Arc::clone(leaf));
        }
        let key = KeyPair::generate().map_err(certificate)?;
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(certificate)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(certificate)?;
        let key_der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| CaError::Certificate(e.to_string()))?;
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
            .map_err(|e| CaError::Certificate(e.to_string()))?;
        let leaf = Arc::new(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            signing_key,
        ));
        if leaves.len() >= MAX_CACHED_LEAVES {
            leaves.clear();
        }
        leaves.insert(host.to_string(), Arc::clone(&leaf));
        Ok(leaf)
    }

    /// Writes `system_bundle`'s certificates followed by this CA to `path` (0644): the file
    /// a sandbox's SSL_CERT_FILE and friends point at.
    pub fn write_bundle(&self, system_bundle: &Path, path: &Path) -> Result<(), CaError> {
        let mut bundle = std::fs::read(system_bundle).unwrap_or_default();
        if !bundle.is_empty() && !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        bundle.extend_from_slice(self.cert_pem.as_bytes());
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        // A copy made for one run (and made again on the next): nothing to keep across a
        // crash, and syncing ~200 KB to disk took tens of milliseconds of every sandbox start.
        write_new(&tmp, &bundle, 0o644, Durable::No)?;
        std::fs::rename(&tmp, path).map_err(|reason| CaError::Io {
            path: path.to_path_buf(),
            reason,
        })
    }
}

/// The CA's parameters; the same every time so a CA loaded from disk signs with the subject
/// its certificate has.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "corral");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn certificate(e: rcgen::Error) -> CaError {
    CaError::Certificate(e.to_string())
}

/// Whether a written file must be on disk before the write returns.
#[derive(PartialEq, Eq)]
enum Durable {
    Yes,
    No,
}

/// Creates `path` with `mode` (failing if it exists, so a racing writer is never clobbered).
fn write_new(path: &Path, content: &[u8], mode: u32, durable: Durable) -> Result<(), CaError> {
    let fail = |reason| CaError::Io {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    file.write_all(content).map_err(fail)?;
    if durable == Durable::Yes {
        file.sync_all().map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

    use super::*;

    /// Serves the leaf for the host the tunnel was opened to (clients send no SNI for IPs).
    #[derive(Debug)]
    struct ForHost(Arc<CertificateAuthority>, String);

    impl ResolvesServerCert for ForHost {
        fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            self.0.leaf_for(&self.1).ok()
        }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Completes a TLS handshake for `name` over loopback; the client trusts `roots`.
    fn handshake(
        ca: Arc<CertificateAuthority>,
        roots: RootCertStore,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server_config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(ForHost(ca, name.to_string())));
        let server = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let mut tls = ServerConnection::new(Arc::new(server_config)).unwrap();
            while tls.is_handshaking() {
                if tls.complete_io(&mut tcp).is_err() {
                    break;
                }
            }
        });
        let client_config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tls = ClientConnection::new(
            Arc::new(client_config),
            ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let mut tcp = TcpStream::connect(address).unwrap();
        let result = loop {
            if !tls.is_handshaking() {
                break Ok(());
            }
            if let Err(e) = tls.complete_io(&mut tcp) {
                break Err(e
                    .into_inner()
                    .and_then(|e| e.downcast::<rustls::Error>().ok())
                    .map(|e| *e)
                    .unwrap_or(rustls::Error::HandshakeNotComplete));
            }
        };
        drop(tcp);
        server.join().unwrap();
        result
    }

    fn roots_with(pem: &str) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
        roots
    }

    #[test]
    fn a_new_ca_keeps_its_key_private_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let first = CertificateAuthority::load_or_create(&ca_dir).unwrap();
        let key_mode = std::fs::metadata(ca_dir.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&ca_dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let second = CertificateAuthority::load_or_create(&ca_dir).unwrap();
        assert_eq!(first.cert_pem(), second.cert_pem());
    }

    #[test]
    fn an_exposed_key_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_create(dir.path()).unwrap();
        let key = dir.path().join(CA_KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = CertificateAuthority::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn clients_trusting_the_ca_accept_its_leaves_even_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let created = CertificateAuthority::load_or_create(dir.path()).unwrap();
        let roots = roots_with(created.cert_pem());
        drop(created);
        // A reloaded CA (a gateway restart) signs leaves the old trust bundle accepts.
        let ca = Arc::new(CertificateAuthority::load_or_create(dir.path()).unwrap());
        handshake(Arc::clone(&ca), roots.clone(), "api.github.com").unwrap();
        handshake(Arc::clone(&ca), roots, "127.0.0.1").unwrap();
    }

    #[test]
    fn clients_not_trusting_the_ca_refuse_its_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let ca = Arc::new(CertificateAuthority::load_or_create(dir.path()).unwrap());
        let stranger = CertificateAuthority::load_or_create(other.path()).unwrap();
        let err = handshake(ca, roots_with(stranger.cert_pem()), "api.github.com").unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    #[test]
    fn the_bundle_is_the_system_roots_plus_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(&dir.path().join("ca")).unwrap();
        let system = dir.path().join("system.pem");
        std::fs::write(
            &system,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
        )
        .unwrap();
        let bundle = dir.path().join("bundle.pem");
        ca.write_bundle(&system, &bundle).unwrap();
        let text = std::fs::read_to_string(&bundle).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"));
        assert!(text.ends_with(ca.cert_pem()));
    }
}

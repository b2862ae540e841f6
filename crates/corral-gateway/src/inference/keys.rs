//! The gateway's provider key: seals provider API keys at rest and derives each sandbox's
//! placeholder key.
//!
//! Threat model: the store may be copied (a backup, a stolen disk image) without the data
//! directory's key file, so provider keys are stored only sealed with ChaCha20-Poly1305 under
//! a 32-byte key in `DATA_DIR/provider.key` (created 0600 on first use, refused if anyone but
//! its owner may read it). The provider's name is the associated data, so a sealed key moved
//! to another provider's row does not open. A sandbox holds only its placeholder: an HMAC of
//! its id, so one sandbox cannot compute another's, and it is worthless outside corral.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Name of the key file in the data directory.
pub const KEY_FILE: &str = "provider.key";

/// Bytes in the key file.
const KEY_LEN: usize = 32;

/// Bytes of the random nonce stored before each sealed key.
const NONCE_LEN: usize = 12;

/// Why the provider key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or created.
    #[error("provider key file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The key file is not 32 bytes, or others may read it.
    #[error("provider key file {}: {reason}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No randomness from the operating system.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// A sealed key did not open: the key file changed, or the row was tampered with.
    #[error(
        "the key of provider {0:?} cannot be unsealed (the provider key file changed?): add the provider again"
    )]
    Unseal(String),
}

/// The gateway's provider key, loaded once.
pub struct ProviderKeys {
    seal: ChaCha20Poly1305,
    placeholder: Hmac<Sha256>,
}

impl ProviderKeys {
    /// Loads `data_dir/provider.key`, creating it (0600, 32 random bytes) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, KeyError> {
        let path = data_dir.join(KEY_FILE);
        let file_error = |source| KeyError::File {
            path: path.clone(),
            source,
        };
        let master = match OpenOptions::new().read(true).open(&path) {
            Ok(mut file) => {
                let mode = file.metadata().map_err(file_error)?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(KeyError::Unusable {
                        path,
                        reason: format!(
                            "mode {:o} lets others read it: chmod 600 it",
                            mode & 0o777
                        ),
                    });
                }
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(file_error)?;
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = vec![0u8; KEY_LEN];
                getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
                // create_new: two gateways starting at once never write two different keys.
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(file_error)?;
                file.write_all(&bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(file_error)?;
                bytes
            }
            Err(e) => return Err(file_error(e)),
        };
        if master.len() != KEY_LEN {
            return Err(KeyError::Unusable {
                path,
                reason: format!("expected {KEY_LEN} bytes, found {}", master.len()),
            });
        }
        Ok(Self::from_master(&master))
    }

    /// Keys derived from `master` (one subkey per use, so the two never share a key).
    fn from_master(master: &[u8]) -> Self {
        let derive = |label: &[u8]| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master)
                .expect("HMAC takes a key of any length");
            mac.update(label);
            mac.finalize().into_bytes()
        };
        let seal_key = derive(b"corral provider key seal v1");
        let placeholder_key = derive(b"corral sandbox placeholder v1");
        Self {
            seal: ChaCha20Poly1305::new(&seal_key),
            placeholder: <Hmac<Sha256> as Mac>::new_from_slice(&placeholder_key)
                .expect("HMAC takes a key of any length"),
        }
    }

    /// Seals `key` for the provider named `provider`: a random nonce, then the ciphertext.
    pub fn seal(&self, provider: &str, key: &str) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| KeyError::Random(e.to_string()))?;
        let payload = Payload {
            msg: key.as_bytes(),
            aad: provider.as_bytes(),
        };
        let sealed = self
            .seal
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| KeyError::Unseal(provider.to_owned()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a key sealed by [`ProviderKeys::seal`] for `provider`.
    pub fn open(&self, provider: &str, sealed: &[u8]) -> Result<String, KeyError> {
        let unseal = || KeyError::Unseal(provider.to_owned());
        if sealed.len() < NONCE_LEN {
            return Err(unseal());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: provider.as_bytes(),
        };
        let plain = self
            .seal
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| unseal())?;
        String::from_utf8(plain).map_err(|_| unseal())
    }

    /// The placeholder key of sandbox `sandbox_id`: what its agent sends instead of a key.
    pub fn placeholder(&self, sandbox_id: &str) -> String {
        let mut mac = self.placeholder.clone();
        mac.update(sandbox_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
        format!("sk-corral-{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_made_0600_and_seals_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ProviderKeys::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = keys.seal("anthropic", "sk-ant-real").unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"sk-ant-real"));
        let again = ProviderKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open("anthropic", &sealed).unwrap(), "sk-ant-real");
        // Bound to its provider: moved to another row it does not open.
        assert!(again.open("openai", &sealed).is_err());
        assert_eq!(keys.placeholder("s1"), again.placeholder("s1"));
        assert_ne!(keys.placeholder("s1"), keys.placeholder("s2"));
    }

    #[test]
    fn a_readable_or_short_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, [0u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            ProviderKeys::load_or_create(dir.path()),
            Err(KeyError::Unusable { .. })
        ));
        std::fs::write(&path, [0u8; 5]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(ProviderKeys::load_or_create(dir.path()).is_err());
    }
}

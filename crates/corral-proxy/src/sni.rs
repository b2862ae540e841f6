//! Reading the server name a TLS client asks for, from the first bytes of a tunnel, without
//! terminating TLS: rustls's `Acceptor` parses the ClientHello from buffered bytes, which are
//! then replayed to the upstream host unchanged.

use std::io::Cursor;

/// What the first bytes of a tunnel turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstBytes {
    /// Not TLS (SSH, plain HTTP…): nothing to check.
    NotTls,
    /// A TLS ClientHello naming this server (`None`: no SNI, as for an IP address).
    ClientHello(Option<String>),
    /// More bytes are needed to tell.
    Incomplete,
    /// It starts like TLS but is not a valid ClientHello.
    Malformed,
}

/// Largest ClientHello the proxy waits for (TLS records are at most 16 KiB plus header; a
/// hello with post-quantum key shares fits in one or two).
pub const MAX_HELLO_BYTES: usize = 32 * 1024;

/// Classifies the bytes read so far from a tunnel's client.
pub fn inspect(buffered: &[u8]) -> FirstBytes {
    match buffered.first() {
        None => return FirstBytes::Incomplete,
        Some(0x16) => {}
        Some(_) => return FirstBytes::NotTls,
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut cursor = Cursor::new(buffered);
    while (cursor.position() as usize) < buffered.len() {
        if acceptor.read_tls(&mut cursor).is_err() {
            return FirstBytes::Malformed;
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            FirstBytes::ClientHello(accepted.client_hello().server_name().map(str::to_string))
        }
        Ok(None) if buffered.len() < MAX_HELLO_BYTES => FirstBytes::Incomplete,
        Ok(None) | Err(_) => FirstBytes::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;

    use super::*;

    fn client_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut client = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn reads_the_server_name_of_a_real_client_hello() {
        let hello = client_hello("api.github.com");
        assert_eq!(
            inspect(&hello),
            FirstBytes::ClientHello(Some("api.github.com".into()))
        );
        assert_eq!(
            inspect(&client_hello("10.0.0.1")),
            FirstBytes::ClientHello(None)
        );
    }

    #[test]
    fn a_partial_hello_asks_for_more_and_other_protocols_pass() {
        let hello = client_hello("example.com");
        for cut in [1, 5, 40, hello.len() - 1] {
            assert_eq!(
                inspect(&hello[..cut]),
                FirstBytes::Incomplete,
                "cut at {cut}"
            );
        }
        assert_eq!(inspect(b"SSH-2.0-OpenSSH_9.2\r\n"), FirstBytes::NotTls);
        assert_eq!(inspect(b"\x16\x03\x01\x00\x05hello"), FirstBytes::Malformed);
    }
}

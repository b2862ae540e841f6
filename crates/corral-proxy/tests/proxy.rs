//! The egress proxy against real servers on loopback, driven over its unix socket the way the
//! sandbox's bridge drives it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::echo_http_server;
use corral_policy::{AuditEvent, AuditLog, PolicyEngine, PolicyHandle, Profile, SandboxIdentity};
use corral_proxy::{EgressProxy, ProxyLimits};

/// A proxy for one sandbox on a socket in a temporary directory, with its audit log.
struct Proxy {
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Proxy {
    fn start(profile_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("egress.sock");
        let profile = Profile::from_toml("test.toml", profile_toml).unwrap();
        let policy = Arc::new(PolicyHandle::from_engine(
            "test",
            PolicyEngine::new(profile).unwrap(),
        ));
        let audit = Arc::new(AuditLog::open(&dir.path().join("audit.jsonl")).unwrap());
        let sandbox = SandboxIdentity {
            id: "sb1".into(),
            ..SandboxIdentity::default()
        };
        let proxy = EgressProxy::new(sandbox, policy, Some(audit), ProxyLimits::default());
        let listener = EgressProxy::bind(&socket).unwrap();
        std::thread::spawn(move || proxy.serve_blocking(listener));
        Self { dir, socket }
    }

    fn connect(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    }

    /// Sends raw request bytes and reads the whole response (the request asks to close).
    fn exchange(&self, request: &str) -> String {
        let mut stream = self.connect();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    }

    fn audit(&self) -> Vec<AuditEvent> {
        audit_events(&self.dir.path().join("audit.jsonl"))
    }
}

fn audit_events(path: &Path) -> Vec<AuditEvent> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A TCP server that echoes bytes back.
fn echo_tcp_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let mut writer = stream;
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    port
}

#[test]
fn an_allowed_request_is_forwarded_without_proxy_credentials() {
    let port = echo_http_server().port();
    let proxy = Proxy::start(&format!("[network]\nallow = [\"127.0.0.1:{port}\"]\n"));
    let response = proxy.exchange(&format!(
        "GET http://127.0.0.1:{port}/hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\nConnection: close\r\n\r\n"
    ));
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.contains("GET /hello?x=1 HTTP/1.1"),
        "origin-form upstream: {response}"
    );
    assert!(
        !response
            .to_ascii_lowercase()
            .contains("proxy-authorization"),
        "{response}"
    );
    let events = proxy.audit();
    let verdicts: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.action.as_str(), e.decision.as_str()))
        .collect();
    assert_eq!(verdicts, [("http_request", "allow"), ("connect", "allow")]);
    assert_eq!(
        events[1].policies,
        [format!("test/network/allow:127.0.0.1:{port}")]
    );
}

#[test]
fn a_denied_host_gets_403_naming_the_policy_without_being_looked_up() {
    let proxy = Proxy::start("[network]\nallow = [\"github.com:443\"]\n");
    let response =
        proxy.exchange("CONNECT exfiltrate-secret.example.invalid:443 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 403 Forbidden"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("x-corral-deny: default-deny"),
        "{response}"
    );
    assert!(
        response.contains("denied by policy default-deny (profile test)"),
        "{response}"
    );
    let events = proxy.audit();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].decision.as_str(), events[0].resource.as_str()),
        ("deny", "exfiltrate-secret.example.invalid:443")
    );
}

#[test]
fn a_name_that_resolves_to_a_private_address_is_refused_unless_granted() {
    let port = echo_http_server().port();
    let request = format!(
        "GET http://localhost:{port}/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let refused = Proxy::start(&format!("[network]\nallow = [\"localhost:{port}\"]\n"));
    let response = refused.exchange(&request);
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(
        response.contains("test/network/non-public-address"),
        "{response}"
    );

    let granted = Proxy::start(&format!(
        "[network]\nallow = [\"localhost:{port}\"]\nallow_private = [\"localhost\"]\n"
    ));
    let response = granted.exchange(&request);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn a_connect_tunnel_carries_bytes_both_ways() {
    let port = echo_tcp_server();
    let proxy = Proxy::start(&format!("[network]\nallow = [\"127.0.0.1:{port}\"]\n"));
    let mut stream = proxy.connect();
    write!(
        stream,
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    stream.write_all(b"SSH-2.0-test\r\nping\n").unwrap();
    let mut echoed = [0u8; 19];
    reader.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"SSH-2.0-test\r\nping\n");
}

#[test]
fn a_connect_tunnel_carries_megabytes_unchanged_and_passes_on_the_close() {
    let port = echo_tcp_server();
    let proxy = Proxy::start(&format!("[network]\nallow = [\"127.0.0.1:{port}\"]\n"));
    let mut stream = proxy.connect();
    write!(
        stream,
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    // More than any copy buffer, in odd-sized writes, so data crosses buffer boundaries.
    let sent: Vec<u8> = (0..16 * 1024 * 1024 + 7)
        .map(|i: usize| (i % 251) as u8)
        .collect();
    let writer = {
        let sent = sent.clone();
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for chunk in sent.chunks(100_003) {
                stream.write_all(chunk).unwrap();
            }
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut echoed = Vec::new();
    reader.read_to_end(&mut echoed).unwrap();
    writer.join().unwrap();
    assert_eq!(echoed.len(), sent.len());
    assert!(echoed == sent, "the tunnel changed the bytes");
}

fn client_hello(server_name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut bytes = Vec::new();
    client.write_tls(&mut bytes).unwrap();
    bytes
}

#[test]
fn a_tls_tunnel_must_name_the_host_it_was_allowed_to() {
    let port = echo_tcp_server();
    let proxy = Proxy::start(&format!(
        "[network]\nallow = [\"localhost:{port}\"]\nallow_private = [\"localhost\"]\n"
    ));
    // Fronting: the tunnel is allowed to localhost, the ClientHello asks for another host.
    let mut stream = proxy.connect();
    write!(
        stream,
        "CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut blank = String::new();
    while blank != "\r\n" {
        blank.clear();
        reader.read_line(&mut blank).unwrap();
    }
    stream
        .write_all(&client_hello("forbidden.example.com"))
        .unwrap();
    let mut back = Vec::new();
    let _ = reader.read_to_end(&mut back);
    assert!(
        back.is_empty(),
        "nothing may reach the upstream or come back: {} bytes",
        back.len()
    );
    let refused = proxy
        .audit()
        .into_iter()
        .find(|e| e.policies == ["sni-mismatch"]);
    let refused = refused.expect("an sni-mismatch audit event");
    assert_eq!(
        (refused.decision.as_str(), refused.resource.as_str()),
        ("deny", &*format!("forbidden.example.com:{port}"))
    );

    // The honest client's hello reaches the upstream (which echoes it back).
    let mut stream = proxy.connect();
    write!(
        stream,
        "CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    let hello = client_hello("localhost");
    stream.write_all(&hello).unwrap();
    let mut echoed = vec![0u8; hello.len()];
    reader.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, hello);
}

#[test]
fn oversized_headers_get_431_and_the_proxy_keeps_serving() {
    let port = echo_http_server().port();
    let proxy = Proxy::start(&format!("[network]\nallow = [\"127.0.0.1:{port}\"]\n"));
    let huge = "a".repeat(64 * 1024);
    let response = proxy.exchange(&format!(
        "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n"
    ));
    assert!(
        response.starts_with("HTTP/1.1 431"),
        "{}",
        &response[..response.len().min(200)]
    );
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let response = proxy.exchange(&format!(
        "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\n{many}\r\n"
    ));
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    let response = proxy.exchange(&format!(
        "GET http://127.0.0.1:{port}/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let port = echo_http_server().port();
    let proxy = Proxy::start(&format!("[network]\nallow = [\"127.0.0.1:{port}\"]\n"));
    let mut stream = proxy.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for path in ["/one", "/two"] {
        write!(
            stream,
            "GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        assert!(String::from_utf8_lossy(&body).starts_with(&format!("GET {path} HTTP/1.1")));
    }
}

#[test]
fn a_non_proxy_request_says_what_to_send() {
    let proxy = Proxy::start("[network]\nallow = []\n");
    let response =
        proxy.exchange("GET /etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("send absolute http:// URLs or CONNECT host:port"),
        "{response}"
    );
}

#[test]
fn a_repeated_request_is_decided_the_same_and_recorded_every_time() {
    let port = echo_http_server().port();
    let proxy = Proxy::start(&format!(
        "[network]\nallow = [\"localhost:{port}\"]\nallow_private = [\"localhost\"]\n"
    ));
    let allowed = format!(
        "GET http://localhost:{port}/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let denied =
        "GET http://denied.example/ HTTP/1.1\r\nHost: denied.example\r\nConnection: close\r\n\r\n";
    for _ in 0..3 {
        assert!(proxy.exchange(&allowed).starts_with("HTTP/1.1 200"));
        assert!(proxy.exchange(denied).starts_with("HTTP/1.1 403"));
    }
    let connects: Vec<(String, String)> = proxy
        .audit()
        .into_iter()
        .filter(|e| e.action == "connect")
        .map(|e| (e.resource, e.decision))
        .collect();
    let allowed_count = connects.iter().filter(|(_, d)| d == "allow").count();
    let denied_count = connects
        .iter()
        .filter(|(r, d)| r.starts_with("denied.example") && d == "deny")
        .count();
    // One decision per resolved address for each allowed request (localhost may resolve to
    // more than one), one by name for each denied one: all recorded, none skipped.
    assert!(allowed_count >= 3, "{connects:?}");
    assert_eq!(allowed_count % 3, 0, "{connects:?}");
    assert_eq!(denied_count, 3, "{connects:?}");
}

#[test]
fn a_wildcard_is_not_a_destination() {
    let proxy = Proxy::start("[network]\nallow = [\"*.example.com:443\"]\n");
    let response =
        proxy.exchange("CONNECT *.example.com:443 HTTP/1.1\r\nHost: *.example.com:443\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("is a pattern, not a host"), "{response}");
    assert!(
        proxy.audit().is_empty(),
        "nothing was decided for a pattern"
    );
}

/// Reads a response head from `reader` and returns it.
fn read_head(reader: &mut impl BufRead) -> String {
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let before = head.len();
        reader.read_line(&mut head).unwrap();
        assert!(head.len() > before, "closed inside a response head: {head}");
    }
    head
}

/// The sandbox's bridge (the supervisor's code) hands each TCP connection it accepts to the
/// proxy: tunnels work through it, denials are answered, and every decision is recorded.
#[test]
fn connections_handed_over_by_the_sandbox_bridge_are_decided_and_served() {
    let port = echo_tcp_server();
    let proxy = Proxy::start(&format!("[network]\nallow = [\"127.0.0.1:{port}\"]\n"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let bridge = listener.local_addr().unwrap();
    corral_sandbox::bridge::serve_to(listener, proxy.socket.clone()).unwrap();
    for _ in 0..3 {
        let mut stream = std::net::TcpStream::connect(bridge).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\nSSH-2.0-x\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        assert!(read_head(&mut reader).starts_with("HTTP/1.1 200"));
        let mut echoed = [0u8; 11];
        reader.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"SSH-2.0-x\r\n");
    }
    let mut denied = std::net::TcpStream::connect(bridge).unwrap();
    denied
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    denied
        .write_all(b"CONNECT 127.0.0.2:22 HTTP/1.1\r\nHost: 127.0.0.2:22\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = denied.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 403 Forbidden"), "{response}");
    assert!(response.contains("x-corral-deny: "), "{response}");
    let verdicts: Vec<String> = proxy
        .audit()
        .iter()
        .map(|e| format!("{} {}", e.resource, e.decision))
        .collect();
    assert_eq!(verdicts.len(), 4, "{verdicts:?}");
    assert!(verdicts[3].ends_with("deny"), "{verdicts:?}");
}

/// A CONNECT after a forwarded request on the same kept connection is tunnelled too.
#[test]
fn a_connect_after_a_forwarded_request_on_one_connection_is_tunnelled() {
    let http = echo_http_server().port();
    let echo = echo_tcp_server();
    let proxy = Proxy::start(&format!(
        "[network]\nallow = [\"127.0.0.1:{http}\", \"127.0.0.1:{echo}\"]\n"
    ));
    let mut stream = proxy.connect();
    write!(
        stream,
        "GET http://127.0.0.1:{http}/first HTTP/1.1\r\nHost: 127.0.0.1:{http}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let head = read_head(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    write!(
        stream,
        "CONNECT 127.0.0.1:{echo} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    assert!(read_head(&mut reader).starts_with("HTTP/1.1 200"));
    stream.write_all(b"SSH-2.0-kept\r\n").unwrap();
    let mut echoed = [0u8; 14];
    reader.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"SSH-2.0-kept\r\n");
}

/// Only a listening TCP socket is taken from a hand-over: anything else passed on the egress
/// socket (here a connected TCP socket) is refused, that connection is closed, and the proxy
/// keeps serving.
#[test]
fn a_handed_over_descriptor_that_is_not_a_listener_is_refused() {
    let port = echo_tcp_server();
    let proxy = Proxy::start(&format!("[network]\nallow = [\"127.0.0.1:{port}\"]\n"));
    let connected = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut channel = proxy.connect();
    corral_splice::handoff::send(&channel, &connected).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        channel.read(&mut byte).unwrap(),
        0,
        "the proxy closes the hand-over"
    );
    let response = proxy.exchange("CONNECT 127.0.0.2:22 HTTP/1.1\r\nHost: 127.0.0.2:22\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
}

/// A server that answers a request asking to upgrade to `websocket` with 101 (after checking
/// the request still asks for it), then echoes bytes.
fn upgrading_echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let head = read_head(&mut reader).to_ascii_lowercase();
                let mut writer = stream;
                if !(head.contains("\r\nupgrade: websocket\r\n")
                    && head.contains("\r\nconnection: upgrade\r\n"))
                {
                    let _ = writer.write_all(
                        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    return;
                }
                writer
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                          Upgrade: websocket\r\n\r\n",
                    )
                    .unwrap();
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    port
}

/// A WebSocket upgrade through the proxy (absolute-URI request; intercepted HTTPS takes the
/// same path): decided as an `http_request`, the Upgrade pair reaches the host, its 101 comes
/// back, and bytes then flow both ways.
#[test]
fn a_websocket_upgrade_is_decided_then_carried_both_ways() {
    let port = upgrading_echo_server();
    let proxy = Proxy::start(&format!("[network]\nallow = [\"127.0.0.1:{port}\"]\n"));
    let mut stream = proxy.connect();
    write!(
        stream,
        "GET http://127.0.0.1:{port}/socket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let head = read_head(&mut reader);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for message in ["frame one", "frame two"] {
        stream.write_all(message.as_bytes()).unwrap();
        let mut echoed = vec![0u8; message.len()];
        reader.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message.as_bytes());
    }
    let verdicts: Vec<(String, String)> = proxy
        .audit()
        .iter()
        .map(|e| (e.action.clone(), e.decision.clone()))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("http_request".to_string(), "allow".to_string()),
            ("connect".to_string(), "allow".to_string())
        ]
    );
}

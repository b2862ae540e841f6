//! Arbitrary bytes on a client connection of the egress proxy (request heads, CONNECT,
//! absolute-URI requests, push bodies), served over an in-memory pipe and followed by EOF.
//!
//! The profile allows no connection, so nothing reaches the network: requests are decided
//! and refused, and pushes are decided ref by ref (main refused, ai/* allowed) before the
//! connection to the remote would be. Invariants: no panic anywhere in the proxy; the
//! connection ends (an answer then a close, or a close) once the input has; whatever the
//! proxy writes starts as an HTTP/1.x response (1.0 to a 1.0 request).
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use corral_policy::{PolicyEngine, PolicyHandle, Profile, SandboxIdentity};
use corral_proxy::{EgressProxy, ProxyLimits};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROFILE: &str = r#"
[network]
allow = []
[[git.push]]
remote = "*"
allow = ["ai/*"]
deny = ["main"]
"#;

/// More than any answer of the proxy; reading stops there.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
});

static PROXY: LazyLock<EgressProxy> = LazyLock::new(|| {
    let profile = Profile::from_toml("fuzz.toml", PROFILE).expect("the fuzz profile parses");
    let engine = PolicyEngine::new(profile).expect("the fuzz profile compiles");
    let policy = Arc::new(PolicyHandle::from_engine("fuzz", engine));
    let sandbox = SandboxIdentity {
        id: "fuzz".into(),
        ..SandboxIdentity::default()
    };
    // Small and short, so oversized input is cut early and nothing waits long.
    let limits = ProxyLimits {
        max_head_bytes: 1024,
        max_headers: 16,
        head_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        hello_timeout: Duration::from_secs(1),
        ..ProxyLimits::default()
    };
    EgressProxy::new(sandbox, policy, None, limits)
});

fuzz_target!(|data: &[u8]| {
    RUNTIME.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let proxy = PROXY.clone();
        let served = tokio::spawn(async move { proxy.serve_connection(server).await });
        let (mut reader, mut writer) = tokio::io::split(client);
        let write = async {
            // The proxy may close before reading everything (a 431): the write then fails.
            let _ = writer.write_all(data).await;
            let _ = writer.shutdown().await;
            writer
        };
        let read = async {
            let mut output = Vec::new();
            let mut chunk = [0u8; 8192];
            while output.len() < MAX_RESPONSE_BYTES {
                match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => output.extend_from_slice(&chunk[..n]),
                }
            }
            output
        };
        let (writer, output) = tokio::join!(write, read);
        assert!(
            output.is_empty() || output.starts_with(b"HTTP/1."),
            "{:?}",
            String::from_utf8_lossy(&output[..output.len().min(200)])
        );
        // Closing the client lets a proxy still writing finish, so this returns.
        drop(reader.unsplit(writer));
        served.await.expect("serve_connection panicked");
    });
});

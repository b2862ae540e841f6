//! The proxies compared: corral's (as `corral run` serves it), the sandbox's own bridge in
//! front of it, a bare CONNECT relay (the floor: what one more hop costs), and
//! tinyproxy.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_policy::{AuditLog, PolicyEngine, PolicyHandle, Profile, SandboxIdentity};
use corral_proxy::{EgressProxy, ProxyLimits};
use tokio::io::AsyncWriteExt;

use crate::servers::{Upstreams, named_thread, read_head};

/// corral's proxy on a unix socket in `dir`, served on its own thread like `corral run` does.
pub fn start_corral(dir: &Path, upstreams: Upstreams) -> PathBuf {
    let socket = dir.join("egress.sock");
    let profile = format!(
        "[network]\nallow = [\"{}\", \"{}\", \"{}\", \"localhost:{}\"]\n\
         allow_private = [\"localhost\"]\n",
        upstreams.bulk,
        upstreams.small,
        upstreams.echo,
        upstreams.echo.port()
    );
    let profile = Profile::from_toml("bench.toml", &profile).unwrap();
    let policy = Arc::new(PolicyHandle::from_engine(
        "bench",
        PolicyEngine::new(profile).unwrap(),
    ));
    let audit = Arc::new(AuditLog::open(&dir.join("audit.jsonl")).unwrap());
    let sandbox = SandboxIdentity {
        id: "bench".into(),
        ..SandboxIdentity::default()
    };
    let proxy = EgressProxy::new(sandbox, policy, Some(audit), ProxyLimits::default());
    let listener = EgressProxy::bind(&socket).unwrap();
    named_thread("corral-proxy", move || proxy.serve_blocking(listener));
    socket
}

/// A bare CONNECT relay on a unix socket in `dir`, on a single-threaded runtime like corral's:
/// reads the request head, connects, answers 200 and copies with the same buffer size as
/// corral's tunnel. No HTTP library, policy, audit or server-name check: the cost of the extra
/// hop itself, which corral's own work adds to.
pub fn start_bare_relay(dir: &Path) -> PathBuf {
    let socket = dir.join("bare.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    named_thread("bare-relay", move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::UnixListener::from_std(listener).unwrap();
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(bare_relay(stream));
            }
        });
    });
    socket
}

async fn bare_relay(mut client: tokio::net::UnixStream) -> std::io::Result<()> {
    let Some(head) = read_head(&mut client).await? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&head);
    let target = head
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
        .ok_or_else(|| std::io::Error::other("not a CONNECT"))?;
    let mut upstream = tokio::net::TcpStream::connect(target).await?;
    client.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await?;
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, 64 * 1024, 64 * 1024)
        .await?;
    Ok(())
}

/// The sandbox's bridge (`corral_sandbox::bridge`, the code the supervisor runs) on a
/// loopback port, handing its listener to the proxy over the proxy's unix socket.
pub fn start_bridge(socket: PathBuf) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    corral_sandbox::bridge::serve_to(listener, socket).unwrap();
    address
}

/// tinyproxy on a loopback port, killed on drop.
pub struct Tinyproxy {
    child: Child,
    /// Where it listens.
    pub address: SocketAddr,
}

impl Tinyproxy {
    /// Starts tinyproxy with a generated config in `dir`, or says why not.
    pub fn start(dir: &Path, clients: usize) -> Result<Self, String> {
        let version = Command::new("tinyproxy").arg("-v").output();
        let version = match version {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            _ => return Err("tinyproxy is not installed (apt-get install tinyproxy)".into()),
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let config = dir.join("tinyproxy.conf");
        // No ConnectPort line: CONNECT to any port. MaxClients above the client threads.
        let text = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients {}\nAllow 127.0.0.1\n\
             LogLevel Critical\nLogFile \"{}\"\nPidFile \"{}\"\n",
            clients.max(16) * 4,
            dir.join("tinyproxy.log").display(),
            dir.join("tinyproxy.pid").display(),
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start tinyproxy: {e}"))?;
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let proxy = Self { child, address };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(address).is_err() {
            if Instant::now() > deadline {
                return Err("tinyproxy did not start listening within 5 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} on {address}", version.trim());
        Ok(proxy)
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

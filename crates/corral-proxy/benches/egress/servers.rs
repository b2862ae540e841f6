//! The upstream servers: a bulk download, small HTTP answers, and an echo, all on one thread's
//! single-threaded tokio runtime.

use std::net::{SocketAddr, TcpListener};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::{BULK_CHUNK, SMALL_BODY};

/// The upstream servers' addresses.
#[derive(Clone, Copy)]
pub struct Upstreams {
    /// Answers one request with `bulk_bytes` of body.
    pub bulk: SocketAddr,
    /// Answers every request with [`SMALL_BODY`], keeping the connection unless asked to close.
    pub small: SocketAddr,
    /// Echoes bytes back.
    pub echo: SocketAddr,
}

/// Starts a thread named for profiles (`perf report --sort comm`).
pub fn named_thread<F: FnOnce() -> T + Send + 'static, T: Send + 'static>(name: &str, f: F) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("start a thread");
}

/// Starts the bulk, small-HTTP and echo servers on one thread's single-threaded runtime.
pub fn start_upstreams(bulk_bytes: u64) -> Upstreams {
    let bind = || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    };
    let (bulk, small, echo) = (bind(), bind(), bind());
    let addresses = Upstreams {
        bulk: bulk.local_addr().unwrap(),
        small: small.local_addr().unwrap(),
        echo: echo.local_addr().unwrap(),
    };
    named_thread("upstreams", move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let bulk = tokio::net::TcpListener::from_std(bulk).unwrap();
            let small = tokio::net::TcpListener::from_std(small).unwrap();
            let echo = tokio::net::TcpListener::from_std(echo).unwrap();
            tokio::spawn(accept_each(bulk, move |s| serve_bulk(s, bulk_bytes)));
            tokio::spawn(accept_each(small, serve_small));
            accept_each(echo, serve_echo).await;
        });
    });
    addresses
}

async fn accept_each<F, Fut>(listener: tokio::net::TcpListener, serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream));
    }
}

/// Reads one request head (no body); `None` at a clean end of the connection.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Some(head))
}

async fn serve_bulk(mut stream: tokio::net::TcpStream, bytes: u64) -> std::io::Result<()> {
    if read_head(&mut stream).await?.is_none() {
        return Ok(());
    }
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {bytes}\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let chunk = vec![0x5a_u8; BULK_CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BULK_CHUNK as u64) as usize;
        stream.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    stream.shutdown().await
}

async fn serve_small(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    while let Some(head) = read_head(&mut stream).await? {
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let close = head.contains("connection: close") || head.contains("http/1.0\r\n");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n{}\r\n",
            SMALL_BODY.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        let mut out = response.into_bytes();
        out.extend_from_slice(SMALL_BODY);
        stream.write_all(&out).await?;
        if close {
            return stream.shutdown().await;
        }
    }
    Ok(())
}

async fn serve_echo(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

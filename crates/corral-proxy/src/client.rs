//! A client connection of the proxy, and how it opens: a CONNECT as the first request is read
//! here from the raw stream and answered without an HTTP library (so its tunnel can splice
//! bytes between the sockets, see [`corral_splice`]); anything else goes to hyper with the
//! bytes already read put back in front.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A client connection: any byte stream, which may be a socket bytes can be spliced to.
pub(crate) trait Client: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The connection as a socket, when it is one.
    fn into_socket(self) -> Result<Socket, Self>
    where
        Self: Sized;
}

/// A client connection that is a socket.
pub(crate) enum Socket {
    /// Connected to the sandbox's egress socket.
    Unix(UnixStream),
    /// Accepted by the sandbox's bridge inside the sandbox and handed to the proxy.
    Tcp(TcpStream),
}

impl Client for UnixStream {
    fn into_socket(self) -> Result<Socket, Self> {
        Ok(Socket::Unix(self))
    }
}

impl Client for TcpStream {
    fn into_socket(self) -> Result<Socket, Self> {
        Ok(Socket::Tcp(self))
    }
}

/// A byte stream that is not a socket (an in-memory pipe in tests and fuzzing, hyper's
/// upgraded connection): tunnels through it copy bytes.
pub(crate) struct Opaque<S>(pub S);

impl<S> Client for Opaque<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn into_socket(self) -> Result<Socket, Self> {
        Err(self)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Opaque<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Opaque<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A CONNECT request head read from the raw stream.
pub(crate) struct ConnectHead {
    /// The request target (authority form, `host:port`), parsed.
    pub target: hyper::Uri,
    /// Whether the request was HTTP/1.0 (answered in 1.0).
    pub http10: bool,
    /// Bytes the client sent after the head: the start of the tunnel.
    pub rest: Vec<u8>,
}

/// How a client connection opens.
pub(crate) enum Opening {
    /// A complete, well-formed CONNECT.
    Connect(ConnectHead),
    /// Anything else (another method, or a head hyper must answer with an error): the
    /// bytes read so far, to be read again by hyper.
    Other(Vec<u8>),
    /// The client closed, failed or took longer than `timeout` before saying anything.
    Closed,
}

const CONNECT: &[u8] = b"CONNECT ";

/// Reads the start of `client` (after `buffer`, bytes already read from it) until it is
/// known to be a complete CONNECT head or something else. Only CONNECTs that parse cleanly
/// (httparse, the parser hyper itself uses, with the same limits on size and header count)
/// are taken here; everything else is handed to hyper, which reads it again and answers it
/// (400, 431, …) exactly as for any connection.
pub(crate) async fn read_opening<C: AsyncRead + Unpin>(
    client: &mut C,
    mut buffer: Vec<u8>,
    max_head_bytes: usize,
    max_headers: usize,
    timeout: Duration,
) -> Opening {
    let read = async {
        buffer.reserve(max_head_bytes.min(4096));
        loop {
            if let Some(opening) = classify(&mut buffer, max_head_bytes, max_headers) {
                return opening;
            }
            // Room for one byte past the limit, so an oversized head is seen as one.
            let room = (max_head_bytes + 1).saturating_sub(buffer.len());
            let mut limited = (&mut *client).take(room as u64);
            match limited.read_buf(&mut buffer).await {
                Ok(0) | Err(_) if buffer.is_empty() => return Opening::Closed,
                Ok(0) | Err(_) => return Opening::Other(buffer),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Opening::Closed)
}

/// What the bytes read so far open with (`None`: more are needed).
fn classify(buffer: &mut Vec<u8>, max_head_bytes: usize, max_headers: usize) -> Option<Opening> {
    if buffer.is_empty() {
        return None;
    }
    let start = buffer.len().min(CONNECT.len());
    if buffer[..start] != CONNECT[..start] || buffer.len() > max_head_bytes {
        return Some(Opening::Other(std::mem::take(buffer)));
    }
    if buffer.len() < CONNECT.len() {
        return None;
    }
    match parse_connect(buffer, max_headers) {
        Parsed::Complete(length, target, http10) => Some(Opening::Connect(ConnectHead {
            target,
            http10,
            rest: buffer.split_off(length),
        })),
        Parsed::Partial => None,
        Parsed::Invalid => Some(Opening::Other(std::mem::take(buffer))),
    }
}

/// What [`parse_connect`] made of a buffer starting with `CONNECT `.
enum Parsed {
    /// A CONNECT head of this many bytes, its target and whether it is HTTP/1.0.
    Complete(usize, hyper::Uri, bool),
    /// The head is not complete yet.
    Partial,
    /// Not a head this module answers (hyper is to).
    Invalid,
}

fn parse_connect(buffer: &[u8], max_headers: usize) -> Parsed {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => {
            let (Some("CONNECT"), Some(path), Some(version)) =
                (request.method, request.path, request.version)
            else {
                return Parsed::Invalid;
            };
            match path.parse::<hyper::Uri>() {
                Ok(target) => Parsed::Complete(length, target, version == 0),
                Err(_) => Parsed::Invalid,
            }
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(input: &[u8]) -> Opening {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                tokio::io::AsyncWriteExt::write_all(&mut client, input)
                    .await
                    .unwrap();
                drop(client);
                read_opening(&mut server, Vec::new(), 1024, 10, Duration::from_secs(5)).await
            })
    }

    #[test]
    fn a_connect_head_is_read_and_what_follows_kept_for_the_tunnel() {
        let Opening::Connect(head) =
            open(b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03")
        else {
            panic!("not read as a CONNECT");
        };
        assert_eq!(head.target.authority().unwrap().as_str(), "example.com:443");
        assert!(!head.http10);
        assert_eq!(head.rest, b"\x16\x03");
    }

    #[test]
    fn everything_else_goes_to_hyper_with_the_bytes_read() {
        let huge = format!("CONNECT a:1 HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        let cases: [&[u8]; 5] = [
            b"GET http://example.com/ HTTP/1.1\r\n\r\n",
            b"CONNECTED",
            b"CONNECT ex%41mple.com:443 HTTP/1.1\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\nX\0Y: 1\r\n\r\n",
            huge.as_bytes(),
        ];
        for input in cases {
            match open(input) {
                Opening::Other(read) => assert!(input.starts_with(&read), "{input:?}"),
                _ => panic!(
                    "{:?} was not handed to hyper",
                    String::from_utf8_lossy(input)
                ),
            }
        }
        assert!(matches!(open(b""), Opening::Closed));
    }
}

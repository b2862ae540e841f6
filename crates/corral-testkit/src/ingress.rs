//! Helpers for ingress tests: raw HTTP/1.1 requests with any Host (or several, or an
//! absolute-form target) sent to a gateway, and small servers to run inside sandboxes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::gateway::{Gateway, post};

/// A WebSocket echo server (python3 standard library only) to run in a sandbox as
/// `python3 -c WS_ECHO PORT`. A plain HTTP request gets a text answer listing the headers it
/// arrived with (`host=`, `x-forwarded-for=`, `x-forwarded-host=`, `x-forwarded-proto=`,
/// `cookie=`, `authorization=`, `path=`), so tests can see what the sandbox was sent.
pub const WS_ECHO: &str = r#"
import socket, threading, hashlib, base64, struct, sys
G = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b
def serve(c):
    try:
        req = b""
        while b"\r\n\r\n" not in req:
            d = c.recv(65536)
            if not d:
                return
            req += d
        head, rest = req.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        h = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            h[k.strip().lower()] = v.strip()
        if h.get("upgrade", "").lower() != "websocket":
            n = int(h.get("content-length", "0"))
            while len(rest) < n:
                d = c.recv(65536)
                if not d:
                    return
                rest += d
            keys = ["host", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "cookie", "authorization"]
            body = " ".join("%s=%s" % (k, h.get(k, "-")) for k in keys)
            body += " path=%s body=%d" % (lines[0].split(" ")[1], len(rest))
            body = body.encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            return
        key = base64.b64encode(hashlib.sha1(h["sec-websocket-key"].encode() + G).digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + key + b"\r\n\r\n")
        while True:
            b1, b2 = exact(c, 2)
            op, n = b1 & 15, b2 & 127
            if n == 126:
                n = struct.unpack(">H", exact(c, 2))[0]
            elif n == 127:
                n = struct.unpack(">Q", exact(c, 8))[0]
            m = exact(c, 4)
            data = bytes(x ^ m[i % 4] for i, x in enumerate(exact(c, n)))
            if op == 8:
                c.sendall(b"\x88\x00")
                return
            hd = bytes([128 | op])
            if len(data) < 126:
                hd += bytes([len(data)])
            elif len(data) < 65536:
                hd += bytes([126]) + struct.pack(">H", len(data))
            else:
                hd += bytes([127]) + struct.pack(">Q", len(data))
            c.sendall(hd + data)
    except (EOFError, OSError, KeyError):
        pass
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The port [`echo_sandbox`] serves on.
pub const ECHO_PORT: u16 = 8765;

/// Creates (as `token`'s user) a sandbox running [`WS_ECHO`] on [`ECHO_PORT`] under the
/// `full` profile (python must run); returns its JSON.
pub fn echo_sandbox(gw: &Gateway, token: &str) -> Value {
    let port = ECHO_PORT.to_string();
    let (status, body) = post(
        &gw.api("/sandboxes"),
        token,
        json!({
            "profile": "full",
            "command": ["python3", "-c", WS_ECHO, port],
            "ports": [ECHO_PORT],
        }),
    );
    assert_eq!(status, 201, "{body}");
    body
}

/// A response read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header lines as (lowercased name, value).
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl RawResponse {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The `host:port` a gateway listens on.
pub fn address(gw: &Gateway) -> String {
    gw.url.trim_start_matches("http://").to_owned()
}

/// Sends `head` (request line and headers, without the final blank line; `Connection:
/// close` is added) to the gateway and reads the whole answer. A hang guard of 90 s.
pub fn raw(gw: &Gateway, head: &str) -> RawResponse {
    let mut stream = TcpStream::connect(address(gw)).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    write!(stream, "{head}\r\nConnection: close\r\n\r\n").unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read the answer");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: dechunk(body),
    }
}

/// `GET path` at `host` with a bearer token (if any) and extra header lines.
pub fn get_at(
    gw: &Gateway,
    host: &str,
    path: &str,
    token: Option<&str>,
    extra: &[&str],
) -> RawResponse {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}");
    if let Some(token) = token {
        head.push_str(&format!("\r\nAuthorization: Bearer {token}"));
    }
    for line in extra {
        head.push_str("\r\n");
        head.push_str(line);
    }
    raw(gw, &head)
}

/// The body of a chunked message, or `body` unchanged if it is not chunked.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if size == 0 {
            return out;
        }
        if after.len() < size {
            return body.to_owned();
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

/// Sends `head` like [`raw`] but reads a streamed answer only until `needle` appears (90 s
/// hang guard), leaving the stream open; returns what was read.
pub fn read_until(gw: &Gateway, head: &str, needle: &str) -> String {
    let mut stream = TcpStream::connect(address(gw)).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    write!(stream, "{head}\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = stream.read(&mut buf).expect("read the stream");
        assert!(
            n > 0,
            "the stream ended before {needle:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

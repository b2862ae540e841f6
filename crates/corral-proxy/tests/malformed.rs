//! Malformed, oversized and truncated input gets a clean answer or a clean close, never a
//! panic: request heads driven through `serve_connection` over an in-memory pipe, the git
//! push guard's pkt-line parser, and the TLS ClientHello reader. The fuzz targets in
//! `crates/corral-proxy/fuzz` explore the same surfaces without bounds; these cases pin the
//! exact behaviour in the normal (stable) suite.

use std::io::Write as _;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use corral_policy::{PolicyEngine, PolicyHandle, Profile, SandboxIdentity};
use corral_proxy::git_receive_pack::{self, MAX_REF_UPDATES, ReceivePackError};
use corral_proxy::sni::{self, FirstBytes};
use corral_proxy::{EgressProxy, ProxyLimits};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// No connection is allowed, so nothing here touches the network; pushes are decided (main
/// refused, ai/* allowed) before the connection to the remote would be.
const NOTHING_ALLOWED: &str = r#"
[network]
allow = []
[[git.push]]
remote = "*"
allow = ["ai/*"]
deny = ["main"]
"#;

const OID_A: &str = "1111111111111111111111111111111111111111";
const OID_B: &str = "2222222222222222222222222222222222222222";

/// The proxy every case talks to (one: building the policy engine is the slow part), with
/// small limits so the oversized cases stay small.
static PROXY: LazyLock<EgressProxy> = LazyLock::new(|| {
    let profile = Profile::from_toml("malformed.toml", NOTHING_ALLOWED).unwrap();
    let policy = Arc::new(PolicyHandle::from_engine(
        "malformed",
        PolicyEngine::new(profile).unwrap(),
    ));
    let sandbox = SandboxIdentity {
        id: "sb-malformed".into(),
        ..SandboxIdentity::default()
    };
    let limits = ProxyLimits {
        max_head_bytes: 1024,
        max_headers: 10,
        head_timeout: Duration::from_secs(5),
        ..ProxyLimits::default()
    };
    EgressProxy::new(sandbox, policy, None, limits)
});

/// How the client side of a test connection ends its input.
#[derive(Clone, Copy)]
enum Then {
    /// Keep the connection open for writing: the proxy must close it.
    KeepOpen,
    /// Shut down the write side after the input (EOF for the proxy).
    Eof,
}

/// Sends `input` to a fresh connection of `proxy` and returns every byte the proxy wrote
/// until it closed the connection.
async fn exchange(proxy: &EgressProxy, input: &[u8], then: Then) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let proxy = proxy.clone();
    let served = tokio::spawn(async move { proxy.serve_connection(server).await });
    let (mut reader, mut writer) = tokio::io::split(client);
    let write = async {
        // The proxy may close before reading everything (431): the write then fails.
        let _ = writer.write_all(input).await;
        if let Then::Eof = then {
            let _ = writer.shutdown().await;
        }
        writer
    };
    let read = async {
        let mut output = Vec::new();
        reader.read_to_end(&mut output).await.unwrap();
        output
    };
    let (_writer, output) = tokio::join!(write, read);
    served.await.expect("serve_connection panicked");
    output
}

fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn status_line(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    text.lines().next().unwrap_or_default().to_string()
}

/// Request heads and what the proxy must answer to each before closing the connection.
#[test]
fn malformed_request_heads_get_a_clean_status_and_a_close() {
    let huge_header = format!(
        "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nX-Big: {}\r\n\r\n",
        "a".repeat(2000)
    );
    let many_headers = format!(
        "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n{}\r\n",
        (0..11)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage request line",
            b"HELLO\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "request line without a version",
            b"GET http://example.com/\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "unknown HTTP version",
            b"GET http://example.com/ HTTP/9.9\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "HTTP/2 prior-knowledge preface: closed without an answer",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            "",
        ),
        (
            "asterisk-form target in HTTP/1.0 (from the request_head fuzz target)",
            b"PRI * HTTP/1.0\r\n\r\nSM\r\n\r\n".to_vec(),
            "HTTP/1.0 400 Bad Request",
        ),
        (
            "HTTP/1.0 request (answered in 1.0, then closed)",
            b"GET http://example.com/ HTTP/1.0\r\n\r\n".to_vec(),
            "HTTP/1.0 403 Forbidden",
        ),
        (
            "head over max_head_bytes",
            huge_header.into_bytes(),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            "more headers than max_headers",
            many_headers.into_bytes(),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            "non-UTF-8 request target",
            b"GET http://example.com/\xff\xfe HTTP/1.1\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "NUL in a header name",
            b"GET http://example.com/ HTTP/1.1\r\nX\0Y: 1\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "CONNECT without a port",
            b"CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "CONNECT to a path",
            b"CONNECT /x HTTP/1.1\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "CONNECT to a host the policy does not allow",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
            "HTTP/1.1 403 Forbidden",
        ),
        (
            "CONNECT to a host that is not a host name",
            b"CONNECT ex%41mple.com:443 HTTP/1.1\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
    ];
    for (what, input, expected) in cases {
        let output = run(exchange(&PROXY, &input, Then::KeepOpen));
        assert_eq!(
            status_line(&output),
            expected,
            "{what}: {}",
            String::from_utf8_lossy(&output)
        );
    }
}

/// Requests the proxy parses but refuses to forward; `Connection: close` ends each exchange.
#[test]
fn requests_it_cannot_forward_are_refused_with_the_reason() {
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        (
            "origin-form target",
            "GET / HTTP/1.1\r\nHost: example.com\r\n",
            "HTTP/1.1 400 Bad Request",
            "send absolute http:// URLs",
        ),
        (
            "https:// target without CONNECT",
            "GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n",
            "HTTP/1.1 400 Bad Request",
            "send absolute http:// URLs",
        ),
        (
            "absolute URI with a host that is not a host name",
            "GET http://ex!ample.com/ HTTP/1.1\r\n",
            "HTTP/1.1 400 Bad Request",
            "is not a host name",
        ),
        (
            // The absolute URI decides where the request goes; the Host header is rewritten.
            "Host header naming another host than the URI",
            "GET http://example.com/ HTTP/1.1\r\nHost: other.example\r\n",
            "HTTP/1.1 403 Forbidden",
            "connect to example.com:80 denied",
        ),
        (
            "non-UTF-8 header value",
            "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nX-Bin: \u{ff}\r\n",
            "HTTP/1.1 403 Forbidden",
            "denied by policy",
        ),
        (
            "host the policy does not allow",
            "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n",
            "HTTP/1.1 403 Forbidden",
            "denied by policy",
        ),
    ];
    for (what, head, expected, reason) in cases {
        let input = format!("{head}Connection: close\r\n\r\n");
        let output = run(exchange(&PROXY, input.as_bytes(), Then::KeepOpen));
        let text = String::from_utf8_lossy(&output);
        assert_eq!(status_line(&output), expected, "{what}: {text}");
        assert!(text.contains(reason), "{what}: {text}");
    }
}

/// A head cut off anywhere, then EOF: the proxy closes without answering and without error.
#[test]
fn a_truncated_head_then_eof_is_a_clean_close() {
    let head = b"GET http://example.com/path HTTP/1.1\r\nHost: example.com\r\nX-A: b\r\n\r\n";
    run(async {
        for cut in 1..head.len() - 1 {
            let output = exchange(&PROXY, &head[..cut], Then::Eof).await;
            assert_eq!(output, b"", "cut at {cut}");
        }
    });
}

fn pkt(payload: &str) -> Vec<u8> {
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload.as_bytes());
    out
}

fn push_request(body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut request = format!(
        "POST http://git.example/acme/app.git/git-receive-pack HTTP/1.1\r\n\
         Host: git.example\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Push bodies the guard cannot read are refused with a 400 naming the problem; nothing is
/// forwarded (the policy would not even allow the connection).
#[test]
fn malformed_push_bodies_are_refused_before_any_upstream() {
    let main = [
        pkt(&format!("{OID_A} {OID_B} refs/heads/main\0report-status\n")),
        b"0000PACK".to_vec(),
    ]
    .concat();
    let too_many: Vec<u8> = (0..=MAX_REF_UPDATES)
        .flat_map(|i| pkt(&format!("{OID_A} {OID_B} refs/heads/ai/{i}\n")))
        .collect();
    // Shallow lines never end the command list; 5 MiB of them compress to a few KiB.
    let shallow = pkt(&format!("shallow {}\n", "a".repeat(65000)));
    let gzip_bomb = gzip(&shallow.repeat(5 * 1024 * 1024 / shallow.len()));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "non-hex pkt-line length",
            push_request(b"zzzz", ""),
            "malformed pkt-line length",
        ),
        (
            "pkt-line length 3",
            push_request(b"0003", ""),
            "malformed pkt-line length",
        ),
        (
            "pkt-line longer than git allows",
            push_request(b"fff1", ""),
            "malformed pkt-line length",
        ),
        (
            "command that is not a ref update",
            push_request(&pkt("hello world\n"), ""),
            "malformed ref update",
        ),
        (
            "ref outside refs/",
            push_request(&pkt(&format!("{OID_A} {OID_B} main\n")), ""),
            "malformed ref update",
        ),
        (
            "signed push",
            push_request(&pkt("push-cert\0report-status\n"), ""),
            "signed pushes",
        ),
        (
            "more ref updates than the guard reads",
            push_request(&too_many, ""),
            "more than 10000 ref updates",
        ),
        (
            "body ends before the flush-pkt",
            push_request(&main[..main.len() - 8], ""),
            "ended before its ref updates",
        ),
        (
            "gzip body that is not gzip",
            push_request(b"not gzip at all", "Content-Encoding: gzip\r\n"),
            "bad gzip body",
        ),
        (
            "gzip body that decodes past the bound (a gzip bomb)",
            push_request(&gzip_bomb, "Content-Encoding: gzip\r\n"),
            "the ref updates exceed 4194304 bytes",
        ),
        (
            "encoding the guard cannot read",
            push_request(&main, "Content-Encoding: br\r\n"),
            "cannot inspect a push sent with content-encoding \"br\"",
        ),
    ];
    for (what, input, reason) in cases {
        let output = run(exchange(&PROXY, &input, Then::KeepOpen));
        let text = String::from_utf8_lossy(&output);
        assert_eq!(
            status_line(&output),
            "HTTP/1.1 400 Bad Request",
            "{what}: {text}"
        );
        assert!(text.contains(reason), "{what}: {text}");
    }
}

/// A well-formed push is decided ref by ref, gzipped or in tiny chunks; the refused one gets a
/// receive-pack report, the allowed one goes on to the connect decision (denied here).
#[test]
fn well_formed_pushes_are_decided_plain_and_gzipped() {
    let main = [
        pkt(&format!("{OID_A} {OID_B} refs/heads/main\0report-status\n")),
        b"0000PACK".to_vec(),
    ]
    .concat();
    let ai = [
        pkt(&format!("{OID_A} {OID_B} refs/heads/ai/x\0report-status\n")),
        b"0000PACK".to_vec(),
    ]
    .concat();
    for (body, headers) in [
        (main.clone(), ""),
        (gzip(&main), "Content-Encoding: gzip\r\n"),
    ] {
        let output = run(exchange(
            &PROXY,
            &push_request(&body, headers),
            Then::KeepOpen,
        ));
        let text = String::from_utf8_lossy(&output);
        assert_eq!(status_line(&output), "HTTP/1.1 200 OK", "{text}");
        assert!(text.contains("ng refs/heads/main corral: "), "{text}");
    }
    // Sent one byte per chunk: the guard reads on until the flush-pkt arrives.
    let mut chunked = b"POST http://git.example/acme/app.git/git-receive-pack HTTP/1.1\r\n\
        Host: git.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    for byte in &main {
        chunked.extend_from_slice(b"1\r\n");
        chunked.push(*byte);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let output = run(exchange(&PROXY, &chunked, Then::KeepOpen));
    let text = String::from_utf8_lossy(&output);
    assert_eq!(status_line(&output), "HTTP/1.1 200 OK", "{text}");
    assert!(text.contains("ng refs/heads/main corral: "), "{text}");

    for (body, headers) in [(ai.clone(), ""), (gzip(&ai), "Content-Encoding: gzip\r\n")] {
        let output = run(exchange(
            &PROXY,
            &push_request(&body, headers),
            Then::KeepOpen,
        ));
        let text = String::from_utf8_lossy(&output);
        assert_eq!(status_line(&output), "HTTP/1.1 403 Forbidden", "{text}");
        assert!(text.contains("connect to git.example:80 denied"), "{text}");
    }
}

/// Reads a pkt-line stream to its end; panics on anything that is not one.
fn assert_pkt_lines(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let header = std::str::from_utf8(&bytes[..4]).unwrap();
        let len = usize::from_str_radix(header, 16).unwrap();
        assert!(len == 0 || (5..=65520).contains(&len), "length {len}");
        bytes = &bytes[len.max(4)..];
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes never panic the parser, and anything it accepts is a real command list.
    #[test]
    fn pkt_line_parser_accepts_only_well_formed_command_lists(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(Some(commands)) = git_receive_pack::parse_commands(&body) {
            prop_assert!(commands.length <= body.len());
            prop_assert_eq!(&body[commands.length - 4..commands.length], b"0000");
            for update in &commands.updates {
                prop_assert!(update.name.starts_with("refs/"));
            }
            assert_pkt_lines(&git_receive_pack::refusal(&commands, &[(0, "x".into())]));
        }
    }

    /// Arbitrary bytes, TLS-looking or not, are classified without panicking.
    #[test]
    fn client_hello_reader_classifies_any_bytes(
        tls in any::<bool>(),
        rest in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let bytes = if tls { [&[0x16, 0x03, 0x01][..], &rest].concat() } else { rest };
        let _ = sni::inspect(&bytes);
    }

    /// Arbitrary bytes on a connection end in an answer or a close, never a panic or a hang.
    #[test]
    fn any_bytes_on_a_connection_end_cleanly(
        prefix in "(GET|POST|CONNECT) (http://[a-z.]{1,12}/|[a-z.]{1,12}:[0-9]{1,5}) HTTP/1.1\r\n",
        rest in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let input = [prefix.as_bytes(), &rest].concat();
        let output = run(exchange(&PROXY, &input, Then::Eof));
        prop_assert!(output.is_empty() || output.starts_with(b"HTTP/1."));
    }
}

proptest! {
    // Every cut of each generated request is parsed: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Valid command lists, cut anywhere before their flush-pkt, ask for more bytes; with
    /// garbage after the flush-pkt they parse the same; and their refusal is valid pkt-lines.
    #[test]
    fn pkt_line_parser_handles_truncation_and_trailing_bytes(
        refs in proptest::collection::vec("[a-z/]{1,30}", 1..8),
        caps in "(report-status|side-band-64k|side-band| )*",
        reason in "\\PC{0,600}",
        trailing in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut body: Vec<u8> = refs
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                let caps = if i == 0 { format!("\0{caps}") } else { String::new() };
                pkt(&format!("{OID_A} {OID_B} refs/heads/{r}{caps}\n"))
            })
            .collect();
        body.extend_from_slice(b"0000");
        let flushed = body.len();
        for cut in 0..flushed {
            prop_assert_eq!(git_receive_pack::parse_commands(&body[..cut]), Ok(None));
        }
        body.extend_from_slice(&trailing);
        let commands = git_receive_pack::parse_commands(&body).unwrap().unwrap();
        prop_assert_eq!(commands.length, flushed);
        prop_assert_eq!(commands.updates.len(), refs.len());
        let denied: Vec<(usize, String)> = (0..refs.len() + 2).map(|i| (i, reason.clone())).collect();
        assert_pkt_lines(&git_receive_pack::refusal(&commands, &denied));
    }
}

#[test]
fn oversized_pkt_line_lengths_are_refused_at_the_header() {
    assert_eq!(
        git_receive_pack::parse_commands(b"fff1"),
        Err(ReceivePackError::BadLength("fff1".into()))
    );
    assert_eq!(
        git_receive_pack::parse_commands(b"FFFF"),
        Err(ReceivePackError::BadLength("FFFF".into()))
    );
    // The largest length git sends waits for its payload instead of reading past the input.
    assert_eq!(git_receive_pack::parse_commands(b"fff0abc"), Ok(None));
}

#[test]
fn truncated_and_garbage_tls_is_incomplete_or_malformed() {
    assert_eq!(sni::inspect(b""), FirstBytes::Incomplete);
    assert_eq!(sni::inspect(b"\x16"), FirstBytes::Incomplete);
    assert_eq!(
        sni::inspect(b"\x16\x03\x01\x00\x10"),
        FirstBytes::Incomplete
    );
    // Longer than TLS allows a record to be.
    assert_eq!(sni::inspect(b"\x16\x03\x01\xff\xff"), FirstBytes::Malformed);
    // Not a ClientHello.
    assert_eq!(
        sni::inspect(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00"),
        FirstBytes::Malformed
    );
    // A record announcing more than the proxy waits for is refused once that much arrived.
    let big = [
        &b"\x16\x03\x01\x40\x00\x01\xff\xff\xff"[..],
        &[0u8; 40 * 1024],
    ]
    .concat();
    assert_eq!(sni::inspect(&big), FirstBytes::Malformed);
}

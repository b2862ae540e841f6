//! Egress throughput and latency, in one run: a 1 GiB download, small HTTP requests, and the
//! time to a first byte over a new connection — directly over loopback, through corral's
//! proxy, and through tinyproxy (issue 4's benchmark).
//!
//! Run: `cargo bench -p corral-proxy --bench egress` (or `bash benches/egress.sh`, which
//! installs tinyproxy first). Prints markdown tables. Sizes come from the environment, read
//! once in [`Settings::from_env`].
//!
//! Set-up. The upstream servers (bulk, small HTTP, echo) share one thread running a
//! single-threaded tokio runtime. corral's proxy is served the way `corral run` serves it:
//! [`EgressProxy::serve_blocking`] on a thread of its own, default limits, an audit log, a
//! TOML profile naming the upstream addresses. The "corral" rows reach it over its unix
//! socket; the "corral via bridge" rows add the sandbox's own bridge
//! (`corral_sandbox::bridge`: a loopback TCP listener handed to the proxy over its unix
//! socket, whose connections the proxy then accepts itself), the path a program
//! inside `corral run` takes. The "bare relay" rows are the floor: a minimal CONNECT
//! relay on the same kind of runtime, with no HTTP library, policy or audit, so the difference
//! to corral is corral's own work per connection. tinyproxy runs as a child process on a loopback port
//! with a generated config; without it its rows are skipped with a message. Clients are
//! blocking threads with `TCP_NODELAY`.

// A bench binary: nothing here is a public API.
#![allow(missing_docs)]

mod proxies;
mod servers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proxies::{Tinyproxy, start_bare_relay, start_bridge, start_corral};
use servers::start_upstreams;

/// The small response every small request gets.
const SMALL_BODY: &[u8] = b"hello, world\n";

/// Buffer size of the bulk server's writes and the bulk client's reads.
const BULK_CHUNK: usize = 256 * 1024;

/// What to measure and how much, from the environment.
struct Settings {
    /// Bytes in the bulk download (`EGRESS_BENCH_BYTES`, default 1 GiB).
    bulk_bytes: u64,
    /// Downloads per way; the median is reported (`EGRESS_BENCH_ROUNDS`, default 5).
    bulk_rounds: usize,
    /// Seconds of small requests per way and mode (`EGRESS_BENCH_SECONDS`, default 3).
    request_seconds: f64,
    /// Client threads sending small requests at once (`EGRESS_BENCH_CLIENTS`, default 4).
    clients: usize,
    /// New connections timed per way (`EGRESS_BENCH_SAMPLES`, default 5000).
    latency_samples: usize,
}

impl Settings {
    fn from_env() -> Self {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        }
        Self {
            bulk_bytes: var("EGRESS_BENCH_BYTES", 1 << 30),
            bulk_rounds: var("EGRESS_BENCH_ROUNDS", 5),
            request_seconds: var("EGRESS_BENCH_SECONDS", 3.0),
            clients: var("EGRESS_BENCH_CLIENTS", 4),
            latency_samples: var("EGRESS_BENCH_SAMPLES", 5000),
        }
    }
}

/// How a client reaches the upstream.
#[derive(Clone)]
enum Via {
    /// TCP to the upstream itself.
    Direct,
    /// corral's unix socket.
    Unix(PathBuf),
    /// A proxy on a loopback TCP port (tinyproxy, or the bridge in front of corral).
    Tcp(SocketAddr),
}

/// One of the ways compared.
#[derive(Clone)]
struct Way {
    name: &'static str,
    via: Via,
    /// The proxy closes a client connection after each forwarded request without saying so
    /// (tinyproxy's `Connection: close` goes upstream only), so clients open one per request.
    closes_client_connections: bool,
    /// Forwards absolute-URI requests (the bare relay only tunnels).
    forwards: bool,
    /// CONNECT names `localhost` (resolved by the proxy per connection) rather than the
    /// address.
    by_name: bool,
}

/// A client's connection: TCP or unix.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn tcp(address: SocketAddr) -> Conn {
    let stream = TcpStream::connect(address).expect("connect over loopback");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    Conn::Tcp(stream)
}

impl Way {
    /// A connection to the proxy itself (the upstream itself when direct).
    fn dial(&self, upstream: SocketAddr) -> Conn {
        match &self.via {
            Via::Direct => tcp(upstream),
            Via::Unix(path) => Conn::Unix(UnixStream::connect(path).expect("connect to corral")),
            Via::Tcp(proxy) => tcp(*proxy),
        }
    }

    /// A byte stream to `upstream`: a CONNECT tunnel through the proxy, or TCP when direct.
    fn tunnel(&self, upstream: SocketAddr) -> Conn {
        let mut conn = self.dial(upstream);
        if matches!(self.via, Via::Direct) {
            return conn;
        }
        let target = if self.by_name {
            format!("localhost:{}", upstream.port())
        } else {
            upstream.to_string()
        };
        write!(conn, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
        // One read usually holds the whole reply; nothing follows it until we send.
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = conn.read(&mut buf).expect("read the CONNECT reply");
            assert!(n > 0, "{}: proxy closed during CONNECT", self.name);
            head.extend_from_slice(&buf[..n]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"),
            "{}: CONNECT refused: {}",
            self.name,
            String::from_utf8_lossy(&head)
        );
        conn
    }
}

/// Reads one response to a small request; returns whether the server keeps the connection.
fn read_small_response(reader: &mut BufReader<Conn>) -> std::io::Result<bool> {
    let mut line = String::new();
    let mut length = None;
    let mut keep = true;
    reader.read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if line.starts_with("HTTP/1.0") {
        keep = false;
    }
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        } else if header.starts_with("connection:") {
            keep = header.contains("keep-alive") || (keep && !header.contains("close"));
        }
    }
    let mut body = vec![0u8; length.expect("a content-length")];
    reader.read_exact(&mut body)?;
    assert_eq!(body, SMALL_BODY);
    Ok(keep)
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// Downloads the bulk body through a tunnel; returns bytes per second.
fn download(way: &Way, upstream: SocketAddr, bytes: u64) -> f64 {
    let start = Instant::now();
    let mut conn = way.tunnel(upstream);
    conn.write_all(b"GET /bulk HTTP/1.1\r\nHost: bulk\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::with_capacity(BULK_CHUNK, conn);
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        assert!(!line.is_empty(), "{}: bulk response ended early", way.name);
    }
    let mut buf = vec![0u8; BULK_CHUNK];
    let mut got = 0u64;
    while got < bytes {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "{}: bulk body ended after {got} bytes", way.name);
        got += n as u64;
    }
    bytes as f64 / start.elapsed().as_secs_f64()
}

/// How small requests are sent.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Origin-form requests on one kept-alive TCP connection to the upstream (direct only).
    KeepAlive,
    /// A new TCP connection per origin-form request (direct only).
    NewConnection,
    /// Absolute-URI requests to the proxy, the client connection kept while the proxy keeps it.
    Forward,
    /// A new connection and CONNECT tunnel per request.
    ConnectPerRequest,
}

impl Mode {
    fn describe(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive connection",
            Mode::NewConnection => "new TCP connection per request",
            Mode::Forward => {
                "absolute-URI forwarding, client connection kept if the proxy keeps it"
            }
            Mode::ConnectPerRequest => "new connection + CONNECT per request",
        }
    }
}

/// Small requests per second from `clients` threads for `seconds`, and client connections
/// opened per request.
fn requests_per_second(
    way: &Way,
    mode: Mode,
    upstream: SocketAddr,
    clients: usize,
    seconds: f64,
) -> (f64, f64) {
    let keep = matches!(mode, Mode::KeepAlive | Mode::Forward) && !way.closes_client_connections;
    let request = match mode {
        Mode::Forward => {
            format!("GET http://{upstream}/small HTTP/1.1\r\nHost: {upstream}\r\n\r\n")
        }
        Mode::KeepAlive => format!("GET /small HTTP/1.1\r\nHost: {upstream}\r\n\r\n"),
        Mode::NewConnection | Mode::ConnectPerRequest => {
            format!("GET /small HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n\r\n")
        }
    };
    let open = || match mode {
        Mode::ConnectPerRequest => way.tunnel(upstream),
        _ => way.dial(upstream),
    };
    let run = |duration: Duration, done: &AtomicU64, opened: &AtomicU64| {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..clients {
                scope.spawn(|| {
                    let mut conn: Option<BufReader<Conn>> = None;
                    let (mut count, mut connections) = (0, 0);
                    while start.elapsed() < duration {
                        let reader = conn.get_or_insert_with(|| {
                            connections += 1;
                            BufReader::new(open())
                        });
                        reader.get_mut().write_all(request.as_bytes()).unwrap();
                        let kept = read_small_response(reader)
                            .unwrap_or_else(|e| panic!("{}, {}: {e}", way.name, mode.describe()));
                        count += 1;
                        if !(keep && kept) {
                            conn = None;
                        }
                    }
                    done.fetch_add(count, Ordering::Relaxed);
                    opened.fetch_add(connections, Ordering::Relaxed);
                });
            }
        });
        start.elapsed().as_secs_f64()
    };
    let (done, opened) = (AtomicU64::new(0), AtomicU64::new(0));
    run(Duration::from_secs_f64(seconds / 6.0), &done, &opened);
    let (done, opened) = (AtomicU64::new(0), AtomicU64::new(0));
    let elapsed = run(Duration::from_secs_f64(seconds), &done, &opened);
    let done = done.into_inner() as f64;
    (done / elapsed, opened.into_inner() as f64 / done)
}

/// Time from starting to open a new connection (through the proxy: connect, CONNECT, reply)
/// to the first byte echoed by the upstream, in microseconds.
fn first_byte_micros(way: &Way, echo: SocketAddr) -> f64 {
    let start = Instant::now();
    let mut conn = way.tunnel(echo);
    conn.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    conn.read_exact(&mut byte).unwrap();
    let elapsed = start.elapsed().as_secs_f64() * 1e6;
    assert_eq!(&byte, b"x");
    elapsed
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 0.5)
}

// ---------------------------------------------------------------------------------------------
// The run

fn main() {
    let settings = Settings::from_env();
    let dir = tempfile::tempdir().unwrap();
    let upstreams = start_upstreams(settings.bulk_bytes);
    let corral_socket = start_corral(dir.path(), upstreams);
    let bridge = start_bridge(corral_socket.clone());
    let bare = start_bare_relay(dir.path());
    let tinyproxy = match Tinyproxy::start(dir.path(), settings.clients) {
        Ok(proxy) => Some(proxy),
        Err(why) => {
            eprintln!("skipping tinyproxy: {why}");
            None
        }
    };
    let direct = Way {
        name: "direct",
        via: Via::Direct,
        closes_client_connections: false,
        by_name: false,
        forwards: true,
    };
    let mut proxies = vec![
        Way {
            name: "bare relay (floor)",
            via: Via::Unix(bare),
            closes_client_connections: false,
            by_name: false,
            forwards: false,
        },
        Way {
            name: "corral",
            via: Via::Unix(corral_socket),
            closes_client_connections: false,
            by_name: false,
            forwards: true,
        },
        Way {
            name: "corral via bridge",
            via: Via::Tcp(bridge),
            closes_client_connections: false,
            by_name: false,
            forwards: true,
        },
    ];
    if let Some(proxy) = &tinyproxy {
        proxies.push(Way {
            name: "tinyproxy",
            via: Via::Tcp(proxy.address),
            closes_client_connections: true,
            by_name: false,
            forwards: true,
        });
    }
    let ways: Vec<Way> = std::iter::once(direct.clone())
        .chain(proxies.iter().cloned())
        .collect();
    let find = |results: &[(String, f64)], name: &str| {
        results.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    };
    let ratio = |value: f64, of: Option<f64>| match of {
        Some(of) if of > 0.0 => format!("{:.2}×", value / of),
        _ => "—".into(),
    };

    // (a) Bulk throughput: rounds interleave the ways so drifting load hits all of them.
    let mib = settings.bulk_bytes as f64 / (1 << 20) as f64;
    eprintln!(
        "bulk: {mib:.0} MiB download, {} rounds",
        settings.bulk_rounds
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    for _ in 0..settings.bulk_rounds {
        for (way, rates) in ways.iter().zip(&mut rates) {
            rates.push(download(way, upstreams.bulk, settings.bulk_bytes) / (1 << 20) as f64);
        }
    }
    let bulk: Vec<(String, f64)> = ways
        .iter()
        .zip(&rates)
        .map(|(w, r)| (w.name.to_string(), median(r)))
        .collect();
    println!(
        "\n### Bulk download ({mib:.0} MiB through a CONNECT tunnel; median of {} rounds)\n",
        settings.bulk_rounds
    );
    println!("| way | MiB/s (median) | min–max | vs direct | vs tinyproxy |");
    println!("|---|---:|---:|---:|---:|");
    for ((name, rate), all) in bulk.iter().zip(&rates) {
        let (lo, hi) = all
            .iter()
            .fold((f64::MAX, 0.0_f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        println!(
            "| {name} | {rate:.0} | {lo:.0}–{hi:.0} | {} | {} |",
            ratio(*rate, find(&bulk, "direct")),
            ratio(*rate, find(&bulk, "tinyproxy"))
        );
    }

    // (b) Small requests per second.
    eprintln!(
        "requests: {} clients, {} s per row",
        settings.clients, settings.request_seconds
    );
    let mut rows: Vec<(String, Mode, f64, f64)> = Vec::new();
    let mut plan = vec![
        (direct.clone(), Mode::KeepAlive),
        (direct.clone(), Mode::NewConnection),
    ];
    for way in &proxies {
        if way.forwards {
            plan.push((way.clone(), Mode::Forward));
        }
        plan.push((way.clone(), Mode::ConnectPerRequest));
    }
    for (way, mode) in plan {
        let (rate, per_request) = requests_per_second(
            &way,
            mode,
            upstreams.small,
            settings.clients,
            settings.request_seconds,
        );
        rows.push((way.name.to_string(), mode, rate, per_request));
    }
    println!(
        "\n### Small HTTP requests ({} client threads, {} s per row)\n",
        settings.clients, settings.request_seconds
    );
    println!(
        "| way | how | req/s | client connections per request | vs direct keep-alive | vs direct new connection | vs tinyproxy, same mode |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let rate_of = |name: &str, mode: Mode| {
        rows.iter()
            .find(|(n, m, _, _)| n == name && *m == mode)
            .map(|r| r.2)
    };
    for (name, mode, rate, per_request) in &rows {
        println!(
            "| {name} | {} | {rate:.0} | {per_request:.2} | {} | {} | {} |",
            mode.describe(),
            ratio(*rate, rate_of("direct", Mode::KeepAlive)),
            ratio(*rate, rate_of("direct", Mode::NewConnection)),
            ratio(*rate, rate_of("tinyproxy", *mode)),
        );
    }

    // (c) Time to first byte over a new connection, samples interleaved across the ways, and
    // through each proxy again with a name it must resolve (through getaddrinfo and
    // /etc/hosts, no DNS server involved).
    let mut ways = ways;
    let named: Vec<Way> = ways
        .iter()
        .filter_map(|way| {
            let name = match way.name {
                "corral" => "corral, CONNECT localhost",
                "tinyproxy" => "tinyproxy, CONNECT localhost",
                _ => return None,
            };
            Some(Way {
                name,
                by_name: true,
                ..way.clone()
            })
        })
        .collect();
    ways.extend(named);
    eprintln!("latency: {} samples per way", settings.latency_samples);
    for way in &ways {
        for _ in 0..200 {
            first_byte_micros(way, upstreams.echo);
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(settings.latency_samples); ways.len()];
    for _ in 0..settings.latency_samples {
        for (way, samples) in ways.iter().zip(&mut samples) {
            samples.push(first_byte_micros(way, upstreams.echo));
        }
    }
    let stats: Vec<(String, f64, f64)> = ways
        .iter()
        .zip(&mut samples)
        .map(|(way, s)| {
            s.sort_by(f64::total_cmp);
            (
                way.name.to_string(),
                percentile(s, 0.5),
                percentile(s, 0.99),
            )
        })
        .collect();
    println!(
        "\n### New connection: connect (+ CONNECT and its reply) to the first echoed byte ({} samples)\n",
        settings.latency_samples
    );
    println!("| way | p50 µs | p99 µs | added p50 vs direct | added p99 vs direct |");
    println!("|---|---:|---:|---:|---:|");
    let (base50, base99) = (stats[0].1, stats[0].2);
    for (name, p50, p99) in &stats {
        println!(
            "| {name} | {p50:.1} | {p99:.1} | {:+.1} µs | {:+.1} µs |",
            p50 - base50,
            p99 - base99
        );
    }
    drop(tinyproxy);
}

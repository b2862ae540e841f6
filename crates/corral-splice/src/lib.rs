//! Relaying bytes between two connected sockets without copying them through user space: each
//! direction splices (splice(2)) from its source socket into a pipe of its own and from the
//! pipe into the other socket, driven by tokio's readiness, so a tunnel costs two syscalls per
//! pipe-full and no copy into or out of the process. Where the kernel cannot splice a socket
//! (`EINVAL`), that direction falls back to read/write through a buffer, from the first byte
//! not yet sent.
//!
//! Used by the egress proxy's CONNECT tunnels and by the supervisor's bridges, which also
//! hand whole connections to the proxy ([`handoff`]). Every call is safe rustix; the crate has
//! no `unsafe`.
#![forbid(unsafe_code)]

pub mod handoff;

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::io::Errno;
use rustix::net::Shutdown;
use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::{Interest, Ready};
use tokio::net::{TcpStream, UnixStream};

/// Most bytes moved by one splice into a new pipe: the default pipe capacity (16 pages), so
/// one call fills the pipe and the next empties it.
const CHUNK: usize = 64 * 1024;

/// Capacity a pipe grows to once its direction has filled it (a bulk transfer): 16× fewer
/// syscalls per byte. Pipe pages are only allocated for bytes in flight, and the kernel caps
/// each user's pipe capacity (`fs.pipe-user-pages-soft`); when it refuses, the pipe keeps
/// its default size.
const BULK_PIPE: usize = 1024 * 1024;

/// Buffer of the read/write fallback.
const COPY_BUFFER: usize = 64 * 1024;

/// A connected, non-blocking socket registered with tokio: what [`relay`] moves bytes between.
pub trait Socket: AsFd {
    /// Waits until the socket may be ready for `interest`.
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send;

    /// Runs `f` (a non-blocking operation on the socket) if the socket is ready for
    /// `interest`, clearing that readiness when `f` would block.
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl Socket for TcpStream {
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send {
        TcpStream::ready(self, interest)
    }

    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        TcpStream::try_io(self, interest, f)
    }
}

impl Socket for UnixStream {
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send {
        UnixStream::ready(self, interest)
    }

    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        UnixStream::try_io(self, interest, f)
    }
}

/// Bytes a finished [`relay`] carried each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    /// From the first socket to the second.
    pub forward: u64,
    /// From the second socket to the first.
    pub backward: u64,
}

/// A [`relay`] that ended in an error (a reset, a peer gone mid-transfer), with the bytes it
/// had carried by then.
#[derive(Debug)]
pub struct Interrupted {
    /// What went through before the error.
    pub carried: Carried,
    /// The error.
    pub error: io::Error,
}

/// Moves bytes both ways between `a` and `b` until both directions have ended: a source's
/// end of stream shuts down the other socket's writing side (so half-closes pass through),
/// and an error in either direction ends both. Either way, says how many bytes went through.
pub async fn relay<A, B>(a: &A, b: &B) -> Result<Carried, Interrupted>
where
    A: Socket + Sync,
    B: Socket + Sync,
{
    let (forward, backward) = (AtomicU64::new(0), AtomicU64::new(0));
    let ended = tokio::try_join!(one_way(a, b, &forward), one_way(b, a, &backward));
    let carried = Carried {
        forward: forward.load(Ordering::Relaxed),
        backward: backward.load(Ordering::Relaxed),
    };
    match ended {
        Ok(_) => Ok(carried),
        Err(error) => Err(Interrupted { carried, error }),
    }
}

/// Moves bytes from `src` to `dst` until `src` ends, then shuts down `dst`'s writing side;
/// adds every byte delivered to `dst` to `moved` as it goes.
async fn one_way<S: Socket + Sync, D: Socket + Sync>(
    src: &S,
    dst: &D,
    moved: &AtomicU64,
) -> io::Result<()> {
    let spliced = match Pipe::take() {
        Ok(mut pipe) => {
            let spliced = splice_one_way(src, dst, &mut pipe, moved).await?;
            if let Spliced::Ended = spliced {
                pipe.give_back();
            }
            spliced
        }
        Err(_) => Spliced::Unsupported {
            pending: Vec::new(),
        },
    };
    if let Spliced::Unsupported { pending } = spliced {
        copy_one_way(src, dst, pending, moved).await?;
    }
    // The peer may already be gone; nothing more is to be sent either way.
    let _ = rustix::net::shutdown(dst.as_fd(), Shutdown::Write);
    Ok(())
}

/// How a splice loop ended.
enum Spliced {
    /// `src` ended.
    Ended,
    /// The kernel cannot splice one of the sockets: `pending` bytes were taken out of the
    /// pipe and are still to be sent.
    Unsupported { pending: Vec<u8> },
}

/// A pipe for one direction, both ends non-blocking.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Whether it was grown past the default capacity.
    grown: bool,
}

/// Empty default-size pipes kept per thread for the next relay (a new pipe is two file
/// descriptors, two files and an inode to create and tear down, about as much kernel work as
/// a short tunnel's splicing). Each holds no pages while empty; the kernel counts its 16-page
/// capacity against the user's pipe allowance, so few are kept.
const POOLED_PIPES: usize = 32;

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// A pipe from this thread's pool, or a new one.
    fn take() -> io::Result<Self> {
        if let Some(pipe) = POOL.with_borrow_mut(Vec::pop) {
            return Ok(pipe);
        }
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Pipe {
            read,
            write,
            grown: false,
        })
    }

    /// Keeps this pipe, which must be empty, for another relay on this thread (a grown pipe
    /// is closed instead).
    fn give_back(self) {
        if !self.grown {
            POOL.with_borrow_mut(|pool| {
                if pool.len() < POOLED_PIPES {
                    pool.push(self);
                }
            });
        }
    }
}

const SPLICE: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Splices from `src` through `pipe` (empty, and left empty when `src` ends) to `dst`,
/// adding what reaches `dst` to `moved`.
async fn splice_one_way<S: Socket, D: Socket>(
    src: &S,
    dst: &D,
    pipe: &mut Pipe,
    moved: &AtomicU64,
) -> io::Result<Spliced> {
    let mut chunk = CHUNK;
    loop {
        // The pipe is empty here, so a splice that would block waits on the socket.
        let filled = io_when_ready(src, Interest::READABLE, || {
            Ok(rustix::pipe::splice(
                src.as_fd(),
                None,
                &pipe.write,
                None,
                chunk,
                SPLICE,
            )?)
        })
        .await;
        let mut in_pipe = match filled {
            Ok(0) => return Ok(Spliced::Ended),
            Ok(n) if n == CHUNK && !pipe.grown => {
                pipe.grown = true;
                chunk = rustix::pipe::fcntl_setpipe_size(&pipe.write, BULK_PIPE).unwrap_or(CHUNK);
                n
            }
            Ok(n) => n,
            Err(e) if unsupported(&e) => {
                return Ok(Spliced::Unsupported {
                    pending: Vec::new(),
                });
            }
            Err(e) => return Err(e),
        };
        while in_pipe > 0 {
            let drained = io_when_ready(dst, Interest::WRITABLE, || {
                Ok(rustix::pipe::splice(
                    &pipe.read,
                    None,
                    dst.as_fd(),
                    None,
                    in_pipe,
                    SPLICE,
                )?)
            })
            .await;
            match drained {
                Ok(n) => {
                    in_pipe -= n;
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if unsupported(&e) => {
                    let mut pending = vec![0; in_pipe];
                    let n = rustix::io::read(&pipe.read, &mut pending)?;
                    pending.truncate(n);
                    return Ok(Spliced::Unsupported { pending });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether `e` says the kernel cannot splice this kind of file.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP)
    )
}

/// Sends `pending`, then copies from `src` to `dst` through a buffer until `src` ends,
/// adding what reaches `dst` to `moved`.
async fn copy_one_way<S: Socket, D: Socket>(
    src: &S,
    dst: &D,
    pending: Vec<u8>,
    moved: &AtomicU64,
) -> io::Result<()> {
    let mut buffer = pending;
    let mut filled = buffer.len();
    buffer.resize(COPY_BUFFER.max(filled), 0);
    loop {
        let mut sent = 0;
        while sent < filled {
            let n = io_when_ready(dst, Interest::WRITABLE, || {
                Ok(rustix::io::write(dst.as_fd(), &buffer[sent..filled])?)
            })
            .await?;
            sent += n;
            moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        filled = io_when_ready(src, Interest::READABLE, || {
            Ok(rustix::io::read(src.as_fd(), &mut buffer[..])?)
        })
        .await?;
        if filled == 0 {
            return Ok(());
        }
    }
}

/// Runs `f` on `socket` once it is ready for `interest`, waiting again whenever `f` would
/// block.
pub(crate) async fn io_when_ready<S: Socket, R>(
    socket: &S,
    interest: Interest,
    mut f: impl FnMut() -> io::Result<R>,
) -> io::Result<R> {
    loop {
        socket.ready(interest).await?;
        match socket.try_io(interest, &mut f) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    /// A unix client relayed to a TCP server: megabytes each way arrive unchanged, and each
    /// side's close reaches the other as end of stream.
    #[tokio::test]
    async fn carries_bytes_both_ways_and_passes_on_each_close() {
        let (mut client, relay_client) = UnixStream::pair().unwrap();
        let (relay_server, mut server) = tcp_pair().await;
        let relayed = tokio::spawn(async move { relay(&relay_client, &relay_server).await });
        let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
        let (up_sent, down_sent) = (up.clone(), down.clone());
        let server_side = tokio::spawn(async move {
            let (mut read, mut write) = server.split();
            let mut got = Vec::new();
            let (r, w) = tokio::join!(read.read_to_end(&mut got), async {
                write.write_all(&down_sent).await?;
                write.shutdown().await
            });
            r.unwrap();
            w.unwrap();
            got
        });
        let (mut read, mut write) = client.split();
        let mut got = Vec::new();
        let (r, w) = tokio::join!(read.read_to_end(&mut got), async {
            write.write_all(&up_sent).await?;
            write.shutdown().await
        });
        r.unwrap();
        w.unwrap();
        assert!(got == down, "the server's bytes arrive unchanged");
        assert!(
            server_side.await.unwrap() == up,
            "the client's bytes arrive unchanged"
        );
        let carried = relayed.await.unwrap().unwrap();
        assert_eq!(
            carried,
            Carried {
                forward: up.len() as u64,
                backward: down.len() as u64
            }
        );
    }

    /// A peer that resets its connection ends the relay with an error, not a hang.
    #[tokio::test]
    async fn a_reset_ends_the_relay() {
        let (client, relay_client) = UnixStream::pair().unwrap();
        let (relay_server, server) = tcp_pair().await;
        server.set_zero_linger().unwrap();
        drop(server);
        let relayed = tokio::spawn(async move { relay(&relay_client, &relay_server).await });
        let mut client = client;
        // The reset server ends the backward direction; writing forward then fails.
        let _ = client.write_all(&[0u8; 1 << 20]).await;
        drop(client);
        assert!(relayed.await.unwrap().is_err());
    }

    /// A relay cut by a reset still says what it carried before: the bytes the server sent
    /// (and the client read) before it reset the connection.
    #[tokio::test]
    async fn an_interrupted_relay_counts_what_went_through() {
        let (mut client, relay_client) = UnixStream::pair().unwrap();
        let (relay_server, mut server) = tcp_pair().await;
        let relayed = tokio::spawn(async move { relay(&relay_client, &relay_server).await });
        let sent = vec![7u8; 100_000];
        server.write_all(&sent).await.unwrap();
        let mut got = vec![0u8; sent.len()];
        client.read_exact(&mut got).await.unwrap();
        server.set_zero_linger().unwrap();
        drop(server);
        let interrupted = relayed.await.unwrap().unwrap_err();
        assert_eq!(
            interrupted.carried,
            Carried {
                forward: 0,
                backward: sent.len() as u64
            }
        );
        assert_eq!(interrupted.error.kind(), io::ErrorKind::ConnectionReset);
    }
}

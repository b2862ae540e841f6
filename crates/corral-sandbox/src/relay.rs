//! Byte relays the supervisor runs for the bridges (egress out, ingress in): a bounded number
//! of connections at once, each copied both ways on threads of its own, each direction closed
//! when its source ends.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Connections relayed at once per listener; more wait in the listen backlog. Bounds the
/// supervisor's threads however many connections are opened.
const MAX_CONNECTIONS: usize = 256;

/// A stream that can be split into a reading and a writing handle and half-closed.
pub trait Duplex: Read + Write + Send + Sized + 'static {
    /// A second handle to the same stream.
    fn duplicate(&self) -> io::Result<Self>;
    /// Closes one or both directions.
    fn close(&self, how: Shutdown);
}

impl Duplex for TcpStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn close(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

impl Duplex for UnixStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn close(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

/// Accepts from `incoming` forever on a thread named `name`, handing each connection to
/// `carry` on a thread of its own, at most [`MAX_CONNECTIONS`] at once (more are closed).
pub fn serve<C, I>(name: &str, incoming: I, carry: fn(C) -> io::Result<()>) -> io::Result<()>
where
    C: Duplex,
    I: Iterator<Item = io::Result<C>> + Send + 'static,
{
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for stream in incoming.flatten() {
                if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
                    stream.close(Shutdown::Both);
                    continue;
                }
                active.fetch_add(1, Ordering::AcqRel);
                let active = Arc::clone(&active);
                let spawned = std::thread::Builder::new().spawn(move || {
                    let _ = carry(stream);
                    active.fetch_sub(1, Ordering::AcqRel);
                });
                // Out of threads (the sandbox's pids limit): the connection is dropped.
                drop(spawned);
            }
        })?;
    Ok(())
}

/// Copies bytes both ways between `a` and `b` until both directions have ended.
pub fn both_ways<A: Duplex, B: Duplex>(a: A, b: B) -> io::Result<()> {
    let (mut a_read, mut b_write) = (a.duplicate()?, b.duplicate()?);
    let forward = std::thread::Builder::new().spawn(move || {
        let _ = io::copy(&mut a_read, &mut b_write);
        b_write.close(Shutdown::Write);
    })?;
    let (mut b_read, mut a_write) = (b, a);
    let _ = io::copy(&mut b_read, &mut a_write);
    a_write.close(Shutdown::Write);
    let _ = forward.join();
    Ok(())
}

//! Handing a connected socket to another process over a unix socket (`SCM_RIGHTS`), so a
//! relay can step out of the path: the sandbox's bridge passes each connection it accepts to
//! the egress proxy, which then reads and writes (splices) that connection itself.
//!
//! A message is one byte ([`MARK`]) carrying one descriptor. The receiver validates what it
//! gets ([`tcp_stream`]): a descriptor from a peer is only ever used as a connected TCP
//! stream.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketType,
};
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

use crate::io_when_ready;

/// The byte each handed-over descriptor travels with.
pub const MARK: u8 = 0;

/// Descriptors one [`receive`] takes at most (more in one message are closed by the kernel).
const MAX_FDS: usize = 4;

/// Sends `socket` over `channel`, waiting while the channel is full.
pub async fn send(channel: &UnixStream, socket: impl AsFd) -> io::Result<()> {
    let fds = [socket.as_fd()];
    loop {
        let sent = io_when_ready(channel, Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            Ok(rustix::net::sendmsg(
                channel,
                &[IoSlice::new(&[MARK])],
                &mut control,
                SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
            )?)
        })
        .await?;
        if sent == 1 {
            return Ok(());
        }
    }
}

/// What one [`receive`] got: bytes (empty at end of stream) and the descriptors that came
/// with them.
pub struct Received {
    /// The bytes read.
    pub data: Vec<u8>,
    /// Descriptors passed with them.
    pub fds: Vec<OwnedFd>,
}

/// Reads up to `max` bytes from `channel`, with any descriptors passed along (close-on-exec).
pub async fn receive(channel: &UnixStream, max: usize) -> io::Result<Received> {
    let mut data = vec![0u8; max.max(1)];
    let mut fds = Vec::new();
    let n = io_when_ready(channel, Interest::READABLE, || {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            channel,
            &mut [IoSliceMut::new(&mut data)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        )?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(passed) = message {
                fds.extend(passed);
            }
        }
        Ok(got.bytes)
    })
    .await?;
    data.truncate(n);
    Ok(Received { data, fds })
}

/// `fd` as a tokio TCP stream, if it is a connected IPv4 or IPv6 stream socket; anything
/// else (a file, a listening socket, a unix socket) is refused and closed.
pub fn tcp_stream(fd: OwnedFd) -> io::Result<TcpStream> {
    let refused = |what: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            what.to_string(),
        ))
    };
    if rustix::net::sockopt::socket_type(&fd)? != SocketType::STREAM {
        return refused("a handed-over descriptor is not a stream socket");
    }
    let domain = rustix::net::sockopt::socket_domain(&fd)?;
    if domain != AddressFamily::INET && domain != AddressFamily::INET6 {
        return refused("a handed-over socket is not TCP");
    }
    if rustix::net::getpeername(&fd)?.is_none() {
        return refused("a handed-over socket is not connected");
    }
    let stream = std::net::TcpStream::from(fd);
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A TCP connection handed over a unix socket is the same connection on the other side;
    /// a descriptor that is not a connected TCP socket is refused.
    #[tokio::test]
    async fn a_handed_connection_is_the_same_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        let (mut client, accepted) = (client.unwrap(), accepted.unwrap().0);
        let (sender, receiver) = UnixStream::pair().unwrap();
        send(&sender, &accepted).await.unwrap();
        drop(accepted);
        let got = receive(&receiver, 16).await.unwrap();
        assert_eq!(got.data, [MARK]);
        let [fd] = <[OwnedFd; 1]>::try_from(got.fds).unwrap();
        let mut handed = tcp_stream(fd).unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        handed.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        send(&sender, &listener).await.unwrap();
        let got = receive(&receiver, 16).await.unwrap();
        let [fd] = <[OwnedFd; 1]>::try_from(got.fds).unwrap();
        assert!(tcp_stream(fd).is_err(), "a listening socket is refused");
        send(&sender, &sender).await.unwrap();
        let got = receive(&receiver, 16).await.unwrap();
        let [fd] = <[OwnedFd; 1]>::try_from(got.fds).unwrap();
        assert!(tcp_stream(fd).is_err(), "a unix socket is refused");
    }
}

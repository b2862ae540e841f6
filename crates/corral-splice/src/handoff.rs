//! Handing a socket to another process over a unix socket (`SCM_RIGHTS`), so a relay can
//! step out of the path: the sandbox's bridge passes its listening socket to the egress
//! proxy, which then accepts, reads and writes (splices) the sandbox's connections itself.
//!
//! The sandbox's ingress socket does the same the other way in: its supervisor connects to a
//! port on the sandbox's loopback and hands the connected socket to the gateway, which then
//! talks to the server itself.
//!
//! A message is one byte ([`MARK`]) carrying one descriptor. The receiver validates what it
//! gets ([`tcp_listener`], [`tcp_stream`]): a descriptor from a peer is only ever used as the
//! kind of TCP socket it asked for.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketType,
};
use tokio::io::Interest;
use tokio::net::{TcpListener, UnixStream};

use crate::io_when_ready;

/// The byte each handed-over descriptor travels with.
pub const MARK: u8 = 0;

/// Descriptors one [`receive`] takes at most (more in one message are closed by the kernel).
const MAX_FDS: usize = 4;

/// Sends `socket` over `channel` (a blocking unix socket: the call waits while the channel
/// is full).
pub fn send(channel: impl AsFd, socket: impl AsFd) -> io::Result<()> {
    let fds = [socket.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let sent = rustix::net::sendmsg(
        channel,
        &[IoSlice::new(&[MARK])],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent == 1 {
        Ok(())
    } else {
        Err(io::ErrorKind::WriteZero.into())
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

/// `fd` as a tokio TCP listener, if it is a listening IPv4 or IPv6 stream socket; anything
/// else (a file, a connected socket, a unix socket) is refused and closed.
pub fn tcp_listener(fd: OwnedFd) -> io::Result<TcpListener> {
    check_tcp(&fd)?;
    if !rustix::net::sockopt::socket_acceptconn(&fd)? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a handed-over socket is not listening",
        ));
    }
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// `fd` as a tokio TCP stream, if it is a connected IPv4 or IPv6 stream socket; anything else
/// (a file, a listening socket, a unix socket, a socket not connected) is refused and closed.
pub fn tcp_stream(fd: OwnedFd) -> io::Result<tokio::net::TcpStream> {
    check_tcp(&fd)?;
    if rustix::net::sockopt::socket_acceptconn(&fd)? || rustix::net::getpeername(&fd).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a handed-over socket is not connected",
        ));
    }
    let stream = std::net::TcpStream::from(fd);
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

/// Fails unless `fd` is an IPv4 or IPv6 stream socket.
fn check_tcp(fd: &OwnedFd) -> io::Result<()> {
    let refused = |what: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            what.to_string(),
        ))
    };
    if rustix::net::sockopt::socket_type(fd)? != SocketType::STREAM {
        return refused("a handed-over descriptor is not a stream socket");
    }
    let domain = rustix::net::sockopt::socket_domain(fd)?;
    if domain != AddressFamily::INET && domain != AddressFamily::INET6 {
        return refused("a handed-over socket is not TCP");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A listening TCP socket handed over a unix socket accepts the same connections on the
    /// other side; a descriptor that is not a listening TCP socket is refused.
    #[tokio::test]
    async fn a_handed_listener_is_the_same_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (sender, receiver) = std::os::unix::net::UnixStream::pair().unwrap();
        receiver.set_nonblocking(true).unwrap();
        let receiver = UnixStream::from_std(receiver).unwrap();
        send(&sender, &listener).unwrap();
        drop(listener);
        let got = receive(&receiver, 16).await.unwrap();
        assert_eq!(got.data, [MARK]);
        let [fd] = <[OwnedFd; 1]>::try_from(got.fds).unwrap();
        let handed = tcp_listener(fd).unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(address), handed.accept());
        let (mut client, (mut accepted, _)) = (client.unwrap(), accepted.unwrap());
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        for (what, fd) in [
            ("a connected TCP socket", accepted.as_fd()),
            ("a unix socket", sender.as_fd()),
        ] {
            send(&sender, fd).unwrap();
            let got = receive(&receiver, 16).await.unwrap();
            let [fd] = <[OwnedFd; 1]>::try_from(got.fds).unwrap();
            assert!(tcp_listener(fd).is_err(), "{what} is refused");
        }
    }

    /// A connected TCP socket handed over talks to the same peer on the other side; a
    /// listening socket, a unix socket or an unconnected TCP socket is refused.
    #[tokio::test]
    async fn a_handed_connection_is_the_same_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let connected = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let (sender, receiver) = std::os::unix::net::UnixStream::pair().unwrap();
        receiver.set_nonblocking(true).unwrap();
        let receiver = UnixStream::from_std(receiver).unwrap();
        send(&sender, &connected).unwrap();
        drop(connected);
        let got = receive(&receiver, 16).await.unwrap();
        let [fd] = <[OwnedFd; 1]>::try_from(got.fds).unwrap();
        let mut handed = tcp_stream(fd).unwrap();
        handed.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        std::io::Read::read_exact(&mut server, &mut buf).unwrap();
        assert_eq!(&buf, b"ping");

        let fresh = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        for (what, fd) in [
            ("a listening socket", listener.as_fd()),
            ("a socket not connected", fresh.as_fd()),
            ("a unix socket", sender.as_fd()),
        ] {
            send(&sender, fd).unwrap();
            let got = receive(&receiver, 16).await.unwrap();
            let [fd] = <[OwnedFd; 1]>::try_from(got.fds).unwrap();
            assert!(tcp_stream(fd).is_err(), "{what} is refused");
        }
    }
}

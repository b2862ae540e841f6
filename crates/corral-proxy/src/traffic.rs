//! Egress bytes: each upstream connection (the proxy's own connection to the host a sandbox
//! was allowed to reach) is counted while it is open, and its totals are written to the
//! sandbox's traffic log ([`TrafficLog`]) once when it ends — one line per connection, never
//! per read, so counting costs two additions per read or write and one write at the end.
//!
//! What is counted is what crossed the proxy's upstream socket: for a passthrough tunnel the
//! tunnel's bytes (a spliced tunnel's come from [`corral_splice::relay`], which counts them
//! anyway, also when a reset cuts the tunnel); for intercepted TLS the TLS records to the
//! host, not the decrypted requests.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use corral_policy::{TrafficLog, TrafficRecord};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The running totals of one upstream connection, written to the log when dropped.
pub(crate) struct Tally {
    log: Arc<TrafficLog>,
    host: String,
    port: u16,
    sent: u64,
    received: u64,
}

impl Tally {
    /// A tally for a connection to `host:port`, written to `log`.
    pub(crate) fn new(log: Arc<TrafficLog>, host: &str, port: u16) -> Self {
        Self {
            log,
            host: host.to_owned(),
            port,
            sent: 0,
            received: 0,
        }
    }

    /// Adds bytes sent to and received from the host.
    pub(crate) fn add(&mut self, sent: u64, received: u64) {
        self.sent += sent;
        self.received += received;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if self.sent == 0 && self.received == 0 {
            return;
        }
        let record = TrafficRecord {
            host: std::mem::take(&mut self.host),
            port: self.port,
            sent: self.sent,
            received: self.received,
        };
        if let Err(e) = self.log.record(&record) {
            tracing::warn!(error = %e, "traffic log write failed");
        }
    }
}

/// Adds `tally`'s share of a relay, finished or cut short (`forward`: from the sandbox to the
/// host).
pub(crate) fn add_relayed(
    tally: &mut Option<Tally>,
    relayed: Result<corral_splice::Carried, corral_splice::Interrupted>,
) {
    let carried = match relayed {
        Ok(carried) => carried,
        Err(interrupted) => interrupted.carried,
    };
    if let Some(tally) = tally {
        tally.add(carried.forward, carried.backward);
    }
}

/// An upstream connection that counts what it reads and writes (no tally: counts nothing).
pub(crate) struct Metered<S> {
    inner: S,
    tally: Option<Tally>,
}

impl<S> Metered<S> {
    /// Counts `inner`'s bytes into `tally`.
    pub(crate) fn new(inner: S, tally: Option<Tally>) -> Self {
        Self { inner, tally }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(tally) = &mut this.tally {
            tally.add(0, (buf.filled().len() - before) as u64);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.count_written(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.count_written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S> Metered<S> {
    fn count_written(&mut self, polled: &Poll<std::io::Result<usize>>) {
        if let (Some(tally), Poll::Ready(Ok(n))) = (&mut self.tally, polled) {
            tally.add(*n as u64, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_metered_stream_records_its_totals_once_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.jsonl");
        let log = Arc::new(TrafficLog::open(&path).unwrap());
        let (near, mut far) = tokio::io::duplex(1024);
        let mut metered = Metered::new(near, Some(Tally::new(log, "example.com", 443)));
        metered.write_all(b"hello").await.unwrap();
        far.write_all(b"a longer answer").await.unwrap();
        let mut answer = [0u8; 15];
        metered.read_exact(&mut answer).await.unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().is_empty());
        drop(metered);
        let text = std::fs::read_to_string(&path).unwrap();
        let record: TrafficRecord = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(
            record,
            TrafficRecord {
                host: "example.com".into(),
                port: 443,
                sent: 5,
                received: 15,
            }
        );
        assert_eq!(text.lines().count(), 1);
    }
}

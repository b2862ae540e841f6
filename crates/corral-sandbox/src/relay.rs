//! Byte relays the supervisor runs for the bridges (egress out, ingress in): one thread per
//! bridge with a single-threaded tokio runtime, so a new connection costs no thread; at most
//! [`MAX_CONNECTIONS`] at once (more wait in the listen backlog); each copied both ways with
//! 64 KiB buffers, each direction closed when its source ends.

use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections relayed at once per bridge. Bounds the supervisor's memory however many
/// connections are opened.
const MAX_CONNECTIONS: usize = 256;

/// Bytes copied per read in each direction (tokio's default of 8 KiB costs a syscall pair per
/// 8 KiB; see BENCHMARKS.md, "Egress proxy").
const BUFFER: usize = 64 * 1024;

/// Runs `serve` on a thread named `name` with its own single-threaded runtime, for as long
/// as the supervisor lives. `serve` gets the connection slots to take before each accept.
pub fn spawn<F, Fut>(name: &str, serve: F) -> io::Result<()>
where
    F: FnOnce(Slots) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = runtime.block_on(serve(Slots(Arc::new(Semaphore::new(MAX_CONNECTIONS)))));
        })?;
    Ok(())
}

/// The connection slots of one bridge.
pub struct Slots(Arc<Semaphore>);

impl Slots {
    /// Waits for a free slot; held for as long as the connection is relayed.
    pub async fn take(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.0).acquire_owned().await.ok()
    }
}

/// Copies bytes both ways between `a` and `b` until both directions have ended.
pub async fn both_ways<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER).await;
}

//! Byte relays the supervisor runs for its ingress bridge: one thread per
//! bridge with a single-threaded tokio runtime, so a new connection costs no thread; at most
//! [`MAX_CONNECTIONS`] at once (more wait in the listen backlog); each carried both ways by
//! splice(2) through a pipe per direction (no copy through the supervisor, see
//! [`corral_splice`]), each direction closed when its source ends.

use std::future::Future;
use std::io;
use std::sync::Arc;

use corral_splice::Socket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections relayed at once per bridge. Bounds the supervisor's memory however many
/// connections are opened.
const MAX_CONNECTIONS: usize = 256;

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

/// Carries bytes both ways between `a` and `b` until both directions have ended (or either
/// fails), then closes both.
pub async fn both_ways<A, B>(a: A, b: B)
where
    A: Socket + Sync,
    B: Socket + Sync,
{
    let _ = corral_splice::relay(&a, &b).await;
}

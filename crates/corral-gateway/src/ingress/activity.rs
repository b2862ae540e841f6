//! Activity: every proxied request, body chunk and WebSocket frame marks its sandbox as used.
//! Marks are kept in memory and written to the store at most once per `throttle` per sandbox
//! (the store is shared by every gateway, and the reaper decides from it); the reaper also
//! asks [`Activity::since`] about marks not yet written.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::metrics::{Metrics, RouteKind};
use crate::store::Store;

#[derive(Default, Clone, Copy)]
struct Marks {
    /// Unix seconds of the last activity.
    last: i64,
    /// Unix seconds of the last write to the store.
    written: i64,
}

/// Recent activity per sandbox.
pub struct Activity {
    store: Arc<Store>,
    throttle: i64,
    marks: Mutex<HashMap<String, Marks>>,
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Activity {
    /// Activity written to `store` at most every `throttle` per sandbox.
    pub fn new(store: Arc<Store>, throttle: Duration) -> Self {
        Self {
            store,
            throttle: throttle.as_secs().max(1) as i64,
            marks: Mutex::default(),
        }
    }

    /// Marks sandbox `id` as used now.
    pub fn touch(&self, id: &str) {
        let now = unix_now();
        let write = {
            let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
            let mut mark = marks.get(id).copied().unwrap_or_default();
            mark.last = now;
            let due = now - mark.written >= self.throttle;
            if due {
                mark.written = now;
            }
            // Runs on every proxied frame: the key is allocated only for a new sandbox.
            match marks.get_mut(id) {
                Some(kept) => *kept = mark,
                None => {
                    marks.insert(id.to_owned(), mark);
                }
            }
            due
        };
        if write {
            let (store, id) = (self.store.clone(), id.to_owned());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.touch_sandbox(&id, now) {
                    tracing::warn!(sandbox = %id, error = %e, "cannot record activity");
                }
            });
        }
    }

    /// Unix seconds of the last activity this gateway saw for `id` (0 if none).
    pub fn since(&self, id: &str) -> i64 {
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map_or(0, |m| m.last)
    }

    /// Forgets `id` (deleted or stopped).
    pub fn forget(&self, id: &str) {
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// Where a metered stream's bytes are counted.
#[derive(Clone)]
pub struct Meter {
    /// The sandbox the bytes go to or come from.
    pub id: Arc<str>,
    /// Marks activity.
    pub activity: Arc<Activity>,
    /// Counts bytes.
    pub metrics: Arc<Metrics>,
    /// Which route carried them.
    pub kind: RouteKind,
}

impl Meter {
    /// Counts `n` bytes as activity.
    pub fn count(&self, n: usize) {
        self.activity.touch(&self.id);
        self.metrics.proxied_bytes(self.kind, n);
    }
}

/// Run once a body has been read to its end.
type OnEnd = Box<dyn FnOnce() + Send + Sync>;

/// A body passed through unchanged and unbuffered, each frame counted by a [`Meter`].
pub struct Metered<B: Body> {
    inner: B,
    meter: Meter,
    on_end: Option<OnEnd>,
}

impl<B: Body> Metered<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, meter: Meter) -> Self {
        Self {
            inner,
            meter,
            on_end: None,
        }
    }

    /// Wraps `inner`, running `on_end` once it has been read to its end (not if it is
    /// dropped before).
    pub fn with_end(inner: B, meter: Meter, on_end: OnEnd) -> Self {
        Self {
            inner,
            meter,
            on_end: Some(on_end),
        }
    }

    fn ended(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end();
        }
    }
}

impl<B: Body> Drop for Metered<B> {
    fn drop(&mut self) {
        // A reader may stop polling once the body says it is at its end.
        if self.inner.is_end_stream() {
            self.ended();
        }
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.meter.count(data.len());
                }
            }
            Poll::Ready(None) => self.ended(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

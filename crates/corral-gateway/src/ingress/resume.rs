//! Reaching a sandbox's port, starting the sandbox first if it is stopped ("resume"). The
//! start runs on its own task, so it goes on even if the client gives up; the request is
//! held until the port accepts, at most [`RESUME_LIMIT`] (a browser, which gets a page that
//! reloads itself, at most [`BROWSER_HOLD`]). Three outcomes are told apart: still starting
//! (503, retry), failed to start (502, see the logs), and — decided before this — not
//! allowed (404). A sandbox that was started moments ago (the page's Open starts it and then
//! comes here) but whose agent does not listen on its port yet is waited for the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Response, StatusCode};
use hyper::client::conn::http1::SendRequest;

use super::upstream::UpstreamError;
use super::{Ingress, reply};
use crate::runtime::{Cause, RUNNING, because};

/// Longest a request is held while its sandbox starts.
const RESUME_LIMIT: Duration = Duration::from_secs(60);
/// Longest a browser's page load is held before it gets the "starting" page instead.
const BROWSER_HOLD: Duration = Duration::from_secs(5);
/// Pause between probes of a port that does not accept yet, for the first [`FAST_PROBING`]
/// of a start: a probe is one local connection the supervisor answers at once (a socket or
/// "refused"), so it is cheap, and a trivial server listens within tens of milliseconds.
const PROBE_PAUSE: Duration = Duration::from_millis(5);
/// How long after a start began probes come every [`PROBE_PAUSE`].
const FAST_PROBING: Duration = Duration::from_secs(2);
/// Pause between probes after that (a slow server, or one that never listens).
const SLOW_PROBE_PAUSE: Duration = Duration::from_millis(25);

/// A sandbox started on resume whose port has not accepted yet.
#[derive(Clone, Copy)]
struct Start {
    /// When the first request found it stopped.
    began: Instant,
    /// Whether `Runtime::start` has returned (with the sandbox running).
    returned: bool,
}

/// Sandboxes started on resume whose port has not accepted yet.
#[derive(Default)]
pub struct Warming(Mutex<HashMap<String, Start>>);

impl Warming {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Start>> {
        // Plain inserts and removals: a panic cannot leave the map torn.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> Option<Start> {
        self.lock().get(id).copied()
    }

    /// Records a new start; false if one is already under way.
    fn begin(&self, id: &str) -> bool {
        let mut starts = self.lock();
        if starts.contains_key(id) {
            return false;
        }
        starts.insert(
            id.to_owned(),
            Start {
                began: Instant::now(),
                returned: false,
            },
        );
        true
    }

    fn returned(&self, id: &str) {
        if let Some(start) = self.lock().get_mut(id) {
            start.returned = true;
        }
    }

    fn end(&self, id: &str) -> Option<Start> {
        self.lock().remove(id)
    }
}

/// A connection to `port` of sandbox `id`, starting the sandbox if it is stopped. `html`:
/// the client is a browser (it gets the "starting" page sooner). `primary`: the port is the
/// agent's own, which a sandbox started moments ago may not serve yet (any other port is
/// the sandbox's business, and one that refuses gets its 502 at once).
pub async fn connection(
    ingress: &Arc<Ingress>,
    id: &str,
    port: u16,
    html: bool,
    primary: bool,
) -> Result<SendRequest<Body>, Response<Body>> {
    if ingress.warming.get(id).is_none()
        && let Some(running_for) = ingress.runtime.running_for(id)
    {
        if let Some(kept) = ingress.upstream.take_idle(id, port).await {
            return Ok(kept);
        }
        let socket = ingress.runtime.ingress_socket(id);
        return match ingress.upstream.fresh(&socket, port).await {
            // Started moments ago (the page's Open starts it, then comes here) and its agent
            // is still loading: wait for the port as a resume does, not a 502.
            Err(UpstreamError::Refused(_)) if primary && running_for < RESUME_LIMIT => {
                warm_up(ingress, id, port, html, RESUME_LIMIT - running_for).await
            }
            connected => connected.map_err(|e| unreachable(port, &e)),
        };
    }
    if ingress.warming.begin(id) {
        start_in_background(ingress, id);
    }
    let hold = if html { BROWSER_HOLD } else { RESUME_LIMIT };
    let waited = tokio::time::timeout(hold, wait_for_port(ingress, id, port)).await;
    match waited {
        Ok(Ok(sender)) => {
            if let Some(start) = ingress.warming.end(id) {
                let took = start.began.elapsed();
                ingress.metrics.resumed(took.as_secs_f64());
                tracing::info!(sandbox = %id, ms = took.as_millis() as u64, "resumed");
            }
            Ok(sender)
        }
        Ok(Err(failure)) => {
            ingress.warming.end(id);
            Err(failure)
        }
        Err(_)
            if ingress
                .warming
                .get(id)
                .is_none_or(|s| s.began.elapsed() >= RESUME_LIMIT) =>
        {
            ingress.warming.end(id);
            Err(reply::error(
                StatusCode::BAD_GATEWAY,
                "start_failed",
                format!(
                    "the sandbox started but nothing accepted connections on port {port} \
                     within {}s: see the sandbox's logs",
                    RESUME_LIMIT.as_secs()
                ),
            ))
        }
        Err(_) => Err(reply::starting(html, Duration::from_secs(1))),
    }
}

/// Waits for `port` of the running sandbox `id` to accept, at most `left` (a browser: at most
/// [`BROWSER_HOLD`], then the "starting" page, which reloads itself).
async fn warm_up(
    ingress: &Ingress,
    id: &str,
    port: u16,
    html: bool,
    left: Duration,
) -> Result<SendRequest<Body>, Response<Body>> {
    let hold = if html { left.min(BROWSER_HOLD) } else { left };
    match tokio::time::timeout(hold, wait_for_port(ingress, id, port)).await {
        Ok(waited) => waited,
        Err(_) if html && hold < left => Err(reply::starting(html, Duration::from_secs(1))),
        Err(_) => Err(reply::error(
            StatusCode::BAD_GATEWAY,
            "start_failed",
            format!(
                "the sandbox runs but nothing accepted connections on port {port} within {}s \
                 of its start: see the sandbox's logs",
                RESUME_LIMIT.as_secs()
            ),
        )),
    }
}

fn start_in_background(ingress: &Arc<Ingress>, id: &str) {
    let (ingress, id) = (ingress.clone(), id.to_owned());
    tokio::spawn(async move {
        tracing::info!(sandbox = %id, "request to a stopped sandbox: starting it");
        match because(Cause::Resume, ingress.runtime.start(&id)).await {
            Ok(sandbox) if sandbox.state == RUNNING => ingress.warming.returned(&id),
            Ok(sandbox) => {
                tracing::warn!(sandbox = %id, state = %sandbox.state, "resume: the sandbox did not stay up");
                ingress.warming.end(&id);
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "resume: cannot start the sandbox");
                ingress.warming.end(&id);
            }
        }
    });
}

/// Probes until the port accepts; fails once the sandbox is known not to be running.
async fn wait_for_port(
    ingress: &Ingress,
    id: &str,
    port: u16,
) -> Result<SendRequest<Body>, Response<Body>> {
    let socket = ingress.runtime.ingress_socket(id);
    let failed = || {
        reply::error(
            StatusCode::BAD_GATEWAY,
            "start_failed",
            format!("the sandbox {id:?} failed to start or stopped: see its logs"),
        )
    };
    let began = Instant::now();
    loop {
        // A request waiting for the sandbox is use: the reaper must not stop it meanwhile.
        ingress.activity.touch(id);
        // Probed while the start is still under way too: the server may listen before the
        // start has been recorded (the ingress socket answers as soon as it is bound).
        let starting = ingress.warming.get(id).is_some_and(|s| !s.returned);
        if !starting && !ingress.runtime.is_running(id) {
            // The start failed (the log says why), or the sandbox started and ended.
            return Err(failed());
        }
        if let Ok(sender) = ingress.upstream.probe(&socket, port).await {
            return Ok(sender);
        }
        let pause = if began.elapsed() < FAST_PROBING {
            PROBE_PAUSE
        } else {
            SLOW_PROBE_PAUSE
        };
        tokio::time::sleep(pause).await;
    }
}

fn unreachable(port: u16, e: &UpstreamError) -> Response<Body> {
    tracing::info!(port, error = %e, "sandbox port unreachable");
    reply::error(
        StatusCode::BAD_GATEWAY,
        "upstream_unavailable",
        format!("the sandbox runs but cannot be reached on port {port}: is its server up? ({e})"),
    )
}

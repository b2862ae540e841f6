//! Ingress: the way from a browser or client to a server inside a sandbox. A request's Host
//! (see [`hosts`]) picks the sandbox and port — `<id><suffix>.<domain>` for its primary port,
//! `<id>-<port><suffix>.<domain>` for another — or the gateway's own host serves the API and
//! the `/s/<label>/...` path fallback. The visitor is authenticated (`auth`), must own the
//! sandbox (or be an admin; anyone else gets the same 404 as for an id that does not exist),
//! a stopped sandbox is started and the request held until its port accepts (`resume`),
//! then the request is proxied through the sandbox's ingress socket (`proxy`). Activity
//! is recorded for the idle reaper ([`idle`]) and counted for `/metrics` ([`metrics`]).

pub mod activity;
mod auth;
mod cache;
pub mod front;
pub mod hosts;
pub mod idle;
pub mod metrics;
mod proxy;
mod reply;
mod resume;
pub mod tickets;
mod upstream;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{Response, StatusCode, Uri};

pub use hosts::SessionHosts;

use self::activity::{Activity, Meter};
use self::front::Peer;
use self::hosts::{HostTarget, SessionLabel, request_host};
use self::metrics::{Metrics, RouteKind};
use self::upstream::Upstream;
use crate::config::Config;
use crate::runtime::Runtime;
use crate::store::{CredentialKind, Sandbox, Store, StoreError};

/// Everything the ingress shares between requests.
pub struct Ingress {
    store: Arc<Store>,
    runtime: Arc<Runtime>,
    config: Arc<Config>,
    hosts: SessionHosts,
    upstream: Upstream,
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
    warming: resume::Warming,
    /// Recent answers: who a credential (by its hash) is.
    visitors: cache::Memo<String, auth::Known>,
    /// Recent answers: sandbox records by id.
    sandboxes: cache::Memo<String, Arc<Sandbox>>,
}

impl Ingress {
    /// The ingress of a gateway (its `config.listen` holding the bound port).
    pub fn new(store: Arc<Store>, runtime: Arc<Runtime>, config: Arc<Config>) -> Arc<Self> {
        let throttle = idle::throttle(config.idle_timeout);
        let metrics = Arc::new(Metrics::new(&runtime));
        Arc::new(Self {
            activity: Arc::new(Activity::new(store.clone(), throttle)),
            hosts: SessionHosts::new(&config),
            store,
            runtime,
            config,
            upstream: Upstream::default(),
            metrics,
            warming: resume::Warming::default(),
            visitors: cache::Memo::default(),
            sandboxes: cache::Memo::default(),
        })
    }

    /// Runs a store call on a blocking thread; a failure is logged and answered with a 500.
    async fn db<T, F>(&self, f: F) -> Result<T, Response<Body>>
    where
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        let internal = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "ingress store call failed");
            reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error (see the gateway's log)",
            )
        };
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(internal(&e)),
            Err(e) => Err(internal(&e)),
        }
    }
}

/// Where every request to the gateway starts ([`front::Front`]): session hosts, `/s/` paths
/// and `/metrics` are answered here; everything else goes on to `api`, the API and web
/// router.
async fn dispatch(
    ingress: Arc<Ingress>,
    peer: Peer,
    request: Request,
    api: Router,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let target = match request_host(&parts) {
        Ok(host) => ingress.hosts.classify(&host).map(|t| (t, host)),
        Err(e) => Err(e),
    };
    match target {
        Ok((HostTarget::Session(label), host)) => {
            let visit = Visit {
                label,
                kind: RouteKind::Host,
                host,
                peer,
            };
            session(&ingress, visit, parts, body).await
        }
        Ok((HostTarget::Unknown, _)) => reply::not_found(),
        Ok((HostTarget::Gateway, host)) => {
            gateway_host(&ingress, host, peer, parts, body, api).await
        }
        // No Host at all: only the API can answer (HTTP/1.0 clients).
        Err(hosts::HostError::Missing) => {
            front::to_api(api, peer.addr, Request::from_parts(parts, body)).await
        }
        Err(e) => reply::error(StatusCode::BAD_REQUEST, "bad_host", e.to_string()),
    }
}

async fn gateway_host(
    ingress: &Arc<Ingress>,
    host: String,
    peer: Peer,
    mut parts: Parts,
    body: Body,
    api: Router,
) -> Response<Body> {
    let path = parts.uri.path().to_owned();
    if path == "/metrics" {
        return metrics::page(ingress, &parts.headers, peer.addr.ip()).await;
    }
    let Some(rest) = path.strip_prefix("/s/") else {
        return front::to_api(api, peer.addr, Request::from_parts(parts, body)).await;
    };
    let (label, tail) = match rest.split_once('/') {
        Some((label, tail)) => (label, Some(format!("/{tail}"))),
        None => (rest, None),
    };
    let Some(session_label) = ingress.hosts.session_label(label) else {
        return reply::not_found();
    };
    let Some(tail) = tail else {
        // `/s/<label>` → `/s/<label>/`, so relative links resolve under the prefix.
        let query = parts.uri.query().map_or(String::new(), |q| format!("?{q}"));
        return Response::builder()
            .status(StatusCode::PERMANENT_REDIRECT)
            .header(LOCATION, format!("{path}/{query}"))
            .body(Body::empty())
            .unwrap_or_default();
    };
    let label = session_label;
    let query = parts.uri.query().map_or(String::new(), |q| format!("?{q}"));
    parts.uri = match format!("{tail}{query}").parse::<Uri>() {
        Ok(uri) => uri,
        Err(_) => return reply::error(StatusCode::BAD_REQUEST, "bad_path", "invalid path"),
    };
    let visit = Visit {
        label,
        kind: RouteKind::Path,
        host,
        peer,
    };
    session(ingress, visit, parts, body).await
}

/// One request to a sandbox: where it was addressed and who sent it.
struct Visit {
    label: SessionLabel,
    kind: RouteKind,
    host: String,
    peer: Peer,
}

async fn session(ingress: &Arc<Ingress>, visit: Visit, parts: Parts, body: Body) -> Response<Body> {
    match serve(ingress, visit, parts, body).await {
        Ok(response) | Err(response) => response,
    }
}

async fn serve(
    ingress: &Arc<Ingress>,
    visit: Visit,
    parts: Parts,
    body: Body,
) -> Result<Response<Body>, Response<Body>> {
    let on_host = visit.kind == RouteKind::Host;
    if on_host && parts.uri.path() == tickets::AUTH_PATH {
        return spend_ticket(ingress, &visit, &parts).await;
    }
    let visitor = auth::visitor(ingress, &parts.headers, visit.peer.addr.ip(), on_host).await?;
    let sandbox = authorize(ingress, &visit, &visitor).await?;
    let port = match visit.label.port {
        Some(port) if sandbox.ports.contains(&port) => port,
        Some(port) => {
            return Err(reply::error(
                StatusCode::NOT_FOUND,
                "no_such_port",
                format!("sandbox {:?} does not serve port {port}", sandbox.id),
            ));
        }
        None => *sandbox.ports.first().ok_or_else(|| {
            reply::error(
                StatusCode::NOT_FOUND,
                "no_port",
                format!(
                    "sandbox {:?} serves no port (agent {}): nothing to open",
                    sandbox.id, sandbox.agent
                ),
            )
        })?,
    };
    let html = reply::wants_html(&parts.headers);
    let primary = sandbox.ports.first() == Some(&port);
    let sender = resume::connection(ingress, &sandbox.id, port, html, primary).await?;
    ingress.metrics.proxied_request(visit.kind);
    let meter = Meter {
        id: Arc::from(sandbox.id.as_str()),
        activity: ingress.activity.clone(),
        metrics: ingress.metrics.clone(),
        kind: visit.kind,
    };
    meter.activity.touch(&sandbox.id);
    let trusted_peer =
        crate::auth::is_trusted_peer(visit.peer.addr.ip(), &ingress.config.trusted_proxies);
    let hop = proxy::Hop {
        peer: visit.peer.header,
        trusted_peer,
        host: visit.host,
        scheme: ingress.hosts.scheme(),
        strip_authorization: visitor.used_token,
    };
    let destination = proxy::Destination {
        sender,
        runtime: &ingress.runtime,
        port,
    };
    Ok(proxy::forward(&ingress.upstream, destination, parts, body, hop, meter).await)
}

/// The sandbox the visit names, if the visitor may use it; the same 404 otherwise.
async fn authorize(
    ingress: &Ingress,
    visit: &Visit,
    visitor: &auth::Visitor,
) -> Result<Arc<Sandbox>, Response<Body>> {
    if visitor
        .only_sandbox
        .as_ref()
        .is_some_and(|only| *only != visit.label.id)
    {
        return Err(reply::not_found());
    }
    let id = visit.label.id.clone();
    let sandbox = match ingress.sandboxes.get(&id) {
        Some(sandbox) => Some(sandbox),
        None => {
            // Shared, not cloned, on each request that finds it remembered.
            let found = ingress.db(move |s| s.sandbox(&id)).await?.map(Arc::new);
            if let Some(sandbox) = &found {
                ingress.sandboxes.put(sandbox.id.clone(), sandbox.clone());
            }
            found
        }
    };
    sandbox
        .filter(|s| s.opens_for(visitor.user_id) || visitor.admin)
        .ok_or_else(reply::not_found)
}

/// `<session host>/_corral/auth?ticket=T`: spends the ticket, sets this host's cookie and
/// sends the browser to `/`.
async fn spend_ticket(
    ingress: &Ingress,
    visit: &Visit,
    parts: &Parts,
) -> Result<Response<Body>, Response<Body>> {
    let refused = || {
        reply::error(
            StatusCode::UNAUTHORIZED,
            "bad_ticket",
            "this sign-in link is unknown, used or expired: open the sandbox again from the \
             gateway's page",
        )
    };
    let ticket = parts
        .uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("ticket="))
        .filter(|t| !t.is_empty())
        .ok_or_else(refused)?;
    let hash = crate::auth::token_hash(ticket);
    let credential = ingress
        .db(move |s| s.spend_ticket(&hash))
        .await?
        .ok_or_else(refused)?;
    if credential.sandbox_id != visit.label.id {
        return Err(refused());
    }
    let visitor = auth::Visitor {
        user_id: credential.user_id,
        admin: credential.admin,
        only_sandbox: Some(credential.sandbox_id.clone()),
        used_token: false,
    };
    // Still the user's? (The sandbox may have changed hands or gone since.)
    authorize(ingress, visit, &visitor).await?;
    let (secret, hash) = tickets::new_secret().map_err(|e| {
        tracing::error!(error = %e, "cannot make a session-host cookie");
        reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (see the gateway's log)",
        )
    })?;
    let expires = tickets::expiry(tickets::COOKIE_TTL);
    let (user_id, sandbox_id) = (credential.user_id, credential.sandbox_id);
    ingress
        .db(move |s| {
            s.add_host_credential(CredentialKind::Cookie, &hash, user_id, &sandbox_id, expires)
        })
        .await?;
    Ok(Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(LOCATION, "/")
        .header(
            SET_COOKIE,
            tickets::set_cookie(&secret, ingress.hosts.is_tls()),
        )
        .body(Body::empty())
        .unwrap_or_default())
}

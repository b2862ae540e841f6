//! The pages about one sandbox: opening it (start with progress, then the agent), its
//! terminal and its activity (policy decisions, live, and the effective profile). Only the
//! owner and admins see them; to anyone else the sandbox does not exist.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use corral_policy::Profile;
use maud::{Markup, html};

use super::session::Viewer;
use super::sessions::title;
use super::{error_page, html, layout};
use crate::api::AppState;
use crate::store::Sandbox;

/// The sandbox `id` if the viewer may act on it (its owner, an admin), else the "no such
/// session" page.
async fn visible(state: &AppState, viewer: &Viewer, id: String) -> Result<Sandbox, Response> {
    find(state, viewer, id, |s, viewer| {
        s.owner_id == viewer.user.id || viewer.is_admin()
    })
    .await
}

/// The sandbox `id` if the viewer may open it (also someone it is shared with), else the "no
/// such session" page.
async fn openable(state: &AppState, viewer: &Viewer, id: String) -> Result<Sandbox, Response> {
    find(state, viewer, id, |s, viewer| {
        s.opens_for(viewer.user.id) || viewer.is_admin()
    })
    .await
}

/// The sandbox `id` if `allowed`, else the "no such session" page.
async fn find(
    state: &AppState,
    viewer: &Viewer,
    id: String,
    allowed: impl Fn(&Sandbox, &Viewer) -> bool,
) -> Result<Sandbox, Response> {
    let lookup = id.clone();
    let sandbox = state
        .db(move |s| s.sandbox(&lookup))
        .await
        .map_err(axum::response::IntoResponse::into_response)?;
    sandbox
        .filter(|s| allowed(s, viewer))
        .ok_or_else(|| {
            error_page(
                Some(viewer),
                StatusCode::NOT_FOUND,
                &format!("There is no session {id:?} of yours. It may have been deleted; pick one from your sessions."),
            )
        })
}

/// The heading every sandbox page shares, with links between them.
fn heading(s: &Sandbox, what: &str) -> Markup {
    html! {
        div.pagehead {
            h1 { (what) ": " (title(s)) }
            nav.tabs aria-label="Session" {
                a href={"/sessions/" (s.id) "/open"} { "Open" }
                a href={"/sessions/" (s.id) "/terminal"} { "Terminal" }
                a href={"/sessions/" (s.id) "/activity"} { "Activity" }
                a href={"/sessions/" (s.id) "/sharing"} { "Sharing" }
                a href="/" { "All sessions" }
            }
        }
    }
}

/// `GET /sessions/{id}/open`: starts the sandbox if needed, showing each step (starting,
/// cloning, ready), then opens its agent (open.js drives it through the API).
pub(super) async fn open(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let s = openable(&state, &viewer, id).await?;
    // Someone it is shared with opens its page, which wakes it: they do not start it.
    let shared = s.owner_id != viewer.user.id && !viewer.is_admin();
    let body = html! {
        @if shared {
            h1 { "Opening: " (title(&s)) }
            p.hint { "Shared with you by " (s.owner) "." }
        } @else {
            (heading(&s, "Opening"))
        }
        section.card #progress data-sandbox=(s.id) data-agent=(s.agent) data-repo=[s.repo.as_ref()] data-shared=[shared.then_some("")] {
            ol.steps {
                li #step-start data-status="pending" { "Starting the sandbox (profile " (s.profile) ")" }
                @if let (Some(repo), Some(branch)) = (&s.repo, &s.branch) {
                    li #step-clone data-status="pending" { "Cloning " (repo) " (" (branch) ")" }
                }
                li #step-ready data-status="pending" { "Ready" }
                li #step-open data-status="pending" { "Opening " (s.agent) }
            }
            p.hint #open-progress aria-live="polite" {}
            p.error #open-error role="alert" hidden {}
            p.hint #open-hint hidden {}
            pre.log #open-log hidden {}
        }
    };
    Ok(viewer.with_cookie(html(layout::page(
        Some(&viewer),
        "Opening",
        &["open.js"],
        body,
    ))))
}

/// `GET /sessions/{id}/terminal`: xterm.js over the attach WebSocket.
pub(super) async fn terminal(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let s = visible(&state, &viewer, id).await?;
    let body = html! {
        (heading(&s, "Terminal"))
        p.status #terminal-status role="status" aria-live="polite" { "Connecting…" }
        @if s.state != "running" {
            p.hint { "This session is " (s.state) ". " a href={"/sessions/" (s.id) "/open"} { "Start it" } " to use its terminal." }
        }
        div #terminal .terminal data-sandbox=(s.id) {}
        div.actions.terminal-actions {
            button #terminal-copy type="button" { "Copy selection" }
            button #terminal-paste type="button" { "Paste" }
            button #terminal-reconnect type="button" hidden { "Reconnect" }
            span.hint #clipboard-status role="status" aria-live="polite" {}
        }
        p.hint { "Copy: select text with the mouse, then Ctrl+Shift+C (Ctrl+C interrupts the program, as in any terminal). Paste: Ctrl+V, Ctrl+Shift+V or Shift+Insert. The terminal reconnects by itself after a network blip; after a reconnect it is a new shell." }
    };
    let assets = [
        "xterm.css",
        "xterm.js",
        "addon-fit.js",
        "addon-canvas.js",
        "terminal.js",
    ];
    Ok(viewer.with_cookie(html(layout::page(Some(&viewer), "Terminal", &assets, body))))
}

/// `GET /sessions/{id}/activity`: the sandbox's policy decisions, live (activity.js reads
/// the audit endpoint), and its effective profile.
pub(super) async fn activity(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let s = visible(&state, &viewer, id).await?;
    let file = state.config.profiles.get(&s.profile).cloned();
    let name = s.profile.clone();
    let profile = tokio::task::spawn_blocking(move || match file {
        Some(file) => Profile::load(&file),
        None => Profile::builtin(&name),
    })
    .await;
    let body = html! {
        (heading(&s, "Activity"))
        section.card {
            h2 { "Policy decisions" }
            div.filters role="group" aria-label="Filter decisions" {
                label { "Show "
                    select #decision-filter {
                        option value="all" { "all decisions" }
                        option value="deny" { "denied only" }
                        option value="allow" { "allowed only" }
                    }
                }
                label { "Matching " input #text-filter type="search" placeholder="host, action or policy"; }
            }
            p.status #activity-status role="status" aria-live="polite" { "Loading…" }
            div.tablewrap {
                table #events data-sandbox=(s.id) {
                    thead { tr { th { "Time" } th { "Decision" } th { "Action" } th { "Resource" } th { "Policy" } } }
                    tbody {}
                }
            }
            p.empty #events-empty hidden { "No decisions yet. They appear here as the agent reaches for hosts, pushes or files the profile rules on." }
        }
        section.card {
            h2 { "Profile " (s.profile) }
            @match profile {
                Ok(Ok(p)) => {
                    p { (p.description) }
                    pre.profile { (p.to_toml()) }
                }
                Ok(Err(e)) => { p.error { "The profile cannot be shown: " (e) ". Ask the operator to check it." } }
                Err(_) => { p.error { "The profile cannot be shown; see the gateway's log." } }
            }
        }
    };
    Ok(viewer.with_cookie(html(layout::page(
        Some(&viewer),
        "Activity",
        &["activity.js"],
        body,
    ))))
}

/// `GET /sessions/{id}/sharing`: who else may open the session, and a form to share it with
/// one more person or stop (share.js calls the API).
pub(super) async fn sharing(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let s = visible(&state, &viewer, id).await?;
    let body = html! {
        (heading(&s, "Sharing"))
        section.card #sharing data-sandbox=(s.id) {
            p { "People you share this session with find it in their own list and can open it: its agent's page and the ports it serves. They cannot start or stop it, use its terminal, see its activity or delete it." }
            @if s.shared_with.is_empty() {
                p.empty #shares-empty { "Not shared with anyone yet." }
            } @else {
                ul.shares #shares {
                    @for user in &s.shared_with {
                        li {
                            span { (user.email) }
                            button.danger type="button" data-unshare=(user.email) { "Stop sharing" }
                        }
                    }
                }
            }
            form #share-form {
                label { "Share with (their email)" input #share-email name="email" type="email" autocomplete="off" required; }
                button.primary type="submit" { "Share" }
            }
            p.error #share-error role="alert" hidden {}
        }
    };
    Ok(viewer.with_cookie(html(layout::page(
        Some(&viewer),
        "Sharing",
        &["share.js"],
        body,
    ))))
}

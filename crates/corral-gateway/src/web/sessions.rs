//! The session picker: a form for a new session (repo and branch or a blank workspace,
//! profile, agent) and the viewer's sessions (an admin's: everyone's) with their state, age
//! and last activity, and open / terminal / activity / stop / delete for each. The list
//! refreshes itself every few seconds (htmx); actions call the API.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::session::Viewer;
use super::{html, layout};
use crate::api::{AppState, available_profiles};
use crate::store::{Sandbox, now};

/// The built-in agents, offered until the gateway lists its own (`GET /api/v1/agents`).
const AGENTS: &[(&str, &str)] = &[
    ("shell", "a shell in the sandbox: use it from the terminal"),
    ("opencode", "opencode's web UI"),
    ("code-server", "VS Code in the browser"),
];
/// The agent that runs the person's own command line.
const CUSTOM: &str = crate::agents::CUSTOM;
/// Profile preselected in the form.
const DEFAULT_PROFILE: &str = "restricted";

/// `GET /`: the picker and the viewer's sessions.
pub(super) async fn home(State(state): State<AppState>, viewer: Viewer) -> Response {
    let list = match list_markup(&state, &viewer).await {
        Ok(list) => list,
        Err(response) => return response,
    };
    // Configured profiles are files: read them off the async threads.
    let config = state.config.clone();
    let profiles = match tokio::task::spawn_blocking(move || available_profiles(&config)).await {
        Ok(profiles) => profiles,
        Err(e) => return crate::api::ApiError::internal(&e).into_response(),
    };
    let body = html! {
        section {
            h1 { @if viewer.is_admin() { "All sessions" } @else { "Your sessions" } }
            (list_container(list))
        }
        section.card {
            h2 { "New session" }
            form #new-session data-create="" {
                label {
                    "Name (optional)"
                    input #name name="name" type="text" autocomplete="off" spellcheck="false"
                        autocapitalize="off" placeholder="my-app";
                }
                p.hint { "Lowercase letters, digits and '-'. It becomes the session's address, so it must be free on this gateway; leave it empty for a random one." }
                label {
                    "Repository URL"
                    input name="repo" type="text" inputmode="url" autocomplete="off" spellcheck="false"
                        placeholder="https://github.com/you/app.git";
                }
                p.hint { "Leave it empty for a blank workspace." }
                label { "Branch" input name="branch" type="text" autocomplete="off" spellcheck="false" placeholder="main"; }
                fieldset.profiles {
                    legend { "Profile: what the agent may do" }
                    @for p in &profiles {
                        label.choice {
                            input type="radio" name="profile" value=(p.name) checked[p.name == DEFAULT_PROFILE];
                            span { strong { (p.name) } " — " (p.description) }
                        }
                    }
                }
                label {
                    "Agent"
                    select #agent name="agent" {
                        @for (name, description) in AGENTS {
                            option value=(name) { (name) " — " (description) }
                        }
                        option value=(CUSTOM) { "custom command — your own program, and the port(s) it serves" }
                    }
                }
                fieldset #custom-fields hidden {
                    legend { "Custom command" }
                    label {
                        "Command"
                        input #command name="command" type="text" autocomplete="off" spellcheck="false"
                            autocapitalize="off" placeholder="python3 -m http.server 8000";
                    }
                    p.hint { "Split into words as a shell would (quote words with spaces), but run without a shell: for && or | write sh -c '…'. It runs in /workspace." }
                    label {
                        "Ports it serves"
                        input #ports name="ports" type="text" autocomplete="off" placeholder="8000";
                    }
                    p.hint { "Separate several with commas; the first one opens in the browser. Leave it empty for a command that serves no page (use its terminal)." }
                }
                button.primary type="submit" { "Create and open" }
                p.error #create-error role="alert" hidden {}
            }
        }
    };
    viewer.with_cookie(html(layout::page(Some(&viewer), "Sessions", &[], body)))
}

/// The list's container, which reloads itself every few seconds and after an action.
pub(super) fn list_container(list: Markup) -> Markup {
    html! {
        div #sessions hx-get="/fragments/sessions" hx-trigger="every 3s, corral:refresh from:body" {
            (list)
        }
    }
}

/// `GET /fragments/sessions`: the list alone, for htmx.
pub(super) async fn fragment(State(state): State<AppState>, viewer: Viewer) -> Response {
    match list_markup(&state, &viewer).await {
        Ok(list) => viewer.with_cookie(html(list)),
        Err(response) => response,
    }
}

/// The viewer's sessions (an admin's: everyone's), newest first.
pub(super) async fn list_markup(state: &AppState, viewer: &Viewer) -> Result<Markup, Response> {
    let owner = (!viewer.is_admin()).then_some(viewer.user.id);
    let mut sandboxes = state
        .db(move |s| s.list_sandboxes(owner))
        .await
        .map_err(IntoResponse::into_response)?;
    sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created));
    Ok(list(&sandboxes, viewer))
}

fn list(sandboxes: &[Sandbox], viewer: &Viewer) -> Markup {
    let now = now();
    html! {
        @if sandboxes.is_empty() {
            p.empty { "No sessions yet. Create one below: paste a repository URL, or leave it empty for a blank workspace." }
        } @else {
            ul.sessions {
                @for s in sandboxes { (row(s, viewer, now)) }
            }
        }
    }
}

fn row(s: &Sandbox, viewer: &Viewer, now: i64) -> Markup {
    if s.owner_id != viewer.user.id && !viewer.is_admin() {
        return shared_row(s, now);
    }
    let running = s.state == "running";
    let api = format!("/api/v1/sandboxes/{}", s.id);
    html! {
        li.session data-sandbox=(s.id) data-state=(s.state) {
            div.title {
                strong { (title(s)) }
                span class={"state state-" (s.state)} { (s.state) }
            }
            p.meta {
                @match (&s.repo, &s.branch) {
                    (Some(repo), Some(branch)) => { span { (repo) " @ " (branch) } }
                    _ => { span { "blank workspace" } }
                }
                @match &s.command {
                    Some(command) => { span { "command " code.command { (command_line(command)) } } }
                    None => { span { "agent " (s.agent) } }
                }
                span { "profile " (s.profile) }
                span { "created " (ago(now - s.created)) }
                span { "active " (ago(now - s.last_activity)) }
                @if viewer.is_admin() { span { "owner " (s.owner) } }
            }
            div.actions {
                a.button.primary #{"open-" (s.id)} href={"/sessions/" (s.id) "/open"} {
                    @if running { "Open" } @else { "Start and open" }
                }
                @if running {
                    a.button #{"terminal-" (s.id)} href={"/sessions/" (s.id) "/terminal"} { "Terminal" }
                }
                a.button #{"activity-" (s.id)} href={"/sessions/" (s.id) "/activity"} { "Activity" }
                @if !running && s.state != "stopping" {
                    button #{"start-" (s.id)} type="button" hx-post={(api) "/start"} hx-swap="none"
                        hx-disabled-elt="this" data-refresh="" { "Start" }
                }
                @if running {
                    button #{"stop-" (s.id)} type="button" hx-post={(api) "/stop"} hx-swap="none"
                        hx-disabled-elt="this" data-refresh="" { "Stop" }
                }
                button.danger #{"delete-" (s.id)} type="button" hx-delete=(api) hx-swap="none"
                    hx-disabled-elt="this" data-refresh=""
                    hx-confirm={"Delete " (s.name) "? Its workspace stays on the host."} { "Delete" }
            }
        }
    }
}

/// A session someone shared with the viewer: they may open its page (which wakes it), and
/// nothing else, so that is the one action shown.
fn shared_row(s: &Sandbox, now: i64) -> Markup {
    html! {
        li.session.shared data-sandbox=(s.id) data-state=(s.state) {
            div.title {
                strong { (title(s)) }
                span class={"state state-" (s.state)} { (s.state) }
            }
            p.meta {
                span { "shared by " (s.owner) }
                span { "agent " (s.agent) }
                span { "active " (ago(now - s.last_activity)) }
            }
            div.actions {
                a.button.primary #{"open-" (s.id)} href={"/sessions/" (s.id) "/open"} { "Open" }
            }
        }
    }
}

/// What a session is called in the list: its name, or for a repo session still named by its
/// id, the repo's name and branch.
pub(super) fn title(s: &Sandbox) -> String {
    match (&s.repo, &s.branch) {
        (Some(repo), Some(branch)) if s.name == s.id => {
            let base = repo
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(repo);
            format!("{} @ {branch}", base.trim_end_matches(".git"))
        }
        _ => s.name.clone(),
    }
}

/// A custom session's command as a person would type it (words quoted where needed).
fn command_line(words: &[String]) -> String {
    shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
}

/// `secs` as a short age: "just now", "5 min ago", "3 h ago", "2 days ago".
fn ago(secs: i64) -> String {
    match secs.max(0) {
        s if s < 60 => "just now".into(),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(ago(-3), "just now");
        assert_eq!(ago(59), "just now");
        assert_eq!(ago(600), "10 min ago");
        assert_eq!(ago(7300), "2 h ago");
        assert_eq!(ago(3 * 86400), "3 days ago");
    }

    #[test]
    fn commands_read_as_typed() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&words(&["python3", "-m", "http.server", "8000"])),
            "python3 -m http.server 8000"
        );
        assert_eq!(
            command_line(&words(&["sh", "-c", "a && b"])),
            "sh -c 'a && b'"
        );
    }
}

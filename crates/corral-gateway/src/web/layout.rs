//! The frame of every page: head (styles, scripts, CSRF token for scripts), the top bar and
//! a live region where scripts report errors.

use maud::{DOCTYPE, Markup, html};

use super::assets::url;
use super::session::Viewer;

/// htmx settings: no `eval`, no inline indicator styles (the CSP forbids both), and
/// requests only to this origin.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"selfRequestsOnly":true,"historyCacheSize":0}"#;

/// A whole page titled `title` around `body`, with the extra `assets` (scripts or styles by
/// name) it needs.
pub(super) fn page(viewer: Option<&Viewer>, title: &str, assets: &[&str], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                meta name="htmx-config" content=(HTMX_CONFIG);
                @if let Some(v) = viewer { meta name="csrf-token" content=(v.csrf); }
                title { (title) " · corral" }
                link rel="stylesheet" href=(url("corral.css"));
                @for name in assets.iter().filter(|n| n.ends_with(".css")) {
                    link rel="stylesheet" href=(url(name));
                }
                script src=(url("htmx.js")) defer {}
                script src=(url("corral.js")) defer {}
                @for name in assets.iter().filter(|n| n.ends_with(".js")) {
                    script src=(url(name)) defer {}
                }
            }
            body hx-headers=[viewer.map(|v| format!(r#"{{"X-CSRF-Token":"{}"}}"#, v.csrf))] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "corral" }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            a href="/" { "Sessions" }
                            @if v.is_admin() { a href="/admin" { "Admin" } }
                        }
                        span.who { (v.user.email) }
                        form.signout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                div #flash .flash role="alert" aria-live="assertive" hidden {}
                main #main { (body) }
            }
        }
    }
}

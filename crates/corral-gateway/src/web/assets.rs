//! The page's static files, carried in the binary: corral's own CSS and scripts and the
//! vendored JavaScript (pinned versions, licenses beside them in `assets/vendor/`). Each is
//! served at a URL holding a hash of its content, so it can be cached for a year: a new
//! build with different bytes has a different URL.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::auth::hex;

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file: its name (as pages refer to it), content type and bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("corral.css", CSS, include_bytes!("../../assets/corral.css")),
    ("corral.js", JS, include_bytes!("../../assets/corral.js")),
    ("open.js", JS, include_bytes!("../../assets/open.js")),
    ("share.js", JS, include_bytes!("../../assets/share.js")),
    (
        "terminal.js",
        JS,
        include_bytes!("../../assets/terminal.js"),
    ),
    (
        "activity.js",
        JS,
        include_bytes!("../../assets/activity.js"),
    ),
    (
        "htmx.js",
        JS,
        include_bytes!("../../assets/vendor/htmx-2.0.4/htmx.min.js"),
    ),
    (
        "xterm.js",
        JS,
        include_bytes!("../../assets/vendor/xterm-5.5.0/xterm.js"),
    ),
    (
        "xterm.css",
        CSS,
        include_bytes!("../../assets/vendor/xterm-5.5.0/xterm.css"),
    ),
    (
        "addon-fit.js",
        JS,
        include_bytes!("../../assets/vendor/addon-fit-0.10.0/addon-fit.js"),
    ),
    (
        "addon-canvas.js",
        JS,
        include_bytes!("../../assets/vendor/addon-canvas-0.7.0/addon-canvas.js"),
    ),
];

/// One served file.
struct Asset {
    /// `corral.css`.
    name: &'static str,
    /// `corral.0123456789ab.css`: the name with the first 12 hex digits of its SHA-256.
    hashed: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(name, content_type, bytes)| {
            let digest = hex(&Sha256::digest(bytes));
            let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
            Asset {
                name,
                hashed: format!("{stem}.{}.{ext}", &digest[..12]),
                content_type,
                bytes,
            }
        })
        .collect()
});

/// The URL of the asset called `name` (one of [`FILES`]).
pub(super) fn url(name: &str) -> String {
    let hashed = ASSETS
        .iter()
        .find(|a| a.name == name)
        .map_or(name, |a| a.hashed.as_str());
    format!("/assets/{hashed}")
}

/// `GET /assets/{file}`: an asset by its hashed name, cacheable for a year.
pub(super) async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.hashed == file) {
        Some(asset) => (
            [
                (CONTENT_TYPE, asset.content_type),
                (CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            asset.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_a_hashed_url() {
        for (name, _, _) in FILES {
            let url = url(name);
            assert_ne!(url, format!("/assets/{name}"), "{name}");
            assert!(url.starts_with("/assets/"), "{url}");
        }
    }
}

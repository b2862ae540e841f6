//! Model providers (admins): add, list, remove. A provider's key goes in with `POST` and never
//! comes out: it is sealed before it is stored, and no response, log line or error holds it.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::caller::Caller;
use super::error::ErrorBody;
use super::{ApiError, AppState, Json, Path, rfc3339};
use crate::store::{Provider, ProviderKind};

/// Longest key accepted.
const MAX_KEY_LEN: usize = 8192;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddProvider {
    /// Name: lower-case letters, digits, `.`, `_` and `-`; what policies and paths use.
    name: String,
    /// `anthropic`, `openai` or `openai-compatible`.
    kind: String,
    /// The API's root, e.g. `https://api.anthropic.com` (a trailing `/v1` is dropped).
    base_url: String,
    /// The API key; stored sealed, never shown again.
    key: String,
    /// Allow a loopback, private or link-local address (a local model server).
    #[serde(default)]
    allow_private: bool,
    /// Model aliases: name asked for → name sent.
    #[serde(default)]
    aliases: BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ProviderView {
    name: String,
    kind: String,
    base_url: String,
    allow_private: bool,
    aliases: BTreeMap<String, String>,
    created: String,
}

impl From<Provider> for ProviderView {
    fn from(p: Provider) -> Self {
        Self {
            name: p.name,
            kind: p.kind.to_string(),
            base_url: p.base_url,
            allow_private: p.allow_private,
            aliases: p.aliases,
            created: rfc3339(p.created),
        }
    }
}

/// `GET /api/v1/providers` (admin): every provider, without keys.
#[utoipa::path(get, path = "/api/v1/providers", tag = "inference", security(("bearer" = [])), responses((status = 200, body = Vec<ProviderView>), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not an admin", body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ProviderView>>, ApiError> {
    caller.require_admin()?;
    let providers = state.db(|s| s.providers()).await?;
    Ok(Json(providers.into_iter().map(Into::into).collect()))
}

/// `POST /api/v1/providers` (admin): adds a provider; its key is sealed before it is stored.
#[utoipa::path(post, path = "/api/v1/providers", tag = "inference", security(("bearer" = [])), request_body = AddProvider, responses((status = 201, body = ProviderView), (status = 400, description = "malformed or invalid request", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not an admin", body = ErrorBody), (status = 409, description = "the name is taken", body = ErrorBody)))]
pub(super) async fn add(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<AddProvider>,
) -> Result<(StatusCode, Json<ProviderView>), ApiError> {
    caller.require_admin()?;
    check_name(&req.name)?;
    let kind: ProviderKind = req.kind.parse().map_err(ApiError::bad_request)?;
    let base_url = normalize_base_url(&req.base_url)?;
    let key = req.key.trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request(format!(
            "key: expected 1 to {MAX_KEY_LEN} characters with no line breaks or control characters"
        )));
    }
    for (alias, model) in &req.aliases {
        if alias.is_empty() || model.is_empty() || alias.len() > 200 || model.len() > 200 {
            return Err(ApiError::bad_request(
                "aliases: each alias and model must be 1 to 200 characters",
            ));
        }
    }
    let inference = state.runtime.inference().ok_or_else(|| {
        ApiError::unavailable("the inference router is not running on this gateway")
    })?;
    let sealed_key = inference
        .keys()
        .and_then(|keys| keys.seal(&req.name, key))
        .map_err(|e| ApiError::internal(&e))?;
    let provider = Provider {
        name: req.name,
        kind,
        base_url,
        sealed_key,
        allow_private: req.allow_private,
        aliases: req.aliases,
        created: 0,
    };
    let name = provider.name.clone();
    state.db(move |s| s.add_provider(&provider)).await?;
    let added = state
        .db(move |s| s.provider(&name))
        .await?
        .ok_or_else(|| ApiError::internal(&"the provider vanished after it was added"))?;
    tracing::info!(provider = %added.name, kind = %added.kind, "provider added");
    Ok((StatusCode::CREATED, Json(added.into())))
}

/// `DELETE /api/v1/providers/{name}` (admin): removes a provider and its key.
#[utoipa::path(delete, path = "/api/v1/providers/{name}", tag = "inference", security(("bearer" = [])), params(("name" = String, Path, description = "provider name")), responses((status = 204, description = "removed"), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not an admin", body = ErrorBody), (status = 404, description = "no such provider", body = ErrorBody)))]
pub(super) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let target = name.clone();
    if state.db(move |s| s.remove_provider(&target)).await? {
        tracing::info!(provider = %name, "provider removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no provider named {name:?}")))
    }
}

/// A provider name goes into URL paths and `provider/model` policy rules.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "name {name:?}: use 1 to 63 lower-case letters, digits, '.', '_' or '-', starting \
             with a letter or digit (e.g. anthropic, local-vllm)"
        )))
    }
}

/// `http(s)://host[:port][/prefix]` without a query, a trailing `/` or a trailing `/v1`
/// (clients add `/v1` themselves).
fn normalize_base_url(url: &str) -> Result<String, ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(format!(
            "base_url {url:?}: {why} (e.g. https://api.anthropic.com or http://10.0.0.5:8000)"
        ))
    };
    let uri: Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("the scheme must be http or https"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad(
            "credentials do not belong in the URL; pass the key instead",
        ));
    }
    if uri.query().is_some() {
        return Err(bad("a query is not allowed"));
    }
    let path = uri.path().trim_end_matches('/');
    let path = path.strip_suffix("/v1").unwrap_or(path);
    Ok(format!(
        "{}://{}{path}",
        uri.scheme_str().unwrap_or("https"),
        authority
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalized_and_names_checked() {
        assert_eq!(
            normalize_base_url("https://api.openai.com/v1/").unwrap(),
            "https://api.openai.com"
        );
        assert_eq!(
            normalize_base_url("http://10.0.0.5:8000").unwrap(),
            "http://10.0.0.5:8000"
        );
        assert_eq!(
            normalize_base_url("https://openrouter.ai/api/v1").unwrap(),
            "https://openrouter.ai/api"
        );
        for bad in [
            "ftp://x",
            "nohost",
            "https://u:p@x.com",
            "https://x.com/?a=b",
        ] {
            assert!(normalize_base_url(bad).is_err(), "{bad}");
        }
        assert!(check_name("local-vllm").is_ok());
        for bad in ["", "A", "a/b", "-x", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}

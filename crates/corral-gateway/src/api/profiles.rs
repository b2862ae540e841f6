//! The profiles a sandbox may be created with: the built-in ones and those the operator
//! configured, each with its one-line description (for the web page's session picker).

use axum::extract::State;
use corral_policy::Profile;
use serde::Serialize;
use utoipa::ToSchema;

use super::caller::Caller;
use super::error::ErrorBody;
use super::{ApiError, AppState, Json};
use crate::config::Config;

/// A profile a sandbox may name.
#[derive(Serialize, ToSchema)]
pub struct ProfileView {
    /// What `POST /sandboxes` takes as `profile`.
    pub name: String,
    /// One line saying who the profile is for.
    pub description: String,
}

/// The built-in profiles, then the configured ones, by name. A configured profile is
/// checked at start-up, so loading it again only fails if its file changed since; it is
/// then listed with a description that says so.
pub fn available(config: &Config) -> Vec<ProfileView> {
    let builtin = corral_policy::builtin_names().map(|name| ProfileView {
        name: name.to_owned(),
        description: Profile::builtin(name)
            .map(|p| p.description)
            .unwrap_or_default(),
    });
    let configured = config.profiles.iter().map(|(name, file)| ProfileView {
        name: name.clone(),
        description: match Profile::load(file) {
            Ok(p) if !p.description.is_empty() => p.description,
            Ok(_) => "a profile configured by the operator".to_owned(),
            Err(e) => format!("cannot be loaded now ({e}); ask the operator"),
        },
    });
    builtin.chain(configured).collect()
}

/// `GET /api/v1/profiles`: the profiles a sandbox may be created with.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "sandboxes", security(("bearer" = [])), responses((status = 200, body = Vec<ProfileView>), (status = 401, description = "no or bad credentials", body = ErrorBody)))]
pub(super) async fn list_profiles(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Vec<ProfileView>>, ApiError> {
    let config = state.config.clone();
    let profiles = tokio::task::spawn_blocking(move || available(&config))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(profiles))
}

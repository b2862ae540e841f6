//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, generated from the handlers'
//! annotations and the request and response types, so it describes what the server does.

use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorDetail};
use super::openapi_common::CommonResponses;
use super::{
    attach, audit, files, ingress, lifecycle, profiles, providers, sandboxes, shares, usage, users,
};
use crate::store::Role;

#[derive(OpenApi)]
#[openapi(
    info(title = "corral gateway", description = "Users, tokens and sandboxes: records, start, stop, exec, logs, attach (a terminal over a WebSocket) and files (tar streams)."),
    paths(
        users::login,
        users::me,
        users::list,
        users::create,
        users::list_tokens,
        users::create_token,
        users::revoke_token,
        sandboxes::create,
        sandboxes::list,
        sandboxes::get,
        sandboxes::delete,
        lifecycle::start,
        lifecycle::stop,
        lifecycle::exec,
        lifecycle::logs,
        audit::audit,
        profiles::list_profiles,
        providers::list,
        providers::add,
        providers::remove,
        usage::list,
        usage::get_budget,
        usage::set_budget,
        attach::attach,
        files::download,
        files::upload,
        ingress::list_agents,
        ingress::ticket,
        shares::share,
        shares::unshare,
    ),
    components(schemas(ErrorBody, ErrorDetail, Role)),
    modifiers(&BearerAuth, &CommonResponses)
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /api/v1/openapi.json` (no credentials needed).
pub(super) async fn document() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}

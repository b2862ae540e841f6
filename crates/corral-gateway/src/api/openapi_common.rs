//! Responses every operation of one kind can give, added to the OpenAPI document in one
//! place rather than repeated in each handler's annotation: an operation that takes a JSON
//! body can answer 413 (the body is over the limit) and 415 (it is not declared as JSON),
//! whatever the handler does, because the body extractor refuses it first.

use utoipa::Modify;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

/// Adds the responses the body extractor and the size limit give.
pub(super) struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                if operation.request_body.is_some() {
                    add_error(
                        operation,
                        "413",
                        "the body is larger than the gateway accepts",
                    );
                    add_error(
                        operation,
                        "415",
                        "the body is not declared as application/json",
                    );
                }
            }
        }
    }
}

/// Adds an error response with the [`super::error::ErrorBody`] schema unless the operation
/// already documents that status.
fn add_error(operation: &mut Operation, status: &str, description: &str) {
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert(response.into());
}

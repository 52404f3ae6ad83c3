//! The OpenAPI document: what the handlers' `#[utoipa::path]` annotations
//! generate, finished with what holds for every route alike — the bearer
//! token security scheme on every operation but the document itself, and the
//! JSON error responses (400, 401, 403, 404, 409, 413, 500) — plus the
//! project's own `[[api.routes]]`.

use mayfly_spec::Architecture;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ErrorBody;

/// The name of the bearer-token security scheme in the document.
pub const SECURITY_SCHEME: &str = "token";

const ERROR_RESPONSES: [(&str, &str); 7] = [
    ("400", "Bad input: the message says what and where"),
    ("401", "No token, or a malformed, unknown, revoked or expired one"),
    ("403", "The token lacks the scope, or is limited to other jobs or buckets"),
    ("404", "No such bucket, object, queue, function, job, run or result"),
    ("409", "Refused: conflicts with the current state (e.g. cancelling a finished run)"),
    ("413", "The body is larger than allowed"),
    ("500", "The server failed; the message says why"),
];

/// The API's document for `architecture`, exactly as `/v1/openapi.json` serves it.
pub fn openapi_document(architecture: &Architecture) -> OpenApi {
    let (_, document) = crate::routes::api_router(architecture).split_for_parts();
    finish(document, architecture)
}

/// Finish the generated document: metadata, security, shared error responses, user routes.
pub(crate) fn finish(mut document: OpenApi, architecture: &Architecture) -> OpenApi {
    document.info.title = format!("Mayfly API of `{}`", architecture.name);
    document.info.version = "v1".to_owned();
    document.info.description = Some(
        "The authenticated HTTPS API of a Mayfly project. Every operation but this document needs \
         `Authorization: Bearer <token>` (create tokens with `mayfly tokens create`), and every access is \
         recorded in the access log before it is answered. Object keys and item ids travel as one \
         percent-encoded path segment."
            .to_owned(),
    );
    document.info.license = None;
    document.info.contact = None;
    for (path, methods, operation) in crate::routes::user_route_operations(architecture) {
        document.paths.add_path_operation(path, methods, operation);
    }
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(SECURITY_SCHEME, SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    components.schemas.insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    for item in document.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            secure(operation);
        }
    }
    document.paths.add_path_operation("/v1/openapi.json", vec![HttpMethod::Get], document_operation());
    document
}

fn secure(operation: &mut Operation) {
    operation.security = Some(vec![SecurityRequirement::new(SECURITY_SCHEME, Vec::<String>::new())]);
    for (status, description) in ERROR_RESPONSES {
        operation.responses.responses.entry(status.to_owned()).or_insert_with(|| error_response(description));
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(ErrorBody::name()))).build();
    RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build())
}

/// `GET /v1/openapi.json`: the only operation without security (an empty requirement).
fn document_operation() -> Operation {
    let content = ContentBuilder::new().schema(Some(utoipa::openapi::schema::Object::new())).build();
    OperationBuilder::new()
        .operation_id(Some("openapi_document"))
        .tag("meta")
        .summary(Some("This document"))
        .security(SecurityRequirement::default())
        .response(
            "200",
            ResponseBuilder::new().description("The OpenAPI document").content("application/json", content),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn architecture(extra: &str) -> Architecture {
        mayfly_spec::parse(
            "mayfly.toml",
            &format!(
                "version = 1\nname = \"doc\"\n[functions.echo]\nruntime = \"process\"\ncommand = [\"echo\"]\n{extra}"
            ),
        )
        .expect("a valid architecture")
    }

    #[test]
    fn every_operation_but_the_document_needs_the_token_and_answers_json_errors() {
        let document = openapi_document(&architecture(""));
        let json = serde_json::to_value(&document).unwrap();
        let mut operations = 0;
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                operations += 1;
                let security = &operation["security"];
                if path == "/v1/openapi.json" {
                    assert_eq!(security, &serde_json::json!([{}]), "the document is public");
                    continue;
                }
                assert_eq!(security, &serde_json::json!([{"token": []}]), "{method} {path}");
                for status in ["400", "401", "403", "404", "409", "413", "500"] {
                    assert!(operation["responses"][status].is_object(), "{method} {path} documents {status}");
                }
            }
        }
        assert!(operations >= 16, "found {operations} operations");
        assert_eq!(json["components"]["securitySchemes"]["token"]["scheme"], "bearer");
    }

    #[test]
    fn user_routes_are_documented_under_their_prefix() {
        let document = openapi_document(&architecture(
            "[api]\n[[api.routes]]\nmethod = \"GET\"\npath = \"/charts/{id}\"\nfunction = \"echo\"\n\
             [[api.routes]]\nmethod = \"ANY\"\npath = \"/hooks\"\nfunction = \"echo\"\n",
        ));
        let json = serde_json::to_value(&document).unwrap();
        let chart = &json["paths"]["/v1/routes/charts/{id}"];
        assert!(chart["get"].is_object());
        assert!(chart["post"].is_null(), "only the declared method");
        assert_eq!(chart["get"]["parameters"][0]["name"], "id");
        for method in ["get", "post", "put", "patch", "delete"] {
            assert!(json["paths"]["/v1/routes/hooks"][method].is_object(), "ANY covers {method}");
        }
    }
}

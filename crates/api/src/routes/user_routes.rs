//! The project's own HTTPS routes, `[[api.routes]]`, served under
//! `/v1/routes`: each request invokes its function with an API Gateway
//! HTTP API (payload 2.0) event and answers with what the function returned.
//!
//! The event's `rawPath` is the route's own path (without `/v1/routes`), and
//! the `Authorization` header is left out of it: the bearer token is
//! Mayfly's credential, not the function's. A function that fails, or
//! answers something that is not an HTTP response, gives a 502 (as API
//! Gateway answers a broken integration).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, any, on};
use mayfly_events::{HttpRequestParts, api_gateway_v2_request, parse_api_gateway_v2_response};
use mayfly_spec::{ApiRouteSpec, Architecture, HttpMethod};
use utoipa::openapi::path::{HttpMethod as DocMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{ContentBuilder, Required, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;

use crate::access::{Resource, Scope};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::{ApiState, USER_ROUTES_PREFIX};

fn methods(method: HttpMethod) -> Vec<(MethodFilter, DocMethod, &'static str)> {
    let all = [
        (HttpMethod::Get, MethodFilter::GET, DocMethod::Get, "GET"),
        (HttpMethod::Post, MethodFilter::POST, DocMethod::Post, "POST"),
        (HttpMethod::Put, MethodFilter::PUT, DocMethod::Put, "PUT"),
        (HttpMethod::Patch, MethodFilter::PATCH, DocMethod::Patch, "PATCH"),
        (HttpMethod::Delete, MethodFilter::DELETE, DocMethod::Delete, "DELETE"),
    ];
    all.into_iter()
        .filter(|(declared, ..)| method == HttpMethod::Any || *declared == method)
        .map(|(_, filter, doc, name)| (filter, doc, name))
        .collect()
}

fn route_key(route: &ApiRouteSpec) -> String {
    let method = match route.method {
        HttpMethod::Any => "ANY",
        other => methods(other).first().map_or("ANY", |(_, _, name)| name),
    };
    format!("{method} {}", route.path)
}

/// Add one axum route per declared `[[api.routes]]` entry.
pub(super) fn add_user_routes(
    mut router: OpenApiRouter<ApiState>,
    architecture: &Architecture,
) -> OpenApiRouter<ApiState> {
    let Some(api) = &architecture.api else { return router };
    for route in &api.routes {
        let spec = Arc::new(route.clone());
        let handler = move |State(api): State<ApiState>, caller: Caller, params: RawPathParams, request: Request| {
            let spec = spec.clone();
            async move {
                invoke_route(api, caller, &spec, params, request).await.unwrap_or_else(IntoResponse::into_response)
            }
        };
        let method_router: MethodRouter<ApiState> = match route.method {
            HttpMethod::Any => any(handler),
            method => {
                let filter = methods(method).into_iter().fold(None, |all: Option<MethodFilter>, (filter, ..)| {
                    Some(all.map_or(filter, |all| all.or(filter)))
                });
                on(filter.unwrap_or(MethodFilter::GET), handler)
            }
        };
        router = router.route(&format!("{USER_ROUTES_PREFIX}{}", route.path), method_router);
    }
    router
}

async fn invoke_route(
    api: ApiState,
    caller: Caller,
    route: &ApiRouteSpec,
    params: RawPathParams,
    request: Request,
) -> Result<Response, ApiError> {
    let key = route_key(route);
    api.authorize_caller(
        &caller,
        Scope::FunctionsInvoke,
        Resource::Unlimited,
        format!("route/{key} function/{}", route.function),
    )?;
    let (parts, body) = request.into_parts();
    let limit = api.config().limits.max_route_body;
    let body = axum::body::to_bytes(body, limit).await.map_err(|error| {
        ApiError::too_large(format!("the request body could not be read within {limit} bytes: {error}"))
    })?;
    let path = parts.uri.path();
    let raw_path = path.strip_prefix(USER_ROUTES_PREFIX).unwrap_or(path).to_owned();
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != axum::http::header::AUTHORIZATION)
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    let client = parts.extensions.get::<crate::serve::ClientAddr>().map(|client| client.0.ip().to_string());
    let request_id = mayfly_control::new_request_id();
    let event = api_gateway_v2_request(HttpRequestParts {
        method: parts.method.to_string(),
        raw_path,
        raw_query_string: parts.uri.query().unwrap_or_default().to_owned(),
        headers,
        body: body.to_vec(),
        route_key: Some(key.clone()),
        path_parameters: params.iter().map(|(name, value)| (name.to_owned(), value.to_owned())).collect(),
        protocol: format!("{:?}", parts.version),
        source_ip: client.unwrap_or_else(|| "127.0.0.1".to_owned()),
        request_id,
        received_at: api.config().clock.now(),
    });
    let payload = serde_json::to_vec(&event).map_err(|error| ApiError::internal(error.to_string()))?;
    let result = super::functions::invoke(api.config(), &route.function, "api", payload).await?;
    let bad_gateway = |detail: String| {
        ApiError::new(StatusCode::BAD_GATEWAY, format!("function `{}` behind `{key}` {detail}", route.function))
    };
    if !result.outcome.is_success() {
        let (_, message) = mayfly_control::describe_failure(&result.outcome);
        return Err(bad_gateway(format!(
            "failed ({}{}); request id {}",
            result.outcome.kind(),
            message.map(|m| format!(": {m}")).unwrap_or_default(),
            result.request_id
        )));
    }
    let response = parse_api_gateway_v2_response(result.response.as_deref().unwrap_or(b"null"))
        .map_err(|error| bad_gateway(format!("answered something that is not an HTTP response: {error}")))?;
    let status = StatusCode::from_u16(response.status).map_err(|error| bad_gateway(error.to_string()))?;
    let mut answer = Response::builder()
        .status(status)
        .body(Body::from(response.body))
        .map_err(|error| bad_gateway(format!("answered a response that cannot be sent: {error}")))?;
    let headers = answer.headers_mut();
    for (name, value) in response.headers {
        match (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => {
                tracing::warn!(route = %key, header = %name, "dropped a header the function answered that HTTP cannot carry")
            }
        }
    }
    for cookie in response.cookies {
        if let Ok(value) = HeaderValue::try_from(cookie.as_str()) {
            headers.append(axum::http::header::SET_COOKIE, value);
        }
    }
    Ok(answer)
}

/// The document's operations for `[[api.routes]]`: (path, methods, operation) each.
pub fn user_route_operations(architecture: &Architecture) -> Vec<(String, Vec<DocMethod>, Operation)> {
    let Some(api) = &architecture.api else { return Vec::new() };
    let mut operations = Vec::new();
    for route in &api.routes {
        let parameters: Vec<_> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')))
            .map(|name| {
                ParameterBuilder::new()
                    .name(name.trim_start_matches('*'))
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(utoipa::openapi::schema::Object::with_type(utoipa::openapi::schema::Type::String)))
                    .build()
            })
            .collect();
        for (_, doc_method, name) in methods(route.method) {
            let sanitized: String =
                route.path.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            let mut operation = OperationBuilder::new()
                .operation_id(Some(format!("route_{}{sanitized}", name.to_ascii_lowercase())))
                .tag("routes")
                .summary(Some(format!("`{name} {}`: invokes function `{}`", route.path, route.function)))
                .parameters(Some(parameters.clone()))
                .response(
                    "default",
                    ResponseBuilder::new().description("What the function answered (any status, headers and body)"),
                );
            if matches!(doc_method, DocMethod::Post | DocMethod::Put | DocMethod::Patch) {
                operation = operation.request_body(Some(
                    RequestBodyBuilder::new()
                        .description(Some("Passed to the function as the event's body"))
                        .content("*/*", ContentBuilder::new().build())
                        .build(),
                ));
            }
            operations.push((format!("{USER_ROUTES_PREFIX}{}", route.path), vec![doc_method], operation.build()));
        }
    }
    operations
}

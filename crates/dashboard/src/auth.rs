//! Signing in and checking every request: the token cookie, the sign-in and
//! sign-out handlers, and the middleware that asks [`Authorize`] about each
//! request. A page without a valid token redirects to the sign-in page; a
//! data endpoint (a path ending in `.json`, `.svg` or `.html`, fetched by the
//! pages' script) answers 401 (or 403) with a JSON error and no data.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;

use crate::views;
use crate::{Authorize, DashboardState, Denied};

/// The cookie that carries the token.
pub const COOKIE_NAME: &str = "mayfly_dashboard";
/// Where a person signs in.
pub const SIGN_IN_PATH: &str = "/sign-in";

/// What percent-encoding escapes in a query value or a cookie: everything but
/// letters, digits and the unreserved `-_.~`.
pub const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Who the request's token belongs to, as [`Authorize`] named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

/// The token in the request's cookie, if any.
pub fn token_from_cookies(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .and_then(|(_, value)| percent_decode_str(value).decode_utf8().ok().map(|token| token.into_owned()))
        .filter(|token| !token.is_empty())
}

/// The `Set-Cookie` value that keeps `token` for this browser session.
pub fn session_cookie(token: &str) -> String {
    format!("{COOKIE_NAME}={}; Path=/; HttpOnly; Secure; SameSite=Strict", utf8_percent_encode(token, QUERY_VALUE))
}

/// The `Set-Cookie` value that forgets the token.
pub fn cleared_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// Whether a path is a data endpoint (answered 401, not redirected).
pub fn is_data_path(path: &str) -> bool {
    [".json", ".svg", ".html"].iter().any(|suffix| path.ends_with(suffix))
}

/// `next` if it is a path on this site, `/` otherwise (no open redirects).
pub fn local_path_or_root(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(char::is_control)
        && !next.starts_with(SIGN_IN_PATH);
    if local { next } else { "/" }
}

/// Ask `authorize` about `token` on a blocking thread (it may touch a database).
async fn check(authorize: Arc<dyn Authorize>, token: String, path: String) -> Result<String, Denied> {
    tokio::task::spawn_blocking(move || authorize.authorize(&token, &path))
        .await
        .unwrap_or_else(|error| Err(Denied::Unavailable(format!("the token check stopped: {error}"))))
}

/// Middleware for every page and data endpoint: a valid token, or no further.
pub async fn require_token(State(state): State<Arc<DashboardState>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let path_and_query = request.uri().path_and_query().map_or_else(|| path.clone(), |pq| pq.as_str().to_owned());
    let denied = match token_from_cookies(request.headers()) {
        None => Denied::Unauthenticated("no token; sign in".to_owned()),
        Some(token) => match check(state.authorize.clone(), token, path.clone()).await {
            Ok(principal) => {
                request.extensions_mut().insert(Principal(principal));
                return next.run(request).await;
            }
            Err(denied) => denied,
        },
    };
    tracing::info!(path = %path, reason = %denied, "dashboard request denied");
    let status = denied_status(&denied);
    if is_data_path(&path) {
        return (status, axum::Json(serde_json::json!({ "error": denied.to_string() }))).into_response();
    }
    match denied {
        Denied::Unauthenticated(_) => {
            let target = format!("{SIGN_IN_PATH}?next={}", utf8_percent_encode(&path_and_query, QUERY_VALUE));
            Redirect::to(&target).into_response()
        }
        Denied::Forbidden(_) => {
            let page = views::sign_in(
                &state.project,
                &path_and_query,
                Some(&format!("{denied}. Sign in with another token.")),
            );
            (status, Html(page.into_string())).into_response()
        }
        Denied::Unavailable(_) => {
            tracing::error!(path = %path, reason = %denied, "dashboard request failed");
            let page = views::unavailable(&state.project, &denied.to_string());
            (status, [(header::RETRY_AFTER, HeaderValue::from_static("1"))], Html(page.into_string())).into_response()
        }
    }
}

/// The status a refusal answers: 401 signs in again, 403 needs another
/// token, 503 may work when tried again.
fn denied_status(denied: &Denied) -> StatusCode {
    match denied {
        Denied::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Denied::Forbidden(_) => StatusCode::FORBIDDEN,
        Denied::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
}

/// `GET /sign-in`: the form.
pub async fn sign_in_page(State(state): State<Arc<DashboardState>>, Query(query): Query<SignInQuery>) -> Response {
    let next = local_path_or_root(query.next.as_deref().unwrap_or("/"));
    Html(views::sign_in(&state.project, next, None).into_string()).into_response()
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    token: String,
    next: Option<String>,
}

/// `POST /sign-in`: check the pasted token; set the cookie and go on, or say why not.
pub async fn sign_in(State(state): State<Arc<DashboardState>>, Form(form): Form<SignInForm>) -> Response {
    let next = local_path_or_root(form.next.as_deref().unwrap_or("/")).to_owned();
    let token = form.token.trim().to_owned();
    if token.is_empty() {
        let page = views::sign_in(&state.project, &next, Some("Paste a token to sign in."));
        return (StatusCode::BAD_REQUEST, Html(page.into_string())).into_response();
    }
    match check(state.authorize.clone(), token.clone(), "/".to_owned()).await {
        Ok(principal) => {
            tracing::info!(principal = %principal, "signed in to the dashboard");
            let mut response = Redirect::to(&next).into_response();
            if let Ok(cookie) = HeaderValue::from_str(&session_cookie(&token)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(denied) => {
            tracing::info!(reason = %denied, "dashboard sign-in refused");
            let status = denied_status(&denied);
            let page = views::sign_in(&state.project, &next, Some(&format!("That token was not accepted: {denied}.")));
            (status, Html(page.into_string())).into_response()
        }
    }
}

/// `POST /sign-out`: forget the token.
pub async fn sign_out() -> Response {
    let mut response = Redirect::to(SIGN_IN_PATH).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&cleared_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_round_trips_through_the_cookie() {
        let token = "mf_abc;def= ghi";
        let cookie = session_cookie(token);
        assert!(cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("SameSite=Strict"));
        let value = cookie.split(';').next().unwrap().to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&format!("other=1; {value}; x=y")).unwrap());
        assert_eq!(token_from_cookies(&headers).as_deref(), Some(token));
        assert_eq!(token_from_cookies(&HeaderMap::new()), None);
        let mut cleared = HeaderMap::new();
        cleared.insert(header::COOKIE, HeaderValue::from_static("mayfly_dashboard="));
        assert_eq!(token_from_cookies(&cleared), None, "an emptied cookie is no token");
    }

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path_or_root("/runs/run-1?after=a"), "/runs/run-1?after=a");
        for outside in ["https://evil.example/", "//evil.example/", "/\\evil.example", "runs", "/sign-in?next=/", ""] {
            assert_eq!(local_path_or_root(outside), "/", "{outside}");
        }
    }

    #[test]
    fn data_paths_are_the_ones_scripts_fetch() {
        assert!(is_data_path("/runs/run-1/progress.json"));
        assert!(is_data_path("/runs/run-1/timeline.svg"));
        assert!(!is_data_path("/runs/run-1"));
        assert!(!is_data_path("/"));
    }
}

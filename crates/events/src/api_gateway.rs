//! API Gateway HTTP API requests and responses, payload format version 2.0,
//! for functions behind the `[api]` routes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mayfly_core::Timestamp;
use serde_json::{Map, Value, json};

use crate::sqs::json_type;
use crate::{EventError, LOCAL_ACCOUNT_ID};

/// The API id every request names.
const API_ID: &str = "mayfly";

/// What the HTTP server received, as the API layer hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequestParts {
    /// `GET`, `POST`, … as received.
    pub method: String,
    /// The path as received, without the query string, still percent-encoded.
    pub raw_path: String,
    /// The query string without the `?`, still percent-encoded; empty if none.
    pub raw_query_string: String,
    /// Header names and values in the order received; names in any case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The route that matched, as the architecture file declares it
    /// (`"GET /items/{id}"`, `"$default"`); `None` gives `"METHOD /raw/path"`.
    pub route_key: Option<String>,
    /// Values of the route's `{name}` segments, if the route has any.
    pub path_parameters: Vec<(String, String)>,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: String,
    pub source_ip: String,
    /// Unique per request; the invocation ledger's request id.
    pub request_id: String,
    pub received_at: Timestamp,
}

/// What a function answered, as the HTTP server sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponseParts {
    pub status: u16,
    /// Header names and values; a `multiValueHeaders` entry gives one pair per value.
    pub headers: Vec<(String, String)>,
    /// Each becomes one `Set-Cookie` header.
    pub cookies: Vec<String>,
    pub body: Vec<u8>,
}

/// The API Gateway HTTP API (payload format 2.0) event for a request.
///
/// As API Gateway does: header names are lowercased and repeated headers
/// joined with commas (cookies go to `cookies` instead, one entry per cookie);
/// `queryStringParameters` holds the decoded query parameters, repeated ones
/// joined with commas; a UTF-8 body is sent as text and any other body as
/// base64 with `isBase64Encoded: true`; empty maps, an empty body and absent
/// cookies are left out. `domainName` is the `host` header (or `localhost`).
pub fn api_gateway_v2_request(request: HttpRequestParts) -> Value {
    let route_key = request.route_key.clone().unwrap_or_else(|| format!("{} {}", request.method, request.raw_path));
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &request.headers {
        let name = name.to_ascii_lowercase();
        if name == "cookie" {
            cookies.extend(value.split(';').map(str::trim).filter(|cookie| !cookie.is_empty()).map(str::to_owned));
            continue;
        }
        append_comma_joined(&mut headers, name, value);
    }
    let mut query_string_parameters = Map::new();
    for (name, value) in form_urlencoded::parse(request.raw_query_string.as_bytes()) {
        append_comma_joined(&mut query_string_parameters, name.into_owned(), &value);
    }
    let user_agent = headers.get("user-agent").and_then(Value::as_str).unwrap_or_default().to_owned();
    let domain_name = headers.get("host").and_then(Value::as_str).unwrap_or("localhost").to_owned();
    let domain_prefix = domain_name.split(['.', ':']).next().unwrap_or_default().to_owned();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.raw_path,
        "rawQueryString": request.raw_query_string,
        "headers": headers,
        "requestContext": {
            "accountId": LOCAL_ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": domain_name,
            "domainPrefix": domain_prefix,
            "http": {
                "method": request.method,
                "path": request.raw_path,
                "protocol": request.protocol,
                "sourceIp": request.source_ip,
                "userAgent": user_agent,
            },
            "requestId": request.request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": common_log_time(request.received_at),
            "timeEpoch": request.received_at.as_millis(),
        },
        "isBase64Encoded": false,
    });
    let object = event.as_object_mut().expect("built as an object above");
    if !cookies.is_empty() {
        object.insert("cookies".into(), json!(cookies));
    }
    if !query_string_parameters.is_empty() {
        object.insert("queryStringParameters".into(), Value::Object(query_string_parameters));
    }
    if !request.path_parameters.is_empty() {
        let parameters: Map<String, Value> =
            request.path_parameters.into_iter().map(|(name, value)| (name, Value::String(value))).collect();
        object.insert("pathParameters".into(), Value::Object(parameters));
    }
    if !request.body.is_empty() {
        let (body, is_base64_encoded) = match String::from_utf8(request.body) {
            Ok(text) => (text, false),
            Err(error) => (BASE64.encode(error.as_bytes()), true),
        };
        object.insert("body".into(), Value::String(body));
        object.insert("isBase64Encoded".into(), Value::Bool(is_base64_encoded));
    }
    event
}

fn append_comma_joined(map: &mut Map<String, Value>, name: String, value: &str) {
    match map.get_mut(&name) {
        Some(Value::String(existing)) => {
            existing.push(',');
            existing.push_str(value);
        }
        _ => {
            map.insert(name, Value::String(value.to_owned()));
        }
    }
}

/// `21/Apr/2020:15:08:21 +0000`, the time format API Gateway writes.
fn common_log_time(time: Timestamp) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    // `to_rfc3339` is `YYYY-MM-DDTHH:MM:SS.mmmZ`, fixed width for years 0–9999.
    let rfc3339 = time.to_rfc3339();
    let (date, clock) = rfc3339.split_once('T').unwrap_or((&rfc3339, "00:00:00"));
    let mut date_parts = date.rsplitn(3, '-');
    let day = date_parts.next().unwrap_or("01");
    let month: usize = date_parts.next().and_then(|month| month.parse().ok()).unwrap_or(1);
    let year = date_parts.next().unwrap_or("1970");
    let month = MONTHS.get(month.saturating_sub(1)).unwrap_or(&"Jan");
    let clock = clock.get(..8).unwrap_or("00:00:00");
    format!("{day}/{month}/{year}:{clock} +0000")
}

/// Read what an HTTP API function returned, as API Gateway reads payload
/// format 2.0.
///
/// A JSON object with `statusCode` is a structured response: `statusCode`
/// (an integer 100–599), optional `headers` (string values; numbers and
/// booleans are written as text), `multiValueHeaders` (arrays), `cookies`,
/// `body` (a string) and `isBase64Encoded`. Any other JSON value is the body
/// of a 200 response with `content-type: application/json`, exactly as the
/// function wrote it, as Lambda does. Invalid JSON, and a structured response
/// with a field of the wrong type, is an [`EventError`] naming the field.
pub fn parse_api_gateway_v2_response(bytes: &[u8]) -> Result<HttpResponseParts, EventError> {
    const WHAT: &str = "HTTP response";
    let malformed = |detail: String| EventError::Malformed { what: WHAT, detail };
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| EventError::InvalidJson { what: WHAT, detail: error.to_string() })?;
    let Some(object) = value.as_object().filter(|object| object.contains_key("statusCode")) else {
        return Ok(HttpResponseParts {
            status: 200,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            cookies: Vec::new(),
            body: bytes.trim_ascii().to_vec(),
        });
    };
    let status = match &object["statusCode"] {
        Value::Number(number) => number.as_u64().and_then(|status| u16::try_from(status).ok()),
        Value::String(text) => text.parse::<u16>().ok(),
        _ => None,
    }
    .filter(|status| (100..=599).contains(status))
    .ok_or_else(|| {
        malformed(format!("`statusCode` must be an integer from 100 to 599, not {}", object["statusCode"]))
    })?;

    let mut headers = Vec::new();
    if let Some(map) = optional_object(object, "headers").map_err(&malformed)? {
        for (name, value) in map {
            let value = header_text(value)
                .ok_or_else(|| malformed(format!("`headers.{name}` must be a string, not {}", json_type(value))))?;
            headers.push((name.clone(), value));
        }
    }
    if let Some(map) = optional_object(object, "multiValueHeaders").map_err(&malformed)? {
        for (name, values) in map {
            let Value::Array(values) = values else {
                return Err(malformed(format!(
                    "`multiValueHeaders.{name}` must be an array of strings, not {}",
                    json_type(values)
                )));
            };
            for value in values {
                let value = header_text(value).ok_or_else(|| {
                    malformed(format!("`multiValueHeaders.{name}` holds {}; use strings", json_type(value)))
                })?;
                headers.push((name.clone(), value));
            }
        }
    }
    let cookies = match object.get("cookies") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(cookies)) => cookies
            .iter()
            .map(|cookie| {
                cookie
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed(format!("`cookies` holds {}; use strings", json_type(cookie))))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(malformed(format!("`cookies` must be an array of strings, not {}", json_type(other))));
        }
    };
    let is_base64_encoded = match object.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(other) => return Err(malformed(format!("`isBase64Encoded` must be true or false, not {other}"))),
    };
    let body = match object.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(body)) if is_base64_encoded => BASE64.decode(body).map_err(|error| {
            malformed(format!("`body` is not valid base64 although `isBase64Encoded` is true: {error}"))
        })?,
        Some(Value::String(body)) => body.clone().into_bytes(),
        Some(other) => {
            return Err(malformed(format!(
                "`body` must be a string (serialize JSON bodies yourself), not {}",
                json_type(other)
            )));
        }
    };
    Ok(HttpResponseParts { status, headers, cookies, body })
}

fn optional_object<'a>(object: &'a Map<String, Value>, field: &str) -> Result<Option<&'a Map<String, Value>>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(format!("`{field}` must be an object, not {}", json_type(other))),
    }
}

fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_log_time_matches_api_gateway() {
        assert_eq!(common_log_time(Timestamp::from_millis(1_587_481_701_067)), "21/Apr/2020:15:08:21 +0000");
    }
}

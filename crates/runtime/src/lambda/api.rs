//! The AWS Lambda Runtime API, served to one instance on its own loopback
//! port over keep-alive HTTP/1.1 (hyper):
//!
//! - `GET  /2018-06-01/runtime/invocation/next` long-polls for the next event;
//! - `POST /2018-06-01/runtime/invocation/{id}/response` and `.../{id}/error`
//!   complete it;
//! - `POST /2018-06-01/runtime/init/error` reports a failed init.
//!
//! The server only moves messages: events come in on a channel from the
//! instance's owner, and everything the handler reports goes back on another.
//! Which request is in flight, and what its outcome is, the owner decides.
//!
//! A container instance's server listens on the gateway of its Mayfly
//! network instead of loopback, and answers only connections from that
//! container's address ([`AllowedPeer::Only`](crate::peers::AllowedPeer::Only)): other containers on the
//! network cannot poll its events.
//!
//! FIXME: like AWS's own emulator, a loopback server trusts whoever connects
//! to its port; another local process that finds the port could poll events.
//! Checking the peer's pid (SO_PEERCRED needs a Unix socket, which the
//! runtime clients do not speak) or a per-instance secret path would close it.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};

use crate::peers::{AllowedPeer, serve_allowed};

const NEXT_PATH: &str = "/2018-06-01/runtime/invocation/next";
const INIT_ERROR_PATH: &str = "/2018-06-01/runtime/init/error";
const INVOCATION_PREFIX: &str = "/2018-06-01/runtime/invocation/";

/// An event waiting for the instance's `/next`.
#[derive(Debug)]
pub(crate) struct PendingEvent {
    pub request_id: HeaderValue,
    pub payload: Bytes,
    /// `Lambda-Runtime-Deadline-Ms`: Unix epoch milliseconds.
    pub deadline_ms: u64,
    pub trace_id: Option<HeaderValue>,
}

/// What the instance told the API.
#[derive(Debug)]
pub(crate) enum ApiEvent {
    /// The first `/next`: init is over.
    Ready,
    Response {
        request_id: String,
        body: Bytes,
    },
    ResponseTooLarge {
        request_id: String,
        size: u64,
    },
    Error {
        request_id: String,
        error_type: String,
        message: String,
    },
    InitError {
        error_type: String,
        message: String,
    },
}

struct ApiState {
    function_arn: HeaderValue,
    max_body: usize,
    events: mpsc::UnboundedSender<ApiEvent>,
    pending: Mutex<mpsc::Receiver<PendingEvent>>,
    ready_reported: AtomicBool,
}

/// The running server; dropping it stops the server and its connections.
pub(crate) struct RuntimeApiServer {
    pub address: SocketAddr,
    pub pending: mpsc::Sender<PendingEvent>,
    pub events: mpsc::UnboundedReceiver<ApiEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RuntimeApiServer {
    /// Serves on `bind` (a free port), to `allowed` peers.
    pub(crate) async fn start(
        function_arn: &str,
        max_body: usize,
        bind: IpAddr,
        allowed: AllowedPeer,
    ) -> std::io::Result<RuntimeApiServer> {
        let listener = TcpListener::bind((bind, 0)).await?;
        let address = listener.local_addr()?;
        let (pending_sender, pending_receiver) = mpsc::channel(1);
        let (event_sender, event_receiver) = mpsc::unbounded_channel();
        let state = Arc::new(ApiState {
            function_arn: HeaderValue::from_str(function_arn)
                .unwrap_or_else(|_| HeaderValue::from_static("arn:aws:lambda:local:000000000000:function:unknown")),
            max_body,
            events: event_sender,
            pending: Mutex::new(pending_receiver),
            ready_reported: AtomicBool::new(false),
        });
        let task = tokio::spawn(serve(listener, state, allowed));
        Ok(RuntimeApiServer { address, pending: pending_sender, events: event_receiver, task })
    }
}

async fn serve(listener: TcpListener, state: Arc<ApiState>, allowed: AllowedPeer) {
    serve_allowed(listener, allowed, "runtime API", move |stream| {
        let state = Arc::clone(&state);
        async move {
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&state, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "runtime API connection ended");
            }
        }
    })
    .await
}

async fn route(state: &ApiState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path == NEXT_PATH && request.method() == Method::GET {
        return next_event(state).await;
    }
    if request.method() != Method::POST {
        return status(StatusCode::NOT_FOUND, "unknown runtime API route");
    }
    if path == INIT_ERROR_PATH {
        let (error_type, message) = read_error(state, request).await;
        let _ = state.events.send(ApiEvent::InitError { error_type, message });
        return accepted();
    }
    let Some(rest) = path.strip_prefix(INVOCATION_PREFIX) else {
        return status(StatusCode::NOT_FOUND, "unknown runtime API route");
    };
    if let Some(request_id) = rest.strip_suffix("/response") {
        let request_id = request_id.to_owned();
        let declared_size = request
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        return match Limited::new(request.into_body(), state.max_body).collect().await {
            Ok(body) => {
                let _ = state.events.send(ApiEvent::Response { request_id, body: body.to_bytes() });
                accepted()
            }
            Err(_) => {
                let size = declared_size.unwrap_or(state.max_body as u64 + 1);
                let _ = state.events.send(ApiEvent::ResponseTooLarge { request_id, size });
                status(StatusCode::PAYLOAD_TOO_LARGE, "response larger than the function's max payload")
            }
        };
    }
    if let Some(request_id) = rest.strip_suffix("/error") {
        let request_id = request_id.to_owned();
        let (error_type, message) = read_error(state, request).await;
        let _ = state.events.send(ApiEvent::Error { request_id, error_type, message });
        return accepted();
    }
    status(StatusCode::NOT_FOUND, "unknown runtime API route")
}

async fn next_event(state: &ApiState) -> Response<Full<Bytes>> {
    if !state.ready_reported.swap(true, Ordering::Relaxed) {
        let _ = state.events.send(ApiEvent::Ready);
    }
    let event = state.pending.lock().await.recv().await;
    let Some(event) = event else {
        return status(StatusCode::GONE, "the instance is shutting down");
    };
    let mut response = Response::new(Full::new(event.payload));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("lambda-runtime-aws-request-id", event.request_id);
    headers.insert("lambda-runtime-deadline-ms", HeaderValue::from(event.deadline_ms));
    headers.insert("lambda-runtime-invoked-function-arn", state.function_arn.clone());
    if let Some(trace_id) = event.trace_id {
        headers.insert("lambda-runtime-trace-id", trace_id);
    }
    response
}

/// The error a handler reported: `errorType` (or the
/// `Lambda-Runtime-Function-Error-Type` header) and `errorMessage`.
async fn read_error(state: &ApiState, request: Request<Incoming>) -> (String, String) {
    let header_type = request
        .headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(request.into_body(), state.max_body).collect().await.map(|body| body.to_bytes());
    let parsed = body.as_ref().ok().and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok());
    let field = |name: &str| parsed.as_ref().and_then(|value| value.get(name)).and_then(|value| value.as_str());
    let error_type = field("errorType").map(str::to_owned).or(header_type).unwrap_or_else(|| "Unhandled".to_owned());
    let message = match (field("errorMessage"), &body) {
        (Some(message), _) => message.to_owned(),
        (None, Ok(body)) => String::from_utf8_lossy(body).into_owned(),
        (None, Err(_)) => "error body larger than the function's max payload".to_owned(),
    };
    (error_type, message)
}

fn accepted() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}")));
    *response.status_mut() = StatusCode::ACCEPTED;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn status(code: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    let body = format!("{{\"errorMessage\":\"{message}\",\"errorType\":\"InvalidRequest\"}}");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

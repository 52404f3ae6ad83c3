//! Serving a router over TLS only: every connection must complete a TLS
//! handshake before a byte of HTTP is read, so plain HTTP to the port gets a
//! failed handshake and no data. HTTP/1.1 over rustls; graceful shutdown
//! lets requests in flight finish (bounded).
//!
//! A request refused before its body was read (a bad token, an unknown
//! route) still has its body read and discarded, up to [`UNREAD_BODY_LIMIT`]
//! within [`UNREAD_BODY_TIMEOUT`], before the connection goes on: clients
//! such as reqwest, Python's `requests` and the AWS SDKs write the whole
//! body before reading the answer, and a server that closed on them would
//! turn a clear 401 into a broken pipe (nginx's "lingering close").

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight (and live log streams) get after shutdown is asked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of an unread request body read and discarded after the answer.
pub const UNREAD_BODY_LIMIT: u64 = 8 << 20;
/// How long reading an unread request body may take after the answer.
pub const UNREAD_BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The peer of a connection, put in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Serve `router` on `listener` over TLS until `shutdown` completes, then
/// stop accepting, let requests in flight finish (at most a few seconds) and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn(drain_unread_body));
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(hyper::server::conn::http1::Builder::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(error = %error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls_stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => tls_stream,
                Ok(Err(error)) => {
                    tracing::debug!(peer = %peer, error = %error, "TLS handshake failed; connection closed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "TLS handshake timed out; connection closed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ClientAddr(peer));
                let mut router = router.clone();
                async move { router.call(request.map(axum::body::Body::new)).await }
            });
            let connection = builder.serve_connection(TokioIo::new(tls_stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(peer = %peer, error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::info!("requests still running after the drain timeout were cut off");
    }
    Ok(())
}

/// Give the handler a body it takes only when it first reads; if it never
/// did, read and discard the body (bounded) once the response is ready.
async fn drain_unread_body(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let slot = Arc::new(std::sync::Mutex::new(Some(body)));
    let lazy = LazyBody { slot: slot.clone(), body: None };
    let response = next.run(axum::extract::Request::from_parts(parts, axum::body::Body::new(lazy))).await;
    let unread = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    if let Some(body) = unread {
        let discard = async {
            let mut stream = body.into_data_stream();
            let mut read = 0u64;
            while let Some(Ok(chunk)) = futures::StreamExt::next(&mut stream).await {
                read += chunk.len() as u64;
                if read > UNREAD_BODY_LIMIT {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(UNREAD_BODY_TIMEOUT, discard).await;
    }
    response
}

/// A request body taken from its slot on the first poll.
struct LazyBody {
    slot: Arc<std::sync::Mutex<Option<axum::body::Body>>>,
    body: Option<axum::body::Body>,
}

impl http_body::Body for LazyBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        if self.body.is_none() {
            let taken = self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            self.body = taken;
        }
        match self.body.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(context),
            None => std::task::Poll::Ready(None),
        }
    }

    // What the body tells of itself (its length, whether it is empty) is
    // what the original tells, before and after it is taken.
    fn size_hint(&self) -> http_body::SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None => self
                .slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .map_or_else(|| http_body::SizeHint::with_exact(0), http_body::Body::size_hint),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(body) => body.is_end_stream(),
            None => self
                .slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .is_none_or(http_body::Body::is_end_stream),
        }
    }
}

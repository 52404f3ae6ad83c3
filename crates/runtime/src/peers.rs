//! Who may talk to a function instance's servers (its Runtime API and its
//! AWS endpoint relay), and the one accept loop both serve through: a
//! connection from any other address than the allowed peer's is closed
//! before a byte of it is read.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Who may talk to a server.
#[derive(Debug, Clone)]
pub(crate) enum AllowedPeer {
    /// Anyone who reaches its address (loopback servers of local processes).
    Anyone,
    /// Only this address, once known (a container's, known after it started).
    Only(watch::Receiver<Option<IpAddr>>),
}

/// How long a connection waits for the address of the container it must come from.
const PEER_ADDRESS_WAIT: Duration = Duration::from_secs(30);

/// Whether `peer` is the one `allowed` (waiting for a container's address
/// to be known, up to [`PEER_ADDRESS_WAIT`]).
pub(crate) async fn peer_is_allowed(allowed: AllowedPeer, peer: IpAddr) -> bool {
    match allowed {
        AllowedPeer::Anyone => true,
        AllowedPeer::Only(mut address) => {
            let known = tokio::time::timeout(PEER_ADDRESS_WAIT, address.wait_for(Option::is_some)).await;
            matches!(known, Ok(Ok(expected)) if *expected == Some(peer))
        }
    }
}

/// Accepts connections on `listener` for ever, hands each one from the
/// allowed peer to `handle` (no Nagle delay), and closes the others with a
/// warning naming `what` the server is. Connections are tasks of this
/// future: dropping or aborting it ends them too.
pub(crate) async fn serve_allowed<H, Fut>(listener: TcpListener, allowed: AllowedPeer, what: &'static str, handle: H)
where
    H: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(error = %error, "{what} accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let allowed = allowed.clone();
                let handle = handle.clone();
                connections.spawn(async move {
                    if !peer_is_allowed(allowed, peer.ip()).await {
                        tracing::warn!(%peer, "refused a {what} connection from another address than its instance's");
                        return;
                    }
                    handle(stream).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

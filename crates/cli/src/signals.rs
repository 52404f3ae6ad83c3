//! The signals that stop this process gracefully, for the commands that
//! serve until told to stop (`mayfly serve`, `mayfly broker`). Signals are
//! the process's, so the binary's: the host's servers and control plane
//! take the future that stops them from their caller.

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot listen for SIGINT/SIGTERM; stop the server with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

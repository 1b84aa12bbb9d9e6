//! Turns Ctrl-C and SIGTERM into cancellation of the root token, so a run
//! stops taking readings and drains instead of dying mid-publish.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first Ctrl-C (or SIGTERM on Unix).
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate() => {}
            () = token.cancelled() => return,
        }
        tracing::info!("shutdown requested, draining");
        token.cancel();
    });
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await;
}

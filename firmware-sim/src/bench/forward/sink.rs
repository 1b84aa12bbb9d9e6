//! The counting HTTP sink Node-RED's `http request` node posts to in
//! `bench forward`: an axum server on a free loopback port that counts every
//! POST and the distinct bodies among them, and that can be taken down (port
//! and connections closed, as a stopped collector process leaves them) and
//! brought back on the same port.
//!
//! A body is one MQTT payload. The bench's sized SenML payloads carry the
//! device id in their base name and a per-device unique time, so distinct
//! bodies are distinct readings; a resend of the same reading is counted
//! once among the unique ones.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The body of the readiness probe: counted apart, never as a reading.
pub(super) const PROBE: &[u8] = b"bench-forward-probe";
/// Where the flow posts (the whole URL goes to Node-RED in its environment).
const PATH: &str = "/readings";
/// Requests in progress are answered before the port closes; a request
/// takes microseconds, so this only bounds a stuck connection.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What the sink has received since it first started.
#[derive(Debug, Default)]
struct Counts {
    /// Every POST answered, resends included.
    requests: AtomicU64,
    /// Readiness probes, left out of `requests`.
    probes: AtomicU64,
    /// 64-bit hashes of the distinct bodies (at 200 000 readings a collision
    /// is a one-in-a-billion event).
    unique: Mutex<HashSet<u64>>,
}

/// The running server behind a [`Sink`].
struct Server {
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    fn spawn(listener: TcpListener, counts: Arc<Counts>) -> Server {
        let stop = CancellationToken::new();
        let app = Router::new().route(PATH, post(receive)).with_state(counts);
        let signal = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(signal.cancelled_owned())
                .await
        });
        Server { stop, task }
    }
}

/// The counting sink; stops serving when dropped.
pub(super) struct Sink {
    addr: SocketAddr,
    counts: Arc<Counts>,
    /// `None` while the sink is down.
    server: Option<Server>,
}

impl Sink {
    /// Serves on a free port of 127.0.0.1.
    pub(super) async fn start() -> anyhow::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the sink on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let server = Server::spawn(listener, Arc::clone(&counts));
        Ok(Sink {
            addr,
            counts,
            server: Some(server),
        })
    }

    /// The URL to POST readings to.
    pub(super) fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    /// POSTs answered, resends included, probes left out.
    pub(super) fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::Relaxed)
    }

    /// Distinct readings received.
    pub(super) fn unique(&self) -> u64 {
        let unique = self
            .counts
            .unique
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        unique.len() as u64
    }

    /// Readiness probes received.
    pub(super) fn probes(&self) -> u64 {
        self.counts.probes.load(Ordering::Relaxed)
    }

    /// Takes the sink down: stops accepting, answers what is in progress,
    /// closes every connection and the port, as a collector process that was
    /// stopped would; from then on a connect is refused.
    pub(super) async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(server) = self.server.take() else {
            return Ok(());
        };
        server.stop.cancel();
        let abort = server.task.abort_handle();
        match tokio::time::timeout(STOP_GRACE, server.task).await {
            Ok(joined) => joined
                .context("the sink's server task failed")?
                .context("the sink's server failed"),
            Err(_) => {
                abort.abort();
                bail!("the sink did not close its connections within {STOP_GRACE:?}")
            }
        }
    }

    /// Brings the sink back on the same port, with its counts kept.
    pub(super) async fn restart(&mut self) -> anyhow::Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        // tokio sets SO_REUSEADDR, so the port's TIME_WAIT sockets are no obstacle.
        let listener = TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("cannot bind the sink again on {}", self.addr))?;
        self.server = Some(Server::spawn(listener, Arc::clone(&self.counts)));
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.stop.cancel();
        }
    }
}

/// Counts one POST. Always 204: the sink never refuses while it is up.
async fn receive(State(counts): State<Arc<Counts>>, body: Bytes) -> StatusCode {
    if body.as_ref() == PROBE {
        counts.probes.fetch_add(1, Ordering::Relaxed);
        return StatusCode::NO_CONTENT;
    }
    counts.requests.fetch_add(1, Ordering::Relaxed);
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    counts
        .unique
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(hasher.finish());
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(client: &reqwest::Client, url: &str, body: &'static [u8]) -> reqwest::Result<()> {
        client
            .post(url)
            .body(body)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    #[tokio::test]
    async fn counts_requests_and_distinct_readings_apart_from_probes() {
        let sink = Sink::start().await.unwrap();
        let client = reqwest::Client::new();
        for body in [&b"a"[..], b"b", b"a", PROBE] {
            post(&client, &sink.url(), body).await.unwrap();
        }
        assert_eq!((sink.requests(), sink.unique(), sink.probes()), (3, 2, 1));
    }

    #[tokio::test]
    async fn a_stopped_sink_refuses_connections_and_comes_back_on_its_port() {
        let mut sink = Sink::start().await.unwrap();
        // Keep-alive on, as Node-RED's node is set up: an open connection
        // must not outlive the outage.
        let client = reqwest::Client::new();
        post(&client, &sink.url(), b"before").await.unwrap();

        sink.stop().await.unwrap();
        let refused = post(&client, &sink.url(), b"during").await.unwrap_err();
        assert!(refused.is_connect() || refused.is_request(), "{refused}");

        sink.restart().await.unwrap();
        post(&client, &sink.url(), b"after").await.unwrap();
        assert_eq!((sink.requests(), sink.unique()), (2, 2));
    }
}

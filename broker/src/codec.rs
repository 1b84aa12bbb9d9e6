//! The seam into rumqttd: a wrapper around its MQTT 3.1.1 codec (`V4`).
//!
//! rumqttd's router queues a PUBACK before it looks at a publish and has no
//! persistence hook, but every byte a connection reads or writes passes
//! through the `Protocol` codec handed to `Server::new`, which rumqttd clones
//! once per accepted connection. So this codec
//!
//! ```text
//! read_mut: frame a packet with V4; on PUBLISH: validate topic and payload,
//!           submit to the sink (spool) and remember the ticket
//! route:    a QoS 0/1 publish whose topic nobody subscribed to skips
//!           rumqttd's router; the connection writes its PUBACK itself
//!           (vendored patch 7, `subscriptions.rs`)
//! ready_to_write: before a batch holding a PUBACK/PUBREC, a future that
//!           waits (without a thread) until the connection's last ticket has
//!           an outcome, when the sink offers an outcome channel
//! write:    on PUBACK/PUBREC: wait until the connection's last ticket is
//!           durable (at once after ready_to_write; otherwise blocking), then
//!           encode; if the sink failed, refuse to encode, which makes
//!           rumqttd drop the connection without acknowledging
//! ```
//!
//! Invariant: a device never sees a PUBACK for a publish the sink has not made
//! durable. Waiting for the connection's *latest* ticket rather than the one of
//! the acknowledged packet can only wait longer, never shorter.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{Error, Packet, Protocol, Publish, ReadyToWrite, Route};
use telemetry::{check_well_formed, CborError, Limits};
use tracing::{error, warn};

use crate::metrics::{BrokerMetrics, QosLabel, ReasonLabel};
use crate::sink::{Disposition, Incoming, IngestSink, Ticket};
use crate::subscriptions::{RouteState, Subscriptions};
use crate::topic::device_id_from_topic;

/// How often a device's rejected publishes are logged at most.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// State shared by every connection of one listener.
struct Shared {
    sink: Arc<dyn IngestSink>,
    /// Whether devices authenticate; then a device may only publish under
    /// `devices/{its username}/` and subscribe there.
    authenticated: bool,
    limits: Limits,
    durable_timeout: Duration,
    metrics: BrokerMetrics,
    /// Last time a rejection was logged per device, to log once per interval.
    reject_log: Mutex<std::collections::HashMap<String, Instant>>,
    /// Every filter subscribed on the broker, all listeners together.
    subscriptions: Arc<Subscriptions>,
}

/// Per-connection state. `write` takes `&self`, hence the atomics.
#[derive(Default)]
struct Connection {
    /// Ticket of the latest QoS 1/2 publish read on this connection (0: none).
    last_ticket: AtomicU64,
    /// When each QoS 1/2 publish not yet acknowledged was read, oldest
    /// first; rumqttd acknowledges in order.
    unacked_since: Mutex<VecDeque<Instant>>,
    /// Whether this value stands for a live connection (the template does not).
    live: AtomicBool,
    client_id: Mutex<String>,
    /// The username of CONNECT: the device id when devices authenticate.
    username: Mutex<Option<String>>,
    metrics: Option<BrokerMetrics>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let (true, Some(metrics)) = (self.live.load(Ordering::Relaxed), &self.metrics) {
            metrics.connections.dec();
        }
    }
}

/// rumqttd `Protocol` that spools publishes and holds acknowledgements.
pub struct IngestCodec {
    shared: Arc<Shared>,
    conn: Arc<Connection>,
    /// Whether this connection's publishes may still skip the router.
    route: RouteState,
}

impl IngestCodec {
    pub(crate) fn new(
        sink: Arc<dyn IngestSink>,
        limits: Limits,
        durable_timeout: Duration,
        metrics: BrokerMetrics,
        authenticated: bool,
        subscriptions: Arc<Subscriptions>,
    ) -> IngestCodec {
        IngestCodec {
            shared: Arc::new(Shared {
                sink,
                authenticated,
                limits,
                durable_timeout,
                metrics,
                reject_log: Mutex::default(),
                subscriptions,
            }),
            conn: Arc::default(),
            route: RouteState::default(),
        }
    }

    /// A copy for a `Server` to clone per connection; not itself a connection.
    pub(crate) fn clone_template(&self) -> IngestCodec {
        IngestCodec {
            shared: self.shared.clone(),
            conn: Arc::default(),
            route: RouteState::default(),
        }
    }

    /// The MQTT client id this connection sent in CONNECT.
    fn client_id(&self) -> String {
        self.conn
            .client_id
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    fn ingest(&self, publish: &Publish, qos: u8) -> Result<(), Error> {
        let shared = &self.shared;
        let received_at = now_ms();
        let topic = std::str::from_utf8(&publish.topic).map_err(|_| Error::TopicNotUtf8)?;
        let username = self.conn.username.lock().ok().and_then(|u| u.clone());
        let bound =
            |device_id: &str| !shared.authenticated || username.as_deref() == Some(device_id);
        let Some(device_id) = device_id_from_topic(topic).filter(|id| bound(id)) else {
            let client_id = self.client_id();
            let reason = if device_id_from_topic(topic).is_some() {
                "other_device"
            } else {
                "topic"
            };
            self.reject(
                &client_id,
                reason,
                "topic is not devices/{device_id}/telemetry",
            );
            // Best effort: keep it for inspection, but the connection closes
            // either way, so nothing waits on this ticket.
            let _ = shared.sink.submit(Incoming {
                device_id: client_id,
                topic: topic.to_string(),
                received_at,
                payload: publish.payload.clone(),
                qos,
                disposition: Disposition::Rejected {
                    reason: format!("topic {topic:?} is not devices/{{device_id}}/telemetry"),
                },
            });
            return Err(Error::InvalidProtocol);
        };

        let disposition = match check_payload(&publish.payload, &shared.limits) {
            Ok(()) => {
                shared
                    .metrics
                    .publishes_accepted
                    .get_or_create(&QosLabel { qos })
                    .inc();
                Disposition::Reading
            }
            Err((reason, message)) => {
                self.reject(device_id, reason, &message);
                Disposition::Rejected { reason: message }
            }
        };
        let ticket = shared
            .sink
            .submit(Incoming {
                device_id: device_id.to_string(),
                topic: topic.to_string(),
                received_at,
                payload: publish.payload.clone(),
                qos,
                disposition,
            })
            .map_err(|err| {
                error!(device_id, error = %err, "spool refused a publish; closing the connection");
                Error::InvalidProtocol
            })?;
        if qos > 0 {
            self.conn.last_ticket.fetch_max(ticket.0, Ordering::AcqRel);
            if let Ok(mut since) = self.conn.unacked_since.lock() {
                since.push_back(Instant::now());
            }
        }
        Ok(())
    }

    /// Counts a rejection and logs it at most once per device per interval.
    fn reject(&self, device_id: &str, reason: &'static str, message: &str) {
        self.shared
            .metrics
            .publishes_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
        let now = Instant::now();
        let Ok(mut log) = self.shared.reject_log.lock() else {
            return;
        };
        let due = log
            .get(device_id)
            .is_none_or(|last| now.duration_since(*last) >= REJECT_LOG_INTERVAL);
        if due {
            if log.len() > 10_000 {
                log.retain(|_, last| now.duration_since(*last) < REJECT_LOG_INTERVAL);
            }
            log.insert(device_id.to_string(), now);
            warn!(
                device_id,
                reason, message, "publish rejected (logged once a minute per device)"
            );
        }
    }

    /// Blocks until everything this connection published with QoS > 0 is durable.
    fn wait_durable(&self) -> Result<(), Error> {
        let ticket = self.conn.last_ticket.load(Ordering::Acquire);
        if ticket == 0 || self.shared.sink.is_durable(Ticket(ticket)) {
            return Ok(());
        }
        // rumqttd calls `write` from its connection task; park this worker
        // without starving the runtime's other tasks.
        let result = tokio::task::block_in_place(|| {
            self.shared
                .sink
                .wait_durable(Ticket(ticket), self.shared.durable_timeout)
        });
        result.map_err(|err| {
            self.shared.metrics.acks_withheld.inc();
            let client_id = self.client_id();
            warn!(client_id, error = %err, "acknowledgement withheld; closing the connection");
            Error::InvalidProtocol
        })
    }
}

impl Clone for IngestCodec {
    /// rumqttd clones the codec once per accepted connection: each clone gets
    /// fresh per-connection state.
    fn clone(&self) -> Self {
        self.shared.metrics.connections.inc();
        self.shared.metrics.connections_total.inc();
        IngestCodec {
            shared: self.shared.clone(),
            conn: Arc::new(Connection {
                last_ticket: AtomicU64::new(0),
                unacked_since: Mutex::default(),
                live: AtomicBool::new(true),
                client_id: Mutex::default(),
                username: Mutex::default(),
                metrics: Some(self.shared.metrics.clone()),
            }),
            route: RouteState::default(),
        }
    }
}

impl Protocol for IngestCodec {
    fn read_mut(&mut self, stream: &mut BytesMut, max_size: usize) -> Result<Packet, Error> {
        let mut packet = V4.read_mut(stream, max_size)?;
        if let Packet::Connect(connect, ..) = &mut packet {
            // MQTT 3.1.1 §3.1.2.10: keep-alive 0 turns the mechanism off, but
            // rumqttd refuses it. The longest keep-alive is the closest it
            // can do: a silent peer is dropped after about 27 hours.
            if connect.keep_alive == 0 {
                connect.keep_alive = u16::MAX;
            }
        }
        match &packet {
            Packet::Connect(connect, _, _, _, login) => {
                if let Ok(mut client_id) = self.conn.client_id.lock() {
                    client_id.clone_from(&connect.client_id);
                }
                if let Ok(mut username) = self.conn.username.lock() {
                    *username = login.as_ref().map(|l| l.username.clone());
                }
            }
            Packet::Subscribe(subscribe, _) if self.shared.authenticated => {
                let username = self
                    .conn
                    .username
                    .lock()
                    .ok()
                    .and_then(|u| u.clone())
                    .unwrap_or_default();
                let own = format!("devices/{username}/");
                if let Some(filter) = subscribe.filters.iter().find(|f| !f.path.starts_with(&own)) {
                    self.reject(
                        &username,
                        "subscribe",
                        &format!("subscription to {:?} outside {own}", filter.path),
                    );
                    return Err(Error::InvalidProtocol);
                }
            }
            Packet::Publish(publish, _) => self.ingest(publish, publish.qos() as u8)?,
            _ => {}
        }
        Ok(packet)
    }

    /// Before a batch holding a PUBACK or PUBREC is encoded, waits (as a
    /// future, not a blocked thread) until this connection's latest ticket
    /// has an outcome; `write` then finds it decided and does not block.
    fn ready_to_write(&self, packets: &VecDeque<Packet>) -> Option<ReadyToWrite> {
        if !packets
            .iter()
            .any(|p| matches!(p, Packet::PubAck(..) | Packet::PubRec(..)))
        {
            return None;
        }
        let ticket = self.conn.last_ticket.load(Ordering::Acquire);
        if ticket == 0 || self.shared.sink.is_durable(Ticket(ticket)) {
            return None;
        }
        let mut outcomes = self.shared.sink.outcomes()?;
        let timeout = self.shared.durable_timeout;
        Some(Box::pin(async move {
            // A timeout or a closed sink falls through to `write`, which
            // then decides (and withholds the acknowledgement) as before.
            let decided = outcomes.wait_for(|&processed| processed >= ticket);
            let _ = tokio::time::timeout(timeout, decided).await;
        }))
    }

    /// Keeps a QoS 0/1 publish from the router when nothing subscribed to
    /// its topic: it is spooled already, and the connection acknowledges it
    /// itself (through `ready_to_write` and `write` like any PUBACK). Notes
    /// every subscribed filter on the way to the router.
    fn route(&mut self, packet: &Packet) -> Route {
        match packet {
            Packet::Publish(publish, _) => {
                let qos = publish.qos() as u8;
                let subscriptions = &self.shared.subscriptions;
                if self
                    .route
                    .may_skip(subscriptions, &publish.topic, qos, publish.retain)
                {
                    Route::Keep
                } else {
                    Route::Router
                }
            }
            Packet::Subscribe(subscribe, _) => {
                for filter in &subscribe.filters {
                    self.shared.subscriptions.add(&filter.path);
                }
                Route::Router
            }
            _ => Route::Router,
        }
    }

    fn write(&self, packet: Packet, write: &mut BytesMut) -> Result<usize, Error> {
        if matches!(packet, Packet::PubAck(..) | Packet::PubRec(..)) {
            self.wait_durable()?;
            let read_at = self
                .conn
                .unacked_since
                .lock()
                .ok()
                .and_then(|mut since| since.pop_front());
            if let Some(read_at) = read_at {
                self.shared
                    .metrics
                    .puback_seconds
                    .observe(read_at.elapsed().as_secs_f64());
            }
        }
        V4.write(packet, write)
    }
}

/// Size and well-formedness checks, with a metric reason and a message.
fn check_payload(payload: &[u8], limits: &Limits) -> Result<(), (&'static str, String)> {
    if payload.len() > limits.max_bytes {
        return Err((
            "too_large",
            format!(
                "payload of {} bytes exceeds the limit of {} bytes",
                payload.len(),
                limits.max_bytes
            ),
        ));
    }
    match check_well_formed(payload, limits.max_depth) {
        Ok(()) => Ok(()),
        Err(err @ CborError::TooDeep { .. }) => Err(("too_deep", err.to_string())),
        Err(err) => Err(("malformed", err.to_string())),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

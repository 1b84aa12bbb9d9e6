//! One virtual device: its sensor, its MQTT connection and the bookkeeping
//! that tells acknowledged readings from the rest.
//!
//! ```text
//!  sensor ─tick─▶ unsent ─try_publish─▶ queued ─Outgoing::Publish(pkid)─▶ awaiting[pkid]
//!                   ▲                     │                                  │
//!                   │                     │ (QoS 0: written = acked)         │ PubAck(pkid)
//!                   │                     ▼                                  ▼
//!                   │                   acked (ledger) ◀─────────────────────┘
//!                   └── connection error: queued + awaiting go back, in order, resent unchanged
//! ```
//!
//! Invariants:
//! - `queued` mirrors rumqttc's request channel: rumqttc takes requests in
//!   order and reports each as `Outgoing::Publish` when it writes it, so the
//!   front of `queued` is the next one written. Its length never exceeds the
//!   channel's capacity, so `try_publish` never finds the channel full.
//! - A reading leaves `awaiting` only on its PUBACK (QoS 1) and `queued` only
//!   when written (QoS 0 counts as delivered then).
//! - Each connection gets a fresh `AsyncClient` + `EventLoop`: with a clean
//!   session rumqttc would drop its unacked publishes at reconnect anyway, and
//!   a fresh state cannot hand us a stale event of the dead connection. The
//!   event loop runs on its own task so that it is polled continuously and a
//!   connect in progress is never cancelled by a sensor tick.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::latency::Latencies;
use crate::ledger::Reading;
use crate::payload::{self, DeviceClock};
use crate::sensors::{self, Sensor};

/// After duration or shutdown, how long a device still waits for the acks of
/// what it already wrote; together with [`CLOSE_GRACE`] the ~2 s stop budget.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_millis(1500);
/// How long a device waits for its DISCONNECT to be written.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Every simulated device uses this password until per-device secrets exist.
const PASSWORD: &str = "sim";
/// Events the poll task may read ahead of the device logic.
const EVENT_BUFFER: usize = 256;
/// Below this period tokio's 1 ms timer cannot tick once per reading, so
/// missed ticks are made up in bursts to keep the average rate.
const BURST_BELOW: Duration = Duration::from_millis(5);

/// Settings every device of a fleet shares.
#[derive(Debug)]
pub(crate) struct DeviceParams {
    pub host: String,
    pub port: u16,
    pub qos: QoS,
    /// MQTT inflight window; also the depth of the request queue.
    pub inflight: u16,
    /// rumqttc counts its connect timeout in whole seconds.
    pub connect_timeout_secs: u64,
    pub readings: Option<u64>,
    /// Time between readings; `None` is flat out.
    pub interval: Option<Duration>,
    pub seed: u64,
    /// Spread of device start times, so a large fleet does not connect in one instant.
    pub start_spread: Duration,
    /// Payload size to pad to; `None` sends the bare record.
    pub payload_bytes: Option<usize>,
    /// Keep acknowledged readings for the ledger.
    pub keep_ledger: bool,
    /// Record written-to-PUBACK latencies.
    pub record_latency: bool,
}

/// Live counters of the whole fleet, read by the progress bar and summary.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Distinct readings written to a connection at least once.
    pub sent: AtomicU64,
    /// Readings acknowledged (PUBACK; for QoS 0, written).
    pub acked: AtomicU64,
    /// Connection attempts and connections that failed.
    pub errors: AtomicU64,
    /// Whether any device ever got a CONNACK: tells "broker unreachable" from
    /// "broker flapping".
    pub connected_once: AtomicBool,
    first_error: Mutex<Option<String>>,
    last_warning: Mutex<Option<Instant>>,
}

impl Counters {
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }

    /// Counts a connection error and logs it, at most once a second for the
    /// whole fleet, since a broker outage hits every device at once.
    fn connection_error(&self, device_id: &str, error: &ConnectionError) {
        let errors = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| error.to_string());
        }
        let Ok(mut last) = self.last_warning.lock() else {
            return;
        };
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            tracing::warn!(device_id, %error, errors, "connection error, reconnecting");
        } else {
            tracing::debug!(device_id, %error, "connection error, reconnecting");
        }
    }
}

/// A reading on its way to the broker.
struct Pending {
    /// Production order, to resend in order after a reconnect.
    seq: u64,
    reading: Reading,
    payload: Vec<u8>,
    /// Whether it was written at least once (counted in `sent`).
    written: bool,
    /// When it was last written, for the PUBACK latency.
    written_at: Option<Instant>,
}

/// One connection: the client half, the events of its poll task and the
/// token that stops that task when the session is dropped.
struct Session {
    client: AsyncClient,
    events: mpsc::Receiver<Result<Event, ConnectionError>>,
    cancel: CancellationToken,
    connected: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What one device brings back from a run.
#[derive(Debug, Default)]
pub(crate) struct DeviceOutcome {
    /// The readings the broker acknowledged (empty unless `keep_ledger`).
    pub acked: Vec<Reading>,
    /// Written-to-PUBACK times (empty unless `record_latency`).
    pub latency: Latencies,
}

/// Runs device `index` until its readings are all acknowledged or `stop`
/// fires (then it drains for at most [`DRAIN_GRACE`]). Returns the readings
/// the broker acknowledged and their latencies.
pub(crate) async fn run_device(
    index: usize,
    device_id: String,
    params: Arc<DeviceParams>,
    counters: Arc<Counters>,
    tracker: TaskTracker,
    stop: CancellationToken,
) -> DeviceOutcome {
    let seed = sensors::device_seed(params.seed, index);
    let mut device = Device {
        topic: payload::topic(&device_id),
        id: device_id,
        sensor: Sensor::for_device(params.seed, index),
        clock: DeviceClock::default(),
        // Timing jitter gets its own stream so it cannot disturb the values.
        jitter: StdRng::seed_from_u64(!seed),
        queue: usize::from(params.inflight),
        params,
        counters,
        tracker,
        produced: 0,
        unsent: VecDeque::new(),
        queued: VecDeque::new(),
        awaiting: HashMap::new(),
        outcome: DeviceOutcome::default(),
    };
    let span = tracing::debug_span!("device", device_id = %device.id);
    let _ = tracing::Instrument::instrument(device.run(&stop), span).await;
    device.outcome
}

struct Device {
    id: String,
    topic: String,
    sensor: Sensor,
    clock: DeviceClock,
    jitter: StdRng,
    /// Capacity of rumqttc's request channel and bound of `unsent` growth.
    queue: usize,
    params: Arc<DeviceParams>,
    counters: Arc<Counters>,
    tracker: TaskTracker,
    produced: u64,
    /// Produced (or put back after a connection loss), not yet handed to rumqttc.
    unsent: VecDeque<Pending>,
    /// Handed to rumqttc, not yet written.
    queued: VecDeque<Pending>,
    /// Written with QoS 1, waiting for the PUBACK of this packet id.
    awaiting: HashMap<u16, Pending>,
    outcome: DeviceOutcome,
}

impl Device {
    async fn run(&mut self, stop: &CancellationToken) {
        let start_delay = self
            .params
            .start_spread
            .mul_f64(self.jitter.random::<f64>());
        tokio::select! {
            () = tokio::time::sleep(start_delay) => {}
            () = stop.cancelled() => return,
        }
        let mut ticker = self.params.interval.map(|period| {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(if period < BURST_BELOW {
                MissedTickBehavior::Burst
            } else {
                // A sensor that could not hand over its last sample skips one.
                MissedTickBehavior::Skip
            });
            ticker
        });
        let mut session: Option<Session> = None;
        let mut reconnect_at = Instant::now();
        let mut backoff = BACKOFF_MIN;
        let mut drain_until: Option<Instant> = None;
        loop {
            let in_flight = self.queued.len() + self.awaiting.len();
            if self.produced_all() && self.unsent.is_empty() && in_flight == 0 {
                break;
            }
            if drain_until.is_some() && in_flight == 0 {
                break;
            }
            if session.is_none() && drain_until.is_none() && Instant::now() >= reconnect_at {
                session = Some(self.connect());
            }
            if drain_until.is_none() {
                if let Some(s) = session.as_ref().filter(|s| s.connected) {
                    self.feed(&s.client);
                }
            }
            let producing =
                drain_until.is_none() && !self.produced_all() && self.unsent.len() < self.queue;
            tokio::select! {
                biased;
                () = stop.cancelled(), if drain_until.is_none() => {
                    // Only what was written can still be acknowledged.
                    if !session.as_ref().is_some_and(|s| s.connected) {
                        break;
                    }
                    drain_until = Some(Instant::now() + DRAIN_GRACE);
                }
                () = sleep_until(drain_until) => break,
                event = next_event(&mut session) => match event {
                    Ok(event) => {
                        if matches!(event, Event::Incoming(Packet::ConnAck(_))) {
                            if let Some(s) = session.as_mut() {
                                s.connected = true;
                            }
                            self.counters.connected_once.store(true, Ordering::Relaxed);
                            backoff = BACKOFF_MIN;
                        }
                        self.on_event(event);
                    }
                    Err(error) => {
                        session = None;
                        self.counters.connection_error(&self.id, &error);
                        self.put_back();
                        if drain_until.is_some() {
                            break;
                        }
                        // ±25 % jitter keeps a fleet from reconnecting in lockstep.
                        let pause = backoff.mul_f64(self.jitter.random_range(0.75..1.25));
                        reconnect_at = Instant::now() + pause;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                },
                () = tokio::time::sleep_until(reconnect_at), if session.is_none() => {}
                () = tick(&mut ticker), if producing => self.produce(),
            }
        }
        if let Some(session) = session {
            self.close(session).await;
        }
    }

    fn produced_all(&self) -> bool {
        self.params.readings.is_some_and(|n| self.produced >= n)
    }

    fn produce(&mut self) {
        let kind = self.sensor.kind();
        let reading = Reading {
            device_id: self.id.clone(),
            name: kind.name().to_owned(),
            time: self.clock.stamp(),
            value: self.sensor.sample(),
            unit: kind.unit().map(str::to_owned),
        };
        self.unsent.push_back(Pending {
            seq: self.produced,
            payload: payload::encode_sized(&reading, self.params.payload_bytes),
            reading,
            written: false,
            written_at: None,
        });
        self.produced += 1;
    }

    /// Hands unsent readings to rumqttc while its request channel has room.
    fn feed(&mut self, client: &AsyncClient) {
        while self.queued.len() < self.queue {
            let Some(pending) = self.unsent.pop_front() else {
                break;
            };
            let sent = client.try_publish(
                self.topic.clone(),
                self.params.qos,
                false,
                pending.payload.clone(),
            );
            if sent.is_err() {
                // The poll task is gone; its error event is on the way.
                self.unsent.push_front(pending);
                break;
            }
            self.queued.push_back(pending);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => self.on_written(pkid),
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(pending) = self.awaiting.remove(&ack.pkid) {
                    self.acknowledge(pending);
                }
            }
            _ => {}
        }
    }

    fn on_written(&mut self, pkid: u16) {
        let Some(mut pending) = self.queued.pop_front() else {
            tracing::debug!(pkid, "publish written that was not queued");
            return;
        };
        if !pending.written {
            pending.written = true;
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        // A resend starts the clock again: the latency is the broker's, not
        // the outage's.
        pending.written_at = Some(Instant::now());
        if self.params.qos == QoS::AtMostOnce {
            self.acknowledge(pending);
        } else if let Some(older) = self.awaiting.insert(pkid, pending) {
            // rumqttc reuses a packet id only after its ack; should that ever
            // fail, resend the older reading rather than forget it.
            tracing::debug!(pkid, "packet id reused before its puback");
            self.unsent.push_front(older);
        }
    }

    fn acknowledge(&mut self, pending: Pending) {
        self.counters.acked.fetch_add(1, Ordering::Relaxed);
        if self.params.record_latency && self.params.qos != QoS::AtMostOnce {
            if let Some(at) = pending.written_at {
                self.outcome.latency.record(at.elapsed());
            }
        }
        if self.params.keep_ledger {
            self.outcome.acked.push(pending.reading);
        }
    }

    /// After a connection loss: everything unacknowledged goes back to the
    /// front of `unsent`, in production order, to be resent unchanged.
    fn put_back(&mut self) {
        let mut back: Vec<Pending> = self.awaiting.drain().map(|(_, p)| p).collect();
        back.extend(self.queued.drain(..));
        back.sort_by_key(|p| p.seq);
        for pending in back.into_iter().rev() {
            self.unsent.push_front(pending);
        }
    }

    fn connect(&self) -> Session {
        let mut options =
            MqttOptions::new(self.id.clone(), self.params.host.clone(), self.params.port);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_credentials(self.id.clone(), PASSWORD)
            .set_inflight(self.params.inflight);
        let (client, mut eventloop) = AsyncClient::new(options, self.queue);
        eventloop
            .network_options
            .set_connection_timeout(self.params.connect_timeout_secs);
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let cancel = CancellationToken::new();
        self.tracker.spawn(poll(eventloop, tx, cancel.clone()));
        Session {
            client,
            events,
            cancel,
            connected: false,
        }
    }

    /// Says goodbye with a DISCONNECT, still counting late acknowledgements.
    async fn close(&mut self, mut session: Session) {
        if !session.connected || session.client.try_disconnect().is_err() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(event) = session.events.recv().await {
                match event {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(event) => self.on_event(event),
                }
            }
        })
        .await;
    }
}

/// Polls one connection's event loop until it fails or is cancelled, and
/// forwards every event; the first error ends the connection.
async fn poll(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Result<Event, ConnectionError>>,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return,
            event = eventloop.poll() => event,
        };
        let failed = event.is_err();
        if tx.send(event).await.is_err() || failed {
            return;
        }
    }
}

async fn next_event(session: &mut Option<Session>) -> Result<Event, ConnectionError> {
    match session {
        Some(session) => session
            .events
            .recv()
            .await
            .unwrap_or(Err(ConnectionError::RequestsDone)),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Waits for the next sensor tick; flat out (no ticker) is always ready.
async fn tick(ticker: &mut Option<Interval>) {
    if let Some(ticker) = ticker {
        ticker.tick().await;
    }
}

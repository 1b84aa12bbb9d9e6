//! The embedded broker against a real MQTT client on loopback, with an
//! in-memory sink whose durability the test controls.

use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use broker::{
    Broker, BrokerConfig, BrokerError, Disposition, Incoming, IngestSink, SinkError, Ticket,
};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

/// Keeps submissions in memory; publishes become durable only when the test says so.
#[derive(Default)]
struct MemorySink {
    state: Mutex<SinkState>,
    changed: Condvar,
    /// Set: the sink also offers [`IngestSink::outcomes`], so connections
    /// wait as futures (as with the spool) instead of blocking a thread.
    outcomes: Option<tokio::sync::watch::Sender<u64>>,
}

#[derive(Default)]
struct SinkState {
    items: Vec<Incoming>,
    durable: u64,
    fail: bool,
}

impl MemorySink {
    fn with_outcomes() -> MemorySink {
        MemorySink {
            outcomes: Some(tokio::sync::watch::Sender::new(0)),
            ..MemorySink::default()
        }
    }

    fn make_durable(&self) {
        let mut state = self.state.lock().unwrap();
        state.durable = state.items.len() as u64;
        self.changed.notify_all();
        self.decided(state.items.len() as u64);
    }

    fn fail_writes(&self) {
        let mut state = self.state.lock().unwrap();
        state.fail = true;
        self.changed.notify_all();
        self.decided(state.items.len() as u64);
    }

    fn decided(&self, upto: u64) {
        if let Some(outcomes) = &self.outcomes {
            outcomes.send_replace(upto);
        }
    }

    fn items(&self) -> Vec<Incoming> {
        self.state.lock().unwrap().items.clone()
    }
}

impl IngestSink for MemorySink {
    fn submit(&self, incoming: Incoming) -> Result<Ticket, SinkError> {
        let mut state = self.state.lock().unwrap();
        state.items.push(incoming);
        let ticket = state.items.len() as u64;
        if state.fail {
            // A failed sink decides every later write at once, as the spool does.
            self.decided(ticket);
        }
        Ok(Ticket(ticket))
    }

    fn is_durable(&self, ticket: Ticket) -> bool {
        let state = self.state.lock().unwrap();
        state.durable >= ticket.0 && !state.fail
    }

    fn outcomes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.outcomes.as_ref().map(|o| o.subscribe())
    }

    fn wait_durable(&self, ticket: Ticket, timeout: Duration) -> Result<(), SinkError> {
        let state = self.state.lock().unwrap();
        let (state, result) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.durable < ticket.0 && !s.fail)
            .unwrap();
        if state.fail {
            return Err(SinkError::WriteFailed("disk on fire".into()));
        }
        if result.timed_out() {
            return Err(SinkError::Timeout(timeout));
        }
        Ok(())
    }
}

fn start(sink: Arc<MemorySink>) -> Broker {
    let config = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        durable_timeout: Duration::from_secs(5),
        ..BrokerConfig::default()
    };
    Broker::start(config, sink).expect("broker starts")
}

fn client(broker: &Broker, id: &str) -> (AsyncClient, EventLoop) {
    let addr = broker.local_addr();
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 10)
}

/// Polls until a PUBACK arrives (Some) or the connection fails (None).
async fn next_puback(events: &mut EventLoop) -> Option<u16> {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::PubAck(ack))) => return Some(ack.pkid),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

fn senml() -> Vec<u8> {
    // [{0: "t", 2: 1.5}]
    vec![0x81, 0xa2, 0x00, 0x61, 0x74, 0x02, 0xf9, 0x3e, 0x00]
}

#[test]
fn a_taken_port_fails_start_with_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = BrokerConfig {
        listen: taken.local_addr().unwrap(),
        ..BrokerConfig::default()
    };
    let err = Broker::start(config, Arc::new(MemorySink::default()))
        .err()
        .expect("start must fail");
    assert!(matches!(err, BrokerError::Bind { .. }));
    let message = err.to_string();
    assert!(
        message.contains(&taken.local_addr().unwrap().to_string()),
        "{message}"
    );
    assert!(message.contains("cannot listen"), "{message}");
}

#[test]
fn port_zero_reports_the_bound_address() {
    let broker = start(Arc::default());
    assert_ne!(broker.local_addr().port(), 0);
    std::net::TcpStream::connect(broker.local_addr()).expect("listener is up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_waits_until_the_sink_is_durable() {
    puback_waits_for(Arc::new(MemorySink::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_waits_until_the_sink_is_durable_as_a_future() {
    puback_waits_for(Arc::new(MemorySink::with_outcomes())).await;
}

async fn puback_waits_for(sink: Arc<MemorySink>) {
    let broker = start(sink.clone());
    let (client, mut events) = client(&broker, "dev-1");
    client
        .publish("devices/dev-1/telemetry", QoS::AtLeastOnce, false, senml())
        .await
        .unwrap();

    let early = tokio::time::timeout(Duration::from_millis(500), next_puback(&mut events)).await;
    assert!(
        early.is_err(),
        "PUBACK arrived before the write was durable"
    );
    assert_eq!(sink.items().len(), 1);
    let item = &sink.items()[0];
    assert_eq!(item.device_id, "dev-1");
    assert_eq!(item.topic, "devices/dev-1/telemetry");
    assert_eq!(item.payload.as_ref(), senml().as_slice());
    assert_eq!(item.qos, 1);
    assert_eq!(item.disposition, Disposition::Reading);

    sink.make_durable();
    // Well within the broker's durable_timeout (5 s): the wait ends when the
    // sink says so, not when it times out.
    let ack = tokio::time::timeout(Duration::from_secs(2), next_puback(&mut events)).await;
    assert!(
        matches!(ack, Ok(Some(_))),
        "PUBACK after durability: {ack:?}"
    );
    let accepted = broker
        .metrics()
        .publishes_accepted
        .get_or_create(&broker::QosLabel { qos: 1 })
        .get();
    assert_eq!(accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_withholds_the_puback_and_drops_the_connection() {
    failed_write_withholds(Arc::new(MemorySink::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_withholds_the_puback_when_waiting_as_a_future() {
    failed_write_withholds(Arc::new(MemorySink::with_outcomes())).await;
}

async fn failed_write_withholds(sink: Arc<MemorySink>) {
    let broker = start(sink.clone());
    let (client, mut events) = client(&broker, "dev-2");
    client
        .publish("devices/dev-2/telemetry", QoS::AtLeastOnce, false, senml())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    sink.fail_writes();
    let ack = tokio::time::timeout(Duration::from_secs(5), next_puback(&mut events)).await;
    assert_eq!(ack, Ok(None), "no PUBACK, and the connection closes");
    assert_eq!(broker.metrics().acks_withheld.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_is_spooled_without_waiting() {
    let sink = Arc::new(MemorySink::default());
    let broker = start(sink.clone());
    let (client, mut events) = client(&broker, "dev-3");
    for _ in 0..3 {
        client
            .publish("devices/dev-3/telemetry", QoS::AtMostOnce, false, senml())
            .await
            .unwrap();
    }
    let poll = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    for _ in 0..100 {
        if sink.items().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    poll.abort();
    let items = sink.items();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i.qos == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payload_is_dead_lettered_and_acknowledged() {
    let sink = Arc::new(MemorySink::default());
    sink.make_durable();
    let broker = start(sink.clone());
    let (client, mut events) = client(&broker, "dev-4");
    // 0x1c: reserved additional information, not well-formed CBOR.
    client
        .publish(
            "devices/dev-4/telemetry",
            QoS::AtLeastOnce,
            false,
            vec![0x1c],
        )
        .await
        .unwrap();
    let waiter = {
        let sink = sink.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                if !sink.items().is_empty() {
                    sink.make_durable();
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let ack = tokio::time::timeout(Duration::from_secs(5), next_puback(&mut events)).await;
    waiter.join().unwrap();
    assert!(matches!(ack, Ok(Some(_))), "{ack:?}");
    let items = sink.items();
    assert!(
        matches!(&items[0].disposition, Disposition::Rejected { reason } if reason.contains("malformed")),
        "{:?}",
        items[0].disposition
    );
    let rejected = broker
        .metrics()
        .publishes_rejected
        .get_or_create(&broker::ReasonLabel {
            reason: "malformed",
        })
        .get();
    assert_eq!(rejected, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_outside_the_device_topics_closes_the_connection() {
    let sink = Arc::new(MemorySink::default());
    sink.make_durable();
    let broker = start(sink.clone());
    let (client, mut events) = client(&broker, "dev-5");
    client
        .publish("somewhere/else", QoS::AtLeastOnce, false, senml())
        .await
        .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(5), next_puback(&mut events)).await;
    assert_eq!(ack, Ok(None));
    let items = sink.items();
    assert_eq!(items.len(), 1);
    assert!(matches!(
        &items[0].disposition,
        Disposition::Rejected { .. }
    ));
    assert_eq!(
        items[0].device_id, "dev-5",
        "a refused topic is filed under the client id"
    );
}

/// Waits for this client's CONNACK; false if the connection failed first.
async fn connack(events: &mut EventLoop) -> bool {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// A device that gives up on a connection right after CONNECT (a flaky link,
/// a connect timeout under load) and then reconnects with the same client id.
/// rumqttd 0.20.0 kept a dead will-handler for the first connection, panicked
/// on the second while holding the handlers' lock, and from then on every
/// connection of every client panicked: the gateway took no more devices.
/// Fixed in vendor/rumqttd (PATCHES.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_before_connack_does_not_lock_out_its_client_id() {
    use tokio::io::AsyncWriteExt;

    let sink = Arc::new(MemorySink::default());
    let broker = start(sink);
    // MQTT 3.1.1 CONNECT, clean session, keep-alive 60 s, client id "flaky".
    let connect: &[u8] = &[
        0x10, 17, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 60, 0x00, 0x05, b'f', b'l',
        b'a', b'k', b'y',
    ];
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(broker.local_addr())
            .await
            .unwrap();
        stream.write_all(connect).await.unwrap();
        // Linger 0: close with a reset, so writing the CONNACK fails.
        stream.set_zero_linger().unwrap();
        drop(stream);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in ["flaky", "bystander"] {
        let (_client, mut events) = client(&broker, id);
        let accepted = tokio::time::timeout(Duration::from_secs(5), connack(&mut events)).await;
        assert!(
            matches!(accepted, Ok(true)),
            "client {id} was not accepted after resets of \"flaky\""
        );
    }
}

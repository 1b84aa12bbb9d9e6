//! Device identity and topic binding on a real listener: registered devices
//! connect with their id and password and publish only under their own id.

use std::sync::Arc;
use std::time::Duration;

mod util;

use broker::{Broker, BrokerConfig, DeviceRegistry, Disposition};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
};
use util::InstantSink;

const PASSWORD: &str = "correct horse battery staple";

fn start(sink: Arc<InstantSink>, dir: &std::path::Path) -> Broker {
    let registry = DeviceRegistry::load(&dir.join("devices")).unwrap();
    registry.add("dev-a", PASSWORD).unwrap();
    registry.add("dev-b", PASSWORD).unwrap();
    let config = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        devices: Some(Arc::new(registry)),
        ..BrokerConfig::default()
    };
    Broker::start(config, sink).unwrap()
}

fn client(
    broker: &Broker,
    user: &str,
    password: &str,
    keep_alive: Duration,
) -> (AsyncClient, EventLoop) {
    let addr = broker.local_addr();
    let mut options =
        MqttOptions::new(format!("{user}-client"), addr.ip().to_string(), addr.port());
    options.set_keep_alive(keep_alive);
    options.set_credentials(user, password);
    AsyncClient::new(options, 10)
}

/// Polls until CONNACK (Some(accepted)) or the connection fails (None).
async fn connack(events: &mut EventLoop) -> Option<bool> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                return Some(ack.code == ConnectReturnCode::Success)
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return None,
        }
    }
}

/// Polls until a PUBACK (true) or the connection fails (false).
async fn puback(events: &mut EventLoop) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_device_publishes_under_its_own_id() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(InstantSink::default());
    let broker = start(sink.clone(), dir.path());
    let (client, mut events) = client(&broker, "dev-a", PASSWORD, Duration::from_secs(30));
    assert_eq!(connack(&mut events).await, Some(true));
    client
        .publish(
            "devices/dev-a/telemetry",
            QoS::AtLeastOnce,
            false,
            vec![0xa0],
        )
        .await
        .unwrap();
    assert!(puback(&mut events).await);
    let items = sink.items.lock().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].device_id, "dev-a");
    assert_eq!(items[0].disposition, Disposition::Reading);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_and_unknown_devices_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(Arc::default(), dir.path());
    for (user, password) in [("dev-a", "not the password"), ("stranger", PASSWORD)] {
        let (_client, mut events) = client(&broker, user, password, Duration::from_secs(30));
        // MQTT 3.1.1 §3.2.2.3: refused with CONNACK 0x04, not just closed.
        let refused = tokio::time::timeout(Duration::from_secs(10), events.poll()).await;
        assert!(
            matches!(
                refused,
                Ok(Err(ConnectionError::ConnectionRefused(
                    ConnectReturnCode::BadUserNamePassword
                )))
            ),
            "{user}: {refused:?}"
        );
    }
    assert_eq!(broker.metrics().connections_refused.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_for_another_device() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(InstantSink::default());
    let broker = start(sink.clone(), dir.path());
    let (client, mut events) = client(&broker, "dev-a", PASSWORD, Duration::from_secs(30));
    assert_eq!(connack(&mut events).await, Some(true));
    client
        .publish(
            "devices/dev-b/telemetry",
            QoS::AtLeastOnce,
            false,
            vec![0xa0],
        )
        .await
        .unwrap();
    assert!(
        !puback(&mut events).await,
        "no PUBACK; the connection closes"
    );
    let rejected = broker
        .metrics()
        .publishes_rejected
        .get_or_create(&broker::ReasonLabel {
            reason: "other_device",
        })
        .get();
    assert_eq!(rejected, 1);
    let items = sink.items.lock().unwrap();
    assert!(
        matches!(items[0].disposition, Disposition::Rejected { .. }),
        "kept only as a dead letter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_outside_the_devices_own_topics_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(Arc::default(), dir.path());
    let (client, mut events) = client(&broker, "dev-a", PASSWORD, Duration::from_secs(30));
    assert_eq!(connack(&mut events).await, Some(true));
    client
        .subscribe("devices/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break false,
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break true,
        }
    };
    assert!(closed, "a device may not subscribe to the whole fleet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_is_accepted_as_mqtt_3_1_1_allows() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(Arc::default(), dir.path());
    let (client, mut events) = client(&broker, "dev-a", PASSWORD, Duration::ZERO);
    assert_eq!(connack(&mut events).await, Some(true));
    client
        .publish(
            "devices/dev-a/telemetry",
            QoS::AtLeastOnce,
            false,
            vec![0xa0],
        )
        .await
        .unwrap();
    assert!(puback(&mut events).await);
}

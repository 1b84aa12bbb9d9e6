//! What devices that follow MQTT 3.1.1 do, against the embedded broker:
//! refused protocol levels, QoS 2, persistent sessions, keep-alive pings;
//! and what hostile peers do: garbage bytes and oversized packets.
//! Each test names the section of the spec it holds the broker to.
//! (Keep-alive 0 and the CONNACK codes of a refused login are in
//! `auth.rs` and `broker.rs`.)

mod util;

use std::sync::Arc;
use std::time::Duration;

use broker::{Broker, BrokerConfig};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use util::InstantSink;

fn start(sink: Arc<InstantSink>) -> Broker {
    let config = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..BrokerConfig::default()
    };
    Broker::start(config, sink).unwrap()
}

fn options(broker: &Broker, id: &str) -> MqttOptions {
    let addr = broker.local_addr();
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// Polls until `wanted` matches an event; panics on a connection error or after 10 s.
async fn until(events: &mut EventLoop, wanted: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.poll().await.expect("connection stays up");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .expect("event within 10 s")
}

/// §3.1.2.2: a CONNECT of a protocol level the server does not support gets
/// CONNACK 0x01 and the close. This is how an MQTT 5 client learns that
/// the gateway speaks 3.1.1 only; the broker goes on serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt5_connect_is_refused_with_connack_0x01() {
    let broker = start(Arc::default());
    // CONNECT, protocol level 5, clean start, keep-alive 60, no properties, client id "v5".
    let connect: &[u8] = &[
        0x10, 15, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 60, 0x00, 0x00, 0x02, b'v',
        b'5',
    ];
    let mut stream = tokio::net::TcpStream::connect(broker.local_addr())
        .await
        .unwrap();
    stream.write_all(connect).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the broker answers and closes")
        .unwrap();
    assert_eq!(answer, [0x20, 0x02, 0x00, 0x01], "CONNACK 0x01, then EOF");

    let (_client, mut events) = AsyncClient::new(options(&broker, "v4"), 10);
    until(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await;
}

/// §4.3.3: a QoS 2 publish is stored once and completes with PUBREC,
/// PUBREL, PUBCOMP (PUBREC, like PUBACK, waits for the spool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_publishes_complete_and_are_stored_once() {
    let sink = Arc::new(InstantSink::default());
    let broker = start(sink.clone());
    let (client, mut events) = AsyncClient::new(options(&broker, "q2"), 10);
    until(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await;
    for _ in 0..3 {
        client
            .publish("devices/q2/telemetry", QoS::ExactlyOnce, false, vec![0xa0])
            .await
            .unwrap();
    }
    for _ in 0..3 {
        until(&mut events, |e| {
            matches!(e, Event::Incoming(Packet::PubComp(_)))
        })
        .await;
    }
    let items = sink.items.lock().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i.qos == 2 && i.device_id == "q2"));
}

/// §3.2.2.2: a client that connects with clean session off, goes away and
/// comes back finds its session (session present = 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_is_present_on_reconnect() {
    let broker = start(Arc::default());
    let mut session = options(&broker, "keeper");
    session.set_clean_session(false);
    for (round, present) in [(1, false), (2, true)] {
        let (client, mut events) = AsyncClient::new(session.clone(), 10);
        let event = until(&mut events, |e| {
            matches!(e, Event::Incoming(Packet::ConnAck(_)))
        })
        .await;
        let Event::Incoming(Packet::ConnAck(ack)) = event else {
            unreachable!()
        };
        assert_eq!(ack.session_present, present, "connection {round}");
        client.disconnect().await.unwrap();
        until(&mut events, |e| {
            matches!(e, Event::Outgoing(Outgoing::Disconnect))
        })
        .await;
        // Let the router see the disconnect before the next CONNECT.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// §3.1.2.10, §3.12: an idle client keeps its connection with PINGREQ and
/// gets a PINGRESP for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_is_kept_alive_by_pings() {
    let broker = start(Arc::default());
    let mut idle = options(&broker, "idle");
    idle.set_keep_alive(Duration::from_secs(1));
    let (_client, mut events) = AsyncClient::new(idle, 10);
    until(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await;
    for _ in 0..3 {
        until(&mut events, |e| {
            matches!(e, Event::Incoming(Packet::PingResp))
        })
        .await;
    }
}

/// Random bytes, a CONNECT followed by garbage, and a PUBLISH announcing
/// 200 MB, each on its own connection: the peer is dropped, the process and
/// every other connection keep going, and a well-behaved device still gets
/// its PUBACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_packets_only_cost_their_own_connection() {
    use rand::{Rng, SeedableRng};

    let sink = Arc::new(InstantSink::default());
    let broker = start(sink.clone());
    let (client, mut events) = AsyncClient::new(options(&broker, "steady"), 10);
    until(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await;

    let connect: &[u8] = &[
        0x10, 16, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 60, 0x00, 0x04, b'j', b'u',
        b'n', b'k',
    ];
    // PUBLISH QoS 0 with a remaining length of 200,000,000 (varint).
    let oversized: &[u8] = &[0x30, 0x80, 0x84, 0xaf, 0x5f];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut peers = Vec::new();
    for round in 0..60 {
        let mut bytes = match round % 3 {
            0 => Vec::new(),
            1 => connect.to_vec(),
            _ => [connect, oversized].concat(),
        };
        let len = rng.random_range(1..2048);
        bytes.extend((0..len).map(|_| rng.random::<u8>()));
        let mut stream = tokio::net::TcpStream::connect(broker.local_addr())
            .await
            .unwrap();
        // The broker may close the connection before all of it is written.
        let _ = stream.write_all(&bytes).await;
        peers.push((round, stream));
    }
    // Garbage that happens to announce a long packet is a slow peer to the
    // broker (keep-alive ends it); an oversized packet is refused at once.
    for (round, stream) in peers.iter_mut().filter(|(round, _)| round % 3 == 2) {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "round {round}: the oversized packet's peer is dropped"
        );
    }

    client
        .publish(
            "devices/steady/telemetry",
            QoS::AtLeastOnce,
            false,
            vec![0xa0],
        )
        .await
        .unwrap();
    until(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_)))
    })
    .await;
    let items = sink.items.lock().unwrap();
    assert!(
        items.iter().any(|i| i.device_id == "steady"),
        "the steady device's reading was kept"
    );
}

/// §4.6: PUBACKs go out in the order of their publishes, also across the
/// moment a connection's publishes start to need the router (here: the
/// connection subscribes to its own topic half way), when the first half is
/// acknowledged by the connection itself and the second half by the router.
/// A subscriber gets what was published after its SUBACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubacks_keep_publish_order_when_a_subscription_moves_publishes_onto_the_router() {
    let sink = Arc::new(InstantSink::default());
    let broker = start(sink.clone());
    let mut opts = options(&broker, "ordered");
    opts.set_inflight(200);
    let (client, mut events) = AsyncClient::new(opts, 300);
    until(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await;
    let topic = "devices/ordered/telemetry";
    for n in 0u8..100 {
        if n == 50 {
            client.subscribe(topic, QoS::AtMostOnce).await.unwrap();
        }
        client
            .publish(topic, QoS::AtLeastOnce, false, vec![n])
            .await
            .unwrap();
    }
    let mut pubacks = Vec::new();
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while pubacks.len() < 100 {
            match events.poll().await.expect("connection stays up") {
                Event::Incoming(Packet::PubAck(ack)) => pubacks.push(ack.pkid),
                Event::Incoming(Packet::Publish(p)) => echoed.push(p.payload[0]),
                _ => {}
            }
        }
    })
    .await
    .expect("100 PUBACKs within 10 s");
    // The SUBSCRIBE took packet id 51.
    let expected: Vec<u16> = (1..=50).chain(52..=101).collect();
    assert_eq!(pubacks, expected, "in publish order");
    assert_eq!(sink.items.lock().unwrap().len(), 100);
    // Publishes after the SUBSCRIBE reach the subscriber (this connection).
    let echoed_after = until(
        &mut events,
        |e| matches!(e, Event::Incoming(Packet::Publish(p)) if p.payload[0] == 99),
    );
    if !echoed.contains(&99) {
        echoed_after.await;
    }
}

/// §3.3.1.3: a retained publish is kept for subscribers that come later,
/// though publishes nobody subscribed to otherwise skip the router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_publish_reaches_a_later_subscriber() {
    let broker = start(Arc::default());
    let (device, mut device_events) = AsyncClient::new(options(&broker, "retainer"), 10);
    let topic = "devices/retainer/telemetry";
    device
        .publish(topic, QoS::AtLeastOnce, true, vec![0xa1])
        .await
        .unwrap();
    device
        .publish(topic, QoS::AtLeastOnce, false, vec![0xa2])
        .await
        .unwrap();
    for _ in 0..2 {
        until(&mut device_events, |e| {
            matches!(e, Event::Incoming(Packet::PubAck(_)))
        })
        .await;
    }
    let (watcher, mut watcher_events) = AsyncClient::new(options(&broker, "watcher"), 10);
    watcher
        .subscribe("devices/+/telemetry", QoS::AtLeastOnce)
        .await
        .unwrap();
    let event = until(&mut watcher_events, |e| {
        matches!(e, Event::Incoming(Packet::Publish(_)))
    })
    .await;
    let Event::Incoming(Packet::Publish(retained)) = event else {
        unreachable!()
    };
    assert!(retained.retain);
    assert_eq!(&retained.payload[..], [0xa1]);
}

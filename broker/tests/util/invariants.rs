//! What must hold for any bytes a client sends to the codec wrapper: the
//! checks behind the `broker_codec` fuzz target, shared with
//! `tests/fuzz_corpus.rs`, which replays the seeds and every reproducer on
//! stable. The fuzz crate compiles this same file (`#[path]`).
//!
//! Input layout: byte 0 steers (bits 0-5: TCP segment size - 1; bit 6:
//! devices authenticate), the rest is the client's byte stream.

use broker::replay::{read_client_bytes, Replay};
use broker::{device_id_from_topic, Disposition};
use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{Login, Packet, Protocol};
use telemetry::{check_well_formed, Limits};

/// A client's bytes through one connection of the codec wrapper.
pub fn broker_codec(data: &[u8]) {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let authenticated = control & 0x40 != 0;

    let whole = read_client_bytes(stream, stream.len(), authenticated);
    // How TCP cuts the stream changes nothing.
    let split = read_client_bytes(stream, chunk, authenticated);
    assert_eq!(whole.packets, split.packets);
    assert_eq!(whole.error, split.error);
    // After an error the connection closes: how much was buffered by then
    // depends on the segments, and nothing reads it.
    if whole.error.is_none() {
        assert_eq!(whole.unread, split.unread);
    }
    assert_eq!(summary(&whole), summary(&split));

    spooled_as_read(&whole, authenticated);
    for packet in &whole.packets {
        re_encodes(packet);
    }
}

/// What the spool got, without the arrival clock.
fn summary(replay: &Replay) -> Vec<(String, String, Vec<u8>, u8, Disposition)> {
    replay
        .submitted
        .iter()
        .map(|s| {
            let s = s.clone();
            (
                s.device_id,
                s.topic,
                s.payload.to_vec(),
                s.qos,
                s.disposition,
            )
        })
        .collect()
}

/// Every PUBLISH handed on was spooled first, byte for byte, and only a
/// valid topic and payload from the right device is spooled as a reading.
fn spooled_as_read(replay: &Replay, authenticated: bool) {
    let limits = Limits::default();
    let mut username = None;
    let mut submitted = replay.submitted.iter();
    for packet in &replay.packets {
        match packet {
            Packet::Connect(.., login) => username = login.as_ref().map(|l| l.username.clone()),
            Packet::Publish(publish, _) => {
                let spooled = submitted.next().expect("a publish was handed on unspooled");
                assert_eq!(spooled.topic.as_bytes(), &publish.topic[..]);
                assert_eq!(spooled.payload, publish.payload);
                let device_id = device_id_from_topic(&spooled.topic);
                assert_eq!(device_id, Some(spooled.device_id.as_str()));
                if authenticated {
                    assert_eq!(username.as_deref(), device_id);
                }
                let payload_ok = publish.payload.len() <= limits.max_bytes
                    && check_well_formed(&publish.payload, limits.max_depth).is_ok();
                assert_eq!(spooled.disposition == Disposition::Reading, payload_ok);
            }
            _ => {}
        }
    }
    // At most one more: the publish whose topic closed the connection,
    // kept for inspection only.
    if let Some(refused) = submitted.next() {
        assert!(
            replay.error.is_some(),
            "a spooled publish was not handed on"
        );
        assert!(matches!(refused.disposition, Disposition::Rejected { .. }));
    }
    assert!(submitted.next().is_none(), "more spooled than read");
}

/// rumqttd writes what it read back out (a PUBLISH to subscribers, the TLS
/// front's CONNECT upstream): it must encode, and decode as itself.
fn re_encodes(packet: &Packet) {
    let mut out = BytesMut::new();
    let written = V4
        .write(packet.clone(), &mut out)
        .unwrap_or_else(|err| panic!("{packet:?} read but does not encode: {err:?}"));
    assert_eq!(written, out.len());
    let again = V4
        .read_mut(&mut out, usize::MAX)
        .unwrap_or_else(|err| panic!("{packet:?} encodes to bytes that do not read: {err:?}"));
    assert_eq!(&again, packet);
    assert!(out.is_empty(), "{packet:?} encodes with trailing bytes");

    // The TLS front re-encodes a CONNECT with its token as the password.
    if let Packet::Connect(connect, _, will, _, login) = packet {
        let login = Login {
            username: login
                .as_ref()
                .map(|l| l.username.clone())
                .unwrap_or_default(),
            password: "0".repeat(64),
        };
        let vouched = Packet::Connect(connect.clone(), None, will.clone(), None, Some(login));
        let mut out = BytesMut::new();
        V4.write(vouched.clone(), &mut out)
            .unwrap_or_else(|err| panic!("{vouched:?} does not encode: {err:?}"));
        assert_eq!(V4.read_mut(&mut out, usize::MAX).ok(), Some(vouched));
    }
}

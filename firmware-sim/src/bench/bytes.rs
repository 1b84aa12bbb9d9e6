//! Bytes per reading on the wire, computed from the encodings themselves:
//! the MQTT packets a device sends and gets back (MQTT 3.1.1 §3.3, §3.4),
//! and the gateway's upload (`SyncBatch` in CBOR) bare, gzip and zstd at
//! the levels the uplink uses. The disk side is measured by the runs.
//!
//! ```text
//! PUBLISH  0x3X | remaining length (1-4 bytes) | topic length (2) | topic | packet id (2, QoS 1) | payload
//! PUBACK   0x40 | 0x02 | packet id (2)
//! ```

use std::io::Write;

use serde::Serialize;
use serde_bytes::ByteBuf;
use telemetry::{encode_batch, Envelope, SyncBatch};

use crate::ledger::Reading;
use crate::payload::{self, DeviceClock};
use crate::sensors::Sensor;

/// Bytes of a PUBACK.
const PUBACK_BYTES: usize = 4;

/// Bytes of one reading, each way of carrying it.
#[derive(Debug, Clone, Serialize)]
pub struct WireBytes {
    pub payload: usize,
    /// PUBLISH at QoS 1 plus its PUBACK.
    pub mqtt_qos1: usize,
    /// PUBLISH at QoS 0.
    pub mqtt_qos0: usize,
    /// Readings per upload batch in this estimate (the uplink's default
    /// `max_batch_records`).
    pub batch_records: usize,
    /// Upload request body per reading: CBOR, then gzip (fast) and zstd (level 3).
    pub upload_cbor: f64,
    pub upload_gzip: f64,
    pub upload_zstd: f64,
}

/// Bytes of an MQTT 3.1.1 PUBLISH of `payload` bytes on `topic`.
pub(super) fn publish_bytes(topic: &str, payload: usize, qos: u8) -> usize {
    let remaining = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload;
    1 + varint_len(remaining) + remaining
}

/// Length of MQTT's variable-length "remaining length" field.
fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// What one reading of `payload_bytes` costs on each link, for a batch of
/// `batch_records` readings from `devices` simulated devices.
pub(super) fn wire_bytes(payload_bytes: usize, devices: usize, batch_records: usize) -> WireBytes {
    let devices = devices.max(1);
    let mut sensors: Vec<(String, Sensor, DeviceClock)> = (0..devices)
        .map(|i| {
            (
                format!("sim-{i:05}"),
                Sensor::for_device(1, i),
                DeviceClock::default(),
            )
        })
        .collect();
    let received_at = 1_800_000_000_000;
    let envelopes: Vec<Envelope> = (0..batch_records)
        .map(|i| {
            let (id, sensor, clock) = &mut sensors[i % devices];
            let kind = sensor.kind();
            let reading = Reading {
                device_id: id.clone(),
                name: kind.name().to_owned(),
                time: clock.stamp(),
                value: sensor.sample(),
                unit: kind.unit().map(str::to_owned),
            };
            Envelope {
                seq: i as u64 + 1,
                device_id: id.clone(),
                topic: payload::topic(id),
                received_at: received_at + i as u64,
                payload: ByteBuf::from(payload::encode_sized(&reading, Some(payload_bytes))),
            }
        })
        .collect();
    let batch = SyncBatch {
        gateway_id: "bench-gateway".to_owned(),
        spool_id: format!("{:032x}", 0x5eed_u128),
        backlog: 0,
        envelopes,
    };
    let body = encode_batch(&batch);
    let gzip = {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&body).expect("writing to a Vec");
        encoder.finish().expect("writing to a Vec").len()
    };
    let zstd = zstd::encode_all(body.as_slice(), 3)
        .expect("zstd into a Vec")
        .len();
    let topic = payload::topic("sim-00000");
    let per = |bytes: usize| bytes as f64 / batch_records.max(1) as f64;
    WireBytes {
        payload: payload_bytes,
        mqtt_qos1: publish_bytes(&topic, payload_bytes, 1) + PUBACK_BYTES,
        mqtt_qos0: publish_bytes(&topic, payload_bytes, 0),
        batch_records,
        upload_cbor: per(body.len()),
        upload_gzip: per(gzip),
        upload_zstd: per(zstd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_sizes_follow_mqtt_3_1_1() {
        // "a/b", 3-byte payload, QoS 1: 0x32, len 10, 00 03 "a/b", pkid, payload.
        assert_eq!(publish_bytes("a/b", 3, 1), 12);
        assert_eq!(publish_bytes("a/b", 3, 0), 10);
        // Remaining length 128 takes two bytes.
        assert_eq!(publish_bytes("a", 123, 1), 1 + 2 + 128);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(16_384), 3);
    }

    #[test]
    fn a_batch_costs_about_its_payloads_and_compression_helps() {
        let bytes = wire_bytes(100, 10, 1000);
        let topic = "devices/sim-00000/telemetry";
        assert_eq!(bytes.mqtt_qos1, 1 + 2 + 2 + topic.len() + 2 + 100 + 4);
        // Each envelope carries its payload, device id and topic.
        assert!(bytes.upload_cbor > 100.0 + 9.0 + 27.0, "{bytes:?}");
        assert!(bytes.upload_zstd < bytes.upload_cbor / 2.0, "{bytes:?}");
        assert!(bytes.upload_gzip < bytes.upload_cbor, "{bytes:?}");
    }
}

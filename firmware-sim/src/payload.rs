//! What a virtual device puts on the wire: its topic and one SenML-CBOR pack
//! per publish, and the clock that stamps each reading.
//!
//! ```text
//! topic   devices/{device_id}/telemetry
//! payload [ { -3 (bt): time, 0 (n): name, 1 (u): unit?, 2|4 (v|vb): value } ]
//! sized   [ { -2 (bn): "urn:dev:sim:{device_id}:000…/", -3 (bt): …, 0 (n): … } ]
//! ```
//!
//! A sized payload (benchmarks: "100-byte SenML readings") is the same record
//! with a base name grown to make the pack exactly the size asked for; the
//! resolved name is then `urn:dev:sim:{device_id}:000…/{name}`.
//!
//! The absolute base time makes a reading recognisable when it is resent: the
//! same payload, so the same (device, name, time) in the store. A device's
//! times are strictly increasing, millisecond precision.

use std::time::{SystemTime, UNIX_EPOCH};

use telemetry::senml::{encode_pack, RawRecord};

use crate::ledger::Reading;

/// The topic device `device_id` publishes its readings on.
pub fn topic(device_id: &str) -> String {
    format!("devices/{device_id}/telemetry")
}

/// Encodes `reading` as a SenML-CBOR pack of exactly one record.
pub fn encode(reading: &Reading) -> Vec<u8> {
    encode_pack(&[RawRecord {
        base_time: Some(reading.time),
        name: Some(reading.name.clone()),
        unit: reading.unit.clone(),
        value: Some(reading.value.clone()),
        ..RawRecord::default()
    }])
}

/// Prefix of a sized payload's base name, before the device id.
const BASE_NAME_PREFIX: &str = "urn:dev:sim:";

/// Encodes `reading` as [`encode`] does, then, with `size` set, grows a base
/// name so that the pack is exactly `size` bytes. A size no pack can have
/// (too small for the record and a base name, or one byte past a CBOR
/// length boundary) gives a slightly larger pack.
pub fn encode_sized(reading: &Reading, size: Option<usize>) -> Vec<u8> {
    let Some(size) = size else {
        return encode(reading);
    };
    let plain = encode(reading).len();
    // Adding a base name costs its label (1 byte), the text header (1 byte
    // below 24 bytes of text, 2 up to 255, 3 up to 65535) and the text; the
    // record's map header stays one byte (5 entries at most).
    let text_len = [(3, 256..65536), (2, 24..256), (1, 0..24)]
        .into_iter()
        .find_map(|(header, fits)| {
            let len = size.checked_sub(plain + 1 + header)?;
            fits.contains(&len).then_some(len)
        })
        .unwrap_or_else(|| size.saturating_sub(plain + 3).max(24));
    let mut base_name = format!("{BASE_NAME_PREFIX}{}:", reading.device_id);
    let pad = text_len.saturating_sub(base_name.len() + 1);
    base_name.extend(std::iter::repeat_n('0', pad));
    base_name.push('/');
    encode_pack(&[RawRecord {
        base_name: Some(base_name),
        base_time: Some(reading.time),
        name: Some(reading.name.clone()),
        unit: reading.unit.clone(),
        value: Some(reading.value.clone()),
        ..RawRecord::default()
    }])
}

/// A device's clock: wall-clock milliseconds, bumped so that no two readings
/// of the device share a millisecond.
#[derive(Debug, Default, Clone)]
pub struct DeviceClock {
    last_ms: u64,
}

impl DeviceClock {
    /// The time of the next reading in seconds since the epoch.
    pub fn stamp(&mut self) -> f64 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.next_at(now_ms)
    }

    /// As [`DeviceClock::stamp`], for a given wall-clock time in milliseconds.
    pub fn next_at(&mut self, now_ms: u64) -> f64 {
        self.last_ms = now_ms.max(self.last_ms + 1);
        self.last_ms as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemetry::senml::{decode_pack, Value};

    fn reading(value: Value, unit: Option<&str>) -> Reading {
        Reading {
            device_id: "sim-00001".into(),
            name: "temperature".into(),
            time: 1_732_829_101.123,
            value,
            unit: unit.map(str::to_owned),
        }
    }

    #[test]
    fn one_pack_one_record_with_absolute_time() {
        let r = reading(Value::Float(21.37), Some("Cel"));
        // `now` far from the reading's time shows the time is absolute.
        let records = decode_pack(&encode(&r), 5.0).unwrap();
        assert_eq!(records.len(), 1);
        let rec = &records[0];
        assert_eq!(rec.name, "temperature");
        assert_eq!(rec.time, r.time);
        assert_eq!(rec.unit.as_deref(), Some("Cel"));
        assert_eq!(rec.value, Some(Value::Float(21.37)));
        assert_eq!(rec.sum, None);
    }

    #[test]
    fn a_switch_has_a_bool_and_no_unit() {
        let r = Reading {
            name: "door".into(),
            ..reading(Value::Bool(true), None)
        };
        let records = decode_pack(&encode(&r), 0.0).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].name, "door");
        assert_eq!(records[0].unit, None);
        assert_eq!(records[0].value, Some(Value::Bool(true)));
        assert_eq!(records[0].time, r.time);
    }

    #[test]
    fn same_reading_same_bytes() {
        let r = reading(Value::Float(3.301), Some("V"));
        assert_eq!(encode(&r), encode(&r.clone()));
    }

    #[test]
    fn sized_payloads_are_exactly_the_size_asked_for_and_still_senml() {
        let door = Reading {
            name: "door".into(),
            ..reading(Value::Bool(false), None)
        };
        for r in [reading(Value::Float(21.37), Some("Cel")), door] {
            for size in [70, 100, 255, 300, 1000] {
                let bytes = encode_sized(&r, Some(size));
                assert_eq!(bytes.len(), size, "{} at {size}", r.name);
                let records = decode_pack(&bytes, 0.0).unwrap();
                assert_eq!(records.len(), 1);
                let name = &records[0].name;
                assert!(name.starts_with("urn:dev:sim:sim-00001:"), "{name}");
                assert!(name.ends_with(&format!("/{}", r.name)), "{name}");
                assert_eq!(records[0].time, r.time);
            }
        }
        // Too small for a base name: the smallest sized pack, not a panic.
        let small = encode_sized(&reading(Value::Float(1.0), Some("V")), Some(10));
        assert!(small.len() > 10 && decode_pack(&small, 0.0).is_ok());
        let plain = reading(Value::Float(1.0), Some("V"));
        assert_eq!(encode_sized(&plain, None), encode(&plain));
    }

    #[test]
    fn topic_names_the_device() {
        assert_eq!(topic("sim-00042"), "devices/sim-00042/telemetry");
    }

    #[test]
    fn clock_is_strictly_increasing_in_whole_milliseconds() {
        let mut clock = DeviceClock::default();
        assert_eq!(clock.next_at(1_000_000), 1000.0);
        assert_eq!(clock.next_at(1_000_000), 1000.001);
        assert_eq!(clock.next_at(999_000), 1000.002, "never goes back");
        assert_eq!(clock.next_at(2_000_000), 2000.0);
        let wall = clock.stamp();
        assert!(wall > 1.7e9 && clock.stamp() > wall);
    }
}

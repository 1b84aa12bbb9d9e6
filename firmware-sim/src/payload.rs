//! What a virtual device puts on the wire: its topic and one SenML-CBOR pack
//! per publish, and the clock that stamps each reading.
//!
//! ```text
//! topic   devices/{device_id}/telemetry
//! payload [ { -3 (bt): time, 0 (n): name, 1 (u): unit?, 2|4 (v|vb): value } ]
//! ```
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

//! The device topic scheme: `devices/{device_id}/telemetry`.

use telemetry::validate_device_id;

/// The device id a telemetry topic names, or `None` if the topic is not of
/// the form `devices/{device_id}/telemetry` with a valid device id.
pub fn device_id_from_topic(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix("devices/")?;
    let device_id = rest.strip_suffix("/telemetry")?;
    validate_device_id(device_id).ok()?;
    Some(device_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_device_id() {
        assert_eq!(device_id_from_topic("devices/s-1/telemetry"), Some("s-1"));
    }

    #[test]
    fn refuses_other_shapes() {
        for topic in [
            "devices//telemetry",
            "devices/a/b/telemetry",
            "devices/a/status",
            "x/devices/a/telemetry",
            "devices/a+/telemetry",
            "devices/#/telemetry",
        ] {
            assert_eq!(device_id_from_topic(topic), None, "{topic}");
        }
    }
}

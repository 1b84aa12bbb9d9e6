//! What `run_fleet` simulates and how hard it pushes: [`FleetConfig`], its
//! defaults in one place, and the checks that turn it into runtime settings.

use std::time::Duration;

use telemetry::DeviceIdError;

/// Settings of one simulated fleet. Start from [`FleetConfig::default`] and
/// override what a run needs.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// MQTT broker as `host:port` (plain TCP, MQTT 3.1.1). Default `127.0.0.1:1884`.
    pub broker: String,
    /// Number of virtual devices, each with its own connection. Default 100.
    pub devices: usize,
    /// Device ids are `{device_prefix}{index:05}`. Default `sim-`.
    pub device_prefix: String,
    /// Each device stops after this many readings have been acknowledged;
    /// `None` publishes until `duration` elapses or shutdown. Default `None`.
    pub readings_per_device: Option<u64>,
    /// Wall-clock limit of the run; `None` means no limit. Default `None`.
    pub duration: Option<Duration>,
    /// Readings per second per device. 0 means flat out: as fast as the
    /// inflight window and the broker's acknowledgements allow. Default 1.0.
    pub rate: f64,
    /// MQTT QoS of every publish, 0 or 1. Default 1.
    pub qos: u8,
    /// Unacknowledged QoS 1 publishes each connection may have in flight;
    /// also the depth of rumqttc's request queue. Default 100.
    pub inflight: u16,
    /// Time allowed for TCP connect plus CONNACK; rounded up to whole
    /// seconds, as rumqttc counts in seconds. Default 5 s.
    pub connect_timeout: Duration,
    /// Draw an indicatif progress bar on stderr (keep it off in tests). Default false.
    pub progress: bool,
    /// Seed of every sensor model, so two runs produce the same values. Default 1.
    pub seed: u64,
    /// Pad every payload to this many bytes with a SenML base name
    /// ([`crate::payload::encode_sized`]); `None` sends the bare record
    /// (20 to 40 bytes). Default `None`.
    pub payload_bytes: Option<usize>,
    /// Keep every acknowledged reading in the summary's ledger, for
    /// `verify`. Benchmarks turn it off: a million readings cost the load
    /// generator ~150 MB and a sort. Default true.
    pub keep_ledger: bool,
    /// Record each QoS 1 publish's time from being written to its PUBACK
    /// ([`crate::Summary::latency`]). Default false.
    pub record_latency: bool,
    /// With `duration`, also count acknowledgements over the window from
    /// `warmup` after the start to the end of `duration`
    /// ([`crate::Summary::steady`]), leaving out connects. Default zero.
    pub warmup: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            broker: "127.0.0.1:1884".to_owned(),
            devices: 100,
            device_prefix: "sim-".to_owned(),
            readings_per_device: None,
            duration: None,
            rate: 1.0,
            qos: 1,
            inflight: 100,
            connect_timeout: Duration::from_secs(5),
            progress: false,
            seed: 1,
            payload_bytes: None,
            keep_ledger: true,
            record_latency: false,
            warmup: Duration::ZERO,
        }
    }
}

/// Why a [`FleetConfig`] cannot run. Each names the field to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `broker` is not `host:port` with a port in 1..=65535.
    #[error("broker: expected host:port, got {0:?}")]
    Broker(String),
    /// `devices` is 0; ask for at least one device.
    #[error("devices: must be at least 1")]
    NoDevices,
    /// `device_prefix` plus the index does not make a valid device id.
    #[error("device_prefix: {id:?} is not a valid device id: {error}")]
    DeviceId { id: String, error: DeviceIdError },
    /// `rate` is negative, NaN or infinite.
    #[error("rate: must be a finite number >= 0, got {0}")]
    Rate(f64),
    /// `qos` is neither 0 nor 1 (QoS 2 is not simulated).
    #[error("qos: must be 0 or 1, got {0}")]
    Qos(u8),
    /// `inflight` is 0, which rumqttc refuses.
    #[error("inflight: must be at least 1")]
    Inflight,
    /// `connect_timeout` is zero.
    #[error("connect_timeout: must be more than zero")]
    ConnectTimeout,
    /// `readings_per_device` is `Some(0)`: nothing would be sent.
    #[error("readings_per_device: must be at least 1 when set")]
    Readings,
}

impl FleetConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.broker_addr()?;
        if self.devices == 0 {
            return Err(ConfigError::NoDevices);
        }
        // The longest id is the last one; the first catches a bad prefix alphabet.
        for index in [0, self.devices - 1] {
            let id = self.device_id(index);
            telemetry::validate_device_id(&id)
                .map_err(|error| ConfigError::DeviceId { id, error })?;
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(ConfigError::Rate(self.rate));
        }
        if self.qos > 1 {
            return Err(ConfigError::Qos(self.qos));
        }
        if self.inflight == 0 {
            return Err(ConfigError::Inflight);
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::ConnectTimeout);
        }
        if self.readings_per_device == Some(0) {
            return Err(ConfigError::Readings);
        }
        Ok(())
    }

    /// The id of device `index`: `{device_prefix}{index:05}`.
    pub fn device_id(&self, index: usize) -> String {
        format!("{}{index:05}", self.device_prefix)
    }

    /// `broker` split into host and port; IPv6 literals may be bracketed.
    pub fn broker_addr(&self) -> Result<(String, u16), ConfigError> {
        let bad = || ConfigError::Broker(self.broker.clone());
        let (host, port) = self.broker.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok((host.to_owned(), port))
    }

    /// Time between two readings of one device; `None` when flat out.
    pub(crate) fn interval(&self) -> Option<Duration> {
        (self.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let config = FleetConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.broker, "127.0.0.1:1884");
        assert_eq!(config.devices, 100);
        assert_eq!(config.device_id(7), "sim-00007");
        assert_eq!(config.interval(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn broker_address_forms() {
        let with = |broker: &str| FleetConfig {
            broker: broker.to_owned(),
            ..FleetConfig::default()
        };
        assert_eq!(
            with("localhost:1883").broker_addr(),
            Ok(("localhost".into(), 1883))
        );
        assert_eq!(with("[::1]:1883").broker_addr(), Ok(("::1".into(), 1883)));
        for bad in ["localhost", ":1883", "host:0", "host:99999", "host:x"] {
            assert!(
                matches!(with(bad).validate(), Err(ConfigError::Broker(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let base = FleetConfig::default();
        let cases = [
            (
                FleetConfig {
                    devices: 0,
                    ..base.clone()
                },
                "devices",
            ),
            (
                FleetConfig {
                    device_prefix: "a/b".into(),
                    ..base.clone()
                },
                "device_prefix",
            ),
            (
                FleetConfig {
                    device_prefix: "x".repeat(60),
                    ..base.clone()
                },
                "device_prefix",
            ),
            (
                FleetConfig {
                    rate: -1.0,
                    ..base.clone()
                },
                "rate",
            ),
            (
                FleetConfig {
                    rate: f64::NAN,
                    ..base.clone()
                },
                "rate",
            ),
            (
                FleetConfig {
                    qos: 2,
                    ..base.clone()
                },
                "qos",
            ),
            (
                FleetConfig {
                    inflight: 0,
                    ..base.clone()
                },
                "inflight",
            ),
            (
                FleetConfig {
                    connect_timeout: Duration::ZERO,
                    ..base.clone()
                },
                "connect_timeout",
            ),
            (
                FleetConfig {
                    readings_per_device: Some(0),
                    ..base.clone()
                },
                "readings_per_device",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().expect_err(field).to_string();
            assert!(err.starts_with(field), "{err} should name {field}");
        }
    }

    #[test]
    fn flat_out_has_no_interval() {
        let config = FleetConfig {
            rate: 0.0,
            ..FleetConfig::default()
        };
        assert_eq!(config.interval(), None);
    }
}

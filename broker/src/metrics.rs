//! Counters of the MQTT side, registered in the embedding's Prometheus registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QosLabel {
    pub qos: u8,
}

/// Broker counters; cheap to clone (each metric is an `Arc`).
#[derive(Clone, Debug)]
pub struct BrokerMetrics {
    /// Time from reading a QoS 1/2 PUBLISH to writing its PUBACK/PUBREC,
    /// i.e. what the spool's group commit costs a device, in seconds.
    pub puback_seconds: Histogram,
    /// Publishes accepted into the spool, by QoS.
    pub publishes_accepted: Family<QosLabel, Counter>,
    /// Publishes refused, by reason (`topic`, `too_large`, `malformed`, `too_deep`).
    pub publishes_rejected: Family<ReasonLabel, Counter>,
    /// PUBACK/PUBREC withheld because the spool could not confirm the write.
    pub acks_withheld: Counter,
    /// MQTT connections currently open.
    pub connections: Gauge,
    /// MQTT connections accepted since start.
    pub connections_total: Counter,
    /// CONNECTs refused: unknown device or wrong password.
    pub connections_refused: Counter,
    /// TLS handshakes completed.
    pub tls_handshakes: Counter,
    /// TLS handshakes that failed, by reason (`timeout`, `client_cert`,
    /// `protocol`, `aborted`).
    pub tls_handshakes_failed: Family<ReasonLabel, Counter>,
    /// TLS connections closed by the front before they reached the broker,
    /// by reason (`limit`, `no_identity`, `identity_mismatch`,
    /// `connect_timeout`, `not_connect`, `upstream`).
    pub tls_connections_refused: Family<ReasonLabel, Counter>,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        BrokerMetrics {
            // 100 µs .. ~6.5 s
            puback_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 17)),
            publishes_accepted: Family::default(),
            publishes_rejected: Family::default(),
            acks_withheld: Counter::default(),
            connections: Gauge::default(),
            connections_total: Counter::default(),
            connections_refused: Counter::default(),
            tls_handshakes: Counter::default(),
            tls_handshakes_failed: Family::default(),
            tls_connections_refused: Family::default(),
        }
    }
}

impl BrokerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "edge_mqtt_puback_latency_seconds",
            "Time from reading a QoS 1/2 publish to writing its acknowledgement",
            self.puback_seconds.clone(),
        );
        registry.register(
            "edge_mqtt_connections_refused",
            "CONNECTs refused for an unknown device or a wrong password",
            self.connections_refused.clone(),
        );
        registry.register(
            "edge_mqtt_publishes_accepted",
            "Publishes accepted into the spool",
            self.publishes_accepted.clone(),
        );
        registry.register(
            "edge_mqtt_publishes_rejected",
            "Publishes refused, by reason",
            self.publishes_rejected.clone(),
        );
        registry.register(
            "edge_mqtt_acks_withheld",
            "Acknowledgements withheld because the spool could not confirm the write",
            self.acks_withheld.clone(),
        );
        registry.register(
            "edge_mqtt_connections",
            "MQTT connections open",
            self.connections.clone(),
        );
        registry.register(
            "edge_mqtt_connections_accepted",
            "MQTT connections accepted",
            self.connections_total.clone(),
        );
        registry.register(
            "edge_mqtt_tls_handshakes",
            "TLS handshakes completed",
            self.tls_handshakes.clone(),
        );
        registry.register(
            "edge_mqtt_tls_handshakes_failed",
            "TLS handshakes that failed or timed out, by reason",
            self.tls_handshakes_failed.clone(),
        );
        registry.register(
            "edge_mqtt_tls_connections_refused",
            "TLS connections closed before they reached the broker, by reason",
            self.tls_connections_refused.clone(),
        );
    }
}

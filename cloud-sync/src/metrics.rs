//! The collector's Prometheus metrics, in a registry owned by one server
//! (never a global: several collectors may share a test process).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::model::{ErasureOutcome, ExpiryOutcome, IngestOutcome};

/// Outcome label of `cloud_sync_batches_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// `ok`, or the error code of the answer: `bad_request`, `unauthorized`,
    /// `forbidden`, `too_many_requests`, `payload_too_large`,
    /// `unsupported_media_type`, `internal_error`.
    pub status: &'static str,
}

/// Labels of `cloud_sync_requests_refused_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `ingest` (POST /v1/batches), `query` (the read API) or `admin`
    /// (DELETE /v1/devices/{id}).
    pub endpoint: &'static str,
    /// `unauthorized` (401), `forbidden` (403) or `too_many_requests` (429).
    pub reason: &'static str,
}

/// Outcome label of `cloud_sync_envelopes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `error` (not TLS, no or an untrusted client certificate, a protocol
    /// error) or `timeout` (silent for the whole handshake time).
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `accepted` or `duplicate`.
    pub result: &'static str,
}

/// Labels of `cloud_sync_removed_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemovalLabels {
    /// `retention` or `erasure`.
    pub reason: &'static str,
    /// `points` or `documents`.
    pub kind: &'static str,
}

/// Query label of `cloud_sync_query_duration_seconds`: the route template.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// For example `/v1/devices/{id}/aggregates`.
    pub route: String,
}

/// Every metric the collector exports, and the registry that holds them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    batches: Family<StatusLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    envelopes: Family<ResultLabels, Counter>,
    points: Counter,
    duplicate_points: Counter,
    documents: Counter,
    invalid_payloads: Counter,
    ingest_duration: Histogram,
    query_duration: Family<QueryLabels, Histogram, fn() -> Histogram>,
    removed: Family<RemovalLabels, Counter>,
    retention_runs: Family<ResultLabels, Counter>,
    erasures: Counter,
    audit_lines: Counter,
    audit_errors: Counter,
    tls_handshakes_failed: Family<HandshakeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let batches = Family::<StatusLabels, Counter>::default();
        let envelopes = Family::<ResultLabels, Counter>::default();
        let refused = Family::<RefusalLabels, Counter>::default();
        let points = Counter::default();
        let duplicate_points = Counter::default();
        let documents = Counter::default();
        let invalid_payloads = Counter::default();
        // 0.5 ms .. ~8 s: a batch of a few envelopes up to a slow fsync of 16 MiB.
        let ingest_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 15));
        // The text encoder appends `_total` to counters.
        registry.register(
            "cloud_sync_batches",
            "Batches received on POST /v1/batches, by outcome",
            batches.clone(),
        );
        registry.register(
            "cloud_sync_requests_refused",
            "Requests refused for their token or their gateway's rate, by endpoint and reason",
            refused.clone(),
        );
        registry.register(
            "cloud_sync_envelopes",
            "Envelopes of accepted batches: stored for the first time or already held",
            envelopes.clone(),
        );
        registry.register("cloud_sync_points", "Points stored", points.clone());
        registry.register(
            "cloud_sync_duplicate_points",
            "Points skipped because the same device, name and time was already stored",
            duplicate_points.clone(),
        );
        registry.register(
            "cloud_sync_documents",
            "Envelopes stored as documents (not SenML, or not decodable)",
            documents.clone(),
        );
        registry.register(
            "cloud_sync_invalid_payloads",
            "Payloads that did not decode, kept as documents flagged invalid",
            invalid_payloads.clone(),
        );
        registry.register(
            "cloud_sync_request_duration_seconds",
            "Time to handle POST /v1/batches, from request to answer",
            ingest_duration.clone(),
        );
        // 0.1 ms .. ~3 s: a point lookup up to a month of buckets.
        let query_duration: Family<QueryLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_1, 2.0, 15)));
        registry.register(
            "cloud_sync_query_duration_seconds",
            "Time to answer a query API request, by route",
            query_duration.clone(),
        );
        let tls_handshakes_failed = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "cloud_sync_tls_handshakes_failed",
            "HTTPS connections dropped before their TLS handshake completed, by reason",
            tls_handshakes_failed.clone(),
        );
        let removed = Family::<RemovalLabels, Counter>::default();
        registry.register(
            "cloud_sync_removed",
            "Points and documents deleted, by reason (retention, erasure) and kind",
            removed.clone(),
        );
        let retention_runs = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cloud_sync_retention_runs",
            "Retention runs, by result: ok or error",
            retention_runs.clone(),
        );
        let erasures = Counter::default();
        registry.register(
            "cloud_sync_erasures",
            "Devices erased through DELETE /v1/devices/{id}",
            erasures.clone(),
        );
        let audit_lines = Counter::default();
        registry.register(
            "cloud_sync_audit_lines",
            "Lines written to the audit log",
            audit_lines.clone(),
        );
        let audit_errors = Counter::default();
        registry.register(
            "cloud_sync_audit_write_errors",
            "Audit lines that could not be written (their actions are unrecorded)",
            audit_errors.clone(),
        );
        Metrics {
            registry,
            removed,
            retention_runs,
            erasures,
            audit_lines,
            audit_errors,
            tls_handshakes_failed,
            batches,
            refused,
            envelopes,
            points,
            duplicate_points,
            documents,
            invalid_payloads,
            ingest_duration,
            query_duration,
        }
    }

    /// Times one query API request.
    pub fn observe_query(&self, route: &str, seconds: f64) {
        self.query_duration
            .get_or_create(&QueryLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Counts one batch request by its outcome and how long it took.
    pub fn observe_batch(&self, status: &'static str, seconds: f64) {
        self.batches.get_or_create(&StatusLabels { status }).inc();
        self.ingest_duration.observe(seconds);
    }

    /// Counts a refusal when `code` is one of authentication or rate
    /// (`unauthorized`, `forbidden`, `too_many_requests`); ignores others.
    pub fn observe_refusal(&self, endpoint: &'static str, code: &'static str) {
        if matches!(code, "unauthorized" | "forbidden" | "too_many_requests") {
            self.refused
                .get_or_create(&RefusalLabels {
                    endpoint,
                    reason: code,
                })
                .inc();
        }
    }

    /// Counts what a stored batch held.
    pub fn observe_outcome(&self, outcome: &IngestOutcome) {
        self.envelopes
            .get_or_create(&ResultLabels { result: "accepted" })
            .inc_by(outcome.accepted);
        self.envelopes
            .get_or_create(&ResultLabels {
                result: "duplicate",
            })
            .inc_by(outcome.duplicates);
        self.points.inc_by(outcome.points);
        self.duplicate_points.inc_by(outcome.duplicate_points);
        self.documents.inc_by(outcome.documents);
        self.invalid_payloads.inc_by(outcome.invalid_documents);
    }

    /// Counts one retention run: `Some` with what it removed, `None` when it failed.
    pub fn observe_retention(&self, outcome: Option<&ExpiryOutcome>) {
        let result = if outcome.is_some() { "ok" } else { "error" };
        self.retention_runs
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(outcome) = outcome {
            self.observe_removed("retention", outcome.points, outcome.documents);
        }
    }

    /// Counts one erasure and what it removed.
    pub fn observe_erasure(&self, outcome: &ErasureOutcome) {
        self.erasures.inc();
        self.observe_removed("erasure", outcome.points, outcome.documents);
    }

    fn observe_removed(&self, reason: &'static str, points: u64, documents: u64) {
        for (kind, n) in [("points", points), ("documents", documents)] {
            self.removed
                .get_or_create(&RemovalLabels { reason, kind })
                .inc_by(n);
        }
    }

    /// The counters the audit writer thread keeps: lines written, lines lost.
    /// The counter of failed TLS handshakes, for the HTTPS listener.
    pub fn tls_handshakes_failed(&self) -> Family<HandshakeLabels, Counter> {
        self.tls_handshakes_failed.clone()
    }

    pub fn audit_counters(&self) -> (Counter, Counter) {
        (self.audit_lines.clone(), self.audit_errors.clone())
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String never fails");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        let metrics = Metrics::new();
        metrics.observe_batch("ok", 0.01);
        metrics.observe_refusal("ingest", "too_many_requests");
        metrics.observe_refusal("query", "bad_request");
        metrics.observe_outcome(&IngestOutcome {
            accepted: 3,
            duplicates: 1,
            points: 5,
            ..IngestOutcome::default()
        });
        metrics.observe_retention(Some(&ExpiryOutcome {
            points: 4,
            documents: 0,
            devices: 1,
        }));
        metrics.observe_retention(None);
        metrics.observe_erasure(&ErasureOutcome {
            points: 0,
            documents: 2,
            measurements: 0,
        });
        let text = metrics.encode();
        for line in [
            "cloud_sync_batches_total{status=\"ok\"} 1",
            "cloud_sync_envelopes_total{result=\"accepted\"} 3",
            "cloud_sync_envelopes_total{result=\"duplicate\"} 1",
            "cloud_sync_points_total 5",
            "cloud_sync_documents_total 0",
            "cloud_sync_request_duration_seconds_count 1",
            "cloud_sync_requests_refused_total{endpoint=\"ingest\",reason=\"too_many_requests\"} 1",
            "cloud_sync_removed_total{reason=\"retention\",kind=\"points\"} 4",
            "cloud_sync_removed_total{reason=\"erasure\",kind=\"documents\"} 2",
            "cloud_sync_retention_runs_total{result=\"ok\"} 1",
            "cloud_sync_retention_runs_total{result=\"error\"} 1",
            "cloud_sync_erasures_total 1",
            "cloud_sync_audit_lines_total 0",
            "cloud_sync_audit_write_errors_total 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("bad_request"), "{text}");
    }
}

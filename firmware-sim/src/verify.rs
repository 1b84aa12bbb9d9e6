//! End-to-end check: looks up every reading of a ledger in the collector's
//! query API and reports what is missing, stored twice or stored wrong.
//!
//! ```text
//! per (device, name), per chunk of at most CHUNK readings:
//!   GET {collector}/v1/devices/{id}/points?name={name}&from={t0 - 0.5 ms}&to={t1}&limit=100000
//!   200 {"device_id","name","points":[{"time","value","type","unit"}]}
//!   404 the device is unknown: every reading of it is missing
//! a stored point matches a reading when |time difference| <= 0.5 ms
//! ```
//!
//! The ledger holds at most one reading per device, name and millisecond, so
//! a stored point matches at most one reading. Points that match none are
//! only counted (`unexpected`): QoS 0 and unacknowledged readings may
//! legitimately have arrived.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use telemetry::senml::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::ledger::{Ledger, Reading};

/// Two times closer than this are the same reading (times are ms-precision f64).
pub const TIME_TOLERANCE: f64 = 0.0005;
/// Largest page the collector is asked for.
const LIMIT: usize = 100_000;
/// Ledger readings covered by one query, well below `LIMIT` so duplicates and
/// unexpected points still fit in one answer.
const CHUNK: usize = 20_000;
/// Queries in flight at once.
const CONCURRENCY: usize = 8;
/// Pause between two attempts of [`verify_within`].
const VERIFY_RETRY: Duration = Duration::from_secs(1);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many entries of each list [`VerifyReport::print`] shows.
const PRINT_MAX: usize = 10;

/// Which reading a finding is about.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingKey {
    pub device_id: String,
    pub name: String,
    pub time: f64,
}

/// A reading stored more than once.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    pub key: ReadingKey,
    /// How many stored points match it (at least 2).
    pub copies: usize,
}

/// A reading stored with another value, type or unit than was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct WrongValue {
    pub key: ReadingKey,
    pub expected: Value,
    pub expected_unit: Option<String>,
    /// The stored point as the collector returned it (value, type, unit).
    pub found: String,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyReport {
    /// Readings in the ledger.
    pub expected: u64,
    /// Readings found at least once (with the right value or not).
    pub found: u64,
    pub missing: Vec<ReadingKey>,
    pub duplicates: Vec<Duplicate>,
    pub wrong_value: Vec<WrongValue>,
    /// Stored points in the queried ranges that match no ledger reading.
    pub unexpected: u64,
}

impl VerifyReport {
    /// Every reading stored exactly once with its value; unexpected points
    /// do not count against it.
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.duplicates.is_empty() && self.wrong_value.is_empty()
    }

    /// Prints the counts, the first few findings of each kind and a verdict.
    pub fn print(&self, w: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            w,
            "expected {}, found {}, missing {}, duplicated {}, wrong value {}, unexpected {}",
            self.expected,
            self.found,
            self.missing.len(),
            self.duplicates.len(),
            self.wrong_value.len(),
            self.unexpected
        )?;
        print_some(w, "missing", &self.missing, |w, k| writeln!(w, "  {k}"))?;
        print_some(w, "duplicated", &self.duplicates, |w, d| {
            writeln!(w, "  {} stored {} times", d.key, d.copies)
        })?;
        print_some(w, "wrong value", &self.wrong_value, |w, v| {
            writeln!(
                w,
                "  {}: sent {:?} {:?}, stored {}",
                v.key, v.expected, v.expected_unit, v.found
            )
        })?;
        writeln!(w, "verdict: {}", if self.is_ok() { "OK" } else { "FAILED" })
    }
}

impl std::fmt::Display for ReadingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} t={:.3}", self.device_id, self.name, self.time)
    }
}

fn print_some<W: Write, T>(
    w: &mut W,
    title: &str,
    items: &[T],
    mut line: impl FnMut(&mut W, &T) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(w, "{title}:")?;
    for item in items.iter().take(PRINT_MAX) {
        line(w, item)?;
    }
    if items.len() > PRINT_MAX {
        writeln!(w, "  ... and {} more", items.len() - PRINT_MAX)?;
    }
    Ok(())
}

/// One stored point as the query API returns it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct StoredPoint {
    pub time: f64,
    pub value: serde_json::Value,
    /// `float`, `bool`, `string` or `bytes`; empty if the collector omits it.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub unit: Option<String>,
}

#[derive(Deserialize)]
struct PointsPage {
    points: Vec<StoredPoint>,
}

/// Checks that every reading of `ledger` is stored exactly once, with its
/// value, in the collector at `collector` (a base URL such as
/// `http://127.0.0.1:8480`). Fails only when the collector cannot be asked
/// or answers something other than points or 404.
pub async fn verify(ledger: &Ledger, collector: &str) -> anyhow::Result<VerifyReport> {
    let base = Url::parse(collector).with_context(|| format!("collector url {collector:?}"))?;
    if base.cannot_be_a_base() {
        bail!("collector url {collector:?} cannot be a base url");
    }
    let client = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("building the http client")?;

    // Group readings by series, sorted by time.
    let mut series: BTreeMap<(&str, &str), Vec<&Reading>> = BTreeMap::new();
    for reading in ledger {
        series
            .entry((&reading.device_id, &reading.name))
            .or_default()
            .push(reading);
    }
    let mut queries = Vec::new();
    for ((device_id, name), readings) in &mut series {
        readings.sort_by(|a, b| a.time.total_cmp(&b.time));
        let starts: Vec<usize> = (0..readings.len()).step_by(CHUNK).collect();
        for (i, &start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(readings.len());
            let from = readings[start].time - TIME_TOLERANCE;
            // Chunks meet half a millisecond before the next chunk's first reading.
            let to = match starts.get(i + 1) {
                Some(&next) => readings[next].time - TIME_TOLERANCE,
                None => readings[end - 1].time + 1.0,
            };
            let url = points_url(&base, device_id, name, from, to);
            queries.push((readings[start..end].to_vec(), url));
        }
    }

    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    for (index, (_, url)) in queries.iter().enumerate() {
        let (client, url, limit) = (client.clone(), url.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (index, fetch_points(&client, url).await)
        });
    }
    let mut answers: Vec<Option<Vec<StoredPoint>>> = vec![None; queries.len()];
    while let Some(joined) = tasks.join_next().await {
        let (index, points) = joined.context("a collector query task failed")?;
        answers[index] = points?;
    }

    let mut report = VerifyReport::default();
    for ((readings, _), points) in queries.iter().zip(answers) {
        compare(readings, points.unwrap_or_default(), &mut report);
    }
    Ok(report)
}

/// Runs [`verify`] until the report is OK, `wait` has elapsed or `shutdown`
/// is cancelled, once a second: the pipeline (spool, uplink, collector) may
/// still be delivering when the fleet stops. Returns the last report; fails
/// only if the collector never answered.
pub async fn verify_within(
    ledger: &Ledger,
    collector: &str,
    wait: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<VerifyReport> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = None;
    loop {
        match verify(ledger, collector).await {
            Ok(report) if report.is_ok() => return Ok(report),
            Ok(report) => {
                tracing::info!(
                    missing = report.missing.len(),
                    "collector is not complete yet"
                );
                last = Some(Ok(report));
            }
            Err(e) => {
                tracing::info!(error = %format!("{e:#}"), "collector did not answer");
                // A report beats an error: it says what is wrong.
                if !matches!(last, Some(Ok(_))) {
                    last = Some(Err(e));
                }
            }
        }
        let next = tokio::time::Instant::now() + VERIFY_RETRY;
        if next > deadline {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = shutdown.cancelled() => break,
        }
    }
    last.unwrap_or_else(|| bail!("verification was interrupted before the collector was asked"))
}

fn points_url(base: &Url, device_id: &str, name: &str, from: f64, to: f64) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty()
            .extend(["v1", "devices", device_id, "points"]);
    }
    url.query_pairs_mut()
        .clear()
        .append_pair("name", name)
        .append_pair("from", &from.to_string())
        .append_pair("to", &to.to_string())
        .append_pair("limit", &LIMIT.to_string());
    url
}

/// The points of one query; `Ok(None)` when the collector does not know the device.
async fn fetch_points(
    client: &reqwest::Client,
    url: Url,
) -> anyhow::Result<Option<Vec<StoredPoint>>> {
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let body = response
        .bytes()
        .await
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("GET {url}: reading the body"))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        bail!("GET {url}: {status}: {text}");
    }
    let page: PointsPage =
        serde_json::from_slice(&body).with_context(|| format!("GET {url}: not a points page"))?;
    if page.points.len() >= LIMIT {
        bail!(
            "GET {url}: {LIMIT} points, the most one query returns; the check would be incomplete"
        );
    }
    Ok(Some(page.points))
}

/// Matches the readings of one series (sorted by time) against its stored points.
pub(crate) fn compare(
    readings: &[&Reading],
    mut points: Vec<StoredPoint>,
    report: &mut VerifyReport,
) {
    points.sort_by(|a, b| a.time.total_cmp(&b.time));
    let mut next = 0;
    for reading in readings {
        report.expected += 1;
        while next < points.len() && points[next].time < reading.time - TIME_TOLERANCE {
            report.unexpected += 1;
            next += 1;
        }
        let first = next;
        while next < points.len() && points[next].time <= reading.time + TIME_TOLERANCE {
            next += 1;
        }
        let matched = &points[first..next];
        let key = || ReadingKey {
            device_id: reading.device_id.clone(),
            name: reading.name.clone(),
            time: reading.time,
        };
        if matched.is_empty() {
            report.missing.push(key());
            continue;
        }
        report.found += 1;
        if matched.len() > 1 {
            report.duplicates.push(Duplicate {
                key: key(),
                copies: matched.len(),
            });
        }
        if let Some(bad) = matched.iter().find(|p| !same_reading(reading, p)) {
            report.wrong_value.push(WrongValue {
                key: key(),
                expected: reading.value.clone(),
                expected_unit: reading.unit.clone(),
                found: format!("{} ({}) unit {:?}", bad.value, bad.kind, bad.unit),
            });
        }
    }
    report.unexpected += (points.len() - next) as u64;
}

fn same_reading(reading: &Reading, point: &StoredPoint) -> bool {
    let (value_ok, kind) = match (&reading.value, &point.value) {
        (Value::Float(sent), serde_json::Value::Number(stored)) => (
            stored.as_f64().is_some_and(|stored| close(*sent, stored)),
            "float",
        ),
        (Value::Bool(sent), serde_json::Value::Bool(stored)) => (sent == stored, "bool"),
        (Value::String(sent), serde_json::Value::String(stored)) => (sent == stored, "string"),
        // The API's rendering of bytes is not pinned down; the type must match.
        (Value::Bytes(_), _) => (true, "bytes"),
        _ => (false, ""),
    };
    value_ok && (point.kind.is_empty() || point.kind == kind) && point.unit == reading.unit
}

/// Equal up to a relative 1e-9 (the store may round-trip through text).
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12_f64.max(1e-9 * a.abs().max(b.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reading(time: f64, value: Value) -> Reading {
        Reading {
            device_id: "sim-00000".into(),
            name: "temperature".into(),
            time,
            value,
            unit: Some("Cel".into()),
        }
    }

    fn point(time: f64, value: serde_json::Value, kind: &str, unit: Option<&str>) -> StoredPoint {
        StoredPoint {
            time,
            value,
            kind: kind.into(),
            unit: unit.map(str::to_owned),
        }
    }

    fn run(readings: &[Reading], points: Vec<StoredPoint>) -> VerifyReport {
        let refs: Vec<&Reading> = readings.iter().collect();
        let mut report = VerifyReport::default();
        compare(&refs, points, &mut report);
        report
    }

    fn three() -> Vec<Reading> {
        vec![
            reading(1000.001, Value::Float(21.5)),
            reading(1000.002, Value::Float(21.6)),
            reading(1000.010, Value::Float(21.7)),
        ]
    }

    #[test]
    fn all_present_within_tolerance() {
        let points = vec![
            point(1000.0012, json!(21.5), "float", Some("Cel")),
            point(1000.002, json!(21.6000000000001), "float", Some("Cel")),
            point(1000.0098, json!(21.7), "float", Some("Cel")),
        ];
        let report = run(&three(), points);
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(
            (report.expected, report.found, report.unexpected),
            (3, 3, 0)
        );
    }

    #[test]
    fn missing_duplicate_wrong_and_unexpected() {
        let points = vec![
            point(999.0, json!(1.0), "float", Some("Cel")),
            point(1000.001, json!(21.5), "float", Some("Cel")),
            point(1000.001, json!(21.5), "float", Some("Cel")),
            point(1000.010, json!(22.7), "float", Some("Cel")),
            point(1000.5, json!(1.0), "float", Some("Cel")),
        ];
        let report = run(&three(), points);
        assert_eq!(report.expected, 3);
        assert_eq!(report.found, 2);
        assert_eq!(report.missing.len(), 1);
        assert_eq!(report.missing[0].time, 1000.002);
        assert_eq!(report.duplicates.len(), 1);
        assert_eq!(report.duplicates[0].copies, 2);
        assert_eq!(report.wrong_value.len(), 1);
        assert_eq!(report.wrong_value[0].key.time, 1000.010);
        assert_eq!(report.unexpected, 2);
        assert!(!report.is_ok());
    }

    #[test]
    fn types_and_units_must_match() {
        let door = Reading {
            name: "door".into(),
            unit: None,
            ..reading(5.0, Value::Bool(true))
        };
        assert!(same_reading(&door, &point(5.0, json!(true), "bool", None)));
        assert!(!same_reading(
            &door,
            &point(5.0, json!(false), "bool", None)
        ));
        assert!(!same_reading(&door, &point(5.0, json!(1.0), "float", None)));
        assert!(!same_reading(
            &door,
            &point(5.0, json!(true), "bool", Some("V"))
        ));
        let temp = reading(5.0, Value::Float(21.5));
        assert!(!same_reading(
            &temp,
            &point(5.0, json!(21.5), "float", Some("K"))
        ));
        assert!(!same_reading(
            &temp,
            &point(5.0, json!(21.5), "string", Some("Cel"))
        ));
        assert!(same_reading(
            &temp,
            &point(5.0, json!(21.5), "", Some("Cel"))
        ));
    }

    #[test]
    fn query_url_shape() {
        let base = Url::parse("http://127.0.0.1:8480/").unwrap();
        let url = points_url(&base, "sim-00001", "temperature", 1.5, 3.25);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8480/v1/devices/sim-00001/points?name=temperature&from=1.5&to=3.25&limit=100000"
        );
        let prefixed = Url::parse("http://collector/api").unwrap();
        let url = points_url(&prefixed, "d", "n", 0.0, 1.0);
        assert!(url
            .as_str()
            .starts_with("http://collector/api/v1/devices/d/points?"));
    }

    #[test]
    fn report_prints_a_verdict() {
        let report = run(&three(), vec![]);
        let mut out = Vec::new();
        report.print(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("expected 3, found 0, missing 3,"),
            "{text}"
        );
        assert!(text.contains("sim-00000 temperature t=1000.002"), "{text}");
        assert!(text.ends_with("verdict: FAILED\n"), "{text}");
    }
}

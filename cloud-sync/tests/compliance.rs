//! Erasure, retention and the audit log over real sockets (127.0.0.1:0):
//! `DELETE /v1/devices/{id}` needs an admin token, query reads leave audit
//! lines naming the token id, device and window (never the token or the
//! data), and the retention task runs at start, then logs, counts and
//! audits what it removed. The storage side of both is in
//! `tests/suite/removal.rs`, on every backend.

mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloud_sync::config::Retention;
use cloud_sync::tokens::{Role, TokenFile};
use cloud_sync::Config;
use reqwest::StatusCode;
use telemetry::{encode_batch, SyncBatch};
use util::*;

/// A config with a token file and an audit log in `dir`; reads need a token.
/// Batches go in with the plain test token.
fn audited_config(dir: &Path) -> (Config, TokenFile) {
    let mut config = config(&dir.join("data"));
    config.token_file = Some(dir.join("tokens"));
    config.require_read_token = true;
    config.audit_file = Some(dir.join("audit.log"));
    (config, TokenFile::load(&dir.join("tokens")).unwrap())
}

async fn post(client: &reqwest::Client, server: &TestServer, batch: &SyncBatch) {
    let response = client
        .post(server.url("/v1/batches"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/cbor")
        .body(encode_batch(batch))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn delete(
    client: &reqwest::Client,
    server: &TestServer,
    device: &str,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut request = client.delete(server.url(&format!("/v1/devices/{device}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, json_of(response).await)
}

async fn json_of(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn audit_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn delete_needs_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let (config, tokens) = audited_config(dir.path());
    let server = TestServer::start(config).await;
    let client = reqwest::Client::new();
    let (_, read) = tokens.add(Role::Read).unwrap();
    let (_, ingest) = tokens
        .add(Role::Ingest {
            gateway_id: "gw".into(),
        })
        .unwrap();
    let (admin_info, admin) = tokens.add(Role::Admin).unwrap();
    post(
        &client,
        &server,
        &batch(
            "gw",
            SPOOL_A,
            vec![float_envelope(1, "dev-1", "t", 1.7e9, 1.0)],
        ),
    )
    .await;

    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("cst_not-a-token"), StatusCode::UNAUTHORIZED),
        (Some(read.as_str()), StatusCode::FORBIDDEN),
        (Some(ingest.as_str()), StatusCode::FORBIDDEN),
        (Some(TOKEN), StatusCode::FORBIDDEN),
    ] {
        let (got, body) = delete(&client, &server, "dev-1", token).await;
        assert_eq!(got, status, "{token:?}: {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    // Nothing was erased by the refused requests.
    let devices = json_of(
        client
            .get(server.url("/v1/devices"))
            .bearer_auth(&read)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(devices["devices"][0]["points"], 1);

    let (status, body) = delete(&client, &server, "dev-1", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["points"], 1);
    let (status, _) = delete(&client, &server, "bad%2Fid", Some(&admin)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "cloud_sync_requests_refused_total{endpoint=\"admin\",reason=\"unauthorized\"} 2",
        "cloud_sync_requests_refused_total{endpoint=\"admin\",reason=\"forbidden\"} 3",
        "cloud_sync_erasures_total 1",
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
    server.stop().await;

    let erasures: Vec<_> = audit_lines(dir.path())
        .into_iter()
        .filter(|l| l["action"] == "device.erase")
        .collect();
    assert_eq!(erasures.len(), 1);
    assert_eq!(erasures[0]["actor"], admin_info.id);
    assert_eq!(erasures[0]["details"]["device"], "dev-1");
}

#[tokio::test]
async fn reads_are_audited_with_token_id_device_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let (config, tokens) = audited_config(dir.path());
    let server = TestServer::start(config).await;
    let client = reqwest::Client::new();
    let (read_info, read) = tokens.add(Role::Read).unwrap();
    post(
        &client,
        &server,
        &batch(
            "gw",
            SPOOL_A,
            vec![float_envelope(1, "dev-1", "temp", 1.7e9, 21.5)],
        ),
    )
    .await;
    for path in [
        "/v1/devices",
        "/v1/devices/dev-1/points?name=temp&from=1699999000&to=1700001000",
        "/v1/devices/dev-1/aggregates?name=temp&step=60",
        "/v1/devices/nobody/documents",
    ] {
        client
            .get(server.url(path))
            .bearer_auth(&read)
            .send()
            .await
            .unwrap();
    }
    // A refused read is not a read of data: no line.
    client.get(server.url("/v1/gateways")).send().await.unwrap();
    server.stop().await;

    let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert!(!text.contains(&read), "a token in the audit log");
    assert!(!text.contains("21.5"), "a value in the audit log");
    let reads: Vec<_> = audit_lines(dir.path())
        .into_iter()
        .filter(|l| l["action"] == "data.read")
        .collect();
    assert_eq!(reads.len(), 4, "{text}");
    assert!(reads.iter().all(|l| l["actor"] == read_info.id.as_str()));
    assert_eq!(reads[0]["details"]["route"], "/v1/devices");
    assert_eq!(reads[0]["details"].get("device"), None);
    let points = &reads[1]["details"];
    assert_eq!(points["route"], "/v1/devices/{id}/points");
    assert_eq!(points["device"], "dev-1");
    assert_eq!(points["name"], "temp");
    assert_eq!(points["from"], "1699999000");
    assert_eq!(points["to"], "1700001000");
    assert_eq!(points["status"], 200);
    assert_eq!(reads[2]["details"]["step"], "60");
    assert_eq!(reads[3]["details"]["device"], "nobody");
    assert_eq!(reads[3]["details"]["status"], 404);
}

#[tokio::test]
async fn the_retention_task_runs_at_start_and_reports_what_it_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, tokens) = audited_config(dir.path());
    let (_, read) = tokens.add(Role::Read).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // Readings of 10 and 3 days ago, and of now.
    let day = 86_400.0;
    {
        let server = TestServer::start(config.clone()).await;
        let client = reqwest::Client::new();
        let mut envelopes = Vec::new();
        for (i, device) in ["fleet", "short", "forever"].into_iter().enumerate() {
            for (j, age) in [10.0 * day, 3.0 * day, 0.0].into_iter().enumerate() {
                let seq = (10 * i + j + 1) as u64;
                envelopes.push(float_envelope(seq, device, "t", now - age, 1.0));
            }
        }
        post(&client, &server, &batch("gw", SPOOL_A, envelopes)).await;
        server.stop().await;
    }
    config.retention = Some(Retention {
        default: Some(Duration::from_secs(7 * 86_400)),
        devices: BTreeMap::from([
            ("short".to_owned(), Some(Duration::from_secs(86_400))),
            ("forever".to_owned(), None),
        ]),
        interval: Duration::from_secs(3600),
    });
    let server = TestServer::start(config).await;
    let client = reqwest::Client::new();
    // The first run starts with the server; wait for its count.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("cloud_sync_retention_runs_total{result=\"ok\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metrics.contains("cloud_sync_removed_total{reason=\"retention\",kind=\"points\"} 3"),
        "{metrics}"
    );
    let points = |device: &'static str| {
        let (client, url, read) = (
            client.clone(),
            server.url(&format!("/v1/devices/{device}/points?name=t")),
            read.clone(),
        );
        async move {
            let json = json_of(client.get(url).bearer_auth(read).send().await.unwrap()).await;
            json["points"].as_array().unwrap().len()
        }
    };
    assert_eq!(points("fleet").await, 2);
    assert_eq!(points("short").await, 1);
    assert_eq!(points("forever").await, 3);
    server.stop().await;

    let runs: Vec<_> = audit_lines(dir.path())
        .into_iter()
        .filter(|l| l["action"] == "retention.run")
        .collect();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["actor"], "system");
    let details = &runs[0]["details"];
    assert_eq!(
        (
            &details["result"],
            &details["points"],
            &details["devices"],
            &details["default"]
        ),
        (
            &serde_json::json!("ok"),
            &serde_json::json!(3),
            &serde_json::json!(2),
            &serde_json::json!("7days")
        )
    );
    assert_eq!(
        cloud_sync::audit::verify_file(&dir.path().join("audit.log"))
            .unwrap()
            .seq as usize,
        audit_lines(dir.path()).len()
    );
}

//! Tokens, roles, the per-gateway rate limit and HTTPS, over real sockets
//! (127.0.0.1:0) with reqwest: the hashed token file changed under a
//! running collector, gateway binding, read tokens, 429 with Retry-After,
//! the refusal metrics, and the collector behind TLS.

mod util;

use std::path::Path;
use std::time::Duration;

use cloud_sync::config::RateLimit;
use cloud_sync::tokens::{Role, TokenFile};
use cloud_sync::Config;
use reqwest::StatusCode;
use telemetry::{encode_batch, SyncBatch};
use util::*;

fn one(gateway_id: &str, seq: u64) -> SyncBatch {
    batch(
        gateway_id,
        SPOOL_A,
        vec![float_envelope(
            seq,
            "dev-1",
            "temp",
            1_700_000_000.0 + seq as f64,
            1.0,
        )],
    )
}

fn ingest(gateway_id: &str) -> Role {
    Role::Ingest {
        gateway_id: gateway_id.into(),
    }
}

/// A collector config with a token file in `dir` (reads then need a token)
/// and no plain tokens.
fn file_config(dir: &Path) -> (Config, TokenFile) {
    let path = dir.join("tokens");
    let mut config = config(&dir.join("data"));
    config.tokens.clear();
    config.token_file = Some(path.clone());
    config.require_read_token = true;
    (config, TokenFile::load(&path).unwrap())
}

async fn post(
    client: &reqwest::Client,
    url: String,
    batch: &SyncBatch,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = client
        .post(url)
        .header("content-type", "application/cbor")
        .body(encode_batch(batch));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn get(client: &reqwest::Client, url: String, token: Option<&str>) -> StatusCode {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status()
}

async fn json_of(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

async fn error_code(response: reqwest::Response) -> String {
    let json = json_of(response).await;
    json["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_token_added_or_revoked_while_running_takes_effect_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (config, tokens) = file_config(dir.path());
    let server = TestServer::start(config).await;
    let client = reqwest::Client::new();
    let url = || server.url("/v1/batches");

    // Added after the collector started.
    let (info, token) = tokens.add(ingest("gw-a")).unwrap();
    let response = post(&client, url(), &one("gw-a", 1), Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Revoked by another handle on the file (as the CLI does): refused at once.
    TokenFile::load(&dir.path().join("tokens"))
        .unwrap()
        .revoke(&info.id)
        .unwrap();
    let response = post(&client, url(), &one("gw-a", 2), Some(&token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers().get("www-authenticate").unwrap(),
        "Bearer"
    );
    assert_eq!(error_code(response).await, "unauthorized");

    // No token at all.
    let response = post(&client, url(), &one("gw-a", 2), None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn a_gateway_token_cannot_post_another_gateway_s_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (config, tokens) = file_config(dir.path());
    let server = TestServer::start(config).await;
    let client = reqwest::Client::new();
    let (_, gw_a) = tokens.add(ingest("gw-a")).unwrap();
    let (_, read) = tokens.add(Role::Read).unwrap();
    let (_, admin) = tokens.add(Role::Admin).unwrap();

    let response = post(
        &client,
        server.url("/v1/batches"),
        &one("gw-b", 1),
        Some(&gw_a),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let json = json_of(response).await;
    assert_eq!(json["error"]["code"], "forbidden");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("gw-a") && message.contains("gw-b"),
        "{message}"
    );

    // A read token cannot post; an admin token may post for any gateway.
    let response = post(
        &client,
        server.url("/v1/batches"),
        &one("gw-b", 1),
        Some(&read),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = post(
        &client,
        server.url("/v1/batches"),
        &one("gw-b", 1),
        Some(&admin),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    // Nothing of gw-a's refused batch was stored.
    let gateways = json_of(
        client
            .get(server.url("/v1/gateways"))
            .bearer_auth(&read)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: Vec<&str> = gateways["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["gateway_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["gw-b"], "{gateways}");
    server.stop().await;
}

#[tokio::test]
async fn reads_need_a_read_token_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let (config, tokens) = file_config(dir.path());
    let server = TestServer::start(config).await;
    let client = reqwest::Client::new();
    let (_, gw) = tokens.add(ingest("gw-a")).unwrap();
    let (_, read) = tokens.add(Role::Read).unwrap();
    let (_, admin) = tokens.add(Role::Admin).unwrap();
    assert_eq!(
        post(
            &client,
            server.url("/v1/batches"),
            &one("gw-a", 1),
            Some(&gw)
        )
        .await
        .status(),
        StatusCode::OK
    );
    for path in [
        "/v1/devices",
        "/v1/gateways",
        "/v1/devices/dev-1/points?name=temp",
        "/v1/devices/dev-1/aggregates?name=temp&step=60",
        "/v1/devices/dev-1/documents",
    ] {
        let url = || server.url(path);
        assert_eq!(
            get(&client, url(), None).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            get(&client, url(), Some("cst_wrong")).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            get(&client, url(), Some(&gw)).await,
            StatusCode::FORBIDDEN,
            "{path}"
        );
        assert_eq!(
            get(&client, url(), Some(&read)).await,
            StatusCode::OK,
            "{path}"
        );
        assert_eq!(
            get(&client, url(), Some(&admin)).await,
            StatusCode::OK,
            "{path}"
        );
    }
    // The page, its scripts and the operational endpoints stay public.
    for path in ["/", "/assets/app.js", "/healthz", "/metrics"] {
        assert_eq!(
            get(&client, server.url(path), None).await,
            StatusCode::OK,
            "{path}"
        );
    }
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "cloud_sync_requests_refused_total{endpoint=\"query\",reason=\"unauthorized\"} 10",
        "cloud_sync_requests_refused_total{endpoint=\"query\",reason=\"forbidden\"} 5",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    server.stop().await;
}

#[tokio::test]
async fn reads_stay_open_with_plain_tokens_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let client = reqwest::Client::new();
    assert_eq!(
        get(&client, server.url("/v1/devices"), None).await,
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test]
async fn past_its_rate_a_gateway_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, tokens) = file_config(dir.path());
    config.tokens = vec![TOKEN.to_string()];
    // One batch every 4 s, two at once.
    config.ingest_rate_limit = Some(RateLimit {
        per_second: 0.25,
        burst: 2,
    });
    let server = TestServer::start(config).await;
    let client = reqwest::Client::new();
    let (_, gw_a) = tokens.add(ingest("gw-a")).unwrap();
    let url = || server.url("/v1/batches");
    for seq in 1..=2 {
        let response = post(&client, url(), &one("gw-a", seq), Some(&gw_a)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = post(&client, url(), &one("gw-a", 3), Some(&gw_a)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=4).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(response).await, "too_many_requests");

    // Another gateway has its own bucket, also through a plain token that
    // may post for any gateway (limited by the batch's gateway id).
    for seq in 1..=2 {
        let response = post(&client, url(), &one("gw-b", seq), Some(TOKEN)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = post(&client, url(), &one("gw-b", 3), Some(TOKEN)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "cloud_sync_requests_refused_total{endpoint=\"ingest\",reason=\"too_many_requests\"} 2",
        "cloud_sync_batches_total{status=\"too_many_requests\"} 2",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    server.stop().await;
}

#[tokio::test]
async fn refusals_by_reason_are_counted_for_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let (config, tokens) = file_config(dir.path());
    let server = TestServer::start(config).await;
    let client = reqwest::Client::new();
    let (_, gw_a) = tokens.add(ingest("gw-a")).unwrap();
    post(
        &client,
        server.url("/v1/batches"),
        &one("gw-a", 1),
        Some("cst_nope"),
    )
    .await;
    post(
        &client,
        server.url("/v1/batches"),
        &one("gw-b", 1),
        Some(&gw_a),
    )
    .await;
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "cloud_sync_requests_refused_total{endpoint=\"ingest\",reason=\"unauthorized\"} 1",
        "cloud_sync_requests_refused_total{endpoint=\"ingest\",reason=\"forbidden\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_collector_serves_https_with_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::pki(dir.path());
    let mut config = config(&dir.path().join("data"));
    config.tls = Some(cloud_sync::config::TlsFiles::new(
        pki.cert_file.clone(),
        pki.key_file.clone(),
    ));
    let server = TestServer::start(config).await;

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = post(
        &trusting,
        server.https_url("/v1/batches"),
        &one("gw-tls", 1),
        Some(TOKEN),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let health = trusting
        .get(server.https_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // Without the CA the handshake fails; plain HTTP on the TLS port gets
    // no answer; neither disturbs the next client.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let err = untrusting
        .get(server.https_url("/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(reqwest::get(server.url("/healthz")).await.is_err());
    let health = trusting
        .get(server.https_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn bad_tls_files_fail_bind_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::pki(dir.path());
    for (cert, key, expected) in [
        (
            dir.path().join("missing.pem"),
            pki.key_file.clone(),
            "server.tls_cert",
        ),
        (
            pki.cert_file.clone(),
            pki.cert_file.clone(),
            "server.tls_key",
        ),
        (
            pki.key_file.clone(),
            pki.key_file.clone(),
            "server.tls_cert",
        ),
    ] {
        let mut config = config(&dir.path().join("data"));
        config.tls = Some(cloud_sync::config::TlsFiles::new(cert, key));
        let err = cloud_sync::Server::bind(config).await.unwrap_err();
        assert!(format!("{err:#}").contains(expected), "{err:#}");
    }
}

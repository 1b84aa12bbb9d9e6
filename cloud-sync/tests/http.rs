//! The collector over a real socket (127.0.0.1:0) with reqwest: compressed
//! bodies, the decompression bound, authentication, binding and shutdown.

mod util;

use std::io::{Read, Write};

use reqwest::StatusCode;
use telemetry::{encode_batch, BatchResponse, SyncBatch};
use util::*;

fn sample(envelopes: u64) -> SyncBatch {
    batch(
        "gw-http",
        SPOOL_A,
        (1..=envelopes)
            .map(|seq| {
                float_envelope(
                    seq,
                    "dev-1",
                    "temp",
                    1_700_000_000.0 + seq as f64,
                    seq as f64,
                )
            })
            .collect(),
    )
}

async fn post(
    server: &TestServer,
    body: Vec<u8>,
    encoding: Option<&str>,
    token: &str,
) -> (StatusCode, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(server.url("/v1/batches"))
        .bearer_auth(token)
        .header("content-type", "application/cbor")
        .body(body);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn response(json: &serde_json::Value) -> BatchResponse {
    serde_json::from_value(json.clone()).unwrap()
}

#[tokio::test]
async fn zstd_and_gzip_bodies_are_decompressed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let body = encode_batch(&sample(20));
    let zstd_body = zstd::encode_all(body.as_slice(), 3).unwrap();
    let (status, json) = post(&server, zstd_body, Some("zstd"), TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        response(&json),
        BatchResponse {
            accepted: 20,
            duplicates: 0
        }
    );
    let (status, json) = post(&server, gzip(&body), Some("gzip"), TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        response(&json),
        BatchResponse {
            accepted: 0,
            duplicates: 20
        }
    );
    let (status, json) = post(&server, body, None, TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        response(&json),
        BatchResponse {
            accepted: 0,
            duplicates: 20
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn a_zstd_bomb_is_refused_with_413() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.max_body_bytes = 1024 * 1024;
    let server = TestServer::start(config).await;
    // 64 MiB of zeros compress to a few KiB.
    let bomb = zstd::encode_all(std::io::repeat(0).take(64 << 20), 3).unwrap();
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let (status, json) = post(&server, bomb, Some("zstd"), TOKEN).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    assert_eq!(json["error"]["code"], "payload_too_large");
    // An uncompressed body over the limit too.
    let (status, _) = post(&server, vec![0u8; 2 << 20], None, TOKEN).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Garbage that claims to be zstd.
    let (status, json) = post(&server, b"not zstd at all".to_vec(), Some("zstd"), TOKEN).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    // The collector still works.
    let (status, _) = post(&server, encode_batch(&sample(1)), None, TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_with_413() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.max_body_bytes = 1024 * 1024;
    let server = TestServer::start(config).await;
    // 64 MiB of zeros deflate to about 64 KiB.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::copy(&mut std::io::repeat(0).take(64 << 20), &mut encoder).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
    let (status, json) = post(&server, bomb, Some("gzip"), TOKEN).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    assert_eq!(json["error"]["code"], "payload_too_large");
    let (status, _) = post(&server, encode_batch(&sample(1)), None, TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn compressed_input_that_inflates_to_nothing_is_bounded_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.max_body_bytes = 64 * 1024;
    let server = TestServer::start(config).await;
    // zstd skippable frames (RFC 8878 §3.1.2) decompress to nothing: 1 MiB
    // of them would stream through the decompressor without ever reaching
    // the limit on decompressed bytes.
    let mut frames = Vec::new();
    while frames.len() < 1 << 20 {
        frames.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        frames.extend_from_slice(&4088u32.to_le_bytes());
        frames.extend(std::iter::repeat_n(0u8, 4088));
    }
    let (status, json) = post(&server, frames, Some("zstd"), TOKEN).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    assert_eq!(json["error"]["code"], "payload_too_large");
    server.stop().await;
}

#[tokio::test]
async fn malformed_batches_get_clear_400s() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut bad_spool = sample(1);
    bad_spool.spool_id = "xyz".into();
    let mut bad_gateway = sample(1);
    bad_gateway.gateway_id = "gw/../x".into();
    let mut out_of_order = sample(3);
    out_of_order.envelopes.swap(1, 2);
    let mut foreign_topic = sample(2);
    foreign_topic.envelopes[1].topic = "devices/dev-2/telemetry".into();
    // `received_at` as text: the message names the field's path.
    let wrong_type = {
        let mut doc: serde_cbor::Value = serde_cbor::from_slice(&encode_batch(&sample(2))).unwrap();
        let serde_cbor::Value::Map(fields) = &mut doc else {
            unreachable!("a batch is a map")
        };
        let Some(serde_cbor::Value::Array(envelopes)) =
            fields.get_mut(&serde_cbor::Value::Text("envelopes".into()))
        else {
            unreachable!("envelopes is an array")
        };
        let serde_cbor::Value::Map(second) = &mut envelopes[1] else {
            unreachable!("an envelope is a map")
        };
        second.insert(
            serde_cbor::Value::Text("received_at".into()),
            serde_cbor::Value::Text("yesterday".into()),
        );
        serde_cbor::to_vec(&doc).unwrap()
    };
    for (body, expected) in [
        (b"\xa1\x61".to_vec(), "batch"),
        (encode_batch(&bad_spool), "spool_id"),
        (encode_batch(&bad_gateway), "gateway"),
        (encode_batch(&out_of_order), "envelope 2: seq 2 must be"),
        (encode_batch(&foreign_topic), "envelope 1 (seq 2): topic"),
        (wrong_type, "envelopes[1].received_at: invalid type: string"),
    ] {
        let (status, json) = post(&server, body, None, TOKEN).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
        assert_eq!(json["error"]["code"], "bad_request");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{expected}: {message}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_401_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let (status, json) = post(&server, encode_batch(&sample(1)), None, "nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["error"]["code"], "unauthorized");
    server.stop().await;
}

#[tokio::test]
async fn health_and_metrics_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok");
    post(&server, encode_batch(&sample(2)), None, TOKEN).await;
    for _ in 0..2 {
        reqwest::get(server.url("/v1/devices")).await.unwrap();
    }
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cloud_sync_envelopes_total{result=\"accepted\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cloud_sync_query_duration_seconds_count{route=\"/v1/devices\"} 2"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let other = tempfile::tempdir().unwrap();
    let mut taken = config(other.path());
    taken.listen = server.addr;
    let err = cloud_sync::Server::bind(taken).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!("cannot listen on {}", server.addr)),
        "{message}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_empty_token_list_is_refused_at_bind() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.tokens.clear();
    let err = cloud_sync::Server::bind(config).await.unwrap_err();
    assert!(format!("{err:#}").contains("auth.tokens"), "{err:#}");
}

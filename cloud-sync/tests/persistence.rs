//! A store reopened from disk still holds everything, and keeps deduplicating.

mod util;

use serde_json::json;
use util::*;

#[tokio::test]
async fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(
        "gw",
        SPOOL_A,
        vec![
            float_envelope(1, "dev-1", "temp", 1_700_000_001.5, 20.25),
            float_envelope(2, "dev-1", "temp", 1_700_000_002.5, 21.0),
            envelope(3, "dev-2", vec![0xff]),
        ],
    );
    let before = {
        let server = TestServer::start(config(dir.path())).await;
        let client = reqwest::Client::new();
        let response = client
            .post(server.url("/v1/batches"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/cbor")
            .body(telemetry::encode_batch(&b))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let points: serde_json::Value = serde_json::from_slice(
            &client
                .get(server.url("/v1/devices/dev-1/points?name=temp"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        server.stop().await;
        points
    };

    // Reopen the same directory in a fresh state.
    let (router, _) = app(dir.path()).await;
    assert_eq!(
        get_ok(&router, "/v1/devices/dev-1/points?name=temp").await,
        before
    );
    assert_eq!(
        before["points"],
        json!([
            {"time": 1_700_000_001.5, "value": 20.25, "type": "float", "unit": "Cel"},
            {"time": 1_700_000_002.5, "value": 21.0, "type": "float", "unit": "Cel"},
        ])
    );
    let devices = get_ok(&router, "/v1/devices").await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2);
    let docs = get_ok(&router, "/v1/devices/dev-2/documents").await;
    assert_eq!(docs["documents"][0]["kind"], "invalid");
    let gateways = get_ok(&router, "/v1/gateways").await;
    assert_eq!(gateways["gateways"][0]["accepted"], 3);
    // The retry the gateway sends after the restart is recognised.
    assert_eq!(post_batch(&router, &b).await, (0, 3));
}

#[tokio::test]
async fn a_dropped_state_releases_the_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (router, _) = app(dir.path()).await;
        post_batch(
            &router,
            &batch("gw", SPOOL_A, vec![float_envelope(1, "d", "t", 1.7e9, 1.0)]),
        )
        .await;
    }
    let (router, _) = app(dir.path()).await;
    let points = get_ok(&router, "/v1/devices/d/points?name=t").await;
    assert_eq!(points["points"].as_array().unwrap().len(), 1);
}

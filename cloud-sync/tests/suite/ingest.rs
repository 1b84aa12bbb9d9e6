//! `POST /v1/batches` through `Router::oneshot`: authentication, validation,
//! idempotence by `(gateway_id, spool_id, seq)` and by point identity.

use axum::http::StatusCode;
use telemetry::{encode_batch, Value};

use crate::util::backend::TestStore;
use crate::util::*;

pub async fn a_batch_is_accepted_and_its_points_stored(t: TestStore) {
    let (router, _) = t.app();
    let b = batch(
        "gw-1",
        SPOOL_A,
        vec![
            float_envelope(1, "dev-1", "temp", 1_700_000_001.0, 20.5),
            float_envelope(2, "dev-1", "temp", 1_700_000_002.0, 21.0),
            float_envelope(3, "dev-2", "hum", 1_700_000_003.0, 40.0),
        ],
    );
    assert_eq!(post_batch(&router, &b).await, (3, 0));
    let devices = get_ok(&router, "/v1/devices").await;
    let devices = devices["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0]["device_id"], "dev-1");
    assert_eq!(devices[0]["gateway_id"], "gw-1");
    assert_eq!(devices[0]["points"], 2);
    assert_eq!(devices[0]["measurements"], serde_json::json!(["temp"]));
    assert_eq!(devices[0]["last_seen"], (RECEIVED_AT + 2) as f64 / 1000.0);
    assert_eq!(devices[1]["device_id"], "dev-2");
}

pub async fn the_same_batch_twice_answers_all_duplicates(t: TestStore) {
    let (router, _) = t.app();
    let b = batch(
        "gw-1",
        SPOOL_A,
        (1..=5)
            .map(|seq| float_envelope(seq, "dev-1", "temp", 1_700_000_000.0 + seq as f64, 1.0))
            .collect(),
    );
    assert_eq!(post_batch(&router, &b).await, (5, 0));
    assert_eq!(post_batch(&router, &b).await, (0, 5));
    let points = get_ok(&router, "/v1/devices/dev-1/points?name=temp").await;
    assert_eq!(points["points"].as_array().unwrap().len(), 5);
    let gateways = get_ok(&router, "/v1/gateways").await;
    let gw = &gateways["gateways"][0];
    assert_eq!(gw["batches"], 2);
    assert_eq!(gw["accepted"], 5);
    assert_eq!(gw["duplicates"], 5);
}

pub async fn overlapping_batches_count_only_the_new_envelopes(t: TestStore) {
    let (router, _) = t.app();
    let envelopes = |range: std::ops::RangeInclusive<u64>| {
        range
            .map(|seq| {
                float_envelope(
                    seq,
                    "dev-1",
                    "temp",
                    1_700_000_000.0 + seq as f64,
                    seq as f64,
                )
            })
            .collect()
    };
    assert_eq!(
        post_batch(&router, &batch("gw", SPOOL_A, envelopes(1..=10))).await,
        (10, 0)
    );
    assert_eq!(
        post_batch(&router, &batch("gw", SPOOL_A, envelopes(6..=15))).await,
        (5, 5)
    );
    let points = get_ok(&router, "/v1/devices/dev-1/points?name=temp").await;
    let values: Vec<f64> = points["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, (1..=15).map(|v| v as f64).collect::<Vec<_>>());
}

pub async fn a_reading_resent_under_another_seq_is_stored_once(t: TestStore) {
    let (router, state) = t.app();
    // The device resent after a lost PUBACK: same name and time, new seq.
    let first = batch(
        "gw",
        SPOOL_A,
        vec![float_envelope(1, "dev-1", "temp", 1_700_000_000.0, 5.0)],
    );
    let resend = batch(
        "gw",
        SPOOL_A,
        vec![float_envelope(2, "dev-1", "temp", 1_700_000_000.0, 5.0)],
    );
    assert_eq!(post_batch(&router, &first).await, (1, 0));
    // A new envelope for the gateway, but no new point.
    assert_eq!(post_batch(&router, &resend).await, (1, 0));
    let points = get_ok(&router, "/v1/devices/dev-1/points?name=temp").await;
    assert_eq!(points["points"].as_array().unwrap().len(), 1);
    let device = get_ok(&router, "/v1/devices").await;
    assert_eq!(device["devices"][0]["points"], 1);
    let metrics = state.metrics().encode();
    assert!(metrics.contains("cloud_sync_points_total 1\n"), "{metrics}");
    assert!(
        metrics.contains("cloud_sync_duplicate_points_total 1\n"),
        "{metrics}"
    );
}

pub async fn a_new_spool_of_a_known_gateway_is_accepted(t: TestStore) {
    let (router, _) = t.app();
    let before = batch(
        "gw",
        SPOOL_A,
        vec![float_envelope(1, "dev-1", "temp", 1_700_000_001.0, 1.0)],
    );
    // Re-flashed gateway: seq starts again at 1 under a fresh spool id.
    let after = batch(
        "gw",
        SPOOL_B,
        vec![float_envelope(1, "dev-1", "temp", 1_700_000_002.0, 2.0)],
    );
    assert_eq!(post_batch(&router, &before).await, (1, 0));
    assert_eq!(post_batch(&router, &after).await, (1, 0));
    let points = get_ok(&router, "/v1/devices/dev-1/points?name=temp").await;
    assert_eq!(points["points"].as_array().unwrap().len(), 2);
    let gateways = get_ok(&router, "/v1/gateways").await;
    assert_eq!(gateways["gateways"][0]["spool_id"], SPOOL_B);
}

pub async fn concurrent_retries_of_one_batch_accept_each_envelope_once(t: TestStore) {
    let (router, _) = t.app();
    let b = batch(
        "gw",
        SPOOL_A,
        (1..=50)
            .map(|seq| float_envelope(seq, "dev-1", "temp", 1_700_000_000.0 + seq as f64, 1.0))
            .collect(),
    );
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let router = router.clone();
            let b = b.clone();
            tokio::spawn(async move { post_batch(&router, &b).await })
        })
        .collect();
    let mut accepted = 0;
    let mut duplicates = 0;
    for task in tasks {
        let (a, d) = task.await.unwrap();
        accepted += a;
        duplicates += d;
    }
    assert_eq!(accepted, 50);
    assert_eq!(duplicates, 7 * 50);
}

pub async fn a_missing_or_wrong_token_is_refused(t: TestStore) {
    let (router, state) = t.app();
    let body = encode_batch(&batch("gw", SPOOL_A, vec![]));
    for token in [None, Some("wrong"), Some("")] {
        let answer = post_raw(&router, body.clone(), token, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(answer.json["error"]["code"], "unauthorized");
    }
    assert_eq!(
        get_ok(&router, "/v1/gateways").await["gateways"],
        serde_json::json!([])
    );
    let metrics = state.metrics().encode();
    assert!(
        metrics.contains("cloud_sync_batches_total{status=\"unauthorized\"} 3"),
        "{metrics}"
    );
}

pub async fn malformed_cbor_is_a_bad_request_with_a_message(t: TestStore) {
    let (router, _) = t.app();
    let answer = post_raw(&router, b"\xa1\x61not a batch".to_vec(), Some(TOKEN), None).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json["error"]["code"], "bad_request");
    let message = answer.json["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("invalid sync batch"), "{message}");
}

pub async fn invalid_ids_are_bad_requests_naming_the_field(t: TestStore) {
    let (router, _) = t.app();
    let cases = [
        (batch("gw/1", SPOOL_A, vec![]), "gateway_id"),
        (batch("gw", "not-hex", vec![]), "spool_id"),
        (batch("gw", &"a".repeat(31), vec![]), "spool_id"),
        (
            batch(
                "gw",
                SPOOL_A,
                vec![float_envelope(1, "dev 1", "temp", 1.7e9, 1.0)],
            ),
            "device_id",
        ),
    ];
    for (b, field) in cases {
        let answer = post_raw(&router, encode_batch(&b), Some(TOKEN), None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{field}");
        let message = answer.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
    }
    // Nothing of a refused batch is stored.
    assert_eq!(
        get_ok(&router, "/v1/devices").await["devices"],
        serde_json::json!([])
    );
}

pub async fn other_media_are_refused(t: TestStore) {
    let (router, _) = t.app();
    let body = encode_batch(&batch("gw", SPOOL_A, vec![]));
    let answer = post_raw(&router, body.clone(), Some(TOKEN), Some("br")).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.json["error"]["code"], "unsupported_media_type");
    let answer = post_raw(&router, body, Some(TOKEN), Some("identity")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

pub async fn opaque_and_undecodable_payloads_are_kept_as_documents(t: TestStore) {
    let (router, state) = t.app();
    let opaque = serde_cbor::to_vec(&serde_cbor::Value::Text("firmware 1.2".into())).unwrap();
    let broken = vec![0x9f, 0x01]; // an indefinite array that never ends
    let b = batch(
        "gw",
        SPOOL_A,
        vec![
            envelope(1, "dev-1", opaque.clone()),
            envelope(2, "dev-1", broken.clone()),
            float_envelope(3, "dev-1", "temp", 1_700_000_000.0, 1.0),
        ],
    );
    assert_eq!(post_batch(&router, &b).await, (3, 0));
    assert_eq!(post_batch(&router, &b).await, (0, 3));
    let docs = get_ok(&router, "/v1/devices/dev-1/documents").await;
    let docs = docs["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["kind"], "opaque");
    assert_eq!(docs[0]["payload"], hex::encode(&opaque));
    assert_eq!(docs[0]["seq"], 1);
    assert_eq!(docs[0]["spool_id"], SPOOL_A);
    assert_eq!(docs[0]["topic"], "devices/dev-1/telemetry");
    assert_eq!(docs[1]["kind"], "invalid");
    assert_eq!(docs[1]["payload"], hex::encode(&broken));
    let device = &get_ok(&router, "/v1/devices").await["devices"][0];
    assert_eq!(device["documents"], 2);
    assert_eq!(device["points"], 1);
    let metrics = state.metrics().encode();
    assert!(
        metrics.contains("cloud_sync_documents_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cloud_sync_invalid_payloads_total 1\n"),
        "{metrics}"
    );
}

pub async fn a_sum_only_record_is_stored_as_its_sum(t: TestStore) {
    let (router, _) = t.app();
    let pack = senml(&[telemetry::senml::RawRecord {
        name: Some("energy".into()),
        unit: Some("J".into()),
        sum: Some(1234.5),
        time: Some(1_700_000_000.0),
        ..Default::default()
    }]);
    post_batch(
        &router,
        &batch("gw", SPOOL_A, vec![envelope(1, "meter", pack)]),
    )
    .await;
    let points = get_ok(&router, "/v1/devices/meter/points?name=energy").await;
    assert_eq!(
        points["points"],
        serde_json::json!([{"time": 1_700_000_000.0, "value": 1234.5, "type": "float", "unit": "J"}])
    );
}

pub async fn an_empty_batch_updates_the_gateway_backlog(t: TestStore) {
    let (router, _) = t.app();
    let mut b = batch("gw", SPOOL_A, vec![]);
    b.backlog = 1234;
    assert_eq!(post_batch(&router, &b).await, (0, 0));
    let gw = &get_ok(&router, "/v1/gateways").await["gateways"][0];
    assert_eq!(gw["backlog"], 1234);
    assert_eq!(gw["batches"], 1);
    assert!(gw["last_sync"].as_f64().unwrap() > 1.7e9);
}

pub async fn every_value_kind_round_trips(t: TestStore) {
    let (router, _) = t.app();
    let pack = senml(&[
        reading("door", 1_700_000_000.0, Value::Bool(true), None),
        reading("door", 1_700_000_001.0, Value::Bool(false), None),
        reading("state", 1_700_000_000.0, Value::String("idle".into()), None),
        reading("raw", 1_700_000_000.0, Value::Bytes(vec![0xde, 0xad]), None),
    ]);
    post_batch(&router, &batch("gw", SPOOL_A, vec![envelope(1, "d", pack)])).await;
    let door = get_ok(&router, "/v1/devices/d/points?name=door").await;
    assert_eq!(door["points"][0]["value"], true);
    assert_eq!(door["points"][0]["type"], "bool");
    assert_eq!(door["points"][0]["unit"], serde_json::Value::Null);
    assert_eq!(door["points"][1]["value"], false);
    let state = get_ok(&router, "/v1/devices/d/points?name=state").await;
    assert_eq!(state["points"][0]["value"], "idle");
    assert_eq!(state["points"][0]["type"], "string");
    let raw = get_ok(&router, "/v1/devices/d/points?name=raw").await;
    assert_eq!(raw["points"][0]["value"], "dead");
    assert_eq!(raw["points"][0]["type"], "bytes");
}

pub async fn a_string_with_nul_is_kept_as_a_document(t: TestStore) {
    let (router, _) = t.app();
    let pack = senml(&[
        reading("state", 1_700_000_000.0, Value::String("on\0".into()), None),
        reading("temp", 1_700_000_000.0, Value::Float(1.0), Some("C\0")),
    ]);
    let mut odd = envelope(1, "d", pack.clone());
    odd.topic = "devices/d/\0".into();
    post_batch(&router, &batch("gw", SPOOL_A, vec![odd])).await;
    let docs = get_ok(&router, "/v1/devices/d/documents").await;
    let doc = &docs["documents"][0];
    assert_eq!(doc["kind"], "invalid");
    assert_eq!(doc["payload"], hex::encode(&pack));
    assert_eq!(doc["topic"], "devices/d/\u{fffd}");
    assert!(doc["reason"].as_str().unwrap().contains("U+0000"), "{doc}");
}

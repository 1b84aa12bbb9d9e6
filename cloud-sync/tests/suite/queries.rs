//! The query API returns exactly what was ingested: values, units, times,
//! order, window bounds, and aggregates computed over a known series.

use axum::http::StatusCode;
use serde_json::json;
use telemetry::Value;

use crate::util::backend::TestStore;
use crate::util::*;

/// Start of the known series: a multiple of 60 s.
const T0: f64 = 1_700_000_040.0;

/// Ingests `temp` of `dev-1`: value i at T0 + 10 i seconds, i = 0..12, in two
/// batches sent out of order, plus a `door` series and another device.
async fn seeded(t: &TestStore) -> axum::Router {
    let (router, _) = t.app();
    let envelopes: Vec<_> = (0..12)
        .map(|i| float_envelope(i + 1, "dev-1", "temp", T0 + 10.0 * i as f64, i as f64))
        .collect();
    post_batch(&router, &batch("gw", SPOOL_A, envelopes[6..].to_vec())).await;
    post_batch(&router, &batch("gw", SPOOL_A, envelopes[..6].to_vec())).await;
    let door = senml(&[
        reading("door", T0, Value::Bool(true), None),
        reading("door", T0 + 1.0, Value::Bool(false), None),
        reading("door", T0 + 2.0, Value::Bool(true), None),
    ]);
    post_batch(
        &router,
        &batch(
            "gw",
            SPOOL_A,
            vec![
                envelope(100, "dev-1", door),
                float_envelope(101, "dev-1.b", "temp", T0, 99.0),
            ],
        ),
    )
    .await;
    router
}

fn times(points: &serde_json::Value) -> Vec<f64> {
    points["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["time"].as_f64().unwrap())
        .collect()
}

pub async fn points_come_back_in_time_order_with_values_and_units(t: TestStore) {
    let router = seeded(&t).await;
    let points = get_ok(&router, "/v1/devices/dev-1/points?name=temp").await;
    assert_eq!(points["device_id"], "dev-1");
    assert_eq!(points["name"], "temp");
    let expected: Vec<_> = (0..12)
        .map(|i| json!({"time": T0 + 10.0 * i as f64, "value": i as f64, "type": "float", "unit": "Cel"}))
        .collect();
    assert_eq!(points["points"], json!(expected));
}

pub async fn from_is_inclusive_and_to_exclusive(t: TestStore) {
    let router = seeded(&t).await;
    let uri = format!(
        "/v1/devices/dev-1/points?name=temp&from={}&to={}",
        T0 + 20.0,
        T0 + 50.0
    );
    let points = get_ok(&router, &uri).await;
    assert_eq!(times(&points), vec![T0 + 20.0, T0 + 30.0, T0 + 40.0]);
    let uri = format!("/v1/devices/dev-1/points?name=temp&from={}", T0 + 105.0);
    assert_eq!(times(&get_ok(&router, &uri).await), vec![T0 + 110.0]);
    let uri = format!("/v1/devices/dev-1/points?name=temp&to={}", T0 + 10.0);
    assert_eq!(times(&get_ok(&router, &uri).await), vec![T0]);
    let uri = format!("/v1/devices/dev-1/points?name=temp&from={T0}&to={T0}");
    assert_eq!(times(&get_ok(&router, &uri).await), Vec::<f64>::new());
    let uri = "/v1/devices/dev-1/points?name=temp&limit=3";
    assert_eq!(
        times(&get_ok(&router, uri).await),
        vec![T0, T0 + 10.0, T0 + 20.0]
    );
}

pub async fn series_do_not_leak_into_each_other(t: TestStore) {
    let router = seeded(&t).await;
    let other = get_ok(&router, "/v1/devices/dev-1.b/points?name=temp").await;
    assert_eq!(times(&other), vec![T0]);
    let door = get_ok(&router, "/v1/devices/dev-1/points?name=door").await;
    assert_eq!(door["points"].as_array().unwrap().len(), 3);
    let none = get_ok(&router, "/v1/devices/dev-1/points?name=tem").await;
    assert_eq!(none["points"], json!([]));
}

pub async fn aggregates_over_a_known_series(t: TestStore) {
    let router = seeded(&t).await;
    // T0 is a multiple of 60: buckets [T0, T0+60) hold 0..=5, [T0+60, T0+120) hold 6..=11.
    let agg = get_ok(&router, "/v1/devices/dev-1/aggregates?name=temp&step=60").await;
    assert_eq!(agg["step"], 60.0);
    assert_eq!(
        agg["buckets"],
        json!([
            {"start": T0, "count": 6, "min": 0.0, "max": 5.0, "avg": 2.5, "last": 5.0},
            {"start": T0 + 60.0, "count": 6, "min": 6.0, "max": 11.0, "avg": 8.5, "last": 11.0},
        ])
    );
    // A window cutting the first bucket, buckets still aligned to the epoch.
    let uri = format!(
        "/v1/devices/dev-1/aggregates?name=temp&step=60&from={}&to={}",
        T0 + 30.0,
        T0 + 70.0
    );
    let agg = get_ok(&router, &uri).await;
    assert_eq!(
        agg["buckets"],
        json!([
            {"start": T0, "count": 3, "min": 3.0, "max": 5.0, "avg": 4.0, "last": 5.0},
            {"start": T0 + 60.0, "count": 1, "min": 6.0, "max": 6.0, "avg": 6.0, "last": 6.0},
        ])
    );
    // Empty buckets are left out.
    let uri = format!(
        "/v1/devices/dev-1/aggregates?name=temp&step=5&to={}",
        T0 + 15.0
    );
    let agg = get_ok(&router, &uri).await;
    assert_eq!(
        agg["buckets"],
        json!([
            {"start": T0, "count": 1, "min": 0.0, "max": 0.0, "avg": 0.0, "last": 0.0},
            {"start": T0 + 10.0, "count": 1, "min": 1.0, "max": 1.0, "avg": 1.0, "last": 1.0},
        ])
    );
}

pub async fn bools_aggregate_as_zero_and_one(t: TestStore) {
    let router = seeded(&t).await;
    let agg = get_ok(&router, "/v1/devices/dev-1/aggregates?name=door&step=3600").await;
    let start = (T0 / 3600.0).floor() * 3600.0;
    assert_eq!(
        agg["buckets"],
        json!([{"start": start, "count": 3, "min": 0.0, "max": 1.0, "avg": 2.0 / 3.0, "last": true}])
    );
}

pub async fn too_many_buckets_are_refused(t: TestStore) {
    let router = seeded(&t).await;
    let answer = get(
        &router,
        "/v1/devices/dev-1/aggregates?name=temp&step=1&from=0&to=1700000000",
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("100000"),
        "{}",
        answer.text
    );
    // Over the data alone (110 s), one-second steps are fine.
    let agg = get_ok(&router, "/v1/devices/dev-1/aggregates?name=temp&step=1").await;
    assert_eq!(agg["buckets"].as_array().unwrap().len(), 12);
    for bad in ["step=0", "step=-1", "step=abc", "step=inf"] {
        let answer = get(
            &router,
            &format!("/v1/devices/dev-1/aggregates?name=temp&{bad}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

pub async fn unknown_devices_are_404_and_bad_parameters_400(t: TestStore) {
    let router = seeded(&t).await;
    let answer = get(&router, "/v1/devices/nobody/points?name=temp").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json["error"]["code"], "not_found");
    let answer = get(&router, "/v1/devices/nobody/aggregates?name=temp&step=60").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    for uri in [
        "/v1/devices/dev-1/points?name=temp&form=1",
        "/v1/devices/dev-1/points",
        "/v1/devices/dev-1/points?name=temp&limit=0",
        "/v1/devices/dev-1/points?name=temp&limit=100001",
        "/v1/devices/dev-1/points?name=temp&from=2&to=1",
        "/v1/devices/dev-1/points?name=temp&from=NaN",
        "/v1/devices/dev-1/aggregates?name=temp",
        "/v1/devices?x=1",
        "/v1/gateways?verbose=true",
        "/v1/devices/bad%20id/points?name=temp",
    ] {
        let answer = get(&router, uri).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            answer.text
        );
        assert_eq!(answer.json["error"]["code"], "bad_request", "{uri}");
    }
    let answer = get(&router, "/v1/nothing").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json["error"]["code"], "not_found");
}

pub async fn devices_and_gateways_are_listed(t: TestStore) {
    let router = seeded(&t).await;
    let devices = get_ok(&router, "/v1/devices").await;
    assert_eq!(
        devices,
        json!({"devices": [
            {"device_id": "dev-1", "gateway_id": "gw", "last_seen": (RECEIVED_AT + 100) as f64 / 1000.0,
             "measurements": ["door", "temp"], "points": 15, "documents": 0},
            {"device_id": "dev-1.b", "gateway_id": "gw", "last_seen": (RECEIVED_AT + 101) as f64 / 1000.0,
             "measurements": ["temp"], "points": 1, "documents": 0},
        ]})
    );
    let gateways = get_ok(&router, "/v1/gateways").await;
    let gw = &gateways["gateways"][0];
    assert_eq!(gw["gateway_id"], "gw");
    assert_eq!(gw["spool_id"], SPOOL_A);
    assert_eq!(gw["batches"], 3);
    assert_eq!(gw["accepted"], 14);
    assert_eq!(gw["duplicates"], 0);
    assert_eq!(gw["backlog"], 0);
}

pub async fn health_and_metrics_answer(t: TestStore) {
    let router = seeded(&t).await;
    let health = get(&router, "/healthz").await;
    assert_eq!(
        (health.status, health.text.as_str()),
        (StatusCode::OK, "ok")
    );
    let metrics = get(&router, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .text
            .contains("cloud_sync_batches_total{status=\"ok\"} 3"),
        "{}",
        metrics.text
    );
    assert!(metrics
        .text
        .contains("cloud_sync_envelopes_total{result=\"accepted\"} 14"));
    assert!(metrics.text.contains("cloud_sync_points_total 16"));
    assert!(metrics
        .text
        .contains("cloud_sync_request_duration_seconds_count 3"));
}

//! The dashboard's files through `Router::oneshot`: the page, its scripts
//! and stylesheets with their content types and cache headers, 304 on a
//! matching ETag, and JSON 404s for unknown assets. The page in a real
//! browser is `firmware-sim/tests/dashboard.rs`.

mod util;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;
use util::*;

async fn fetch(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

async fn fetch_ok(router: &Router, uri: &str) -> (HeaderMap, String) {
    let (status, headers, body) =
        fetch(router, Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{uri}");
    (headers, String::from_utf8(body).unwrap())
}

fn header_of(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn page_scripts_and_styles_are_served_with_their_content_types() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _state) = app(dir.path()).await;

    let (headers, page) = fetch_ok(&router, "/").await;
    assert_eq!(
        header_of(&headers, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert!(header_of(&headers, header::CONTENT_SECURITY_POLICY).contains("default-src 'self'"));
    assert!(page.starts_with("<!doctype html>"));

    // Every file the page names is served, with the content type its tag needs.
    for (uri, content_type, marker) in [
        ("/assets/app.js", "text/javascript; charset=utf-8", "uPlot"),
        ("/assets/app.css", "text/css; charset=utf-8", ".chart"),
        (
            "/assets/uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
            "var uPlot",
        ),
        ("/assets/uPlot.min.css", "text/css; charset=utf-8", ".uplot"),
        ("/assets/uPlot.LICENSE", "text/plain; charset=utf-8", "MIT"),
    ] {
        assert!(page.contains(&uri[1..]), "index.html does not link {uri}");
        let (headers, body) = fetch_ok(&router, uri).await;
        assert_eq!(
            header_of(&headers, header::CONTENT_TYPE),
            content_type,
            "{uri}"
        );
        assert_eq!(
            header_of(&headers, header::CACHE_CONTROL),
            "no-cache",
            "{uri}"
        );
        assert_eq!(
            header_of(&headers, header::X_CONTENT_TYPE_OPTIONS),
            "nosniff"
        );
        assert!(body.contains(marker), "{uri} lacks {marker:?}");
    }
}

#[tokio::test]
async fn a_matching_etag_is_answered_304_without_a_body() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _state) = app(dir.path()).await;
    for uri in ["/", "/assets/app.js"] {
        let (headers, _) = fetch_ok(&router, uri).await;
        let etag = header_of(&headers, header::ETAG).to_owned();
        let revalidate = Request::get(uri)
            .header(header::IF_NONE_MATCH, &etag)
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = fetch(&router, revalidate).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{uri}");
        assert_eq!(header_of(&headers, header::ETAG), etag);
        assert!(body.is_empty());

        let changed = Request::get(uri)
            .header(header::IF_NONE_MATCH, "\"0000000000000000\"")
            .body(Body::empty())
            .unwrap();
        assert_eq!(fetch(&router, changed).await.0, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn unknown_assets_are_json_404s() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _state) = app(dir.path()).await;
    for uri in ["/assets/nope.js", "/assets/", "/assets/uplot/LICENSE"] {
        let answer = get(&router, uri).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(answer.json["error"]["code"], "not_found", "{uri}");
    }
}

//! The dashboard: one static page with hand-written JS and CSS plus vendored
//! uPlot (`cloud-sync/assets/`), compiled into the binary so that it works
//! offline. The page reads the same JSON query API as any other client.
//!
//! ```text
//! GET /                  index.html; the page routes by hash: #/, #/devices/{id}?range=1h, #/gateways
//! GET /assets/{file}     app.js, app.css, uPlot.iife.min.js, uPlot.min.css, uPlot.LICENSE
//! every answer           Cache-Control: no-cache + a strong ETag of the content (304 on If-None-Match)
//! ```

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::ApiPath;

/// One embedded file.
struct Asset {
    /// The last path segment under `/assets/`.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Quoted FNV-1a hash of `body`, computed at compile time.
    etag: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The asset URLs carry no version, so a browser must revalidate every
/// use: otherwise a new collector binary could run behind a cached old
/// app.js. The ETag makes that revalidation a body-less 304.
const CACHE_CONTROL: &str = "no-cache";

/// Everything the page loads comes from the collector itself; inline
/// script and style stay forbidden (uPlot styles through the CSSOM, which
/// this allows).
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

macro_rules! asset {
    ($name:literal, $content_type:expr, $file:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $file));
        const TAG: [u8; 18] = etag_of(BODY);
        Asset {
            name: $name,
            content_type: $content_type,
            body: BODY,
            // Quotes around hex digits: always valid UTF-8.
            etag: match std::str::from_utf8(&TAG) {
                Ok(tag) => tag,
                Err(_) => panic!("an etag is ascii"),
            },
        }
    }};
}

const INDEX: Asset = asset!("index.html", HTML, "index.html");

const ASSETS: &[Asset] = &[
    asset!("app.js", JS, "app.js"),
    asset!("app.css", CSS, "app.css"),
    asset!("uPlot.iife.min.js", JS, "uplot/uPlot.iife.min.js"),
    asset!("uPlot.min.css", CSS, "uplot/uPlot.min.css"),
    asset!("uPlot.LICENSE", TEXT, "uplot/LICENSE"),
];

/// `GET /`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    let mut response = serve(&INDEX, &headers);
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

/// `GET /assets/{file}`: a script, a stylesheet or the uPlot licence.
pub async fn asset(
    ApiPath(file): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|asset| asset.name == file)
        .ok_or_else(|| ApiError::not_found(format!("no asset {file:?}")))?;
    Ok(serve(asset, &headers))
}

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let common = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        ),
        (header::ETAG, HeaderValue::from_static(asset.etag)),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if not_modified(headers, asset.etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

/// Whether `If-None-Match` names `etag` (or is `*`). Weak comparison, as
/// RFC 9110 §13.1.2 asks for this header.
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// `"` + 16 hex digits of the 64-bit FNV-1a hash of `bytes` + `"`. Not a
/// security hash: it only has to change when an embedded file does.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    let digits = b"0123456789abcdef";
    let mut tag = [b'"'; 18];
    let mut d = 0;
    while d < 16 {
        tag[1 + d] = digits[((hash >> (60 - 4 * d)) & 0xf) as usize];
        d += 1;
    }
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_hex_and_differ_per_file() {
        let mut tags: Vec<&str> = ASSETS.iter().map(|a| a.etag).collect();
        tags.push(INDEX.etag);
        for tag in &tags {
            assert_eq!(tag.len(), 18);
            assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
            assert!(tag[1..17].bytes().all(|b| b.is_ascii_hexdigit()), "{tag}");
        }
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len() + 1);
        // FNV-1a 64 of the empty input is its offset basis.
        assert_eq!(&etag_of(b""), b"\"cbf29ce484222325\"");
    }

    #[test]
    fn if_none_match_is_compared_weakly_and_in_lists() {
        let etag = "\"0123456789abcdef\"";
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            not_modified(&headers, etag)
        };
        assert!(check("\"0123456789abcdef\""));
        assert!(check("W/\"0123456789abcdef\""));
        assert!(check("\"other\", \"0123456789abcdef\""));
        assert!(check("*"));
        assert!(!check("\"other\""));
        assert!(!not_modified(&HeaderMap::new(), etag));
    }
}

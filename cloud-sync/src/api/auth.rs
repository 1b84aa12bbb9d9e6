//! Bearer-token check for `POST /v1/batches`. Tokens are compared in
//! constant time, and every configured token is tried, so the answer time
//! does not reveal which prefix of which token matched.

use axum::http::{header, HeaderMap};

use super::error::ApiError;

/// Accepts the request when its `Authorization: Bearer <token>` is one of `tokens`.
pub fn check_bearer(headers: &HeaderMap, tokens: &[String]) -> Result<(), ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| ApiError::unauthorized("authorization must be `Bearer <token>`"))?;
    let mut matched = false;
    for token in tokens {
        matched |= constant_time_eq(token.as_bytes(), presented.as_bytes());
    }
    if matched {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid bearer token"))
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn accepts_any_configured_token() {
        let tokens = vec!["alpha".to_string(), "beta".to_string()];
        assert!(check_bearer(&headers("Bearer beta"), &tokens).is_ok());
        assert!(check_bearer(&headers("bearer alpha"), &tokens).is_ok());
    }

    #[test]
    fn refuses_missing_wrong_and_malformed() {
        let tokens = vec!["alpha".to_string()];
        for h in [
            HeaderMap::new(),
            headers("Bearer alphA"),
            headers("Bearer alph"),
            headers("Basic alpha"),
            headers("alpha"),
            headers("Bearer "),
        ] {
            let err = check_bearer(&h, &tokens).unwrap_err();
            assert_eq!(err.code(), "unauthorized");
        }
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}

//! Who may do what: bearer tokens from the hashed token file (roles
//! `ingest` bound to one gateway, `read`, `admin`) and plain tokens from
//! the config (ingest for any gateway, no reads: demos and tests).
//!
//! ```text
//!                     POST /v1/batches              GET /v1/devices…, /v1/gateways
//! no / unknown token  401                           401 when reads need a token, else open
//! ingest gw-1         own gateway 200, other 403    403
//! read                403                           200
//! admin               any gateway                   200
//! plain config token  any gateway                   403 (open when reads need no token)
//! ```
//!
//! Plain tokens are compared in constant time, every one of them tried;
//! file tokens are looked up by their SHA-256 (see `tokens.rs`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::state::AppState;
use crate::tokens::{Role, TokenFile};

/// The accepted tokens of one collector.
pub struct Auth {
    /// Plain tokens from the config: ingest for any gateway.
    plain: Vec<String>,
    file: Option<Arc<TokenFile>>,
    /// Whether the query API needs a read or admin token.
    require_read_token: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are secrets: never print them.
        f.debug_struct("Auth")
            .field("plain", &self.plain.len())
            .field("file", &self.file)
            .field("require_read_token", &self.require_read_token)
            .finish()
    }
}

/// Which batches a token may post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestGrant {
    /// Only batches of this gateway id.
    Gateway(String),
    /// Batches of any gateway (admin and plain tokens).
    Any,
}

impl Auth {
    pub fn new(plain: Vec<String>, file: Option<Arc<TokenFile>>, require_read_token: bool) -> Auth {
        Auth {
            plain,
            file,
            require_read_token,
        }
    }

    /// May this request post batches, and for which gateways? 401 without
    /// a valid token, 403 for a read token.
    pub fn ingest(&self, headers: &HeaderMap) -> Result<IngestGrant, ApiError> {
        let token = bearer(headers)?;
        if self.is_plain(token) {
            return Ok(IngestGrant::Any);
        }
        match self.file_role(token) {
            Some(Role::Ingest { gateway_id }) => Ok(IngestGrant::Gateway(gateway_id)),
            Some(Role::Admin) => Ok(IngestGrant::Any),
            Some(Role::Read) => Err(ApiError::forbidden("a read token cannot post batches")),
            None => Err(ApiError::unauthorized("invalid bearer token")),
        }
    }

    /// May this request read the query API? Always, when reads need no
    /// token; else 401 without a valid token, 403 for an ingest token.
    pub fn read(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.require_read_token {
            return Ok(());
        }
        let token = bearer(headers)?;
        match self.file_role(token) {
            Some(Role::Read | Role::Admin) => Ok(()),
            Some(Role::Ingest { .. }) => Err(ApiError::forbidden(
                "an ingest token cannot read; use a read token",
            )),
            None if self.is_plain(token) => Err(ApiError::forbidden(
                "a gateway token cannot read; use a read token",
            )),
            None => Err(ApiError::unauthorized("invalid bearer token")),
        }
    }

    fn is_plain(&self, presented: &str) -> bool {
        let mut matched = false;
        for token in &self.plain {
            matched |= constant_time_eq(token.as_bytes(), presented.as_bytes());
        }
        matched
    }

    fn file_role(&self, token: &str) -> Option<Role> {
        self.file.as_ref()?.verify(token)
    }
}

/// Middleware of the query routes: answers 401/403 (counted) unless
/// [`Auth::read`] lets the request through.
pub async fn require_read(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.auth().read(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(err) => {
            state.metrics().observe_refusal("query", err.code());
            if let Some(suppressed) = state.rejections().pass() {
                tracing::warn!(
                    code = err.code(),
                    reason = err.message(),
                    path = request.uri().path(),
                    suppressed,
                    "query refused"
                );
            }
            err.into_response()
        }
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| ApiError::unauthorized("authorization must be `Bearer <token>`"))
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

    fn plain(tokens: &[&str]) -> Auth {
        Auth::new(tokens.iter().map(|t| t.to_string()).collect(), None, false)
    }

    #[test]
    fn accepts_any_configured_token() {
        let auth = plain(&["alpha", "beta"]);
        assert_eq!(auth.ingest(&headers("Bearer beta")), Ok(IngestGrant::Any));
        assert_eq!(auth.ingest(&headers("bearer alpha")), Ok(IngestGrant::Any));
        // Reads are open without a token file.
        assert!(auth.read(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn refuses_missing_wrong_and_malformed() {
        let auth = plain(&["alpha"]);
        for h in [
            HeaderMap::new(),
            headers("Bearer alphA"),
            headers("Bearer alph"),
            headers("Basic alpha"),
            headers("alpha"),
            headers("Bearer "),
        ] {
            let err = auth.ingest(&h).unwrap_err();
            assert_eq!(err.code(), "unauthorized");
        }
    }

    #[test]
    fn roles_decide_what_a_file_token_may_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(TokenFile::load(&dir.path().join("tokens")).unwrap());
        let (_, gw) = file
            .add(Role::Ingest {
                gateway_id: "gw-1".into(),
            })
            .unwrap();
        let (_, read) = file.add(Role::Read).unwrap();
        let (_, admin) = file.add(Role::Admin).unwrap();
        let auth = Auth::new(vec!["plain".into()], Some(file), true);
        let bearer = |t: &str| headers(&format!("Bearer {t}"));
        assert_eq!(
            auth.ingest(&bearer(&gw)),
            Ok(IngestGrant::Gateway("gw-1".into()))
        );
        assert_eq!(auth.ingest(&bearer(&admin)), Ok(IngestGrant::Any));
        assert_eq!(auth.ingest(&bearer(&read)).unwrap_err().code(), "forbidden");
        assert!(auth.read(&bearer(&read)).is_ok());
        assert!(auth.read(&bearer(&admin)).is_ok());
        assert_eq!(auth.read(&bearer(&gw)).unwrap_err().code(), "forbidden");
        assert_eq!(auth.read(&bearer("plain")).unwrap_err().code(), "forbidden");
        assert_eq!(
            auth.read(&bearer("cst_x")).unwrap_err().code(),
            "unauthorized"
        );
        assert_eq!(
            auth.read(&HeaderMap::new()).unwrap_err().code(),
            "unauthorized"
        );
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}

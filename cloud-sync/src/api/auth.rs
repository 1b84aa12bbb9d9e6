//! Who may do what: bearer tokens from the hashed token file (roles
//! `ingest` bound to one gateway, `read`, `admin`) and plain tokens from
//! the config (ingest for any gateway, no reads: demos and tests).
//!
//! ```text
//!                     POST /v1/batches              GET /v1/devices…, /v1/gateways            DELETE /v1/devices/{id}
//! no / unknown token  401                           401 when reads need a token, else open   401
//! ingest gw-1         own gateway 200, other 403    403                                      403
//! read                403                           200                                      403
//! admin               any gateway                   200                                      200
//! plain config token  any gateway                   403 (open when reads need no token)      403
//! ```
//!
//! Reads and admin actions name their [`Actor`] for the audit log: the
//! token's id from the token file, or `anonymous` for an open read.
//!
//! Plain tokens are compared in constant time, every one of them tried;
//! file tokens are looked up by their SHA-256 (see `tokens.rs`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::audit::ACTOR_ANONYMOUS;
use crate::state::AppState;
use crate::tokens::{Role, TokenFile, TokenInfo};

/// Who made a request, as the audit log names them: a token id, or
/// `anonymous`. Never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

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

    /// May this request read the query API, and who is it? Always, when
    /// reads need no token (as `anonymous`); else 401 without a valid
    /// token, 403 for an ingest token.
    pub fn read(&self, headers: &HeaderMap) -> Result<Actor, ApiError> {
        if !self.require_read_token {
            return Ok(Actor(ACTOR_ANONYMOUS.to_owned()));
        }
        let token = bearer(headers)?;
        match self.file_token(token) {
            Some(TokenInfo {
                id,
                role: Role::Read | Role::Admin,
                ..
            }) => Ok(Actor(id)),
            Some(TokenInfo {
                role: Role::Ingest { .. },
                ..
            }) => Err(ApiError::forbidden(
                "an ingest token cannot read; use a read token",
            )),
            None if self.is_plain(token) => Err(ApiError::forbidden(
                "a gateway token cannot read; use a read token",
            )),
            None => Err(ApiError::unauthorized("invalid bearer token")),
        }
    }

    /// May this request erase data? Only with an admin token from the token
    /// file: 401 without a valid token, 403 for any other.
    pub fn admin(&self, headers: &HeaderMap) -> Result<Actor, ApiError> {
        let token = bearer(headers)?;
        match self.file_token(token) {
            Some(TokenInfo {
                id,
                role: Role::Admin,
                ..
            }) => Ok(Actor(id)),
            Some(_) => Err(ApiError::forbidden("only an admin token may do this")),
            None if self.is_plain(token) => {
                Err(ApiError::forbidden("only an admin token may do this"))
            }
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

    fn file_token(&self, token: &str) -> Option<TokenInfo> {
        self.file.as_ref()?.identify(token)
    }
}

/// Middleware of the query routes: answers 401/403 (counted) unless
/// [`Auth::read`] lets the request through.
pub async fn require_read(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    match state.auth().read(request.headers()) {
        Ok(actor) => {
            // For the audit of the read (`audit_read` in routes.rs).
            request.extensions_mut().insert(actor);
            next.run(request).await
        }
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
        // Reads are open without a token file; admin actions are not.
        assert_eq!(auth.read(&HeaderMap::new()), Ok(Actor("anonymous".into())));
        assert_eq!(
            auth.admin(&headers("Bearer alpha")).unwrap_err().code(),
            "forbidden"
        );
        assert_eq!(
            auth.admin(&HeaderMap::new()).unwrap_err().code(),
            "unauthorized"
        );
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
        let (read_info, read) = file.add(Role::Read).unwrap();
        let (admin_info, admin) = file.add(Role::Admin).unwrap();
        let auth = Auth::new(vec!["plain".into()], Some(file), true);
        let bearer = |t: &str| headers(&format!("Bearer {t}"));
        assert_eq!(
            auth.ingest(&bearer(&gw)),
            Ok(IngestGrant::Gateway("gw-1".into()))
        );
        assert_eq!(auth.ingest(&bearer(&admin)), Ok(IngestGrant::Any));
        assert_eq!(auth.ingest(&bearer(&read)).unwrap_err().code(), "forbidden");
        assert_eq!(auth.read(&bearer(&read)), Ok(Actor(read_info.id)));
        assert_eq!(auth.read(&bearer(&admin)), Ok(Actor(admin_info.id.clone())));
        assert_eq!(auth.admin(&bearer(&admin)), Ok(Actor(admin_info.id)));
        for token in [read.as_str(), gw.as_str(), "plain"] {
            assert_eq!(auth.admin(&bearer(token)).unwrap_err().code(), "forbidden");
        }
        assert_eq!(
            auth.admin(&bearer("cst_x")).unwrap_err().code(),
            "unauthorized"
        );
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

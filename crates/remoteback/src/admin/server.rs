//! The admin routes the proxy adds to its status server.
//!
//! Reading a sync's progress is open, like `/metrics`. Starting or
//! cancelling a sync and repairing a key change the backup, so they are
//! not for anyone who can reach the port: with `admin_token` set they need
//! `Authorization: Bearer TOKEN` (compared through SHA-1 digests in
//! constant time, so neither the token's length nor a matching prefix shows
//! in the answer's timing; the token is never logged), and without one they
//! are taken only from loopback addresses.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use remoteback_proxy::failover::WritesDuring;
use remoteback_proxy::{
    Method, RepairError, StartError, SyncControl, SyncPosition, SyncRequest, DEFAULT_CHUNK_BYTES,
    DEFAULT_INFLIGHT_BYTES,
};
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::{
    unhex, FailoverStart, FailoverStatus, Failure, RepairRequest, Repaired, SyncStart, SyncStatus,
};

const JSON: &str = "application/json";

/// The address a request came from, which the status server records for
/// every connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// What the admin routes act on.
pub struct Admin {
    pub sync: Arc<SyncControl>,
    pub failover: Arc<remoteback_proxy::failover::Failover>,
    /// `admin_token`, if configured.
    pub token: Option<String>,
}

/// `/sync` and `/repair`.
pub fn routes(admin: Arc<Admin>) -> Router {
    Router::new()
        .route(
            "/sync",
            post(start_sync)
                .get(sync_status)
                .delete(cancel_sync)
                .fallback(not_allowed),
        )
        .route("/repair", post(repair).fallback(not_allowed))
        .route(
            "/failover",
            post(failover)
                .get(failover)
                .delete(failover)
                .fallback(not_allowed),
        )
        .with_state(admin)
}

/// `/failover`: `POST` holds the writes, `DELETE` lets them go, `GET`
/// says where it stands. Every method needs the token: the answer names
/// the primary and the brokers.
async fn failover(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    method: HttpMethod,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refusal(admin.token.as_deref(), peer, &headers) {
        return refused;
    }
    let status = match method {
        HttpMethod::POST => {
            let during = match parse::<FailoverStart>(&headers, &body).and_then(|start| {
                start
                    .clients
                    .as_deref()
                    .map_or(Ok(WritesDuring::Wait), |c| {
                        c.parse().map_err(|e| format!("clients: {e}"))
                    })
            }) {
                Ok(during) => during,
                Err(reason) => return failure(StatusCode::BAD_REQUEST, &reason),
            };
            log::info!("failover asked from {} (writes: {})", peer.0, during.name());
            if let Err(reason) = admin.failover.pause(during) {
                return failure(StatusCode::CONFLICT, reason);
            }
            StatusCode::ACCEPTED
        }
        HttpMethod::DELETE => {
            admin.failover.resume();
            StatusCode::ACCEPTED
        }
        _ => StatusCode::OK,
    };
    json(status, &FailoverStatus::from(&admin.failover.state()))
}

async fn not_allowed() -> Response {
    failure(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

async fn sync_status(State(admin): State<Arc<Admin>>) -> Response {
    json(StatusCode::OK, &SyncStatus::from(&admin.sync.progress()))
}

async fn start_sync(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refusal(admin.token.as_deref(), peer, &headers) {
        return refused;
    }
    let start: SyncStart = match parse(&headers, &body) {
        Ok(start) => start,
        Err(reason) => return failure(StatusCode::BAD_REQUEST, &reason),
    };
    let request = match sync_request(start) {
        Ok(request) => request,
        Err(reason) => return failure(StatusCode::BAD_REQUEST, &reason),
    };
    match admin.sync.start(request).await {
        Ok(()) => json(
            StatusCode::ACCEPTED,
            &SyncStatus::from(&admin.sync.progress()),
        ),
        Err(e) => start_failure(&e),
    }
}

async fn cancel_sync(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(admin.token.as_deref(), peer, &headers) {
        return refused;
    }
    if admin.sync.cancel() {
        log::info!("sync: cancel asked from {}", peer.0);
        json(
            StatusCode::ACCEPTED,
            &SyncStatus::from(&admin.sync.progress()),
        )
    } else {
        failure(StatusCode::CONFLICT, "no sync is running")
    }
}

async fn repair(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refusal(admin.token.as_deref(), peer, &headers) {
        return refused;
    }
    let repair: RepairRequest = match parse(&headers, &body) {
        Ok(repair) => repair,
        Err(reason) => return failure(StatusCode::BAD_REQUEST, &reason),
    };
    let Some(key) = unhex(&repair.key_hex) else {
        return failure(StatusCode::BAD_REQUEST, "key_hex is not hexadecimal");
    };
    let method = match method(repair.method.as_deref()) {
        Ok(m) => m,
        Err(reason) => return failure(StatusCode::BAD_REQUEST, &reason),
    };
    // A task of its own: a client that hangs up does not stop a repair
    // half-way (the backup would keep the first chunks of a big key).
    let sync = admin.sync.clone();
    let repaired =
        tokio::spawn(async move { sync.repair(repair.db, key.into(), method).await }).await;
    match repaired {
        Ok(Ok(records)) => json(StatusCode::OK, &Repaired { records }),
        Ok(Err(RepairError::Start(e))) => start_failure(&e),
        Ok(Err(e @ RepairError::Copy(_))) => failure(StatusCode::BAD_GATEWAY, &e.to_string()),
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The answer refusing a request that would change something, or `None`
/// if it may.
pub(crate) fn refusal(token: Option<&str>, peer: Peer, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = token else {
        if peer.0.ip().to_canonical().is_loopback() {
            return None;
        }
        return Some(failure(
            StatusCode::FORBIDDEN,
            "admin requests from other hosts need an admin_token in the proxy's configuration (a replay takes them from its own host only)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    let digest = |t: &str| sha1_smol::Sha1::from(t).digest().bytes();
    if bool::from(digest(given).ct_eq(&digest(token))) {
        return None;
    }
    log::warn!(
        "admin: a request from {} with a wrong or missing token was refused",
        peer.0
    );
    let mut refused = failure(
        StatusCode::UNAUTHORIZED,
        "this request needs the proxy's admin token: Authorization: Bearer TOKEN",
    );
    refused
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(refused)
}

/// The proxy's request from the admin API's.
fn sync_request(start: SyncStart) -> Result<SyncRequest, String> {
    let resume = start
        .resume
        .as_deref()
        .map(str::parse::<SyncPosition>)
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(SyncRequest {
        dbs: start.db,
        pattern: start.pattern.map(|p| p.into_bytes().into()),
        method: method(start.method.as_deref())?,
        flush: start.flush,
        keys_per_second: start.keys_per_second,
        chunk_bytes: start.chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES),
        inflight_bytes: start.inflight_bytes.unwrap_or(DEFAULT_INFLIGHT_BYTES),
        resume,
    })
}

fn method(name: Option<&str>) -> Result<Method, String> {
    match name {
        None | Some("restore") => Ok(Method::Restore),
        Some("commands") => Ok(Method::Commands),
        Some(other) => Err(format!(
            "method {other:?} is not known: restore or commands"
        )),
    }
}

fn start_failure(e: &StartError) -> Response {
    let status = match e {
        StartError::Running
        | StartError::RowFormat
        | StartError::NoSenders
        | StartError::FailingOver => StatusCode::CONFLICT,
        StartError::FlushOnResume | StartError::ChunkTooSmall | StartError::ChunkTooBig { .. } => {
            StatusCode::BAD_REQUEST
        }
        StartError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        StartError::Primary { .. } | StartError::Keyspace(_) => StatusCode::BAD_GATEWAY,
    };
    failure(status, &e.to_string())
}

/// The JSON body of a request that changes something. It must say it is
/// JSON: a web page can make a browser send a plain-text POST to a
/// loopback address, but not an `application/json` one without asking.
fn parse<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with(JSON));
    if !json {
        return Err(format!("the request body must be {JSON}"));
    }
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("bad JSON body: {e}"))
}

pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => (status, [(header::CONTENT_TYPE, JSON)], format!("{text}\n")).into_response(),
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub(crate) fn failure(status: StatusCode, error: &str) -> Response {
    let body = Failure {
        error: error.to_string(),
    };
    let text = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
    (status, [(header::CONTENT_TYPE, JSON)], format!("{text}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Peer {
        Peer(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    #[test]
    fn without_a_token_only_loopback_may_change_things() {
        let none = HeaderMap::new();
        assert!(refusal(None, peer("127.0.0.1"), &none).is_none());
        assert!(refusal(None, peer("::1"), &none).is_none());
        assert!(refusal(None, peer("::ffff:127.0.0.1"), &none).is_none());
        let far = refusal(None, peer("10.1.2.3"), &none).expect("refused");
        assert_eq!(far.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn with_a_token_everyone_needs_it() {
        let token = Some("0123456789abcdef");
        assert!(refusal(token, peer("10.1.2.3"), &bearer("0123456789abcdef")).is_none());
        let mut lower = HeaderMap::new();
        lower.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer 0123456789abcdef"),
        );
        assert!(refusal(token, peer("10.1.2.3"), &lower).is_none());
        for headers in [HeaderMap::new(), bearer("0123456789abcdeF"), bearer("0123")] {
            let refused = refusal(token, peer("127.0.0.1"), &headers).expect("refused");
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
            assert!(refused.headers().contains_key(header::WWW_AUTHENTICATE));
        }
    }

    #[test]
    fn bodies_must_say_they_are_json() {
        let mut headers = HeaderMap::new();
        let plain: Result<RepairRequest, String> = parse(&headers, br#"{"db":0,"key_hex":"61"}"#);
        assert!(plain.unwrap_err().contains("application/json"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let repair: RepairRequest = parse(&headers, br#"{"db":0,"key_hex":"61"}"#).unwrap();
        assert_eq!(repair.key_hex, "61");
        let start: SyncStart = parse(&headers, b"").unwrap();
        assert_eq!(start, SyncStart::default());
    }
}

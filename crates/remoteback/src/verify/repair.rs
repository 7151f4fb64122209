//! `--repair`: asking the proxy to resync a key.
//!
//! The proxy in front of the primary owns the order of writes into Kafka,
//! so a repair goes through it: `POST http://ADMIN_ADDR/repair` with
//! `{"db": N, "key_hex": "..."}` makes the proxy capture the key's current
//! value as records, and its `200 {"records": N}` says Kafka acknowledged
//! them. The replay then applies them to the backup like any other write,
//! which is why verify checks the key again afterwards.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::json;

use super::escape::hex;

/// How long one request may take: the proxy answers once Kafka has
/// acknowledged the key's records.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a busy proxy (409, 503) is asked again, waits doubling from
/// [`FIRST_WAIT`] (about 25 s in all).
const BUSY_RETRIES: u32 = 8;
const FIRST_WAIT: Duration = Duration::from_millis(100);

/// Why a key was not repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairError {
    /// The proxy refused the token (401, 403): no key can be repaired.
    Unauthorized(String),
    /// The proxy could not be reached: no key can be repaired.
    Unreachable(String),
    /// The proxy refused this key, or stayed busy.
    Refused { status: u16, message: String },
}

impl RepairError {
    /// Whether every other key would fail the same way.
    pub fn stops_all(&self) -> bool {
        !matches!(self, RepairError::Refused { .. })
    }
}

impl std::fmt::Display for RepairError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepairError::Unauthorized(m) => write!(f, "the proxy refused the admin token: {m}"),
            RepairError::Unreachable(m) => write!(f, "cannot reach the proxy: {m}"),
            RepairError::Refused { status, message } => {
                write!(f, "the proxy answered {status}: {message}")
            }
        }
    }
}

/// A proxy's admin API.
pub struct Proxy {
    agent: ureq::Agent,
    url: String,
    token: Option<String>,
}

impl Proxy {
    /// The proxy at `admin` (`host:port` or `http://host:port`), with the
    /// admin token if it wants one.
    pub fn new(admin: &str, token: Option<String>) -> anyhow::Result<Proxy> {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .build();
        Ok(Proxy {
            agent: config.into(),
            url: endpoint(admin)?,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// Resyncs `key` of `db`: the number of records the proxy wrote.
    pub fn repair(&self, db: u32, key: &[u8]) -> Result<u64, RepairError> {
        let mut wait = FIRST_WAIT;
        let mut attempt = 0;
        loop {
            match self.attempt(db, key) {
                Err(RepairError::Refused { status, .. })
                    if (status == 409 || status == 503) && attempt < BUSY_RETRIES =>
                {
                    std::thread::sleep(wait);
                    wait *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn attempt(&self, db: u32, key: &[u8]) -> Result<u64, RepairError> {
        let mut request = self.agent.post(&self.url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", authorization(token));
        }
        let mut response = request
            .send_json(body(db, key))
            .map_err(|e| RepairError::Unreachable(format!("{}: {e}", self.url)))?;
        let status = response.status().as_u16();
        let reply: serde_json::Value = response
            .body_mut()
            .read_json()
            .unwrap_or(serde_json::Value::Null);
        answer(status, &reply)
    }
}

/// The request body for `key` of `db`.
pub fn body(db: u32, key: &[u8]) -> serde_json::Value {
    json!({ "db": db, "key_hex": hex(key) })
}

/// The `Authorization` header's value.
pub fn authorization(token: &str) -> String {
    format!("Bearer {token}")
}

/// The repair URL of an admin address.
pub fn endpoint(admin: &str) -> anyhow::Result<String> {
    let base = admin.trim_end_matches('/');
    if base.starts_with("https://") {
        bail!("--proxy {admin}: HTTPS to the admin address is not supported; give host:port");
    }
    let base = base.strip_prefix("http://").unwrap_or(base);
    if base.is_empty() || base.contains('/') {
        bail!("--proxy {admin}: give the proxy's admin address as host:port");
    }
    Ok(format!("http://{base}/repair"))
}

/// What a status and JSON reply mean.
pub fn answer(status: u16, reply: &serde_json::Value) -> Result<u64, RepairError> {
    let message = || {
        reply
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| reply.to_string())
    };
    match status {
        200 => reply
            .get("records")
            .and_then(|r| r.as_u64())
            .ok_or_else(|| RepairError::Refused {
                status,
                message: format!("no record count in {reply}"),
            }),
        401 | 403 => Err(RepairError::Unauthorized(message())),
        _ => Err(RepairError::Refused {
            status,
            message: message(),
        }),
    }
}

/// The admin token in `file`, without its line end.
pub fn read_token(file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--admin-token-file {}", file.display()))?;
    let token = text.trim_end_matches(['\r', '\n']).to_string();
    if token.is_empty() {
        return Err(anyhow!("--admin-token-file {}: empty", file.display()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_key_as_hex() {
        assert_eq!(
            body(3, b"key\xff").to_string(),
            r#"{"db":3,"key_hex":"6b6579ff"}"#
        );
        assert_eq!(authorization("s3cret"), "Bearer s3cret");
    }

    #[test]
    fn admin_addresses() {
        assert_eq!(
            endpoint("127.0.0.1:7070").unwrap(),
            "http://127.0.0.1:7070/repair"
        );
        assert_eq!(
            endpoint("http://proxy:7070/").unwrap(),
            "http://proxy:7070/repair"
        );
        assert!(endpoint("https://proxy:7070").is_err());
        assert!(endpoint("proxy:7070/repair").is_err());
        assert!(endpoint("").is_err());
    }

    #[test]
    fn replies() {
        assert_eq!(answer(200, &json!({"records": 4})), Ok(4));
        assert!(matches!(
            answer(401, &json!({"error": "bad token"})),
            Err(RepairError::Unauthorized(m)) if m == "bad token"
        ));
        let busy = answer(503, &json!({"error": "kafka unavailable"})).unwrap_err();
        assert_eq!(
            busy,
            RepairError::Refused {
                status: 503,
                message: "kafka unavailable".into()
            }
        );
        assert!(!busy.stops_all());
        assert!(RepairError::Unreachable("x".into()).stops_all());
        assert!(answer(200, &json!({})).is_err());
    }

    #[test]
    fn a_proxy_that_is_not_there_stops_the_repairs() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let proxy = Proxy::new(&format!("127.0.0.1:{port}"), None).unwrap();
        let error = proxy.repair(0, b"k").unwrap_err();
        assert!(error.stops_all(), "{error}");
    }

    #[test]
    fn tokens_from_files_lose_their_line_end() {
        let file = std::env::temp_dir().join(format!("verify-token-{}", std::process::id()));
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(read_token(&file).unwrap(), "s3cret");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_token(&file).is_err());
        let _ = std::fs::remove_file(&file);
    }
}

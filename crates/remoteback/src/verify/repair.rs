//! `--repair`: asking the proxy to resync a key.
//!
//! The proxy in front of the primary owns the order of writes into Kafka,
//! so a repair goes through it: `POST http://ADMIN_ADDR/repair` with
//! `{"db": N, "key_hex": "..."}` makes the proxy capture the key's current
//! value as records, and its `200 {"records": N}` says Kafka acknowledged
//! them. The replay then applies them to the backup like any other write,
//! which is why verify checks the key again afterwards.

use std::time::Duration;

use crate::admin::client::{AdminClient, AdminError};
use crate::admin::{hex, RepairRequest};

/// How often a busy proxy (409, 503) is asked again, waits doubling from
/// [`FIRST_WAIT`] (about 25 s in all).
const BUSY_RETRIES: u32 = 8;
const FIRST_WAIT: Duration = Duration::from_millis(100);

/// Why a key was not repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRepaired {
    /// The proxy refused the token (401, 403): no key can be repaired.
    Unauthorized(String),
    /// The proxy could not be reached: no key can be repaired.
    Unreachable(String),
    /// The proxy refused this key, or stayed busy.
    Refused { status: u16, message: String },
}

impl NotRepaired {
    /// Whether every other key would fail the same way.
    pub fn stops_all(&self) -> bool {
        !matches!(self, NotRepaired::Refused { .. })
    }
}

impl std::fmt::Display for NotRepaired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRepaired::Unauthorized(m) => write!(f, "the proxy refused the admin token: {m}"),
            NotRepaired::Unreachable(m) => write!(f, "cannot reach the proxy: {m}"),
            NotRepaired::Refused { status, message } => {
                write!(f, "the proxy answered {status}: {message}")
            }
        }
    }
}

impl From<AdminError> for NotRepaired {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Unreachable { .. } => NotRepaired::Unreachable(e.to_string()),
            AdminError::Refused {
                status: 401 | 403,
                error,
            } => NotRepaired::Unauthorized(error),
            AdminError::Refused { status, error } => NotRepaired::Refused {
                status,
                message: error,
            },
        }
    }
}

/// A proxy's admin API, for repairs.
pub struct Proxy {
    client: AdminClient,
}

impl Proxy {
    /// The proxy at `admin` (`host:port` or `http://host:port`), with the
    /// admin token if it wants one.
    pub fn new(admin: &str, token: Option<String>) -> anyhow::Result<Proxy> {
        if admin.starts_with("https://") {
            anyhow::bail!(
                "--proxy {admin}: HTTPS to the admin address is not supported; give host:port"
            );
        }
        Ok(Proxy {
            client: AdminClient::new(admin, token),
        })
    }

    /// Resyncs `key` of `db`: the number of records the proxy wrote.
    pub fn repair(&self, db: u32, key: &[u8]) -> Result<u64, NotRepaired> {
        let request = RepairRequest {
            db,
            key_hex: hex(key),
            method: None,
        };
        let mut wait = FIRST_WAIT;
        let mut attempt = 0;
        loop {
            match self.client.repair(&request).map_err(NotRepaired::from) {
                Err(NotRepaired::Refused { status, .. })
                    if (status == 409 || status == 503) && attempt < BUSY_RETRIES =>
                {
                    std::thread::sleep(wait);
                    wait *= 2;
                    attempt += 1;
                }
                other => return other.map(|r| r.records),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_proxy_answers_means() {
        let refused = |status, error: &str| AdminError::Refused {
            status,
            error: error.into(),
        };
        assert_eq!(
            NotRepaired::from(refused(401, "bad token")),
            NotRepaired::Unauthorized("bad token".into())
        );
        let busy = NotRepaired::from(refused(503, "kafka unavailable"));
        assert_eq!(
            busy,
            NotRepaired::Refused {
                status: 503,
                message: "kafka unavailable".into()
            }
        );
        assert!(!busy.stops_all());
        assert!(NotRepaired::Unauthorized("x".into()).stops_all());
        assert!(Proxy::new("https://proxy:7070", None).is_err());
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
}

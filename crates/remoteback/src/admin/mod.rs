//! The proxy's admin API, next to `/metrics`: start, watch and cancel a
//! sync, resync one key. The requests and answers are JSON; this file
//! holds their shapes, shared by the server ([`server`]) and the CLI's
//! client ([`client`]).
//!
//! - `GET /sync`: the running or last sync's progress ([`SyncStatus`]).
//! - `POST /sync` with a [`SyncStart`]: starts one (202), 409 if one runs.
//! - `DELETE /sync`: asks the running one to stop (202), 409 if none runs.
//! - `POST /repair` with a [`RepairRequest`]: copies one key through the log and
//!   answers once Kafka acknowledged it ([`Repaired`]).
//!
//! - `POST /failover`: writes wait at the proxy from now on (202);
//!   `GET /failover`: whether every write it forwarded is in Kafka
//!   ([`FailoverStatus`]); `DELETE /failover`: writes go again.
//! - `POST /promote` (a replay's): applies everything Kafka holds and stops
//!   there (202); `GET /promote`: where its partitions stopped
//!   ([`promotion::PromotionStatus`]).
//!
//! The requests that change something need `Authorization: Bearer TOKEN`
//! when the proxy has an `admin_token`, and come from a loopback address
//! when it has none; errors are `{"error": "..."}` with a 4xx or 5xx.

pub mod client;
pub mod promotion;
pub mod server;

use remoteback_proxy::{SyncProgress, SyncState};
use serde::{Deserialize, Serialize};

/// `POST /sync`: what to copy and how (see `remoteback sync --help`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncStart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<Vec<u32>>,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default)]
    pub flush: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inflight_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

/// `POST /failover`: what clients' writes meet meanwhile, `wait` (the
/// default) or `readonly`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverStart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<String>,
}

/// `GET /sync`: a sync's progress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// idle, running, done, cancelled or failed.
    pub state: String,
    pub keys_done: u64,
    pub keys_total: u64,
    pub keys_deleted: u64,
    pub big_keys: u64,
    #[serde(default)]
    pub keys_recopied: u64,
    #[serde(default)]
    pub unordered_writes: u64,
    pub records: u64,
    pub bytes: u64,
    pub inflight_bytes: u64,
    pub backlog_pauses: u64,
    pub elapsed_seconds: f64,
    pub keys_per_second: f64,
    /// Seconds to go at the rate so far, while running.
    pub eta_seconds: Option<f64>,
    /// Where `--resume` would continue: everything before it is in Kafka.
    pub position: Option<String>,
    pub full: bool,
    pub error: Option<String>,
}

impl From<&SyncProgress> for SyncStatus {
    fn from(p: &SyncProgress) -> Self {
        let rate = p.keys_per_second();
        let left = p.keys_total.saturating_sub(p.keys_done);
        SyncStatus {
            state: p.state.name().to_string(),
            keys_done: p.keys_done,
            keys_total: p.keys_total,
            keys_deleted: p.keys_deleted,
            big_keys: p.big_keys,
            keys_recopied: p.keys_recopied,
            unordered_writes: p.unordered_writes,
            records: p.records,
            bytes: p.bytes,
            inflight_bytes: p.inflight_bytes,
            backlog_pauses: p.backlog_pauses,
            elapsed_seconds: p.elapsed.as_secs_f64(),
            keys_per_second: rate,
            eta_seconds: (p.state == SyncState::Running && rate > 0.0).then(|| left as f64 / rate),
            position: p.position.map(|p| p.to_string()),
            full: p.full,
            error: p.error.clone(),
        }
    }
}

/// `POST /repair`: one key, its name in hex (keys are bytes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairRequest {
    pub db: u32,
    pub key_hex: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// The answer to a repair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Repaired {
    /// Records the key took.
    pub records: u64,
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub error: String,
}

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    text
}

/// The admin token the CLI sends: `--admin-token`, else the first line of
/// `--admin-token-file` (kept out of the process list), else
/// `REMOTEBACK_ADMIN_TOKEN`; none if none is given.
pub fn token(
    given: Option<String>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, String> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("--admin-token-file {}: {e}", file.display()))?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.is_empty() {
            return Err(format!("--admin-token-file {}: empty", file.display()));
        }
        return Ok(Some(token.to_string()));
    }
    Ok(given
        .or_else(|| std::env::var("REMOTEBACK_ADMIN_TOKEN").ok())
        .filter(|t| !t.is_empty()))
}

/// The bytes `text` spells in hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let key = b"k\x00\xff y";
        assert_eq!(hex(key), "6b00ff2079");
        assert_eq!(unhex(&hex(key)).as_deref(), Some(&key[..]));
        assert_eq!(unhex("6"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("").as_deref(), Some(&b""[..]));
    }

    #[test]
    fn tokens_from_files_lose_their_line_end() {
        let file = std::env::temp_dir().join(format!("admin-token-{}", std::process::id()));
        std::fs::write(&file, "s3cret\r\nrest\n").unwrap();
        assert_eq!(token(None, Some(&file)).unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&file, "\n").unwrap();
        assert!(token(None, Some(&file)).unwrap_err().contains("empty"));
        let _ = std::fs::remove_file(&file);
        assert_eq!(token(Some("t".into()), None).unwrap().as_deref(), Some("t"));
    }

    #[test]
    fn a_start_request_names_its_fields() {
        let start: SyncStart = serde_json::from_str(r#"{"match":"user:*","flush":true}"#).unwrap();
        assert_eq!(start.pattern.as_deref(), Some("user:*"));
        assert!(start.flush);
        assert!(serde_json::from_str::<SyncStart>(r#"{"flsh":true}"#).is_err());
    }
}

/// `GET /failover`, and the answer to `POST` and `DELETE /failover`: a
/// planned failover in the proxy (see `remoteback_proxy::failover`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailoverStatus {
    pub paused: bool,
    /// Writes are refused with `-READONLY` rather than held.
    #[serde(default)]
    pub refusing: bool,
    pub none_in_flight: bool,
    pub backlog_bytes: u64,
    /// Every write the primary took through the proxy is in Kafka.
    pub drained: bool,
    pub records_lost: u64,
    pub writes_uncaptured: u64,
    pub resync_needed: bool,
    /// The primary, `HOST:PORT`.
    pub primary: String,
    /// Each Kafka sender's topic and brokers.
    pub kafka: Vec<KafkaTopic>,
}

/// A Kafka sender's topic and `bootstrap.servers`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KafkaTopic {
    pub topic: String,
    pub bootstrap_servers: String,
}

impl From<&remoteback_proxy::failover::FailoverState> for FailoverStatus {
    fn from(s: &remoteback_proxy::failover::FailoverState) -> Self {
        FailoverStatus {
            paused: s.paused,
            refusing: s.refusing,
            none_in_flight: s.none_in_flight,
            backlog_bytes: s.backlog_bytes,
            drained: s.drained,
            records_lost: s.records_lost,
            writes_uncaptured: s.writes_uncaptured,
            resync_needed: s.resync_needed,
            primary: s.primary.clone(),
            kafka: s
                .kafka
                .iter()
                .map(|(topic, servers)| KafkaTopic {
                    topic: topic.clone(),
                    bootstrap_servers: servers.clone(),
                })
                .collect(),
        }
    }
}

//! A replay's promotion over its admin address: `POST /promote` asks it to
//! apply everything Kafka holds and stop there, `GET /promote` says where
//! each partition stopped. Taken from loopback addresses only (the replay
//! has no admin token): promote from the replay's host.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::{Extension, Router};
use remoteback_replay::{Promotion, Reached, Stats};
use serde::{Deserialize, Serialize};

use super::server::{failure, json, refusal, Peer};

/// `GET /promote`, and the answer to `POST /promote`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PromotionStatus {
    /// Whether a promotion was asked for.
    pub requested: bool,
    /// Whether every partition reached its end.
    pub done: bool,
    /// The partitions that did, in the order they did.
    pub partitions: Vec<PartitionEnd>,
    /// Every partition holds the writes captured up to this primary time
    /// (the newest write or heartbeat applied in the partition furthest
    /// behind; Unix ms, 0 before the first).
    pub applied_everywhere_ms: u64,
    /// The primary time of the newest write applied (0 before the first).
    pub last_write_ms: u64,
    /// The backup, `HOST:PORT`.
    #[serde(default)]
    pub backup: String,
    /// What the backup misses or refused since the replay started: records
    /// that never arrived (gaps), unreadable ones skipped, commands it
    /// refused.
    #[serde(default)]
    pub records_missing: u64,
    #[serde(default)]
    pub bad_records_skipped: u64,
    #[serde(default)]
    pub commands_refused: u64,
}

/// Where one partition stopped ([`Reached`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionEnd {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub end_offset: i64,
    /// Records with writes applied between the request and the end.
    pub records: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write_ms: Option<u64>,
    /// The last heartbeat the replay read in the partition since it
    /// started (before the request too): the proxy was alive then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_ms: Option<u64>,
    /// Records with writes applied after that heartbeat: what the proxy
    /// captured after its last sign of life in the partition.
    #[serde(default)]
    pub records_since_heartbeat: u64,
}

impl From<&Reached> for PartitionEnd {
    fn from(r: &Reached) -> Self {
        PartitionEnd {
            topic: r.topic.clone(),
            partition: r.partition,
            next_offset: r.next_offset,
            end_offset: r.end_offset,
            records: r.records,
            last_write_ms: r.last_write_ms,
            last_heartbeat_ms: r.last_heartbeat_ms,
            records_since_heartbeat: 0,
        }
    }
}

impl PromotionStatus {
    pub fn of(promotion: &Promotion, stats: &Stats, backup: &str) -> PromotionStatus {
        let (requested, done, mut partitions) = match promotion.bound() {
            None => (false, false, Vec::<PartitionEnd>::new()),
            Some(bound) => (
                true,
                bound.is_done(),
                bound.reached().iter().map(PartitionEnd::from).collect(),
            ),
        };
        // The heartbeats of the replay's whole run, not only of the
        // promotion's: the proxy may have died long before it.
        let seen = stats.partitions();
        for end in &mut partitions {
            if let Some((_, s)) = seen
                .iter()
                .find(|((t, p), _)| *t == end.topic && *p == end.partition)
            {
                end.last_heartbeat_ms = s.last_heartbeat_ms.max(end.last_heartbeat_ms);
                end.records_since_heartbeat = s.records_since_heartbeat;
            }
        }
        PromotionStatus {
            requested,
            done,
            partitions,
            applied_everywhere_ms: stats.applied_everywhere_ms(),
            last_write_ms: stats.last_write_ms(),
            backup: backup.to_owned(),
            records_missing: stats.missing(),
            bad_records_skipped: stats.bad_skipped(),
            commands_refused: stats.refused(),
        }
    }
}

/// What `/promote` acts on and reports from.
struct Replay {
    promotion: Promotion,
    stats: Stats,
    backup: String,
}

/// `/promote` on the replay's status server (`backup` is `HOST:PORT`).
pub fn routes(promotion: Promotion, stats: Stats, backup: String) -> Router {
    Router::new()
        .route(
            "/promote",
            post(promote).get(status).fallback(|| async {
                failure(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }),
        )
        .with_state(Arc::new(Replay {
            promotion,
            stats,
            backup,
        }))
}

async fn status(State(replay): State<Arc<Replay>>) -> Response {
    json(
        StatusCode::OK,
        &PromotionStatus::of(&replay.promotion, &replay.stats, &replay.backup),
    )
}

async fn promote(
    State(replay): State<Arc<Replay>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(None, peer, &headers) {
        return refused;
    }
    if replay.promotion.bound().is_none() {
        log::warn!(
            "promotion asked from {}: applying every partition up to its end now, then nothing more",
            peer.0
        );
    }
    replay.promotion.request();
    json(
        StatusCode::ACCEPTED,
        &PromotionStatus::of(&replay.promotion, &replay.stats, &replay.backup),
    )
}

//! What each service says on `/metrics` and `/health` (`metrics = "HOST:PORT"`).
//!
//! The proxy is unhealthy once it lost a record: the backup then misses a
//! write and only a resync (a fresh copy of the primary) makes it right, so
//! the state lasts until the proxy is restarted after that resync. The replay
//! is unhealthy while a partition waits for the backup.

use std::sync::Arc;

use remoteback_protocol::record::now_ms;

use remoteback::status::{self, Metrics, Report};
use remoteback_proxy::{SenderStatus, Status};
use remoteback_replay::Stats;

/// The proxy's backlog, deliveries and losses.
pub struct ProxyReport {
    pub status: Status,
}

impl Report for ProxyReport {
    fn metrics(&self, out: &mut Metrics) {
        let status = &self.status;
        out.gauge(
            "remoteback_proxy_clients",
            "Client connections open now.",
            status.clients() as i64,
        );
        out.gauge(
            "remoteback_proxy_backlog_bytes",
            "Bytes of records handed to Kafka and not yet acknowledged.",
            status.backlog_bytes() as i64,
        );
        out.gauge(
            "remoteback_proxy_backlog_limit_bytes",
            "The bound of the backlog (backlog_bytes).",
            status.backlog_limit().min(i64::MAX as u64) as i64,
        );
        out.counter(
            "remoteback_proxy_backlog_waits_total",
            "Writes held because the backlog was full (on_backlog_full = \"block\").",
            status.backlog_waits(),
        );
        let senders = status.kafka_senders();
        let per_sender = |out: &mut Metrics, name, help, count: fn(&SenderStatus) -> u64| {
            let mut family = out.counter_family(name, help);
            for s in &senders {
                let index = s.index.to_string();
                family.sample(&[("sender", &index), ("topic", &s.topic)], count(s));
            }
        };
        per_sender(
            out,
            "remoteback_proxy_records_delivered_total",
            "Records Kafka acknowledged.",
            |s| s.delivered,
        );
        per_sender(
            out,
            "remoteback_proxy_records_failed_total",
            "Records the producer gave up on after its retries (lost).",
            |s| s.failed,
        );
        per_sender(
            out,
            "remoteback_proxy_records_dropped_total",
            "Records dropped because the backlog or librdkafka's queue was full (lost).",
            |s| s.dropped,
        );
        out.counter(
            "remoteback_proxy_writes_uncaptured_total",
            "Writes forwarded but never answered before their connection ended (reply timeout, primary gone): they may have taken effect without a record.",
            status.writes_uncaptured(),
        );
        out.gauge(
            "remoteback_proxy_resync_needed",
            "1 once a record was lost or a write's outcome is unknown: the backup misses writes until it is resynced.",
            status.resync_needed() as i64,
        );
    }

    fn health(&self) -> Result<String, String> {
        let status = &self.status;
        if status.resync_needed() {
            return Err(format!(
                "resync needed: {} records did not reach Kafka and {} writes were never answered \
                 by the primary, the backup misses those writes",
                status.records_lost(),
                status.writes_uncaptured()
            ));
        }
        Ok(format!(
            "ok: backlog {} of {} bytes",
            status.backlog_bytes(),
            status.backlog_limit()
        ))
    }
}

/// The replay's progress and its wait for the backup.
pub struct ReplayReport {
    pub stats: Stats,
}

impl Report for ReplayReport {
    fn metrics(&self, out: &mut Metrics) {
        out.counter(
            "remoteback_replay_records_applied_total",
            "Records applied to the backup.",
            self.stats.applied(),
        );
        out.counter(
            "remoteback_replay_commands_refused_total",
            "Commands the backup refused (a sign it diverged).",
            self.stats.refused(),
        );
        out.counter(
            "remoteback_replay_backup_retries_total",
            "Failed attempts to reach or write the backup, each followed by a backoff.",
            self.stats.reconnects(),
        );
        out.gauge(
            "remoteback_replay_partitions_waiting",
            "Partitions waiting for the backup right now.",
            self.stats.waiting(),
        );
        out.gauge(
            "remoteback_replay_last_applied_primary_time_ms",
            "When the primary answered the newest write applied (ms since the epoch; 0 before the first).",
            self.stats.last_primary_ms().min(i64::MAX as u64) as i64,
        );
        let lag = match self.stats.last_primary_ms() {
            0 => 0,
            t => now_ms().saturating_sub(t),
        };
        out.gauge(
            "remoteback_replay_age_of_last_applied_ms",
            "Milliseconds since the primary answered the newest write applied: the lag while writes flow.",
            lag.min(i64::MAX as u64) as i64,
        );
    }

    fn health(&self) -> Result<String, String> {
        match self.stats.waiting() {
            0 => Ok(format!("ok: {} records applied", self.stats.applied())),
            n => Err(format!(
                "backup unavailable: {n} partitions waiting for it ({} retries so far)",
                self.stats.reconnects()
            )),
        }
    }
}

/// Binds `address` and serves `report` there for as long as the runtime
/// runs.
pub async fn start(address: &str, report: Arc<dyn Report>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    log::info!("serving /metrics and /health on {address}");
    tokio::spawn(status::serve(listener, report, std::future::pending()));
    Ok(())
}

//! What each service says on `/metrics` and `/health` (`metrics = "HOST:PORT"`).
//!
//! The proxy is unhealthy once it lost a record: the backup then misses a
//! write and only a resync (a fresh copy of the primary) makes it right, so
//! the state lasts until the proxy is restarted after that resync. The replay
//! is unhealthy while a partition waits for the backup.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use remoteback::status::{self, Metrics, Report};
use remoteback_proxy::drain::Drain;
use remoteback_proxy::sender::kafka::Counters;
use remoteback_proxy::sender::Senders;
use remoteback_replay::Stats;
use std::sync::atomic::{AtomicU64, Ordering};

/// The proxy's backlog, deliveries and losses.
pub struct ProxyReport {
    pub senders: Arc<Senders>,
    pub sessions: Arc<Drain>,
}

impl Report for ProxyReport {
    fn metrics(&self, out: &mut Metrics) {
        let backlog = self.senders.backlog();
        out.gauge(
            "remoteback_proxy_clients",
            "Client connections open now.",
            self.sessions.live() as i64,
        );
        out.gauge(
            "remoteback_proxy_backlog_bytes",
            "Bytes of records handed to Kafka and not yet acknowledged.",
            backlog.bytes() as i64,
        );
        out.gauge(
            "remoteback_proxy_backlog_limit_bytes",
            "The bound of the backlog (backlog_bytes).",
            backlog.limit().min(i64::MAX as u64) as i64,
        );
        out.counter(
            "remoteback_proxy_backlog_waits_total",
            "Writes held because the backlog was full (on_backlog_full = \"block\").",
            backlog.waits(),
        );
        let counters = self.senders.kafka_counters();
        let per_sender = |out: &mut Metrics, name, help, count: fn(&Counters) -> &AtomicU64| {
            let mut family = out.counter_family(name, help);
            for k in counters {
                let index = k.index.to_string();
                family.sample(
                    &[("sender", &index), ("topic", &k.topic)],
                    count(&k.counters).load(Ordering::Relaxed),
                );
            }
        };
        per_sender(
            out,
            "remoteback_proxy_records_delivered_total",
            "Records Kafka acknowledged.",
            |c| &c.delivered,
        );
        per_sender(
            out,
            "remoteback_proxy_records_failed_total",
            "Records the producer gave up on after its retries (lost).",
            |c| &c.failed,
        );
        per_sender(
            out,
            "remoteback_proxy_records_dropped_total",
            "Records dropped because the backlog or librdkafka's queue was full (lost).",
            |c| &c.dropped,
        );
        out.counter(
            "remoteback_proxy_writes_uncaptured_total",
            "Writes forwarded but never answered before their connection ended (reply timeout, primary gone): they may have taken effect without a record.",
            self.senders.uncaptured(),
        );
        out.gauge(
            "remoteback_proxy_resync_needed",
            "1 once a record was lost or a write's outcome is unknown: the backup misses writes until it is resynced.",
            self.senders.resync_needed() as i64,
        );
    }

    fn health(&self) -> Result<String, String> {
        if self.senders.resync_needed() {
            return Err(format!(
                "resync needed: {} records did not reach Kafka and {} writes were never answered \
                 by the primary, the backup misses those writes",
                self.senders.lost(),
                self.senders.uncaptured()
            ));
        }
        let backlog = self.senders.backlog();
        Ok(format!(
            "ok: backlog {} of {} bytes",
            backlog.bytes(),
            backlog.limit()
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Binds `address` and serves `report` there for as long as the runtime
/// runs.
pub async fn start(address: &str, report: Arc<dyn Report>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    log::info!("serving /metrics and /health on {address}");
    tokio::spawn(status::serve(listener, report, std::future::pending()));
    Ok(())
}

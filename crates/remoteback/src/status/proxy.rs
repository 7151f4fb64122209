//! What the proxy says on `/metrics` and `/health`.
//!
//! The proxy is unhealthy once it lost a record: the backup then misses a
//! write and only a resync (a fresh copy of the primary) makes it right, so
//! the state lasts until the proxy is restarted after that resync.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use remoteback_proxy::{SenderStatus, Status};

use super::{counter, counter_family, gauge, Report};

/// The proxy's clients, backlog, deliveries and losses.
pub struct ProxyReport {
    pub status: Status,
}

impl Report for ProxyReport {
    fn metrics(&self, out: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let status = &self.status;
        gauge(
            out,
            "remoteback_proxy_clients",
            "Client connections open now.",
            status.clients() as i64,
        )?;
        gauge(
            out,
            "remoteback_proxy_backlog_bytes",
            "Bytes of records handed to Kafka and not yet acknowledged.",
            status.backlog_bytes().min(i64::MAX as u64) as i64,
        )?;
        gauge(
            out,
            "remoteback_proxy_backlog_limit_bytes",
            "The bound of the backlog (backlog_bytes).",
            status.backlog_limit().min(i64::MAX as u64) as i64,
        )?;
        counter(
            out,
            "remoteback_proxy_backlog_waits_total",
            "Writes held because the backlog was full (on_backlog_full = block).",
            status.backlog_waits(),
        )?;
        let senders = status.kafka_senders();
        let indices: Vec<String> = senders.iter().map(|s| s.index.to_string()).collect();
        let per_sender =
            |out: &mut DescriptorEncoder<'_>, name, help, count: fn(&SenderStatus) -> u64| {
                let samples: Vec<_> = senders
                    .iter()
                    .zip(&indices)
                    .map(|(s, index)| {
                        (
                            [("sender", index.as_str()), ("topic", s.topic.as_str())],
                            count(s),
                        )
                    })
                    .collect();
                counter_family(out, name, help, &samples)
            };
        per_sender(
            out,
            "remoteback_proxy_records_delivered_total",
            "Records Kafka acknowledged.",
            |s| s.delivered,
        )?;
        per_sender(
            out,
            "remoteback_proxy_records_failed_total",
            "Records the producer gave up on after its retries (lost).",
            |s| s.failed,
        )?;
        per_sender(
            out,
            "remoteback_proxy_records_dropped_total",
            "Records dropped because the backlog or librdkafka's queue was full (lost).",
            |s| s.dropped,
        )?;
        counter(
            out,
            "remoteback_proxy_writes_uncaptured_total",
            "Writes forwarded but never answered before their connection ended (reply timeout, primary gone): they may have taken effect without a record.",
            status.writes_uncaptured(),
        )?;
        gauge(
            out,
            "remoteback_proxy_resync_needed",
            "1 once a record was lost or a write's outcome is unknown: the backup misses writes until it is resynced.",
            status.resync_needed() as i64,
        )
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

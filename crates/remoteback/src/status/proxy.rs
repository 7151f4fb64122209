//! What the proxy says on `/metrics` and `/health`.
//!
//! The proxy is unhealthy once it lost a record: the backup then misses a
//! write and only a resync (a fresh copy of the primary) makes it right, so
//! the state lasts until the proxy is restarted after that resync.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use remoteback_proxy::{SenderStatus, Status, SyncProgress, SyncState};

use super::{counter, counter_family, gauge, histogram, histogram_family, Report};

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
        counter(
            out,
            "remoteback_proxy_clients_refused_total",
            "Client connections refused because maxclients were open.",
            status.clients_refused(),
        )?;
        counter(
            out,
            "remoteback_proxy_client_tls_handshakes_failed_total",
            "Client connections closed because their TLS handshake failed or took over 10 s (bindtls).",
            status.client_handshakes_failed(),
        )?;
        counter(
            out,
            "remoteback_proxy_clients_closed_output_limit_total",
            "Clients closed because their unread replies passed client_output_buffer_limit.",
            status.clients_closed_output_limit(),
        )?;
        counter(
            out,
            "remoteback_proxy_clients_closed_query_limit_total",
            "Clients closed because an unfinished request passed client_query_buffer_limit.",
            status.clients_closed_query_limit(),
        )?;
        counter(
            out,
            "remoteback_proxy_clients_closed_idle_total",
            "Clients closed because they sent nothing for timeout seconds.",
            status.clients_closed_idle(),
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
        per_sender(
            out,
            "remoteback_proxy_barriers_total",
            "Records written to every partition of the topic because their keys span partitions or they name none (each copy also counts as a record).",
            |s| s.barriers,
        )?;
        per_sender(
            out,
            "remoteback_proxy_kafka_messages_total",
            "Kafka messages queued: the records of a partition that gather while its previous message is on its way travel as one.",
            |s| s.messages,
        )?;
        per_sender(
            out,
            "remoteback_proxy_heartbeats_total",
            "Heartbeats queued: records without commands to partitions that had none for heartbeat_ms, so that the replay's lag stays true when no one writes.",
            |s| s.heartbeats,
        )?;
        let deliveries = status.kafka_delivery_seconds();
        let samples: Vec<([(&str, &str); 1], _)> = deliveries
            .iter()
            .map(|(topic, h)| ([("topic", topic.as_str())], h.clone()))
            .collect();
        histogram_family(
            out,
            "remoteback_proxy_kafka_delivery_seconds",
            "Seconds from handing a message with records to librdkafka to the broker's acknowledgement, per Kafka sender.",
            &samples,
        )?;
        let commands: Vec<_> = status
            .commands()
            .into_iter()
            .map(|(name, n)| ([("command", name)], n))
            .collect();
        counter_family(
            out,
            "remoteback_proxy_commands_total",
            "Client commands by name, as the command table names them (config|get for a subcommand; unknown for names no table knows).",
            &commands,
        )?;
        histogram_family(
            out,
            "remoteback_proxy_added_latency_seconds",
            "Seconds the proxy held a read's bytes: request, from reading a client's requests to having written them to the primary (waits for key locks and a full backlog included); reply, from reading the primary's replies to having handed them to the client (under ack = kafka, to the writer that holds them: the wait for Kafka is not in it, unless 256 chunks of replies wait already).",
            &[
                ([("direction", "request")], status.request_seconds()),
                ([("direction", "reply")], status.reply_seconds()),
            ],
        )?;
        let errors: Vec<_> = status
            .upstream_errors()
            .into_iter()
            .map(|(kind, n)| ([("kind", kind.label())], n))
            .collect();
        counter_family(
            out,
            "remoteback_proxy_upstream_errors_total",
            "Client sessions the primary failed: connect (unreachable, TLS), closed (it closed with replies owed), timeout (rsptimeout), bad_reply (not RESP), io.",
            &errors,
        )?;
        let (shared_commands, shared_connections) = status.shared_upstream();
        counter(
            out,
            "remoteback_proxy_shared_upstream_commands_total",
            "Client commands sent on the connection to the primary that sessions share (share_upstream): keyed commands of connections in their initial state.",
            shared_commands,
        )?;
        counter(
            out,
            "remoteback_proxy_shared_upstream_connections_total",
            "Shared connections to the primary opened: one at the first shared command, one more after each failure.",
            shared_connections,
        )?;
        if let Some(waits) = status.key_lock_wait_seconds() {
            histogram(
                out,
                "remoteback_proxy_key_lock_wait_seconds",
                "Seconds a write waited for another client's write to the same key to be captured (only writes that waited; its count is the number of waits).",
                &waits,
            )?;
        }
        counter(
            out,
            "remoteback_proxy_writes_uncaptured_total",
            "Writes forwarded but never answered before their connection ended (reply timeout, primary gone): they may have taken effect without a record.",
            status.writes_uncaptured(),
        )?;
        counter(
            out,
            "remoteback_proxy_unclassified_commands_total",
            "Client commands in neither the primary's command table nor the built-in one: captured as writes with unknown keys (ordering barrier, keyless record).",
            status.unclassified_commands(),
        )?;
        gauge(
            out,
            "remoteback_proxy_resync_needed",
            "1 once a record was lost or a write's outcome is unknown: the backup misses writes until a full sync completes.",
            status.resync_needed() as i64,
        )?;
        sync(out, &status.sync())
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

/// The running or last sync (`remoteback sync`); all gauges, since each
/// sync starts from zero.
fn sync(out: &mut DescriptorEncoder<'_>, p: &SyncProgress) -> fmt::Result {
    let int = |n: u64| n.min(i64::MAX as u64) as i64;
    gauge(
        out,
        "remoteback_proxy_sync_running",
        "1 while a sync copies the primary's keys to the backup.",
        (p.state == SyncState::Running) as i64,
    )?;
    let samples: [(&str, &str, u64); 10] = [
        (
            "keys_done",
            "Keys the running or last sync copied.",
            p.keys_done,
        ),
        (
            "keys_total",
            "Keys in the databases the sync walks (DBSIZE at its start).",
            p.keys_total,
        ),
        (
            "keys_deleted",
            "Keys the sync found gone after SCAN saw them (copied as DEL).",
            p.keys_deleted,
        ),
        (
            "big_keys",
            "Keys too big for one record, copied as typed commands in chunks.",
            p.big_keys,
        ),
        (
            "keys_recopied",
            "Keys copied again after the walk, because a write naming several keys ran during it.",
            p.keys_recopied,
        ),
        (
            "unordered_writes",
            "Writes whose keys the proxy cannot name (SWAPDB, MOVE, COPY, scripts without declared keys) that ran during the sync.",
            p.unordered_writes,
        ),
        (
            "records",
            "Records the sync handed to the senders.",
            p.records,
        ),
        ("bytes", "Bytes of those records.", p.bytes),
        (
            "inflight_bytes",
            "Bytes of the sync's records Kafka has not acknowledged.",
            p.inflight_bytes,
        ),
        (
            "backlog_pauses",
            "Times the sync paused because the clients' backlog was full.",
            p.backlog_pauses,
        ),
    ];
    for (name, help, value) in samples {
        gauge(
            out,
            &format!("remoteback_proxy_sync_{name}"),
            help,
            int(value),
        )?;
    }
    gauge(
        out,
        "remoteback_proxy_sync_keys_per_second",
        "Keys the sync copied per second, on average so far.",
        p.keys_per_second() as i64,
    )?;
    let eta = match p.state {
        SyncState::Running if p.keys_per_second() > 0.0 => {
            (p.keys_total.saturating_sub(p.keys_done) as f64 / p.keys_per_second()) as i64
        }
        _ => 0,
    };
    gauge(
        out,
        "remoteback_proxy_sync_eta_seconds",
        "Seconds the running sync needs still, at its rate so far (0 when none runs).",
        eta,
    )
}

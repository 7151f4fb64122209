//! What a running proxy can tell about itself: the numbers behind
//! `/metrics` and `/health`, read without locking anything a session uses.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::metrics::histogram::Histogram;

use crate::ordering::OrderTables;
use crate::sender::Senders;
use crate::session::limits::{ClientLimits, Closed};
use crate::session::metrics::SessionMetrics;
pub use crate::session::metrics::UpstreamError;
use crate::shutdown::Drain;
use crate::sync::{SyncControl, SyncProgress};
use crate::table::CommandTable;

/// A handle on a running proxy's counters; cheap to clone.
#[derive(Clone)]
pub struct Status {
    senders: Arc<Senders>,
    sessions: Arc<Drain>,
    limits: Arc<ClientLimits>,
    sessions_metrics: Arc<SessionMetrics>,
    sync: Arc<SyncControl>,
    table: Arc<CommandTable>,
    ordering: Option<Arc<OrderTables>>,
}

/// Buckets of the latency histograms, in seconds: 0.5 ms doubling to
/// about 16 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16)
}

/// One `KafkaSender`'s deliveries since start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderStatus {
    /// Its position among the `[[sender]]` tables.
    pub index: usize,
    pub topic: String,
    /// Records Kafka acknowledged.
    pub delivered: u64,
    /// Records the producer gave up on after its retries (lost).
    pub failed: u64,
    /// Records dropped because the backlog or librdkafka's queue was full
    /// (lost).
    pub dropped: u64,
    /// Barriers written: records copied to every partition because their
    /// keys span partitions or they name none.
    pub barriers: u64,
    /// Kafka messages queued: records packed together are one.
    pub messages: u64,
    /// Heartbeats queued.
    pub heartbeats: u64,
}

impl Status {
    pub(crate) fn new(
        senders: Arc<Senders>,
        sessions: Arc<Drain>,
        limits: Arc<ClientLimits>,
        sessions_metrics: Arc<SessionMetrics>,
        sync: Arc<SyncControl>,
        table: Arc<CommandTable>,
        ordering: Option<Arc<OrderTables>>,
    ) -> Status {
        Status {
            senders,
            sessions,
            limits,
            sessions_metrics,
            sync,
            table,
            ordering,
        }
    }

    /// Client commands by command name (`config|get` for a subcommand;
    /// `unknown` for names no command table knows), since start.
    pub fn commands(&self) -> Vec<(&'static str, u64)> {
        self.sessions_metrics.commands()
    }

    /// Seconds from reading a client's bytes to having written them to the
    /// primary, per read.
    pub fn request_seconds(&self) -> Histogram {
        self.sessions_metrics.request_seconds.clone()
    }

    /// Seconds from reading the primary's replies to having handed them to
    /// the client, per read.
    pub fn reply_seconds(&self) -> Histogram {
        self.sessions_metrics.reply_seconds.clone()
    }

    /// Clients whose TLS handshake failed (`bindtls`), since start.
    pub fn client_handshakes_failed(&self) -> u64 {
        self.sessions_metrics.client_handshakes_failed()
    }

    /// Commands sent on the connection sessions share, and shared
    /// connections opened, since start.
    pub fn shared_upstream(&self) -> (u64, u64) {
        self.sessions_metrics.shared()
    }

    /// Sessions the primary failed, by kind, since start.
    pub fn upstream_errors(&self) -> Vec<(UpstreamError, u64)> {
        self.sessions_metrics.upstream_errors()
    }

    /// Per Kafka sender (by topic), the time from handing a message to
    /// librdkafka to its acknowledgement.
    pub fn kafka_delivery_seconds(&self) -> Vec<(String, Histogram)> {
        self.senders
            .kafka_counters()
            .iter()
            .map(|k| (k.topic.clone(), k.counters.delivery_seconds.clone()))
            .collect()
    }

    /// How long writes waited for other sessions' key locks (none with
    /// `message = "ROW"`, which takes no locks).
    pub fn key_lock_wait_seconds(&self) -> Option<Histogram> {
        self.ordering.as_ref().map(|o| o.lock_wait_seconds.clone())
    }

    /// The running or last sync's progress.
    pub fn sync(&self) -> SyncProgress {
        self.sync.progress()
    }

    /// Client connections open now.
    pub fn clients(&self) -> usize {
        self.sessions.live()
    }

    /// Clients refused because `maxclients` were connected, since start.
    pub fn clients_refused(&self) -> u64 {
        self.sessions.refused()
    }

    /// Clients closed because their unread replies passed
    /// `client_output_buffer_limit`, since start.
    pub fn clients_closed_output_limit(&self) -> u64 {
        self.limits.closed(Closed::OutputBuffer)
    }

    /// Clients closed because an unfinished request passed
    /// `client_query_buffer_limit`, since start.
    pub fn clients_closed_query_limit(&self) -> u64 {
        self.limits.closed(Closed::QueryBuffer)
    }

    /// Clients closed because they were idle past `timeout`, since start.
    pub fn clients_closed_idle(&self) -> u64 {
        self.limits.closed(Closed::Idle)
    }

    /// Bytes of records handed to Kafka and not yet acknowledged.
    pub fn backlog_bytes(&self) -> u64 {
        self.senders.backlog().bytes()
    }

    /// The bound of the backlog (`backlog_bytes`).
    pub fn backlog_limit(&self) -> u64 {
        self.senders.backlog().limit()
    }

    /// Writes held because the backlog was full, since start.
    pub fn backlog_waits(&self) -> u64 {
        self.senders.backlog().waits()
    }

    /// Each `KafkaSender`'s deliveries, in configuration order.
    pub fn kafka_senders(&self) -> Vec<SenderStatus> {
        self.senders
            .kafka_counters()
            .iter()
            .map(|k| SenderStatus {
                index: k.index,
                topic: k.topic.clone(),
                delivered: k.counters.delivered.load(Ordering::Relaxed),
                failed: k.counters.failed.load(Ordering::Relaxed),
                dropped: k.counters.dropped.load(Ordering::Relaxed),
                barriers: k.counters.barriers.load(Ordering::Relaxed),
                messages: k.counters.messages.load(Ordering::Relaxed),
                heartbeats: k.counters.heartbeats.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Records lost by every Kafka sender since start.
    pub fn records_lost(&self) -> u64 {
        self.senders.lost()
    }

    /// Writes forwarded but never answered before their connection ended:
    /// they may have taken effect without a record.
    pub fn writes_uncaptured(&self) -> u64 {
        self.senders.uncaptured()
    }

    /// Client commands in neither the primary's command table nor the
    /// built-in one, since start (captured as writes with unknown keys).
    pub fn unclassified_commands(&self) -> u64 {
        self.table.unclassified()
    }

    /// Whether the backup misses writes and needs a resync.
    pub fn resync_needed(&self) -> bool {
        self.senders.resync_needed()
    }
}

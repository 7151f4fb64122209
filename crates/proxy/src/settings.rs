//! The proxy's effective settings, after the configuration file was read and
//! validated (parsing lives in the binary's `config` module).

use std::time::Duration;

use remoteback_protocol::{Format, Worker};
pub use remoteback_transport::{ServerTlsSettings, TlsSettings};

pub use crate::capture::Filter;
pub use crate::sender::ack::AckMode;
pub use crate::sender::backlog::OnFull;
pub use crate::sender::MAX_SENDERS;
pub use crate::session::limits::{OutputLimit, DEFAULT_QUERY_BUFFER_LIMIT};

/// The default bound of the backlog between capture and Kafka: 256 MiB.
pub const DEFAULT_BACKLOG_BYTES: u64 = 256 * 1024 * 1024;

/// Everything the proxy needs to run.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxySettings {
    /// Address clients connect to (`bindip`).
    pub bind_ip: String,
    /// Port clients connect to (`bindport`).
    pub bind_port: u16,
    /// The primary Redis (`connip`).
    pub upstream_ip: String,
    /// The primary Redis port (`connport`).
    pub upstream_port: u16,
    /// TLS to the primary, for every connection the proxy opens to it
    /// (`conntls` and its `conntls_*` files); `None` for plain TCP.
    pub upstream_tls: Option<TlsSettings>,
    /// TLS for the proxy's clients on `bindport` (`bindtls` and its
    /// `bindtls_*` files); `None` for plain TCP.
    pub client_tls: Option<ServerTlsSettings>,
    /// The user the proxy's own connections to the primary (the sync's)
    /// authenticate as (`connusername`); clients authenticate themselves.
    pub upstream_username: Option<String>,
    /// Their password (`connpassword`).
    pub upstream_password: Option<String>,
    /// Payload format of captured records (`message`).
    pub message: Format,
    /// How client sessions are scheduled (`worker`).
    pub worker: Worker,
    /// Threads of the runtime the sessions run on (`worker_threads`);
    /// `None` for [`default_worker_threads`].
    pub worker_threads: Option<usize>,
    /// Clients connected at most (`maxclients`, Redis's default 10000); one
    /// more is answered `-ERR max number of clients reached` and closed.
    pub max_clients: usize,
    /// TCP keepalive probes on client connections after this long idle
    /// (`tcp_keepalive`, Redis's default 300 s); `None` sends none.
    pub tcp_keepalive: Option<Duration>,
    /// A client that sent nothing for this long, with nothing owed to it
    /// and not subscribed, is closed (`timeout`, Redis's default 0: never).
    pub idle_timeout: Option<Duration>,
    /// Replies the proxy holds for a client that does not read them
    /// (`client_output_buffer_limit`).
    pub output_limit: OutputLimit,
    /// Bytes of an unfinished request a client may make the proxy hold
    /// (`client_query_buffer_limit`, Redis's default 1 GiB); past it the
    /// client is closed.
    pub query_buffer_limit: u64,
    /// The largest bulk argument of a client's request
    /// (`proto_max_bulk_len`, Redis's `proto-max-bulk-len`, 512 MiB); a
    /// longer one is answered `-ERR Protocol error: invalid bulk length`
    /// and the connection closed.
    pub proto_max_bulk_len: u64,
    /// Whether sessions send the commands that can go on it (keyed,
    /// from connections in their initial state) on one connection they
    /// share (`share_upstream`, default true): the primary then takes many
    /// clients' commands per read.
    pub share_upstream: bool,
    /// How long to wait for the primary's reply to a command (`rsptimeout`);
    /// `None` waits forever. Blocking commands and pub/sub are exempt.
    pub reply_timeout: Option<Duration>,
    /// How long a partition of a Kafka sender's topic may go without a
    /// record before the sender writes a heartbeat to it (`heartbeat_ms`);
    /// `None` writes none.
    pub heartbeat: Option<Duration>,
    /// Bytes of records not yet acknowledged by Kafka the proxy keeps at
    /// most (`backlog_bytes`).
    pub backlog_bytes: u64,
    /// What a full backlog does (`on_backlog_full`).
    pub on_backlog_full: OnFull,
    /// Whether replies to writes wait for Kafka (`ack`).
    pub ack: AckMode,
    /// Where `/metrics` and `/health` are served (`metrics`), if anywhere.
    pub metrics: Option<String>,
    /// The token the admin requests that change something (sync, repair)
    /// must bear (`admin_token`, or read from `admin_token_file`); without
    /// one they are taken only from loopback addresses.
    pub admin_token: Option<String>,
    /// Where captured records go (`[[sender]]`), in configuration order.
    pub senders: Vec<SenderSettings>,
}

/// One `[[sender]]` table.
#[derive(Clone, Debug, PartialEq)]
pub enum SenderSettings {
    Log(LogSenderSettings),
    Kafka(KafkaSenderSettings),
}

/// `class = "LogSender"`: every captured record written through the log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSenderSettings {
    /// The log target records are written under (`logger`).
    pub logger: String,
    /// The level they are written at (`level`).
    pub level: log::Level,
}

/// `class = "KafkaSender"`: captured writes produced to a Kafka topic.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaSenderSettings {
    pub topic: String,
    pub filter: Filter,
    /// librdkafka properties, already renamed (`bootstrap-servers` →
    /// `bootstrap.servers`) and rendered as strings, in file order.
    pub kafka: Vec<(String, String)>,
    /// The most payload bytes packed into one Kafka message (`pack_bytes`);
    /// 0 sends each record as its own message.
    pub pack_bytes: usize,
    /// The least time between two messages of a partition while records
    /// follow one another (`pack_gap_ms`); zero sends a pack as soon as the
    /// message before it was acknowledged.
    pub pack_gap: std::time::Duration,
}

/// `pack_bytes` unless the configuration says otherwise: well under the
/// 1 MB a Kafka broker takes per message by default (`message.max.bytes`),
/// and a few thousand small writes.
pub const DEFAULT_PACK_BYTES: usize = 512 * 1024;

/// `pack_gap_ms` unless the configuration says otherwise. tansu's cost is
/// per message (and per header): at `SET -P 1` with 50 clients, 2 ms took
/// its CPU from 22 to 10 µs per write and records per message from 32 to
/// 85; 5 ms took it to 4.8 µs but the lag at 20,000 writes/s past 20 ms.
pub const DEFAULT_PACK_GAP_MS: u64 = 2;

/// `worker_threads` when the file does not set it: half the cores the
/// process may use, at least one. The proxy needs CPU beyond its runtime's
/// threads: librdkafka's threads and the sender's packing thread, and the
/// kernel's loopback and network work, which is most of an unpipelined
/// command's cost. On 2 cores one runtime thread took 15-20 % less CPU per
/// unpipelined command than two, which woke each other for every hand-over
/// (BENCHMARKS.md, 2026-12-03 13:30).
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

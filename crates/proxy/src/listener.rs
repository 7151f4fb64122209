//! Accepting clients and scheduling their sessions (`worker`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remoteback_protocol::{request, Format, Worker};
use tokio::net::{TcpListener, TcpStream};

use crate::capture::{Routes, ScriptCache};
use crate::failover::Failover;
use crate::open_files;
use crate::ordering::{OrderTables, WriteOrder};
use crate::primary::Primary;
use crate::sender::topic::{self, TopicError};
use crate::sender::{SenderError, Senders, Undelivered};
use crate::session::limits::ClientLimits;
use crate::session::shared::{SharedUpstream, SHARED_HOLDER};
use crate::session::{self, SessionContext};
use crate::settings::{ProxySettings, SenderSettings};
use crate::shutdown::{Drain, Live};
use crate::status::Status;
use crate::sync::SyncControl;
use crate::table::{self, CommandTable};
use remoteback_transport::{Acceptor, Connector};

/// How long shutdown waits for senders to deliver what they buffered.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for sessions to get the replies owed to them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the proxy could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS to the primary: {0}")]
    Tls(#[from] remoteback_transport::TlsError),
    #[error(transparent)]
    Sender(#[from] SenderError),
    #[error("sender[{index}] (KafkaSender): {source}")]
    Topic { index: usize, source: TopicError },
    #[error("records not delivered at shutdown: {}", join(.0))]
    Undelivered(Vec<Undelivered>),
    #[error("flushing the senders failed: {0}")]
    Flush(#[from] tokio::task::JoinError),
}

fn join(undelivered: &[Undelivered]) -> String {
    let lines: Vec<String> = undelivered.iter().map(|u| u.to_string()).collect();
    lines.join("; ")
}

/// A bound, ready proxy.
pub struct Proxy {
    listener: TcpListener,
    settings: ProxySettings,
    ctx: Arc<SessionContext>,
    sync: Arc<SyncControl>,
    table: Arc<CommandTable>,
    /// Keeps `table` the primary's (see `table::watch`); stopped with the
    /// proxy.
    table_watch: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Builds the senders as [`bind`](Proxy::bind) would, so that librdkafka
    /// checks their properties, without connecting anywhere.
    pub fn validate(settings: &ProxySettings) -> Result<(), ProxyError> {
        Senders::build(settings)?;
        Ok(())
    }

    /// Builds the senders, makes sure their topics exist, reads the
    /// primary's command table (or, if it cannot answer, starts with the
    /// built-in one and asks again in the background) and binds the
    /// listening socket.
    pub async fn bind(settings: ProxySettings) -> Result<Proxy, ProxyError> {
        let source = format!("{}:{}", hostname(), settings.bind_port);
        let senders = Senders::build(&settings)?;
        for (index, s) in settings.senders.iter().enumerate() {
            if let SenderSettings::Kafka(k) = s {
                let partitions = topic::ensure_topic(k)
                    .await
                    .map_err(|source| ProxyError::Topic { index, source })?;
                senders.set_partitions(index, partitions);
            }
        }
        let upstream = Connector::new(
            &settings.upstream_ip,
            settings.upstream_port,
            settings.upstream_tls.as_ref(),
        )?;
        let clients = Acceptor::new(settings.client_tls.as_ref())?;
        let primary = Primary {
            host: settings.upstream_ip.clone(),
            port: settings.upstream_port,
            tls: settings.upstream_tls.clone(),
            username: settings.upstream_username.clone(),
            password: settings.upstream_password.clone(),
        };
        let table = Arc::new(CommandTable::builtin());
        let mut watch = table::Watch::default();
        watch.poll(&primary, &table).await;
        let table_watch = tokio::spawn(table::watch(watch, primary.clone(), table.clone()));
        open_files::raise_for(settings.max_clients);
        let addr = format!("{}:{}", settings.bind_ip, settings.bind_port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let ordering = (settings.message != Format::Row).then(OrderTables::new);
        // One connection for what sessions can share (`share_upstream`):
        // not in ROW format, which replays each client's connection as its
        // own, nor with a thread per client, which is chosen to keep
        // clients apart.
        let shared = match (&ordering, settings.share_upstream, settings.worker) {
            (Some(tables), true, Worker::Coroutine) => Some(Arc::new(SharedUpstream::new(
                WriteOrder::for_shared(SHARED_HOLDER, tables.clone(), &primary),
            ))),
            _ => None,
        };
        let ctx = Arc::new(SessionContext {
            clients,
            upstream,
            primary,
            ordering,
            shared,
            routes: Arc::new(Routes::new(&settings, &source, table.clone())),
            senders: Arc::new(senders),
            scripts: Arc::new(ScriptCache::new()),
            reply_timeout: settings.reply_timeout,
            limits: Arc::new(ClientLimits::new(
                settings.output_limit,
                settings.idle_timeout,
                settings.query_buffer_limit,
            )),
            request_limits: request::Limits {
                max_bulk_len: settings.proto_max_bulk_len,
            },
            drain: Drain::new(),
            metrics: Arc::default(),
            refusing: Default::default(),
        });
        if let Some(heartbeat) = settings
            .heartbeat
            .and_then(|every| ctx.routes.heartbeat(every))
        {
            ctx.senders.start_heartbeats(&heartbeat);
        }
        let sync = SyncControl::new(ctx.clone());
        Ok(Proxy {
            listener,
            settings,
            ctx,
            sync,
            table,
            table_watch,
        })
    }

    /// The proxy's counters (for `/metrics` and `/health`).
    pub fn status(&self) -> Status {
        Status::new(
            self.ctx.senders.clone(),
            self.ctx.drain.clone(),
            self.ctx.limits.clone(),
            self.ctx.metrics.clone(),
            self.sync.clone(),
            self.table.clone(),
            self.ctx.ordering.clone(),
        )
    }

    /// This proxy's side of a planned failover (for the admin endpoints).
    pub fn failover(&self) -> Arc<Failover> {
        let kafka = self
            .settings
            .senders
            .iter()
            .filter_map(|s| match s {
                SenderSettings::Kafka(k) => Some((
                    k.topic.clone(),
                    k.kafka
                        .iter()
                        .find(|(name, _)| name == "bootstrap.servers")
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default(),
                )),
                SenderSettings::Log(_) => None,
            })
            .collect();
        Failover::new(
            self.ctx.clone(),
            self.status(),
            self.ctx.upstream.addr().to_owned(),
            kafka,
        )
    }

    /// Syncs and repairs of this proxy (for the admin endpoints).
    pub fn sync(&self) -> Arc<SyncControl> {
        self.sync.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts clients until `shutdown` resolves, then flushes the senders.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
        log::info!(
            "proxy listening on {}{} for primary {}{}, message={}, worker={}, worker_threads={}, senders: {}",
            self.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            if self.ctx.clients.is_tls() {
                " (TLS)"
            } else {
                ""
            },
            self.ctx.upstream.addr(),
            if self.ctx.upstream.is_tls() {
                " (TLS)"
            } else {
                ""
            },
            self.settings.message,
            self.settings.worker,
            tokio::runtime::Handle::current().metrics().num_workers(),
            self.ctx.senders.describe().join(", ")
        );
        let next_conn = AtomicU64::new(1);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // Counted here, not when the session starts, so a
                        // burst of connections cannot pass the limit.
                        let live = self.ctx.drain.enter();
                        if self.ctx.drain.live() > self.settings.max_clients {
                            drop(live);
                            refuse(stream, peer, self.settings.max_clients, &self.ctx.drain, self.ctx.clients.is_tls());
                            continue;
                        }
                        if let Some(idle) = self.settings.tcp_keepalive {
                            keepalive(&stream, idle);
                        }
                        let conn = next_conn.fetch_add(1, Ordering::Relaxed);
                        spawn_session(self.settings.worker, stream, conn, self.ctx.clone(), live);
                    }
                    Err(e) => {
                        log::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        self.table_watch.abort();
        log::info!("proxy shutting down: finishing the commands in flight");
        let cut = self.ctx.drain.close(DRAIN_TIMEOUT).await;
        if cut > 0 {
            log::warn!("{cut} sessions still waiting after {DRAIN_TIMEOUT:?} (blocked clients); closing them");
        }
        log::info!("proxy shutting down: flushing senders");
        let senders = self.ctx.senders.clone();
        let undelivered = tokio::task::spawn_blocking(move || senders.flush(FLUSH_TIMEOUT)).await?;
        if undelivered.is_empty() {
            Ok(())
        } else {
            Err(ProxyError::Undelivered(undelivered))
        }
    }
}

/// `maxclients` reached: Redis's answer, then the connection closes. The
/// reply is a few bytes a fresh socket's buffer always takes, so it is
/// written without waiting. A TLS client (`tls`) is closed without it: the
/// answer would need a handshake the proxy has no room for, and plain bytes
/// would only read as a TLS error.
fn refuse(stream: TcpStream, peer: std::net::SocketAddr, max: usize, drain: &Drain, tls: bool) {
    let n = drain.refuse();
    if !tls {
        let _ = stream.try_write(b"-ERR max number of clients reached\r\n");
    }
    if n == 1 || n.is_power_of_two() {
        log::warn!(
            "client {peer} refused: {max} clients connected (maxclients); {n} refused so far"
        );
    }
}

/// Keepalive probes after `idle` without traffic, as Redis's `tcp-keepalive`,
/// so a client that vanished without a FIN (a crashed host, a dropped NAT
/// entry) is noticed and its session ends.
fn keepalive(stream: &TcpStream, idle: Duration) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval((idle / 3).max(Duration::from_secs(1)));
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&probes) {
        log::debug!("cannot set TCP keepalive on a client connection: {e}");
    }
}

/// Runs a session as a task on the shared pool (`coroutine`) or on an OS
/// thread of its own with a single-threaded runtime (`thread`). `live`
/// counts it among the connected clients until it ends.
fn spawn_session(
    worker: Worker,
    stream: TcpStream,
    conn: u64,
    ctx: Arc<SessionContext>,
    live: Live,
) {
    match worker {
        Worker::Coroutine => {
            tokio::spawn(session::run(stream, conn, ctx, live));
        }
        Worker::Thread => {
            let std_stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("client {conn}: cannot hand connection to a thread: {e}");
                    return;
                }
            };
            let spawned = std::thread::Builder::new()
                .name(format!("session-{conn}"))
                .spawn(move || run_on_own_thread(std_stream, conn, ctx, live));
            if let Err(e) = spawned {
                log::warn!("client {conn}: cannot start a session thread: {e}");
            }
        }
    }
}

fn run_on_own_thread(stream: std::net::TcpStream, conn: u64, ctx: Arc<SessionContext>, live: Live) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::warn!("client {conn}: cannot start a runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        match TcpStream::from_std(stream) {
            Ok(s) => session::run(s, conn, ctx, live).await,
            Err(e) => log::warn!("client {conn}: {e}"),
        }
    });
}

/// This machine's name, for the `rb-source` header.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

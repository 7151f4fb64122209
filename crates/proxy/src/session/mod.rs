//! One client connection and its own upstream connection to the primary.
//!
//! A session is two loops joined by a channel. The client side
//! ([`client`]) reads the client's bytes, finds complete commands, tells the
//! upstream side what is in flight ([`inflight`]) and forwards the bytes
//! unchanged. The upstream side ([`upstream`]) reads the primary's bytes,
//! finds complete replies, matches each to its command, lets capture record
//! writes that took effect, and hands the bytes unchanged to the client's
//! output ([`output`]). Neither loop waits for the other, so pipelining is
//! preserved.
//!
//! Keyed commands of a session whose connection is still in its initial
//! state go on a connection the sessions share instead ([`route`],
//! [`shared`]), which hands their replies to the upstream side.

mod budget;
mod client;
pub(crate) mod inflight;
pub(crate) mod limits;
pub(crate) mod metrics;
mod output;
mod refusal;
mod route;
pub(crate) mod shared;
mod tunnel;
mod upstream;

use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use remoteback_protocol::record::now_ms;
use remoteback_protocol::Format;
use remoteback_transport::{Acceptor, Connector, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::capture::{Capture, Routes, ScriptCache};
use crate::ordering::{OrderTables, WriteOrder};
use crate::primary::Primary;
use crate::sender::ack::AckMode;
use crate::sender::Senders;
use crate::shutdown::{Drain, Live};
use budget::InFlightBudget;
use limits::ClientLimits;
use metrics::{SessionMetrics, UpstreamError};
use output::{ClientWriter, ReplyOutput};
use route::Owed;
use shared::{Member, SharedUpstream};

/// What every session of a proxy shares.
pub(crate) struct SessionContext {
    /// How a client's connection is taken (plain or TLS, `bindtls`).
    pub clients: Acceptor,
    /// How a session reaches the primary (plain or TLS).
    pub upstream: Connector,
    /// The primary for the proxy's own connections, with its credentials.
    pub primary: Primary,
    /// Orders conflicting writes of different clients (not for `ROW`,
    /// which replays each connection on its own).
    pub ordering: Option<Arc<OrderTables>>,
    /// The connection sessions share for what can go on it
    /// ([`route`]); `None` keeps every command on its session's own.
    pub shared: Option<Arc<SharedUpstream>>,
    /// Which senders take which commands, and how records are built.
    pub routes: Arc<Routes>,
    pub senders: Arc<Senders>,
    /// Script bodies seen on any connection (`EVALSHA` → `EVAL`).
    pub scripts: Arc<ScriptCache>,
    pub reply_timeout: Option<Duration>,
    /// The output buffer limit and idle timeout, and the clients they closed.
    pub limits: Arc<ClientLimits>,
    /// The limits client requests are parsed under (`proto_max_bulk_len`).
    pub request_limits: remoteback_protocol::request::Limits,
    /// Shutdown: sessions stop reading requests and finish what is in flight.
    pub drain: Arc<Drain>,
    /// Commands by name, the proxy's own latency, the primary's failures.
    pub metrics: Arc<SessionMetrics>,
    /// A planned failover refuses writes with `-READONLY` rather than
    /// holding them (set just before the writes are paused, cleared just
    /// before they go again).
    pub refusing: AtomicBool,
}

/// Serves one client until it disconnects or the primary does.
/// `_live` counts it among the connected clients until it returns.
pub(crate) async fn run(socket: TcpStream, conn: u64, ctx: Arc<SessionContext>, _live: Live) {
    let peer = socket
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = socket.set_nodelay(true);
    let fd = socket.as_raw_fd();
    let mut client = match ctx.clients.accept(socket).await {
        Ok(client) => client,
        Err(e) => {
            ctx.metrics.client_handshake_failed();
            log::info!("client {conn} ({peer}): TLS handshake failed: {e}");
            return;
        }
    };
    let upstream = match ctx.upstream.connect().await {
        Ok(u) => u,
        Err(e) => {
            ctx.metrics.upstream_error(UpstreamError::Connect);
            let addr = ctx.upstream.addr();
            log::warn!("client {conn} ({peer}): primary {addr} unreachable: {e}");
            let reason = e.to_string().replace(['\r', '\n'], " ");
            let msg = format!("-ERR remoteback: primary {addr} unreachable: {reason}\r\n");
            let _ = client.write_all(msg.as_bytes()).await;
            refuse_gently(client).await;
            return;
        }
    };
    log::debug!("client {conn} ({peer}) connected");
    let (client_rd, client_wr) = client.into_split();
    let (upstream_rd, mut upstream_wr) = upstream.into_split();
    let (ordering, client_id) = match &ctx.ordering {
        Some(tables) => {
            match WriteOrder::start(conn, tables.clone(), &mut upstream_wr, &ctx.primary).await {
                Ok((ordering, id)) => (Some(ordering), Some(id)),
                Err(e) => {
                    log::debug!("client {conn}: primary closed: {e}");
                    return;
                }
            }
        }
        None => (None, None),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (replies_out, release) = match ctx.senders.ack() {
        AckMode::Redis => (
            ReplyOutput::Direct(ClientWriter::new(
                client_wr,
                ctx.limits.clone(),
                peer.clone(),
                fd,
            )),
            None,
        ),
        AckMode::Kafka => {
            let (held_tx, held_rx) = mpsc::channel(output::MAX_WAITING_CHUNKS);
            (
                ReplyOutput::AfterAck(held_tx),
                Some(output::release_acked(client_wr, held_rx)),
            )
        }
    };

    // The request loop borrows the upstream's write half, so the half stays
    // open after the loop ends: dropping it would send FIN, and Redis drops
    // a connection at EOF without sending the replies it still owes.
    let budget = Arc::new(InFlightBudget::new(ctx.limits.idle_timeout.is_some()));
    let owed = Arc::new(Owed::default());
    let (shared_tx, shared_rx) = mpsc::unbounded_channel();
    let member = Arc::new(Member {
        replies: shared_tx,
        budget: budget.clone(),
    });
    let lanes = client::Lanes::new(tx, ctx.clone(), member, owed.clone());
    let requests = client::forward_requests(
        client_rd,
        &mut upstream_wr,
        ctx.clone(),
        conn,
        ordering.clone(),
        budget.clone(),
        lanes,
    );
    let capture = Capture::new(ctx.routes.clone(), ctx.senders.clone(), ctx.scripts.clone());
    let replies = upstream::forward_replies(
        upstream_rd,
        replies_out,
        capture,
        ctx.clone(),
        upstream::Order {
            ordering,
            client_id,
        },
        budget,
        upstream::ReplyLanes {
            own: rx,
            shared: shared_rx,
            owed,
        },
    );
    // With held replies, the reply loop is done when the writer wrote the
    // last of them.
    let replies = async {
        match release {
            None => replies.await,
            Some(release) => {
                let (outcome, written) = tokio::join!(replies, release);
                if let Err(e) = written {
                    log::debug!("client {conn}: writing held replies: {e}");
                }
                outcome
            }
        }
    };
    tokio::pin!(requests);
    tokio::pin!(replies);
    // The reply loop decides when the session ends: after the client hung up
    // it still delivers the replies owed to it.
    let outcome = tokio::select! {
        r = &mut replies => r,
        r = &mut requests => {
            if let Err(e) = r {
                log::debug!("client {conn}: request side ended: {e}");
            }
            replies.await
        }
    };
    if let Err(e) = outcome {
        if let Some(kind) = UpstreamError::of(&e) {
            ctx.metrics.upstream_error(kind);
        }
        log::debug!("client {conn}: {e}");
    }
    if ctx.routes.format() == Format::Row {
        ctx.routes
            .dispatch_row(&ctx.senders, conn, Bytes::new(), true, now_ms());
    }
    log::debug!("client {conn} ({peer}) closed");
}

/// Sleeps until `deadline`; for ever when there is none (a `select!` branch
/// that never fires).
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Ends a connection the proxy answered with an error without serving it.
/// Closed with the client's requests still unread, the socket would be
/// reset, and the client could lose the error before reading it: so the
/// writing side is shut first and what the client still sends is read
/// (for a second at most) until it closes too.
async fn refuse_gently(mut client: Stream) {
    let _ = client.shutdown().await;
    let mut sink = [0u8; 4096];
    let drained = async { while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drained).await;
}

//! One client connection and its own upstream connection to the primary.
//!
//! A session is two loops joined by a channel. The request loop reads the
//! client's bytes, finds complete commands, tells the reply loop what is in
//! flight and forwards the bytes unchanged. The reply loop reads the
//! primary's bytes, finds complete replies, matches each to its command,
//! lets [`Capture`] record writes that took effect, and forwards the bytes
//! unchanged. Neither loop waits for the other, so pipelining is preserved.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use remoteback_protocol::commands::CommandSpec;
use remoteback_protocol::frame::Scanner;
use remoteback_protocol::request;
use remoteback_protocol::Command;
use remoteback_protocol::Format;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::capture::{now_ms, Capture};
use crate::drain::Drain;
use crate::held::{self, Replies, Wait};
use crate::order::Order;
use crate::ordering::{ClientId, Ordering, OrderingShared, Prepared};
use crate::pending::{self, waits_by_design, InFlightQueue, Matched, Pending, ReplyMode};
use crate::pops::PopState;
use crate::sender::ack::AckMode;
use crate::sender::backlog::{Backlog, OnFull};
use crate::sender::Senders;

/// Read buffer growth step; large enough for a typical pipelined burst.
const READ_CHUNK: usize = 16 * 1024;

/// What every session shares.
pub struct Shared {
    pub upstream: String,
    /// Orders conflicting writes of different clients (not for `ROW`,
    /// which replays each connection on its own).
    pub ordering: Option<Arc<OrderingShared>>,
    pub senders: Arc<Senders>,
    pub reply_timeout: Option<Duration>,
    /// Shutdown: sessions stop reading requests and finish what is in flight.
    pub drain: Arc<Drain>,
}

/// Serves one client until it disconnects or the primary does.
pub async fn run(client: TcpStream, conn: u64, shared: Arc<Shared>) {
    let _live = shared.drain.enter();
    let peer = client
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let upstream = match TcpStream::connect(&shared.upstream).await {
        Ok(u) => u,
        Err(e) => {
            log::warn!(
                "client {conn} ({peer}): primary {} unreachable: {e}",
                shared.upstream
            );
            let mut client = client;
            let msg = format!(
                "-ERR remoteback: primary {} unreachable: {e}\r\n",
                shared.upstream
            );
            let _ = client.write_all(msg.as_bytes()).await;
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    log::debug!("client {conn} ({peer}) connected");
    let (client_rd, client_wr) = client.into_split();
    let (upstream_rd, mut upstream_wr) = upstream.into_split();
    let (ordering, client_id) = match &shared.ordering {
        Some(o) => match Ordering::start(conn, o.clone(), &mut upstream_wr, &shared.upstream).await
        {
            Ok((ordering, id)) => (Some(ordering), Some(id)),
            Err(e) => {
                log::debug!("client {conn}: primary closed: {e}");
                return;
            }
        },
        None => (None, None),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (replies_out, release) = match shared.senders.ack() {
        AckMode::Redis => (Replies::Direct(client_wr), None),
        AckMode::Kafka => {
            let (held_tx, held_rx) = mpsc::channel(held::HELD_CHUNKS);
            (
                Replies::Held(held_tx),
                Some(held::release(client_wr, held_rx)),
            )
        }
    };

    // The request loop borrows the upstream's write half, so the half stays
    // open after the loop ends: dropping it would send FIN, and Redis drops
    // a connection at EOF without sending the replies it still owes.
    let requests = forward_requests(
        client_rd,
        &mut upstream_wr,
        tx,
        shared.clone(),
        conn,
        ordering.clone(),
    );
    let replies = forward_replies(
        upstream_rd,
        replies_out,
        rx,
        Capture::new(shared.senders.clone()),
        shared.reply_timeout,
        ordering,
        client_id,
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
        log::debug!("client {conn}: {e}");
    }
    if shared.senders.format() == Format::Row {
        shared
            .senders
            .capture_row(conn, Bytes::new(), true, now_ms());
    }
    log::debug!("client {conn} ({peer}) closed");
}

/// Client → primary. Ends at client EOF or a protocol error (which it hands
/// to the reply side so the client gets it after its earlier replies).
async fn forward_requests(
    mut client: OwnedReadHalf,
    upstream: &mut OwnedWriteHalf,
    tx: mpsc::UnboundedSender<Pending>,
    shared: Arc<Shared>,
    conn: u64,
    ordering: Option<Ordering>,
) -> io::Result<()> {
    let row = shared.senders.format() == Format::Row;
    let backlog = shared.senders.backlog().clone();
    let hold_writes = backlog.on_full() == OnFull::Block;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut mode = ReplyMode::default();
    let mut order = Order::default();
    let mut blocking: Option<Arc<PopState>> = None;
    let mut closing = shared.drain.closing();
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        // At shutdown, stop reading as if the client had hung up: what was
        // forwarded still gets its reply and its capture.
        let read = tokio::select! {
            read = client.read_buf(&mut buf) => read?,
            _ = closing.wait_for(|c| *c) => 0,
        };
        if read == 0 {
            return Ok(());
        }
        let mut found = Vec::new();
        let mut pos = 0;
        let mut error = None;
        while pos < buf.len() {
            match request::parse(&buf[pos..]) {
                Ok(Some(p)) => {
                    let len = p.len;
                    found.push((pos, p));
                    pos += len;
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if pos > 0 {
            let chunk = buf.split_to(pos).freeze();
            // Every request is a record in ROW format. At shutdown a held
            // write is not sent at all.
            if row && hold_writes && !room_or_closing(&backlog, &mut closing).await {
                return Ok(());
            }
            if row {
                shared
                    .senders
                    .capture_row(conn, chunk.clone(), false, now_ms());
            }
            // Bytes up to `flushed` are with the primary already.
            let mut flushed = 0;
            let mut pops = Vec::new();
            for (offset, parsed) in found {
                if parsed.is_empty() {
                    continue;
                }
                let command = parsed.command(&chunk.slice(offset..));
                let mut entry = pending::in_flight(command, &mut mode);
                if hold_writes
                    && backlog.is_full()
                    && shared.senders.wants(&entry.command, entry.spec)
                {
                    // Kafka is behind: this write waits, with everything
                    // before it sent (reads and other clients' reads go on).
                    upstream.write_all(&chunk[flushed..offset]).await?;
                    flushed = offset;
                    if let Some(ordering) = &ordering {
                        pops.drain(..).for_each(|w| ordering.watch_pop(w));
                    }
                    if !room_or_closing(&backlog, &mut closing).await {
                        return Ok(());
                    }
                }
                if let Some(ordering) = &ordering {
                    // Nothing follows a blocking pop until it was answered:
                    // Redis would not run it earlier anyway, and this way a
                    // blocked connection always means this very pop (what
                    // the probe relies on), and no later command holds locks
                    // the pop's feeder needs.
                    if let Some(pop) = blocking.take().filter(|p: &Arc<PopState>| !p.is_done()) {
                        upstream.write_all(&chunk[flushed..offset]).await?;
                        flushed = offset;
                        pops.drain(..).for_each(|w| ordering.watch_pop(w));
                        pop.done().await;
                    }
                    if let Prepared::Wait(need) =
                        ordering.prepare(&mut order, &mut entry, &shared.senders)
                    {
                        // Wait only with everything before this command sent:
                        // the locks this session holds must be released by
                        // replies that are on their way.
                        upstream.write_all(&chunk[flushed..offset]).await?;
                        flushed = offset;
                        pops.drain(..).for_each(|w| ordering.watch_pop(w));
                        ordering.wait(&mut entry, need).await;
                    }
                    if let Some(watch) = Ordering::pop_watch(&entry) {
                        blocking = Some(watch.state());
                        pops.push(watch);
                    }
                }
                // The reply timeout counts from here: the waits above (a full
                // backlog, another session's locks, a blocking pop before it)
                // are the proxy's, not the primary's.
                entry.sent_at = std::time::Instant::now();
                if tx.send(Pending::Command(entry)).is_err() {
                    return Ok(());
                }
            }
            upstream.write_all(&chunk[flushed..]).await?;
            if let Some(ordering) = &ordering {
                pops.drain(..).for_each(|w| ordering.watch_pop(w));
            }
        }
        if let Some(e) = error {
            let _ = tx.send(Pending::ProtocolError(e.to_string()));
            return Ok(());
        }
    }
}

/// Waits for room in the backlog; `false` when shutdown began first.
async fn room_or_closing(backlog: &Backlog, closing: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        biased;
        _ = backlog.wait_for_room() => true,
        _ = closing.wait_for(|c| *c) => false,
    }
}

/// Why the reply loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("primary closed the connection")]
    UpstreamClosed,
    #[error("invalid reply from the primary: {0}")]
    BadReply(String),
    #[error("no reply from the primary within {0:?}")]
    Timeout(Duration),
}

/// Primary → client, with capture. Ends when the primary closes, or when the
/// client is gone and nothing is owed to it anymore.
///
/// A client that stops reading (it hung up with replies owed) does not end
/// the loop: the commands it sent run on the primary all the same, so their
/// replies are still read, matched and captured, and thrown away. When the
/// loop ends early for another reason (reply timeout, the primary gone, a
/// reply that cannot be parsed), the writes still in flight are counted as
/// uncaptured.
async fn forward_replies(
    mut upstream: OwnedReadHalf,
    mut client: Replies,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    mut capture: Capture,
    timeout: Option<Duration>,
    ordering: Option<Ordering>,
    mut client_id: Option<ClientId>,
) -> Result<(), SessionEnd> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut scanner = Scanner::new();
    let mut lens = Vec::new();
    let mut queue = InFlightQueue::default();
    let mut protocol_error: Option<String> = None;
    let mut requests_open = true;
    let mut unblocked = false;
    let result = async {
        loop {
            queue.drain_silent(|c| capture.on_silent(c));
            // The client is gone (or the proxy shuts down) while its command
            // blocks: Redis would end the block at the disconnect.
            if let (false, false, None, Some(ordering), Some(head)) =
                (requests_open, unblocked, &protocol_error, &ordering, queue.head())
            {
                if blocks(&head.command, head.spec) {
                    unblocked = true;
                    ordering.unblock_abandoned().await;
                }
            }
            if let (Some(msg), false) = (&protocol_error, queue.awaiting()) {
                client.send(format!("-ERR {msg}\r\n").into(), Vec::new()).await;
                return Ok(());
            }
            if !requests_open && !queue.awaiting() {
                return Ok(());
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let deadline = deadline(&queue, timeout);
            tokio::select! {
                entry = rx.recv(), if requests_open && protocol_error.is_none() => match entry {
                    Some(p) => accept(p, &mut queue, &mut protocol_error),
                    None => requests_open = false,
                },
                read = upstream.read_buf(&mut buf) => {
                    if read? == 0 {
                        return Err(SessionEnd::UpstreamClosed);
                    }
                    // Everything forwarded before these replies is in the channel.
                    while let Ok(p) = rx.try_recv() {
                        accept(p, &mut queue, &mut protocol_error);
                    }
                    lens.clear();
                    scan_replies(&buf, &mut scanner, &mut lens)?;
                    let consumed: usize = lens.iter().sum();
                    if consumed > 0 {
                        let mut replies = buf.split_to(consumed).freeze();
                        // The connection's first reply answers the proxy's own
                        // CLIENT ID; the client never sees it.
                        if let Some(id) = client_id.take() {
                            let own = lens.remove(0);
                            id.set(&replies.slice(..own));
                            replies = replies.slice(own..);
                        }
                        let waits = match_replies(&replies, &lens, &mut queue, &mut capture, ordering.as_ref()).await;
                        client.send(replies, waits).await;
                    }
                }
                _ = sleep_until(deadline) => {
                    let limit = timeout.unwrap_or_default();
                    let msg = format!("-ERR remoteback: no reply from the primary within {} ms\r\n", limit.as_millis());
                    client.send(msg.into(), Vec::new()).await;
                    return Err(SessionEnd::Timeout(limit));
                }
            }
        }
    }
    .await;
    if result.is_err() {
        while let Ok(p) = rx.try_recv() {
            accept(p, &mut queue, &mut protocol_error);
        }
        capture.abandon(queue.commands());
    }
    result
}

fn accept(p: Pending, queue: &mut InFlightQueue, protocol_error: &mut Option<String>) {
    match p {
        Pending::Command(c) => queue.push(c),
        Pending::ProtocolError(msg) => *protocol_error = Some(msg),
    }
}

/// Finds the complete replies at the start of `buf`, appending their lengths
/// to `lens`.
fn scan_replies(
    buf: &[u8],
    scanner: &mut Scanner,
    lens: &mut Vec<usize>,
) -> Result<(), SessionEnd> {
    let mut pos = 0;
    while let Some(len) = scanner
        .next(&buf[pos..])
        .map_err(|e| SessionEnd::BadReply(e.to_string()))?
    {
        lens.push(len);
        pos += len;
    }
    Ok(())
}

/// Matches each reply in `replies` (lengths in `lens`) to its command, and
/// gives back each write's locks after its capture. Returns the replies
/// that must wait for Kafka (`ack = "kafka"`).
async fn match_replies(
    replies: &Bytes,
    lens: &[usize],
    queue: &mut InFlightQueue,
    capture: &mut Capture,
    ordering: Option<&Ordering>,
) -> Vec<Wait> {
    let mut waits = Vec::new();
    let mut pos = 0;
    for &len in lens {
        let reply = replies.slice(pos..pos + len);
        queue.drain_silent(|c| capture.on_silent(c));
        match queue.match_reply(&reply) {
            Matched::Reply(mut done) => {
                let held = done.held.take();
                if let Some(ordering) = ordering {
                    ordering.observe(&done.command, &reply).await;
                    ordering.before_capture(&done, &reply).await;
                }
                capture.on_reply(done, &reply);
                let deliveries = capture.take_deliveries();
                if !deliveries.is_empty() {
                    waits.push(Wait {
                        start: pos,
                        end: pos + len,
                        deliveries,
                    });
                }
                if let (Some(ordering), Some(held)) = (ordering, held) {
                    ordering.release(held).await;
                }
            }
            Matched::Event => {}
            Matched::Unexpected => log::warn!("reply with no command in flight; forwarded as is"),
        }
        pos += len;
    }
    waits
}

/// Whether `command` blocks until data arrives or its timeout expires (what
/// `CLIENT UNBLOCK` ends), unlike subscriptions and `MONITOR`.
fn blocks(command: &Command, spec: Option<&CommandSpec>) -> bool {
    waits_by_design(command, spec) && !command.is("MONITOR") && !pending::is_subscription(command)
}

/// When the oldest in-flight command times out, if it can.
fn deadline(queue: &InFlightQueue, timeout: Option<Duration>) -> Option<tokio::time::Instant> {
    let timeout = timeout?;
    let head = queue.head()?;
    if !queue.awaiting() || waits_by_design(&head.command, head.spec) {
        return None;
    }
    Some(tokio::time::Instant::from_std(head.sent_at + timeout))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

//! The client side of a session: client → primary.
//!
//! Reads the client's bytes, finds complete requests, forwards them to the
//! primary unchanged and tells the upstream side what is in flight, in the
//! order it was sent. Before forwarding a write it may wait: for room in a
//! full backlog (`on_backlog_full = "block"`), for key locks another
//! session holds, or for a blocking pop before it to be answered; each wait
//! happens with everything before the write already sent.
//!
//! It also stops reading while the client holds its whole in-flight budget
//! ([`InFlightBudget`]), closes a client idle past `timeout`, and hands the
//! connection over to a plain tunnel when the client asks for the primary's
//! replication stream (`SYNC`, `PSYNC`).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use remoteback_protocol::record::now_ms;
use remoteback_protocol::request;
use remoteback_protocol::Format;
use remoteback_transport::{ReadHalf, WriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::budget::InFlightBudget;
use super::inflight::{InFlight, Pending, ReplyMode, Shape};
use super::limits::Closed;
use super::metrics::{CommandTally, UNKNOWN_COMMAND};
use super::refusal;
use super::route::{Owed, Route, Router};
use super::shared::{Batch, Member};
use super::tunnel::{self, Handover, HandoverRequest};
use super::SessionContext;
use crate::capture::Verdict;
use crate::ordering::{LockPlan, PopState, Prepared, WriteOrder};
use crate::sender::backlog::Backlog;

/// Read buffer growth step; large enough for a typical pipelined burst.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// How soon a client found busy when its idle timeout came is looked at
/// again.
const IDLE_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Client → primary. Ends at client EOF or a protocol error (which it hands
/// to the upstream side so the client gets it after its earlier replies).
pub(super) async fn forward_requests(
    mut client: ReadHalf,
    upstream: &mut WriteHalf,
    ctx: Arc<SessionContext>,
    conn: u64,
    ordering: Option<WriteOrder>,
    budget: Arc<InFlightBudget>,
    mut lanes: Lanes,
) -> io::Result<()> {
    let tx = lanes.own.clone();
    let row = ctx.routes.format() == Format::Row;
    let mut router = Router::new(lanes.owed.clone());
    let backlog = ctx.senders.backlog().clone();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut mode = ReplyMode::default();
    let mut plan = LockPlan::default();
    let mut blocking: Option<Arc<PopState>> = None;
    let mut closing = ctx.drain.closing();
    // How far the incomplete request at the start of `buf` was read.
    let mut partial = None;
    let idle_timeout = ctx.limits.idle_timeout;
    let mut last_read = Instant::now();
    let mut tally = CommandTally::default();
    let idle = tokio::time::sleep(idle_timeout.unwrap_or_default());
    tokio::pin!(idle);
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        // At shutdown, stop reading as if the client had hung up: what was
        // forwarded still gets its reply and its capture. A client holding
        // its whole budget is not read until replies gave some back.
        let read = tokio::select! {
            read = async {
                budget.room().await;
                client.read_buf(&mut buf).await
            } => read?,
            _ = closing.wait_for(|c| *c) => 0,
            () = &mut idle, if idle_timeout.is_some() => {
                let timeout = idle_timeout.unwrap_or_default();
                // Idle since its last request or its last reply, whichever
                // came later.
                let since = budget.settled_since().map_or(last_read, |t| t.max(last_read));
                let idle_now = budget.is_idle();
                if idle_now && since.elapsed() >= timeout {
                    let closed = ctx.limits.close(Closed::Idle);
                    log::info!("client {conn} closed: idle for {} s (timeout); {closed} closed so far", timeout.as_secs());
                    return Ok(());
                }
                // Busy (a reply owed, a subscription): look again later;
                // idle for less than the timeout: when it is up.
                let again = match idle_now {
                    true => since + timeout,
                    false => (since + timeout).max(Instant::now() + IDLE_RECHECK),
                };
                idle.as_mut().reset(again.into());
                continue;
            }
        };
        if read == 0 {
            return Ok(());
        }
        last_read = Instant::now();
        let mut found = Vec::new();
        let mut pos = 0;
        let mut error = None;
        while pos < buf.len() {
            match request::parse_resuming(&buf[pos..], &mut partial, ctx.request_limits) {
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
            if row && backlog.holds_writes() && !room_or_closing(&backlog, &mut closing).await {
                return Ok(());
            }
            if row {
                ctx.routes
                    .dispatch_row(&ctx.senders, conn, chunk.clone(), false, now_ms());
            }
            // The read's commands are charged at once (one atomic per read,
            // not per command), before the reply side can see any of them;
            // each entry carries its own cost for the release.
            budget.charge(found.iter().map(|(_, p)| cost_of(p)).sum());
            // Bytes up to `flushed` are with the primary already.
            let mut flushed = 0;
            let mut pops = Vec::new();
            for (offset, parsed) in found {
                if parsed.is_empty() {
                    continue;
                }
                let len = parsed.len;
                let cost = cost_of(&parsed);
                let command = parsed.command(&chunk.slice(offset..));
                let verdict = ctx.routes.verdict(&command);
                tally.count(verdict.spec.map_or(UNKNOWN_COMMAND, |s| s.name()));
                let shape = mode.shape_of(&command);
                // With replies off the primary's refusal would never be
                // seen: such a SYNC is an ordinary command.
                let refusing = ctx.refusing.load(Ordering::Relaxed) && ordering.is_some();
                let route = match router.route(&command, &verdict) {
                    // A refused write's stand-in goes on the session's own.
                    Route::Shared if refusing => Route::Own,
                    route => route,
                };
                if route != lanes.route {
                    lanes.flush(upstream, &chunk, &mut flushed, offset).await?;
                    lanes.switch(route).await;
                }
                // The primary closed the session's idle own connection
                // (its `timeout`): the client is closed, as it would be
                // by the primary (what was sent before still gets its
                // replies).
                if route == Route::Own && lanes.owed.own_closed() {
                    lanes.flush(upstream, &chunk, &mut flushed, offset).await?;
                    return Ok(());
                }
                if tunnel::asks_for_replication(&command) && shape != Shape::Silent {
                    lanes.flush(upstream, &chunk, &mut flushed, offset).await?;
                    flushed = offset + len;
                    if let Some(ordering) = &ordering {
                        pops.drain(..).for_each(|w| ordering.watch_pop(w));
                    }
                    let entry = InFlight::new(command, verdict, shape, None, cost);
                    lanes.owed.add(Route::Own, 1);
                    match hand_over(&tx, entry, upstream, &chunk[offset..offset + len]).await? {
                        Handover::Refused => continue,
                        Handover::Taken => {
                            // Redis itself refuses keyspace commands from a
                            // connection it streams to (it closes it), so
                            // what the client sends on cannot bypass capture.
                            send(upstream, &chunk[offset + len..]).await?;
                            send(upstream, &buf).await?;
                            return tunnel::requests(client, upstream).await;
                        }
                    }
                }
                // A failover refusing writes: the write (or the EXEC of
                // writes queued before) is replaced by a stand-in. One
                // relaxed load per command when none runs.
                if refusing {
                    if let Some(stand_in) = refusal::stand_in(&command, &verdict, &mut plan) {
                        lanes.flush(upstream, &chunk, &mut flushed, offset).await?;
                        flushed = offset + len;
                        if let Some(ordering) = &ordering {
                            pops.drain(..).for_each(|w| ordering.watch_pop(w));
                        }
                        // The entry goes before the bytes, as for every
                        // command: the reply side must know what it answers.
                        let mut entry =
                            InFlight::new(stand_in.command, Verdict::default(), shape, None, cost);
                        entry.answer = Some(stand_in.answer);
                        if !lanes.send_own(entry) {
                            return Ok(());
                        }
                        send(upstream, stand_in.request).await?;
                        continue;
                    }
                }
                let mut hold = None;
                if verdict.is_captured() && backlog.holds_writes() {
                    // Kafka is behind: this write waits, with everything
                    // before it sent (reads and other clients' reads go on).
                    lanes.flush(upstream, &chunk, &mut flushed, offset).await?;
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
                        lanes.flush(upstream, &chunk, &mut flushed, offset).await?;
                        pops.drain(..).for_each(|w| ordering.watch_pop(w));
                        pop.done().await;
                    }
                    // Writes on the shared connection take their locks for it.
                    let order = match (route, &ctx.shared) {
                        (Route::Shared, Some(shared)) => shared.ordering(),
                        _ => ordering,
                    };
                    hold = match order.prepare(&mut plan, &command, &verdict) {
                        Prepared::Ready(hold) => hold,
                        Prepared::Wait(need) => {
                            // Wait only with everything before this command
                            // sent: the locks this session holds must be
                            // released by replies that are on their way.
                            lanes.flush(upstream, &chunk, &mut flushed, offset).await?;
                            pops.drain(..).for_each(|w| ordering.watch_pop(w));
                            // At shutdown a write still waiting (a paused
                            // failover gives no locks) is not sent at all.
                            tokio::select! {
                                hold = order.wait(&verdict, need) => hold,
                                _ = closing.wait_for(|c| *c) => return Ok(()),
                            }
                        }
                    };
                    if let Some(watch) = WriteOrder::pop_watch(hold.as_ref()) {
                        blocking = Some(watch.state());
                        pops.push(watch);
                    }
                }
                // The reply timeout counts from here (`InFlight::new`): the
                // waits above (a full backlog, another session's locks, a
                // blocking pop before it) are the proxy's, not the primary's.
                let entry = InFlight::new(command, verdict, shape, hold, cost);
                match route {
                    Route::Shared => lanes.entries.push(entry),
                    Route::Own => {
                        if !lanes.send_own(entry) {
                            return Ok(());
                        }
                    }
                }
            }
            lanes
                .flush(upstream, &chunk, &mut flushed, chunk.len())
                .await?;
            if let Some(ordering) = &ordering {
                pops.drain(..).for_each(|w| ordering.watch_pop(w));
            }
            ctx.metrics.observe_request(last_read.elapsed());
            ctx.metrics.add_commands(&mut tally);
        }
        if let Some(e) = error {
            let _ = tx.send(Pending::ProtocolError(e));
            return Ok(());
        }
        // What is left is one unfinished request: as Redis, a client may
        // not make the proxy hold more of it than the query buffer limit.
        if buf.len() as u64 > ctx.limits.query_buffer {
            let closed = ctx.limits.close(Closed::QueryBuffer);
            log::warn!(
                "client {conn} closed: {} bytes of an unfinished request, over \
                 client_query_buffer_limit ({}); {closed} closed so far",
                buf.len(),
                ctx.limits.query_buffer
            );
            return Ok(());
        }
    }
}

/// What `parsed` costs the client's in-flight budget until its reply; an
/// ignored request (`*0`, a blank line) costs nothing, as it gets none.
fn cost_of(parsed: &request::Parsed) -> usize {
    if parsed.is_empty() {
        0
    } else {
        InFlightBudget::cost(parsed.len, parsed.arg_count())
    }
}

/// Offers the connection to the replication stream `SYNC`/`PSYNC` asks
/// for: once everything before it was answered (Redis refuses it with
/// replies pending), it is sent, and the reply side tells whether the
/// primary started the stream (the connection becomes a tunnel) or refused
/// it with an error (the session goes on). A subscribed or monitoring
/// connection, whose replies cannot be told from events by their first
/// byte, is not offered: its `SYNC` is sent as an ordinary command, which
/// Redis refuses there.
async fn hand_over(
    tx: &mpsc::UnboundedSender<Pending>,
    entry: InFlight,
    upstream: &mut WriteHalf,
    request: &[u8],
) -> io::Result<Handover> {
    let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "reply side gone");
    let (answered_tx, answered) = oneshot::channel();
    let (outcome_tx, outcome) = oneshot::channel();
    tx.send(Pending::Handover(HandoverRequest {
        answered: Some(answered_tx),
        outcome: outcome_tx,
    }))
    .map_err(|_| gone())?;
    let offered = answered.await.map_err(|_| gone())?;
    tx.send(Pending::Command(entry)).map_err(|_| gone())?;
    send(upstream, request).await?;
    if !offered {
        return Ok(Handover::Refused);
    }
    outcome.await.map_err(|_| gone())
}

/// Waits for room in the backlog; `false` when shutdown began first.
async fn room_or_closing(backlog: &Backlog, closing: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        biased;
        _ = backlog.wait_for_room() => true,
        _ = closing.wait_for(|c| *c) => false,
    }
}

/// Writes `bytes` to the primary, flushed: over TLS, written bytes may
/// wait in rustls's buffer until then (for plain TCP the flush is a no-op).
async fn send(upstream: &mut WriteHalf, bytes: &[u8]) -> io::Result<()> {
    upstream.write_all(bytes).await?;
    upstream.flush().await
}

/// Where a session's requests go: its own connection or the shared one
/// ([`super::route`]), and the run of commands not handed over yet.
pub(super) struct Lanes {
    /// What the upstream side must know of the commands on the session's
    /// own connection, in order.
    own: mpsc::UnboundedSender<Pending>,
    /// The connection the current run goes on.
    route: Route,
    /// The entries of the current run on the shared connection, handed
    /// over with its bytes.
    entries: Vec<InFlight>,
    /// The proxy's shared connection (`ctx.shared`) and what its tasks
    /// take from the session's context.
    ctx: Arc<SessionContext>,
    /// The shared connection's writer, once the session used it.
    inbox: Option<mpsc::UnboundedSender<Batch>>,
    /// This session, as the shared connection knows it.
    member: Arc<Member>,
    pub owed: Arc<Owed>,
}

impl Lanes {
    pub fn new(
        own: mpsc::UnboundedSender<Pending>,
        ctx: Arc<SessionContext>,
        member: Arc<Member>,
        owed: Arc<Owed>,
    ) -> Lanes {
        if ctx.shared.is_none() {
            owed.pin();
        }
        Lanes {
            own,
            route: Route::Own,
            entries: Vec::new(),
            ctx,
            inbox: None,
            member,
            owed,
        }
    }

    /// Sends `chunk[*from..to]` on the current run's connection (with its
    /// entries, on the shared one); `*from` becomes `to`.
    async fn flush(
        &mut self,
        upstream: &mut WriteHalf,
        chunk: &Bytes,
        from: &mut usize,
        to: usize,
    ) -> io::Result<()> {
        if *from < to || !self.entries.is_empty() {
            match self.route {
                Route::Own => send(upstream, &chunk[*from..to]).await?,
                Route::Shared => self.hand_over(chunk.slice(*from..to)).await?,
            }
        }
        *from = to;
        Ok(())
    }

    /// Hands a run to the shared connection, opening one if the last
    /// failed.
    async fn hand_over(&mut self, bytes: Bytes) -> io::Result<()> {
        let Some(shared) = &self.ctx.shared else {
            return Err(io::Error::other("no shared connection"));
        };
        let count = self.entries.len();
        // Counted before it leaves: the reply could be handed over first.
        self.owed.add(Route::Shared, count);
        let mut batch = Batch {
            bytes,
            entries: std::mem::take(&mut self.entries),
            session: self.member.clone(),
        };
        loop {
            let inbox = match &self.inbox {
                Some(inbox) => inbox,
                None => match shared.inbox(&self.ctx).await {
                    Ok(inbox) => self.inbox.insert(inbox),
                    Err(e) => {
                        self.owed.answered(Route::Shared, count);
                        return Err(e);
                    }
                },
            };
            match inbox.send(batch) {
                Ok(()) => return Ok(()),
                // That connection failed. The batch goes on the next once
                // the session's commands sent before it are answered, so
                // that they cannot run after it; those that were on the
                // failed connection never are: its reply side is told and
                // ends the session, which ends this wait.
                Err(mpsc::error::SendError(b)) => {
                    self.owed.answered(Route::Shared, count);
                    self.owed.settled(Route::Shared).await;
                    self.owed.add(Route::Shared, count);
                    batch = b;
                    self.inbox = None;
                }
            }
        }
    }

    /// Tells the upstream side of a command on the session's own
    /// connection, counted as owed; `false` if that side is gone.
    fn send_own(&self, entry: InFlight) -> bool {
        self.owed.add(Route::Own, 1);
        self.own.send(Pending::Command(entry)).is_ok()
    }

    /// Goes on `route` once every command sent on the other was answered,
    /// so the primary runs the session's commands in its order, and the
    /// client reads their replies in it.
    async fn switch(&mut self, route: Route) {
        self.owed.settled(self.route).await;
        self.route = route;
    }
}

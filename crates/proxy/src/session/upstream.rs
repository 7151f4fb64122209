//! The upstream side of a session: primary → client, with capture.
//!
//! Reads the primary's bytes, finds complete replies, matches each to the
//! command it answers ([`InFlightQueue`]), lets [`Capture`] record the
//! writes that took effect, gives back their key locks, and hands the bytes
//! unchanged to the client's [`ReplyOutput`]. It owns `rsptimeout`: when
//! the oldest awaited reply is overdue, the client gets an error and the
//! session ends.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use remoteback_protocol::commands::CommandSpec;
use remoteback_protocol::frame::{FrameError, Scanner};
use remoteback_protocol::request::ProtocolError;
use remoteback_protocol::Command;
use remoteback_transport::ReadHalf;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::budget::InFlightBudget;
use super::client::READ_CHUNK;
use super::inflight::{self, waits_by_design, InFlight, InFlightQueue, Matched, Pending};
use super::output::{AckWait, ReplyOutput};
use super::refusal;
use super::route::{Owed, Route};
use super::shared::{Failure, SharedReply};
use super::tunnel::{self, Handover, HandoverRequest};
use super::SessionContext;
use crate::capture::Capture;
use crate::ordering::{ClientId, Hold, WriteOrder};

/// Why the reply loop stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionEnd {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// `owed`: with replies still owed to the client.
    #[error("primary closed the connection")]
    UpstreamClosed { owed: bool },
    #[error("invalid reply from the primary: {0}")]
    BadReply(#[source] FrameError),
    #[error("no reply from the primary within {0:?}")]
    Timeout(Duration),
    /// The connection sessions share failed with this session's commands
    /// on it.
    #[error("the shared connection to the primary failed: {0:?}")]
    Shared(Failure),
}

/// The session's side of the shared connection: its replies, and what
/// each connection still owes the client.
pub(super) struct ReplyLanes {
    /// The commands on the session's own connection, in order.
    pub own: mpsc::UnboundedReceiver<Pending>,
    pub shared: mpsc::UnboundedReceiver<SharedReply>,
    pub owed: Arc<Owed>,
}

/// The session's part in ordering writes across clients, when it has one:
/// its handle, and where the primary's answer to the proxy's own
/// `CLIENT ID` goes.
pub(super) struct Order {
    pub ordering: Option<WriteOrder>,
    pub client_id: Option<ClientId>,
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
pub(super) async fn forward_replies(
    mut upstream: ReadHalf,
    mut client: ReplyOutput,
    mut capture: Capture,
    ctx: Arc<SessionContext>,
    order: Order,
    budget: Arc<InFlightBudget>,
    lanes: ReplyLanes,
) -> Result<(), SessionEnd> {
    let ReplyLanes {
        own: mut rx,
        shared: mut shared_replies,
        owed,
    } = lanes;
    let (timeout, metrics) = (ctx.reply_timeout, &ctx.metrics);
    let Order {
        ordering,
        mut client_id,
    } = order;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut scanner = Scanner::new();
    let mut lens = Vec::new();
    let mut queue = InFlightQueue::default();
    let mut protocol_error: Option<ProtocolError> = None;
    let mut handover: Option<HandoverRequest> = None;
    let mut requests_open = true;
    let mut unblocked = false;
    let result = async {
        // One timer for the reply timeout, moved when the oldest awaited
        // reply changes: a new one at each turn of the loop was registered
        // in and removed from tokio's timer wheel every time (about 1.5 %
        // of the proxy's CPU in a profile of SET -P 16).
        let reply_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(reply_timer);
        let mut armed = None;
        loop {
            let mut freed = 0;
            let mut answered = 0;
            queue.drain_silent(|c| {
                freed += silent(&mut capture, c);
                answered += 1;
            });
            owed.answered(Route::Own, answered);
            budget.release(freed + queue.take_freed());
            // Nothing owed on the shared connection either.
            let settled = owed.on(Route::Shared) == 0;
            budget.set_listening(queue.listening());
            // A SYNC waits for everything before it to be answered,
            // the proxy's own CLIENT ID included.
            if let Some(h) = handover.as_mut().filter(|_| !queue.awaiting() && client_id.is_none()) {
                if let Some(answered) = h.answered.take() {
                    let offered = !queue.listening();
                    let _ = answered.send(offered);
                    if !offered {
                        handover = None;
                    }
                }
            }
            // The client is gone (or the proxy shuts down) while its command
            // blocks: Redis would end the block at the disconnect.
            if let (false, false, None, Some(ordering), Some(head)) =
                (requests_open, unblocked, &protocol_error, &ordering, queue.head())
            {
                if blocks(&head.command, head.verdict.spec) {
                    unblocked = true;
                    ordering.unblock_abandoned().await;
                }
            }
            if let (Some(msg), false, true) = (&protocol_error, queue.awaiting(), settled) {
                client.send(msg.reply().into(), Vec::new()).await;
                return Ok(None);
            }
            if !requests_open && !queue.awaiting() && settled {
                return Ok(None);
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let due = deadline(&queue, timeout);
            if due != armed {
                if let Some(at) = due {
                    reply_timer.as_mut().reset(at);
                }
                armed = due;
            }
            tokio::select! {
                entry = rx.recv(), if requests_open && protocol_error.is_none() => match entry {
                    Some(Pending::Command(_) | Pending::Handover(_)) if owed.own_closed() => {
                        return Err(SessionEnd::UpstreamClosed { owed: true });
                    }
                    Some(p) => accept(p, &mut queue, &mut protocol_error, &mut handover),
                    None => requests_open = false,
                },
                read = upstream.read_buf(&mut buf), if !owed.own_closed() => {
                    if read? == 0 {
                        while let Ok(p) = rx.try_recv() {
                            accept(p, &mut queue, &mut protocol_error, &mut handover);
                        }
                        let owes = queue.awaiting() || queue.listening() || owed.on(Route::Own) > 0;
                        // A client all of whose commands go on the shared
                        // connection leaves its own idle, and a primary
                        // with a `timeout` closes it: the session goes on
                        // until it needs its own connection again.
                        if !owes && owed.shares() {
                            owed.close_own();
                            continue;
                        }
                        return Err(SessionEnd::UpstreamClosed { owed: owes });
                    }
                    let read_at = Instant::now();
                    // Everything forwarded before these replies is in the channel.
                    while let Ok(p) = rx.try_recv() {
                        accept(p, &mut queue, &mut protocol_error, &mut handover);
                    }
                    // The first bytes after a SYNC tell a refusal from the
                    // replication stream.
                    if let Some(h) = handover.take_if(|h| h.answered.is_none() && !buf.is_empty()) {
                        let outcome = tunnel::outcome(buf[0]);
                        let _ = h.outcome.send(outcome);
                        if outcome == Handover::Taken {
                            return Ok(Some(std::mem::take(&mut buf)));
                        }
                    }
                    lens.clear();
                    scan_replies(&buf, &mut scanner, &mut lens).map_err(SessionEnd::BadReply)?;
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
                        let (mut waits, freed, swaps, answered) = match_replies(&replies, &lens, &mut queue, &mut capture, ordering.as_ref()).await;
                        budget.release(freed + queue.take_freed());
                        if !swaps.is_empty() {
                            replies = refusal::substitute(&replies, &swaps, &mut waits);
                        }
                        client.send(replies, waits).await;
                        owed.answered(Route::Own, answered);
                        metrics.observe_reply(read_at.elapsed());
                    }
                }
                Some(reply) = shared_replies.recv() => match reply {
                    SharedReply::Replies { bytes, waits, count, cost } => {
                        client.send(bytes, waits).await;
                        budget.release(cost);
                        owed.answered(Route::Shared, count);
                    }
                    SharedReply::Failed(failure) => {
                        if let Failure::Timeout(limit) = failure {
                            client.send(timeout_reply(limit), Vec::new()).await;
                        }
                        return Err(SessionEnd::Shared(failure));
                    }
                },
                () = client.write_unread(), if client.has_unread() => {}
                () = &mut reply_timer, if armed.is_some() => {
                    let limit = timeout.unwrap_or_default();
                    client.send(timeout_reply(limit), Vec::new()).await;
                    return Err(SessionEnd::Timeout(limit));
                }
            }
        }
    }
    .await;
    match result {
        // The primary started its replication stream: from here on the
        // connection is a tunnel (the SYNC itself is all that was in flight).
        Ok(Some(stream)) => {
            let tunneled = tunnel::replies(upstream, &mut client, stream).await;
            client.finish().await;
            tunneled.map_err(SessionEnd::Io)
        }
        Ok(None) => {
            client.finish().await;
            Ok(())
        }
        Err(e) => {
            while let Ok(p) = rx.try_recv() {
                accept(p, &mut queue, &mut protocol_error, &mut handover);
            }
            capture.abandon(queue.commands().map(|c| (&c.command, &c.verdict)));
            client.finish().await;
            Err(e)
        }
    }
}

fn accept(
    p: Pending,
    queue: &mut InFlightQueue,
    protocol_error: &mut Option<ProtocolError>,
    handover: &mut Option<HandoverRequest>,
) {
    match p {
        Pending::Command(c) => queue.push(c),
        Pending::ProtocolError(msg) => *protocol_error = Some(msg),
        Pending::Handover(h) => *handover = Some(h),
    }
}

/// A command that gets no reply (`CLIENT REPLY OFF|SKIP`): captured as if
/// it succeeded; what it held goes after its capture. Returns its cost.
fn silent(capture: &mut Capture, done: InFlight) -> usize {
    let InFlight {
        command,
        verdict,
        hold,
        cost,
        ..
    } = done;
    capture.on_silent(command, &verdict);
    drop(hold);
    cost
}

/// Finds the complete replies at the start of `buf`, appending their lengths
/// to `lens`; on a reply that cannot be read, `lens` holds those before it.
pub(super) fn scan_replies(
    buf: &[u8],
    scanner: &mut Scanner,
    lens: &mut Vec<usize>,
) -> Result<(), FrameError> {
    let mut pos = 0;
    while let Some(len) = scanner.next(&buf[pos..])? {
        lens.push(len);
        pos += len;
    }
    Ok(())
}

/// What a client gets when the primary did not answer within `limit`.
fn timeout_reply(limit: Duration) -> Bytes {
    format!(
        "-ERR remoteback: no reply from the primary within {} ms\r\n",
        limit.as_millis()
    )
    .into()
}

/// Matches each reply in `replies` (lengths in `lens`) to its command, and
/// gives back each write's locks after its capture. Returns the replies
/// that must wait for Kafka (`ack = "kafka"`), the in-flight budget the
/// answered commands give back, the spans of replies the client gets
/// another answer for (refused writes), with that answer, and how many
/// commands were answered.
async fn match_replies(
    replies: &Bytes,
    lens: &[usize],
    queue: &mut InFlightQueue,
    capture: &mut Capture,
    ordering: Option<&WriteOrder>,
) -> (Vec<AckWait>, usize, Vec<(usize, usize, Bytes)>, usize) {
    let mut answered = 0;
    let mut waits = Vec::new();
    let mut swaps = Vec::new();
    let mut freed = 0;
    let mut pos = 0;
    for &len in lens {
        let reply = replies.slice(pos..pos + len);
        queue.drain_silent(|c| {
            freed += silent(capture, c);
            answered += 1;
        });
        match queue.match_reply(&reply) {
            Matched::Reply(done) => {
                answered += 1;
                let InFlight {
                    command,
                    verdict,
                    hold,
                    cost,
                    answer,
                    ..
                } = done;
                freed += cost;
                if let Some(answer) = answer {
                    swaps.push((pos, pos + len, answer));
                }
                if let Some(ordering) = ordering {
                    ordering.observe(&command, &reply).await;
                    ordering.before_capture(hold.as_ref(), &reply).await;
                }
                capture.on_reply(command, &verdict, &reply);
                let deliveries = capture.take_deliveries();
                if !deliveries.is_empty() {
                    waits.push(AckWait {
                        start: pos,
                        end: pos + len,
                        deliveries,
                    });
                }
                // A write's locks go once its record is with the senders; a
                // blocking pop's registration, once its own is.
                match (ordering, hold) {
                    (Some(ordering), Some(Hold::Locks(locks))) => ordering.release(locks).await,
                    (_, hold) => drop(hold),
                }
            }
            Matched::Event => {}
            Matched::Unexpected => log::warn!("reply with no command in flight; forwarded as is"),
        }
        pos += len;
    }
    (waits, freed, swaps, answered)
}

/// Whether `command` blocks until data arrives or its timeout expires (what
/// `CLIENT UNBLOCK` ends), unlike subscriptions and `MONITOR`.
fn blocks(command: &Command, spec: Option<&CommandSpec>) -> bool {
    waits_by_design(command, spec) && !command.is("MONITOR") && !inflight::is_subscription(command)
}

/// When the oldest in-flight command times out, if it can.
fn deadline(queue: &InFlightQueue, timeout: Option<Duration>) -> Option<tokio::time::Instant> {
    let timeout = timeout?;
    let head = queue.head()?;
    if !queue.awaiting() || waits_by_design(&head.command, head.verdict.spec) {
        return None;
    }
    Some(tokio::time::Instant::from_std(head.sent_at + timeout))
}

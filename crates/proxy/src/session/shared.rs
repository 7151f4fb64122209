//! The connection to the primary that sessions share for the commands
//! that can go on it ([`super::route`]).
//!
//! Sessions hand it [`Batch`]es: the bytes of a run of their commands, as
//! the client sent them, and an entry per command. A writer task takes
//! every batch waiting, gives their entries to the reader task, then
//! writes all their bytes in one vectored write: the primary reads many
//! clients' commands at once and answers them in one write. The reader
//! matches each reply to its entry in that order, which is the order the
//! primary ran them in; captures the writes that took effect, gives back
//! their key locks, and hands each session its replies ([`SharedReply`]),
//! one message per run of consecutive replies of the same session.
//!
//! Key locks of commands on this connection are held for it, not for
//! their sessions ([`SHARED_HOLDER`]): two sessions' writes to one key both
//! go at once, as the connection's own order is the primary's, and capture
//! follows it. A write of a session's own connection to the same key still
//! waits for them, as for any other session.
//!
//! When the connection fails (the primary closes it, a reply does not come
//! within `rsptimeout`, or cannot be read), every session with a command on
//! it is told and ends, as when its own connection fails, and the writes in
//! flight are counted as uncaptured, but not those of batches of which no
//! byte was written (they cannot have run); the next batch opens a new
//! connection.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use remoteback_protocol::frame::Scanner;
use remoteback_transport::{ReadHalf, WriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::budget::InFlightBudget;
use super::client::READ_CHUNK;
use super::inflight::InFlight;
use super::metrics::{SessionMetrics, UpstreamError};
use super::output::AckWait;
use super::upstream::scan_replies;
use super::SessionContext;
use crate::capture::Capture;
use crate::ordering::{Hold, LockGuard, WriteOrder};

/// The key-lock holder of every command on the shared connection: distinct
/// from every session's number (counted up from 1) and the sync's holders.
pub(crate) const SHARED_HOLDER: u64 = u64::MAX;

/// How long opening the shared connection may take without `rsptimeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most bytes of batches the writer gathers into one write.
const MAX_WRITE: usize = 256 * 1024;

/// A run of one session's commands for the shared connection.
pub(crate) struct Batch {
    /// The commands' bytes, as the client sent them.
    pub bytes: Bytes,
    /// One entry per command, in order.
    pub entries: Vec<InFlight>,
    pub session: Arc<Member>,
}

/// A session, as the shared connection knows it.
pub(crate) struct Member {
    /// Where its replies go.
    pub replies: mpsc::UnboundedSender<SharedReply>,
    /// What its commands are charged to.
    pub budget: Arc<InFlightBudget>,
}

/// What the shared connection hands a session.
pub(crate) enum SharedReply {
    /// Replies to `count` of its commands, in order, with the ones that
    /// wait for Kafka (`ack = "kafka"`) and the in-flight budget they give
    /// back.
    Replies {
        bytes: Bytes,
        waits: Vec<AckWait>,
        count: usize,
        cost: usize,
    },
    /// The connection failed with the session's commands on it.
    Failed(Failure),
}

/// How the shared connection failed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Failure {
    Closed,
    Timeout(Duration),
    BadReply,
}

/// The shared connection, open or not. Its tasks take what else they need
/// (the primary's connector, capture's routes and senders, `rsptimeout`,
/// the metrics) from the [`SessionContext`] of the session that opened it.
pub(crate) struct SharedUpstream {
    /// The runtime the connection's tasks run on: the proxy's, whichever
    /// session opened it.
    runtime: Handle,
    /// Key locks for [`SHARED_HOLDER`], and their release after capture.
    ordering: WriteOrder,
    /// The live connection's writer, if one is open.
    current: Mutex<Option<mpsc::UnboundedSender<Batch>>>,
    /// Held while a connection is being opened, so only one is.
    opening: tokio::sync::Mutex<Opening>,
}

/// What opening a connection needs to know of the last one.
#[derive(Default)]
struct Opening {
    /// The last connection's reader. A new connection waits for it to
    /// end: its commands hold their key locks for the same holder as the
    /// new one's, so the old replies must all be captured first.
    reader: Option<JoinHandle<()>>,
    /// When the last attempt ended and why it failed, if it did.
    failed: Option<(Instant, io::ErrorKind, String)>,
}

impl SharedUpstream {
    /// Must be called on the proxy's runtime.
    pub fn new(ordering: WriteOrder) -> SharedUpstream {
        SharedUpstream {
            runtime: Handle::current(),
            ordering,
            current: Mutex::new(None),
            opening: tokio::sync::Mutex::new(Opening::default()),
        }
    }

    /// The ordering handle its commands take their key locks with.
    pub fn ordering(&self) -> &WriteOrder {
        &self.ordering
    }

    /// The live connection's writer, opening a connection if none is.
    pub async fn inbox(
        self: &Arc<Self>,
        ctx: &Arc<SessionContext>,
    ) -> io::Result<mpsc::UnboundedSender<Batch>> {
        if let Some(tx) = self.live() {
            return Ok(tx);
        }
        let asked = Instant::now();
        let mut opening = self.opening.lock().await;
        if let Some(tx) = self.live() {
            return Ok(tx);
        }
        // An attempt that ended while this session waited failed: each
        // waiter trying again in turn would make the last wait for all.
        if let Some((at, kind, why)) = &opening.failed {
            if *at >= asked {
                return Err(io::Error::new(*kind, why.clone()));
            }
        }
        // Sessions wait for this with locks taken for commands not sent
        // yet: not for longer than for a reply.
        let limit = ctx.reply_timeout.unwrap_or(CONNECT_TIMEOUT);
        let previous = &mut opening.reader;
        let opened = tokio::time::timeout(limit, async {
            if let Some(reader) = previous.as_mut() {
                let _ = reader.await;
                *previous = None;
            }
            let mut stream = ctx.upstream.connect().await.map_err(io::Error::other)?;
            name(&mut stream).await?;
            Ok::<_, io::Error>(stream)
        })
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {limit:?}"),
            ))
        });
        let stream = match opened {
            Ok(s) => s,
            Err(e) => {
                opening.failed = Some((Instant::now(), e.kind(), e.to_string()));
                ctx.metrics.upstream_error(UpstreamError::Connect);
                log::warn!(
                    "shared connection to the primary {}: {e}",
                    ctx.upstream.addr()
                );
                return Err(e);
            }
        };
        ctx.metrics.shared_connection_opened();
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let (sent_tx, sent_rx) = mpsc::unbounded_channel();
        let stop = Arc::new(Notify::new());
        let metrics = ctx.metrics.clone();
        self.runtime
            .spawn(write_batches(wr, rx, sent_tx, stop.clone(), metrics));
        opening.failed = None;
        opening.reader =
            Some(
                self.runtime
                    .spawn(self.clone().read_replies(ctx.clone(), rd, sent_rx, stop)),
            );
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.clone());
        log::debug!(
            "shared connection to the primary {} open",
            ctx.upstream.addr()
        );
        Ok(tx)
    }

    fn live(&self) -> Option<mpsc::UnboundedSender<Batch>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|tx| !tx.is_closed()).cloned()
    }

    /// Primary → sessions, with capture, until the connection fails.
    async fn read_replies(
        self: Arc<Self>,
        ctx: Arc<SessionContext>,
        mut upstream: ReadHalf,
        mut sent: mpsc::UnboundedReceiver<Sent>,
        stop: Arc<Notify>,
    ) {
        let mut capture =
            Capture::new(ctx.routes.clone(), ctx.senders.clone(), ctx.scripts.clone());
        let mut queue: VecDeque<(Arc<Member>, InFlight)> = VecDeque::new();
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut scanner = Scanner::new();
        let mut lens = Vec::new();
        let reply_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(reply_timer);
        let mut armed = None;
        let mut writer_open = true;
        let mut named = false;
        // Batches the writer took and never wrote.
        let mut unsent = Vec::new();
        let failure = loop {
            if !writer_open && queue.is_empty() {
                // Batches never written still need their sessions told.
                if unsent.is_empty() {
                    return;
                }
                break Failure::Closed;
            }
            let due = match (ctx.reply_timeout, queue.front()) {
                (Some(t), Some((_, head))) => {
                    Some(tokio::time::Instant::from_std(head.sent_at + t))
                }
                _ => None,
            };
            if due != armed {
                if let Some(at) = due {
                    reply_timer.as_mut().reset(at);
                }
                armed = due;
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                s = sent.recv(), if writer_open => match s {
                    Some(s) => take(s, &mut queue, &mut unsent),
                    None => writer_open = false,
                },
                read = upstream.read_buf(&mut buf) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        break Failure::Closed;
                    }
                    let read_at = Instant::now();
                    // Everything written before these replies is in the channel.
                    while let Ok(s) = sent.try_recv() {
                        take(s, &mut queue, &mut unsent);
                    }
                    lens.clear();
                    // The replies before one that cannot be read still
                    // answer their commands.
                    let scanned = scan_replies(&buf, &mut scanner, &mut lens);
                    let pos: usize = lens.iter().sum();
                    if pos > 0 {
                        let mut replies = buf.split_to(pos).freeze();
                        // The connection's first reply answers its name.
                        if !named {
                            named = true;
                            let own = lens.remove(0);
                            replies = replies.slice(own..);
                        }
                        if !self.deliver(&replies, &lens, &mut queue, &mut capture).await {
                            log::warn!("shared connection to the primary: a reply with no command in flight; closing it");
                            break Failure::BadReply;
                        }
                        ctx.metrics.observe_reply(read_at.elapsed());
                    }
                    if let Err(e) = scanned {
                        log::warn!("shared connection to the primary: invalid reply: {e}; closing it");
                        break Failure::BadReply;
                    }
                }
                () = &mut reply_timer, if armed.is_some() => {
                    break Failure::Timeout(ctx.reply_timeout.unwrap_or_default());
                }
            }
        };
        // The writer stops and hands over what it took meanwhile.
        stop.notify_one();
        while let Some(s) = sent.recv().await {
            take(s, &mut queue, &mut unsent);
        }
        self.fail(&ctx, failure, queue, unsent, &mut capture);
    }

    /// Hands each reply to its command's session and captures it; `false`
    /// if a reply answers nothing (the connection is out of step).
    async fn deliver(
        &self,
        replies: &Bytes,
        lens: &[usize],
        queue: &mut VecDeque<(Arc<Member>, InFlight)>,
        capture: &mut Capture,
    ) -> bool {
        // The run of consecutive replies of one session: its start, count
        // and waits.
        let mut run: Option<Run> = None;
        // The read's locks, given back together once all are captured.
        let mut freed = Vec::new();
        let mut pos = 0;
        for &len in lens {
            let Some((member, done)) = queue.pop_front() else {
                LockGuard::release_all(&mut freed);
                if let Some(r) = run.take() {
                    r.hand_over(replies, pos);
                }
                return false;
            };
            let reply = replies.slice(pos..pos + len);
            if run
                .as_ref()
                .is_some_and(|r| !Arc::ptr_eq(&r.member, &member))
            {
                if let Some(r) = run.take() {
                    r.hand_over(replies, pos);
                }
            }
            let r = run.get_or_insert_with(|| Run {
                member,
                start: pos,
                count: 0,
                cost: 0,
                waits: Vec::new(),
            });
            let InFlight {
                command,
                verdict,
                hold,
                cost,
                ..
            } = done;
            capture.on_reply(command, &verdict, &reply);
            let deliveries = capture.take_deliveries();
            if !deliveries.is_empty() {
                r.waits.push(AckWait {
                    start: pos - r.start,
                    end: pos + len - r.start,
                    deliveries,
                });
            }
            r.count += 1;
            r.cost += cost;
            pos += len;
            // A write's locks go once its record is with the senders; after
            // the blocking pops of other sessions it served, if any, which
            // the other sessions' replies must not wait for. Meanwhile no
            // later write to the key is on this connection: the lock table
            // does not let a holder take a key with a parked pop again.
            match hold {
                Some(Hold::Locks(locks)) if self.ordering.may_wait_for_pops(&locks) => {
                    let ordering = self.ordering.clone();
                    self.runtime
                        .spawn(async move { ordering.release(locks).await });
                }
                Some(Hold::Locks(locks)) => freed.push(locks),
                hold => drop(hold),
            }
        }
        LockGuard::release_all(&mut freed);
        if let Some(r) = run.take() {
            r.hand_over(replies, pos);
        }
        true
    }

    /// Tells every session with a command in flight that the connection
    /// failed, after counting its writes as uncaptured.
    fn fail(
        &self,
        ctx: &SessionContext,
        failure: Failure,
        queue: VecDeque<(Arc<Member>, InFlight)>,
        unsent: Vec<(Arc<Member>, Vec<InFlight>)>,
        capture: &mut Capture,
    ) {
        let level = match queue.is_empty() && unsent.is_empty() {
            // An idle connection the primary closed (its `timeout`).
            true => log::Level::Debug,
            false => log::Level::Warn,
        };
        log::log!(
            level,
            "shared connection to the primary {} failed ({failure:?}); {} commands in flight",
            ctx.upstream.addr(),
            queue.len()
        );
        // What reached the primary may have run there without a record;
        // what never left did not run.
        capture.abandon(queue.iter().map(|(_, c)| (&c.command, &c.verdict)));
        let unsent = unsent
            .into_iter()
            .flat_map(|(member, entries)| entries.into_iter().map(move |e| (member.clone(), e)));
        let mut told: Vec<Arc<Member>> = Vec::new();
        for (member, entry) in queue.into_iter().chain(unsent) {
            member.budget.release(entry.cost);
            if !told.iter().any(|m| Arc::ptr_eq(m, &member)) {
                let _ = member.replies.send(SharedReply::Failed(failure));
                told.push(member);
            }
        }
    }
}

/// What the writer hands the reader.
enum Sent {
    /// Batches whose bytes are being written, in that order.
    Batches(Vec<(Arc<Member>, Vec<InFlight>)>),
    /// The last this many entries handed over never left: the writer
    /// stopped before writing any byte of their batches, so the primary
    /// cannot have run them, and they are not counted as uncaptured.
    Withdrawn(usize),
    /// A write failed: the connection is done.
    Broken,
    /// Batches taken after the connection stopped, never written.
    Unsent(Vec<(Arc<Member>, Vec<InFlight>)>),
}

/// Puts what the writer handed over into the reader's queue of commands in
/// flight, or among those never written.
fn take(
    sent: Sent,
    queue: &mut VecDeque<(Arc<Member>, InFlight)>,
    unsent: &mut Vec<(Arc<Member>, Vec<InFlight>)>,
) {
    match sent {
        Sent::Batches(batches) => {
            for (member, entries) in batches {
                queue.extend(entries.into_iter().map(|e| (member.clone(), e)));
            }
        }
        // No reply can have taken them: none of their bytes was written,
        // and they are the last the queue holds.
        Sent::Withdrawn(n) => {
            let from = queue.len().saturating_sub(n);
            unsent.extend(queue.drain(from..).map(|(member, e)| (member, vec![e])));
        }
        // Replies to what reached the primary may still come: the read
        // side ends the connection.
        Sent::Broken => {}
        Sent::Unsent(batches) => unsent.extend(batches),
    }
}

/// One session's consecutive replies in a read.
struct Run {
    member: Arc<Member>,
    start: usize,
    count: usize,
    cost: usize,
    waits: Vec<AckWait>,
}

impl Run {
    fn hand_over(self, replies: &Bytes, end: usize) {
        // The session gives back the budget once the replies are with its
        // client's output (which may wait for Kafka). A session gone
        // meanwhile has nothing to read them: its writes were captured all
        // the same.
        let _ = self.member.replies.send(SharedReply::Replies {
            bytes: replies.slice(self.start..end),
            waits: self.waits,
            count: self.count,
            cost: self.cost,
        });
    }
}

/// Sessions → primary: every batch waiting goes in one write, its entries
/// to the reader first (so a reply never comes before its entry). Ends
/// when a write fails or the reader says `stop`; then no batch is taken any
/// more (a session's send fails, and it opens a new connection), and the
/// batches taken are handed to the reader, which fails them.
async fn write_batches(
    mut upstream: WriteHalf,
    mut inbox: mpsc::UnboundedReceiver<Batch>,
    sent: mpsc::UnboundedSender<Sent>,
    stop: Arc<Notify>,
    metrics: Arc<SessionMetrics>,
) {
    let mut chunks: Vec<Bytes> = Vec::new();
    // Per chunk: its length before the write, and its batch's entries.
    let mut counts: Vec<(usize, usize)> = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            () = stop.notified() => break,
            b = inbox.recv() => match b {
                Some(b) => b,
                None => break,
            },
        };
        // Other sessions woken by the same readiness poll hand over their
        // batches meanwhile: unpipelined clients' commands go in one write
        // (measured at `SET -P 1`, 50 clients: without this, 0.75 writes
        // to the primary per command).
        if inbox.is_empty() {
            tokio::task::yield_now().await;
        }
        let mut size = first.bytes.len();
        let mut batches = vec![first];
        while size < MAX_WRITE {
            let Ok(b) = inbox.try_recv() else { break };
            size += b.bytes.len();
            batches.push(b);
        }
        chunks.clear();
        counts.clear();
        let mut entries = Vec::with_capacity(batches.len());
        metrics.add_shared_commands(batches.iter().map(|b| b.entries.len()).sum());
        // `rsptimeout` counts from here: the wait for the connection was
        // the proxy's.
        let now = Instant::now();
        for mut b in batches {
            b.entries.iter_mut().for_each(|e| e.sent_at = now);
            counts.push((b.bytes.len(), b.entries.len()));
            chunks.push(b.bytes);
            entries.push((b.session, b.entries));
        }
        if sent.send(Sent::Batches(entries)).is_err() {
            break;
        }
        // A primary that neither reads nor answers must not keep the
        // writer from stopping when the reader gave up on it.
        let written = tokio::select! {
            biased;
            () = stop.notified() => Err(None),
            w = write_all(&mut upstream, &mut chunks) => w.map_err(Some),
        };
        if let Err(error) = written {
            // A cancelled write wrote nothing, and neither does a failed
            // one on a plain socket: `chunks` holds what is left. A failed
            // TLS write may have encrypted (and sent part of) bytes it
            // does not report, so then nothing is withdrawn.
            let withdrawn = match (&error, &upstream) {
                (Some(_), WriteHalf::Tls(_)) => 0,
                _ => untouched(&chunks, &counts),
            };
            if withdrawn > 0 {
                let _ = sent.send(Sent::Withdrawn(withdrawn));
            }
            if let Some(e) = error {
                log::debug!("shared connection to the primary: {e}");
                let _ = sent.send(Sent::Broken);
            }
            break;
        }
    }
    inbox.close();
    let mut late = Vec::new();
    while let Some(b) = inbox.recv().await {
        late.push((b.session, b.entries));
    }
    if !late.is_empty() {
        let _ = sent.send(Sent::Unsent(late));
    }
}

/// The entries of the batches at the end of a write of which no byte was
/// written, from what is left of each chunk and its length before.
fn untouched(left: &[Bytes], counts: &[(usize, usize)]) -> usize {
    left.iter()
        .zip(counts)
        .rev()
        .take_while(|(chunk, (len, _))| chunk.len() == *len && *len > 0)
        .map(|(_, (_, entries))| entries)
        .sum()
}

/// Writes every chunk, as few writes as the socket allows.
async fn write_all(upstream: &mut WriteHalf, chunks: &mut [Bytes]) -> io::Result<()> {
    let mut first = 0;
    while first < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks[first..].iter().map(|c| IoSlice::new(c)).collect();
        let mut written = upstream.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let chunk = &mut chunks[first];
            let n = written.min(chunk.len());
            chunk.advance(n);
            written -= n;
            if chunk.is_empty() {
                first += 1;
            }
        }
        while first < chunks.len() && chunks[first].is_empty() {
            first += 1;
        }
    }
    upstream.flush().await
}

/// The name the shared connection has on the primary (`CLIENT LIST`).
pub(crate) const SHARED_NAME: &str = "remoteback-shared";

/// Names a new shared connection: its first reply, which the reader
/// skips, answers this. Not awaited here, so a paused primary (`CLIENT
/// PAUSE`) holds the first commands under `rsptimeout` as any others. A
/// primary that refuses the name (`-NOAUTH` where a password is required)
/// still serves the connection: its sessions get the primary's own answers
/// on it, as on their own.
async fn name(stream: &mut remoteback_transport::Stream) -> io::Result<()> {
    let request = remoteback_protocol::Command::from_parts(["CLIENT", "SETNAME", SHARED_NAME]);
    stream.write_all(&request.to_resp()).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Verdict;
    use crate::session::inflight::Shape;
    use remoteback_protocol::Command;
    use tokio::net::TcpSocket;

    fn member() -> Arc<Member> {
        let (replies, _) = mpsc::unbounded_channel();
        Arc::new(Member {
            replies,
            budget: Arc::new(InFlightBudget::new(false)),
        })
    }

    fn batch(session: &Arc<Member>, bytes: usize, commands: usize) -> Batch {
        let entries = (0..commands)
            .map(|i| {
                let command = Command::from_parts(["SET".to_string(), format!("k{i}"), "v".into()]);
                InFlight::new(command, Verdict::default(), Shape::One, None, 1)
            })
            .collect();
        Batch {
            bytes: Bytes::from(vec![b'x'; bytes]),
            entries,
            session: session.clone(),
        }
    }

    #[test]
    fn only_the_batches_at_the_end_with_no_byte_written_are_untouched() {
        let mut partly = Bytes::from_static(b"hello");
        partly.advance(3);
        let left = [
            Bytes::new(),
            partly,
            Bytes::from_static(b"xyz"),
            Bytes::from_static(b"q"),
        ];
        let counts = [(3, 1), (5, 10), (3, 2), (1, 4)];
        assert_eq!(untouched(&left, &counts), 6);
        let whole = [Bytes::from_static(b"abc"), Bytes::from_static(b"de")];
        assert_eq!(untouched(&whole, &[(3, 1), (2, 2)]), 3);
        assert_eq!(untouched(&[Bytes::new()], &[(4, 1)]), 0);
    }

    /// A primary that stops reading, then a stop (the reader gave up on
    /// it, `rsptimeout`): the batch cut off part-way may have run and stays
    /// in flight, to be counted as uncaptured; the one after it in the same
    /// write never left, and is withdrawn.
    #[tokio::test]
    async fn a_stopped_write_withdraws_the_batches_it_wrote_nothing_of() {
        let listening = TcpSocket::new_v4().unwrap();
        listening.set_recv_buffer_size(4096).unwrap();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listening.listen(1).unwrap();
        let connecting = TcpSocket::new_v4().unwrap();
        connecting.set_send_buffer_size(4096).unwrap();
        let client = connecting
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        // Never read: the write blocks once the socket buffers are full.
        let (_primary, _) = listener.accept().await.unwrap();
        let (_rd, wr) = remoteback_transport::Stream::Plain(client).into_split();

        let (first, second) = (member(), member());
        let (inbox, batches) = mpsc::unbounded_channel();
        // Both wait when the writer starts: they go in one write.
        inbox.send(batch(&first, 200 * 1024, 1)).ok().unwrap();
        inbox.send(batch(&second, 64, 2)).ok().unwrap();
        let (sent_tx, mut sent) = mpsc::unbounded_channel();
        let stop = Arc::new(Notify::new());
        let writer = tokio::spawn(write_batches(
            wr,
            batches,
            sent_tx,
            stop.clone(),
            Arc::new(SessionMetrics::default()),
        ));

        let mut queue = VecDeque::new();
        let mut unsent = Vec::new();
        let handed = sent.recv().await.unwrap();
        assert!(matches!(&handed, Sent::Batches(b) if b.len() == 2));
        take(handed, &mut queue, &mut unsent);
        // The writer runs on this thread: it is blocked in the write now.
        stop.notify_one();
        let after = sent.recv().await.unwrap();
        assert!(
            matches!(after, Sent::Withdrawn(2)),
            "the second batch withdrawn"
        );
        take(after, &mut queue, &mut unsent);
        assert!(sent.recv().await.is_none(), "nothing else handed over");
        writer.await.unwrap();

        assert_eq!(queue.len(), 1, "the batch cut off part-way stays in flight");
        assert!(Arc::ptr_eq(&queue[0].0, &first));
        assert_eq!(unsent.len(), 2);
        assert!(unsent
            .iter()
            .all(|(m, e)| Arc::ptr_eq(m, &second) && e.len() == 1));
    }
}

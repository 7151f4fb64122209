//! Where a session's replies go: straight to the client, or held until Kafka
//! acknowledged the records of the writes they answer (`ack = "kafka"`).
//!
//! Holding happens in a writer of its own, so the reply loop keeps reading
//! the primary, matching and capturing while earlier replies wait: a
//! pipelining client's writes are all in flight to Kafka together, and its
//! throughput is the broker's, not one round trip per write. Replies leave
//! in the order the primary sent them; a read behind a held write waits for
//! it, as it would behind a slow write on Redis itself.
//!
//! A write whose record was lost (dropped at a full backlog, or given up on
//! by the producer) took effect on the primary but may never reach the
//! backup: its client gets an error in place of the reply, never a success
//! it cannot rely on.
//!
//! Replies written straight to the client never make the reply loop wait
//! for a client that reads slowly or not at all: what its socket does not
//! take is kept as unread output, written when the socket has room, and
//! bounded by the output buffer limit ([`OutputLimit`]): past it the client
//! is closed, as Redis closes one past `client-output-buffer-limit`.
//!
//! A plain client is written with the socket's own non-blocking writes. A
//! TLS client (`bindtls`) is written through rustls: bytes rustls took may
//! wait in its buffer until the socket has room, and the reply loop keeps
//! flushing until they are out. They no longer count as unread output: the
//! limit applies on top of rustls's buffer (64 KiB at most), as it applies
//! on top of the kernel's.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use remoteback_transport::WriteHalf;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::limits::{ClientLimits, Closed, OutputLimit};
use crate::sender::ack::{Delivery, Lost};

/// One reply that waits for deliveries: its span in a chunk of replies.
pub(crate) struct AckWait {
    pub start: usize,
    pub end: usize,
    pub deliveries: Vec<Delivery>,
}

/// A chunk of replies and the ones among them that wait.
pub(crate) struct ReplyChunk {
    bytes: Bytes,
    waits: Vec<AckWait>,
}

/// How many chunks of replies may wait for the writer: when they are all
/// taken, the reply loop stops reading the primary until the writer catches
/// up, so a client whose replies wait for Kafka (or that reads slowly) holds
/// a bounded amount of the proxy's memory, and Redis's own output buffer
/// limits apply beyond it.
pub(crate) const MAX_WAITING_CHUNKS: usize = 256;

/// Where the reply loop writes the client's replies.
pub(crate) enum ReplyOutput {
    /// `ack = "redis"`: written as soon as they are matched.
    Direct(ClientWriter),
    /// `ack = "kafka"`: handed to [`release_acked`], which writes them when
    /// their deliveries are in.
    AfterAck(mpsc::Sender<ReplyChunk>),
    /// The client is gone: replies are read and captured, then dropped.
    Gone,
}

impl ReplyOutput {
    /// Sends `bytes` to the client, after their `waits` (which lie within
    /// `bytes`, in order) resolved. Direct replies never wait: what the
    /// client's socket does not take now stays unread output. When the
    /// client cannot take them any more, or its unread output passed the
    /// limit, this and every later send drops the replies: the reply loop
    /// must go on capturing what the client's commands did.
    pub async fn send(&mut self, bytes: Bytes, waits: Vec<AckWait>) {
        let result = match self {
            ReplyOutput::Direct(client) => client.push(bytes),
            ReplyOutput::AfterAck(tx) => tx
                .send(ReplyChunk { bytes, waits })
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client writer gone")),
            ReplyOutput::Gone => Ok(()),
        };
        self.on_result(result);
    }

    /// Whether replies wait for the client's socket to take them.
    pub fn has_unread(&self) -> bool {
        matches!(self, ReplyOutput::Direct(client) if !client.unread.is_empty() || client.flushing)
    }

    /// Waits until the client's socket takes some of its unread output, and
    /// writes what it takes. Only meaningful while [`Self::has_unread`].
    pub async fn write_unread(&mut self) {
        if let ReplyOutput::Direct(client) = self {
            let result = client.write_some().await;
            self.on_result(result);
        }
    }

    /// Writes all unread output, however long the client takes: the last
    /// replies of a session are owed to it like the others.
    pub async fn finish(&mut self) {
        if let ReplyOutput::Direct(client) = self {
            let result = client.write_all().await;
            self.on_result(result);
        }
    }

    fn on_result(&mut self, result: io::Result<()>) {
        if let Err(e) = result {
            log::debug!("client gone ({e}); its replies are still captured, then dropped");
            if let ReplyOutput::Direct(client) = self {
                client.close();
            }
            *self = ReplyOutput::Gone;
        }
    }
}

/// A client's socket and the replies it did not take yet.
pub(crate) struct ClientWriter {
    client: WriteHalf,
    unread: VecDeque<Bytes>,
    unread_bytes: u64,
    /// TLS: rustls holds bytes the socket did not take yet (not counted
    /// in `unread_bytes`).
    flushing: bool,
    above_soft_since: Option<Instant>,
    limits: Arc<ClientLimits>,
    /// For the log line of a client closed at the limit.
    peer: String,
    /// The client's socket, to shut it both ways (a TLS write half does
    /// not give its socket back).
    fd: RawFd,
}

/// How many pieces of unread output one write hands the kernel at most.
const MAX_SLICES: usize = 64;

impl ClientWriter {
    /// `fd` is `client`'s socket, alive as long as `client` is.
    pub fn new(
        client: WriteHalf,
        limits: Arc<ClientLimits>,
        peer: String,
        fd: RawFd,
    ) -> ClientWriter {
        ClientWriter {
            client,
            unread: VecDeque::new(),
            unread_bytes: 0,
            flushing: false,
            above_soft_since: None,
            limits,
            peer,
            fd,
        }
    }

    /// Writes what the socket takes now, keeps the rest; an error once the
    /// unread output passed the limit (the client was closed).
    fn push(&mut self, mut bytes: Bytes) -> io::Result<()> {
        if let WriteHalf::Plain(socket) = &self.client {
            if self.unread.is_empty() {
                // The common case: the socket takes it all, nothing is kept.
                match socket.try_write(&bytes) {
                    Ok(n) if n == bytes.len() => return Ok(()),
                    Ok(n) => bytes.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.unread_bytes += bytes.len() as u64;
        self.unread.push_back(bytes);
        if matches!(self.client, WriteHalf::Tls(_)) {
            // As far as rustls and the socket take it now; the rest is
            // written when the reply loop sees unread output.
            if let Poll::Ready(Err(e)) = self.poll_tls(&mut Context::from_waker(Waker::noop())) {
                return Err(e);
            }
        }
        self.check_limit()
    }

    fn check_limit(&mut self) -> io::Result<()> {
        let limit: OutputLimit = self.limits.output;
        if !limit.exceeded(
            self.unread_bytes,
            &mut self.above_soft_since,
            Instant::now(),
        ) {
            return Ok(());
        }
        let closed = self.limits.close(Closed::OutputBuffer);
        log::warn!(
            "client {} closed: {} bytes of replies unread, over client_output_buffer_limit (hard {} soft {} for {} s); {closed} closed so far",
            self.peer,
            self.unread_bytes,
            limit.hard,
            limit.soft,
            limit.soft_for.as_secs()
        );
        Err(io::Error::other("over client_output_buffer_limit"))
    }

    /// Waits for room in the socket, then writes as much unread output as
    /// it takes; or, above the soft limit, until its time ran out, so that
    /// a client that reads nothing more is closed then too.
    async fn write_some(&mut self) -> io::Result<()> {
        let soft_deadline = self
            .above_soft_since
            .map(|since| since + self.limits.output.soft_for);
        let WriteHalf::Plain(socket) = &self.client else {
            tokio::select! {
                written = std::future::poll_fn(|cx| self.poll_tls(cx)) => written?,
                () = super::sleep_until(soft_deadline.map(Into::into)) => {}
            }
            return self.check_limit();
        };
        tokio::select! {
            ready = socket.writable() => ready?,
            () = super::sleep_until(soft_deadline.map(Into::into)) => return self.check_limit(),
        }
        while !self.unread.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .unread
                .iter()
                .take(MAX_SLICES)
                .map(|b| IoSlice::new(b))
                .collect();
            let n = match socket.try_write_vectored(&slices) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            consume(&mut self.unread, &mut self.unread_bytes, n);
        }
        self.check_limit()
    }

    /// TLS: hands unread output to rustls and flushes it to the socket.
    /// Ready once something moved (or everything is out), pending when
    /// nothing could; every step is recorded before it returns, so the
    /// future around it may be dropped at any point without losing or
    /// repeating a byte.
    fn poll_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let WriteHalf::Tls(_) = &self.client else {
            return Poll::Ready(Ok(()));
        };
        let mut moved = false;
        while let Some(front) = self.unread.front().cloned() {
            match Pin::new(&mut self.client).poll_write(cx, &front) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    consume(&mut self.unread, &mut self.unread_bytes, n);
                    self.flushing = true;
                    moved = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if moved => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        if !self.flushing {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.client).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.flushing = false;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if moved => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes everything unread, under the same limits.
    async fn write_all(&mut self) -> io::Result<()> {
        while !self.unread.is_empty() || self.flushing {
            self.write_some().await?;
        }
        Ok(())
    }

    /// Ends the connection both ways, so the request side sees the client
    /// gone too and stops reading it.
    fn close(&mut self) {
        self.unread.clear();
        self.unread_bytes = 0;
        self.flushing = false;
        // SAFETY: `fd` is the socket `self.client` holds open, and
        // `self.client` lives as long as `self`.
        let socket = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = socket2::SockRef::from(&socket).shutdown(std::net::Shutdown::Both);
    }
}

/// Drops `n` written bytes from the front of the unread output.
fn consume(unread: &mut VecDeque<Bytes>, unread_bytes: &mut u64, mut n: usize) {
    *unread_bytes -= n as u64;
    while n > 0 {
        let Some(front) = unread.front_mut() else {
            break;
        };
        if n >= front.len() {
            n -= front.len();
            unread.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

/// Writes held replies to `client` in order, each once its deliveries are
/// in. Ends when the reply loop is done and everything was written.
pub(crate) async fn release_acked(
    mut client: WriteHalf,
    mut chunks: mpsc::Receiver<ReplyChunk>,
) -> io::Result<()> {
    let mut out = BytesMut::new();
    while let Some(chunk) = chunks.recv().await {
        let mut pos = 0;
        for wait in chunk.waits {
            out.extend_from_slice(&chunk.bytes[pos..wait.start]);
            let mut outcome = Ok(());
            for mut delivery in wait.deliveries {
                let result = match delivery.ready() {
                    Some(result) => result,
                    None => {
                        // Everything before this reply can go now.
                        write_flushed(&mut client, &out).await?;
                        out.clear();
                        delivery.outcome().await
                    }
                };
                outcome = outcome.and(result);
            }
            match outcome {
                Ok(()) => out.extend_from_slice(&chunk.bytes[wait.start..wait.end]),
                Err(lost) => out.extend_from_slice(lost_reply(&lost).as_bytes()),
            }
            pos = wait.end;
        }
        out.extend_from_slice(&chunk.bytes[pos..]);
        if chunks.is_empty() {
            write_flushed(&mut client, &out).await?;
            out.clear();
        }
    }
    write_flushed(&mut client, &out).await
}

/// Writes `bytes` and flushes them (TLS: out of rustls's buffer).
async fn write_flushed(client: &mut WriteHalf, bytes: &[u8]) -> io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

/// The error a client gets instead of the reply to a write whose record did
/// not reach Kafka.
fn lost_reply(lost: &Lost) -> String {
    let reason = lost.to_string().replace(['\r', '\n'], " ");
    format!(
        "-ERR remoteback: the write took effect on the primary but its record did not reach \
         Kafka ({reason}); the backup needs a resync\r\n"
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::sender::ack::Dropped;

    async fn pair() -> (WriteHalf, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (WriteHalf::Plain(server.into_split().1), client)
    }

    async fn read_some(client: &mut TcpStream) -> String {
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("reply in time")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn replies_wait_for_their_delivery_and_keep_their_order() {
        let (server, mut client) = pair().await;
        let (tx, rx) = mpsc::channel(MAX_WAITING_CHUNKS);
        let writer = tokio::spawn(release_acked(server, rx));
        let mut replies = ReplyOutput::AfterAck(tx);
        let (report, delivery) = Delivery::pending();
        // "+OK" answers a write; "$1 x" a read pipelined behind it.
        let bytes = Bytes::from_static(b"+OK\r\n$1\r\nx\r\n");
        let waits = vec![AckWait {
            start: 0,
            end: 5,
            deliveries: vec![delivery],
        }];
        replies.send(bytes, waits).await;
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
        assert!(
            early.is_err(),
            "nothing may reach the client before the ack"
        );
        report.send(Ok(())).unwrap();
        assert_eq!(read_some(&mut client).await, "+OK\r\n$1\r\nx\r\n");
        drop(replies);
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_lost_record_turns_its_reply_into_an_error() {
        let (server, mut client) = pair().await;
        let (tx, rx) = mpsc::channel(MAX_WAITING_CHUNKS);
        let writer = tokio::spawn(release_acked(server, rx));
        let mut replies = ReplyOutput::AfterAck(tx);
        let (report, delivery) = Delivery::pending();
        let bytes = Bytes::from_static(b":1\r\n:2\r\n:3\r\n");
        let waits = vec![
            AckWait {
                start: 4,
                end: 8,
                deliveries: vec![delivery],
            },
            AckWait {
                start: 8,
                end: 12,
                deliveries: vec![Delivery::Lost(Lost::Dropped(Dropped::BacklogFull {
                    bytes: 2048,
                    limit: 1024,
                }))],
            },
        ];
        replies.send(bytes, waits).await;
        report
            .send(Err(Lost::NotAcknowledged(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            ))))
            .unwrap();
        drop(replies);
        writer.await.unwrap().unwrap();
        let mut all = String::new();
        while all.matches("\r\n").count() < 3 {
            all.push_str(&read_some(&mut client).await);
        }
        let lines: Vec<&str> = all.split("\r\n").collect();
        assert_eq!(lines[0], ":1");
        assert!(
            lines[1].starts_with("-ERR remoteback: the write took effect")
                && lines[1].contains("timed out")
        );
        assert!(
            lines[2].contains("(the record was dropped: the backlog is full"),
            "{}",
            lines[2]
        );
    }
}

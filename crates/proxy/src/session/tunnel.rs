//! A connection handed over to the primary's replication stream.
//!
//! A client that sends `SYNC` or `PSYNC` (a replica, or a tool reading the
//! stream) is answered with an RDB payload and then the primary's command
//! stream, not with replies. The proxy cannot frame that, and must not
//! capture it: the writes in it were captured on the connections that made
//! them. So once the primary started the stream, the session copies bytes
//! both ways, unchanged, until either side closes.

use std::io;

use bytes::BytesMut;
use remoteback_transport::{ReadHalf, WriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::client::READ_CHUNK;
use super::output::ReplyOutput;
use remoteback_protocol::Command;

/// What became of a `SYNC`/`PSYNC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handover {
    /// The primary answered with an error: an ordinary reply, the session
    /// goes on.
    Refused,
    /// The primary started its replication stream: the connection is a
    /// tunnel from now on.
    Taken,
}

/// The reply side's part of a handover: it says when everything before the
/// `SYNC` was answered, then what the primary made of it.
#[derive(Debug)]
pub(crate) struct HandoverRequest {
    /// `true`: the stream may start; `false`: the connection is subscribed
    /// or monitoring, the `SYNC` goes as an ordinary command.
    pub answered: Option<oneshot::Sender<bool>>,
    pub outcome: oneshot::Sender<Handover>,
}

/// Whether `command` asks for the replication stream.
pub(crate) fn asks_for_replication(command: &Command) -> bool {
    command.is("SYNC") || command.is("PSYNC")
}

/// What the primary's first bytes after a `SYNC` mean: an error line is a
/// refusal; anything else (`+FULLRESYNC`, `+CONTINUE`, the payload's `$`,
/// or the newlines a primary sends while it prepares the payload) starts
/// the stream. A RESP3 push (`>`, a tracking invalidation that came first)
/// is read as a refusal: if the stream did start, the reply loop cannot
/// frame it and ends the session, which loses nothing, where reading a
/// refusal as a stream would leave the connection uncaptured.
pub(crate) fn outcome(first: u8) -> Handover {
    if first == b'-' || first == b'>' {
        Handover::Refused
    } else {
        Handover::Taken
    }
}

/// Client → primary, unchanged, until the client closes; then the primary
/// is told the stream's reader is gone.
pub(super) async fn requests(mut client: ReadHalf, upstream: &mut WriteHalf) -> io::Result<()> {
    tokio::io::copy(&mut client, upstream).await?;
    upstream.shutdown().await
}

/// Primary → client, unchanged, starting with `buf` (what was read already),
/// until the primary closes or the client is gone. The client's output
/// buffer limit still holds: a replica that stops reading is closed, as
/// Redis closes one past its replica limit.
pub(super) async fn replies(
    mut upstream: ReadHalf,
    client: &mut ReplyOutput,
    mut buf: BytesMut,
) -> io::Result<()> {
    loop {
        if !buf.is_empty() {
            client.send(buf.split().freeze(), Vec::new()).await;
        }
        if matches!(client, ReplyOutput::Gone) {
            return Ok(());
        }
        buf.reserve(READ_CHUNK);
        tokio::select! {
            read = upstream.read_buf(&mut buf) => {
                if read? == 0 {
                    return Ok(());
                }
            }
            () = client.write_unread(), if client.has_unread() => {}
        }
    }
}

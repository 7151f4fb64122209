//! A connection to the backup Redis: the project's one hand-written RESP
//! client. Every other connection to Redis (the proxy's probe, the
//! comparator, the tools) is the `redis` crate's.
//!
//! Deliberately small: the applier writes a whole transaction (`MULTI`, a
//! batch's commands, the offset, `EXEC`) as one buffer and reads the
//! replies back in order, which needs a socket, a RESP scanner and nothing
//! else. It is kept because it is measurably faster on that hot path:
//! `bench/backup-connection.sh` applies the same transactions of 1000
//! `SET`s through it and through the `redis` crate's atomic pipeline. On
//! the 2-core development machine the client side took 1,453 instructions
//! a record against the crate's 4,787 (callgrind), and 1.26× to 1.45× the
//! crate's records/s against a local redis-server (medians of 5
//! alternating rounds, three runs). It can also write already-encoded RESP
//! as it is, which the crate cannot.

use std::time::Duration;

use bytes::BytesMut;
use remoteback_protocol::frame::{Frame, Scanner};
use remoteback_protocol::Command;
use remoteback_transport::{Connector, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::settings::BackupSettings;

/// A failure talking to the backup. `Io` and `Closed` mean the connection is
/// gone and must be re-established, `Unavailable` that the backup cannot take
/// writes for now (it is loading its data after a restart, out of memory, ...);
/// the others are answers the backup gave.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("backup {0} closed the connection")]
    Closed(String),
    #[error("backup {addr} is not available: {reason}")]
    Unavailable { addr: String, reason: String },
    #[error("backup {addr} sent an invalid reply: {reason}")]
    BadReply { addr: String, reason: String },
    #[error("backup {addr} refused authentication: {reply}")]
    Auth { addr: String, reply: String },
    #[error("backup {addr}: TLS settings: {reason}")]
    Tls { addr: String, reason: String },
}

impl BackupError {
    /// Whether waiting and reconnecting may help: the connection is gone, or
    /// the backup said it cannot serve right now. Such errors are retried
    /// with backoff, never returned as a failure of the replay.
    pub fn is_retryable(&self) -> bool {
        // The TLS files were checked with the configuration; failing to
        // read them later is a renewal caught half-way.
        matches!(
            self,
            BackupError::Io { .. }
                | BackupError::Closed(_)
                | BackupError::Unavailable { .. }
                | BackupError::Tls { .. }
        )
    }
}

/// Error codes with which Redis refuses a command because of its own state,
/// not because of the command: it is loading its data set (`LOADING`, after
/// a restart), running a script (`BUSY`), cannot persist (`MISCONF`), is full
/// (`OOM`), is a replica (`READONLY`, `MASTERDOWN`, `NOREPLICAS`), lost the
/// connection's authentication (`NOAUTH`), or is a cluster in trouble
/// (`TRYAGAIN`, `CLUSTERDOWN`). A record refused that way is applied later,
/// never skipped.
const UNAVAILABLE: &[&str] = &[
    "LOADING",
    "BUSY",
    "MISCONF",
    "OOM",
    "READONLY",
    "MASTERDOWN",
    "NOREPLICAS",
    "NOAUTH",
    "TRYAGAIN",
    "CLUSTERDOWN",
];

/// Whether an error reply (its text, without the `-`) means the backup
/// cannot serve for now rather than refusing this command. An `EXECABORT`
/// counts when the reason it gives does (`EXECABORT Transaction discarded
/// because of: OOM ...`).
pub fn is_unavailable(error: &str) -> bool {
    let reason = error
        .strip_prefix("EXECABORT Transaction discarded because of: ")
        .unwrap_or(error)
        .trim_start_matches('-');
    let code = reason.split_whitespace().next().unwrap_or("");
    UNAVAILABLE.contains(&code) || reason.starts_with("ERR max number of clients reached")
}

/// One authenticated connection to the backup.
pub struct Backup {
    addr: String,
    stream: Stream,
    buf: BytesMut,
    scanner: Scanner,
}

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the backup may take to answer before the connection counts as
/// lost. Losing it is harmless (the stored offset says what took effect), so
/// this only bounds how long a hung backup holds the replay up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

impl Backup {
    /// Connects and authenticates (`AUTH [username] password` when set).
    pub async fn connect(settings: &BackupSettings) -> Result<Backup, BackupError> {
        // Built at each connection, so that renewed certificate files are
        // read when the backup is reconnected to.
        let connector = Connector::new(&settings.host, settings.port, settings.tls.as_ref())
            .map_err(|e| BackupError::Tls {
                addr: format!("{}:{}", settings.host, settings.port),
                reason: e.to_string(),
            })?;
        let addr = connector.addr().to_owned();
        let io = |source| BackupError::Io {
            addr: addr.clone(),
            source,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect())
            .await
            .map_err(|_| {
                io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })?
            .map_err(io)?;
        let mut backup = Backup {
            addr: addr.clone(),
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            scanner: Scanner::new(),
        };
        if let Some(password) = &settings.password {
            let mut auth = vec!["AUTH".as_bytes()];
            if let Some(user) = &settings.username {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            let reply = backup.call(&Command::from_parts(auth)).await?;
            if reply.is_error() && is_unavailable(&describe(&reply)) {
                return Err(BackupError::Unavailable {
                    addr,
                    reason: describe(&reply),
                });
            }
            if reply.is_error() {
                return Err(BackupError::Auth {
                    addr,
                    reply: describe(&reply),
                });
            }
        }
        Ok(backup)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Writes bytes (one or many commands) without waiting for replies.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        let written = async {
            self.stream.write_all(bytes).await?;
            // Over TLS the end of it may wait in rustls's buffer otherwise.
            self.stream.flush().await
        };
        written.await.map_err(|source| BackupError::Io {
            addr: self.addr.clone(),
            source,
        })
    }

    /// Reads the next complete reply.
    pub async fn reply(&mut self) -> Result<Frame, BackupError> {
        loop {
            let found = self
                .scanner
                .take(&mut self.buf)
                .map_err(|e| BackupError::BadReply {
                    addr: self.addr.clone(),
                    reason: e.to_string(),
                })?;
            if let Some(frame) = found {
                return Ok(frame);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let read = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read_buf(&mut self.buf));
            let n = match read.await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no reply within {REPLY_TIMEOUT:?}"),
                )),
            }
            .map_err(|source| BackupError::Io {
                addr: self.addr.clone(),
                source,
            })?;
            if n == 0 {
                return Err(BackupError::Closed(self.addr.clone()));
            }
        }
    }

    /// Sends one command and reads its reply.
    pub async fn call(&mut self, command: &Command) -> Result<Frame, BackupError> {
        self.send(&command.to_resp()).await?;
        self.reply().await
    }

    /// Gives up the socket (for `ROW` connections that only write and drain).
    pub fn into_stream(self) -> Stream {
        self.stream
    }
}

/// An error for a reply that should not have been an error: `Unavailable`
/// when the backup said it cannot serve now, else `BadReply` saying `what`.
pub fn refused(addr: &str, what: &str, reply: &Frame) -> BackupError {
    let text = describe(reply);
    if is_unavailable(&text) {
        BackupError::Unavailable {
            addr: addr.to_string(),
            reason: format!("{what}: {text}"),
        }
    } else {
        BackupError::BadReply {
            addr: addr.to_string(),
            reason: format!("{what}: {text}"),
        }
    }
}

/// A reply as text, for logs and errors.
pub fn describe(reply: &Frame) -> String {
    match reply {
        Frame::Error(e) | Frame::Simple(e) | Frame::Bulk(e) => {
            String::from_utf8_lossy(e).into_owned()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_replies() {
        for e in [
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "READONLY You can't write against a read only replica.",
            "NOAUTH Authentication required.",
            "EXECABORT Transaction discarded because of: OOM command not allowed when used memory > 'maxmemory'.",
            "EXECABORT Transaction discarded because of: -LOADING Redis is loading",
            "ERR max number of clients reached",
        ] {
            assert!(is_unavailable(e), "{e}");
        }
        for e in [
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "ERR unknown command 'FOO', with args beginning with: ",
            "EXECABORT Transaction discarded because of previous errors.",
            "EXECABORT Transaction discarded because of: ERR unknown command",
            "BUSYKEY Target key name already exists.",
            "NOSCRIPT No matching script. Please use EVAL.",
            "ERR value is not an integer or out of range",
        ] {
            assert!(!is_unavailable(e), "{e}");
        }
    }
}

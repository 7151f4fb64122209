//! A connection to the backup Redis.
//!
//! Deliberately small: the applier writes whole pipelines at once and reads
//! the replies back in order, which needs a socket, a RESP scanner and
//! nothing else.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use remoteback_protocol::frame::{self, Frame, Scanner};
use remoteback_protocol::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::settings::BackupSettings;

/// A failure talking to the backup. `Io` and `Closed` mean the connection is
/// gone and must be re-established; the others are answers the backup gave.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("backup {0} closed the connection")]
    Closed(String),
    #[error("backup {addr} sent an invalid reply: {reason}")]
    BadReply { addr: String, reason: String },
    #[error("backup {addr} refused authentication: {reply}")]
    Auth { addr: String, reply: String },
}

impl BackupError {
    /// Whether reconnecting may help.
    pub fn is_connection(&self) -> bool {
        matches!(self, BackupError::Io { .. } | BackupError::Closed(_))
    }
}

/// One authenticated connection to the backup.
pub struct Backup {
    addr: String,
    stream: TcpStream,
    buf: BytesMut,
    scanner: Scanner,
}

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Backup {
    /// Connects and authenticates (`AUTH [username] password` when set).
    pub async fn connect(settings: &BackupSettings) -> Result<Backup, BackupError> {
        let addr = format!("{}:{}", settings.host, settings.port);
        let io = |source| BackupError::Io {
            addr: addr.clone(),
            source,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| {
                io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })?
            .map_err(io)?;
        let _ = stream.set_nodelay(true);
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
        self.stream
            .write_all(bytes)
            .await
            .map_err(|source| BackupError::Io {
                addr: self.addr.clone(),
                source,
            })
    }

    /// Reads the next complete reply.
    pub async fn reply(&mut self) -> Result<Frame, BackupError> {
        loop {
            let found = self
                .scanner
                .next(&self.buf)
                .map_err(|e| BackupError::BadReply {
                    addr: self.addr.clone(),
                    reason: e.to_string(),
                })?;
            if let Some(len) = found {
                let raw: Bytes = self.buf.split_to(len).freeze();
                return match frame::decode(&raw) {
                    Ok(Some((f, _))) => Ok(f),
                    Ok(None) | Err(_) => Err(BackupError::BadReply {
                        addr: self.addr.clone(),
                        reason: "undecodable reply".into(),
                    }),
                };
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
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
    pub fn into_stream(self) -> TcpStream {
        self.stream
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

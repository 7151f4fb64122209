//! Asking the primary whether a client is blocked (`CLIENT LIST ID`), and
//! ending a block whose client is gone (`CLIENT UNBLOCK`).
//!
//! The question goes over a connection of the session's own, authenticated
//! with the credentials its client used successfully (`AUTH`, or `HELLO`
//! with `AUTH`), so the proxy needs no credentials of its own. The
//! connection is opened on first use.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use remoteback_protocol::frame::{Frame, Scanner};
use remoteback_protocol::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A session's probe connection.
#[derive(Debug)]
pub struct Prober {
    upstream: String,
    /// `AUTH` arguments that worked for the client: `[user,] password`.
    auth: Option<Vec<Bytes>>,
    conn: Option<(TcpStream, BytesMut)>,
}

impl Prober {
    pub fn new(upstream: &str) -> Self {
        Prober {
            upstream: upstream.to_string(),
            auth: None,
            conn: None,
        }
    }

    /// Remembers the credentials of a successful `AUTH` or `HELLO ... AUTH`.
    pub fn observe_auth(&mut self, command: &Command) {
        let args = command.args();
        let auth = if command.is("AUTH") {
            Some(args[1..].to_vec())
        } else if command.is("HELLO") {
            args.iter()
                .position(|a| a.eq_ignore_ascii_case(b"AUTH"))
                .map(|i| args[i + 1..args.len().min(i + 3)].to_vec())
        } else {
            None
        };
        if let Some(auth) = auth.filter(|a| !a.is_empty()) {
            self.auth = Some(auth);
            self.conn = None;
        }
    }

    /// Whether Redis client `client_id` is blocked right now.
    pub async fn is_blocked(&mut self, client_id: i64) -> io::Result<bool> {
        let id = client_id.to_string();
        self.ask(&["CLIENT", "LIST", "ID", &id], |reply| match reply {
            Frame::Bulk(line) | Frame::Simple(line) => Some(blocked_flag(line)),
            _ => None,
        })
        .await
    }

    /// Ends the block of Redis client `client_id` as if its timeout had
    /// expired (`CLIENT UNBLOCK id`): its blocked command answers with its
    /// timeout reply. `Ok(false)` when it was not blocked.
    pub async fn unblock(&mut self, client_id: i64) -> io::Result<bool> {
        let id = client_id.to_string();
        self.ask(&["CLIENT", "UNBLOCK", &id], |reply| match reply {
            Frame::Integer(n) => Some(*n == 1),
            _ => None,
        })
        .await
    }

    /// Sends `parts` (within [`PROBE_TIMEOUT`]) and reads the answer with
    /// `read`; any failure, or an answer `read` does not take, drops the
    /// connection so the next question opens a fresh one.
    async fn ask<T>(
        &mut self,
        parts: &[&str],
        read: impl Fn(&Frame) -> Option<T>,
    ) -> io::Result<T> {
        let command = Command::from_parts(parts.iter());
        let what = parts[..2].join(" ");
        let result = match tokio::time::timeout(PROBE_TIMEOUT, self.call(&command)).await {
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} timed out"),
            )),
            Ok(Err(e)) => Err(e),
            Ok(Ok(reply)) => {
                read(&reply).ok_or_else(|| io::Error::other(format!("{what} answered {reply:?}")))
            }
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn call(&mut self, command: &Command) -> io::Result<Frame> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.upstream).await?;
            let _ = stream.set_nodelay(true);
            self.conn = Some((stream, BytesMut::with_capacity(4096)));
            if let Some(auth) = self.auth.clone() {
                let mut parts = vec![Bytes::from_static(b"AUTH")];
                parts.extend(auth);
                if let Frame::Error(e) = self.roundtrip(&Command::new(parts)).await? {
                    self.conn = None;
                    return Err(io::Error::other(format!(
                        "AUTH: {}",
                        String::from_utf8_lossy(&e)
                    )));
                }
            }
        }
        self.roundtrip(command).await
    }

    async fn roundtrip(&mut self, command: &Command) -> io::Result<Frame> {
        let Some((stream, buf)) = self.conn.as_mut() else {
            return Err(io::Error::other("not connected"));
        };
        stream.write_all(&command.to_resp()).await?;
        let mut scanner = Scanner::new();
        loop {
            if let Some(frame) = scanner.take(buf).map_err(io::Error::other)? {
                return Ok(frame);
            }
            if stream.read_buf(buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// Whether a `CLIENT LIST` line has `b` (blocked) among its flags.
fn blocked_flag(line: &[u8]) -> bool {
    line.split(|&b| b == b' ')
        .find_map(|field| field.strip_prefix(b"flags="))
        .is_some_and(|flags| flags.contains(&b'b'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_blocked_flag() {
        assert!(blocked_flag(
            b"id=7 addr=127.0.0.1:5 laddr=x fd=8 name= age=1 idle=1 flags=b db=0 cmd=blpop\n"
        ));
        assert!(!blocked_flag(
            b"id=7 addr=127.0.0.1:5 flags=N db=0 cmd=client|list\n"
        ));
        assert!(!blocked_flag(b""));
    }

    #[test]
    fn remembers_credentials_that_worked() {
        let mut p = Prober::new("127.0.0.1:1");
        p.observe_auth(&Command::from_parts(["AUTH", "secret"]));
        assert_eq!(p.auth, Some(vec![Bytes::from_static(b"secret")]));
        p.observe_auth(&Command::from_parts([
            "HELLO", "3", "AUTH", "user", "pw", "SETNAME", "x",
        ]));
        assert_eq!(
            p.auth,
            Some(vec![Bytes::from_static(b"user"), Bytes::from_static(b"pw")])
        );
        p.observe_auth(&Command::from_parts(["HELLO", "3"]));
        assert_eq!(
            p.auth.as_ref().map(Vec::len),
            Some(2),
            "HELLO without AUTH keeps them"
        );
    }
}

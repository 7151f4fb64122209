//! Asking the primary whether a client is blocked (`CLIENT LIST ID`), and
//! ending a block whose client is gone (`CLIENT UNBLOCK`).
//!
//! The question goes over a connection of the session's own, authenticated
//! with the credentials its client used successfully (`AUTH`, or `HELLO`
//! with `AUTH`), so the proxy needs no credentials of its own. The
//! connection is opened on first use, with the `redis` crate.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, RedisResult, Value};
use remoteback_protocol::Command;

use crate::primary::Primary;

/// How long one probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a probe failed: the question is not answered, and the order it was
/// for is not guaranteed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("{what}: {source}")]
    Redis {
        what: &'static str,
        source: RedisError,
    },
    #[error("{what} timed out")]
    Timeout { what: &'static str },
    #[error("{what} answered {answer:?}")]
    Unexpected { what: &'static str, answer: Value },
}

/// A session's probe connection.
pub(crate) struct Prober {
    /// The primary, with the proxy's credentials if it has any.
    primary: Primary,
    /// `AUTH` arguments that worked for the client: `[user,] password`.
    auth: Option<Vec<Bytes>>,
    conn: Option<MultiplexedConnection>,
}

impl Prober {
    pub fn new(primary: Primary) -> Self {
        Prober {
            primary,
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
    pub async fn is_blocked(&mut self, client_id: i64) -> Result<bool, ProbeError> {
        let mut list = redis::cmd("CLIENT");
        list.arg("LIST").arg("ID").arg(client_id);
        self.ask("CLIENT LIST", list, |answer| match answer {
            Value::BulkString(line) => Some(blocked_flag(line)),
            Value::SimpleString(line) => Some(blocked_flag(line.as_bytes())),
            Value::VerbatimString { text, .. } => Some(blocked_flag(text.as_bytes())),
            _ => None,
        })
        .await
    }

    /// Ends the block of Redis client `client_id` as if its timeout had
    /// expired (`CLIENT UNBLOCK id`): its blocked command answers with its
    /// timeout reply. `Ok(false)` when it was not blocked.
    pub async fn unblock(&mut self, client_id: i64) -> Result<bool, ProbeError> {
        let mut unblock = redis::cmd("CLIENT");
        unblock.arg("UNBLOCK").arg(client_id);
        self.ask("CLIENT UNBLOCK", unblock, |answer| match answer {
            Value::Int(n) => Some(*n == 1),
            _ => None,
        })
        .await
    }

    /// Sends `command` (within [`PROBE_TIMEOUT`]) and reads the answer with
    /// `read`; any failure, or an answer `read` does not take, drops the
    /// connection so the next question opens a fresh one.
    async fn ask<T>(
        &mut self,
        what: &'static str,
        command: redis::Cmd,
        read: impl Fn(&Value) -> Option<T>,
    ) -> Result<T, ProbeError> {
        let answer = match tokio::time::timeout(PROBE_TIMEOUT, self.call(what, &command)).await {
            Err(_) => Err(ProbeError::Timeout { what }),
            Ok(Err(e)) => Err(e),
            Ok(Ok(answer)) => read(&answer).ok_or(ProbeError::Unexpected { what, answer }),
        };
        if answer.is_err() {
            self.conn = None;
        }
        answer
    }

    /// Sends `command` (named `what`), on a new connection if there is
    /// none.
    async fn call(
        &mut self,
        what: &'static str,
        command: &redis::Cmd,
    ) -> Result<Value, ProbeError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = self.connect().await?;
                self.conn.insert(conn)
            }
        };
        command
            .query_async(conn)
            .await
            .map_err(|source| ProbeError::Redis { what, source })
    }

    /// A new connection, authenticated as the proxy (`connpassword`) or,
    /// without credentials of its own, like the client. The client's go as
    /// an `AUTH` of their own, byte for byte (a password need not be
    /// UTF-8).
    async fn connect(&self) -> Result<MultiplexedConnection, ProbeError> {
        let mut conn = self.open().await.map_err(|source| ProbeError::Redis {
            what: "connect",
            source,
        })?;
        let client_auth = self
            .auth
            .as_ref()
            .filter(|_| self.primary.password.is_none());
        if let Some(auth) = client_auth {
            let mut command = redis::cmd("AUTH");
            for part in auth {
                command.arg(&part[..]);
            }
            command
                .query_async::<()>(&mut conn)
                .await
                .map_err(|source| ProbeError::Redis {
                    what: "AUTH",
                    source,
                })?;
        }
        Ok(conn)
    }

    /// A connection to the primary (`primary.rs`), logged in as the proxy
    /// if it has credentials.
    async fn open(&self) -> RedisResult<MultiplexedConnection> {
        self.primary.connect(0, PROBE_TIMEOUT, PROBE_TIMEOUT).await
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
        let mut p = Prober::new(Primary {
            host: "127.0.0.1".into(),
            port: 1,
            tls: None,
            username: None,
            password: None,
        });
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

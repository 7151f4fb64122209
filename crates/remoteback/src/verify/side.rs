//! One server of the comparison: its connection on a thread of its own.
//!
//! Every step of a comparison asks both servers the same thing, so each
//! connection runs on its own thread and the two servers work at the same
//! time: the main thread hands both their pipeline, then waits for both
//! replies. The connection's thread also paces its commands (`--qps`).

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context};
use redis::{Connection, IntoConnectionInfo, Pipeline, Value};

use super::rate::Pace;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one pipeline's replies may take: a large `DUMP` or a slow
/// server under load, not a stuck one.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

type Reply = anyhow::Result<Vec<Value>>;

struct Job {
    pipe: Arc<Pipeline>,
    commands: usize,
    reply: mpsc::Sender<Reply>,
}

/// A server's connection, served by its own thread.
pub struct Side {
    /// `source` or `target`, for messages.
    label: &'static str,
    /// `host:port`, without the credentials a URL may hold.
    address: String,
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

/// What a `redis://` URL asks for, checked before connecting.
pub struct Endpoint {
    pub info: redis::ConnectionInfo,
    /// `host:port`
    pub address: String,
}

impl Endpoint {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS
    /// (the server's certificate checked against the platform's trusted
    /// ones, or those of `SSL_CERT_FILE`).
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let info = url
            .into_connection_info()
            .map_err(|e| anyhow!("bad URL {}: {e}", redact(url)))?;
        let address = info.addr().to_string();
        Ok(Endpoint { info, address })
    }

    /// The database the URL names (`/N`), 0 when it names none.
    pub fn db(&self) -> i64 {
        self.info.redis_settings().db()
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

impl Side {
    /// Connects to `endpoint` (its credentials and database applied) and
    /// starts the connection's thread. `qps` caps the commands a second.
    pub fn connect(
        label: &'static str,
        endpoint: &Endpoint,
        qps: Option<u32>,
    ) -> anyhow::Result<Side> {
        let address = endpoint.address.clone();
        let info = endpoint.info.clone();
        let quiet = info.redis_settings().clone().set_skip_set_lib_name();
        // Every step waits for its replies: Nagle's algorithm would hold the
        // small requests back for the previous reply's delayed ACK.
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        let info = info.set_redis_settings(quiet).set_tcp_settings(tcp);
        let connection = redis::Client::open(info)
            .and_then(|c| c.get_connection_with_timeout(CONNECT_TIMEOUT))
            .with_context(|| format!("{label}: cannot connect to {address}"))?;
        connection.set_read_timeout(Some(REPLY_TIMEOUT))?;
        connection.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let where_ = format!("{label} {address}");
        let worker = std::thread::Builder::new()
            .name(format!("verify-{label}"))
            .spawn(move || serve(connection, Pace::new(qps), queue, where_))
            .context("start a connection thread")?;
        Ok(Side {
            label,
            address,
            jobs: Some(jobs),
            worker: Some(worker),
        })
    }

    pub fn label(&self) -> &'static str {
        self.label
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `pipe` (of `commands` commands) and returns at once.
    pub fn send(&self, pipe: Arc<Pipeline>, commands: usize) -> Pending {
        let (reply, answer) = mpsc::channel();
        if pipe.is_empty() {
            // Nothing to send (a step with work on one side only).
            let _ = reply.send(Ok(Vec::new()));
            return Pending {
                label: self.label,
                answer,
            };
        }
        let job = Job {
            pipe,
            commands,
            reply,
        };
        if let Some(jobs) = &self.jobs {
            // A failed send leaves `answer` without a sender: `wait` says so.
            let _ = jobs.send(job);
        }
        Pending {
            label: self.label,
            answer,
        }
    }

    /// Sends `pipe` and waits for its replies.
    pub fn query(&self, pipe: Pipeline) -> Reply {
        let commands = pipe.len();
        self.send(Arc::new(pipe), commands).wait()
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The replies of a pipeline sent with [`Side::send`].
pub struct Pending {
    label: &'static str,
    answer: mpsc::Receiver<Reply>,
}

impl Pending {
    pub fn wait(self) -> Reply {
        self.answer
            .recv()
            .unwrap_or_else(|_| Err(anyhow!("{}: the connection thread is gone", self.label)))
    }
}

/// The connection's thread: one pipeline after the other, each paced. Error
/// replies stay in the replies ([`Pipeline::ignore_errors`]): the caller
/// decides which ones mean that a key changed during its comparison.
fn serve(mut connection: Connection, mut pace: Pace, queue: mpsc::Receiver<Job>, where_: String) {
    for job in queue {
        pace.wait(job.commands);
        let result = job
            .pipe
            .query::<Vec<Value>>(&mut connection)
            .map_err(|e| anyhow!("{where_}: {e}"));
        let _ = job.reply.send(result);
    }
}

/// Both servers of a comparison.
pub struct Pair {
    pub source: Side,
    pub target: Side,
}

impl Pair {
    /// The same pipeline on both servers at once.
    pub fn both(&self, pipe: Pipeline) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
        let commands = pipe.len();
        let pipe = Arc::new(pipe);
        let source = self.source.send(pipe.clone(), commands);
        let target = self.target.send(pipe, commands);
        Ok((source.wait()?, target.wait()?))
    }

    /// A pipeline for each server, at once.
    pub fn each(
        &self,
        source: Pipeline,
        target: Pipeline,
    ) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
        let (s, t) = (source.len(), target.len());
        let source = self.source.send(Arc::new(source), s);
        let target = self.target.send(Arc::new(target), t);
        Ok((source.wait()?, target.wait()?))
    }
}

/// A pipeline whose error replies come back as values.
pub fn pipeline() -> Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rediss_urls_are_taken_for_tls() {
        let endpoint = Endpoint::parse("rediss://user:secret@example.com:6380/2").expect("parse");
        assert!(matches!(
            endpoint.info.addr(),
            redis::ConnectionAddr::TcpTls { host, port: 6380, insecure: false, .. }
                if host == "example.com"
        ));
        assert_eq!(endpoint.db(), 2);
        assert!(!endpoint.address.contains("secret"), "{}", endpoint.address);
    }

    #[test]
    fn urls_bring_their_database_and_hide_their_password() {
        let endpoint = Endpoint::parse("redis://u:pw@127.0.0.1:7000/3").expect("parse");
        assert_eq!(endpoint.db(), 3);
        assert_eq!(endpoint.address, "127.0.0.1:7000");
        assert_eq!(Endpoint::parse("redis://127.0.0.1").expect("parse").db(), 0);
        let error = Endpoint::parse("http://u:pw@host")
            .err()
            .expect("bad")
            .to_string();
        assert!(!error.contains("pw"), "{error}");
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
    }
}

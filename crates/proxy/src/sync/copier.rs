//! Copying keys: each key's state read and handed to the senders while its
//! lock is held, so the client writes that follow it in the log apply on
//! top of exactly that state.
//!
//! A key whose `DUMP` fits in a chunk goes as one record,
//! `RESTORE key ms payload REPLACE ABSTTL`, or `DEL key` when it vanished
//! after `SCAN` saw it. Small keys go in groups: the free locks of a group
//! are taken at once, their `DUMP`s pipelined, their records handed over
//! and the locks given back, so a client waits at most one group's round
//! trip. A key too big for one record (or every key with `--method
//! commands`) is rebuilt from typed commands in chunks under one hold of
//! its lock ([`Rebuild`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use remoteback_protocol::record::now_ms;
use remoteback_protocol::Command;

use crate::capture::{Captured, Routes};
use crate::ordering::{LockGuard, OrderTables};
use crate::sender::ack::Lost;
use crate::sender::Senders;

use super::progress::SyncCounters;
use super::rebuild::{Rebuild, RebuildError};
use super::unacked::Unacked;
use super::Method;

/// Longest the sync waits for Kafka while it holds a key's lock (in the
/// middle of a big key): past it the sync fails and gives the lock back
/// rather than hold that key's writers indefinitely.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the sync looks again at a backlog clients filled.
const BACKLOG_POLL: Duration = Duration::from_millis(5);
/// What a record costs besides its key and value, for the byte bounds.
const RECORD_OVERHEAD: u64 = 64;

/// Why copying a key failed: the sync stops there.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{what} on the primary: {source}")]
    Redis {
        what: &'static str,
        source: RedisError,
    },
    #[error("the primary answered {what} with {answer:?}")]
    Unexpected { what: &'static str, answer: Value },
    #[error("reading a key for its rebuild: {0}")]
    Rebuild(String),
    #[error("a record of the sync did not reach Kafka: {0}")]
    Lost(#[from] Lost),
    #[error("Kafka acknowledged none of the sync's records for {0:?} while it held a key's lock")]
    Stalled(Duration),
}

impl From<RebuildError> for CopyError {
    fn from(e: RebuildError) -> Self {
        CopyError::Rebuild(e.to_string())
    }
}

fn redis(what: &'static str) -> impl FnOnce(RedisError) -> CopyError {
    move |source| CopyError::Redis { what, source }
}

/// How the primary says when a key expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// `PEXPIRETIME` (Redis 7.0 and later): the absolute time, exact.
    Absolute,
    /// `PTTL` plus the proxy's clock, for older primaries.
    Relative,
}

impl Expiry {
    /// Which of the two the primary on `conn` knows.
    pub async fn detect(conn: &mut MultiplexedConnection) -> Expiry {
        let probe: Result<Value, _> = redis::cmd("PEXPIRETIME")
            .arg("__remoteback:probe")
            .query_async(conn)
            .await;
        match probe {
            Ok(Value::Int(_)) => Expiry::Absolute,
            _ => Expiry::Relative,
        }
    }

    fn command(self) -> &'static str {
        match self {
            Expiry::Absolute => "PEXPIRETIME",
            Expiry::Relative => "PTTL",
        }
    }

    /// The absolute expiry in ms from the reply; `Some(0)` for none, `None`
    /// when the key is gone.
    fn absolute(self, reply: &Value) -> Option<u64> {
        match (self, reply) {
            (_, Value::Int(-2)) => None,
            (_, Value::Int(-1)) => Some(0),
            (Expiry::Absolute, Value::Int(t)) => Some((*t).max(1) as u64),
            (Expiry::Relative, Value::Int(t)) => Some(now_ms() + (*t).max(1) as u64),
            _ => None,
        }
    }
}

/// What copying needs of the proxy, shared by a sync and by repairs.
pub(crate) struct Copier {
    pub routes: Arc<Routes>,
    pub senders: Arc<Senders>,
    pub tables: Arc<OrderTables>,
    /// The lock holder id: distinct from every session's and every other
    /// sync's or repair's, so that no one re-enters its locks.
    pub holder: u64,
    pub method: Method,
    pub chunk_bytes: u64,
    /// Sync bytes Kafka has not acknowledged, at most.
    pub inflight_limit: u64,
    pub expiry: Expiry,
    pub counters: Arc<SyncCounters>,
    /// Set when the sync is asked to stop: it finishes the key in hand.
    pub cancelled: Arc<AtomicBool>,
}

/// A `DUMP` and expiry read for a key whose lock is held.
struct Dumped {
    key: Bytes,
    payload: Option<Vec<u8>>,
    expires_at: Option<u64>,
}

impl Copier {
    /// Copies a group of `keys` of database `db`, read on `conn`.
    pub async fn copy_keys(
        &self,
        conn: &mut MultiplexedConnection,
        db: u32,
        keys: Vec<Bytes>,
        unacked: &mut Unacked,
    ) -> Result<(), CopyError> {
        if self.method == Method::Commands {
            for key in keys {
                self.room(unacked, 0, false).await?;
                let held = self.lock(db, key.clone()).await;
                self.rebuild(conn, db, key, &held, unacked).await?;
            }
            return Ok(());
        }
        let sizes = self.sizes(conn, &keys).await?;
        let estimate: u64 = sizes.iter().map(|s| s.unwrap_or(0)).sum();
        self.room(unacked, estimate.min(self.chunk_bytes), false)
            .await?;
        // Keys whose lock is taken, or that will be rebuilt in chunks, are
        // copied one at a time after the group, so the group's locks are
        // held for one round trip only.
        let mut free = Vec::new();
        let mut guards = Vec::new();
        let mut alone = Vec::new();
        for (key, size) in keys.into_iter().zip(sizes) {
            if size.is_some_and(|s| s > self.chunk_bytes) {
                alone.push(key);
                continue;
            }
            match self.tables.try_lock_key(self.holder, db, &key) {
                Some(guard) => {
                    free.push(key);
                    guards.push(guard);
                }
                None => alone.push(key),
            }
        }
        let dumped = self.dump(conn, &free).await?;
        for (d, guard) in dumped.into_iter().zip(guards) {
            match d.payload {
                Some(p) if self.too_big(&p) => {
                    // Bigger than its estimate: copied alone, in chunks.
                    drop(guard);
                    alone.push(d.key);
                }
                payload => {
                    self.emit_dumped(db, d.key, payload, d.expires_at, unacked)
                        .await?;
                    drop(guard);
                }
            }
        }
        for key in alone {
            let held = self.lock(db, key.clone()).await;
            self.copy_one(conn, db, key, &held, unacked).await?;
        }
        Ok(())
    }

    /// Copies one key whose lock `held` is, as a group of one.
    pub async fn copy_one(
        &self,
        conn: &mut MultiplexedConnection,
        db: u32,
        key: Bytes,
        held: &LockGuard,
        unacked: &mut Unacked,
    ) -> Result<(), CopyError> {
        if self.method == Method::Commands {
            return self.rebuild(conn, db, key, held, unacked).await;
        }
        let size = self.sizes(conn, std::slice::from_ref(&key)).await?;
        if size[0].is_some_and(|s| s > self.chunk_bytes) {
            return self.rebuild(conn, db, key, held, unacked).await;
        }
        for d in self.dump(conn, &[key]).await? {
            match d.payload {
                Some(p) if self.too_big(&p) => self.rebuild(conn, db, d.key, held, unacked).await?,
                payload => {
                    self.emit_dumped(db, d.key, payload, d.expires_at, unacked)
                        .await?
                }
            }
        }
        Ok(())
    }

    /// Whether a `DUMP` payload makes a record over the chunk size: the key
    /// goes in typed chunks instead.
    fn too_big(&self, payload: &[u8]) -> bool {
        payload.len() as u64 + RECORD_OVERHEAD > self.chunk_bytes
    }

    /// Waits for `key`'s lock in `db`.
    pub async fn lock(&self, db: u32, key: Bytes) -> LockGuard {
        if let Some(guard) = self.tables.try_lock_key(self.holder, db, &key) {
            return guard;
        }
        self.tables.lock_key(self.holder, db, key).await
    }

    /// The primary's size estimate of each key (`MEMORY USAGE`), `None`
    /// for a key that is gone or a primary that does not say.
    async fn sizes(
        &self,
        conn: &mut MultiplexedConnection,
        keys: &[Bytes],
    ) -> Result<Vec<Option<u64>>, CopyError> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("MEMORY").arg("USAGE").arg(&key[..]);
        }
        let replies: Vec<Value> = pipe
            .ignore_errors()
            .query_async(conn)
            .await
            .map_err(redis("MEMORY USAGE"))?;
        Ok(replies
            .iter()
            .map(|r| match r {
                Value::Int(n) => Some((*n).max(0) as u64),
                _ => None,
            })
            .collect())
    }

    /// `DUMP` and the expiry of each key (whose lock is held), pipelined.
    async fn dump(
        &self,
        conn: &mut MultiplexedConnection,
        locked: &[Bytes],
    ) -> Result<Vec<Dumped>, CopyError> {
        if locked.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in locked {
            pipe.cmd("DUMP").arg(&key[..]);
            pipe.cmd(self.expiry.command()).arg(&key[..]);
        }
        let replies: Vec<Value> = pipe.query_async(conn).await.map_err(redis("DUMP"))?;
        let mut replies = replies.into_iter();
        let mut out = Vec::with_capacity(locked.len());
        for key in locked {
            let (Some(dump), Some(expiry)) = (replies.next(), replies.next()) else {
                return Err(CopyError::Unexpected {
                    what: "DUMP",
                    answer: Value::Nil,
                });
            };
            let payload = match dump {
                Value::BulkString(p) => Some(p),
                Value::Nil => None,
                answer => {
                    return Err(CopyError::Unexpected {
                        what: "DUMP",
                        answer,
                    })
                }
            };
            // Gone between the two reads (expired): copied as deleted.
            let expires_at = self.expiry.absolute(&expiry);
            let payload = payload.filter(|_| expires_at.is_some());
            out.push(Dumped {
                key: key.clone(),
                payload,
                expires_at,
            });
        }
        Ok(out)
    }

    /// Hands the record that sets `key` to its dumped state (or deletes it).
    async fn emit_dumped(
        &self,
        db: u32,
        key: Bytes,
        payload: Option<Vec<u8>>,
        expires_at: Option<u64>,
        unacked: &mut Unacked,
    ) -> Result<(), CopyError> {
        let command = match payload {
            Some(payload) => Command::new(vec![
                Bytes::from_static(b"RESTORE"),
                key,
                Bytes::from(expires_at.unwrap_or(0).to_string()),
                Bytes::from(payload),
                Bytes::from_static(b"REPLACE"),
                Bytes::from_static(b"ABSTTL"),
            ]),
            None => {
                SyncCounters::add(&self.counters.keys_deleted, 1);
                Command::new(vec![Bytes::from_static(b"DEL"), key])
            }
        };
        self.emit(db, vec![command], unacked).await?;
        SyncCounters::add(&self.counters.keys_done, 1);
        Ok(())
    }

    /// Rebuilds `key` from typed commands, chunk by chunk, while `_held`.
    async fn rebuild(
        &self,
        conn: &mut MultiplexedConnection,
        db: u32,
        key: Bytes,
        _held: &LockGuard,
        unacked: &mut Unacked,
    ) -> Result<(), CopyError> {
        let mut rebuild = match Rebuild::start(conn, key.clone()).await {
            Ok(rebuild) => rebuild,
            Err(RebuildError::Unsupported { kind, .. }) => {
                // A module's type: only its own DUMP knows it.
                log::warn!(
                    "sync: key {} in db {db} has type {kind}, which typed commands cannot rebuild; copied with RESTORE",
                    key.escape_ascii()
                );
                return self.restore_anyway(conn, db, key, unacked).await;
            }
            Err(e) => return Err(e.into()),
        };
        let mut batches = 0u64;
        // The record wraps a batch in MULTI/EXEC: that too within the chunk.
        let batch_limit = self.chunk_bytes.saturating_sub(RECORD_OVERHEAD) as usize;
        while let Some(batch) = rebuild.next(conn, batch_limit).await? {
            let bytes = batch_bytes(&batch);
            self.room(unacked, bytes, true).await?;
            self.emit(db, batch, unacked).await?;
            batches += 1;
        }
        if rebuild.kind() == "none" {
            SyncCounters::add(&self.counters.keys_deleted, 1);
        } else if batches > 1 || self.method == Method::Restore {
            SyncCounters::add(&self.counters.big_keys, 1);
        }
        SyncCounters::add(&self.counters.keys_done, 1);
        Ok(())
    }

    /// Copies a key typed commands cannot rebuild (its lock held) with
    /// `RESTORE`, whatever its size.
    async fn restore_anyway(
        &self,
        conn: &mut MultiplexedConnection,
        db: u32,
        key: Bytes,
        unacked: &mut Unacked,
    ) -> Result<(), CopyError> {
        for d in self.dump(conn, &[key]).await? {
            self.emit_dumped(db, d.key, d.payload, d.expires_at, unacked)
                .await?;
        }
        Ok(())
    }

    /// Hands `commands` (one key's, in database `db`, whose lock is held)
    /// to the senders as one record, a transaction when there are several,
    /// once there is room for it: so the sync's records are neither dropped
    /// (`on_backlog_full = "drop"`; a client's record that fills the
    /// backlog in between can still make it fail) nor what holds clients'
    /// writes (`block`).
    async fn emit(
        &self,
        db: u32,
        commands: Vec<Command>,
        unacked: &mut Unacked,
    ) -> Result<(), CopyError> {
        let bytes = batch_bytes(&commands);
        self.room(unacked, bytes, true).await?;
        let writes: Vec<Captured> = commands
            .into_iter()
            .map(|c| self.routes.rewritten(c))
            .collect();
        let deliveries = self
            .routes
            .dispatch_sync(&self.senders, db, &writes, now_ms());
        unacked.push(deliveries, bytes);
        SyncCounters::add(&self.counters.records, 1);
        SyncCounters::add(&self.counters.bytes, bytes);
        Ok(())
    }

    /// Waits until `size` more bytes fit: within the sync's own bound of
    /// unacknowledged bytes, and within three quarters of the backlog the
    /// clients' writes share, so that the sync never fills it (it pauses
    /// instead: client writes are not held or dropped for it). While a
    /// key's lock is held (`holding`), the whole wait is bounded by
    /// [`STALL_TIMEOUT`].
    pub async fn room(
        &self,
        unacked: &mut Unacked,
        size: u64,
        holding: bool,
    ) -> Result<(), CopyError> {
        let deadline = tokio::time::Instant::now() + STALL_TIMEOUT;
        let mut paused = false;
        loop {
            unacked.settle()?;
            self.counters
                .inflight_bytes
                .store(unacked.bytes(), std::sync::atomic::Ordering::Relaxed);
            let own = unacked.bytes();
            let backlog = self.senders.backlog();
            let used = backlog.bytes();
            let own_full = own > 0 && own + size > self.inflight_limit;
            let shared_full = used > 0 && used + size > backlog.limit() / 4 * 3;
            if !own_full && !shared_full {
                return Ok(());
            }
            if shared_full && !paused {
                paused = true;
                SyncCounters::add(&self.counters.backlog_pauses, 1);
            }
            let waited = async {
                if own > 0 {
                    unacked.wait_oldest().await
                } else {
                    tokio::time::sleep(BACKLOG_POLL).await;
                    Ok(())
                }
            };
            if holding {
                match tokio::time::timeout_at(deadline, waited).await {
                    Ok(outcome) => outcome?,
                    Err(_) => return Err(CopyError::Stalled(STALL_TIMEOUT)),
                }
            } else {
                waited.await?;
            }
        }
    }
}

/// The bytes a record of `commands` weighs, about.
fn batch_bytes(commands: &[Command]) -> u64 {
    let args: usize = commands
        .iter()
        .flat_map(|c| c.args())
        .map(|a| a.len() + 16)
        .sum();
    args as u64 + RECORD_OVERHEAD
}

//! One sync: the primary's databases walked with `SCAN`, every key copied
//! through the log ([`Copier`]), the position reported as Kafka
//! acknowledges.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::Value;
use remoteback_protocol::record::{now_ms, SyncMark, SyncPhase, KEY_PREFIX};
use remoteback_protocol::{Command, Format};

use super::copier::{Copier, CopyError};
use super::position::SyncPosition;
use super::progress::{SyncCounters, SyncState};
use super::unacked::Unacked;
use super::SyncRequest;
use crate::primary::Primary;

/// Keys asked of `SCAN` at a time.
const SCAN_COUNT: usize = 1000;
/// Keys whose locks are taken and whose `DUMP`s are pipelined together.
const GROUP: usize = 64;
/// Longest a cancelled or failed sync waits for Kafka to acknowledge what
/// it handed over, so that the position it reports is exact.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Empties the backup but for remoteback's own keys (its offsets, in
/// database 0), in one step on the backup: the first record of a sync with
/// `--flush`. A script, so that the replay needs nothing special for it.
const FLUSH_SCRIPT: &str = "\
local kept = {}
for _, k in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do
  kept[#kept + 1] = {k, redis.call('PTTL', k), redis.call('DUMP', k)}
end
redis.call('FLUSHALL')
for _, e in ipairs(kept) do
  redis.call('RESTORE', e[1], math.max(e[2], 0), e[3])
end
return #kept";

/// A running sync's parts.
pub(crate) struct Job {
    pub copier: Copier,
    pub primary: Primary,
    pub request: SyncRequest,
    /// The databases to walk and their sizes, read when the sync started.
    pub dbs: Vec<(u32, u64)>,
}

/// Why the walk stopped before the end.
enum Stop {
    Cancelled,
    Failed(String),
}

impl Job {
    /// Runs the sync to its end and records how it ended.
    pub async fn run(mut self) {
        let counters = self.copier.counters.clone();
        let start = self.request.resume.unwrap_or_default();
        let mut unacked = Unacked::new(start);
        let baseline = (self.copier.senders.lost(), self.copier.senders.uncaptured());
        self.copier.tables.sync.start();
        // A restore can begin at a full sync's start once its end is in
        // the log (record.rs, `rb-sync`).
        let marked = self.request.is_full() && self.copier.routes.format() != Format::Row;
        let id = now_ms();
        if marked {
            self.mark(SyncPhase::Start, id, &mut unacked);
        }
        let walked = match marked {
            // The databases are read again after the mark: one that got
            // its first keys between the first reading and the mark would
            // be walked by no one, and its writes are before the mark.
            true => self.read_databases_again().await,
            false => Ok(()),
        };
        let walked = match walked {
            Ok(()) => self.walk(&mut unacked).await,
            stopped => stopped,
        };
        let unordered = self.copier.tables.sync.stop();
        counters
            .unordered_writes
            .store(unordered.unnamed, Ordering::Relaxed);
        let walked = match walked {
            Ok(()) if unordered.overflowed => Err(Stop::Failed(format!(
                "more than {} keys were written by multi-key writes during the sync, too many to \
                 copy again; run it again when fewer such writes run, or run `remoteback verify --repair`",
                super::MAX_NOTED
            ))),
            walked => walked,
        };
        let (state, error) = match walked {
            Ok(()) => match unacked.drain().await {
                Ok(()) if marked && unordered.unnamed == 0 => {
                    self.mark(SyncPhase::End, id, &mut unacked);
                    if let Err(lost) = unacked.drain().await {
                        log::warn!(
                            "sync: its end mark did not reach Kafka ({}): the copy is complete, \
                             but a restore cannot begin at this sync",
                            CopyError::from(lost)
                        );
                    }
                    (SyncState::Done, None)
                }
                Ok(()) => (SyncState::Done, None),
                Err(lost) => (SyncState::Failed, Some(CopyError::from(lost).to_string())),
            },
            Err(Stop::Cancelled) => {
                let _ = tokio::time::timeout(SETTLE_TIMEOUT, unacked.drain()).await;
                (SyncState::Cancelled, None)
            }
            Err(Stop::Failed(error)) => {
                let _ = tokio::time::timeout(SETTLE_TIMEOUT, unacked.drain()).await;
                (SyncState::Failed, Some(error))
            }
        };
        counters.set_position(unacked.acked());
        counters
            .inflight_bytes
            .store(unacked.bytes(), Ordering::Relaxed);
        let p = counters.progress();
        match state {
            SyncState::Done => {
                if unordered.unnamed > 0 {
                    log::warn!(
                        "sync: {} writes whose keys the proxy cannot name (SWAPDB, MOVE, COPY, \
                         scripts without declared keys) ran during the sync; the keys they \
                         changed may differ on the backup: run `remoteback verify --repair`",
                        unordered.unnamed
                    );
                } else if self.request.is_full() {
                    self.copier.senders.resynced(baseline);
                }
                log::info!(
                    "sync done: {} keys ({} deleted, {} big, {} copied again after multi-key writes) in {:.1} s, {:.0} keys/s, {} records, {} bytes",
                    p.keys_done,
                    p.keys_deleted,
                    p.big_keys,
                    p.keys_recopied,
                    p.elapsed.as_secs_f64(),
                    p.keys_per_second(),
                    p.records,
                    p.bytes
                );
            }
            SyncState::Cancelled => log::info!(
                "sync cancelled after {} keys; resume with --resume {}",
                p.keys_done,
                unacked.acked()
            ),
            _ => log::error!(
                "sync failed after {} keys: {}; resume with --resume {}",
                p.keys_done,
                error.as_deref().unwrap_or("unknown error"),
                unacked.acked()
            ),
        }
        counters.end(state, error);
    }

    async fn walk(&mut self, unacked: &mut Unacked) -> Result<(), Stop> {
        let start = self.request.resume.unwrap_or_default();
        let dbs = std::mem::take(&mut self.dbs);
        log::info!(
            "sync started: {} keys in {} databases{}, method {}, chunks of {} bytes",
            self.copier.counters.keys_total.load(Ordering::Relaxed),
            dbs.len(),
            self.request
                .resume
                .map(|p| format!(", resumed at {p}"))
                .unwrap_or_default(),
            self.request.method.name(),
            self.copier.chunk_bytes
        );
        if self.request.flush {
            self.flush(unacked).await;
        }
        let started = Instant::now();
        let last = dbs.last().map(|(db, _)| *db);
        for (db, _) in dbs {
            let mut conn = super::open(&self.primary, db)
                .await
                .map_err(|e| Stop::Failed(format!("connect to the primary's db {db}: {e}")))?;
            let mut cursor = if db == start.db { start.cursor } else { 0 };
            loop {
                let (next, keys) = scan(&mut conn, cursor, self.request.pattern.as_ref())
                    .await
                    .map_err(|e| Stop::Failed(e.to_string()))?;
                for group in keys.chunks(GROUP) {
                    if self.copier.cancelled.load(Ordering::Relaxed) {
                        return Err(Stop::Cancelled);
                    }
                    self.pace(started).await;
                    self.copier
                        .copy_keys(&mut conn, db, group.to_vec(), unacked)
                        .await
                        .map_err(|e| Stop::Failed(format!("db {db}: {e}")))?;
                    self.copier.counters.set_position(unacked.acked());
                }
                if next == 0 {
                    // The end of the last database is reached once the
                    // second copies are in Kafka too.
                    if Some(db) != last {
                        unacked.reached(SyncPosition::start_of(db + 1));
                    }
                    break;
                }
                unacked.reached(SyncPosition { db, cursor: next });
                cursor = next;
            }
        }
        self.copy_again(unacked).await?;
        if let Some(db) = last {
            unacked.reached(SyncPosition::start_of(db + 1));
        }
        Ok(())
    }

    /// The second copies of the keys multi-key writes named during the walk
    /// (ordering/sync_watch.rs says why), until none is left.
    async fn copy_again(&mut self, unacked: &mut Unacked) -> Result<(), Stop> {
        let watch = &self.copier.tables.sync;
        watch.walked();
        let mut conns: HashMap<u32, MultiplexedConnection> = HashMap::new();
        loop {
            let pending = watch.pending(GROUP);
            if pending.is_empty() {
                return Ok(());
            }
            for (db, key) in pending {
                if self.copier.cancelled.load(Ordering::Relaxed) {
                    return Err(Stop::Cancelled);
                }
                let conn = match conns.entry(db) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        e.insert(super::open(&self.primary, db).await.map_err(|e| {
                            Stop::Failed(format!("connect to the primary's db {db}: {e}"))
                        })?)
                    }
                };
                let held = self.copier.lock(db, key.clone()).await;
                self.copier
                    .copy_one(conn, db, key.clone(), &held, unacked)
                    .await
                    .map_err(|e| Stop::Failed(format!("db {db}: {e}")))?;
                // Under the lock: a write naming the key from now on reads
                // a right copy of it.
                watch.copied(&(db, key));
                drop(held);
                SyncCounters::add(&self.copier.counters.keys_recopied, 1);
            }
        }
    }

    /// Holds the sync to `--keys-per-second`, if set.
    async fn pace(&self, started: Instant) {
        let Some(rate) = self.request.keys_per_second.filter(|r| *r > 0) else {
            return;
        };
        let done = self.copier.counters.keys_done.load(Ordering::Relaxed);
        let due = started + Duration::from_secs_f64(done as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
    }

    /// The databases holding keys now, as the sync started.
    async fn read_databases_again(&mut self) -> Result<(), Stop> {
        let failed = |e: String| Stop::Failed(format!("reading the primary's databases: {e}"));
        let mut conn = super::open(&self.primary, 0)
            .await
            .map_err(|e| failed(e.to_string()))?;
        self.dbs = databases(&mut conn, &self.request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(())
    }

    /// Hands the sync's mark of `phase` to every sender (a barrier: a
    /// record on every partition).
    fn mark(&self, phase: SyncPhase, id: u64, unacked: &mut Unacked) {
        let mark = SyncMark { phase, id };
        let deliveries = self
            .copier
            .routes
            .dispatch_mark(&self.copier.senders, mark, now_ms());
        unacked.push(deliveries, 0);
    }

    /// The first record: empty the backup but for remoteback's own keys,
    /// at one point of the log (no client write runs meanwhile).
    async fn flush(&self, unacked: &mut Unacked) {
        let guard = self.copier.tables.lock_everything(self.copier.holder).await;
        let command = Command::from_parts(["EVAL", FLUSH_SCRIPT, "0", KEY_PREFIX]);
        let write = self.copier.routes.rewritten(command);
        let deliveries =
            self.copier
                .routes
                .dispatch_sync(&self.copier.senders, 0, &[write], now_ms());
        unacked.push(deliveries, FLUSH_SCRIPT.len() as u64);
        drop(guard);
        log::info!("sync: the backup is emptied first (--flush), remoteback's own keys kept");
    }
}

/// The databases that hold keys, with their sizes (`INFO keyspace`), of
/// those `request` asks for.
pub(crate) async fn databases(
    conn: &mut MultiplexedConnection,
    request: &SyncRequest,
) -> Result<Vec<(u32, u64)>, CopyError> {
    let info: Value = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(conn)
        .await
        .map_err(|source| CopyError::Redis {
            what: "INFO keyspace",
            source,
        })?;
    let text = match &info {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::VerbatimString { text, .. } => text.clone(),
        _ => {
            return Err(CopyError::Unexpected {
                what: "INFO keyspace",
                answer: info,
            })
        }
    };
    let start = request.resume.unwrap_or_default();
    Ok(keyspace(&text)
        .into_iter()
        .filter(|(db, _)| request.dbs.as_ref().is_none_or(|d| d.contains(db)))
        .filter(|(db, _)| *db >= start.db)
        .collect())
}

/// `db3:keys=12,expires=0,avg_ttl=0` lines of `INFO keyspace`.
fn keyspace(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter_map(|line| {
            let (db, rest) = line.trim().strip_prefix("db")?.split_once(':')?;
            let keys = rest
                .split(',')
                .find_map(|f| f.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db.parse().ok()?, keys))
        })
        .collect()
}

/// One `SCAN` page: the next cursor and the keys.
async fn scan(
    conn: &mut MultiplexedConnection,
    cursor: u64,
    pattern: Option<&Bytes>,
) -> Result<(u64, Vec<Bytes>), CopyError> {
    let mut command = redis::cmd("SCAN");
    command.arg(cursor);
    if let Some(pattern) = pattern {
        command.arg("MATCH").arg(&pattern[..]);
    }
    command.arg("COUNT").arg(SCAN_COUNT);
    let reply: Value = command
        .query_async(conn)
        .await
        .map_err(|source| CopyError::Redis {
            what: "SCAN",
            source,
        })?;
    let unexpected = |answer: Value| CopyError::Unexpected {
        what: "SCAN",
        answer,
    };
    let Value::Array(parts) = reply else {
        return Err(unexpected(reply));
    };
    let [Value::BulkString(next), Value::Array(keys)] = &parts[..] else {
        return Err(unexpected(Value::Array(parts)));
    };
    let next = std::str::from_utf8(next)
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| unexpected(Value::Array(parts.clone())))?;
    let keys = keys
        .iter()
        .filter_map(|k| match k {
            Value::BulkString(k) => Some(Bytes::copy_from_slice(k)),
            _ => None,
        })
        .collect();
    Ok((next, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_keyspace() {
        let info = "# Keyspace\r\ndb0:keys=12,expires=1,avg_ttl=5\r\ndb3:keys=200000,expires=0,avg_ttl=0\r\n";
        assert_eq!(keyspace(info), [(0, 12), (3, 200_000)]);
        assert!(keyspace("# Keyspace\r\n").is_empty());
    }
}

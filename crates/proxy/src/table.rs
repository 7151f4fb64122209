//! The command table the proxy classifies with: the primary's own.
//!
//! Whether a command is a write and which arguments are its keys is the
//! primary's to say: a newer Redis, Valkey or a module has commands the
//! built-in table (redis-server 7.0.15) lacks, and a write nobody
//! recognises never reaches the backup. So the proxy reads the primary's
//! `COMMAND` over a connection of its own (`connusername`/`connpassword`)
//! and classifies with that; the built-in table fills in where the primary
//! cannot answer (unreachable at start, `COMMAND` refused by its ACL) and
//! for what its reply leaves out.
//!
//! When the table is read again: at start, then whenever the watch
//! ([`watch`], every [`POLL`]) notices that the primary may have another
//! one: its connection had to be opened again (the primary was unreachable
//! or restarted), its `run_id` (`INFO server`) changed (a restart, a
//! failover behind the same address), or `COMMAND COUNT` changed (`MODULE
//! LOAD`/`UNLOAD`). A table equal to the current one is not swapped in.
//!
//! A command in neither table is counted
//! ([`unclassified`](CommandTable::unclassified), the metric
//! `remoteback_proxy_unclassified_commands_total`), logged once per name,
//! and captured like a write whose keys are unknown: under the ordering
//! barrier, in a keyless record. If the primary refuses it, nothing is
//! captured; if it took effect, the backup gets it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::Value;
use remoteback_protocol::commands::{CommandSpec, Table};
use remoteback_protocol::frame::Frame;
use remoteback_protocol::server_table::ServerTable;
use remoteback_protocol::table::REDIS_VERSION;

use crate::primary::Primary;

/// How often the watch asks the primary whether its table may have changed.
pub(crate) const POLL: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct unclassified names logged; more are counted only.
const MAX_LOGGED_NAMES: usize = 1000;

/// The table sessions look commands up in, shared by all of them.
///
/// The hot path (every command a client sends) is [`lookup`]: one
/// `ArcSwap::load`, which takes no lock and, in the common case, touches no
/// reference count, then the same binary search as the built-in table, over
/// `'static` rows (see `ServerTable::leak`), so the spec found outlives the
/// guard and no allocation happens. A swap (rare: a new table from the
/// primary) never blocks a lookup; a session mid-lookup finishes on the
/// table it loaded. A lock would make every command of every session meet
/// on one cache line; an `Arc` cloned per session at connect would leave
/// long-lived sessions on the old table.
///
/// [`lookup`]: CommandTable::lookup
pub(crate) struct CommandTable {
    /// The primary's table, or the built-in one until the primary answered.
    current: ArcSwap<Table>,
    unclassified: AtomicU64,
    /// Unclassified names already logged.
    logged: Mutex<HashSet<Vec<u8>>>,
}

impl CommandTable {
    /// The built-in table only, until [`set`](CommandTable::set).
    pub fn builtin() -> CommandTable {
        CommandTable {
            current: ArcSwap::from_pointee(Table::BUILTIN),
            unclassified: AtomicU64::new(0),
            logged: Mutex::new(HashSet::new()),
        }
    }

    /// The entry of the command `args` (name first): the primary's, else
    /// the built-in table's. No allocation, no lock.
    pub fn lookup(&self, args: &[Bytes]) -> Option<&'static CommandSpec> {
        let table: Table = **self.current.load();
        table.lookup(args).or_else(|| Table::BUILTIN.lookup(args))
    }

    /// Swaps in a table read from the primary.
    pub fn set(&self, table: Table) {
        self.current.store(Arc::new(table));
    }

    /// Notes a client command that neither table knows (`name` as sent):
    /// counted, and logged at warn level the first time its name is seen.
    pub fn note_unclassified(&self, name: &[u8]) {
        self.unclassified.fetch_add(1, Ordering::Relaxed);
        let lower = name.to_ascii_lowercase();
        let first = {
            let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
            logged.len() < MAX_LOGGED_NAMES && logged.insert(lower)
        };
        if first {
            log::warn!(
                "command {:?} is in neither the primary's command table nor the built-in one: \
                 captured as a write with unknown keys (ordering barrier, keyless record)",
                String::from_utf8_lossy(name)
            );
        }
    }

    /// Client commands neither table knew, since start.
    pub fn unclassified(&self) -> u64 {
        self.unclassified.load(Ordering::Relaxed)
    }
}

/// What the watch knows about the primary between two polls.
#[derive(Default)]
pub(crate) struct Watch {
    connection: Option<MultiplexedConnection>,
    run_id: Option<String>,
    /// `COMMAND COUNT` when the table was last read.
    count: Option<usize>,
    /// Every distinct table read from the primary, with its leaked rows:
    /// a primary that goes back to a table it had before (a failover back
    /// and forth between two versions) gets the same rows again, so the
    /// memory leaked is bounded by the distinct tables ever seen.
    generations: Vec<(ServerTable, Table)>,
    /// The generation in use.
    read: Option<usize>,
    /// Warned that the primary cannot be asked (so each outage or refusal
    /// is logged once, not every poll).
    warned: bool,
}

impl Watch {
    /// Asks the primary once: connects if need be, and reads its table when
    /// it may have changed. Returns whether the table came from the
    /// primary.
    pub async fn poll(&mut self, primary: &Primary, table: &CommandTable) -> bool {
        match self.try_poll(primary, table).await {
            Ok(()) => {
                self.warned = false;
                true
            }
            Err(e) => {
                if !self.warned {
                    log::warn!(
                        "cannot read the command table of primary {}: {e}; classifying with {} \
                         and asking again every {}s",
                        primary.addr(),
                        if self.read.is_some() {
                            "the table it last gave".to_string()
                        } else {
                            format!("the built-in table (redis-server {REDIS_VERSION})")
                        },
                        POLL.as_secs()
                    );
                    self.warned = true;
                } else {
                    log::debug!("command table of primary {}: {e}", primary.addr());
                }
                false
            }
        }
    }

    async fn try_poll(&mut self, primary: &Primary, table: &CommandTable) -> Result<(), String> {
        let reconnected = self.connection.is_none();
        if reconnected {
            let connection = primary
                .connect(0, CONNECT_TIMEOUT, REPLY_TIMEOUT)
                .await
                .map_err(|e| format!("connecting: {e}"))?;
            self.connection = Some(connection);
        }
        let result = self.read_if_changed(reconnected, table).await;
        if let Err(Failure::Connection(_)) = &result {
            self.connection = None;
        }
        result.map_err(|f| match f {
            Failure::Connection(e) | Failure::Refused(e) => e,
        })
    }

    async fn read_if_changed(
        &mut self,
        reconnected: bool,
        table: &CommandTable,
    ) -> Result<(), Failure> {
        let Some(con) = self.connection.as_mut() else {
            return Ok(());
        };
        // INFO and COMMAND COUNT only say whether to read COMMAND again; a
        // user allowed COMMAND but not these still gets its table (read
        // again only after a reconnect).
        let info: String =
            optional(redis::cmd("INFO").arg("server").query_async(con).await)?.unwrap_or_default();
        let run_id = info_field(&info, "run_id").map(str::to_string);
        let version = info_field(&info, "valkey_version")
            .map(|v| format!("valkey {v}"))
            .or_else(|| info_field(&info, "redis_version").map(|v| format!("redis {v}")))
            .unwrap_or_else(|| "unknown version".to_string());
        let count: Option<usize> =
            optional(redis::cmd("COMMAND").arg("COUNT").query_async(con).await)?;
        let changed =
            reconnected || run_id != self.run_id || self.read.is_none() || count != self.count;
        if !changed {
            return Ok(());
        }
        let reply: Value = redis::cmd("COMMAND")
            .query_async(con)
            .await
            .map_err(Failure::of)?;
        let parsed =
            ServerTable::parse(&frame(reply)).map_err(|e| Failure::Refused(e.to_string()))?;
        self.run_id = run_id;
        self.count = count;
        let known = self.generations.iter().position(|(t, _)| *t == parsed);
        if known.is_some() && known == self.read {
            return Ok(());
        }
        if !parsed.skipped().is_empty() {
            log::warn!(
                "primary's COMMAND: entries not understood, classified with the built-in table: {}",
                parsed.skipped().join(", ")
            );
        }
        let new: Vec<String> = parsed
            .names_missing_from(Table::BUILTIN)
            .into_iter()
            .filter(|n| !n.contains('|'))
            .map(str::to_string)
            .collect();
        log::info!(
            "command table from primary ({version}): {} commands, {} of them not in the built-in \
             table{}{}",
            parsed.commands(),
            new.len(),
            if new.is_empty() { "" } else { ": " },
            shorten(&new)
        );
        let index = known.unwrap_or_else(|| {
            self.generations.push((parsed.clone(), parsed.leak()));
            self.generations.len() - 1
        });
        self.read = Some(index);
        table.set(self.generations[index].1);
        Ok(())
    }
}

/// Asks the primary every [`POLL`] (see the module docs); runs until
/// dropped.
pub(crate) async fn watch(mut state: Watch, primary: Primary, table: Arc<CommandTable>) {
    loop {
        tokio::time::sleep(POLL).await;
        state.poll(&primary, &table).await;
    }
}

enum Failure {
    /// The connection is unusable: open a new one next time.
    Connection(String),
    /// The primary answered with an error (`NOPERM`) or something that is
    /// not a table.
    Refused(String),
}

impl Failure {
    fn of(e: redis::RedisError) -> Failure {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
        {
            Failure::Connection(e.to_string())
        } else {
            Failure::Refused(e.to_string())
        }
    }
}

/// A reply that may be refused: `None` then, unless the connection failed.
fn optional<T>(result: redis::RedisResult<T>) -> Result<Option<T>, Failure> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) => match Failure::of(e) {
            Failure::Refused(_) => Ok(None),
            connection => Err(connection),
        },
    }
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// At most 20 names, for a log line.
fn shorten(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 20 {
        s.push_str(&format!(" and {} more", names.len() - 20));
    }
    s
}

/// A `redis` crate value as the protocol crate's frame.
fn frame(v: Value) -> Frame {
    match v {
        Value::Nil => Frame::Null,
        Value::Int(n) => Frame::Integer(n),
        Value::BulkString(b) => Frame::Bulk(Bytes::from(b)),
        Value::SimpleString(s) => Frame::Simple(Bytes::from(s)),
        Value::Okay => Frame::Simple(Bytes::from_static(b"OK")),
        Value::Array(items) | Value::Set(items) => {
            Frame::Array(items.into_iter().map(frame).collect())
        }
        Value::Map(pairs) => Frame::Map(
            pairs
                .into_iter()
                .flat_map(|(k, v)| [frame(k), frame(v)])
                .collect(),
        ),
        Value::Attribute { data, .. } => frame(*data),
        Value::Boolean(b) => Frame::Boolean(b),
        Value::VerbatimString { text, .. } => Frame::Bulk(Bytes::from(text)),
        Value::Double(d) => Frame::Number(Bytes::from(d.to_string())),
        Value::ServerError(e) => Frame::Error(Bytes::from(e.to_string())),
        _ => Frame::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(parts: &[&str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    fn module_table() -> Table {
        let entry = |name: &str| {
            Value::Array(vec![
                Value::BulkString(name.as_bytes().to_vec()),
                Value::Int(4),
                Value::Array(vec![
                    Value::SimpleString("write".into()),
                    Value::SimpleString("module".into()),
                ]),
                Value::Int(1),
                Value::Int(2),
                Value::Int(1),
                Value::Array(vec![]),
                Value::Array(vec![]),
                Value::Array(vec![]),
                Value::Array(vec![]),
            ])
        };
        ServerTable::parse(&frame(Value::Array(vec![
            entry("rbtest.setpair"),
            entry("set"),
        ])))
        .unwrap()
        .leak()
    }

    #[test]
    fn the_primary_s_table_first_the_built_in_one_for_the_rest() {
        let t = CommandTable::builtin();
        assert!(t
            .lookup(&args(&["RBTEST.SETPAIR", "a", "b", "v"]))
            .is_none());
        assert_eq!(
            t.lookup(&args(&["GET", "k"])).map(|s| s.name()),
            Some("get")
        );
        t.set(module_table());
        let s = t.lookup(&args(&["RBTEST.SETPAIR", "a", "b", "v"])).unwrap();
        let a = args(&["rbtest.setpair", "a", "b", "v"]);
        assert!(s.is_write());
        assert_eq!(s.keys(&a), [&a[1], &a[2]]);
        // The primary's entry wins (here a made-up SET with two keys)...
        assert_eq!(t.lookup(&args(&["SET", "k", "v"])).unwrap().arity(), 4);
        // ... and what it lacks comes from the built-in table.
        assert_eq!(
            t.lookup(&args(&["GET", "k"])).map(|s| s.name()),
            Some("get")
        );
    }

    #[test]
    fn unclassified_commands_are_counted_and_logged_once_per_name() {
        let t = CommandTable::builtin();
        t.note_unclassified(b"JSON.SET");
        t.note_unclassified(b"json.set");
        t.note_unclassified(b"BF.ADD");
        assert_eq!(t.unclassified(), 3);
        assert_eq!(t.logged.lock().unwrap().len(), 2);
    }

    #[test]
    fn info_fields() {
        let info = "# Server\r\nredis_version:7.4.1\r\nrun_id:abc\r\nrun_id_x:no\r\n";
        assert_eq!(info_field(info, "run_id"), Some("abc"));
        assert_eq!(info_field(info, "redis_version"), Some("7.4.1"));
        assert_eq!(info_field(info, "valkey_version"), None);
    }
}

//! Rebuilding one key on the backup from typed commands, read from the
//! primary a chunk at a time.
//!
//! This is the sync's way for keys too big for one record as a `RESTORE`,
//! and for every key when the backup cannot restore the primary's `DUMP`
//! payloads (an older Redis, or Valkey). The key is read in slices
//! (`GETRANGE`, `LRANGE`, the `SCAN` family, `XRANGE`, `XPENDING`), so a
//! key of any size is never held whole, and turned into batches of commands
//! of about `chunk_bytes` of arguments each; each batch goes to the log as
//! one record, and the replay applies a record as one transaction.
//!
//! The first batch begins with `DEL key`, so whatever the backup held
//! before is replaced, and the last ends with `PEXPIREAT key ms` when the
//! key has an expiry. Applied in order, the batches leave the backup's key
//! equal to the primary's at the time it was read.
//!
//! The caller holds the key's lock for the whole rebuild, so no write
//! through the proxy changes the key between two reads. The key can still
//! expire on the primary mid-way: the reads after that come back empty (a
//! missing key reads as an empty one), the batches so far describe a
//! prefix of the key, and the last one still ends with the `PEXPIREAT` read
//! at the start, now in the past, with which the backup deletes the key as
//! well. Both sides end without the key. A key without an expiry that
//! disappears mid-way (evicted under `maxmemory`, or written around the
//! proxy) is not noticed; such deletions never reach the backup anyway.
//!
//! What no command here gives back: the expiries of single hash fields
//! (`HEXPIRE`, Redis 7.4+), so such fields are persistent on the backup;
//! a key's access time and frequency (`OBJECT IDLETIME`/`FREQ`) and its
//! encoding, which are the backup's own; and the parts of a stream listed
//! in [`super::stream`].
//!
//! After an error the rebuild is to be dropped: the batches already emitted
//! leave part of the key on the backup, and the key must be rebuilt again
//! from its first batch (whose `DEL` clears the part).

// used by the sync job (next commit)

use std::collections::VecDeque;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use remoteback_protocol::Command;

use super::stream::StreamReader;

/// Elements at most merged into one `RPUSH`/`HSET`/`SADD`/`ZADD`; a batch
/// of many small elements becomes several commands, so no single command
/// occupies the backup for long.
pub(crate) const PER_COMMAND: usize = 1024;

/// The most elements asked for in one read (`COUNT`), whatever the chunk.
pub(crate) const MAX_COUNT: usize = 10_000;

/// The size an element is taken to have before any was read: small, so the
/// first read of a key of big elements does not ask for too many.
const FIRST_GUESS: usize = 64;

/// A key being read for its rebuild, in the connection's selected database.
pub(crate) struct Rebuild {
    key: Bytes,
    kind: String,
    /// When the key expires, in Unix milliseconds.
    expire_at: Option<i64>,
    reader: Reader,
    /// Elements read but not yet in a batch: a read may return more than
    /// the batch in hand has room for.
    queue: VecDeque<Element>,
    /// Whether the first batch (with `DEL`) was handed out.
    started: bool,
    /// Whether the last batch was handed out.
    finished: bool,
}

impl Rebuild {
    /// Starts reading `key`: its type and its expiry.
    ///
    /// A key of a type no commands can rebuild (a module's type) is
    /// [`RebuildError::Unsupported`]. A key that is gone gives one batch,
    /// `[DEL key]`: it is gone on the backup too.
    pub async fn start(
        conn: &mut MultiplexedConnection,
        key: Bytes,
    ) -> Result<Rebuild, RebuildError> {
        let (kind, expiry) = type_and_expiry(conn, &key).await?;
        let (kind, expire_at) = match expiry {
            // Expired between TYPE and the expiry's read.
            Expiry::Gone => ("none".to_string(), None),
            Expiry::Never => (kind, None),
            Expiry::At(ms) => (kind, Some(ms)),
        };
        let reader = match kind.as_str() {
            "none" => Reader::Done,
            "string" => Reader::String {
                offset: 0,
                done: false,
            },
            "list" => Reader::List {
                index: 0,
                done: false,
                sizes: Sizes::default(),
            },
            "hash" => Reader::Scan(Scan::new(ScanKind::Hash)),
            "set" => Reader::Scan(Scan::new(ScanKind::Set)),
            "zset" => Reader::Scan(Scan::new(ScanKind::Zset)),
            "stream" => Reader::Stream(Box::default()),
            _ => {
                return Err(RebuildError::Unsupported {
                    key: shown(&key),
                    kind,
                })
            }
        };
        Ok(Rebuild {
            key,
            kind,
            expire_at,
            reader,
            queue: VecDeque::new(),
            started: false,
            finished: false,
        })
    }

    /// The next batch of commands that rebuild the key, at most about
    /// `chunk_bytes` of arguments (a single element larger than that is a
    /// batch of its own); `None` once done. The first batch begins with
    /// `DEL key`; the last one ends with `PEXPIREAT key ms` if the key has an
    /// expiry. A key that does not exist gives one batch: `[DEL key]`.
    ///
    /// Arguments count with their command names and keys; the `PEXPIREAT`
    /// at the end may go a few bytes over.
    pub async fn next(
        &mut self,
        conn: &mut MultiplexedConnection,
        chunk_bytes: usize,
    ) -> Result<Option<Vec<Command>>, RebuildError> {
        if self.finished {
            return Ok(None);
        }
        let limit = chunk_bytes.max(1);
        let mut batch = Chunk::new(self.key.clone(), limit);
        if !self.started {
            batch.command(vec![Bytes::from_static(b"DEL"), self.key.clone()]);
            self.started = true;
        }
        loop {
            while let Some(element) = self.queue.front() {
                if !batch.fits(element) {
                    return Ok(Some(batch.finish()));
                }
                let element = self.queue.pop_front().expect("a front element");
                batch.push(element);
            }
            let room = batch.room();
            match self.reader.read(conn, &self.key, room, limit).await? {
                Some(elements) => self.queue.extend(elements),
                None => break,
            }
        }
        self.finished = true;
        if let Some(at) = self.expire_at {
            batch.command(vec![
                Bytes::from_static(b"PEXPIREAT"),
                self.key.clone(),
                Bytes::from(at.to_string()),
            ]);
        }
        Ok((!batch.is_empty()).then(|| batch.finish()))
    }

    /// The key's type as TYPE named it ("string", "hash", ...; "none" when
    /// gone).
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

/// Why a key could not be read for its rebuild.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RebuildError {
    #[error("{command} {key}: {source}")]
    Redis {
        command: &'static str,
        key: String,
        source: RedisError,
    },
    #[error("{command} {key} answered {answer}")]
    Unexpected {
        command: &'static str,
        key: String,
        answer: String,
    },
    #[error(
        "{key} is of type {kind}, which no commands rebuild (a module's type): \
         it can only be copied with DUMP and RESTORE"
    )]
    Unsupported { key: String, kind: String },
}

impl RebuildError {
    pub(crate) fn redis(command: &'static str, key: &[u8], source: RedisError) -> Self {
        RebuildError::Redis {
            command,
            key: shown(key),
            source,
        }
    }

    pub(crate) fn unexpected(command: &'static str, key: &[u8], answer: &Value) -> Self {
        let mut answer = format!("{answer:?}");
        if answer.len() > 200 {
            let mut end = 200;
            while !answer.is_char_boundary(end) {
                end -= 1;
            }
            answer.truncate(end);
            answer.push_str("...");
        }
        RebuildError::Unexpected {
            command,
            key: shown(key),
            answer,
        }
    }
}

/// A key for messages: escaped, and cut when long.
fn shown(key: &[u8]) -> String {
    const MAX: usize = 120;
    let cut = &key[..key.len().min(MAX)];
    let more = if key.len() > MAX { "..." } else { "" };
    format!("\"{}\"{more}", cut.escape_ascii())
}

/// A key's expiry as read at its start.
enum Expiry {
    Never,
    At(i64),
    Gone,
}

/// TYPE and the expiry, in one round trip: `PEXPIRETIME` (Redis 7.0+), or,
/// when the primary does not know it, `PTTL` added to the primary's own
/// clock (`TIME`), which is exact to the millisecond.
///
/// The two are read one after the other: the key may expire between them,
/// and then it is gone for the rest of the rebuild (nothing can write it
/// while the caller holds its lock).
async fn type_and_expiry(
    conn: &mut MultiplexedConnection,
    key: &Bytes,
) -> Result<(String, Expiry), RebuildError> {
    let mut pipe = redis::pipe();
    pipe.cmd("TYPE").arg(&key[..]);
    pipe.cmd("PEXPIRETIME").arg(&key[..]);
    let replies: Vec<redis::RedisResult<Value>> = pipe
        .ignore_errors()
        .query_async(conn)
        .await
        .map_err(|e| RebuildError::redis("TYPE", key, e))?;
    let mut replies = replies.into_iter();
    let kind = match replies.next() {
        Some(Ok(v)) => match text(&v) {
            Some(kind) => kind,
            None => return Err(RebuildError::unexpected("TYPE", key, &v)),
        },
        Some(Err(e)) => return Err(RebuildError::redis("TYPE", key, e)),
        None => return Err(RebuildError::unexpected("TYPE", key, &Value::Nil)),
    };
    let expiry = match replies.next() {
        Some(Ok(v)) => match v {
            Value::Int(-1) => Expiry::Never,
            Value::Int(-2) => Expiry::Gone,
            Value::Int(ms) if ms >= 0 => Expiry::At(ms),
            other => return Err(RebuildError::unexpected("PEXPIRETIME", key, &other)),
        },
        Some(Err(e)) if is_unknown_command(&e) => ttl_and_time(conn, key).await?,
        Some(Err(e)) => return Err(RebuildError::redis("PEXPIRETIME", key, e)),
        None => return Err(RebuildError::unexpected("PEXPIRETIME", key, &Value::Nil)),
    };
    Ok((kind, expiry))
}

/// The expiry before Redis 7.0: `PTTL` and `TIME` in one transaction, so
/// both are read at the same instant of the primary's clock.
async fn ttl_and_time(
    conn: &mut MultiplexedConnection,
    key: &Bytes,
) -> Result<Expiry, RebuildError> {
    let (ttl, time): (Value, Value) = redis::pipe()
        .atomic()
        .cmd("PTTL")
        .arg(&key[..])
        .cmd("TIME")
        .query_async(conn)
        .await
        .map_err(|e| RebuildError::redis("PTTL", key, e))?;
    match ttl {
        Value::Int(-1) => Ok(Expiry::Never),
        Value::Int(-2) => Ok(Expiry::Gone),
        Value::Int(ms) if ms >= 0 => {
            let now = unix_ms(&time).ok_or_else(|| RebuildError::unexpected("TIME", key, &time))?;
            Ok(Expiry::At(now + ms))
        }
        other => Err(RebuildError::unexpected("PTTL", key, &other)),
    }
}

/// Whether Redis refused a command it does not know (`ERR unknown
/// command ...`).
pub(crate) fn is_unknown_command(e: &RedisError) -> bool {
    e.code() == Some("ERR") && e.detail().is_some_and(|d| d.starts_with("unknown command"))
}

/// The reply of `TIME` in Unix milliseconds.
pub(crate) fn unix_ms(time: &Value) -> Option<i64> {
    let parts = match time {
        Value::Array(parts) => parts,
        _ => return None,
    };
    let [secs, micros] = parts.as_slice() else {
        return None;
    };
    Some(int(secs)? * 1000 + int(micros)? / 1000)
}

/// One piece of the key: a whole command, or arguments of a command that
/// takes many (`HSET key f v f v ...`), merged with their neighbours.
pub(crate) enum Element {
    /// A command of its own, e.g. `XADD key id f v` or `APPEND key slice`.
    Whole(Vec<Bytes>),
    /// Arguments following `head key`.
    Part {
        head: &'static str,
        args: Vec<Bytes>,
    },
}

impl Element {
    fn args_len(&self) -> usize {
        match self {
            Element::Whole(args) | Element::Part { args, .. } => bytes_len(args),
        }
    }
}

/// What `args` take in a `PROTOCOL` record: each is a RESP bulk string,
/// `$<len>\r\n<bytes>\r\n`. Batches are measured so, because the record,
/// not the arguments, must fit the broker's limit (with 100-byte values
/// the framing is a tenth more; `STRING` records escape binary bytes and
/// can grow up to four times).
pub(crate) fn bytes_len(args: &[Bytes]) -> usize {
    args.iter().map(|a| encoded_len(a.len())).sum()
}

/// A bulk string of `len` bytes, framed.
fn encoded_len(len: usize) -> usize {
    let digits = len.checked_ilog10().unwrap_or(0) as usize + 1;
    len + digits + 5
}

/// A command's array header, `*<n>\r\n`, at most.
const COMMAND_HEADER: usize = 16;

/// The batch being filled.
struct Chunk {
    key: Bytes,
    limit: usize,
    commands: Vec<Vec<Bytes>>,
    bytes: usize,
    /// Elements in the batch (`DEL` is none).
    elements: usize,
    /// The head of the last command and how many elements it holds, when
    /// it is one that further `Part`s can join.
    open: Option<(&'static str, usize)>,
}

impl Chunk {
    fn new(key: Bytes, limit: usize) -> Self {
        Chunk {
            key,
            limit,
            commands: Vec::new(),
            bytes: 0,
            elements: 0,
            open: None,
        }
    }

    /// What adding `element` costs: its arguments, and a command name and
    /// key when it starts a command.
    fn cost(&self, element: &Element) -> usize {
        match element {
            Element::Part { head, .. } if !self.joins(head) => {
                COMMAND_HEADER
                    + encoded_len(head.len())
                    + encoded_len(self.key.len())
                    + element.args_len()
            }
            Element::Whole(_) => COMMAND_HEADER + element.args_len(),
            Element::Part { .. } => element.args_len(),
        }
    }

    fn joins(&self, head: &str) -> bool {
        matches!(self.open, Some((h, n)) if h == head && n < PER_COMMAND)
    }

    /// Whether `element` goes in this batch: always when the batch has no
    /// element yet (one larger than the chunk is a batch of its own).
    fn fits(&self, element: &Element) -> bool {
        self.elements == 0 || self.bytes + self.cost(element) <= self.limit
    }

    /// The bytes still free in the batch.
    fn room(&self) -> usize {
        self.limit.saturating_sub(self.bytes)
    }

    fn push(&mut self, element: Element) {
        self.bytes += self.cost(&element);
        self.elements += 1;
        match element {
            Element::Whole(args) => {
                self.commands.push(args);
                self.open = None;
            }
            Element::Part { head, args } => {
                if self.joins(head) {
                    let last = self.commands.last_mut().expect("an open command");
                    last.extend(args);
                    if let Some((_, n)) = &mut self.open {
                        *n += 1;
                    }
                } else {
                    let mut command = Vec::with_capacity(2 + args.len() * PER_COMMAND.min(64));
                    command.push(Bytes::from_static(head.as_bytes()));
                    command.push(self.key.clone());
                    command.extend(args);
                    self.commands.push(command);
                    self.open = Some((head, 1));
                }
            }
        }
    }

    /// Adds a command outside the elements (`DEL`, `PEXPIREAT`).
    fn command(&mut self, args: Vec<Bytes>) {
        self.bytes += COMMAND_HEADER + bytes_len(&args);
        self.commands.push(args);
        self.open = None;
    }

    fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    fn finish(self) -> Vec<Command> {
        self.commands.into_iter().map(Command::new).collect()
    }
}

/// The running average size of the elements read, to size the next read
/// to about one chunk.
#[derive(Default)]
pub(crate) struct Sizes {
    bytes: usize,
    count: usize,
}

impl Sizes {
    pub(crate) fn add(&mut self, bytes: usize, count: usize) {
        self.bytes += bytes;
        self.count += count;
    }

    /// How many elements make about `limit` bytes (at least 1).
    pub(crate) fn count_for(&self, limit: usize) -> usize {
        let average = self
            .bytes
            .checked_div(self.count)
            .map_or(FIRST_GUESS, |a| a.max(1));
        (limit / average).clamp(1, MAX_COUNT)
    }
}

/// Where the reading of the key stands, per type.
enum Reader {
    Done,
    String {
        offset: usize,
        done: bool,
    },
    List {
        index: usize,
        done: bool,
        sizes: Sizes,
    },
    Scan(Scan),
    Stream(Box<StreamReader>),
}

impl Reader {
    /// The next elements of the key, about one chunk of them; `None` once
    /// the key is read to its end. `room` is what the batch in hand still
    /// takes, `limit` what a whole batch takes.
    async fn read(
        &mut self,
        conn: &mut MultiplexedConnection,
        key: &Bytes,
        room: usize,
        limit: usize,
    ) -> Result<Option<Vec<Element>>, RebuildError> {
        match self {
            Reader::Done => Ok(None),
            Reader::String { offset, done } => {
                if *done {
                    return Ok(None);
                }
                read_string(conn, key, offset, done, room, limit).await
            }
            Reader::List { index, done, sizes } => {
                if *done {
                    return Ok(None);
                }
                let count = sizes.count_for(limit);
                let reply = query(
                    conn,
                    "LRANGE",
                    key,
                    redis::cmd("LRANGE")
                        .arg(&key[..])
                        .arg(*index)
                        .arg(*index + count - 1),
                )
                .await?;
                let items =
                    bulk_items(reply).map_err(|v| RebuildError::unexpected("LRANGE", key, &v))?;
                *index += items.len();
                // Fewer than asked for: the list's end (or the list expired).
                *done = items.len() < count;
                if items.is_empty() {
                    return Ok(None);
                }
                sizes.add(bytes_len(&items), items.len());
                Ok(Some(
                    items
                        .into_iter()
                        .map(|item| Element::Part {
                            head: "RPUSH",
                            args: vec![item],
                        })
                        .collect(),
                ))
            }
            Reader::Scan(scan) => scan.read(conn, key, limit).await,
            Reader::Stream(stream) => stream.read(conn, key, limit).await,
        }
    }
}

/// The next slice of a string: `SET key slice` first, then `APPEND key
/// slice`, each sized to fill a batch: the first what `DEL` leaves of it,
/// the others a whole one (but not below half a chunk, so a long key does
/// not make slices tiny).
async fn read_string(
    conn: &mut MultiplexedConnection,
    key: &Bytes,
    offset: &mut usize,
    done: &mut bool,
    room: usize,
    limit: usize,
) -> Result<Option<Vec<Element>>, RebuildError> {
    let head: &'static [u8] = if *offset == 0 { b"SET" } else { b"APPEND" };
    let room = if *offset == 0 { room } else { limit };
    // The slice's framing and the command around it fit in the room too.
    let framing = COMMAND_HEADER + encoded_len(head.len()) + encoded_len(key.len()) + 16;
    let want = room.saturating_sub(framing).max(limit / 2).max(1);
    let reply = query(
        conn,
        "GETRANGE",
        key,
        redis::cmd("GETRANGE")
            .arg(&key[..])
            .arg(*offset)
            .arg(*offset + want - 1),
    )
    .await?;
    let slice = match into_bytes(reply) {
        Some(slice) => slice,
        None => return Err(RebuildError::unexpected("GETRANGE", key, &Value::Nil)),
    };
    // Shorter than asked for: the string's end (or it expired).
    *done = slice.len() < want;
    if slice.is_empty() && *offset > 0 {
        return Ok(None);
    }
    *offset += slice.len();
    Ok(Some(vec![Element::Whole(vec![
        Bytes::from_static(head),
        key.clone(),
        slice,
    ])]))
}

#[derive(Clone, Copy)]
enum ScanKind {
    Hash,
    Set,
    Zset,
}

/// A hash, set or sorted set read with `HSCAN`/`SSCAN`/`ZSCAN`.
///
/// The SCAN family may return an element twice (when the table is
/// rehashed between two calls); that is harmless here, as `HSET`, `SADD`
/// and `ZADD` of an element already there leave the same content.
struct Scan {
    kind: ScanKind,
    cursor: Bytes,
    done: bool,
    sizes: Sizes,
}

impl Scan {
    fn new(kind: ScanKind) -> Self {
        Scan {
            kind,
            cursor: Bytes::from_static(b"0"),
            done: false,
            sizes: Sizes::default(),
        }
    }

    async fn read(
        &mut self,
        conn: &mut MultiplexedConnection,
        key: &Bytes,
        limit: usize,
    ) -> Result<Option<Vec<Element>>, RebuildError> {
        if self.done {
            return Ok(None);
        }
        let (name, head, width) = match self.kind {
            ScanKind::Hash => ("HSCAN", "HSET", 2),
            ScanKind::Set => ("SSCAN", "SADD", 1),
            ScanKind::Zset => ("ZSCAN", "ZADD", 2),
        };
        let count = self.sizes.count_for(limit);
        let reply = query(
            conn,
            name,
            key,
            redis::cmd(name)
                .arg(&key[..])
                .arg(&self.cursor[..])
                .arg("COUNT")
                .arg(count),
        )
        .await?;
        let bad = |reply: &Value| RebuildError::unexpected(name, key, reply);
        let Value::Array(parts) = reply else {
            return Err(bad(&reply));
        };
        let [cursor, items] = <[Value; 2]>::try_from(parts).map_err(|p| bad(&Value::Array(p)))?;
        let cursor = into_bytes(cursor).ok_or_else(|| bad(&Value::Nil))?;
        let mut items = match items {
            Value::Array(items) => items,
            other => return Err(bad(&other)),
        };
        if items.len() % width != 0 {
            return Err(bad(&Value::Array(items)));
        }
        self.done = &cursor[..] == b"0";
        self.cursor = cursor;
        if matches!(self.kind, ScanKind::Zset) {
            // ZSCAN gives member, score; ZADD takes score, member.
            for pair in items.chunks_mut(2) {
                pair.swap(0, 1);
            }
        }
        let mut elements = Vec::with_capacity(items.len() / width);
        let mut args = Vec::with_capacity(width);
        for item in items {
            let arg = match self.kind {
                ScanKind::Zset if args.is_empty() => score(item),
                _ => into_bytes(item),
            };
            args.push(arg.ok_or_else(|| bad(&Value::Nil))?);
            if args.len() == width {
                self.sizes.add(bytes_len(&args), 1);
                elements.push(Element::Part {
                    head,
                    args: std::mem::replace(&mut args, Vec::with_capacity(width)),
                });
            }
        }
        Ok(Some(elements))
    }
}

/// A sorted set's score as ZADD takes it: the string Redis gave, so no
/// precision is lost (`inf` and `-inf` included); a RESP3 double is written
/// in Rust's shortest form that reads back as the same double.
fn score(v: Value) -> Option<Bytes> {
    match v {
        Value::Double(d) => Some(Bytes::from(d.to_string())),
        other => into_bytes(other),
    }
}

/// Sends `command` (named `name`, about `key`) and returns its reply.
pub(crate) async fn query(
    conn: &mut MultiplexedConnection,
    name: &'static str,
    key: &[u8],
    command: &redis::Cmd,
) -> Result<Value, RebuildError> {
    command
        .query_async(conn)
        .await
        .map_err(|e| RebuildError::redis(name, key, e))
}

/// The bytes of a string reply, without copying.
pub(crate) fn into_bytes(v: Value) -> Option<Bytes> {
    match v {
        Value::BulkString(b) => Some(Bytes::from(b)),
        Value::SimpleString(s) => Some(Bytes::from(s)),
        Value::VerbatimString { text, .. } => Some(Bytes::from(text)),
        Value::Okay => Some(Bytes::from_static(b"OK")),
        Value::Int(n) => Some(Bytes::from(n.to_string())),
        _ => None,
    }
}

/// A text reply (a status or a string).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::SimpleString(s) => Some(s.clone()),
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// An integer reply, or a string holding one.
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// An array of strings; what is not a string when not.
pub(crate) fn bulk_items(v: Value) -> Result<Vec<Bytes>, Value> {
    match v {
        Value::Array(items) | Value::Set(items) => items
            .into_iter()
            .map(|item| match item {
                Value::BulkString(b) => Ok(Bytes::from(b)),
                other => into_bytes(other.clone()).ok_or(other),
            })
            .collect(),
        other => Err(other),
    }
}

/// The fields of a reply that is a map in RESP3 and a flat array of name,
/// value in RESP2 (`XINFO`).
pub(crate) fn fields(v: Value) -> Option<Vec<(Bytes, Value)>> {
    match v {
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Some((into_bytes(k)?, v)))
            .collect(),
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return None;
            }
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                out.push((into_bytes(k)?, v));
            }
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn part(head: &'static str, args: &[&'static str]) -> Element {
        Element::Part {
            head,
            args: args.iter().map(|a| b(a)).collect(),
        }
    }

    #[test]
    fn parts_join_one_command_and_a_big_element_is_a_batch_of_its_own() {
        let mut batch = Chunk::new(b("k"), 12);
        batch.command(vec![b("DEL"), b("k")]);
        let big = part("SADD", &["0123456789abcdef"]);
        assert!(batch.fits(&big), "the first element always goes in");
        batch.push(big);
        assert!(!batch.fits(&part("SADD", &["x"])));
        let commands = batch.finish();
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[1].args().len(), 3);

        let mut batch = Chunk::new(b("k"), usize::MAX);
        batch.push(part("HSET", &["f", "v"]));
        let joining = batch.cost(&part("HSET", &["g", "w"]));
        batch.push(part("HSET", &["g", "w"]));
        batch.push(Element::Whole(vec![b("X"), b("k")]));
        assert!(
            batch.cost(&part("HSET", &["h", "u"])) > joining,
            "a new command costs its head"
        );
        batch.push(part("HSET", &["h", "u"]));
        let commands = batch.finish();
        let shapes: Vec<usize> = commands.iter().map(|c| c.args().len()).collect();
        assert_eq!(shapes, [6, 2, 4]);
    }

    #[test]
    fn a_batch_is_measured_as_the_record_holds_it() {
        let limit = 64 * 1024;
        for (head, value) in [("HSET", 100), ("SADD", 100), ("RPUSH", 7)] {
            let mut batch = Chunk::new(b("big:key"), limit);
            batch.command(vec![b("DEL"), b("big:key")]);
            for i in 0.. {
                let mut args = vec![Bytes::from(vec![b'v'; value])];
                if head == "HSET" {
                    args.insert(0, Bytes::from(format!("f{i}")));
                }
                let element = Element::Part { head, args };
                if !batch.fits(&element) {
                    break;
                }
                batch.push(element);
            }
            let record: usize = batch.finish().iter().map(|c| c.to_resp().len()).sum();
            assert!(record <= limit, "{head}: {record} > {limit}");
            assert!(record > limit * 9 / 10, "{head}: only {record} of {limit}");
        }
    }

    #[test]
    fn a_command_holds_at_most_per_command_elements() {
        let mut batch = Chunk::new(b("k"), usize::MAX);
        for _ in 0..PER_COMMAND + 1 {
            batch.push(part("SADD", &["m"]));
        }
        let commands = batch.finish();
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[0].args().len(), 2 + PER_COMMAND);
        assert_eq!(commands[1].args().len(), 3);
    }

    #[test]
    fn reads_are_sized_by_the_elements_seen() {
        let mut sizes = Sizes::default();
        assert_eq!(sizes.count_for(6400), 100);
        sizes.add(1000, 10);
        assert_eq!(sizes.count_for(6400), 64);
        assert_eq!(sizes.count_for(10), 1);
        assert_eq!(sizes.count_for(usize::MAX), MAX_COUNT);
    }

    #[test]
    fn reads_time_and_fields_in_both_protocols() {
        let time = Value::Array(vec![
            Value::BulkString(b"1700000000".to_vec()),
            Value::BulkString(b"123456".to_vec()),
        ]);
        assert_eq!(unix_ms(&time), Some(1_700_000_000_123));
        let resp2 = Value::Array(vec![Value::BulkString(b"length".to_vec()), Value::Int(3)]);
        let resp3 = Value::Map(vec![(Value::SimpleString("length".into()), Value::Int(3))]);
        for v in [resp2, resp3] {
            let f = fields(v).unwrap();
            assert_eq!(&f[0].0[..], b"length");
            assert_eq!(int(&f[0].1), Some(3));
        }
        assert_eq!(score(Value::Double(f64::INFINITY)).unwrap(), "inf");
        assert_eq!(score(Value::Double(0.1)).unwrap(), "0.1");
    }

    #[test]
    fn keys_in_messages_are_escaped_and_cut() {
        assert_eq!(shown(b"a\0\xff"), "\"a\\x00\\xff\"");
        assert!(shown(&[b'k'; 500]).ends_with("\"..."));
    }
}

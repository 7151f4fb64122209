//! A stream rebuilt by commands: its entries, then what `XADD` alone does
//! not give back — the last generated id and the counters (`XSETID`), the
//! consumer groups, their consumers and their pending entries.
//!
//! In the order the backup applies them:
//!
//! 1. `XADD key <id> field value ...` for every entry, read with `XRANGE`
//!    a page at a time (each page starting after the last id read);
//! 2. for a stream without entries, `XGROUP CREATE key <tmp> 0 MKSTREAM`
//!    and `XGROUP DESTROY key <tmp>`: the only way to make an empty stream
//!    that leaves nothing else behind (an `XADD` and `XDEL` would leave a
//!    max deleted id that `XSETID` cannot set back to 0-0);
//! 3. `XSETID key <last-generated-id> ENTRIESADDED n MAXDELETEDID id`, from
//!    `XINFO STREAM` (the counters only when the primary reports them, so a
//!    primary before Redis 7.0 gives a plain `XSETID` an older backup takes);
//! 4. per group of `XINFO GROUPS`: `XGROUP CREATE key group
//!    <last-delivered-id> [ENTRIESREAD n]` (without `ENTRIESREAD` when the
//!    primary does not know the count either), `XGROUP CREATECONSUMER` for
//!    each consumer of `XINFO CONSUMERS`, and the pending entries list from
//!    `XPENDING` pages as `XCLAIM key group consumer 0 id... TIME ms
//!    RETRYCOUNT n FORCE JUSTID`.
//!
//! `XCLAIM ... TIME` takes the delivery time as an instant, the primary's
//! `TIME` (read with each `XPENDING` page) less the entry's idle time, so a
//! replay that runs late does not make entries look delivered later. One
//! `XCLAIM` sets one time and count, so it takes a run of consecutive
//! entries that share consumer, time and count (those one `XREADGROUP`
//! delivered), one entry otherwise.
//!
//! Not rebuilt exactly, because no command sets them: a pending entry whose
//! message was deleted from the stream (`XCLAIM` does not claim a missing
//! message and drops it from the list instead); consumers' seen and active
//! times (the backup's clock when the commands are applied); a delivery
//! time later than the backup's clock (`XCLAIM` takes the backup's now).

use std::collections::VecDeque;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};

use super::rebuild::{
    bulk_items, bytes_len, fields, int, into_bytes, query, unix_ms, Element, RebuildError, Sizes,
    MAX_COUNT, PER_COMMAND,
};

/// The group that makes an empty stream, destroyed right after.
const MAKER_GROUP: &[u8] = b"remoteback-rebuild";

/// Bytes one pending entry is taken to cost in an `XCLAIM`, to size the
/// `XPENDING` pages: its id, and a share of the command around it.
const PENDING_COST: usize = 32;

/// Where the reading of a stream stands.
#[derive(Default)]
pub(crate) struct StreamReader {
    phase: Phase,
    sizes: Sizes,
}

#[derive(Default)]
enum Phase {
    /// No entry read yet.
    #[default]
    Entries,
    /// The entries after this id are still to read.
    EntriesAfter(Bytes),
    /// The last id, counters and groups are to read.
    Meta,
    Groups(VecDeque<Group>),
    Done,
}

struct Group {
    name: Bytes,
    last_delivered: Bytes,
    entries_read: Option<i64>,
    /// `None` until the group is created; then the pending entries after
    /// this id are still to read (`-`: all of them, as none was read).
    pending_after: Option<Bytes>,
}

impl StreamReader {
    /// The next commands of the stream, about `limit` bytes of them; `None`
    /// once read to the end.
    pub(crate) async fn read(
        &mut self,
        conn: &mut MultiplexedConnection,
        key: &Bytes,
        limit: usize,
    ) -> Result<Option<Vec<Element>>, RebuildError> {
        match &mut self.phase {
            Phase::Entries | Phase::EntriesAfter(_) => self.entries(conn, key, limit).await,
            Phase::Meta => self.meta(conn, key).await,
            Phase::Groups(groups) => {
                let Some(group) = groups.front_mut() else {
                    self.phase = Phase::Done;
                    return Ok(None);
                };
                let read = match &group.pending_after {
                    None => create_group(conn, key, group).await?,
                    Some(_) => pending(conn, key, group, limit).await?,
                };
                match read {
                    Read::More(elements) => Ok(Some(elements)),
                    Read::Last(elements) => {
                        groups.pop_front();
                        Ok(Some(elements))
                    }
                    Read::Gone => {
                        self.phase = Phase::Done;
                        Ok(None)
                    }
                }
            }
            Phase::Done => Ok(None),
        }
    }

    /// A page of entries as `XADD`s.
    async fn entries(
        &mut self,
        conn: &mut MultiplexedConnection,
        key: &Bytes,
        limit: usize,
    ) -> Result<Option<Vec<Element>>, RebuildError> {
        let start = match &self.phase {
            Phase::EntriesAfter(id) => [&b"("[..], id].concat(),
            _ => b"-".to_vec(),
        };
        let count = self.sizes.count_for(limit);
        let reply = query(
            conn,
            "XRANGE",
            key,
            redis::cmd("XRANGE")
                .arg(&key[..])
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(count),
        )
        .await?;
        let bad = |v: &Value| RebuildError::unexpected("XRANGE", key, v);
        let Value::Array(entries) = reply else {
            return Err(bad(&reply));
        };
        let read = entries.len();
        let mut elements = Vec::with_capacity(read);
        let mut last = None;
        for entry in entries {
            let Value::Array(parts) = entry else {
                return Err(bad(&entry));
            };
            let [id, body] = <[Value; 2]>::try_from(parts).map_err(|p| bad(&Value::Array(p)))?;
            let id = into_bytes(id).ok_or_else(|| bad(&Value::Nil))?;
            let body = bulk_items(body).map_err(|v| bad(&v))?;
            let mut args = Vec::with_capacity(3 + body.len());
            args.push(Bytes::from_static(b"XADD"));
            args.push(key.clone());
            args.push(id.clone());
            args.extend(body);
            self.sizes.add(bytes_len(&args), 1);
            elements.push(Element::Whole(args));
            last = Some(id);
        }
        // Fewer than asked for: the stream's end (or it expired).
        self.phase = match last {
            Some(id) if read >= count => Phase::EntriesAfter(id),
            _ => Phase::Meta,
        };
        Ok(Some(elements))
    }

    /// The empty stream when it has no entries, `XSETID`, and the groups to
    /// read next.
    async fn meta(
        &mut self,
        conn: &mut MultiplexedConnection,
        key: &Bytes,
    ) -> Result<Option<Vec<Element>>, RebuildError> {
        let info = match xinfo(conn, key, "STREAM", None).await? {
            Some(info) => info,
            None => {
                self.phase = Phase::Done;
                return Ok(None);
            }
        };
        let bad = |v: &Value| RebuildError::unexpected("XINFO STREAM", key, v);
        let info = fields(info.clone()).ok_or_else(|| bad(&info))?;
        let field = |name: &str| {
            info.iter()
                .find(|(k, _)| &k[..] == name.as_bytes())
                .map(|(_, v)| v)
        };
        let length = field("length").and_then(int);
        let last_id = field("last-generated-id")
            .cloned()
            .and_then(into_bytes)
            .ok_or_else(|| bad(&Value::Nil))?;
        let mut elements = Vec::new();
        if length == Some(0) {
            let maker = Bytes::from_static(MAKER_GROUP);
            elements.push(whole(&[
                b"XGROUP",
                b"CREATE",
                key,
                &maker,
                b"0",
                b"MKSTREAM",
            ]));
            elements.push(whole(&[b"XGROUP", b"DESTROY", key, &maker]));
        }
        let mut setid = vec![Bytes::from_static(b"XSETID"), key.clone(), last_id.clone()];
        if let Some(added) = field("entries-added").and_then(int) {
            setid.push(Bytes::from_static(b"ENTRIESADDED"));
            setid.push(Bytes::from(added.to_string()));
        }
        if let Some(id) = field("max-deleted-entry-id").cloned().and_then(into_bytes) {
            setid.push(Bytes::from_static(b"MAXDELETEDID"));
            setid.push(id);
        }
        elements.push(Element::Whole(setid));

        let Some(reply) = xinfo(conn, key, "GROUPS", None).await? else {
            self.phase = Phase::Done;
            return Ok(Some(elements));
        };
        let bad = |v: &Value| RebuildError::unexpected("XINFO GROUPS", key, v);
        let Value::Array(list) = reply else {
            return Err(bad(&reply));
        };
        let mut groups = VecDeque::with_capacity(list.len());
        for group in list {
            let info = fields(group.clone()).ok_or_else(|| bad(&group))?;
            let field = |name: &str| {
                info.iter()
                    .find(|(k, _)| &k[..] == name.as_bytes())
                    .map(|(_, v)| v.clone())
            };
            groups.push_back(Group {
                name: field("name")
                    .and_then(into_bytes)
                    .ok_or_else(|| bad(&group))?,
                last_delivered: field("last-delivered-id")
                    .and_then(into_bytes)
                    .ok_or_else(|| bad(&group))?,
                // Nil when the primary does not know it either.
                entries_read: field("entries-read").as_ref().and_then(int),
                pending_after: None,
            });
        }
        self.phase = Phase::Groups(groups);
        Ok(Some(elements))
    }
}

/// What a read of a group gave.
enum Read {
    /// Commands, and more to read of this group.
    More(Vec<Element>),
    /// The group's last commands.
    Last(Vec<Element>),
    /// The stream is gone (expired).
    Gone,
}

/// `XGROUP CREATE` and a `XGROUP CREATECONSUMER` per consumer.
async fn create_group(
    conn: &mut MultiplexedConnection,
    key: &Bytes,
    group: &mut Group,
) -> Result<Read, RebuildError> {
    let Some(reply) = xinfo(conn, key, "CONSUMERS", Some(&group.name)).await? else {
        return Ok(Read::Gone);
    };
    let bad = |v: &Value| RebuildError::unexpected("XINFO CONSUMERS", key, v);
    let Value::Array(consumers) = reply else {
        return Err(bad(&reply));
    };
    let mut create = vec![
        Bytes::from_static(b"XGROUP"),
        Bytes::from_static(b"CREATE"),
        key.clone(),
        group.name.clone(),
        group.last_delivered.clone(),
    ];
    if let Some(n) = group.entries_read {
        create.push(Bytes::from_static(b"ENTRIESREAD"));
        create.push(Bytes::from(n.to_string()));
    }
    let mut elements = Vec::with_capacity(1 + consumers.len());
    elements.push(Element::Whole(create));
    for consumer in consumers {
        let info = fields(consumer.clone()).ok_or_else(|| bad(&consumer))?;
        let name = info
            .into_iter()
            .find(|(k, _)| &k[..] == b"name")
            .and_then(|(_, v)| into_bytes(v))
            .ok_or_else(|| bad(&consumer))?;
        elements.push(whole(&[
            b"XGROUP",
            b"CREATECONSUMER",
            key,
            &group.name,
            &name,
        ]));
    }
    group.pending_after = Some(Bytes::from_static(b"-"));
    Ok(Read::More(elements))
}

/// A page of the group's pending entries as `XCLAIM`s.
async fn pending(
    conn: &mut MultiplexedConnection,
    key: &Bytes,
    group: &mut Group,
    limit: usize,
) -> Result<Read, RebuildError> {
    let after = group.pending_after.as_ref().expect("a created group");
    let start = if &after[..] == b"-" {
        after.to_vec()
    } else {
        [&b"("[..], after].concat()
    };
    let count = (limit / PENDING_COST).clamp(1, MAX_COUNT);
    // TIME and XPENDING go together, so the idle times are measured
    // against the same instant of the primary's clock.
    let mut pipe = redis::pipe();
    pipe.cmd("TIME");
    pipe.cmd("XPENDING")
        .arg(&key[..])
        .arg(&group.name[..])
        .arg(start)
        .arg("+")
        .arg(count);
    let replies: Vec<redis::RedisResult<Value>> = pipe
        .ignore_errors()
        .query_async(conn)
        .await
        .map_err(|e| RebuildError::redis("XPENDING", key, e))?;
    let mut replies = replies.into_iter();
    let bad = |v: &Value| RebuildError::unexpected("XPENDING", key, v);
    let now = match replies.next() {
        Some(Ok(time)) => unix_ms(&time).ok_or_else(|| bad(&time))?,
        Some(Err(e)) => return Err(RebuildError::redis("TIME", key, e)),
        None => return Err(bad(&Value::Nil)),
    };
    let list = match replies.next() {
        Some(Ok(Value::Array(list))) => list,
        Some(Ok(other)) => return Err(bad(&other)),
        Some(Err(e)) if is_gone(&e) => return Ok(Read::Gone),
        Some(Err(e)) => return Err(RebuildError::redis("XPENDING", key, e)),
        None => return Err(bad(&Value::Nil)),
    };
    let read = list.len();
    let mut claims: Vec<Claim> = Vec::new();
    for entry in list {
        let Value::Array(parts) = entry else {
            return Err(bad(&entry));
        };
        let [id, consumer, idle, delivered] =
            <[Value; 4]>::try_from(parts).map_err(|p| bad(&Value::Array(p)))?;
        let (Some(id), Some(consumer), Some(idle), Some(delivered)) = (
            into_bytes(id),
            into_bytes(consumer),
            int(&idle),
            int(&delivered),
        ) else {
            return Err(bad(&Value::Nil));
        };
        let time = now - idle;
        match claims.last_mut() {
            Some(c)
                if c.consumer == consumer
                    && c.time == time
                    && c.delivered == delivered
                    && c.ids.len() < PER_COMMAND =>
            {
                c.ids.push(id)
            }
            _ => claims.push(Claim {
                consumer,
                time,
                delivered,
                ids: vec![id],
            }),
        }
    }
    let last = claims.last().and_then(|c| c.ids.last()).cloned();
    let elements = claims
        .into_iter()
        .map(|c| c.command(key, &group.name))
        .collect();
    match last {
        Some(id) if read >= count => {
            group.pending_after = Some(id);
            Ok(Read::More(elements))
        }
        _ => Ok(Read::Last(elements)),
    }
}

/// Pending entries one `XCLAIM` restores.
struct Claim {
    consumer: Bytes,
    /// The delivery time, in Unix milliseconds of the primary's clock.
    time: i64,
    delivered: i64,
    ids: Vec<Bytes>,
}

impl Claim {
    fn command(self, key: &Bytes, group: &Bytes) -> Element {
        let mut args = Vec::with_capacity(12 + self.ids.len());
        args.extend([
            Bytes::from_static(b"XCLAIM"),
            key.clone(),
            group.clone(),
            self.consumer,
            Bytes::from_static(b"0"),
        ]);
        args.extend(self.ids);
        args.extend([
            Bytes::from_static(b"TIME"),
            Bytes::from(self.time.to_string()),
            Bytes::from_static(b"RETRYCOUNT"),
            Bytes::from(self.delivered.to_string()),
            Bytes::from_static(b"FORCE"),
            Bytes::from_static(b"JUSTID"),
        ]);
        Element::Whole(args)
    }
}

/// `XINFO <sub> key [group]`; `None` when the stream or group is gone.
async fn xinfo(
    conn: &mut MultiplexedConnection,
    key: &Bytes,
    sub: &'static str,
    group: Option<&Bytes>,
) -> Result<Option<Value>, RebuildError> {
    let mut command = redis::cmd("XINFO");
    command.arg(sub).arg(&key[..]);
    if let Some(group) = group {
        command.arg(&group[..]);
    }
    match command.query_async(conn).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(RebuildError::redis(
            match sub {
                "STREAM" => "XINFO STREAM",
                "GROUPS" => "XINFO GROUPS",
                _ => "XINFO CONSUMERS",
            },
            key,
            e,
        )),
    }
}

/// Whether Redis answered that the stream (or its group) is not there: it
/// expired mid-way.
fn is_gone(e: &RedisError) -> bool {
    match e.code() {
        Some("NOGROUP") => true,
        Some("ERR") => e.detail().is_some_and(|d| d.starts_with("no such key")),
        _ => false,
    }
}

fn whole(parts: &[&[u8]]) -> Element {
    Element::Whole(parts.iter().map(|p| Bytes::copy_from_slice(p)).collect())
}

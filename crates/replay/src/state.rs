//! Where the replay keeps its progress: in the backup itself, in one hash
//! no replayed command can change for good.
//!
//! `__remoteback:state` in database 0 holds, per topic and partition:
//!
//! | field | value |
//! |---|---|
//! | `offset:<topic>:<partition>` | the offset of the next record to apply |
//! | `seq:<topic>:<partition>:<source>` | `<run>:<seq>` of the last record of `source` applied |
//! | `arrived:<topic>:<partition>` | `<run>:<number>:<source>`: the barrier the partition waits at |
//! | `barrier:<topic>:<source>` | `<run>:<number>`: the last barrier of `source` applied |
//!
//! Kafka topic names cannot hold `:`, so the fields cannot be mistaken for
//! one another; a source (`host:port`) comes last.
//!
//! Each applied batch sets its partition's fields inside the same
//! `MULTI`/`EXEC` as the data (`HSET`), so the data and the position change
//! together or not at all: exactly once without Kafka transactions.
//!
//! A batch with a command that could delete, move or rewind the hash
//! ([`is_risky`]: `FLUSHALL`, `FLUSHDB`, `SWAPDB`, scripts that mention them,
//! any argument naming a `__remoteback:` key) is applied under `WATCH` of
//! the hash with the whole hash written back after its commands (see
//! `applier/transaction.rs`).
//!
//! Older versions kept only the offset, in `__remoteback:offset:<topic>:<partition>`
//! (a string in database 0): it is read when the hash has no offset for
//! the partition, moved into the hash and deleted.

use std::collections::HashMap;

use bytes::Bytes;
use remoteback_protocol::frame::Frame;
use remoteback_protocol::Command;

use crate::backup::{refused, Backup, BackupError};

pub use remoteback_protocol::record::KEY_PREFIX;

/// The hash holding all replay state (database 0).
pub const STATE_KEY: &str = "__remoteback:state";

/// The key older versions kept the next offset of `topic`/`partition` in.
pub fn legacy_key(topic: &str, partition: i32) -> String {
    format!("{KEY_PREFIX}offset:{topic}:{partition}")
}

/// The field of the next offset of `topic`/`partition`.
pub fn offset_field(topic: &str, partition: i32) -> String {
    format!("offset:{topic}:{partition}")
}

/// The prefix of the `seq:` fields of `topic`/`partition`.
pub fn seq_prefix(topic: &str, partition: i32) -> String {
    format!("seq:{topic}:{partition}:")
}

/// The field of the barrier `topic`/`partition` waits at.
pub fn arrived_field(topic: &str, partition: i32) -> String {
    format!("arrived:{topic}:{partition}")
}

/// The field of the last barrier of `source` applied to `topic`.
pub fn barrier_field(topic: &str, source: &str) -> String {
    format!("barrier:{topic}:{source}")
}

/// A place in a source's numbering: the proxy run, and a number within it
/// (a record's `rb-seq`, or a barrier's number). Ordered by run first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub run: u64,
    pub n: u64,
}

impl Position {
    /// `<run>:<n>`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.run, self.n)
    }

    pub fn parse(s: &[u8]) -> Option<Position> {
        let s = std::str::from_utf8(s).ok()?;
        let (run, n) = s.split_once(':')?;
        Some(Position {
            run: run.parse().ok()?,
            n: n.split(':').next()?.parse().ok()?,
        })
    }
}

/// What the applier does with a numbered record, given the last record of
/// the same source applied to the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqCheck {
    /// The next record (or the first of a newer run, numbered 1, or the
    /// first ever seen of the source): apply it.
    Next,
    /// Numbered at or before the last applied (or of an older run): it is
    /// in Kafka twice; skip it.
    Duplicate,
    /// Records `from..=to` of the run never arrived; apply this one, the
    /// backup misses those.
    Gap { from: u64, to: u64 },
}

/// The decision for record `at` after `last` (none: the source was never
/// seen on this partition, where the replay started is unknown, so any
/// number is a start).
pub fn check_seq(last: Option<Position>, at: Position) -> SeqCheck {
    match last {
        None => SeqCheck::Next,
        Some(last) if at <= last => SeqCheck::Duplicate,
        Some(last) if at.run == last.run => match at.n == last.n + 1 {
            true => SeqCheck::Next,
            false => SeqCheck::Gap {
                from: last.n + 1,
                to: at.n - 1,
            },
        },
        // A newer run starts at 1.
        Some(_) if at.n <= 1 => SeqCheck::Next,
        Some(_) => SeqCheck::Gap {
            from: 1,
            to: at.n - 1,
        },
    }
}

/// One partition's state as read from the backup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionState {
    /// The next offset to apply.
    pub offset: Option<i64>,
    /// The last record applied, per source.
    pub seqs: HashMap<String, Position>,
}

/// Reads `topic`/`partition`'s state; moves an offset found only under the
/// legacy key into the hash (and deletes the key). Leaves database 0
/// selected.
pub async fn read(
    backup: &mut Backup,
    topic: &str,
    partition: i32,
) -> Result<PartitionState, BackupError> {
    let legacy = legacy_key(topic, partition);
    let mut bytes = Command::from_parts(["SELECT", "0"]).to_resp().to_vec();
    bytes.extend_from_slice(&Command::from_parts(["HGETALL", STATE_KEY]).to_resp());
    bytes.extend_from_slice(&Command::from_parts(["GET", legacy.as_str()]).to_resp());
    backup.send(&bytes).await?;
    let selected = backup.reply().await?;
    let all = backup.reply().await?;
    let old = backup.reply().await?;
    for (what, reply) in [
        ("SELECT 0", &selected),
        ("reading the replay state", &all),
        ("reading the legacy offset", &old),
    ] {
        if reply.is_error() {
            return Err(refused(backup.addr(), what, reply));
        }
    }
    let bad = |reason: String| BackupError::BadReply {
        addr: backup.addr().to_string(),
        reason,
    };
    let fields = match &all {
        Frame::Array(f) | Frame::Map(f) => f.as_slice(),
        Frame::Null => &[],
        other => {
            return Err(bad(format!(
                "unexpected reply reading {STATE_KEY}: {other:?} (it must be a hash)"
            )))
        }
    };
    let mut state = parse(topic, partition, fields).map_err(bad)?;
    if state.offset.is_none() {
        if let Frame::Bulk(b) = &old {
            let offset = parse_offset(b).ok_or_else(|| {
                bad(format!(
                    "{legacy} holds {:?}, not an offset",
                    String::from_utf8_lossy(b)
                ))
            })?;
            migrate(backup, topic, partition, offset).await?;
            log::info!(
                "partition {topic}[{partition}]: moved the offset {offset} from {legacy} into {STATE_KEY}"
            );
            state.offset = Some(offset);
        }
    }
    Ok(state)
}

/// The partition's fields among `HGETALL`'s alternating names and values.
fn parse(topic: &str, partition: i32, fields: &[Frame]) -> Result<PartitionState, String> {
    let offset = offset_field(topic, partition);
    let seq = seq_prefix(topic, partition);
    let mut state = PartitionState::default();
    for pair in fields.chunks(2) {
        let [Frame::Bulk(name), Frame::Bulk(value)] = pair else {
            continue;
        };
        if name[..] == *offset.as_bytes() {
            state.offset = Some(parse_offset(value).ok_or_else(|| {
                format!(
                    "{STATE_KEY} field {offset} holds {:?}, not an offset",
                    String::from_utf8_lossy(value)
                )
            })?);
        } else if let Some(source) = name.strip_prefix(seq.as_bytes()) {
            let at = Position::parse(value).ok_or_else(|| {
                format!(
                    "{STATE_KEY} field {} holds {:?}, not RUN:SEQ",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(value)
                )
            })?;
            state
                .seqs
                .insert(String::from_utf8_lossy(source).into_owned(), at);
        }
    }
    Ok(state)
}

fn parse_offset(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

async fn migrate(
    backup: &mut Backup,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), BackupError> {
    let mut bytes = Command::from_parts(["MULTI"]).to_resp().to_vec();
    bytes.extend_from_slice(&store(topic, partition, offset, &[]).to_resp());
    bytes.extend_from_slice(
        &Command::from_parts(["DEL".to_string(), legacy_key(topic, partition)]).to_resp(),
    );
    bytes.extend_from_slice(&Command::from_parts(["EXEC"]).to_resp());
    backup.send(&bytes).await?;
    for what in ["MULTI", "HSET", "DEL", "EXEC"] {
        let reply = backup.reply().await?;
        if reply.is_error() {
            return Err(refused(
                backup.addr(),
                &format!("moving the legacy offset ({what})"),
                &reply,
            ));
        }
    }
    Ok(())
}

/// Stores `next` as the partition's position, outside any transaction (for
/// positions no data change goes with: the start of `start = "latest"`, a
/// skipped or refused record, a `ROW` batch). Leaves database 0 selected.
pub async fn write(
    backup: &mut Backup,
    topic: &str,
    partition: i32,
    next: i64,
) -> Result<(), BackupError> {
    let mut bytes = Command::from_parts(["SELECT", "0"]).to_resp().to_vec();
    bytes.extend_from_slice(&store(topic, partition, next, &[]).to_resp());
    backup.send(&bytes).await?;
    let selected = backup.reply().await?;
    let set = backup.reply().await?;
    for (what, reply) in [("SELECT 0", &selected), ("storing the offset", &set)] {
        if reply.is_error() {
            return Err(refused(backup.addr(), what, reply));
        }
    }
    Ok(())
}

/// Stores `next` as the partition's position and the last record applied
/// of one source as given (`None`: none), in one `MULTI`/`EXEC`. Leaves
/// database 0 selected.
pub async fn write_position(
    backup: &mut Backup,
    topic: &str,
    partition: i32,
    next: i64,
    seq: Option<(&str, Option<Position>)>,
) -> Result<(), BackupError> {
    let mut commands = vec![
        Command::from_parts(["SELECT", "0"]),
        Command::from_parts(["MULTI"]),
    ];
    match seq {
        Some((source, Some(at))) => commands.push(store(topic, partition, next, &[(source, at)])),
        Some((source, None)) => {
            commands.push(store(topic, partition, next, &[]));
            commands.push(Command::from_parts([
                "HDEL".to_string(),
                STATE_KEY.to_string(),
                format!("{}{source}", seq_prefix(topic, partition)),
            ]));
        }
        None => commands.push(store(topic, partition, next, &[])),
    }
    commands.push(Command::from_parts(["EXEC"]));
    let mut bytes = Vec::new();
    for c in &commands {
        bytes.extend_from_slice(&c.to_resp());
    }
    backup.send(&bytes).await?;
    for c in &commands {
        let reply = backup.reply().await?;
        if reply.is_error() {
            return Err(refused(
                backup.addr(),
                &format!(
                    "storing the position ({})",
                    String::from_utf8_lossy(c.name())
                ),
                &reply,
            ));
        }
        if c.is("EXEC") {
            if let Some(results) = reply.as_array() {
                if let Some(e) = results.iter().find(|r| r.is_error()) {
                    return Err(refused(backup.addr(), "storing the position", e));
                }
            }
        }
    }
    Ok(())
}

/// The command that stores `next` as the partition's position and, for
/// each source, the last record of it applied (`seqs`).
pub fn store(topic: &str, partition: i32, next: i64, seqs: &[(&str, Position)]) -> Command {
    let mut parts: Vec<Bytes> = Vec::with_capacity(3 + 2 * seqs.len());
    parts.push(Bytes::from_static(b"HSET"));
    parts.push(Bytes::from_static(STATE_KEY.as_bytes()));
    parts.push(offset_field(topic, partition).into());
    parts.push(next.to_string().into());
    let prefix = seq_prefix(topic, partition);
    for (source, at) in seqs {
        parts.push(format!("{prefix}{source}").into());
        parts.push(at.encode().into());
    }
    Command::new(parts)
}

/// Whether a command may delete, move, copy or rewind the state hash (or a
/// legacy offset key): it empties databases (`FLUSHALL`, `FLUSHDB`),
/// swaps them (`SWAPDB`), names a `__remoteback:` key as any argument
/// (`DEL`, `RENAME`, `MOVE`, `COPY`, `RESTORE`, ...), or is a script whose
/// body does one of those (`EVAL`/`EVAL_RO` mentioning `FLUSHALL`,
/// `FLUSHDB`, `SWAPDB` or `__remoteback:`, in any case). Such a batch is
/// applied with the state written back under `WATCH`.
///
/// Other scripts and functions are not: a guarded transaction contends
/// with every other partition's commit on the one hash, and a steady load
/// of scripts would starve. A function (`FCALL`) or a script the proxy
/// passed on as `EVALSHA` that empties databases or names the state by a
/// computed name can therefore delete the state (docs/guarantees.md).
pub fn is_risky(command: &Command) -> bool {
    const RISKY: &[&str] = &["FLUSHALL", "FLUSHDB", "SWAPDB"];
    const IN_SCRIPTS: &[&[u8]] = &[b"flushall", b"flushdb", b"swapdb", b"__remoteback:"];
    let args = command.args();
    if RISKY.iter().any(|name| command.is(name))
        || args[1.min(args.len())..]
            .iter()
            .any(|a| a.starts_with(KEY_PREFIX.as_bytes()))
    {
        return true;
    }
    if !(command.is("EVAL") || command.is("EVAL_RO")) {
        return false;
    }
    let body = args
        .get(1)
        .map(|b| b.to_ascii_lowercase())
        .unwrap_or_default();
    IN_SCRIPTS
        .iter()
        .any(|word| body.windows(word.len()).any(|w| w == *word))
}

/// The databases besides 0 a risky command may leave a copy of the state
/// hash in (`SWAPDB 0 n`, `MOVE key n`, `COPY ... DB n`), and the database
/// the command ran in (`SELECT`s and scripts too may name a `__remoteback:`
/// key there).
pub fn stray_databases(command: &Command, db: u32, out: &mut Vec<u32>) {
    let number = |i: usize| {
        command
            .arg(i)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|s| s.parse::<u32>().ok())
    };
    let mut add = |d: Option<u32>| {
        if let Some(d) = d.filter(|d| *d != 0) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    };
    add(Some(db));
    if command.is("SWAPDB") {
        add(number(1));
        add(number(2));
    } else if command.is("MOVE") {
        add(number(2));
    } else if command.is("COPY") {
        for (i, arg) in command.args().iter().enumerate().skip(3) {
            if arg.eq_ignore_ascii_case(b"DB") {
                add(number(i + 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(run: u64, n: u64) -> Position {
        Position { run, n }
    }

    #[test]
    fn sequence_numbers_tell_duplicates_from_gaps() {
        assert_eq!(check_seq(None, at(5, 17)), SeqCheck::Next, "first seen");
        assert_eq!(check_seq(Some(at(5, 3)), at(5, 4)), SeqCheck::Next);
        assert_eq!(check_seq(Some(at(5, 3)), at(5, 3)), SeqCheck::Duplicate);
        assert_eq!(check_seq(Some(at(5, 3)), at(5, 1)), SeqCheck::Duplicate);
        assert_eq!(
            check_seq(Some(at(5, 3)), at(4, 99)),
            SeqCheck::Duplicate,
            "an older run was applied before"
        );
        assert_eq!(
            check_seq(Some(at(5, 3)), at(5, 7)),
            SeqCheck::Gap { from: 4, to: 6 }
        );
        assert_eq!(check_seq(Some(at(5, 3)), at(6, 1)), SeqCheck::Next);
        assert_eq!(
            check_seq(Some(at(5, 3)), at(6, 4)),
            SeqCheck::Gap { from: 1, to: 3 }
        );
    }

    #[test]
    fn positions_round_trip_and_order_by_run_first() {
        assert_eq!(Position::parse(b"17:4"), Some(at(17, 4)));
        assert_eq!(
            Position::parse(at(1, 2).encode().as_bytes()),
            Some(at(1, 2))
        );
        assert_eq!(Position::parse(b"3:9:host:1"), Some(at(3, 9)));
        assert_eq!(Position::parse(b"x:1"), None);
        assert_eq!(Position::parse(b"12"), None);
        assert!(at(2, 1) > at(1, 100));
    }

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn a_partition_reads_its_own_fields_only() {
        let fields: Vec<Frame> = [
            ("offset:t:1", "40"),
            ("offset:t:10", "7"),
            ("offset:u:1", "3"),
            ("seq:t:1:h:6379", "100:39"),
            ("seq:t:10:h:6379", "100:6"),
            ("arrived:t:1", "100:2:h:6379"),
        ]
        .iter()
        .flat_map(|(k, v)| [bulk(k), bulk(v)])
        .collect();
        let state = parse("t", 1, &fields).unwrap();
        assert_eq!(state.offset, Some(40));
        assert_eq!(state.seqs.len(), 1);
        assert_eq!(state.seqs["h:6379"], at(100, 39));
        let empty = parse("t", 2, &fields).unwrap();
        assert_eq!(empty, PartitionState::default());
        let bad = [bulk("offset:t:1"), bulk("x")];
        assert!(parse("t", 1, &bad).unwrap_err().contains("not an offset"));
    }

    #[test]
    fn the_store_command_sets_the_offset_and_the_sources() {
        let c = store("t", 3, 7, &[("h:1", at(9, 2))]);
        let text: Vec<String> = c
            .args()
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert_eq!(
            text,
            ["HSET", STATE_KEY, "offset:t:3", "7", "seq:t:3:h:1", "9:2"]
        );
    }

    fn command(parts: &[&str]) -> Command {
        Command::from_parts(parts.iter().copied())
    }

    #[test]
    fn commands_that_could_touch_the_state_are_risky() {
        for c in [
            &["FLUSHALL"][..],
            &["flushdb", "0"],
            &["SWAPDB", "0", "1"],
            &["EVAL", "redis.call('FlushAll')", "0"],
            &["eval", "redis.call('del', '__remoteback:state')", "0"],
            &["EVAL_RO", "redis.call('swapdb', 0, 1)", "0"],
            &["DEL", "a", "__remoteback:state"],
            &["RENAME", "__remoteback:offset:t:0", "x"],
            &["MOVE", "__remoteback:state", "3"],
            &["COPY", "__remoteback:state", "x", "DB", "2"],
            &["UNLINK", "__remoteback:state"],
        ] {
            assert!(is_risky(&command(c)), "{c:?}");
        }
        for c in [
            &["SET", "k", "v"][..],
            &["DEL", "a", "b"],
            &["RPUSH", "l", "remoteback:x"],
            &["PING"],
            &["EVAL", "return redis.call('INCR', KEYS[1])", "1", "k"],
            &["evalsha", "abc", "0"],
            &["FCALL", "f", "0"],
            &["FUNCTION", "FLUSH"],
        ] {
            assert!(!is_risky(&command(c)), "{c:?}");
        }
    }

    #[test]
    fn stray_copies_are_looked_for_where_a_command_could_leave_them() {
        let strays = |c: &[&str], db| {
            let mut out = Vec::new();
            stray_databases(&command(c), db, &mut out);
            out
        };
        assert_eq!(strays(&["SWAPDB", "0", "4"], 0), [4]);
        assert_eq!(strays(&["MOVE", "__remoteback:state", "3"], 2), [2, 3]);
        assert_eq!(strays(&["COPY", "a", "b", "db", "5", "REPLACE"], 0), [5]);
        assert_eq!(strays(&["FLUSHALL"], 0), Vec::<u32>::new());
    }
}

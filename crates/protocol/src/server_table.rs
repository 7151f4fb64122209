//! A command table read from a server's own `COMMAND` reply.
//!
//! The built-in table ([`crate::table`]) knows redis-server 7.0.15. A newer
//! Redis, Valkey, or any module has commands it lacks (`HEXPIRE`, `HSETEX`,
//! `JSON.SET`, ...), and a write the table does not know is a write the
//! backup never gets. The server knows its own commands, so the proxy reads
//! `COMMAND` from the primary and classifies with that ([`ServerTable`]);
//! the built-in table is the fallback where the primary cannot answer.
//!
//! The reply is read as `COMMAND` gives it in RESP2 (RESP3 maps are read the
//! same): per command `name, arity, flags, first key, last key, step, ACL
//! categories, tips, key specs, subcommands`. What the generator of the
//! built-in table treats as fatal (an unknown flag, a new key-spec type) is
//! tolerated here: a server is not reviewed like a checked-in table, so
//! unknown flags are ignored and unknown key-spec types read as `unknown`
//! (the command's keys are then unknown, which the proxy handles with its
//! ordering barrier).
//!
//! Two things `COMMAND` does not say are added as the generator adds them:
//! the hidden `may_replicate` flag ([`MAY_REPLICATE`]), and, for a command
//! without key specs, the legacy `first, last, step` range as one spec
//! (what Redis itself does for module commands created without specs).

use bytes::Bytes;

use crate::commands::*;
use crate::frame::Frame;
use crate::table::COMMANDS;

/// Commands whose src/commands/*.json declare `MAY_REPLICATE`, which
/// `COMMAND` hides on purpose (see `scripts/gen-command-table.py`).
pub const MAY_REPLICATE: [&str; 6] = ["eval", "evalsha", "fcall", "pfcount", "publish", "spublish"];

/// Why a reply could not be read as a command table at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("COMMAND reply not understood: {0}")]
pub struct ServerTableError(pub String);

/// A parsed `COMMAND` reply: every command and subcommand, sorted by name,
/// owned. Compare two with `==` to see whether the server's table changed
/// before [`leak`](ServerTable::leak)ing a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTable {
    rows: Vec<Row>,
    /// Top-level commands (what `COMMAND COUNT` answers).
    commands: usize,
    /// Entries that could not be read (named when they had a name).
    skipped: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    name: String,
    arity: i32,
    flags: u32,
    key_specs: Vec<Spec>,
    subs: Vec<String>,
    sub_start: u16,
    sub_count: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Spec {
    flags: u32,
    begin: Begin,
    find_keys: FindKeys,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Begin {
    Index(i32),
    Keyword(String, i32),
    Unknown,
}

impl ServerTable {
    /// Reads a `COMMAND` (or `COMMAND INFO ...`) reply. Entries that are
    /// nil (`COMMAND INFO` of an unknown name) are left out; entries that
    /// are not shaped like a command are left out and listed in
    /// [`skipped`](ServerTable::skipped).
    pub fn parse(reply: &Frame) -> Result<ServerTable, ServerTableError> {
        let Frame::Array(entries) = reply else {
            return Err(ServerTableError(format!("not an array: {reply:?}")));
        };
        let mut rows = Vec::new();
        let mut skipped = Vec::new();
        let mut commands = 0;
        for entry in entries {
            if matches!(entry, Frame::Null) {
                continue;
            }
            let before = rows.len();
            if add(entry, None, &mut rows) {
                commands += 1;
            } else {
                rows.truncate(before);
                skipped.push(entry_name(entry).unwrap_or_else(|| "?".to_string()));
            }
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows.dedup_by(|a, b| a.name == b.name);
        if rows.len() > usize::from(u16::MAX) {
            return Err(ServerTableError(format!("{} commands", rows.len())));
        }
        // Each container's subcommands: the sorted rows named
        // "container|...", which are contiguous.
        for i in 0..rows.len() {
            if rows[i].subs.is_empty() {
                continue;
            }
            let prefix = format!("{}|", rows[i].name);
            let start = i + 1;
            let count = rows[start..]
                .iter()
                .take_while(|r| r.name.starts_with(&prefix))
                .count();
            rows[i].sub_start = start as u16;
            rows[i].sub_count = count as u16;
        }
        Ok(ServerTable {
            rows,
            commands,
            skipped,
        })
    }

    /// Top-level commands read (what `COMMAND COUNT` says, if nothing was
    /// skipped).
    pub fn commands(&self) -> usize {
        self.commands
    }

    /// Commands and subcommands.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Names of the entries that were not understood.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The lowercase names of the commands this table has and `other`
    /// lacks, top-level and subcommands.
    pub fn names_missing_from(&self, other: Table) -> Vec<&str> {
        self.rows
            .iter()
            .filter(|r| {
                let args: Vec<Bytes> = r
                    .name
                    .split('|')
                    .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                    .collect();
                other.lookup(&args).map(|s| s.name()) != Some(r.name.as_str())
            })
            .map(|r| r.name.as_str())
            .collect()
    }

    /// The table as a [`Table`] of `'static` rows, for lookups that borrow
    /// nothing and allocate nothing (the proxy's hot path, and specs that
    /// travel with captured commands).
    ///
    /// The rows are leaked: a proxy reads a new table only when the
    /// primary's changed (it compares with `==` first), so this costs some
    /// tens of kilobytes per distinct table the primary ever had, in
    /// exchange for specs that need neither reference counts nor lifetimes
    /// on the hot path. Key-spec keywords the built-in table already has
    /// are shared with it.
    pub fn leak(self) -> Table {
        let rows: Vec<CommandSpec> = self
            .rows
            .into_iter()
            .map(|r| {
                let specs: Vec<KeySpec> = r.key_specs.into_iter().map(leak_spec).collect();
                CommandSpec::new(
                    Box::leak(r.name.into_boxed_str()),
                    r.arity,
                    r.flags,
                    Box::leak(specs.into_boxed_slice()),
                    r.sub_start,
                    r.sub_count,
                )
            })
            .collect();
        Table::from_rows(Box::leak(rows.into_boxed_slice()))
    }
}

fn leak_spec(s: Spec) -> KeySpec {
    let begin_search = match s.begin {
        Begin::Index(pos) => BeginSearch::Index { pos },
        Begin::Keyword(keyword, startfrom) => BeginSearch::Keyword {
            keyword: intern(keyword),
            startfrom,
        },
        Begin::Unknown => BeginSearch::Unknown,
    };
    KeySpec::new(s.flags, begin_search, s.find_keys)
}

/// A keyword as `'static`: the built-in table's copy if it has one.
fn intern(keyword: String) -> &'static str {
    COMMANDS
        .iter()
        .flat_map(|c| c.key_specs())
        .find_map(|k| match k.begin_search {
            BeginSearch::Keyword { keyword: known, .. } if known == keyword => Some(known),
            _ => None,
        })
        .unwrap_or_else(|| Box::leak(keyword.into_boxed_str()))
}

/// Adds the command `entry` and its subcommands to `rows`; false if the
/// entry is not shaped like a command.
fn add(entry: &Frame, container: Option<&str>, rows: &mut Vec<Row>) -> bool {
    let Frame::Array(fields) = entry else {
        return false;
    };
    let Some(name) = fields.first().and_then(text) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    if name.is_empty() || container.is_some_and(|c| !name.starts_with(&format!("{c}|"))) {
        return false;
    }
    let (Some(arity), Some(flag_names)) = (fields.get(1).and_then(int), fields.get(2)) else {
        return false;
    };
    let mut flags = 0;
    for f in items(flag_names) {
        flags |= text(f).map_or(0, |f| cmd_flag(&f));
    }
    if MAY_REPLICATE.contains(&name.as_str()) {
        flags |= CMD_MAY_REPLICATE;
    }
    let legacy = (
        fields.get(3).and_then(int).unwrap_or(0),
        fields.get(4).and_then(int).unwrap_or(0),
        fields.get(5).and_then(int).unwrap_or(0),
    );
    let mut key_specs: Vec<Spec> = fields
        .get(8)
        .map(items)
        .unwrap_or(&[])
        .iter()
        .map(spec)
        .collect();
    if key_specs.is_empty() && legacy.0 > 0 {
        key_specs.push(legacy_range(legacy));
    }
    // Keys that move with the arguments need a spec that says how
    // (keynum, keyword), or one Redis marks incomplete and that has a native
    // fallback here. Otherwise (a module's getkeys callback) the keys are
    // unknown: the range alone would name some and miss others.
    if flags & CMD_MOVABLEKEYS != 0
        && !key_specs.iter().any(|s| {
            matches!(s.begin, Begin::Keyword(..) | Begin::Unknown)
                || matches!(s.find_keys, FindKeys::Keynum { .. } | FindKeys::Unknown)
                || s.flags & KEY_INCOMPLETE != 0
        })
    {
        key_specs = vec![Spec {
            flags: 0,
            begin: Begin::Unknown,
            find_keys: FindKeys::Unknown,
        }];
    }
    let subs = fields.get(9).map(items).unwrap_or(&[]);
    let mut sub_names = Vec::new();
    rows.push(Row {
        name: name.clone(),
        arity,
        flags,
        key_specs,
        subs: Vec::new(),
        sub_start: 0,
        sub_count: 0,
    });
    let at = rows.len() - 1;
    if container.is_none() {
        for s in subs {
            if !add(s, Some(&name), rows) {
                return false;
            }
            if let Some(n) = entry_name(s) {
                sub_names.push(n);
            }
        }
    }
    rows[at].subs = sub_names;
    true
}

/// The key spec `first, last, step` stand for (Redis's legacy range).
fn legacy_range((first, last, step): (i32, i32, i32)) -> Spec {
    Spec {
        flags: 0,
        begin: Begin::Index(first),
        find_keys: FindKeys::Range {
            // Range specs count a non-negative last key from the first one.
            lastkey: if last < 0 { last } else { last - first },
            keystep: step,
            limit: 0,
        },
    }
}

fn spec(frame: &Frame) -> Spec {
    let flags = field(frame, "flags")
        .map(items)
        .unwrap_or(&[])
        .iter()
        .filter_map(text)
        .fold(0, |acc, f| acc | key_flag(&f));
    let begin = field(frame, "begin_search").map_or(Begin::Unknown, |b| {
        let spec = field(b, "spec");
        let num = |name| spec.and_then(|s| field(s, name)).and_then(int);
        match field(b, "type").and_then(text).as_deref() {
            Some("index") => num("index").map_or(Begin::Unknown, Begin::Index),
            Some("keyword") => match (
                spec.and_then(|s| field(s, "keyword")).and_then(text),
                num("startfrom"),
            ) {
                (Some(k), Some(from)) => Begin::Keyword(k, from),
                _ => Begin::Unknown,
            },
            _ => Begin::Unknown,
        }
    });
    let find_keys = field(frame, "find_keys").map_or(FindKeys::Unknown, |f| {
        let spec = field(f, "spec");
        let num = |name| spec.and_then(|s| field(s, name)).and_then(int);
        match field(f, "type").and_then(text).as_deref() {
            Some("range") => match (num("lastkey"), num("keystep"), num("limit")) {
                (Some(lastkey), Some(keystep), Some(limit)) => FindKeys::Range {
                    lastkey,
                    keystep,
                    limit,
                },
                _ => FindKeys::Unknown,
            },
            Some("keynum") => match (num("keynumidx"), num("firstkey"), num("keystep")) {
                (Some(keynumidx), Some(firstkey), Some(keystep)) => FindKeys::Keynum {
                    keynumidx,
                    firstkey,
                    keystep,
                },
                _ => FindKeys::Unknown,
            },
            _ => FindKeys::Unknown,
        }
    });
    Spec {
        flags,
        begin,
        find_keys,
    }
}

fn cmd_flag(name: &str) -> u32 {
    match name.to_ascii_lowercase().as_str() {
        "write" => CMD_WRITE,
        "readonly" => CMD_READONLY,
        "denyoom" => CMD_DENYOOM,
        "module" => CMD_MODULE,
        "admin" => CMD_ADMIN,
        "pubsub" => CMD_PUBSUB,
        "noscript" => CMD_NOSCRIPT,
        "blocking" => CMD_BLOCKING,
        "loading" => CMD_LOADING,
        "stale" => CMD_STALE,
        "skip_monitor" => CMD_SKIP_MONITOR,
        "skip_slowlog" => CMD_SKIP_SLOWLOG,
        "asking" => CMD_ASKING,
        "fast" => CMD_FAST,
        "no_auth" => CMD_NO_AUTH,
        "may_replicate" => CMD_MAY_REPLICATE,
        "no_mandatory_keys" => CMD_NO_MANDATORY_KEYS,
        "no_multi" => CMD_NO_MULTI,
        "movablekeys" => CMD_MOVABLEKEYS,
        "allow_busy" => CMD_ALLOW_BUSY,
        "no_async_loading" => CMD_NO_ASYNC_LOADING,
        _ => 0,
    }
}

fn key_flag(name: &str) -> u32 {
    match name.to_ascii_lowercase().as_str() {
        "rw" => KEY_RW,
        "ro" => KEY_RO,
        "ow" => KEY_OW,
        "rm" => KEY_RM,
        "access" => KEY_ACCESS,
        "update" => KEY_UPDATE,
        "insert" => KEY_INSERT,
        "delete" => KEY_DELETE,
        "not_key" => KEY_NOT_KEY,
        "incomplete" => KEY_INCOMPLETE,
        "variable_flags" => KEY_VARIABLE_FLAGS,
        _ => 0,
    }
}

/// The elements of an array, set or map (as alternating keys and values).
fn items(frame: &Frame) -> &[Frame] {
    match frame {
        Frame::Array(v) | Frame::Map(v) => v,
        _ => &[],
    }
}

/// The value after key `name` in a RESP2 flat key/value array or a RESP3 map.
fn field<'a>(frame: &'a Frame, name: &str) -> Option<&'a Frame> {
    items(frame)
        .chunks_exact(2)
        .find(|kv| text(&kv[0]).is_some_and(|k| k.eq_ignore_ascii_case(name)))
        .map(|kv| &kv[1])
}

fn text(frame: &Frame) -> Option<String> {
    match frame {
        Frame::Simple(b) | Frame::Bulk(b) => std::str::from_utf8(b).ok().map(str::to_string),
        _ => None,
    }
}

fn int(frame: &Frame) -> Option<i32> {
    match frame {
        Frame::Integer(n) => i32::try_from(*n).ok(),
        Frame::Simple(b) | Frame::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn entry_name(entry: &Frame) -> Option<String> {
    items(entry)
        .first()
        .and_then(text)
        .map(|n| n.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    fn decode(raw: &[u8]) -> Frame {
        let (f, len) = frame::decode(&Bytes::copy_from_slice(raw))
            .expect("valid RESP")
            .expect("complete");
        assert_eq!(len, raw.len());
        f
    }

    fn args(parts: &[&str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    fn keys(t: Table, parts: &[&str]) -> Vec<String> {
        let a = args(parts);
        let s = t.lookup(&a).unwrap_or_else(|| panic!("{parts:?}"));
        s.keys(&a)
            .into_iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    /// `COMMAND INFO get set hexpire hpersist xread eval object sort lmpop
    /// publish` as redis-server 7.4.1 answers it.
    const REDIS_74: &[u8] = include_bytes!("fixtures/command-info-redis-7.4.1.resp");
    /// The same asked of valkey-server 8.0.1, which has no HEXPIRE/HPERSIST
    /// (nil entries).
    const VALKEY_8: &[u8] = include_bytes!("fixtures/command-info-valkey-8.0.1.resp");

    #[test]
    fn a_redis_74_reply_gives_its_hash_field_expiry_commands() {
        let parsed = ServerTable::parse(&decode(REDIS_74)).unwrap();
        assert!(parsed.skipped().is_empty(), "{:?}", parsed.skipped());
        assert_eq!(parsed.commands(), 10);
        // OBJECT and its five subcommands.
        assert_eq!(parsed.len(), 15);
        assert_eq!(
            parsed.names_missing_from(Table::BUILTIN),
            ["hexpire", "hpersist"]
        );
        let t = parsed.leak();
        let hexpire = t.lookup(&args(&["HEXPIRE"])).unwrap();
        assert_eq!(hexpire.name(), "hexpire");
        assert_eq!(hexpire.arity(), -6);
        assert!(
            hexpire.is_write() && hexpire.replicates() && hexpire.has_flag(CMD_DENYOOM | CMD_FAST)
        );
        assert_eq!(keys(t, &["hexpire", "h", "10", "FIELDS", "1", "f"]), ["h"]);
        assert!(t.lookup(&args(&["hpersist"])).unwrap().is_write());
        // What 7.4.1 says of the old commands equals the built-in table.
        for name in [
            "get",
            "set",
            "xread",
            "eval",
            "sort",
            "lmpop",
            "publish",
            "object|encoding",
        ] {
            let a = args(&name.split('|').collect::<Vec<_>>());
            assert_eq!(t.lookup(&a), Table::BUILTIN.lookup(&a), "{name}");
        }
        assert_eq!(
            t.lookup(&args(&["object", "freq", "k"])).unwrap().name(),
            "object|freq"
        );
        assert_eq!(
            t.lookup(&args(&["OBJECT", "nosuch"])).unwrap().name(),
            "object"
        );
        assert!(t.lookup(&args(&["nosuch"])).is_none());
        assert_eq!(
            keys(t, &["XREAD", "STREAMS", "a", "b", "0", "0"]),
            ["a", "b"]
        );
        assert_eq!(keys(t, &["EVAL", "s", "2", "a", "b", "x"]), ["a", "b"]);
        assert_eq!(keys(t, &["SORT", "k", "STORE", "d"]), ["k", "d"]);
        assert!(t
            .lookup(&args(&["EVAL"]))
            .unwrap()
            .has_flag(CMD_MAY_REPLICATE));
        assert!(!t.lookup(&args(&["PUBLISH"])).unwrap().replicates());
    }

    #[test]
    fn a_valkey_8_reply_skips_what_it_lacks() {
        let parsed = ServerTable::parse(&decode(VALKEY_8)).unwrap();
        assert!(parsed.skipped().is_empty());
        assert_eq!(parsed.commands(), 8);
        assert!(parsed.names_missing_from(Table::BUILTIN).is_empty());
        let t = parsed.clone().leak();
        assert!(t.lookup(&args(&["hexpire"])).is_none());
        assert!(t.lookup(&args(&["set"])).unwrap().is_write());
        assert_eq!(keys(t, &["LMPOP", "2", "a", "b", "LEFT"]), ["a", "b"]);
        // Parsing again gives an equal table: the proxy swaps only on change.
        assert_eq!(ServerTable::parse(&decode(VALKEY_8)).unwrap(), parsed);
    }

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn entry(
        name: &str,
        arity: i64,
        flags: &[&str],
        range: (i64, i64, i64),
        specs: Vec<Frame>,
    ) -> Frame {
        Frame::Array(vec![
            bulk(name),
            Frame::Integer(arity),
            Frame::Array(
                flags
                    .iter()
                    .map(|f| Frame::Simple(Bytes::copy_from_slice(f.as_bytes())))
                    .collect(),
            ),
            Frame::Integer(range.0),
            Frame::Integer(range.1),
            Frame::Integer(range.2),
            Frame::Array(vec![]),
            Frame::Array(vec![]),
            Frame::Array(specs),
            Frame::Array(vec![]),
        ])
    }

    #[test]
    fn module_commands_get_their_legacy_range_or_unknown_keys() {
        let reply = Frame::Array(vec![
            // RedisModule_CreateCommand(..., "write", 1, 2, 1) without specs.
            entry("RBTEST.SETPAIR", 4, &["write", "module"], (1, 2, 1), vec![]),
            // Every argument a key, counted from the end.
            entry(
                "rbtest.delall",
                -2,
                &["write", "module"],
                (1, -1, 1),
                vec![],
            ),
            // A getkeys callback: keys move, nothing says how.
            entry(
                "rbtest.movable",
                -2,
                &["write", "module", "movablekeys"],
                (1, 1, 1),
                vec![],
            ),
            // No keys at all, a flag nobody knows yet.
            entry(
                "rbtest.flush",
                1,
                &["write", "module", "brand_new_flag"],
                (0, 0, 0),
                vec![],
            ),
            Frame::Integer(3),
        ]);
        let parsed = ServerTable::parse(&reply).unwrap();
        assert_eq!(parsed.skipped(), ["?"]);
        let t = parsed.leak();
        assert_eq!(keys(t, &["rbtest.setpair", "a", "b", "v"]), ["a", "b"]);
        assert_eq!(keys(t, &["RBTEST.DELALL", "a", "b", "c"]), ["a", "b", "c"]);
        assert!(keys(t, &["rbtest.movable", "a", "b"]).is_empty());
        let flush = t.lookup(&args(&["rbtest.flush"])).unwrap();
        assert!(flush.is_write() && flush.has_flag(CMD_MODULE) && flush.key_specs().is_empty());
        assert!(keys(t, &["rbtest.flush"]).is_empty());
    }

    #[test]
    fn key_specs_of_unknown_types_read_as_unknown() {
        let odd = Frame::Array(vec![
            bulk("flags"),
            Frame::Array(vec![Frame::Simple(Bytes::from_static(b"RW"))]),
            bulk("begin_search"),
            Frame::Array(vec![
                bulk("type"),
                bulk("somewhere"),
                bulk("spec"),
                Frame::Array(vec![]),
            ]),
            bulk("find_keys"),
            Frame::Array(vec![
                bulk("type"),
                bulk("range"),
                bulk("spec"),
                Frame::Array(vec![
                    bulk("lastkey"),
                    Frame::Integer(0),
                    bulk("keystep"),
                    Frame::Integer(1),
                    bulk("limit"),
                    Frame::Integer(0),
                ]),
            ]),
        ]);
        let reply = Frame::Array(vec![entry("newcmd", -2, &["write"], (1, 1, 1), vec![odd])]);
        let t = ServerTable::parse(&reply).unwrap().leak();
        let s = t.lookup(&args(&["newcmd"])).unwrap();
        assert_eq!(s.key_specs()[0].begin_search, BeginSearch::Unknown);
        assert!(keys(t, &["newcmd", "k"]).is_empty());
    }

    #[test]
    fn not_a_table() {
        assert!(ServerTable::parse(&Frame::Error(Bytes::from_static(b"NOPERM"))).is_err());
        let empty = ServerTable::parse(&Frame::Array(vec![])).unwrap();
        assert!(empty.is_empty());
    }
}

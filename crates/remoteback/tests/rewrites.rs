//! Rewritten writes, end to end: primary and backup redis-server, a tansu
//! broker, `remoteback proxy` and `remoteback replay`.
//!
//! Each test does something whose verbatim replay would leave the backup
//! different from the primary (a relative TTL counted from replay time, a
//! random pop, a generated stream id, an idle time that grew, a script the
//! backup lacks) and checks that the backup ends up equal. The records are
//! in `STRING` format so the tests can also read what was replicated.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::pipeline::{connect, Pipeline, Setup};
use common::RedisServer;
use redis::Value;
use remoteback::compare::{self, Options};

/// How far apart the primary's and the backup's absolute expiry (or
/// delivery) times may be: the proxy stamps them when the reply arrives, a
/// millisecond or so after the primary ran the command.
const TOLERANCE_MS: i64 = 250;
/// How long the replay waits before starting in the delayed tests: every
/// relative time replayed verbatim would be off by at least this.
const REPLAY_DELAY: Duration = Duration::from_secs(3);

/// The pipeline of these tests: `STRING` records, so the topic reads as text.
fn start(replay: bool) -> Pipeline {
    Pipeline::start(Setup {
        message: "STRING",
        replay,
        ..Setup::default()
    })
}

/// What these tests ask of a pipeline beyond the common harness.
trait Checks {
    fn replay_log(&self) -> String;
    fn assert_equal(&self);
    fn records(&self) -> Vec<String>;
}

impl Checks for Pipeline {
    fn replay_log(&self) -> String {
        self.replay.as_ref().map(|r| r.log()).unwrap_or_default()
    }

    /// Every key of database 0 equal on both sides (TTLs within the
    /// tolerance); panics with the differences otherwise.
    fn assert_equal(&self) {
        let url = |p: u16| format!("redis://127.0.0.1:{p}");
        let mut primary = compare::connect(&url(self.primary.port())).expect("primary");
        let mut backup = compare::connect(&url(self.backup.port())).expect("backup");
        let options = Options {
            dbs: vec![0],
            ttl_tolerance_ms: TOLERANCE_MS,
        };
        let diffs = compare::differences(&mut primary, &mut backup, &options).expect("compare");
        let listed: Vec<String> = diffs.iter().map(|d| d.to_string()).collect();
        assert!(
            diffs.is_empty(),
            "backup differs from primary:\n{}\n--- records ---\n{}\n--- replay log ---\n{}",
            listed.join("\n"),
            self.records().join("\n"),
            self.replay_log()
        );
    }

    /// Every command replicated so far, one `STRING` line each.
    fn records(&self) -> Vec<String> {
        self.topic_records()
            .iter()
            .flat_map(|(_, payload)| {
                String::from_utf8_lossy(payload)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn query<T: redis::FromRedisValue>(con: &mut redis::Connection, parts: &[&str]) -> T {
    let mut cmd = redis::cmd(parts[0]);
    for p in &parts[1..] {
        cmd.arg(*p);
    }
    cmd.query(con)
        .unwrap_or_else(|e| panic!("{}: {e}", parts.join(" ")))
}

fn pexpiretime(con: &mut redis::Connection, key: &str) -> i64 {
    query(con, &["PEXPIRETIME", key])
}

/// Asserts that no replicated line starts with one of `names` (as a word).
fn assert_none_of(records: &[String], names: &[&str]) {
    for line in records {
        let first = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        assert!(
            !names.contains(&first.as_str()),
            "{first} was replicated verbatim: {line}\n{}",
            records.join("\n")
        );
    }
}

fn assert_has(records: &[String], line: &str) {
    assert!(
        records.iter().any(|l| l == line),
        "no record line {line:?} in:\n{}",
        records.join("\n")
    );
}

fn text(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Int(i) => i.to_string(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        other => format!("{other:?}"),
    }
}

/// A flat `[name, value, name, value...]` reply as a map.
fn fields(v: &Value) -> BTreeMap<String, String> {
    match v {
        Value::Array(items) => items
            .chunks(2)
            .map(|p| (text(&p[0]), p.get(1).map(text).unwrap_or_default()))
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), text(v))).collect(),
        other => panic!("not a field list: {other:?}"),
    }
}

fn list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        Value::Nil => Vec::new(),
        other => panic!("not an array: {other:?}"),
    }
}

#[test]
fn relative_ttls_keep_their_absolute_time_through_a_delayed_replay() {
    let mut p = start(false);
    let mut c = p.client();
    let ttl_keys = [
        "set-ex",
        "set-px-nx",
        "setex",
        "psetex",
        "expire",
        "pexpire",
        "expireat",
        "getex-ex",
        "getex-px",
        "restored",
        "float",
    ];
    let _: () = query(&mut c, &["SET", "set-ex", "v", "EX", "100"]);
    let _: () = query(&mut c, &["SET", "set-px-nx", "v", "PX", "200000", "NX"]);
    // Not set (the key exists): nothing to replicate.
    let _: Option<String> = query(&mut c, &["SET", "set-px-nx", "other", "NX", "EX", "5"]);
    let _: () = query(&mut c, &["SETEX", "setex", "300", "v"]);
    let _: () = query(&mut c, &["PSETEX", "psetex", "400000", "v"]);
    for k in [
        "expire",
        "pexpire",
        "expireat",
        "getex-ex",
        "getex-px",
        "persisted",
        "plain",
    ] {
        let _: () = query(&mut c, &["SET", k, "v"]);
    }
    assert_eq!(query::<i64>(&mut c, &["EXPIRE", "expire", "500"]), 1);
    // NX on a key with a TTL: refused (0), nothing replicated.
    assert_eq!(query::<i64>(&mut c, &["EXPIRE", "expire", "5", "NX"]), 0);
    assert_eq!(query::<i64>(&mut c, &["EXPIRE", "missing", "5"]), 0);
    assert_eq!(query::<i64>(&mut c, &["PEXPIRE", "pexpire", "600000"]), 1);
    let at = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 700)
        .to_string();
    assert_eq!(query::<i64>(&mut c, &["EXPIREAT", "expireat", &at]), 1);
    let _: String = query(&mut c, &["GETEX", "getex-ex", "EX", "800"]);
    let _: String = query(&mut c, &["GETEX", "getex-px", "PX", "900000"]);
    let _: () = query(&mut c, &["SET", "persisted", "v", "EX", "50"]);
    let _: String = query(&mut c, &["GETEX", "persisted", "PERSIST"]);
    let _: String = query(&mut c, &["GETEX", "plain"]);
    let _: Option<String> = query(&mut c, &["GETEX", "missing", "EX", "5"]);
    // RESTORE with a relative TTL.
    let dump: Vec<u8> = redis::cmd("DUMP").arg("plain").query(&mut c).expect("DUMP");
    let _: () = redis::cmd("RESTORE")
        .arg("restored")
        .arg(1_000_000)
        .arg(dump)
        .query(&mut c)
        .expect("RESTORE");
    // INCRBYFLOAT keeps the TTL; GETSET drops it.
    let _: () = query(&mut c, &["SET", "float", "1.5", "EX", "1100"]);
    let _: String = query(&mut c, &["INCRBYFLOAT", "float", "0.25"]);
    let _: () = query(&mut c, &["SET", "getset", "old", "EX", "1200"]);
    let _: String = query(&mut c, &["GETSET", "getset", "new"]);

    std::thread::sleep(REPLAY_DELAY);
    p.start_replay();
    p.wait_applied();
    p.assert_equal();
    let (mut primary, mut backup) = (p.on_primary(), p.on_backup());
    for k in ttl_keys {
        let (a, b) = (pexpiretime(&mut primary, k), pexpiretime(&mut backup, k));
        assert!(a > 0, "{k} has a TTL on the primary");
        assert!(
            (a - b).abs() <= TOLERANCE_MS,
            "{k}: PEXPIRETIME primary {a}, backup {b}"
        );
    }
    for k in ["persisted", "plain", "getset"] {
        assert_eq!(pexpiretime(&mut backup, k), -1, "{k} has no TTL");
    }
    let records = p.records();
    assert_none_of(
        &records,
        &[
            "SETEX",
            "PSETEX",
            "EXPIRE",
            "PEXPIRE",
            "EXPIREAT",
            "GETEX",
            "GETSET",
            "INCRBYFLOAT",
        ],
    );
    assert!(records
        .iter()
        .all(|l| !l.contains(" EX ") && !l.contains(" NX")));
    assert_has(&records, "PERSIST persisted");
    assert!(records
        .iter()
        .any(|l| l.starts_with("SET float 1.75 KEEPTTL")));
    assert!(records
        .iter()
        .any(|l| l.starts_with("RESTORE restored ") && l.ends_with(" ABSTTL")));
    assert!(!records.iter().any(|l| l.contains("missing")));
}

#[test]
fn spop_replicates_the_members_it_popped() {
    let p = start(true);
    let mut c = p.client();
    let members: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let _: () = redis::cmd("SADD")
        .arg("s")
        .arg(&members)
        .query(&mut c)
        .expect("SADD");
    for _ in 0..5 {
        let _: Option<String> = query(&mut c, &["SPOP", "s"]);
        let _: Vec<String> = query(&mut c, &["SPOP", "s", "7"]);
    }
    let _: Value = redis::pipe()
        .atomic()
        .cmd("SPOP")
        .arg("s")
        .cmd("SPOP")
        .arg("s")
        .arg(3)
        .cmd("SPOP")
        .arg("nothing")
        .query(&mut c)
        .expect("MULTI SPOP");
    // Popping everything deletes the key.
    let _: () = query(&mut c, &["SADD", "small", "a", "b"]);
    let _: Vec<String> = query(&mut c, &["SPOP", "small", "10"]);
    p.wait_applied();
    p.assert_equal();
    let left: i64 = query(&mut p.on_backup(), &["SCARD", "s"]);
    assert_eq!(left, 200 - 5 * 8 - 4);
    let records = p.records();
    assert_none_of(&records, &["SPOP"]);
    assert!(records.iter().any(|l| l.starts_with("SREM s ")));
}

#[test]
fn float_increments_replicate_their_result() {
    let p = start(true);
    let mut c = p.client();
    for x in ["0.1", "0.2", "1e3", "-3.3333333333333333", "10.5"] {
        let _: String = query(&mut c, &["INCRBYFLOAT", "f", x]);
        let _: String = query(&mut c, &["HINCRBYFLOAT", "h", "field", x]);
    }
    p.wait_applied();
    p.assert_equal();
    let want: String = query(&mut p.on_primary(), &["GET", "f"]);
    let records = p.records();
    assert_none_of(&records, &["INCRBYFLOAT", "HINCRBYFLOAT"]);
    assert_has(&records, &format!("SET f {want} KEEPTTL"));
    let hwant: String = query(&mut p.on_primary(), &["HGET", "h", "field"]);
    assert_has(&records, &format!("HSET h field {hwant}"));
}

#[test]
fn blocking_pops_replay_as_the_pop_that_served_them() {
    let p = start(true);
    let mut c = p.client();
    let _: i64 = query(&mut c, &["RPUSH", "queue", "first", "second"]);
    let served: Option<(String, String)> = query(&mut c, &["BLPOP", "empty-a", "queue", "10"]);
    assert_eq!(served, Some(("queue".into(), "first".into())));
    // Timed out: nothing happened, nothing is replicated.
    let none: Option<(String, String)> = query(&mut c, &["BLPOP", "timeout-list", "0.1"]);
    assert_eq!(none, None);
    // Multi-pops, moves and sorted sets.
    let _: i64 = query(&mut c, &["RPUSH", "l", "1", "2", "3", "4", "5", "6"]);
    let _: Value = query(
        &mut c,
        &["BLMPOP", "1", "2", "nolist", "l", "LEFT", "COUNT", "3"],
    );
    let _: Value = query(&mut c, &["LMPOP", "1", "l", "RIGHT"]);
    let _: String = query(&mut c, &["BLMOVE", "l", "moved", "LEFT", "RIGHT", "1"]);
    let _: i64 = query(&mut c, &["RPUSH", "l", "7"]);
    let _: String = query(&mut c, &["BRPOPLPUSH", "l", "moved", "1"]);
    let _: Option<String> = query(&mut c, &["BRPOPLPUSH", "nolist", "moved", "0.1"]);
    let _: i64 = query(
        &mut c,
        &[
            "ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e",
        ],
    );
    let _: Value = query(&mut c, &["BZPOPMIN", "nozset", "z", "1"]);
    let _: Value = query(&mut c, &["BZPOPMAX", "z", "1"]);
    let _: Value = query(&mut c, &["BZMPOP", "1", "1", "z", "MIN", "COUNT", "2"]);
    let _: Value = query(&mut c, &["ZMPOP", "1", "z", "MAX"]);
    let _: Value = query(&mut c, &["BZPOPMIN", "nozset", "0.1"]);
    // Inside MULTI a blocking pop does not block: nil, nothing replicated.
    let _: Value = redis::pipe()
        .atomic()
        .cmd("BLPOP")
        .arg("nolist")
        .arg(0)
        .cmd("BRPOP")
        .arg("queue")
        .arg(0)
        .query(&mut c)
        .expect("MULTI BLPOP");
    p.wait_applied();
    p.assert_equal();
    let records = p.records();
    assert_none_of(
        &records,
        &[
            "BLPOP",
            "BRPOP",
            "BLMPOP",
            "LMPOP",
            "BLMOVE",
            "BRPOPLPUSH",
            "BZPOPMIN",
            "BZPOPMAX",
            "BZMPOP",
            "ZMPOP",
        ],
    );
    for line in [
        "LPOP queue",
        "RPOP queue",
        "LPOP l 3",
        "RPOP l 1",
        "LMOVE l moved LEFT RIGHT",
        "RPOPLPUSH l moved",
        "ZPOPMIN z",
        "ZPOPMAX z",
        "ZPOPMIN z 2",
        "ZPOPMAX z 1",
    ] {
        assert_has(&records, line);
    }
    assert!(!records
        .iter()
        .any(|l| l.contains("timeout-list") || l.contains("nolist") || l.contains("nozset")));
}

/// A pop served by another client's later push replays as `LPOP queue`,
/// after the push: the blocked command holds no key lock (it would
/// deadlock the push), so its capture waits for the push's release.
#[test]
fn a_pop_served_by_another_clients_push_replays_after_it() {
    let p = start(true);
    let port = p.proxy_port;
    let waiter = std::thread::spawn(move || {
        let mut w = connect(port);
        query::<Option<(String, String)>>(&mut w, &["BLPOP", "empty-a", "queue", "10"])
    });
    std::thread::sleep(Duration::from_millis(300));
    let _: i64 = query(&mut p.client(), &["RPUSH", "queue", "first", "second"]);
    let served = waiter.join().expect("waiter");
    assert_eq!(served, Some(("queue".into(), "first".into())));
    p.wait_applied();
    let records = p.records();
    assert_has(&records, "LPOP queue");
    p.assert_equal();
}

#[test]
fn xadd_replays_with_the_ids_the_primary_generated() {
    let mut p = start(false);
    let mut c = p.client();
    for i in 0..20 {
        let _: String = query(&mut c, &["XADD", "s", "*", "n", &i.to_string()]);
    }
    let _: String = query(&mut c, &["XADD", "s", "99999999999999-*", "n", "seq"]);
    let none: Option<String> = query(&mut c, &["XADD", "nostream", "NOMKSTREAM", "*", "f", "v"]);
    assert_eq!(none, None);
    // Approximate trimming: replicated as is; same configuration, same
    // history, same node layout, so the same entries are trimmed.
    for i in 0..1000 {
        let _: String = query(
            &mut c,
            &[
                "XADD",
                "trimmed",
                "MAXLEN",
                "~",
                "150",
                "*",
                "n",
                &i.to_string(),
            ],
        );
    }
    let _: i64 = query(&mut c, &["XTRIM", "trimmed", "MINID", "~", "0-1"]);
    std::thread::sleep(REPLAY_DELAY);
    p.start_replay();
    p.wait_applied();
    p.assert_equal();
    let (a, b): (i64, i64) = (
        query(&mut p.on_primary(), &["XLEN", "trimmed"]),
        query(&mut p.on_backup(), &["XLEN", "trimmed"]),
    );
    assert_eq!(a, b);
    assert!((150..1000).contains(&a), "approximate trim kept {a}");
    let records = p.records();
    assert!(!records
        .iter()
        .any(|l| l.contains(" * ") || l.contains("-* ")));
    assert!(!records.iter().any(|l| l.contains("nostream")));
}

/// The state of consumer group `g` of stream `s`, idle times apart, and the
/// idle times (by consumer and by pending id).
fn group_state(con: &mut redis::Connection) -> (String, BTreeMap<String, i64>) {
    let mut state = Vec::new();
    let mut idle = BTreeMap::new();
    for g in list(query(con, &["XINFO", "GROUPS", "s"])) {
        state.push(format!("group {:?}", fields(&g)));
    }
    for consumer in list(query(con, &["XINFO", "CONSUMERS", "s", "g"])) {
        let mut f = fields(&consumer);
        let name = f.get("name").cloned().unwrap_or_default();
        idle.insert(
            format!("consumer {name}"),
            f.remove("idle").and_then(|v| v.parse().ok()).unwrap_or(-1),
        );
        state.push(format!("consumer {f:?}"));
    }
    for entry in list(query(con, &["XPENDING", "s", "g", "-", "+", "100"])) {
        let e = list(entry);
        let id = text(&e[0]);
        idle.insert(format!("pending {id}"), text(&e[2]).parse().unwrap_or(-1));
        state.push(format!(
            "pending {id} owner {} deliveries {}",
            text(&e[1]),
            text(&e[3])
        ));
    }
    (state.join("\n"), idle)
}

#[test]
fn consumer_groups_match_after_reads_claims_and_acks() {
    let mut p = start(false);
    let mut c = p.client();
    let _: () = query(&mut c, &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]);
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(query::<String>(
            &mut c,
            &["XADD", "s", "*", "n", &i.to_string()],
        ));
    }
    let read = |c: &mut redis::Connection, args: &[&str]| {
        let mut all = vec!["XREADGROUP", "GROUP", "g"];
        all.extend_from_slice(args);
        let _: Value = query(c, &all);
    };
    read(
        &mut c,
        &["alice", "COUNT", "4", "BLOCK", "100", "STREAMS", "s", ">"],
    );
    read(&mut c, &["bob", "COUNT", "2", "NOACK", "STREAMS", "s", ">"]);
    read(&mut c, &["carol", "COUNT", "3", "STREAMS", "s", ">"]);
    // History: carol reads her pending entries again (delivery count 2).
    read(&mut c, &["carol", "STREAMS", "s", "0"]);
    // A history read that finds nothing still creates the consumer.
    read(&mut c, &["dave", "STREAMS", "s", "0"]);
    let _: i64 = query(&mut c, &["XACK", "s", "g", &ids[0]]);
    // Not idle for 2 s yet: claims nothing.
    let claimed: Vec<Value> = query(
        &mut c,
        &["XCLAIM", "s", "g", "erin", "2000", &ids[1], &ids[2]],
    );
    assert!(claimed.is_empty());
    let claimed: Vec<Value> = query(
        &mut c,
        &["XCLAIM", "s", "g", "erin", "0", &ids[1], "JUSTID"],
    );
    assert_eq!(claimed.len(), 1);
    // An entry deleted while pending: XCLAIM drops it from the PEL.
    let _: i64 = query(&mut c, &["XDEL", "s", &ids[3]]);
    let _: Vec<Value> = query(&mut c, &["XCLAIM", "s", "g", "erin", "2000", &ids[3]]);
    let _: Value = query(
        &mut c,
        &["XAUTOCLAIM", "s", "g", "frank", "0", "0", "COUNT", "1"],
    );
    // Idle for 2 s now: claimed on the primary. Replayed verbatim, the
    // backup's entries would have been delivered just before: not claimed.
    std::thread::sleep(Duration::from_millis(2200));
    let claimed: Vec<Value> = query(&mut c, &["XCLAIM", "s", "g", "heidi", "2000", &ids[2]]);
    assert_eq!(claimed.len(), 1);
    let auto: Vec<Value> = query(
        &mut c,
        &["XAUTOCLAIM", "s", "g", "frank", "2000", "0", "COUNT", "2"],
    );
    assert_eq!(list(auto[1].clone()).len(), 2);
    read(&mut c, &["alice", "COUNT", "100", "STREAMS", "s", ">"]);
    // Nothing new: the read times out, no consumer is created, nothing is
    // replicated.
    read(&mut c, &["ghost", "BLOCK", "50", "STREAMS", "s", ">"]);
    std::thread::sleep(REPLAY_DELAY);
    p.start_replay();
    p.wait_applied();
    p.assert_equal();
    let (primary, primary_idle) = group_state(&mut p.on_primary());
    let (backup, backup_idle) = group_state(&mut p.on_backup());
    assert_eq!(
        primary,
        backup,
        "consumer group differs\n--- records ---\n{}",
        p.records().join("\n")
    );
    assert!(
        primary.contains("dave") && !primary.contains("ghost"),
        "{primary}"
    );
    assert_eq!(primary_idle.len(), backup_idle.len());
    for (what, a) in &primary_idle {
        if what.starts_with("pending") {
            let b = backup_idle[what];
            assert!(
                (a - b).abs() <= TOLERANCE_MS,
                "{what}: idle {a} ms on the primary, {b} ms on the backup"
            );
        }
    }
    let records = p.records();
    assert!(!records
        .iter()
        .any(|l| l.starts_with("XAUTOCLAIM") || l.contains(" BLOCK ")));
}

#[test]
fn evalsha_replays_as_eval_of_the_body_the_proxy_saw() {
    let p = start(true);
    let body = "redis.call('SET', KEYS[1], ARGV[1]) return 1";
    let mut loader = p.client();
    let sha: String = query(&mut loader, &["SCRIPT", "LOAD", body]);
    // SCRIPT LOAD itself replicates: the backup can serve EVALSHA after a
    // failover.
    let mut backup = p.on_backup();
    common::wait_until(Duration::from_secs(30), "the script on the backup", || {
        query::<Vec<i64>>(&mut backup, &["SCRIPT", "EXISTS", &sha]) == [1]
    });
    // The backup loses its scripts (a restart): EVALSHA still replays.
    let _: () = query(&mut backup, &["SCRIPT", "FLUSH"]);
    let mut runner = p.client();
    let _: i64 = query(&mut runner, &["EVALSHA", &sha, "1", "from-load", "v1"]);
    // EVAL teaches the proxy too.
    let other = "redis.call('SET', KEYS[1], ARGV[1]) return 2";
    let _: i64 = query(&mut loader, &["EVAL", other, "1", "from-eval", "v2"]);
    let other_sha: String = query(&mut p.on_primary(), &["SCRIPT", "LOAD", other]);
    let _: () = query(&mut backup, &["SCRIPT", "FLUSH"]);
    let _: i64 = query(
        &mut runner,
        &["EVALSHA", &other_sha, "1", "from-eval", "v3"],
    );
    p.wait_applied();
    p.assert_equal();
    assert_eq!(query::<String>(&mut backup, &["GET", "from-load"]), "v1");
    assert_eq!(query::<String>(&mut backup, &["GET", "from-eval"]), "v3");
    let records = p.records();
    assert_none_of(&records, &["EVALSHA"]);
    assert!(!p.replay_log().contains("NOSCRIPT"), "{}", p.replay_log());
    assert!(!p.proxy.log().contains("never saw"), "{}", p.proxy.log());
}

#[test]
fn evalsha_of_a_script_the_proxy_never_saw_is_logged_and_replicated_as_is() {
    let p = start(true);
    // Loaded on the primary directly, before (or around) the proxy.
    let body = "redis.call('SET', KEYS[1], ARGV[1]) return 1";
    let sha: String = query(&mut p.on_primary(), &["SCRIPT", "LOAD", body]);
    let _: i64 = query(&mut p.client(), &["EVALSHA", &sha, "1", "k", "v"]);
    p.wait_applied();
    let log = p.proxy.log();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains(&format!("EVALSHA {sha}"))
            && l.contains("1 unknown EVALSHA so far")),
        "the proxy logs the unknown script:\n{log}"
    );
    assert!(p.records().contains(&format!("EVALSHA {sha} 1 k v")));
    // The backup refuses it, and the replay says so.
    let replay = p.replay_log();
    assert!(replay.contains("NOSCRIPT"), "{replay}");
    let exists: i64 = query(&mut p.on_backup(), &["EXISTS", "k"]);
    assert_eq!(exists, 0);
}

#[test]
fn keys_that_left_the_primary_leave_the_backup() {
    let p = start(true);
    let destination = RedisServer::start();
    let mut c = p.client();
    for k in ["gone", "kept", "migrated", "copied"] {
        let _: () = query(&mut c, &["SET", k, "v"]);
    }
    let _: String = query(&mut c, &["GETDEL", "gone"]);
    let _: Option<String> = query(&mut c, &["GETDEL", "never"]);
    let port = destination.port().to_string();
    // The backup holds "migrated" too: replayed verbatim, MIGRATE would send
    // the backup's copy to the destination (BUSYKEY there) and keep it.
    let _: () = query(
        &mut c,
        &["MIGRATE", "127.0.0.1", &port, "migrated", "0", "5000"],
    );
    let _: () = query(
        &mut c,
        &["MIGRATE", "127.0.0.1", &port, "copied", "0", "5000", "COPY"],
    );
    let nokey: String = query(
        &mut c,
        &["MIGRATE", "127.0.0.1", &port, "absent", "0", "5000"],
    );
    assert_eq!(nokey, "NOKEY");
    // SET ... GET: replicated as the SET (NX with an old value did not set).
    let _: Option<String> = query(&mut c, &["SET", "kept", "new", "GET"]);
    let _: Option<String> = query(&mut c, &["SET", "kept", "nope", "NX", "GET"]);
    let _: Option<String> = query(&mut c, &["SET", "fresh", "yes", "NX", "GET"]);
    p.wait_applied();
    p.assert_equal();
    let records = p.records();
    assert_none_of(&records, &["GETDEL", "MIGRATE"]);
    assert_has(&records, "DEL gone");
    assert_has(&records, "DEL migrated");
    assert_has(&records, "SET kept new");
    assert_has(&records, "SET fresh yes");
    assert!(!records
        .iter()
        .any(|l| l.contains("never") || l.contains("nope")));
    let moved: String = query(&mut connect(destination.port()), &["GET", "migrated"]);
    assert_eq!(moved, "v");
}

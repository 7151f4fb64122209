//! `remoteback verify` against real servers: two redis-servers filled the
//! same way, then differences of every kind planted in both directions,
//! each one expected in the report with its kind, key and database, and
//! nothing else.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::{free_port, remoteback_bin, temp_dir, RedisServer};
use redis::Connection;

/// Fields of the hash large enough to be compared in pages.
const BIG_HASH_FIELDS: usize = 200_000;
/// Bytes of the string large enough to be compared in slices.
const BIG_STRING_BYTES: usize = 5 << 20;

fn connect(url: &str) -> Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// Runs a command, panicking on an error reply.
fn run(con: &mut Connection, args: &[&[u8]]) -> redis::Value {
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(*a);
    }
    cmd.query(con)
        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(args[0])))
}

fn cmd(con: &mut Connection, line: &str) -> redis::Value {
    let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
    run(con, &args)
}

/// The same keys of every type on a server: dbs 0 and 3, with and without
/// TTLs, binary keys, and (`big`) a hash and a string large enough for the
/// chunked comparison.
fn fill(con: &mut Connection, big: bool) {
    cmd(con, "SELECT 0");
    for line in [
        "SET s:plain hello",
        "SET s:int 12345",
        "SET s:ttl temporary EX 1000",
        "SET s:gone soon",
        "SET type:k a-string",
        "RPUSH l:small a b c d",
        "RPUSH l:ttl x y",
        "EXPIRE l:ttl 1000",
        "HSET h:small f1 v1 f2 v2",
        "HSET h:order a 1 b 2 c 3",
        "SADD set:small red green blue",
        "SADD set:int 1 2 3 42",
        "ZADD z:small 1 one 2.5 two +inf top",
        "XADD x:s 1-1 a 1",
        "XADD x:s 2-1 b 2",
        "XADD x:g 1-1 a 1",
        "XADD x:g 2-1 b 2",
        "XGROUP CREATE x:g g1 0",
        "XREADGROUP GROUP g1 c1 COUNT 1 STREAMS x:g >",
    ] {
        cmd(con, line);
    }
    run(con, &[b"SET", b"bin:\xff\x00\r\n", b"\x00\x01\xfe"]);
    run(con, &[b"SET", b"gone:\xff", b"binary key"]);
    run(con, &[b"SET", b"moving", b"v1"]);
    if big {
        fill_big(con);
    }
    cmd(con, "SELECT 3");
    for line in [
        "SET d3:plain three",
        "SET d3:gone three",
        "HSET d3:hash a 1",
        "SET d3:ttl t PX 900000",
    ] {
        cmd(con, line);
    }
    cmd(con, "SELECT 0");
}

fn fill_big(con: &mut Connection) {
    let big = vec![b'x'; BIG_STRING_BYTES];
    run(con, &[b"SET", b"big:string", &big]);
    let mut pipe = redis::pipe();
    for chunk in 0..BIG_HASH_FIELDS / 1000 {
        let mut hset = redis::cmd("HSET");
        hset.arg("h:big");
        for i in chunk * 1000..(chunk + 1) * 1000 {
            hset.arg(format!("f{i}")).arg(format!("value {i}"));
        }
        pipe.add_command(hset).ignore();
    }
    let () = pipe.query(con).expect("fill h:big");
}

/// Two servers filled the same way, without the large keys.
fn pair() -> (RedisServer, RedisServer) {
    pair_with(false)
}

/// Two servers filled the same way, with the large keys if `big`.
fn pair_with(big: bool) -> (RedisServer, RedisServer) {
    let (source, target) = (RedisServer::start(), RedisServer::start());
    let fillers = [source.url(), target.url()]
        .map(|url| std::thread::spawn(move || fill(&mut connect(&url), big)));
    for f in fillers {
        f.join().expect("fill");
    }
    (source, target)
}

/// One difference of a report: db, key (hex), kind.
type Entry = (u64, String, String);

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    report: Option<serde_json::Value>,
}

impl Outcome {
    fn entries(&self) -> BTreeSet<Entry> {
        let report = self.report.as_ref().expect("a report");
        report["differences"]
            .as_array()
            .expect("differences")
            .iter()
            .map(|d| {
                (
                    d["db"].as_u64().expect("db"),
                    d["key_hex"].as_str().expect("key_hex").to_string(),
                    d["kind"].as_str().expect("kind").to_string(),
                )
            })
            .collect()
    }
}

fn entry(db: u64, key: &[u8], kind: &str) -> Entry {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    (db, hex, kind.to_string())
}

fn verify_args(source: &str, target: &str, extra: &[&str]) -> (Command, PathBuf) {
    let report = temp_dir("verify").join("report.json");
    let mut command = Command::new(remoteback_bin());
    command
        .args(["verify", "--source", source, "--target", target])
        .arg("--report")
        .arg(&report)
        .args(extra);
    (command, report)
}

fn verify(source: &str, target: &str, extra: &[&str]) -> Outcome {
    let (mut command, report) = verify_args(source, target, extra);
    let out = command.output().expect("run remoteback verify");
    let outcome = Outcome {
        code: out.status.code().expect("an exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        report: std::fs::read_to_string(&report)
            .ok()
            .map(|text| serde_json::from_str(&text).expect("the report is JSON")),
    };
    if let Some(dir) = report.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    outcome
}

/// Quick rounds: the tests' differences are not in flight.
const QUICK: &[&str] = &["--rounds", "2", "--interval", "10ms"];

#[test]
fn identical_servers_verify_clean() {
    let (source, target) = pair_with(true);
    // The replay's own state on the target is never a difference.
    let mut t = connect(&target.url());
    let state = format!("{}offsets", remoteback_replay::KEY_PREFIX);
    run(&mut t, &[b"HSET", state.as_bytes(), b"topic/0", b"17"]);
    // Equal values in another order (another DUMP payload): still equal.
    cmd(&mut t, "DEL h:order");
    cmd(&mut t, "HSET h:order c 3 a 1 b 2");
    let out = verify(&source.url(), &target.url(), QUICK);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.entries().is_empty());
    let report = out.report.expect("report");
    assert_eq!(report["dbs"], serde_json::json!([0, 3]));
    assert_eq!(report["keys_compared"], 23, "{report}");
    assert!(out.stdout.contains("0 differences"), "{}", out.stdout);
}

#[test]
fn every_kind_of_difference_is_found_in_both_directions() {
    let (source, target) = pair_with(true);
    let mut t = connect(&target.url());
    let mut s = connect(&source.url());
    // missing
    cmd(&mut t, "DEL s:gone");
    run(&mut t, &[b"DEL", b"gone:\xff"]);
    // extra
    cmd(&mut t, "SET extra:only 1");
    // type
    cmd(&mut t, "DEL type:k");
    cmd(&mut t, "RPUSH type:k a-string");
    // value, each type
    cmd(&mut t, "SET s:int 54321");
    cmd(&mut t, "SETRANGE big:string 3000000 y");
    cmd(&mut t, "LSET l:small 1 B");
    cmd(&mut t, "HSET h:big f123456 changed");
    cmd(&mut t, "SREM set:small green");
    cmd(&mut t, "SADD set:small GREEN");
    cmd(&mut t, "ZADD z:small 3 two");
    cmd(&mut t, "XADD x:s 3-1 c 3");
    cmd(&mut t, "XGROUP SETID x:g g1 2-1");
    // value, on the source side (the target lags behind)
    cmd(&mut s, "HSET h:small f3 v3");
    // ttl: another expiry, and an expiry on one side only
    cmd(&mut t, "EXPIRE s:ttl 500");
    cmd(&mut t, "PERSIST l:ttl");
    cmd(&mut s, "EXPIRE s:plain 1000");
    // db 3, both directions
    cmd(&mut t, "SELECT 3");
    cmd(&mut t, "DEL d3:gone");
    run(&mut t, &[b"SET", b"extra:\xfe\x00", b"x"]);
    cmd(&mut t, "HSET d3:hash a 2");
    cmd(&mut t, "PEXPIRE d3:ttl 100000");

    let out = verify(&source.url(), &target.url(), QUICK);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let expected = BTreeSet::from([
        entry(0, b"s:gone", "missing"),
        entry(0, b"gone:\xff", "missing"),
        entry(0, b"extra:only", "extra"),
        entry(0, b"type:k", "type"),
        entry(0, b"s:int", "value"),
        entry(0, b"big:string", "value"),
        entry(0, b"l:small", "value"),
        entry(0, b"h:big", "value"),
        entry(0, b"h:small", "value"),
        entry(0, b"set:small", "value"),
        entry(0, b"z:small", "value"),
        entry(0, b"x:s", "value"),
        entry(0, b"x:g", "value"),
        entry(0, b"s:ttl", "ttl"),
        entry(0, b"l:ttl", "ttl"),
        entry(0, b"s:plain", "ttl"),
        entry(3, b"d3:gone", "missing"),
        entry(3, b"extra:\xfe\x00", "extra"),
        entry(3, b"d3:hash", "value"),
        entry(3, b"d3:ttl", "ttl"),
    ]);
    assert_eq!(out.entries(), expected, "{}", out.stdout);

    let report = out.report.expect("report");
    let by_kind = &report["differences_by_kind"];
    assert_eq!(
        (
            &by_kind["missing"],
            &by_kind["extra"],
            &by_kind["type"],
            &by_kind["value"],
            &by_kind["ttl"]
        ),
        (
            &serde_json::json!(3),
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(10),
            &serde_json::json!(4)
        )
    );
    let find = |hex: &str| {
        report["differences"]
            .as_array()
            .expect("differences")
            .iter()
            .find(|d| d["key_hex"] == hex)
            .cloned()
            .unwrap_or_else(|| panic!("no difference for {hex}"))
    };
    // Binary keys are readable and exact.
    let gone = find("676f6e653aff");
    assert_eq!(gone["key"], "gone:\\xff");
    assert_eq!(gone["source"], "string, no ttl");
    assert_eq!(gone["target"], "none");
    // The descriptions say where the values part.
    let hash = find(&entry(0, b"h:big", "").1);
    assert!(
        hash["target"]
            .as_str()
            .unwrap()
            .contains("\"f123456\" = \"changed\""),
        "{hash}"
    );
    let group = find(&entry(0, b"x:g", "").1);
    assert!(
        group["source"].as_str().unwrap().contains("group \"g1\""),
        "{group}"
    );
    let big = find(&entry(0, b"big:string", "").1);
    assert!(
        big["source"]
            .as_str()
            .unwrap()
            .contains("from byte 3000000"),
        "{big}"
    );
    // Every difference is a line of the summary.
    assert!(out.stdout.contains("20 differences"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("db 0 key \"type:k\": type: source string, no ttl; target list, no ttl"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_key_rewritten_while_verify_runs_is_not_reported() {
    let (source, target) = pair();
    let mut s = connect(&source.url());
    let mut t = connect(&target.url());
    // The target lags behind: the first round sees a difference.
    cmd(&mut t, "SET moving v0");
    let (mut command, report_file) = verify_args(
        &source.url(),
        &target.url(),
        &["--rounds", "3", "--interval", "1s"],
    );
    let mut child = Killed(
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let stderr = child.0.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // Between the first round and the second: the source is written
    // again, and the write reaches the target.
    loop {
        let line = lines
            .next()
            .expect("verify reached round 2")
            .expect("stderr");
        if line.contains("round 2 of 3") {
            assert!(line.contains("1 differing key"), "{line}");
            break;
        }
    }
    cmd(&mut s, "SET moving v2");
    cmd(&mut t, "SET moving v2");
    let status = child.0.wait().expect("wait for verify");
    let text = std::fs::read_to_string(&report_file).expect("report");
    assert_eq!(status.code(), Some(0), "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(report["differences"], serde_json::json!([]));
    assert_eq!(report["rounds"], 2, "no third round once nothing differs");
    if let Some(dir) = report_file.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Kills the child if a test fails before it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn verify_that_cannot_run_exits_2() {
    let server = RedisServer::start();
    let nobody = format!("redis://127.0.0.1:{}", free_port());
    let out = verify(&server.url(), &nobody, &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("target: cannot connect"),
        "{}",
        out.stderr
    );
    assert!(out.report.is_none());

    // A rediss:// URL is taken; nothing listens there.
    let out = verify(
        &format!("rediss://127.0.0.1:{}", free_port()),
        &server.url(),
        &[],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("source: cannot connect"),
        "{}",
        out.stderr
    );

    let out = verify("not a url", &server.url(), &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--source"), "{}", out.stderr);

    // An error reply: a database the server does not have.
    let out = verify(&server.url(), &server.url(), &["--db", "99"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("SELECT 99"), "{}", out.stderr);
}

#[test]
fn acl_user_password_and_database_come_from_the_url() {
    let (source, target) = pair();
    let mut t = connect(&target.url());
    cmd(&mut t, "ACL SETUSER verifier on >s3cret ~* &* +@all");
    cmd(&mut t, "SELECT 3");
    cmd(&mut t, "DEL d3:plain");
    cmd(&mut t, "SELECT 0");
    cmd(&mut t, "DEL s:plain");
    let with_user = format!("redis://verifier:s3cret@127.0.0.1:{}/3", target.port());
    // The URL's database alone is compared: db 0's difference is not seen.
    let out = verify(&source.url(), &with_user, QUICK);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        out.entries(),
        BTreeSet::from([entry(3, b"d3:plain", "missing")])
    );
    // So does --db, repeated.
    let out = verify(
        &source.url(),
        &with_user,
        &["--db", "0", "--db", "3", "--rounds", "1"],
    );
    assert_eq!(
        out.entries(),
        BTreeSet::from([
            entry(3, b"d3:plain", "missing"),
            entry(0, b"s:plain", "missing")
        ])
    );
    let wrong = format!("redis://verifier:wrong@127.0.0.1:{}/3", target.port());
    let out = verify(&source.url(), &wrong, &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        !out.stderr.contains("wrong"),
        "the password stays out: {}",
        out.stderr
    );
}

#[test]
fn match_and_sample_choose_the_same_keys_on_both_sides() {
    let (source, target) = pair();
    let mut t = connect(&target.url());
    let mut s = connect(&source.url());
    let mut planted = BTreeSet::new();
    for i in 0..200 {
        // Half missing on the target, half extra on it.
        let key = format!("p:{i}");
        if i % 2 == 0 {
            cmd(&mut s, &format!("SET {key} v"));
            planted.insert(entry(0, key.as_bytes(), "missing"));
        } else {
            cmd(&mut t, &format!("SET {key} v"));
            planted.insert(entry(0, key.as_bytes(), "extra"));
        }
    }
    cmd(&mut t, "DEL s:plain");

    let out = verify(
        &source.url(),
        &target.url(),
        &["--match", "p:*", "--rounds", "1"],
    );
    assert_eq!(out.code, 1);
    assert_eq!(out.entries(), planted, "s:plain does not match");

    let sample = remoteback::verify::Sample::new(0.3).expect("rate");
    let chosen: BTreeSet<Entry> = (0..200)
        .map(|i| format!("p:{i}"))
        .filter(|k| sample.chooses(k.as_bytes()))
        .map(|k| {
            planted
                .iter()
                .find(|e| e.1 == entry(0, k.as_bytes(), "").1)
                .cloned()
                .expect("planted")
        })
        .collect();
    assert!(chosen.len() > 20 && chosen.len() < 120, "{}", chosen.len());
    let args = [
        "--match",
        "p:*",
        "--sample",
        "0.3",
        "--rounds",
        "2",
        "--interval",
        "10ms",
    ];
    let first = verify(&source.url(), &target.url(), &args);
    assert_eq!(first.entries(), chosen);
    let again = verify(&source.url(), &target.url(), &args);
    assert_eq!(again.entries(), chosen, "the same keys in every run");

    let out = verify(&source.url(), &target.url(), &["--sample", "0"]);
    assert_eq!(out.code, 2, "a rate of 0 is refused");
}

#[test]
fn a_rate_limit_still_compares_everything() {
    let (source, target) = pair();
    let mut t = connect(&target.url());
    cmd(&mut t, "SELECT 3");
    cmd(&mut t, "DEL d3:plain");
    // db 3 alone: a handful of keys, each a few commands a side.
    let started = std::time::Instant::now();
    let out = verify(
        &source.url(),
        &target.url(),
        &["--db", "3", "--qps", "10", "--rounds", "1"],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        out.entries(),
        BTreeSet::from([entry(3, b"d3:plain", "missing")])
    );
    // SELECT+DBSIZE twice, SCAN, 2 commands a key for 4 keys, TYPE/DUMP for
    // 4 keys, EXISTS for 3: about 20 commands on the source, 2 s at 10/s.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

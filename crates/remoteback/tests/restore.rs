//! `remoteback restore --until`: the topic replayed into a fresh Redis up to
//! a primary time gives the dataset of that time, the moment before a
//! `FLUSHALL` included.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::mixed::{self, DBS};
use common::pipeline::{connect, Pipeline, Setup, TOPIC};
use common::{compare, remoteback_bin, RedisServer};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A copy of the primary as it is now, in a server of its own (`DUMP`,
/// `RESTORE` with the key's remaining time to live).
fn snapshot(p: &Pipeline) -> RedisServer {
    let copy = RedisServer::start();
    let (mut from, mut to) = (p.on_primary(), connect(copy.port()));
    for db in DBS {
        let _: () = redis::cmd("SELECT").arg(db).query(&mut from).unwrap();
        let _: () = redis::cmd("SELECT").arg(db).query(&mut to).unwrap();
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut from).unwrap();
        for key in keys {
            let (dump, ttl): (Option<Vec<u8>>, i64) = redis::pipe()
                .cmd("DUMP")
                .arg(&key)
                .cmd("PTTL")
                .arg(&key)
                .query(&mut from)
                .unwrap();
            let Some(dump) = dump else { continue };
            let _: () = redis::cmd("RESTORE")
                .arg(&key)
                .arg(ttl.max(0))
                .arg(dump)
                .arg("REPLACE")
                .query(&mut to)
                .unwrap();
        }
    }
    copy
}

/// Asserts that `target` holds what `expected` does in every database of
/// the load, naming the first keys that differ and the restore's output.
fn assert_same(expected: &RedisServer, target: &RedisServer, what: &str, shown: &str) {
    let diffs = compare::differences(expected.port(), target.port(), &DBS);
    let first: Vec<String> = diffs.iter().take(10).map(|d| d.to_string()).collect();
    assert!(
        diffs.is_empty(),
        "{what}: {} keys differ:\n{}\n{shown}",
        diffs.len(),
        first.join("\n")
    );
}

/// The moment between two phases of writes: every write before it is on
/// the backup (so in the topic), none after it was made yet.
fn mark(p: &Pipeline) -> u64 {
    p.assert_converges(&DBS, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(5));
    let t = now_ms();
    std::thread::sleep(Duration::from_millis(5));
    t
}

fn restore(p: &Pipeline, target: &RedisServer, until: Option<u64>, extra: &[&str]) -> Output {
    let mut command = Command::new(remoteback_bin());
    command.args([
        "restore",
        "--topic",
        TOPIC,
        "--bootstrap-servers",
        &p.broker.bootstrap(),
        "--target",
        &target.url(),
    ]);
    if let Some(t) = until {
        command.args(["--until", &t.to_string()]);
    }
    command.args(extra);
    command.output().expect("run remoteback restore")
}

#[test]
fn restore_until_a_time_gives_the_dataset_of_that_time() {
    let p = Pipeline::start(Setup {
        partitions: 2,
        ..Setup::default()
    });
    let mut client = p.client();
    let mut points = Vec::new();
    for (phase, seed) in [(0, 11), (1, 12), (2, 14)] {
        for c in 0..3 {
            mixed::run_client(&mut client, c + phase * 3, 300, seed);
        }
        let t = mark(&p);
        points.push((t, snapshot(&p)));
    }
    // Someone empties the primary; clients go on writing.
    let _: () = redis::cmd("FLUSHALL").query(&mut client).unwrap();
    mixed::run_client(&mut client, 9, 200, 13);
    mark(&p);

    for (i, (until, expected)) in points.iter().enumerate() {
        let target = RedisServer::start();
        let out = restore(&p, &target, Some(*until), &[]);
        let shown = text(&out);
        eprintln!("restore {i} to {until}:\n{shown}");
        assert!(out.status.success(), "restore {i}:\n{shown}\n{}", p.logs());
        assert!(
            shown.contains("restore done: the writes captured up to ")
                && shown.contains("recovery point: the last write applied was captured at "),
            "{shown}"
        );
        assert_same(
            expected,
            &target,
            &format!("restore {i} to {until} against the snapshot of then"),
            &shown,
        );
    }

    // Without --until, everything: the primary as it is now; and a second
    // run on the same target goes on from where the first stopped.
    let target = RedisServer::start();
    let first = restore(&p, &target, Some(points[0].0), &[]);
    assert!(first.status.success(), "{}", text(&first));
    let rest = restore(&p, &target, None, &[]);
    let shown = text(&rest);
    assert!(rest.status.success(), "{shown}");
    assert!(
        shown.contains("stopped at the end of the partition"),
        "{shown}"
    );
    let diffs = compare::differences(p.primary.port(), target.port(), &DBS);
    assert!(diffs.is_empty(), "{} keys differ:\n{shown}", diffs.len());

    // Back in time is a new target's job: this one holds later writes.
    let back = restore(&p, &target, Some(points[1].0), &[]);
    assert_eq!(back.status.code(), Some(2), "{}", text(&back));
    assert!(
        text(&back).contains("restored up to the end of the topic already, later than --until"),
        "{}",
        text(&back)
    );
}

#[test]
fn a_target_holding_other_data_is_refused() {
    let p = Pipeline::start(Setup::default());
    let target = RedisServer::start();
    let _: () = redis::cmd("SET")
        .arg("theirs")
        .arg(1)
        .query(&mut connect(target.port()))
        .unwrap();
    let out = restore(&p, &target, None, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("the target holds 1 keys and none of a restore's"),
        "{}",
        text(&out)
    );
    let kept: i64 = redis::cmd("GET")
        .arg("theirs")
        .query(&mut connect(target.port()))
        .unwrap();
    assert_eq!(kept, 1);

    // Nor is the live backup, whose replay would be raced.
    p.wait_applied();
    let out = restore(&p, &p.backup, None, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("the target is a replay's backup"),
        "{}",
        text(&out)
    );
}

/// The records before the last full sync are not needed: a restore begins
/// at the sync's start marks. A write made on the primary behind the
/// proxy's back makes the history before the sync wrong (the live backup
/// keeps a key the primary lost), so only a restore that begins at the
/// sync gets the dataset right; one told to begin at the first record
/// shows the difference.
#[test]
fn a_restore_begins_at_the_last_full_sync() {
    let (p, proxy_metrics, _) = Pipeline::start_with_metrics(Setup::default());
    let mut client = p.client();
    let _: () = redis::cmd("RPUSH")
        .arg("stale")
        .arg("a")
        .query(&mut client)
        .unwrap();
    mixed::run_client(&mut client, 0, 200, 21);
    // Behind the proxy's back: the topic says nothing of these.
    let mut primary = p.on_primary();
    let _: () = redis::cmd("DEL").arg("stale").query(&mut primary).unwrap();
    let _: () = redis::cmd("SET")
        .arg("direct")
        .arg("only")
        .query(&mut primary)
        .unwrap();

    let synced = Command::new(remoteback_bin())
        .args(["sync", "--proxy", &format!("127.0.0.1:{proxy_metrics}")])
        .output()
        .expect("run remoteback sync");
    assert!(synced.status.success(), "sync:\n{}", text(&synced));
    mixed::run_client(&mut client, 1, 200, 22);
    // Every write so far is in the topic once the backup has the last.
    p.wait_applied();
    std::thread::sleep(Duration::from_millis(5));
    let until = now_ms();
    std::thread::sleep(Duration::from_millis(5));
    let expected = snapshot(&p);
    mixed::run_client(&mut client, 2, 100, 23);
    p.wait_applied();

    let target = RedisServer::start();
    let out = restore(&p, &target, Some(until), &[]);
    let shown = text(&out);
    eprintln!("{shown}");
    assert!(out.status.success(), "restore:\n{shown}\n{}", p.logs());
    assert!(shown.contains("began at the full sync of "), "{shown}");
    assert_same(
        &expected,
        &target,
        "the restore against the snapshot",
        &shown,
    );

    let whole = RedisServer::start();
    let out = restore(&p, &whole, Some(until), &["--from-beginning"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("began at the full sync"),
        "{}",
        text(&out)
    );
    let stale: i64 = redis::cmd("LLEN")
        .arg("stale")
        .query(&mut connect(whole.port()))
        .unwrap();
    assert_eq!(
        stale, 1,
        "from the first record, the history before the sync is replayed"
    );
}

/// `--until-offset TOPIC:PARTITION:OFFSET` stops a partition before the
/// record at that offset: the dataset of the moment it was written, and a
/// later restore of the same target goes on from there; going back is
/// refused.
#[test]
fn restore_until_an_offset_gives_the_dataset_before_it() {
    let p = Pipeline::start(Setup::default());
    let mut client = p.client();
    mixed::run_client(&mut client, 0, 300, 31);
    p.wait_applied();
    let expected = snapshot(&p);
    // Everything so far is in the topic: the next record written is here.
    let stop = p.topic_records().len();
    mixed::run_client(&mut client, 1, 300, 32);
    p.wait_applied();

    let target = RedisServer::start();
    let until = format!("{TOPIC}:0:{stop}");
    let out = restore(&p, &target, None, &["--until-offset", &until]);
    let shown = text(&out);
    assert!(out.status.success(), "restore:\n{shown}\n{}", p.logs());
    assert!(
        shown.contains(&format!(
            "next offset {stop}; stopped at --until-offset {stop}"
        )),
        "{shown}"
    );
    assert_same(
        &expected,
        &target,
        &format!("the dataset before offset {stop}"),
        &shown,
    );

    // Partitions not named went to their end: as far as time goes, the
    // target holds everything, and a restore to a time is refused.
    let timed = restore(&p, &target, Some(now_ms()), &[]);
    assert_eq!(timed.status.code(), Some(2), "{}", text(&timed));

    // On to the end, then back before the stop: refused.
    let rest = restore(&p, &target, None, &[]);
    assert!(rest.status.success(), "{}", text(&rest));
    let diffs = compare::differences(p.primary.port(), target.port(), &DBS);
    assert!(
        diffs.is_empty(),
        "{} keys differ:\n{}",
        diffs.len(),
        text(&rest)
    );
    let back = restore(&p, &target, None, &["--until-offset", &until]);
    assert_eq!(back.status.code(), Some(2), "{}", text(&back));
    assert!(
        text(&back).contains("past --until-offset"),
        "{}",
        text(&back)
    );
}

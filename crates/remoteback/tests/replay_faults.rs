//! Faults injected into a running replay, with real processes: primary and
//! backup redis-server, a tansu broker, `remoteback proxy` and one or more
//! `remoteback replay`.
//!
//! The load goes through the proxy and is made of writes that show a lost or
//! a repeated record as a wrong number: `INCR` counters, `LPUSH` lists and
//! `APPEND` strings (plus `MULTI`/`EXEC` transactions and `INCRBY` in
//! database 1). Each client counts what it wrote; at the end the backup must
//! equal the primary (`compare::differences`) and hold exactly those counts.
//!
//! Every test prints (eprintln!) what it injected and what it checked;
//! `cargo nextest run --no-capture` or a failure shows it. docs/guarantees.md
//! quotes these figures. `REMOTEBACK_TEST_SEED` chooses the random kill
//! moments.

mod common;

use std::time::{Duration, Instant};

use common::faults::{
    check_tallies, connect, end_offsets, get, replay_config, signal, stored_offsets, tail, Load,
    Setup, DBS, TOPIC,
};
use common::workload::{seed, Rng};
use common::{compare, Broker, RedisServer, Service};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// The counters `replay` logs when it stops: (applied, refused, retries).
fn summary(log: &str) -> Option<(u64, u64, u64)> {
    let line = log.lines().rev().find(|l| l.contains("records applied,"))?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .filter_map(|w| w.parse().ok())
        .collect();
    let n = numbers.len();
    (n >= 3).then(|| (numbers[n - 3], numbers[n - 2], numbers[n - 1]))
}

/// SIGTERM; the replay must exit 0 within 30 s. Returns its summary.
#[track_caller]
fn terminate_cleanly(replay: &mut Service) -> (u64, u64, u64) {
    let started = Instant::now();
    let status = replay.terminate(Duration::from_secs(30));
    let log = replay.log();
    assert!(
        status.is_some_and(|s| s.success()),
        "replay must exit 0 on SIGTERM, got {status:?}; log:\n{}",
        tail(&log, 40)
    );
    let counts = summary(&log).unwrap_or_else(|| panic!("no summary line in:\n{}", tail(&log, 20)));
    eprintln!(
        "[check] SIGTERM: replay exited 0 after {:.2}s; it reported {} records applied, {} commands refused, {} retries",
        started.elapsed().as_secs_f64(),
        counts.0,
        counts.1,
        counts.2
    );
    counts
}

/// SIGINT (Ctrl-C); the replay must exit 0 within 30 s.
#[track_caller]
fn interrupt_cleanly(replay: &mut Service) {
    const SIGINT: i32 = 2;
    signal(replay.pid().expect("replay running"), SIGINT);
    let status = replay.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "replay must exit 0 on SIGINT, got {status:?}; log:\n{}",
        tail(&replay.log(), 40)
    );
    eprintln!("[check] SIGINT: replay exited 0");
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// SIGKILL at random moments, ten times, while the load runs and the replay
/// is busy catching up; then a SIGTERM under load. Nothing lost, nothing
/// applied twice.
#[test]
fn replay_killed_ten_times_applies_every_write_exactly_once() {
    let seed = seed();
    eprintln!("[inject] seed {seed} (REMOTEBACK_TEST_SEED={seed} repeats the kill moments)");
    let mut rng = Rng::new(seed);
    let s = Setup::start(&[], 1);
    let mut replay = s.replay("", "");
    let load = Load::start(s.proxy_port, 2);
    let stored = || stored_offsets(&s.backup, TOPIC, 1)[0];
    // Each kill lands while the (restarted) replay is applying: after it
    // stored a new offset, at a random moment within the next second.
    let applying = |before: Option<i64>| {
        common::wait_until(
            Duration::from_secs(60),
            "the replay applying records",
            || stored() > before,
        )
    };
    let mut before = None;
    for n in 1..=10 {
        applying(before);
        std::thread::sleep(Duration::from_millis(rng.below(1000)));
        let at = stored();
        let end = end_offsets(&s.broker, TOPIC, 1)[0];
        replay.kill();
        eprintln!(
            "[inject] SIGKILL {n}/10 at {:.1}s of load: backup at offset {}, topic end {end} ({} records not applied yet)",
            load.elapsed(),
            at.map(|o| o.to_string()).unwrap_or_else(|| "none".into()),
            end - at.unwrap_or(0)
        );
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        before = stored();
        replay.restart();
    }
    applying(before);
    std::thread::sleep(Duration::from_millis(rng.below(1000)));
    eprintln!("[inject] SIGTERM under load at {:.1}s", load.elapsed());
    terminate_cleanly(&mut replay);
    before = stored();
    replay.restart();
    applying(before);
    let tallies = load.finish();
    let ends = s.converge(1, &[&replay]);
    check_tallies(&s.backup, &tallies);
    let log = replay.log();
    let resumed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("(stored in the backup)"))
        .filter_map(|l| l.split("starting at offset ").nth(1))
        .filter_map(|r| r.split(' ').next())
        .collect();
    assert_eq!(
        resumed.len(),
        11,
        "each restart resumes at the offset stored in the backup: {resumed:?}"
    );
    eprintln!(
        "[check] the 11 restarts (10 after SIGKILL, 1 after SIGTERM) resumed at the offsets stored in the backup: {}; topic end {}",
        resumed.join(", "),
        ends[0]
    );
    assert!(
        !log.contains("backup refused"),
        "no refusals: {}",
        tail(&log, 30)
    );
    terminate_cleanly(&mut replay);
}

/// The backup is killed (SIGKILL) twice under load and comes back after
/// 1.5 s with its data (AOF, fsync always); the replay waits, reconnects and
/// goes on where the backup's stored offset says.
#[test]
fn backup_restarted_twice_under_load_loses_nothing_and_repeats_nothing() {
    let mut s = Setup::start(&["--appendonly", "yes", "--appendfsync", "always"], 1);
    let mut replay = s.replay("", "");
    let load = Load::start(s.proxy_port, 3);
    for n in 1..=2 {
        std::thread::sleep(Duration::from_millis(2500));
        let stored = stored_offsets(&s.backup, TOPIC, 1)[0];
        s.backup.stop();
        let down = Instant::now();
        std::thread::sleep(Duration::from_millis(1500));
        s.backup.restart();
        let after = stored_offsets(&s.backup, TOPIC, 1)[0];
        eprintln!(
            "[inject] backup SIGKILLed {n}/2 at {:.1}s of load, down {:.1}s; stored offset {stored:?} before the kill, {after:?} after the restart (kept by the AOF)",
            load.elapsed() - down.elapsed().as_secs_f64(),
            down.elapsed().as_secs_f64()
        );
        assert!(after >= stored, "the backup kept its data");
    }
    std::thread::sleep(Duration::from_millis(2000));
    let tallies = load.finish();
    s.converge(1, &[&replay]);
    check_tallies(&s.backup, &tallies);
    let log = replay.log();
    let waits = log.lines().filter(|l| l.contains("retrying in")).count();
    assert!(
        waits >= 2,
        "the replay waited for the backup:\n{}",
        tail(&log, 30)
    );
    assert!(
        !log.contains("reading the partition again"),
        "the backup kept its data, so no rewind: {}",
        tail(&log, 30)
    );
    let (applied, refused, retries) = terminate_cleanly(&mut replay);
    assert_eq!(refused, 0);
    assert!(retries >= 2, "retries counted: {retries}");
    eprintln!(
        "[check] the replay logged {waits} waits for the backup, counted {retries} retries, applied {applied} records, refused none"
    );
}

/// The backup restarts without persistence, empty: the replay notices that
/// its stored offset vanished and reads the topic again from the beginning
/// (`start = "earliest"`), rebuilding the backup.
#[test]
fn backup_that_lost_its_data_is_rebuilt_from_the_topic() {
    let mut s = Setup::start(&[], 1);
    let mut replay = s.replay("", "");
    let load = Load::start(s.proxy_port, 2);
    std::thread::sleep(Duration::from_millis(3000));
    let stored = stored_offsets(&s.backup, TOPIC, 1)[0];
    s.backup.stop();
    std::thread::sleep(Duration::from_millis(500));
    s.backup.restart();
    let keys: i64 = redis::cmd("DBSIZE")
        .query(&mut connect(s.backup.port()))
        .expect("DBSIZE");
    eprintln!(
        "[inject] backup SIGKILLed at {:.1}s of load and restarted without persistence: stored offset {stored:?} before, {keys} keys after",
        load.elapsed()
    );
    assert_eq!(keys, 0);
    std::thread::sleep(Duration::from_millis(2000));
    let tallies = load.finish();
    s.converge(1, &[&replay]);
    check_tallies(&s.backup, &tallies);
    let log = replay.log();
    let rewind = log
        .lines()
        .find(|l| l.contains("reading the partition again from its beginning"))
        .unwrap_or_else(|| panic!("the replay says it rewinds:\n{}", tail(&log, 30)));
    eprintln!("[check] replay log: {}", rewind.trim());
    terminate_cleanly(&mut replay);
}

/// Two replays share a three-partition topic: `partitions = [0]` and
/// `partitions = [1, 2]`. A third asks for a partition that does not exist.
#[test]
fn two_replays_sharing_a_three_partition_topic_converge() {
    let s = Setup::start(&[], 3);
    let mut first = s.replay("", "partitions = [0]");
    let mut second = s.replay("", "partitions = [1, 2]");
    // Twelve clients: the proxy places a record by its keys' slot modulo
    // the partition count, and the hash tags {c0}..{c7} all fall in
    // partition 1 of 3 ({c8}, {c9}, {c11} in 0, {c10} in 2).
    let load = Load::start(s.proxy_port, 12);
    std::thread::sleep(Duration::from_millis(4000));
    let tallies = load.finish();
    let ends = s.converge(3, &[&first, &second]);
    assert!(
        ends.iter().all(|&e| e > 0),
        "the load reached every partition: {ends:?}"
    );
    check_tallies(&s.backup, &tallies);
    let (log1, log2) = (first.log(), second.log());
    assert!(
        log1.contains(&format!("replay: partitions {TOPIC}[0] →")),
        "{log1}"
    );
    assert!(
        log2.contains(&format!("replay: partitions {TOPIC}[1] {TOPIC}[2] →")),
        "{log2}"
    );
    let (a1, ..) = terminate_cleanly(&mut first);
    let (a2, ..) = terminate_cleanly(&mut second);
    assert_eq!(a1 as i64, ends[0], "the first replay applied partition 0");
    assert_eq!(
        a2 as i64,
        ends[1] + ends[2],
        "the second applied partitions 1 and 2"
    );
    eprintln!(
        "[check] records per partition {ends:?}: the replay with partitions = [0] applied {a1}, the one with [1, 2] applied {a2}"
    );

    let mut wrong = s.replay("", "partitions = [0, 5]");
    let status = wrong
        .wait_exit(Duration::from_secs(30))
        .expect("a replay asking for a missing partition stops");
    let log = wrong.log();
    assert_eq!(status.code(), Some(2), "{log}");
    let expected = format!("topic {TOPIC} has no partition 5 (it has partitions 0-2)");
    assert!(log.contains(&expected), "{log}");
    eprintln!("[check] partitions = [0, 5]: exit status 2, log says \"{expected}\"");
}

/// The proxy's sender lines for the tests that reason in offsets: each
/// write its own record (the proxy packs writes that follow each other
/// faster than Kafka acknowledges them otherwise).
const ONE_RECORD_PER_WRITE: &str = "pack_bytes = 0";
/// The proxy's top-level lines for the same tests: no heartbeats, which
/// would take offsets of their own while the test counts them.
const NO_HEARTBEATS: &str = "heartbeat_ms = 0";

/// `start = "latest"`: what was written before the first start is not
/// applied; the position is stored at once, so what is written while the
/// replay is down later is applied after its restart.
#[test]
fn start_latest_skips_the_past_and_then_keeps_its_position() {
    let s = Setup::start_with(&[], 1, NO_HEARTBEATS, ONE_RECORD_PER_WRITE);
    let mut c = s.client();
    let incr = |c: &mut redis::Connection, n: usize| {
        for _ in 0..n {
            let _: i64 = redis::cmd("INCR").arg("{l}:n").query(c).expect("INCR");
        }
    };
    incr(&mut c, 5);
    common::wait_until(Duration::from_secs(30), "5 records in Kafka", || {
        end_offsets(&s.broker, TOPIC, 1)[0] == 5
    });
    let mut replay = s.replay("", "start = \"latest\"");
    common::wait_until(Duration::from_secs(30), "the start stored", || {
        stored_offsets(&s.backup, TOPIC, 1)[0] == Some(5)
    });
    eprintln!(
        "[inject] 5 INCR before the first start with start = latest; it stored offset 5 at once"
    );
    incr(&mut c, 3);
    common::wait_until(Duration::from_secs(30), "n = 3 on the backup", || {
        get(s.backup.port(), 0, "{l}:n").as_deref() == Some("3")
    });
    interrupt_cleanly(&mut replay);
    incr(&mut c, 2);
    common::wait_until(Duration::from_secs(30), "10 records in Kafka", || {
        end_offsets(&s.broker, TOPIC, 1)[0] == 10
    });
    eprintln!("[inject] 3 INCR while it runs, then 2 INCR while it is stopped");
    replay.restart();
    common::wait_until(Duration::from_secs(30), "n = 5 on the backup", || {
        get(s.backup.port(), 0, "{l}:n").as_deref() == Some("5")
    });
    let log = replay.log();
    assert!(
        log.contains("starting at offset 8 (stored in the backup)"),
        "{log}"
    );
    assert_eq!(get(s.primary.port(), 0, "{l}:n").as_deref(), Some("10"));
    eprintln!("[check] start = latest: backup n = 5 (3 + 2) while the primary has 10; the restart resumed at stored offset 8, not at the end");
    terminate_cleanly(&mut replay);
}

/// A backup that diverged: `{e}:l` is a string on the backup only, so the
/// replayed `LPUSH {e}:l` gets WRONGTYPE.
struct Diverged {
    s: Setup,
    /// Offset of the refused record.
    bad: i64,
}

/// Applies three `INCR {e}:n`, stops `replay` (SIGTERM), makes the backup
/// diverge, then writes `LPUSH {e}:l a` (refused by the backup), two more
/// `INCR {e}:n` and an `APPEND {e}:s x`, all while the replay is down so
/// they reach it in one batch.
fn diverge(s: Setup, replay: &mut Service) -> Diverged {
    let mut c = s.client();
    for _ in 0..3 {
        let _: i64 = redis::cmd("INCR").arg("{e}:n").query(&mut c).expect("INCR");
    }
    common::wait_until(Duration::from_secs(30), "n = 3 on the backup", || {
        get(s.backup.port(), 0, "{e}:n").as_deref() == Some("3")
    });
    terminate_cleanly(replay);
    let bad = stored_offsets(&s.backup, TOPIC, 1)[0].expect("stored offset");
    let _: () = redis::cmd("SET")
        .arg("{e}:l")
        .arg("diverged")
        .query(&mut connect(s.backup.port()))
        .expect("SET on the backup");
    let _: i64 = redis::cmd("LPUSH")
        .arg("{e}:l")
        .arg("a")
        .query(&mut c)
        .expect("LPUSH");
    for _ in 0..2 {
        let _: i64 = redis::cmd("INCR").arg("{e}:n").query(&mut c).expect("INCR");
    }
    let _: i64 = redis::cmd("APPEND")
        .arg("{e}:s")
        .arg("x")
        .query(&mut c)
        .expect("APPEND");
    common::wait_until(Duration::from_secs(30), "4 more records in Kafka", || {
        end_offsets(&s.broker, TOPIC, 1)[0] == bad + 4
    });
    eprintln!(
        "[inject] SET {{e}}:l diverged directly on the backup; then through the proxy LPUSH {{e}}:l (offset {bad}), INCR, INCR, APPEND (offsets {}..={}), one batch for the replay",
        bad + 1,
        bad + 3
    );
    Diverged { s, bad }
}

#[test]
fn on_apply_error_stop_stops_at_the_refused_record_and_resumes_at_it() {
    let s = Setup::start_with(&[], 1, NO_HEARTBEATS, ONE_RECORD_PER_WRITE);
    let mut replay = s.replay("on_apply_error = \"stop\"", "");
    let Diverged { s, bad } = diverge(s, &mut replay);
    replay.restart();
    let status = replay
        .wait_exit(Duration::from_secs(30))
        .expect("the replay stops by itself");
    let log = replay.log();
    assert_eq!(status.code(), Some(1), "{}", tail(&log, 20));
    let said = format!("backup refused the record at {TOPIC}[0]@{bad}");
    assert!(log.contains(&said), "{}", tail(&log, 20));
    assert!(log.contains("WRONGTYPE"), "{}", tail(&log, 20));
    let n = get(s.backup.port(), 0, "{e}:n");
    let stored = stored_offsets(&s.backup, TOPIC, 1)[0];
    assert_eq!(n.as_deref(), Some("3"), "nothing after the refused record");
    assert_eq!(get(s.backup.port(), 0, "{e}:s"), None);
    assert_eq!(
        stored,
        Some(bad),
        "the restart resumes at the refused record"
    );
    eprintln!(
        "[check] on_apply_error = stop: exit status 1, log says \"{said}: WRONGTYPE ...\", backup n = 3 (the 2 INCRs after it not applied), stored offset {bad}"
    );

    let _: () = redis::cmd("DEL")
        .arg("{e}:l")
        .query(&mut connect(s.backup.port()))
        .expect("DEL");
    eprintln!("[inject] DEL {{e}}:l on the backup (fixed), replay started again");
    replay.restart();
    s.converge(1, &[&replay]);
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("{e}:l")
        .arg(0)
        .arg(-1)
        .query(&mut connect(s.backup.port()))
        .expect("LRANGE");
    assert_eq!(list, ["a"]);
    assert_eq!(get(s.backup.port(), 0, "{e}:n").as_deref(), Some("5"));
    eprintln!("[check] after the fix: {{e}}:l = [\"a\"], n = 5, s = \"x\" on the backup, equal to the primary");
    terminate_cleanly(&mut replay);
}

#[test]
fn on_apply_error_continue_logs_and_counts_the_refusal_and_goes_on() {
    let s = Setup::start_with(&[], 1, NO_HEARTBEATS, ONE_RECORD_PER_WRITE);
    let mut replay = s.replay("", "");
    let Diverged { s, bad } = diverge(s, &mut replay);
    replay.restart();
    common::wait_until(Duration::from_secs(30), "n = 5 on the backup", || {
        get(s.backup.port(), 0, "{e}:n").as_deref() == Some("5")
    });
    let log = replay.log();
    let said = format!("backup refused a command of the record at {TOPIC}[0]@{bad}: WRONGTYPE");
    assert!(log.contains(&said), "{}", tail(&log, 20));
    assert_eq!(get(s.backup.port(), 0, "{e}:s").as_deref(), Some("x"));
    let (_, refused, _) = terminate_cleanly(&mut replay);
    assert_eq!(refused, 1);
    let diffs = compare::differences(s.primary.port(), s.backup.port(), &DBS);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(&diffs[0].key[..], b"{e}:l");
    eprintln!(
        "[check] on_apply_error = continue: log says \"{said} ...\", 1 refusal counted, the later INCRs and APPEND applied (n = 5, s = \"x\"), exit 0 on SIGTERM; the only difference left is {{e}}:l: primary {} vs backup {}",
        diffs[0].primary, diffs[0].backup
    );
}

/// Records written straight to Kafka: two good ones, a bad one, a good one.
/// The replay applies the first two, stores the bad record's offset and
/// stops with an error naming it; started again it stops there again.
#[test]
fn a_record_that_cannot_be_read_stops_the_replay_after_the_records_before_it() {
    let backup = RedisServer::start();
    let broker = Broker::start();
    let producer: BaseProducer = broker
        .client_config()
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let incr = b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n".as_slice();
    let headers = |format: &str, db: &str| {
        OwnedHeaders::new()
            .insert(Header {
                key: "rb-format",
                value: Some(format),
            })
            .insert(Header {
                key: "rb-db",
                value: Some(db),
            })
            .insert(Header {
                key: "rb-source",
                value: Some("test:0"),
            })
    };
    let cases: [(&str, OwnedHeaders, &[u8], &str); 4] = [
        (
            "no-format",
            OwnedHeaders::new().insert(Header {
                key: "rb-db",
                value: Some("0"),
            }),
            incr,
            "bad record header rb-format: missing",
        ),
        (
            "bad-db",
            headers("PROTOCOL", "zero"),
            incr,
            "bad record header rb-db: not a number",
        ),
        (
            "truncated",
            headers("PROTOCOL", "0"),
            b"*2\r\n$4\r\nINCR\r\n$1".as_slice(),
            "payload: PROTOCOL payload",
        ),
        (
            "other-format",
            headers("STRING", "0"),
            b"INCR n\n".as_slice(),
            "is in STRING format but this replay expects PROTOCOL",
        ),
    ];
    for (name, bad_headers, bad_payload, reason) in cases {
        let topic = format!("bad-{name}");
        broker.create_topic(&topic, 1);
        for (i, (h, payload)) in [
            (headers("PROTOCOL", "0"), incr),
            (headers("PROTOCOL", "0"), incr),
            (bad_headers, bad_payload),
            (headers("PROTOCOL", "0"), incr),
        ]
        .into_iter()
        .enumerate()
        {
            let key = format!("{i}");
            producer
                .send(BaseRecord::to(&topic).key(&key).payload(payload).headers(h))
                .map_err(|(e, _)| e)
                .expect("enqueue");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
        for run in 1..=2 {
            let mut replay = Service::replay(&replay_config(&broker, &backup, &topic, "", ""));
            let status = replay
                .wait_exit(Duration::from_secs(30))
                .unwrap_or_else(|| panic!("{name}: the replay stops by itself:\n{}", replay.log()));
            let log = replay.log();
            assert_eq!(status.code(), Some(1), "{name}: {log}");
            let at = format!("{topic}[0]@2");
            assert!(log.contains(&at), "{name}: the error names {at}: {log}");
            assert!(
                log.contains(reason),
                "{name}: the error says {reason:?}: {log}"
            );
            let stored = stored_offsets(&backup, &topic, 1)[0];
            let n = get(backup.port(), 0, "n");
            assert_eq!(stored, Some(2), "{name}: offset of the bad record stored");
            assert_eq!(
                n.as_deref(),
                Some("2"),
                "{name}: the two records before it applied once"
            );
            eprintln!(
                "[check] {name} (run {run}): exit 1, error names {at} and says \"{reason}\"; stored offset 2, n = 2"
            );
        }
        let _: () = redis::cmd("DEL")
            .arg("n")
            .query(&mut connect(backup.port()))
            .expect("DEL n");
    }
}

/// `on_bad_record = "skip"`: a record with a malformed header and one with a
/// truncated payload are logged with their offsets, counted and passed; the
/// records around them are applied once, and `/health` asks for a resync.
#[test]
fn on_bad_record_skip_counts_logs_and_passes_unreadable_records() {
    let backup = RedisServer::start();
    let broker = Broker::start();
    let topic = "bad-skip";
    broker.create_topic(topic, 1);
    let producer: BaseProducer = broker
        .client_config()
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let incr = b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n".as_slice();
    let headers = |db: &str| {
        OwnedHeaders::new()
            .insert(Header {
                key: "rb-format",
                value: Some("PROTOCOL"),
            })
            .insert(Header {
                key: "rb-db",
                value: Some(db),
            })
    };
    let records = [
        (headers("0"), incr),
        (headers("zero"), incr),
        (headers("0"), incr),
        (headers("0"), b"*2\r\n$4\r\nINCR\r\n$1".as_slice()),
        (headers("0"), incr),
        (headers("0"), incr),
    ];
    for (h, payload) in records {
        producer
            .send(BaseRecord::to(topic).key("k").payload(payload).headers(h))
            .map_err(|(e, _)| e)
            .expect("enqueue");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let port = common::free_port();
    let mut replay = Service::replay(&replay_config(
        &broker,
        &backup,
        topic,
        &format!("on_bad_record = \"skip\"\nmetrics = \"127.0.0.1:{port}\""),
        "",
    ));
    replay.wait_port(port);
    let status = common::status::Status(port);
    common::wait_until(Duration::from_secs(30), "every record passed", || {
        stored_offsets(&backup, topic, 1)[0] == Some(6)
    });
    assert_eq!(get(backup.port(), 0, "n").as_deref(), Some("4"));
    assert_eq!(
        status.value("remoteback_replay_bad_records_skipped_total"),
        2
    );
    let (code, health) = status.get("/health");
    assert_eq!(code, 503, "{health}");
    assert!(health.contains("2 unreadable records skipped"), "{health}");
    let log = replay.log();
    for (at, reason) in [("@1", "rb-db: not a number"), ("@3", "PROTOCOL payload")] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("{topic}[0]{at}")) && l.contains("skipped"))
            .unwrap_or_else(|| panic!("no skip logged for {at}: {log}"));
        assert!(line.contains(reason) && line.contains("ERROR"), "{line}");
    }
    let (applied, ..) = terminate_cleanly(&mut replay);
    assert_eq!(applied, 4);
    eprintln!("[check] on_bad_record = \"skip\": offsets 1 (rb-db \"zero\") and 3 (truncated payload) logged and skipped; n = 4 (the other four applied once); bad_records_skipped_total 2; /health 503 \"{health}\"");
}

/// The broker goes away under a running replay and comes back: the replay
/// waits for it (it used to exit on the consumer's "all brokers down"), then
/// applies what was written meanwhile, once.
#[test]
fn the_replay_waits_out_a_broker_outage() {
    let mut p = common::pipeline::Pipeline::start(common::pipeline::Setup::default());
    let mut c = p.client();
    let _: i64 = redis::cmd("INCR").arg("counter").query(&mut c).unwrap();
    p.wait_backup_value(0, "counter", "1");
    p.broker.stop();
    common::wait_until(
        Duration::from_secs(30),
        "the replay to see the outage",
        || p.logs().contains("waiting for the brokers"),
    );
    p.broker.restart();
    for _ in 0..9 {
        let _: i64 = redis::cmd("INCR").arg("counter").query(&mut c).unwrap();
    }
    p.wait_backup_value(0, "counter", "10");
    let replay = p.replay.as_mut().expect("replay");
    assert!(replay.try_wait().is_none(), "the replay is still running");
    common::wait_until(
        Duration::from_secs(30),
        "the replay to see the brokers back",
        || p.logs().contains("brokers reachable again"),
    );
    eprintln!("[check] broker stopped and restarted under a running replay: it waited, then applied the 9 INCRs made meanwhile once (counter 10 on the backup)");
}

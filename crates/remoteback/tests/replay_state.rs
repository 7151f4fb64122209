//! The replay's own state in the backup, with real processes: a tansu
//! broker, backup redis-server(s) and `remoteback replay`, fed with records
//! produced straight to Kafka (PROTOCOL payloads with every `rb-*` header,
//! explicit partitions), so that duplicates, gaps and barriers can be
//! written exactly.
//!
//! - a range of records in the topic twice is applied once, the duplicates
//!   counted on `/metrics`; an offset kept by an older version under
//!   `__remoteback:offset:...` is taken over;
//! - a gap turns `/health` to "resync needed" and names the range;
//! - `FLUSHALL`, `FLUSHDB`, `SWAPDB`, `MOVE`/`COPY`/`DEL`/`UNLINK`/`SET` of
//!   `__remoteback:state` and an `EVAL` deleting it never rewind the replay;
//! - barrier copies across 4 partitions, two replays sharing the topic,
//!   SIGKILLed while applying: each barrier applied once, in its place.
//!
//! A reference redis-server gets every record's commands directly, in an
//! order the records allow; the backup must equal it (`compare`).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::faults::{connect, end_offsets, stored_offsets, tail};
use common::status::Status;
use common::workload::{seed, Rng};
use common::{compare, free_port, wait_until, Broker, RedisServer, Service};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const SOURCE: &str = "test:6379";
const STATE: &str = "__remoteback:state";

/// One record as produced: its partition, database, numbering, barrier
/// and commands.
#[derive(Clone, Debug)]
struct Rec {
    partition: i32,
    db: u32,
    run: u64,
    seq: u64,
    barrier: Option<String>,
    commands: Vec<Vec<String>>,
}

impl Rec {
    fn new(partition: i32, run: u64, seq: u64, commands: &[&[&str]]) -> Rec {
        Rec {
            partition,
            db: 0,
            run,
            seq,
            barrier: None,
            commands: commands
                .iter()
                .map(|c| c.iter().map(|a| a.to_string()).collect())
                .collect(),
        }
    }

    fn payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for c in &self.commands {
            out.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
            for a in c {
                out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        out
    }
}

fn produce(broker: &Broker, topic: &str, records: &[Rec]) {
    let producer: BaseProducer = broker
        .client_config()
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string();
    for r in records {
        let (db, run, seq) = (r.db.to_string(), r.run.to_string(), r.seq.to_string());
        let mut headers = OwnedHeaders::new();
        for (key, value) in [
            ("rb-format", "PROTOCOL"),
            ("rb-db", db.as_str()),
            ("rb-source", SOURCE),
            ("rb-run", run.as_str()),
            ("rb-seq", seq.as_str()),
            ("rb-time", now.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        if let Some(b) = &r.barrier {
            headers = headers.insert(Header {
                key: "rb-barrier",
                value: Some(b.as_str()),
            });
        }
        let payload = r.payload();
        let mut pending = BaseRecord::to(topic)
            .partition(r.partition)
            .key("k")
            .payload(&payload)
            .headers(headers);
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(50));
                    pending = back;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Runs every record's commands on the reference server, in order.
fn apply_reference(reference: &RedisServer, records: &[Rec]) {
    let mut con = connect(reference.port());
    for r in records {
        let _: () = redis::cmd("SELECT")
            .arg(r.db)
            .query(&mut con)
            .expect("SELECT");
        for c in &r.commands {
            let mut cmd = redis::cmd(&c[0]);
            for a in &c[1..] {
                cmd.arg(a);
            }
            let _: redis::Value = cmd.query(&mut con).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
    }
}

fn replay(
    broker: &Broker,
    backup: &RedisServer,
    topic: &str,
    top: &str,
    receiver: &str,
) -> Service {
    Service::replay(&common::faults::replay_config(
        broker, backup, topic, top, receiver,
    ))
}

/// `metrics = "127.0.0.1:PORT"` and PORT.
fn metrics_top() -> (String, u16) {
    let port = free_port();
    (format!("metrics = \"127.0.0.1:{port}\""), port)
}

fn wait_applied(
    broker: &Broker,
    backup: &RedisServer,
    topic: &str,
    partitions: i32,
    logs: &[&Service],
) -> Vec<i64> {
    let ends = end_offsets(broker, topic, partitions);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stored = stored_offsets(backup, topic, partitions);
        if stored.iter().zip(&ends).all(|(s, e)| *s == Some(*e)) {
            return ends;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = logs.iter().map(|s| tail(&s.log(), 40)).collect();
            panic!(
                "not applied within 90 s: stored {stored:?}, ends {ends:?}\n{}",
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[track_caller]
fn assert_equal(reference: &RedisServer, backup: &RedisServer, dbs: &[u32]) {
    let diffs = compare::differences(reference.port(), backup.port(), dbs);
    assert!(
        diffs.is_empty(),
        "backup differs from the reference: {:?}",
        &diffs[..diffs.len().min(10)]
    );
}

fn hget(server: &RedisServer, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(STATE)
        .arg(field)
        .query(&mut connect(server.port()))
        .expect("HGET")
}

/// Starts a replay with metrics, waits for the topic to be applied, checks
/// that it applied `applied` records; returns it with its metrics port.
fn replay_until_applied(
    broker: &Broker,
    backup: &RedisServer,
    topic: &str,
    partitions: i32,
) -> (Service, u16) {
    let (top, port) = metrics_top();
    let service = replay(broker, backup, topic, &top, "");
    service.wait_port(port);
    wait_applied(broker, backup, topic, partitions, &[&service]);
    (service, port)
}

/// A range of records twice in the topic (a producer's retry after a lost
/// acknowledgement, a proxy restarted between sending and acknowledging),
/// and records of an older run after a newer one: each write applied once,
/// the others counted as duplicates. The backup held an offset under the
/// key older versions used: the replay resumes there and moves it into the
/// state hash. A restart applies nothing again.
#[test]
fn records_in_the_topic_twice_are_applied_once_and_counted() {
    let broker = Broker::start();
    let backup = RedisServer::start();
    let reference = RedisServer::start();
    let topic = "dups";
    broker.create_topic(topic, 1);
    let write = |run: u64, seq: u64| {
        let v = format!("{run}:{seq}");
        Rec::new(0, run, seq, &[&["INCR", "n"], &["RPUSH", "l", &v]])
    };
    // Offsets 0..=4 were applied by an older version, which stored offset
    // 5 under its key.
    let mut records: Vec<Rec> = (1..=5).map(|s| write(100, s)).collect();
    apply_reference(&reference, &records);
    apply_reference(&backup, &records);
    let _: () = redis::cmd("SET")
        .arg(format!("__remoteback:offset:{topic}:0"))
        .arg(5)
        .query(&mut connect(backup.port()))
        .expect("SET legacy offset");
    let mut fresh: Vec<Rec> = (6..=20).map(|s| write(100, s)).collect();
    apply_reference(&reference, &fresh);
    records.append(&mut fresh);
    // 11..=20 again, then 21..=30.
    records.extend((11..=20).map(|s| write(100, s)));
    let mut more: Vec<Rec> = (21..=30).map(|s| write(100, s)).collect();
    apply_reference(&reference, &more);
    records.append(&mut more);
    // A newer run, then a late record of the older run.
    let mut newer: Vec<Rec> = (1..=5).map(|s| write(200, s)).collect();
    apply_reference(&reference, &newer);
    records.append(&mut newer);
    records.push(write(100, 31));
    produce(&broker, topic, &records);
    eprintln!(
        "[inject] {} records: run 100 seq 1..=30 with 11..=20 twice, run 200 seq 1..=5, then run 100 seq 31; the backup holds the first 5 and offset 5 under the legacy key",
        records.len()
    );

    let (mut first, port) = replay_until_applied(&broker, &backup, topic, 1);
    assert_equal(&reference, &backup, &[0]);
    let applied = Status(port).value("remoteback_replay_records_applied_total");
    let duplicates = Status(port).value("remoteback_replay_duplicates_skipped_total");
    assert_eq!((applied, duplicates), (30, 11), "applied, duplicates");
    assert_eq!(
        Status(port).value("remoteback_replay_sequence_gaps_total"),
        0
    );
    let (code, health) = Status(port).get("/health");
    assert_eq!(code, 200, "{health}");
    let legacy: Option<String> = redis::cmd("GET")
        .arg(format!("__remoteback:offset:{topic}:0"))
        .query(&mut connect(backup.port()))
        .expect("GET");
    assert_eq!(legacy, None, "the legacy key is gone");
    assert_eq!(
        hget(&backup, &format!("seq:{topic}:0:{SOURCE}")).as_deref(),
        Some("200:5")
    );
    assert!(first
        .log()
        .contains("moved the offset 5 from __remoteback:offset:dups:0"));
    eprintln!(
        "[check] resumed at the legacy offset 5; {applied} records applied, {duplicates} duplicates skipped (counted on /metrics); backup equals the reference; seq state 200:5"
    );
    first.terminate(Duration::from_secs(30));

    let (again, port) = replay_until_applied(&broker, &backup, topic, 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        Status(port).value("remoteback_replay_records_applied_total"),
        0
    );
    assert_equal(&reference, &backup, &[0]);
    assert!(again.log().contains(&format!(
        "starting at offset {} (stored in the backup)",
        records.len()
    )));
    eprintln!("[check] a restart resumed at the end and applied nothing");
}

/// Records 6..=8 of a run never reached the topic: the replay applies what
/// it has, counts the gap, logs the range and says "resync needed" on
/// `/health`.
#[test]
fn a_gap_in_the_numbering_turns_health_to_resync_needed() {
    let broker = Broker::start();
    let backup = RedisServer::start();
    let topic = "gaps";
    broker.create_topic(topic, 1);
    let records: Vec<Rec> = [1, 2, 3, 4, 5, 9, 10]
        .into_iter()
        .map(|s| Rec::new(0, 100, s, &[&["INCR", "n"]]))
        .collect();
    produce(&broker, topic, &records);
    let (service, port) = replay_until_applied(&broker, &backup, topic, 1);
    let (code, health) = Status(port).get("/health");
    assert_eq!(code, 503, "{health}");
    assert!(health.starts_with("resync needed"), "{health}");
    assert!(
        health.contains("records 6..=8 of source test:6379 run 100 on partition gaps[0]"),
        "{health}"
    );
    assert_eq!(
        Status(port).value("remoteback_replay_sequence_gaps_total"),
        1
    );
    assert_eq!(
        Status(port).value("remoteback_replay_records_missing_total"),
        3
    );
    assert_eq!(Status(port).value("remoteback_replay_resync_needed"), 1);
    let log = service.log();
    assert!(
        log.contains("ERROR") && log.contains("records 6..=8 of source test:6379 run 100"),
        "{}",
        tail(&log, 20)
    );
    assert_eq!(
        common::faults::get(backup.port(), 0, "n").as_deref(),
        Some("7")
    );
    eprintln!(
        "[check] gap 6..=8 counted (1 gap, 3 missing), logged at error, /health 503: {health}"
    );
}

/// Commands that would delete, move or overwrite the state, in the stream
/// of one partition: the replay never goes back, a restart applies
/// nothing again, and no copy of the state is left in another database.
#[test]
fn commands_touching_the_state_never_rewind_the_replay() {
    let broker = Broker::start();
    let backup = RedisServer::start();
    let reference = RedisServer::start();
    let topic = "risky";
    broker.create_topic(topic, 1);
    let mut seq = 0;
    let mut rec = |db: u32, commands: &[&[&str]]| {
        seq += 1;
        let mut r = Rec::new(0, 100, seq, commands);
        r.db = db;
        r
    };
    let records = vec![
        rec(0, &[&["SET", "a", "1"], &["RPUSH", "l", "x"]]),
        rec(1, &[&["SET", "b", "1"]]),
        rec(0, &[&["FLUSHALL"]]),
        rec(0, &[&["SET", "c", "1"], &["RPUSH", "l", "y"]]),
        rec(1, &[&["SET", "c1", "1"]]),
        rec(0, &[&["FLUSHDB"]]),
        rec(0, &[&["SET", "d", "1"]]),
        rec(1, &[&["SET", "e", "1"]]),
        rec(0, &[&["SWAPDB", "0", "1"]]),
        rec(0, &[&["INCR", "n"]]),
        rec(0, &[&["MOVE", STATE, "2"]]),
        rec(0, &[&["INCR", "n"]]),
        rec(0, &[&["COPY", STATE, STATE, "DB", "3"]]),
        rec(0, &[&["DEL", STATE, "nothing"]]),
        rec(0, &[&["INCR", "n"]]),
        rec(0, &[&["UNLINK", STATE]]),
        rec(0, &[&["SET", STATE, "garbage"]]),
        rec(
            0,
            &[&[
                "EVAL",
                "redis.call('DEL', '__remoteback:state') return redis.call('INCR', KEYS[1])",
                "1",
                "n",
            ]],
        ),
        rec(1, &[&["SET", "f", "1"], &["SWAPDB", "1", "0"]]),
        rec(0, &[&["INCR", "n"]]),
    ];
    // A reference without the state keys does what the primary did.
    let reference_records: Vec<Rec> = records
        .iter()
        .filter(|r| !r.commands.iter().any(|c| c.iter().any(|a| a == STATE)))
        .cloned()
        .collect();
    apply_reference(&reference, &reference_records);
    produce(&broker, topic, &records);
    let n = records.len();
    let (mut first, port) = replay_until_applied(&broker, &backup, topic, 1);
    assert_equal(&reference, &backup, &[0, 1, 2, 3]);
    let applied = Status(port).value("remoteback_replay_records_applied_total");
    assert_eq!(applied as usize, n);
    assert_eq!(
        hget(&backup, &format!("offset:{topic}:0")),
        Some(n.to_string())
    );
    assert_eq!(
        hget(&backup, &format!("seq:{topic}:0:{SOURCE}")),
        Some(format!("100:{n}"))
    );
    let mut con = connect(backup.port());
    for db in 1..=3 {
        let _: () = redis::cmd("SELECT")
            .arg(db)
            .query(&mut con)
            .expect("SELECT");
        let exists: i64 = redis::cmd("EXISTS")
            .arg(STATE)
            .query(&mut con)
            .expect("EXISTS");
        assert_eq!(exists, 0, "no copy of the state in db {db}");
    }
    let log = first.log();
    assert!(!log.contains("lost writes"), "{}", tail(&log, 30));
    first.terminate(Duration::from_secs(30));
    let (again, port) = replay_until_applied(&broker, &backup, topic, 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        Status(port).value("remoteback_replay_records_applied_total"),
        0
    );
    assert!(again
        .log()
        .contains(&format!("starting at offset {n} (stored in the backup)")));
    assert_equal(&reference, &backup, &[0, 1, 2, 3]);
    eprintln!(
        "[check] {n} records with FLUSHALL, FLUSHDB, SWAPDB, MOVE/COPY/DEL/UNLINK/SET of the state and an EVAL deleting it: all applied once, state kept, no copies in dbs 1-3; a restart applied nothing"
    );
}

/// Four partitions with per-partition writes and barrier copies (markers
/// pushed onto every partition's list, a counter, one FLUSHALL), two
/// replays sharing the topic (partitions 0, 1 and 2, 3), each SIGKILLed
/// several times while applying. The backup must end equal to the
/// reference: every list in its order with each barrier's marker once, in
/// its place.
#[test]
fn barriers_across_two_replays_killed_while_applying_apply_once_in_order() {
    let seed = seed();
    eprintln!("[inject] seed {seed}");
    let mut rng = Rng::new(seed);
    let broker = Broker::start();
    let backup = RedisServer::start();
    let reference = RedisServer::start();
    let topic = "barriers";
    const P: i32 = 4;
    broker.create_topic(topic, P);
    let mut seqs = [0u64; P as usize];
    let mut next = |p: i32| {
        seqs[p as usize] += 1;
        seqs[p as usize]
    };
    let mut order: Vec<Rec> = Vec::new(); // one copy of each barrier
    let mut all: Vec<Rec> = Vec::new(); // every copy
    let mut barrier = 0u64;
    for round in 0..80 {
        for p in 0..P {
            for i in 0..rng.below(6) {
                let v = format!("{round}:{p}:{i}");
                let r = Rec::new(
                    p,
                    100,
                    next(p),
                    &[
                        &["INCR", &format!("c:{p}")],
                        &["RPUSH", &format!("list:{p}"), &v],
                    ],
                );
                order.push(r.clone());
                all.push(r);
            }
        }
        if round % 2 == 1 {
            barrier += 1;
            let marker = format!("B{barrier}");
            let commands: Vec<Vec<String>> = if barrier == 10 {
                vec![vec!["FLUSHALL".into()]]
            } else {
                let mut c: Vec<Vec<String>> = (0..P)
                    .map(|p| vec!["RPUSH".into(), format!("list:{p}"), marker.clone()])
                    .collect();
                c.push(vec!["INCR".into(), "barriers".into()]);
                c.push(vec!["SET".into(), "last".into(), marker.clone()]);
                c
            };
            for p in 0..P {
                let mut r = Rec::new(p, 100, next(p), &[]);
                r.commands = commands.clone();
                r.barrier = Some(format!("{barrier}/{P}"));
                if p == 0 {
                    order.push(r.clone());
                }
                all.push(r);
            }
        }
    }
    apply_reference(&reference, &order);
    // Each partition's records in their order; partitions interleaved.
    produce(&broker, topic, &all);
    eprintln!(
        "[inject] {} records ({barrier} barriers, one a FLUSHALL) over {P} partitions",
        all.len()
    );
    let mut a = replay(&broker, &backup, topic, "", "partitions = [0, 1]");
    let mut b = replay(&broker, &backup, topic, "", "partitions = [2, 3]");
    let total = || -> i64 {
        stored_offsets(&backup, topic, P)
            .iter()
            .map(|o| o.unwrap_or(0))
            .sum()
    };
    let end: i64 = end_offsets(&broker, topic, P).iter().sum();
    let mut kills = 0;
    let mut last = total();
    for n in 0..8 {
        wait_until(Duration::from_secs(60), "the replays applying", || {
            total() > last || total() == end
        });
        if total() == end {
            break;
        }
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        let at = total();
        let victim = if n % 2 == 0 { &mut a } else { &mut b };
        victim.kill();
        kills += 1;
        eprintln!(
            "[inject] SIGKILL {kills} of replay {} at {at} of {end} records",
            if n % 2 == 0 { "A" } else { "B" }
        );
        std::thread::sleep(Duration::from_millis(rng.below(200)));
        victim.restart();
        last = at;
    }
    wait_applied(&broker, &backup, topic, P, &[&a, &b]);
    assert_equal(&reference, &backup, &[0]);
    for s in [&a, &b] {
        let log = s.log();
        assert!(!log.contains("ERROR"), "{}", tail(&log, 40));
    }
    let list0: Vec<String> = redis::cmd("LRANGE")
        .arg("list:0")
        .arg(0)
        .arg(-1)
        .query(&mut connect(backup.port()))
        .expect("LRANGE");
    eprintln!(
        "[check] after {kills} SIGKILLs: all {end} records applied, backup equals the reference (lists with barrier markers in place, {} entries in list:0, counter barriers = {:?})",
        list0.len(),
        common::faults::get(backup.port(), 0, "barriers")
    );
    a.terminate(Duration::from_secs(30));
    b.terminate(Duration::from_secs(30));
}

/// A barrier over two partitions of which only partition 0 is consumed:
/// partition 0 waits at it (nothing after it applied) and says so after
/// 10 s, naming the partition missing; a replay of partition 1 started
/// later completes it.
#[test]
fn a_barrier_waits_for_every_partition_and_names_those_missing() {
    let broker = Broker::start();
    let backup = RedisServer::start();
    let topic = "stalled";
    broker.create_topic(topic, 2);
    let mut records = vec![
        Rec::new(0, 100, 1, &[&["RPUSH", "l", "before"]]),
        Rec::new(1, 100, 1, &[&["RPUSH", "m", "before"]]),
    ];
    for p in 0..2 {
        let mut copy = Rec::new(p, 100, 2, &[&["RPUSH", "l", "B1"], &["RPUSH", "m", "B1"]]);
        copy.barrier = Some("1/2".into());
        records.push(copy);
    }
    records.push(Rec::new(0, 100, 3, &[&["RPUSH", "l", "after"]]));
    records.push(Rec::new(1, 100, 3, &[&["RPUSH", "m", "after"]]));
    produce(&broker, topic, &records);
    let (top, port) = metrics_top();
    let zero = replay(&broker, &backup, topic, &top, "partitions = [0]");
    zero.wait_port(port);
    wait_until(Duration::from_secs(30), "the wait logged", || {
        zero.log()
            .contains("waiting 10s at barrier 1/2 of test:6379 run 100")
    });
    let log = zero.log();
    assert!(
        log.contains("not arrived yet: stalled[1] (a partition no replay consumes stalls the barrier forever"),
        "{}",
        tail(&log, 10)
    );
    let range = |key: &str| -> Vec<String> {
        redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(&mut connect(backup.port()))
            .expect("LRANGE")
    };
    assert_eq!(range("l"), ["before"], "nothing after the barrier");
    assert_eq!(
        stored_offsets(&backup, topic, 2)[0],
        Some(1),
        "waiting at its copy"
    );
    eprintln!("[check] partition 0 waits at the barrier, logged after 10 s naming stalled[1]");
    // Its arrival deleted behind its back: it stores it again.
    let arrival = || -> Option<String> {
        redis::cmd("HGET")
            .arg("__remoteback:state")
            .arg(format!("arrived:{topic}:0"))
            .query(&mut connect(backup.port()))
            .expect("HGET")
    };
    let before = arrival().expect("partition 0 stored its arrival");
    let _: i64 = redis::cmd("HDEL")
        .arg("__remoteback:state")
        .arg(format!("arrived:{topic}:0"))
        .query(&mut connect(backup.port()))
        .expect("HDEL");
    wait_until(Duration::from_secs(10), "the arrival stored again", || {
        arrival().as_deref() == Some(before.as_str())
    });
    assert!(zero
        .log()
        .contains("is gone from __remoteback:state; stored again"));
    eprintln!("[check] its arrival deleted from the state, partition 0 stored it again ({before})");
    let one = replay(&broker, &backup, topic, "", "partitions = [1]");
    wait_applied(&broker, &backup, topic, 2, &[&zero, &one]);
    assert_eq!(range("l"), ["before", "B1", "after"]);
    assert_eq!(range("m"), ["before", "B1", "after"]);
    assert_eq!(
        Status(port).value("remoteback_replay_barriers_applied_total"),
        1
    );
    eprintln!("[check] with partition 1 consumed the barrier ran once, in its place on both lists");
}

/// The proxy died while writing a barrier's copies: partition 1 never got
/// its copy of barrier 1 and meets barrier 2 next. Partition 0 does not wait
/// for it forever: barrier 1 is applied once partition 1 is seen past it,
/// the lost copy is reported (resync needed), and barrier 2 is applied in
/// its place.
#[test]
fn a_barrier_copy_lost_by_the_proxy_does_not_stall_the_others() {
    let broker = Broker::start();
    let backup = RedisServer::start();
    let topic = "lostcopy";
    broker.create_topic(topic, 2);
    let barrier = |p: i32, seq: u64, n: u64| {
        let marker = format!("B{n}");
        let mut copy = Rec::new(
            p,
            100,
            seq,
            &[&["RPUSH", "l", &marker], &["RPUSH", "m", &marker]],
        );
        copy.barrier = Some(format!("{n}/2"));
        copy
    };
    let records = vec![
        Rec::new(0, 100, 1, &[&["RPUSH", "l", "a"]]),
        barrier(0, 2, 1),
        Rec::new(0, 100, 3, &[&["RPUSH", "l", "b"]]),
        barrier(0, 4, 2),
        Rec::new(1, 100, 1, &[&["RPUSH", "m", "a"]]),
        // The copy of barrier 1 for partition 1 was never written.
        Rec::new(1, 100, 2, &[&["RPUSH", "m", "b"]]),
        barrier(1, 3, 2),
        Rec::new(0, 100, 5, &[&["RPUSH", "l", "c"]]),
        Rec::new(1, 100, 4, &[&["RPUSH", "m", "c"]]),
    ];
    produce(&broker, topic, &records);
    let (service, port) = replay_until_applied(&broker, &backup, topic, 2);
    let range = |key: &str| -> Vec<String> {
        redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(&mut connect(backup.port()))
            .expect("LRANGE")
    };
    assert_eq!(range("l"), ["a", "B1", "b", "B2", "c"]);
    assert_eq!(
        range("m"),
        ["a", "b", "B1", "B2", "c"],
        "B1 after m's b: its copy was lost"
    );
    assert_eq!(
        Status(port).value("remoteback_replay_barriers_applied_total"),
        2
    );
    let (code, health) = Status(port).get("/health");
    assert_eq!(code, 503, "{health}");
    assert!(
        health.contains("barrier 1/2 of test:6379 run 100 never reached lostcopy[1]"),
        "{health}"
    );
    assert!(service.log().contains("ERROR"));
    eprintln!("[check] barrier 1 applied once without partition 1's lost copy, reported: {health}");
}

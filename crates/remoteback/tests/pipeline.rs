//! The whole pipeline with real processes: primary and backup redis-server,
//! a tansu broker, `remoteback proxy` and `remoteback replay`.

mod common;

use std::time::Duration;

use common::pipeline::{connect, Pipeline, Setup, TOPIC};
use common::{workload, Service};

fn start(message: &'static str, worker: &'static str, sender_extra: &str) -> Pipeline {
    Pipeline::start(Setup {
        message,
        worker,
        sender_extra: sender_extra.to_string(),
        ..Setup::default()
    })
}

#[test]
fn original_example_set_reaches_backup_and_get_does_not_reach_kafka() {
    let p = start("PROTOCOL", "coroutine", "");
    let mut c = p.client();
    let _: () = redis::cmd("SET")
        .arg("a")
        .arg("a")
        .query(&mut c)
        .expect("SET");
    let got: String = redis::cmd("GET").arg("a").query(&mut c).expect("GET");
    assert_eq!(got, "a");
    p.wait_backup_value(0, "a", "a");
    let records: Vec<_> = p
        .topic_records()
        .into_iter()
        .filter(|(headers, _)| !headers.iter().any(|(k, _)| k == "rb-heartbeat"))
        .collect();
    assert_eq!(records.len(), 1, "only the SET is in Kafka: {records:?}");
    let (headers, payload) = &records[0];
    assert_eq!(payload, b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\na\r\n");
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(header("rb-format").as_deref(), Some(&b"PROTOCOL"[..]));
    assert_eq!(header("rb-db").as_deref(), Some(&b"0"[..]));
    assert_eq!(header("rb-seq").as_deref(), Some(&b"1"[..]));
}

/// 10,000 mixed commands from 8 concurrent clients, each on its own keys.
fn converges(message: &'static str, worker: &'static str) {
    converges_with(Setup {
        message,
        worker,
        ..Setup::default()
    });
}

fn converges_with(setup: Setup) {
    let p = Pipeline::start(setup);
    let threads: Vec<_> = (0..8)
        .map(|client| {
            let port = p.proxy_port;
            std::thread::spawn(move || workload::run_client(&mut connect(port), client, 1250, 42))
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let mut primary = connect(p.primary.port());
    let keys: usize = redis::cmd("DBSIZE").query(&mut primary).expect("DBSIZE");
    assert!(keys > 100, "the workload wrote only {keys} keys");
    p.assert_converges(&[0, 1], Duration::from_secs(90));
}

#[test]
fn protocol_coroutine_converges() {
    converges("PROTOCOL", "coroutine");
}

#[test]
fn protocol_thread_converges() {
    converges("PROTOCOL", "thread");
}

#[test]
fn string_coroutine_converges() {
    converges("STRING", "coroutine");
}

#[test]
fn string_thread_converges() {
    converges("STRING", "thread");
}

/// With `ack = "kafka"` every reply waits for Kafka; the mixed workload
/// (pipelines, transactions, blocking pops) still gets every reply in order
/// and the backup converges.
#[test]
fn ack_kafka_thread_converges() {
    converges_with(Setup {
        worker: "thread",
        proxy_extra: "ack = \"kafka\"".into(),
        ..Setup::default()
    });
}

/// A deep pipeline with `ack = "kafka"`: every reply arrives, in order, each
/// after its write is in Kafka (the replay has no part in it: not started).
#[test]
fn ack_kafka_answers_a_deep_pipeline_in_order() {
    let p = Pipeline::start(Setup {
        proxy_extra: "ack = \"kafka\"".into(),
        replay: false,
        ..Setup::default()
    });
    let mut c = p.client();
    let mut pipe = redis::pipe();
    for _ in 0..2000 {
        pipe.cmd("INCR").arg("n").cmd("GET").arg("n");
    }
    let replies: Vec<i64> = pipe.query(&mut c).expect("pipeline through the proxy");
    let expected: Vec<i64> = (1..=2000).flat_map(|i| [i, i]).collect();
    assert_eq!(
        replies, expected,
        "replies in order, each GET after its INCR"
    );
    let incrs = p.topic_commands().iter().filter(|c| c.is("INCR")).count();
    assert_eq!(incrs, 2000, "every acknowledged INCR is in Kafka");
}

/// A client that pipelines writes and hangs up without reading a reply: the
/// writes still run on the primary, so the proxy must read, match and
/// capture their replies even though nobody takes them.
#[test]
fn writes_of_a_client_that_hangs_up_unread_are_captured() {
    use std::io::Write;
    let p = start("PROTOCOL", "coroutine", "");
    let mut requests = Vec::new();
    for i in 0..20_000 {
        let key = format!("gone:{i}");
        requests.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len()).as_bytes(),
        );
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", p.proxy_port)).expect("connect");
    s.write_all(&requests).expect("send the pipeline");
    drop(s);
    // How many SETs reach the primary depends on how much of them the proxy
    // read before the hang-up; wait until that settles.
    let mut primary = connect(p.primary.port());
    let mut last = usize::MAX;
    common::wait_until(
        Duration::from_secs(30),
        "the primary's key count to settle",
        || {
            std::thread::sleep(Duration::from_millis(500));
            let now: usize = redis::cmd("DBSIZE").query(&mut primary).expect("DBSIZE");
            std::mem::replace(&mut last, now) == now
        },
    );
    assert!(last > 1000, "only {last} SETs reached the primary");
    eprintln!("{last} of 20000 SETs reached the primary before the hang-up");
    p.assert_converges(&[0], Duration::from_secs(60));
}

/// A proxy killed mid-connection sends no `rb-close`; its next run numbers
/// connections afresh. The replay must not continue the old connection (in
/// database 3 after its `SELECT`) with the new one's bytes.
#[test]
fn row_connections_of_a_restarted_proxy_are_not_continued() {
    let mut p = start("ROW", "coroutine", "");
    let mut first = p.client();
    let _: () = redis::cmd("SELECT")
        .arg(3)
        .query(&mut first)
        .expect("SELECT");
    let _: () = redis::cmd("SET")
        .arg("old")
        .arg(1)
        .query(&mut first)
        .expect("SET");
    p.wait_backup_value(3, "old", "1");
    p.proxy.restart();
    p.proxy.wait_port(p.proxy_port);
    drop(first);
    let mut second = p.client();
    let _: () = redis::cmd("SET")
        .arg("new")
        .arg(1)
        .query(&mut second)
        .expect("SET");
    common::wait_until(Duration::from_secs(30), "new on the backup", || {
        p.backup_get(0, "new").is_some() || p.backup_get(3, "new").is_some()
    });
    assert!(
        p.backup_get(0, "new").is_some(),
        "the new connection's SET landed in the old connection's database 3"
    );
}

#[test]
fn row_coroutine_converges() {
    converges("ROW", "coroutine");
}

#[test]
fn row_thread_converges() {
    converges("ROW", "thread");
}

/// Keys and values that break text-based tools arrive byte for byte.
fn binary_safe(message: &'static str) {
    let p = start(message, "coroutine", "");
    let mut c = p.client();
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"empty".to_vec(), Vec::new()),
        (b"".to_vec(), b"empty key".to_vec()),
        (b"nul\0key".to_vec(), b"\0\0\0".to_vec()),
        (b"crlf\r\nkey".to_vec(), b"a\r\nb\r\n".to_vec()),
        (
            b"\xff\xfe invalid utf8".to_vec(),
            b"\xc3\x28\xa0\xa1".to_vec(),
        ),
        (b"quotes \"'\\".to_vec(), b"\"\\x41\" 'x' \\".to_vec()),
        (b"big".to_vec(), big),
    ];
    for (k, v) in &cases {
        let _: () = redis::cmd("SET").arg(k).arg(v).query(&mut c).expect("SET");
    }
    let _: () = redis::cmd("HSET")
        .arg(b"h\0")
        .arg(b"f\r\n")
        .arg(b"\xff")
        .query(&mut c)
        .expect("HSET");
    let _: () = redis::cmd("RPUSH")
        .arg(b"l")
        .arg(b"")
        .arg(b"\0")
        .query(&mut c)
        .expect("RPUSH");
    p.assert_converges(&[0], Duration::from_secs(60));
    let mut backup = connect(p.backup.port());
    for (k, v) in &cases {
        let got: Vec<u8> = redis::cmd("GET")
            .arg(k)
            .query(&mut backup)
            .expect("GET backup");
        assert_eq!(&got, v, "key {:?}", k.escape_ascii().to_string());
    }
}

#[test]
fn protocol_is_binary_safe() {
    binary_safe("PROTOCOL");
}

#[test]
fn string_is_binary_safe() {
    binary_safe("STRING");
}

#[test]
fn row_is_binary_safe() {
    binary_safe("ROW");
}

#[test]
fn filter_sends_only_listed_commands() {
    let p = start("STRING", "coroutine", r#"filter = ["set", "Incr"]"#);
    let mut c = p.client();
    let _: () = redis::cmd("SET")
        .arg("s")
        .arg("1")
        .query(&mut c)
        .expect("SET");
    let _: i64 = redis::cmd("INCR").arg("n").query(&mut c).expect("INCR");
    let _: i64 = redis::cmd("LPUSH")
        .arg("l")
        .arg("x")
        .query(&mut c)
        .expect("LPUSH");
    let _: () = redis::cmd("SET")
        .arg("s2")
        .arg("2")
        .query(&mut c)
        .expect("SET");
    p.wait_backup_value(0, "s2", "2");
    // However the proxy packed them into messages: the commands, in order.
    let lines = String::from_utf8(p.topic_payload()).expect("STRING is text");
    assert_eq!(lines, "SET s 1\nINCR n\nSET s2 2\n");
    let exists: i64 = redis::cmd("EXISTS")
        .arg("l")
        .query(&mut connect(p.backup.port()))
        .expect("EXISTS");
    assert_eq!(exists, 0, "LPUSH is not in the filter");
}

#[test]
fn transactions_replicate_only_what_ran() {
    let p = start("PROTOCOL", "coroutine", "");
    let mut c = p.client();
    // Executed: both writes, one record.
    let _: redis::Value = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("t1")
        .arg("x")
        .cmd("INCR")
        .arg("t2")
        .query(&mut c)
        .expect("EXEC");
    // Discarded.
    let _: () = redis::cmd("MULTI").query(&mut c).expect("MULTI");
    let _: String = redis::cmd("SET")
        .arg("discarded")
        .arg("x")
        .query(&mut c)
        .expect("QUEUED");
    let _: () = redis::cmd("DISCARD").query(&mut c).expect("DISCARD");
    // Aborted at queue time (EXECABORT).
    let _: () = redis::cmd("MULTI").query(&mut c).expect("MULTI");
    let _: String = redis::cmd("SET")
        .arg("aborted")
        .arg("x")
        .query(&mut c)
        .expect("QUEUED");
    assert!(redis::cmd("SET")
        .arg("only-key")
        .query::<String>(&mut c)
        .is_err());
    assert!(redis::cmd("EXEC").query::<redis::Value>(&mut c).is_err());
    // WATCH failed: EXEC answers nil.
    let _: () = redis::cmd("WATCH").arg("w").query(&mut c).expect("WATCH");
    let _: () = redis::cmd("SET")
        .arg("w")
        .arg("changed")
        .query(&mut connect(p.primary.port()))
        .expect("SET");
    let _: () = redis::cmd("MULTI").query(&mut c).expect("MULTI");
    let _: String = redis::cmd("SET")
        .arg("watched")
        .arg("x")
        .query(&mut c)
        .expect("QUEUED");
    let nil: redis::Value = redis::cmd("EXEC").query(&mut c).expect("EXEC");
    assert_eq!(nil, redis::Value::Nil);
    let _: () = redis::cmd("SET")
        .arg("last")
        .arg("1")
        .query(&mut c)
        .expect("SET");
    p.wait_backup_value(0, "last", "1");
    let commands = p.topic_commands();
    let names: Vec<String> = commands
        .iter()
        .map(|c| String::from_utf8_lossy(c.name()).to_ascii_uppercase())
        .collect();
    let multi = names
        .iter()
        .position(|n| n == "MULTI")
        .expect("the transaction");
    assert_eq!(
        names.iter().filter(|n| *n == "MULTI").count(),
        1,
        "only the transaction that ran: {names:?}"
    );
    let exec = names.iter().position(|n| n == "EXEC").expect("its EXEC");
    assert!(multi < exec, "{names:?}");
    assert_eq!(
        commands.last().map(|c| c.args()[1].to_vec()),
        Some(b"last".to_vec()),
        "SET last after it: {names:?}"
    );
    let mut backup = connect(p.backup.port());
    for gone in ["discarded", "aborted", "watched", "w"] {
        let n: i64 = redis::cmd("EXISTS")
            .arg(gone)
            .query(&mut backup)
            .expect("EXISTS");
        assert_eq!(n, 0, "{gone} must not reach the backup");
    }
    let t2: i64 = redis::cmd("GET").arg("t2").query(&mut backup).expect("GET");
    assert_eq!(t2, 1);
}

#[test]
fn databases_follow_select() {
    let p = start("PROTOCOL", "coroutine", "");
    let mut c = p.client();
    for db in [3, 0, 7] {
        let _: () = redis::cmd("SELECT").arg(db).query(&mut c).expect("SELECT");
        let _: () = redis::cmd("SET")
            .arg("where")
            .arg(db)
            .query(&mut c)
            .expect("SET");
    }
    p.assert_converges(&[0, 3, 7], Duration::from_secs(30));
    let mut backup = connect(p.backup.port());
    for db in [3, 0, 7] {
        let _: () = redis::cmd("SELECT")
            .arg(db)
            .query(&mut backup)
            .expect("SELECT");
        let v: u32 = redis::cmd("GET")
            .arg("where")
            .query(&mut backup)
            .expect("GET");
        assert_eq!(v, db);
    }
}

#[test]
fn replay_stops_on_a_record_of_another_format() {
    let mut p = Pipeline::start(Setup {
        replay: false,
        ..Setup::default()
    });
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut p.client())
        .expect("SET");
    let mut replay = Service::replay(&p.replay_config("STRING", "coroutine"));
    let status = replay
        .wait_exit(Duration::from_secs(30))
        .expect("replay must stop by itself");
    assert!(!status.success());
    let log = replay.log();
    assert!(
        log.contains("is in PROTOCOL format but this replay expects STRING"),
        "log says why: {log}"
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg("k")
        .query(&mut connect(p.backup.port()))
        .expect("EXISTS");
    assert_eq!(exists, 0);
    p.replay = None;
}

/// Threads of a process whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn thread_replay_applies_each_partition_on_its_own_thread() {
    let mut p = Pipeline::start(Setup {
        partitions: 3,
        replay: false,
        ..Setup::default()
    });
    let replay = Service::replay(&p.replay_config("PROTOCOL", "thread"));
    let pid = replay.pid().expect("replay pid");
    p.replay = Some(replay);
    let mut c = p.client();
    for i in 0..300 {
        let _: () = redis::cmd("SET")
            .arg(format!("key{i}"))
            .arg(i)
            .query(&mut c)
            .expect("SET");
    }
    p.assert_converges(&[0], Duration::from_secs(60));
    assert_eq!(
        threads_named(pid, "partition-"),
        3,
        "one thread per partition"
    );
    let mut backup = connect(p.backup.port());
    let stored: Vec<Option<i64>> = (0..3)
        .map(|part| {
            redis::cmd("HGET")
                .arg("__remoteback:state")
                .arg(format!("offset:{TOPIC}:{part}"))
                .query(&mut backup)
                .expect("HGET offset")
        })
        .collect();
    let stored: Vec<i64> = stored
        .iter()
        .map(|o| o.expect("every partition got records"))
        .collect();
    assert_eq!(
        stored,
        common::faults::end_offsets(&p.broker, TOPIC, 3),
        "each partition's stored next offset is its end: all of it applied"
    );
}

#[test]
fn move_copy_swapdb_and_flushes_land_on_the_right_databases() {
    let p = start("PROTOCOL", "coroutine", "");
    let mut c = p.client();
    let q = |c: &mut redis::Connection, args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query::<redis::Value>(c)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    q(&mut c, &["SET", "moved", "1"]);
    q(&mut c, &["MOVE", "moved", "3"]);
    q(&mut c, &["SET", "copied", "2"]);
    q(&mut c, &["COPY", "copied", "copied", "DB", "4"]);
    q(&mut c, &["SELECT", "5"]);
    q(&mut c, &["SET", "swapped", "5"]);
    q(&mut c, &["SWAPDB", "5", "6"]);
    q(&mut c, &["SELECT", "7"]);
    q(&mut c, &["SET", "flushed", "7"]);
    q(&mut c, &["FLUSHDB"]);
    q(&mut c, &["SELECT", "8"]);
    q(&mut c, &["SET", "kept", "8"]);
    p.assert_converges(&[0, 3, 4, 5, 6, 7, 8], Duration::from_secs(30));
    let mut backup = connect(p.backup.port());
    let mut get_in = |db: u32, key: &str| -> Option<String> {
        let _: () = redis::cmd("SELECT")
            .arg(db)
            .query(&mut backup)
            .expect("SELECT");
        redis::cmd("GET").arg(key).query(&mut backup).expect("GET")
    };
    assert_eq!(get_in(3, "moved").as_deref(), Some("1"));
    assert_eq!(get_in(0, "moved"), None);
    assert_eq!(get_in(4, "copied").as_deref(), Some("2"));
    assert_eq!(get_in(6, "swapped").as_deref(), Some("5"));
    assert_eq!(get_in(5, "swapped"), None);
    assert_eq!(get_in(7, "flushed"), None);
    assert_eq!(get_in(8, "kept").as_deref(), Some("8"));
    // FLUSHALL empties every database of the backup too (but its offsets).
    let _: () = redis::cmd("FLUSHALL").query(&mut c).expect("FLUSHALL");
    p.assert_converges(&[0, 3, 4, 6, 8], Duration::from_secs(30));
    assert_eq!(get_in(8, "kept"), None);
}

#[test]
fn sigterm_lets_commands_in_flight_finish_and_delivers_their_records() {
    let mut p = start("PROTOCOL", "coroutine", "");
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .query(&mut p.on_primary())
        .expect("CLIENT PAUSE");
    let port = p.proxy_port;
    let writer = std::thread::spawn(move || {
        redis::cmd("SET")
            .arg("in-flight")
            .arg("1")
            .query::<String>(&mut connect(port))
    });
    std::thread::sleep(Duration::from_millis(300));
    eprintln!("[inject] SIGTERM to the proxy while a SET waits on the paused primary");
    let status = p
        .proxy
        .terminate(Duration::from_secs(30))
        .expect("proxy exits by itself");
    assert!(
        status.success(),
        "every record delivered: {status:?}\n{}",
        p.logs()
    );
    assert_eq!(
        writer
            .join()
            .expect("writer")
            .expect("the SET was answered"),
        "OK"
    );
    p.wait_backup_value(0, "in-flight", "1");
    eprintln!("[check] the client got +OK after SIGTERM, the proxy exited 0, the record reached the backup");
}

/// Writes pipelined faster than Kafka acknowledges messages travel packed,
/// several to a message, and still apply in order, each in its database,
/// exactly once; with `pack_bytes = 0` each is a message of its own.
#[test]
fn pipelined_writes_travel_packed_and_apply_in_order_in_their_databases() {
    for (pack_bytes, packed) in [("\"512kb\"", true), ("0", false)] {
        let metrics = common::free_port();
        let p = Pipeline::start(Setup {
            proxy_extra: format!("metrics = \"127.0.0.1:{metrics}\""),
            sender_extra: format!("pack_bytes = {pack_bytes}"),
            ..Setup::default()
        });
        const N: usize = 3000;
        let mut c = p.client();
        let mut pipe = redis::pipe();
        for i in 0..N {
            // A database switch every few writes: a pack selects each
            // write's database.
            let db = i / 7 % 3;
            pipe.cmd("SELECT").arg(db).ignore();
            pipe.cmd("RPUSH").arg("order").arg(i).ignore();
            pipe.cmd("INCR").arg(format!("n{db}")).ignore();
        }
        pipe.cmd("SELECT").arg(0).ignore();
        let () = pipe.query(&mut c).expect("the pipeline through the proxy");
        p.wait_applied();
        p.assert_converges(&[0, 1, 2], Duration::from_secs(60));
        let status = common::status::Status(metrics);
        let writes = status.value("remoteback_proxy_records_delivered_total");
        let messages = status.value("remoteback_proxy_kafka_messages_total");
        assert_eq!(writes, 2 * N as u64 + 1, "every write and the sentinel");
        assert_eq!(
            status.value("remoteback_proxy_kafka_delivery_seconds_count"),
            messages,
            "each message's delivery time is in the histogram"
        );
        assert_eq!(
            p.topic_commands()
                .iter()
                .filter(|c| !c.is("SELECT"))
                .count() as u64,
            writes
        );
        if packed {
            assert!(
                messages * 10 < writes,
                "{writes} writes in {messages} messages: a message of several while one is on its way"
            );
        } else {
            assert_eq!(messages, writes, "pack_bytes = 0: a message each");
        }
        let mut backup = p.on_backup();
        for db in 0..3 {
            let _: () = redis::cmd("SELECT").arg(db).query(&mut backup).unwrap();
            let order: Vec<usize> = redis::cmd("LRANGE")
                .arg("order")
                .arg(0)
                .arg(-1)
                .query(&mut backup)
                .unwrap();
            let expected: Vec<usize> = (0..N).filter(|i| i / 7 % 3 == db).collect();
            assert_eq!(order, expected, "db {db}: in order, each once");
        }
    }
}

/// Writes that follow one another closely leave at most one message per
/// `pack_gap_ms`, each message carrying what came in the gap, and all of
/// them apply, in order.
#[test]
fn writes_in_quick_succession_leave_a_message_per_gap() {
    let (p, metrics, _) = Pipeline::start_with_metrics(Setup {
        sender_extra: "pack_gap_ms = 300".into(),
        ..Setup::default()
    });
    const N: usize = 200;
    let mut c = p.client();
    // The topic's first message takes the producer's setup: after it the
    // broker acknowledges within milliseconds.
    let _: () = redis::cmd("SET")
        .arg("warm")
        .arg("1")
        .query(&mut c)
        .unwrap();
    p.wait_applied();
    let status = common::status::Status(metrics);
    let before = status.value("remoteback_proxy_kafka_messages_total");
    let started = std::time::Instant::now();
    for i in 0..N {
        // One at a time: each waits for its reply, not for Kafka.
        let _: i64 = redis::cmd("RPUSH")
            .arg("order")
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let elapsed = started.elapsed();
    p.wait_applied();
    let writes = status.value("remoteback_proxy_records_delivered_total");
    let messages = status.value("remoteback_proxy_kafka_messages_total") - before;
    assert_eq!(writes, N as u64 + 3, "every write and the two sentinels");
    // One a gap at most while they come, then the last pack and the
    // sentinel.
    let most = 3 + (elapsed.as_millis() / 300) as u64;
    assert!(
        messages <= most,
        "{writes} writes in {elapsed:?} took {messages} messages, more than {most}"
    );
    let order: Vec<usize> = redis::cmd("LRANGE")
        .arg("order")
        .arg(0)
        .arg(-1)
        .query(&mut p.on_backup())
        .unwrap();
    assert_eq!(order, (0..N).collect::<Vec<_>>(), "in order, each once");
}

/// With no writes the proxy's heartbeats keep the replay's lag at about
/// their interval; they apply nothing, carry no number and count as no
/// record; when the proxy stops, the lag grows.
#[test]
fn heartbeats_keep_the_lag_true_when_no_one_writes_and_show_a_dead_proxy() {
    let (mut p, proxy_metrics, replay_metrics) = Pipeline::start_with_metrics(Setup {
        proxy_extra: "heartbeat_ms = 200".into(),
        ..Setup::default()
    });
    let _: () = redis::cmd("SET")
        .arg("one")
        .arg("write")
        .query(&mut p.client())
        .unwrap();
    p.wait_backup_value(0, "one", "write");
    let (proxy, replay) = (
        common::status::Status(proxy_metrics),
        common::status::Status(replay_metrics),
    );
    let read = replay.value("remoteback_replay_heartbeats_total");
    common::wait_until(Duration::from_secs(20), "ten heartbeats more", || {
        replay.value("remoteback_replay_heartbeats_total") >= read + 10
    });
    let age = replay.value("remoteback_replay_age_of_last_applied_ms");
    assert!(
        age < 1000,
        "idle for 2 s, the lag is about the 200 ms interval: {age} ms"
    );
    let (_, text) = replay.get("/metrics");
    let lag: f64 = text
        .lines()
        .find(|l| l.starts_with("remoteback_replay_lag_seconds{") && l.contains("partition=\"0\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("a lag for partition 0 in:\n{text}"));
    assert!(lag < 1.0, "partition 0's lag: {lag} s");
    assert_eq!(
        proxy.value("remoteback_proxy_records_delivered_total"),
        1,
        "a heartbeat is no record"
    );
    assert!(proxy.value("remoteback_proxy_heartbeats_total") >= 10);
    let records = p.topic_records();
    let heartbeats: Vec<_> = records
        .iter()
        .filter(|(headers, _)| {
            headers
                .iter()
                .any(|(k, v)| k == "rb-heartbeat" && v == b"1")
        })
        .collect();
    assert!(heartbeats.len() >= 10, "{} heartbeats", heartbeats.len());
    for (headers, payload) in &heartbeats {
        assert!(payload.is_empty());
        assert!(
            !headers.iter().any(|(k, _)| k == "rb-seq"),
            "a heartbeat has no number: {headers:?}"
        );
    }
    assert_eq!(p.topic_commands().len(), 1, "nothing but the SET to apply");
    assert_eq!(
        replay.value("remoteback_replay_sequence_gaps_total")
            + replay.value("remoteback_replay_duplicates_skipped_total"),
        0
    );
    let series = |name: &str| format!("{name}{{topic=\"{TOPIC}\",partition=\"0\"}}");
    assert_eq!(
        replay.sample(&series(
            "remoteback_replay_partition_commands_applied_total"
        )),
        Some(1),
        "partition 0 applied the one write"
    );
    p.proxy.kill();
    common::wait_until(Duration::from_secs(20), "the lag to grow", || {
        replay.value("remoteback_replay_age_of_last_applied_ms") > 2000
    });
    // No more heartbeats: the replay's position reaches the partition's
    // end, which is every record the topic holds.
    let end = p.topic_records().len() as u64;
    common::wait_until(
        Duration::from_secs(20),
        "the position to reach the end",
        || replay.sample(&series("remoteback_replay_position")) == Some(end),
    );
    assert_eq!(
        replay.sample(&series("remoteback_replay_high_watermark")),
        Some(end)
    );
    assert_eq!(
        replay.sample(&series("remoteback_replay_records_behind")),
        Some(0)
    );
}

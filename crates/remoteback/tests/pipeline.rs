//! The whole pipeline with real processes: primary and backup redis-server,
//! a tansu broker, `remoteback proxy` and `remoteback replay`.

mod common;

use std::time::{Duration, Instant};

use common::{compare, free_port, workload, Broker, RedisServer, Service};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "remoteback";

/// A running pipeline.
struct Pipeline {
    primary: RedisServer,
    backup: RedisServer,
    broker: Broker,
    proxy: Service,
    replay: Option<Service>,
    proxy_port: u16,
}

impl Pipeline {
    /// Starts everything; `sender_extra` goes into the KafkaSender table.
    fn start(message: &str, worker: &str, sender_extra: &str) -> Pipeline {
        let p = Pipeline::without_replay(message, worker, sender_extra);
        let replay = Service::replay(&p.replay_config(message, worker));
        Pipeline {
            replay: Some(replay),
            ..p
        }
    }

    fn without_replay(message: &str, worker: &str, sender_extra: &str) -> Pipeline {
        let primary = RedisServer::start();
        let backup = RedisServer::start();
        let broker = Broker::start();
        broker.create_topic(TOPIC, 1);
        let proxy_port = free_port();
        let proxy = Service::proxy(&format!(
            r#"
bindport = {proxy_port}
connport = {primary}
message = "{message}"
worker = "{worker}"

[[sender]]
class = "KafkaSender"
topic = "{TOPIC}"
bootstrap-servers = "{bootstrap}"
linger-ms = 5
{sender_extra}
"#,
            primary = primary.port(),
            bootstrap = broker.bootstrap(),
        ));
        proxy.wait_port(proxy_port);
        Pipeline {
            primary,
            backup,
            broker,
            proxy,
            replay: None,
            proxy_port,
        }
    }

    fn replay_config(&self, message: &str, worker: &str) -> String {
        format!(
            r#"
message = "{message}"
worker = "{worker}"

[receiver]
class = "KafkaReceiver"
topic = "{TOPIC}"
polltimeout = 100
bootstrap-servers = "{bootstrap}"

[redis]
connip = "127.0.0.1"
connport = {backup}
"#,
            bootstrap = self.broker.bootstrap(),
            backup = self.backup.port(),
        )
    }

    fn client(&self) -> redis::Connection {
        connect(self.proxy_port)
    }

    /// Waits until the backup equals the primary in `dbs`; panics with the
    /// differences and the service logs if it does not within `timeout`.
    fn assert_converges(&self, dbs: &[u32], timeout: Duration) {
        let mut primary = connect(self.primary.port());
        let mut backup = connect(self.backup.port());
        let deadline = Instant::now() + timeout;
        loop {
            let diffs = compare::differences(&mut primary, &mut backup, dbs);
            if diffs.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let shown: Vec<String> = diffs.iter().take(10).map(|d| format!("{d:?}")).collect();
                panic!(
                    "backup differs from primary in {} keys after {timeout:?}:\n{}\n--- proxy log ---\n{}\n--- replay log ---\n{}",
                    diffs.len(),
                    shown.join("\n"),
                    tail(&self.proxy.log()),
                    self.replay.as_ref().map(|r| tail(&r.log())).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
}

/// A consumed record: its headers and payload.
type TopicRecord = (Vec<(String, Vec<u8>)>, Vec<u8>);

/// Every record in the topic.
fn topic_records(broker: &Broker) -> Vec<TopicRecord> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(3) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((headers, m.payload().unwrap_or_default().to_vec()));
                quiet = Instant::now();
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    out
}

#[test]
fn original_example_set_reaches_backup_and_get_does_not_reach_kafka() {
    let p = Pipeline::start("PROTOCOL", "coroutine", "");
    let mut c = p.client();
    let _: () = redis::cmd("SET")
        .arg("a")
        .arg("a")
        .query(&mut c)
        .expect("SET");
    let got: String = redis::cmd("GET").arg("a").query(&mut c).expect("GET");
    assert_eq!(got, "a");
    common::wait_until(Duration::from_secs(30), "a = a on the backup", || {
        redis::cmd("GET")
            .arg("a")
            .query::<Option<String>>(&mut connect(p.backup.port()))
            .ok()
            .flatten()
            .as_deref()
            == Some("a")
    });
    let records = topic_records(&p.broker);
    assert_eq!(records.len(), 1, "only the SET is in Kafka: {records:?}");
    let (headers, payload) = &records[0];
    assert_eq!(payload, b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\na\r\n");
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(header("rb-format").as_deref(), Some(&b"PROTOCOL"[..]));
    assert_eq!(header("rb-db").as_deref(), Some(&b"0"[..]));
    assert_eq!(header("rb-seq").as_deref(), Some(&b"1"[..]));
}

/// 10,000 mixed commands from 8 concurrent clients, each on its own keys.
fn converges(message: &str, worker: &str) {
    let p = Pipeline::start(message, worker, "");
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

#[test]
fn row_coroutine_converges() {
    converges("ROW", "coroutine");
}

#[test]
fn row_thread_converges() {
    converges("ROW", "thread");
}

/// Keys and values that break text-based tools arrive byte for byte.
fn binary_safe(message: &str) {
    let p = Pipeline::start(message, "coroutine", "");
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
    let p = Pipeline::start("STRING", "coroutine", r#"filter = ["set", "Incr"]"#);
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
    common::wait_until(Duration::from_secs(30), "s2 on the backup", || {
        redis::cmd("EXISTS")
            .arg("s2")
            .query::<i64>(&mut connect(p.backup.port()))
            .unwrap_or(0)
            == 1
    });
    let payloads: Vec<Vec<u8>> = topic_records(&p.broker)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        payloads,
        vec![
            b"SET s 1\n".to_vec(),
            b"INCR n\n".to_vec(),
            b"SET s2 2\n".to_vec()
        ]
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg("l")
        .query(&mut connect(p.backup.port()))
        .expect("EXISTS");
    assert_eq!(exists, 0, "LPUSH is not in the filter");
}

#[test]
fn transactions_replicate_only_what_ran() {
    let p = Pipeline::start("PROTOCOL", "coroutine", "");
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
    common::wait_until(Duration::from_secs(30), "last on the backup", || {
        redis::cmd("EXISTS")
            .arg("last")
            .query::<i64>(&mut connect(p.backup.port()))
            .unwrap_or(0)
            == 1
    });
    let payloads: Vec<Vec<u8>> = topic_records(&p.broker)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        payloads.len(),
        2,
        "one record for the transaction, one for SET last"
    );
    assert!(payloads[0].starts_with(b"*1\r\n$5\r\nMULTI\r\n"));
    assert!(payloads[0].ends_with(b"*1\r\n$4\r\nEXEC\r\n"));
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
    let p = Pipeline::start("PROTOCOL", "coroutine", "");
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
    let mut p = Pipeline::without_replay("PROTOCOL", "coroutine", "");
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
    let primary = RedisServer::start();
    let backup = RedisServer::start();
    let broker = Broker::start();
    broker.create_topic(TOPIC, 3);
    let proxy_port = free_port();
    let proxy = Service::proxy(&format!(
        "bindport = {proxy_port}\nconnport = {}\n[[sender]]\nclass = \"KafkaSender\"\ntopic = \"{TOPIC}\"\nbootstrap-servers = \"{}\"\n",
        primary.port(),
        broker.bootstrap()
    ));
    proxy.wait_port(proxy_port);
    let mut p = Pipeline {
        primary,
        backup,
        broker,
        proxy,
        replay: None,
        proxy_port,
    };
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
            redis::cmd("GET")
                .arg(format!("__remoteback:offset:{TOPIC}:{part}"))
                .query(&mut backup)
                .expect("GET offset")
        })
        .collect();
    let total: i64 = stored
        .iter()
        .map(|o| o.expect("every partition got records"))
        .sum();
    assert_eq!(
        total, 300,
        "the stored next offsets add up to the records applied"
    );
}

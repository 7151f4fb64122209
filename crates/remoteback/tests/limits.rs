//! The proxy's limits on clients (docs/limits.md), against a real
//! redis-server and a `remoteback proxy` process (a LogSender only).

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use common::pipeline::{connect, Pipeline, Setup, TOPIC};
use common::status::Status;
use common::{free_port, raise_open_files_limit, rss_bytes, wait_until, RedisServer, Service};
use remoteback_protocol::codec::protocol;

fn ping(con: &mut redis::Connection) -> String {
    redis::cmd("PING").query(con).expect("PING")
}

/// `maxclients = 2`: a third client gets Redis's error and is closed, is
/// counted, and the clients already connected are untouched; once one
/// leaves, a new client is served.
#[test]
fn a_client_over_maxclients_gets_redis_error_and_the_others_go_on() {
    let primary = RedisServer::start();
    let (port, metrics) = (free_port(), free_port());
    let proxy = Service::proxy(&format!(
        r#"
bindport = {port}
connport = {primary}
maxclients = 2
metrics = "127.0.0.1:{metrics}"

[[sender]]
class = "LogSender"
"#,
        primary = primary.port()
    ));
    proxy.wait_port(port);
    proxy.wait_port(metrics);
    let status = Status(metrics);
    let client = || {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection())
            .expect("connect")
    };
    let (mut first, mut second) = (client(), client());
    assert_eq!(ping(&mut first), "PONG");
    assert_eq!(ping(&mut second), "PONG");

    let mut third = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::new();
    third
        .read_to_end(&mut got)
        .expect("read until the proxy closes");
    assert_eq!(got, b"-ERR max number of clients reached\r\n");
    assert_eq!(status.value("remoteback_proxy_clients_refused_total"), 1);
    assert_eq!(status.value("remoteback_proxy_clients"), 2);
    assert_eq!(ping(&mut first), "PONG", "a connected client is untouched");

    drop(first);
    wait_until(
        Duration::from_secs(10),
        "the first client to be gone",
        || status.value("remoteback_proxy_clients") == 1,
    );
    let mut fourth = client();
    assert_eq!(ping(&mut fourth), "PONG");
    assert_eq!(ping(&mut second), "PONG");
    let log = proxy.log();
    assert!(
        log.contains("refused: 2 clients connected (maxclients); 1 refused so far"),
        "{log}"
    );
    eprintln!("[check] maxclients = 2: the third client read \"-ERR max number of clients reached\" and was closed; clients_refused_total 1; the others answered PONG; after one left a new client was served");
}

/// A multi-bulk `SET key value`.
fn set_request(key: &str, value: &str) -> Vec<u8> {
    format!(
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
        key.len(),
        value.len()
    )
    .into_bytes()
}

/// One malformed or over-limit request, sent between a `SET before:NAME`
/// and a `SET after:NAME` on one connection.
struct Broken {
    name: &'static str,
    bytes: Vec<u8>,
    /// The error text after `-ERR `.
    error: &'static str,
}

/// The requests of the table, each Redis's own limit or malformation.
fn broken_requests() -> Vec<Broken> {
    // More than 64 KiB without a line end, so that the error comes however
    // the proxy's reads divide the stream.
    let long = |head: &[u8], fill: u8| {
        let mut b = head.to_vec();
        b.resize(256 * 1024, fill);
        b
    };
    let set_with_bulk =
        |len: &str| format!("*3\r\n$3\r\nSET\r\n$6\r\nbroken\r\n${len}\r\nxxxx").into_bytes();
    vec![
        Broken {
            name: "bulk-over-proto-max-bulk-len",
            // One byte over the configured 1mb, declared but not sent.
            bytes: set_with_bulk("1048577"),
            error: "Protocol error: invalid bulk length",
        },
        Broken {
            name: "bulk-length-not-a-number",
            bytes: set_with_bulk("+3"),
            error: "Protocol error: invalid bulk length",
        },
        Broken {
            name: "count-over-int-max",
            bytes: b"*2147483648\r\n".to_vec(),
            error: "Protocol error: invalid multibulk length",
        },
        Broken {
            name: "count-not-a-number",
            bytes: b"*x\r\n".to_vec(),
            error: "Protocol error: invalid multibulk length",
        },
        Broken {
            name: "inline-over-64k",
            bytes: long(b"SET broken ", b'a'),
            error: "Protocol error: too big inline request",
        },
        Broken {
            name: "count-string-over-64k",
            bytes: long(b"*", b'1'),
            error: "Protocol error: too big mbulk count string",
        },
        Broken {
            name: "bulk-count-string-over-64k",
            bytes: long(b"*3\r\n$3\r\nSET\r\n$", b'1'),
            error: "Protocol error: too big bulk count string",
        },
        Broken {
            name: "type-byte-not-dollar",
            bytes: b"*3\r\n$3\r\nSET\r\n:6\r\nbroken\r\n".to_vec(),
            error: "Protocol error: expected '$', got ':'",
        },
        Broken {
            name: "unbalanced-quotes-inline",
            bytes: b"SET \"broken v\r\n".to_vec(),
            error: "Protocol error: unbalanced quotes in request",
        },
    ]
}

/// Sends `SET before:NAME`, the broken request and `SET after:NAME` on a
/// new connection to `port`; checks that the client reads `+OK` and the
/// error, and that the proxy then closes the connection. The writes go
/// from a thread of their own: the proxy stops reading at the error, so a
/// long request may never be read whole.
fn send_broken(port: u16, case: &Broken) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut bytes = set_request(&format!("before:{}", case.name), "v");
    bytes.extend_from_slice(&case.bytes);
    bytes.extend_from_slice(&set_request(&format!("after:{}", case.name), "v"));
    let mut writer = stream.try_clone().expect("clone");
    let writes = std::thread::spawn(move || {
        // Broken off by the proxy's close once it stopped reading.
        let _ = std::io::Write::write_all(&mut writer, &bytes);
    });
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break "EOF",
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            // The proxy closed with bytes of the client unread: a reset,
            // after everything it sent.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!(
                "{}: the proxy did not close the connection: {e}; read {:?}",
                case.name,
                String::from_utf8_lossy(&got)
            ),
        }
    };
    writes.join().expect("writer");
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("+OK\r\n-ERR {}\r\n", case.error),
        "{}",
        case.name
    );
    eprintln!(
        "[check] {}: +OK, then -ERR {}, then the connection closed ({closed})",
        case.name, case.error
    );
}

fn keys(con: &mut redis::Connection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).expect("KEYS");
    keys.sort();
    keys
}

/// Every malformed request and every request over one of Redis's limits
/// (docs/limits.md, "Requests"): the client reads what Redis would send,
/// then the proxy closes its connection; the request before it on the
/// connection is served, nothing of it or after it reaches the primary or
/// Kafka, and a client connected meanwhile goes on. One proxy has
/// `proto_max_bulk_len = "1mb"`, another the default 512 MiB.
#[test]
fn malformed_and_over_limit_requests_get_redis_errors_and_reach_nothing() {
    let metrics = free_port();
    let p = Pipeline::start(Setup {
        proxy_extra: format!("proto_max_bulk_len = \"1mb\"\nmetrics = \"127.0.0.1:{metrics}\""),
        replay: false,
        ..Setup::default()
    });
    let status = Status(metrics);
    let mut other = p.client();
    let set = |con: &mut redis::Connection, key: &str, value: &[u8]| {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query(con)
            .expect("SET");
        let got: Vec<u8> = redis::cmd("GET").arg(key).query(con).expect("GET");
        assert_eq!(got, value, "GET {key}");
    };
    // At the limit is within it.
    set(&mut other, "at-limit", &vec![b'x'; 1024 * 1024]);
    let mut expected = vec!["at-limit".to_string()];
    for case in broken_requests() {
        send_broken(p.proxy_port, &case);
        let key = format!("other:{}", case.name);
        set(&mut other, &key, b"still served");
        expected.extend([format!("before:{}", case.name), key]);
    }

    // The default limit, on a second proxy in front of the same primary.
    let port = free_port();
    let default_limit = Service::proxy(&format!(
        "bindport = {port}\nconnport = {}\n\n[[sender]]\nclass = \"KafkaSender\"\n\
         topic = \"{TOPIC}\"\nbootstrap-servers = \"{}\"\nlinger-ms = 1\n",
        p.primary.port(),
        p.broker.bootstrap()
    ));
    default_limit.wait_port(port);
    let case = Broken {
        name: "bulk-over-default-512mb",
        bytes: b"*3\r\n$3\r\nSET\r\n$6\r\nbroken\r\n$536870913\r\nxxxx".to_vec(),
        error: "Protocol error: invalid bulk length",
    };
    send_broken(port, &case);
    expected.push(format!("before:{}", case.name));
    // A last write through each proxy: each has one producer, so once its
    // sentinel is in the topic, so is every record it captured before.
    set(&mut other, "sentinel:1mb", b"1");
    set(&mut connect(port), "sentinel:default", b"1");
    expected.extend(["sentinel:1mb".into(), "sentinel:default".into()]);
    expected.sort();

    assert_eq!(keys(&mut p.on_primary()), expected, "the primary's keys");
    let mut records = Vec::new();
    wait_until(
        Duration::from_secs(30),
        "both sentinels in the topic",
        || {
            records = p.topic_records();
            [&b"sentinel:1mb"[..], b"sentinel:default"]
                .iter()
                .all(|s| records.iter().any(|(_, payload)| contains(payload, s)))
        },
    );
    let mut in_topic: Vec<String> = Vec::new();
    for (_, payload) in &records {
        for bad in [&b"after:"[..], b"broken"] {
            assert!(
                !contains(payload, bad),
                "a record of a broken request: {:?}",
                String::from_utf8_lossy(payload)
            );
        }
        in_topic.extend(
            expected
                .iter()
                .filter(|k| contains(payload, k.as_bytes()))
                .cloned(),
        );
    }
    in_topic.sort();
    assert_eq!(
        in_topic, expected,
        "one record for each write that was served"
    );
    let commands: usize = records
        .iter()
        .map(|(_, payload)| {
            protocol::decode(&Bytes::from(payload.clone()))
                .expect("PROTOCOL")
                .len()
        })
        .sum();
    assert_eq!(commands, expected.len(), "commands in the topic");
    let delivered = expected.len() as u64 - 2;
    wait_until(
        Duration::from_secs(10),
        "the proxy to count its deliveries",
        || status.value("remoteback_proxy_records_delivered_total") >= delivered,
    );
    assert_eq!(
        status.value("remoteback_proxy_records_delivered_total"),
        delivered,
        "records the 1mb proxy delivered (two went through the other)"
    );
    eprintln!(
        "[check] {} broken requests: each read Redis's error and was closed; the other client was served throughout; the primary and the topic hold exactly the {} writes served",
        broken_requests().len() + 1,
        expected.len()
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const SLOW_CLIENTS: usize = 1000;

/// Slowloris: 1,000 clients each send one `SET` a byte at a time, every
/// 150 ms (half of them multi-bulk, half inline), while another client
/// goes on with `SET`/`GET`. The other client is served throughout, every
/// trickled `SET` takes effect on the primary and reaches the backup, and
/// the proxy's resident memory stays within 200 MB of what it was before:
/// a slow client holds a connection (and its read buffer), not memory that
/// grows.
#[test]
fn a_thousand_clients_trickling_requests_hold_connections_not_memory() {
    // The test holds a socket per client (the proxy and redis-server raise
    // their own limits).
    raise_open_files_limit(SLOW_CLIENTS as u64 + 256);
    let p = Pipeline::start(Setup::default());
    let pid = p.proxy.pid().expect("the proxy's pid");
    let mut other = p.client();
    let _: () = redis::cmd("SET")
        .arg("warm")
        .arg("up")
        .query(&mut other)
        .expect("SET");
    let before = rss_bytes(pid) / 1024;

    let requests: Vec<Vec<u8>> = (0..SLOW_CLIENTS)
        .map(|n| {
            let (key, value) = (format!("slow:{n:04}"), format!("value-{n:04}"));
            if n % 2 == 0 {
                set_request(&key, &value)
            } else {
                format!("SET {key} {value}\r\n").into_bytes()
            }
        })
        .collect();
    let mut slow: Vec<TcpStream> = (0..SLOW_CLIENTS)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", p.proxy_port)).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            s
        })
        .collect();
    let longest = requests.iter().map(Vec::len).max().unwrap();
    let mut during = 0;
    let mut served = 0;
    for i in 0..longest {
        for (stream, request) in slow.iter_mut().zip(&requests) {
            if let Some(b) = request.get(i) {
                std::io::Write::write_all(stream, &[*b]).expect("trickle a byte");
            }
        }
        // Meanwhile the other client: a write and a read, answered.
        let key = format!("other:{i}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(i)
            .query(&mut other)
            .expect("the other client's SET");
        let got: usize = redis::cmd("GET").arg(&key).query(&mut other).expect("GET");
        assert_eq!(got, i);
        served += 1;
        during = during.max(rss_bytes(pid) / 1024);
        // The trickle's pace, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(150));
    }
    for (n, stream) in slow.iter_mut().enumerate() {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut reply = [0u8; 5];
        stream
            .read_exact(&mut reply)
            .expect("the trickled SET's reply");
        assert_eq!(&reply, b"+OK\r\n", "slow client {n}");
    }
    let mut primary = p.on_primary();
    for n in 0..SLOW_CLIENTS {
        let got: Option<String> = redis::cmd("GET")
            .arg(format!("slow:{n:04}"))
            .query(&mut primary)
            .expect("GET");
        assert_eq!(
            got,
            Some(format!("value-{n:04}")),
            "slow:{n:04} on the primary"
        );
    }
    let replied = rss_bytes(pid) / 1024;
    drop(slow);
    p.wait_applied();
    p.assert_converges(&[0], Duration::from_secs(30));
    let after = rss_bytes(pid) / 1024;
    eprintln!(
        "[check] {SLOW_CLIENTS} clients trickled a SET a byte per 150 ms ({longest} bytes); the other client was served {served} SET/GET pairs meanwhile; every SET reached the primary and the backup; proxy VmRSS: before {before} KiB, at most {during} KiB during, {replied} KiB when all were answered, {after} KiB after they left"
    );
    assert!(
        during < before + 200 * 1024,
        "the proxy grew from {before} KiB to {during} KiB"
    );
}

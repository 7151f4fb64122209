//! The proxy behaves like Redis: the same bytes in, the same bytes out, for
//! every kind of client. These tests need no broker (a LogSender only).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{blocked_clients, free_port, wait_until, RedisServer, Service};

struct Proxied {
    primary: RedisServer,
    proxy: Service,
    port: u16,
}

fn start(worker: &str, rsptimeout: u64) -> Proxied {
    let primary = RedisServer::start();
    let port = free_port();
    let proxy = Service::proxy(&format!(
        r#"
bindport = {port}
connport = {primary}
worker = "{worker}"
rsptimeout = {rsptimeout}

[[sender]]
class = "LogSender"
logger = "capture"
level = "debug"
"#,
        primary = primary.port()
    ));
    proxy.wait_port(port);
    Proxied {
        primary,
        proxy,
        port,
    }
}

fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
}

/// Sends `script` in one write and reads until `expected_len` bytes arrived
/// or the peer closed.
fn exchange(port: u16, script: &[u8], expected_len: usize) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(script).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while out.len() < expected_len {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "read after {} bytes: {e}; got {:?}",
                out.len(),
                String::from_utf8_lossy(&out)
            ),
        }
    }
    out
}

/// Reads until the peer closes (or 5 s pass).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The replies Redis itself gives to `script` on a fresh database.
fn direct_replies(p: &Proxied, script: &[u8]) -> Vec<u8> {
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut connect(p.primary.port()))
        .expect("FLUSHALL");
    let mut s = TcpStream::connect(("127.0.0.1", p.primary.port())).expect("connect");
    s.write_all(script).expect("write");
    s.write_all(b"QUIT\r\n").expect("write");
    let mut out = read_to_close(&mut s);
    assert!(out.ends_with(b"+OK\r\n"), "QUIT answered");
    out.truncate(out.len() - 5);
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut connect(p.primary.port()))
        .expect("FLUSHALL");
    out
}

#[test]
fn pipelined_inline_and_binary_commands_get_redis_own_bytes() {
    let p = start("coroutine", 10_000);
    let script: &[u8] = b"PING\r\nset k \"a b\"\r\n*3\r\n$3\r\nSET\r\n$4\r\nbin\0\r\n$3\r\n\r\n\xff\r\n\
*2\r\n$3\r\nGET\r\n$4\r\nbin\0\r\nRPUSH l a b c\r\nLRANGE l 0 -1\r\nHSET h f 1\r\nHGETALL h\r\n\
INCRBYFLOAT f 1.5\r\nNOSUCHCOMMAND x\r\nGET k extra\r\nSELECT 2\r\nSET k2 v\r\nKEYS *\r\n\r\n*0\r\nEXISTS k k2\r\n\
MULTI\r\nINCR n\r\nINCR n\r\nEXEC\r\n";
    let expected = direct_replies(&p, script);
    let got = exchange(p.port, script, expected.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
}

#[test]
fn resp3_clients_get_maps_and_pushes() {
    let p = start("coroutine", 10_000);
    let script: &[u8] = b"HELLO 3\r\n";
    let hello = exchange(p.port, script, 1);
    assert!(
        hello.starts_with(b"%"),
        "HELLO 3 answers a map: {:?}",
        String::from_utf8_lossy(&hello)
    );
    // After HELLO 3 the same connection gets RESP3 types, including pushes
    // interleaved with replies while subscribed.
    let script: &[u8] =
        b"HELLO 3\r\nHSET h a 1\r\nHGETALL h\r\nSUBSCRIBE ch\r\nSET x 1\r\nPING\r\n";
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(script).expect("write");
    let mut publisher = connect(p.port);
    let want: &[u8] = b":1\r\n%1\r\n$1\r\na\r\n$1\r\n1\r\n>3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n+OK\r\n+PONG\r\n";
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !out.ends_with(b"+PONG\r\n") && Instant::now() < deadline {
        let n = s.read(&mut buf).expect("read");
        out.extend_from_slice(&buf[..n]);
    }
    let marker: &[u8] = b"modules\r\n*0\r\n";
    let after_hello = out
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("end of HELLO reply")
        + marker.len();
    assert_eq!(
        String::from_utf8_lossy(&out[after_hello..]),
        String::from_utf8_lossy(want)
    );
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("ch")
        .arg("hi")
        .query(&mut publisher)
        .expect("PUBLISH");
    assert_eq!(receivers, 1);
    let push = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
    let mut got = Vec::new();
    while got.len() < push.len() {
        let n = s.read(&mut buf).expect("read push");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got[..], &push[..]);
}

#[test]
fn resp2_pubsub_through_the_proxy() {
    let p = start("coroutine", 10_000);
    let mut sub_con = connect(p.port);
    let mut sub = sub_con.as_pubsub();
    sub.subscribe("news").expect("SUBSCRIBE");
    sub.psubscribe("n*").expect("PSUBSCRIBE");
    let mut publisher = connect(p.port);
    let n: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("x\0y")
        .query(&mut publisher)
        .expect("PUBLISH");
    assert_eq!(n, 2, "channel and pattern subscriber");
    sub.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let m1 = sub.get_message().expect("message");
    let m2 = sub.get_message().expect("pmessage");
    let payloads: Vec<Vec<u8>> = [m1, m2]
        .iter()
        .map(|m| m.get_payload_bytes().to_vec())
        .collect();
    assert_eq!(payloads, vec![b"x\0y".to_vec(), b"x\0y".to_vec()]);
    sub.unsubscribe("news").expect("UNSUBSCRIBE");
    sub.punsubscribe("n*").expect("PUNSUBSCRIBE");
    drop(sub);
    // Out of subscribed mode the connection is an ordinary one again.
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query(&mut sub_con)
        .expect("SET after pub/sub");
    let v: String = redis::cmd("GET")
        .arg("after")
        .query(&mut sub_con)
        .expect("GET");
    assert_eq!(v, "1");
}

#[test]
fn blocking_pop_is_served_and_visible_to_redis() {
    for worker in ["coroutine", "thread"] {
        let p = start(worker, 300);
        let port = p.port;
        let waiter = std::thread::spawn(move || {
            let mut c = connect(port);
            redis::cmd("BLPOP")
                .arg("queue")
                .arg(10)
                .query::<(String, String)>(&mut c)
                .expect("BLPOP")
        });
        let mut primary = connect(p.primary.port());
        wait_until(
            Duration::from_secs(5),
            "a blocked client on the primary",
            || {
                let info: String = redis::cmd("INFO")
                    .arg("clients")
                    .query(&mut primary)
                    .unwrap_or_default();
                info.contains("blocked_clients:1")
            },
        );
        // Longer than rsptimeout: blocking commands are exempt from it.
        std::thread::sleep(Duration::from_millis(600));
        let _: i64 = redis::cmd("RPUSH")
            .arg("queue")
            .arg("job")
            .query(&mut connect(p.port))
            .expect("RPUSH");
        assert_eq!(
            waiter.join().expect("waiter"),
            ("queue".to_string(), "job".to_string()),
            "{worker}"
        );
    }
}

#[test]
fn protocol_error_closes_only_that_client() {
    let p = start("coroutine", 10_000);
    let mut other = connect(p.port);
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.write_all(b"*1\r\n$4\r\nPING\r\n*x\r\n*1\r\n$4\r\nPING\r\n")
        .expect("write");
    let got = read_to_close(&mut s);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n"
    );
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.write_all(b"*1\r\n:1\r\n").expect("write");
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut s)),
        "-ERR Protocol error: expected '$', got ':'\r\n"
    );
    let pong: String = redis::cmd("PING")
        .query(&mut other)
        .expect("other client unaffected");
    assert_eq!(pong, "PONG");
}

#[test]
fn reply_timeout_answers_an_error_and_closes() {
    let p = start("coroutine", 300);
    let mut admin = connect(p.primary.port());
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query(&mut admin)
        .expect("PAUSE");
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    let started = Instant::now();
    s.write_all(b"SET k v\r\n").expect("write");
    let got = read_to_close(&mut s);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR remoteback: no reply from the primary within 300 ms\r\n"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "answered before the pause ended"
    );
    // The SET runs once the pause ends, but its reply is never read: the
    // proxy cannot capture it and must say the backup misses a write.
    wait_until(
        Duration::from_secs(5),
        "the uncaptured write logged",
        || {
            p.proxy.log().contains(
            "1 writes were forwarded to the primary but never answered before their connection ended",
        )
        },
    );
}

/// A client that hangs up while blocked in `BLPOP`: as with Redis itself,
/// the block ends, and a later push stays in the list for other consumers
/// instead of being popped for nobody.
#[test]
fn a_blocked_client_that_hangs_up_takes_nothing() {
    let p = start("coroutine", 10_000);
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.write_all(b"BLPOP jobs 0\r\n").expect("write");
    let mut primary = connect(p.primary.port());
    wait_until(
        Duration::from_secs(5),
        "the BLPOP blocked on the primary",
        || blocked_clients(&mut primary) == 1,
    );
    drop(s);
    wait_until(
        Duration::from_secs(5),
        "the block ended after the hang-up",
        || blocked_clients(&mut primary) == 0,
    );
    let _: i64 = redis::cmd("RPUSH")
        .arg("jobs")
        .arg("job-1")
        .query(&mut primary)
        .expect("RPUSH");
    std::thread::sleep(Duration::from_millis(200));
    let left: Vec<String> = redis::cmd("LRANGE")
        .arg("jobs")
        .arg(0)
        .arg(-1)
        .query(&mut primary)
        .expect("LRANGE");
    assert_eq!(left, ["job-1"], "the job stays for the next consumer");
}

#[test]
fn unreachable_primary_is_reported_to_the_client() {
    let mut p = start("coroutine", 10_000);
    p.primary.stop();
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    let got = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
    assert!(
        got.starts_with("-ERR remoteback: primary 127.0.0.1:"),
        "{got}"
    );
    assert!(got.contains("unreachable"), "{got}");
}

#[test]
fn redis_benchmark_runs_through_the_proxy() {
    let p = start("coroutine", 10_000);
    let out = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &p.port.to_string(),
            "-t",
            "set,get,lpush,lpop,mset",
            "-n",
            "2000",
            "-P",
            "8",
            "-c",
            "4",
            "-q",
        ])
        .output()
        .expect("redis-benchmark is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for t in ["SET", "GET", "LPUSH", "LPOP", "MSET"] {
        assert!(
            text.contains(&format!("{t}: ")) || text.contains(&format!("{t} ")),
            "{t} in {text}"
        );
    }
    let n: i64 = redis::cmd("EXISTS")
        .arg("key:__rand_int__")
        .query(&mut connect(p.primary.port()))
        .expect("EXISTS");
    assert_eq!(n, 1, "the benchmark's SET reached the primary");
}

/// Threads of the proxy process whose name starts with `session-`.
fn session_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("session-"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn thread_worker_runs_each_client_on_its_own_thread() {
    let p = start("thread", 10_000);
    let pid = p.proxy.pid().expect("proxy pid");
    let mut clients: Vec<redis::Connection> = (0..5).map(|_| connect(p.port)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(c)
            .expect("SET");
    }
    assert_eq!(session_threads(pid), 5);
    drop(clients);
    wait_until(Duration::from_secs(5), "session threads to end", || {
        session_threads(pid) == 0
    });

    let p = start("coroutine", 10_000);
    let pid = p.proxy.pid().expect("proxy pid");
    let _clients: Vec<redis::Connection> = (0..5).map(|_| connect(p.port)).collect();
    assert_eq!(session_threads(pid), 0, "coroutine sessions share the pool");
}

#[test]
fn a_client_that_half_closes_still_gets_every_reply() {
    let p = start("coroutine", 10_000);
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.write_all(b"SET half 1\r\nGET half\r\nPING\r\n")
        .expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut s)),
        "+OK\r\n$1\r\n1\r\n+PONG\r\n"
    );
}

/// Reads from `s` until `needle` appeared in what was read (or panics after
/// the read timeout); returns everything read.
fn read_until_contains(s: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while !out.windows(needle.len()).any(|w| w == needle) {
        let n = s.read(&mut buf).unwrap_or_else(|e| {
            panic!(
                "waiting for {:?}: {e}; read so far: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&out)
            )
        });
        assert!(
            n > 0,
            "closed; read so far: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// `SYNC` or `PSYNC` as a client's first command turns its connection into a
/// plain tunnel to the primary: the client gets the RDB payload and then the
/// primary's replication stream, with the writes other clients make through
/// the proxy. A `SYNC` the primary refuses (inside `MULTI`) is an ordinary
/// error reply, and the connection goes on being proxied and captured.
#[test]
fn sync_and_psync_become_a_tunnel_to_the_primary_replication_stream() {
    let primary = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let port = free_port();
    let proxy = Service::proxy(&format!(
        "bindport = {port}\nconnport = {}\n\n[[sender]]\nclass = \"LogSender\"\nlogger = \"capture\"\nlevel = \"info\"\n",
        primary.port()
    ));
    proxy.wait_port(port);
    let mut writer = connect(port);
    let mut replicas = Vec::new();
    for (name, request, start) in [
        ("SYNC", &b"SYNC\r\n"[..], &b"$"[..]),
        (
            "PSYNC",
            &b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n"[..],
            &b"+FULLRESYNC"[..],
        ),
    ] {
        let mut replica = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        replica
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        replica.write_all(request).unwrap();
        let head = read_until_contains(&mut replica, b"REDIS");
        let first = head.iter().position(|b| *b != b'\n').unwrap();
        assert!(
            head[first..].starts_with(start),
            "{name}: {:?}",
            String::from_utf8_lossy(&head[..head.len().min(80)])
        );
        let key = format!("through-{name}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("streamed")
            .query(&mut writer)
            .unwrap();
        read_until_contains(&mut replica, key.as_bytes());
        // The replica's acknowledgements go to the primary unchanged.
        replica
            .write_all(b"*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$1\r\n0\r\n")
            .unwrap();
        replicas.push(replica);
    }
    let mut direct = connect(primary.port());
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut direct)
        .unwrap();
    assert!(info.contains("connected_slaves:2"), "{info}");

    let refused = exchange(
        port,
        b"MULTI\r\nSYNC\r\nEXEC\r\nSET after-refusal 1\r\n",
        "+OK\r\n-ERR Command not allowed inside a transaction\r\n".len()
            + "-EXECABORT Transaction discarded because of previous errors.\r\n".len()
            + "+OK\r\n".len(),
    );
    assert_eq!(
        String::from_utf8_lossy(&refused),
        "+OK\r\n-ERR Command not allowed inside a transaction\r\n\
         -EXECABORT Transaction discarded because of previous errors.\r\n+OK\r\n"
    );
    wait_until(
        Duration::from_secs(10),
        "the SET after the refusal captured",
        || proxy.log().contains("after-refusal"),
    );
    eprintln!("[check] SYNC and PSYNC through the proxy: RDB payload, then the stream with a SET made by another client; REPLCONF ACK passed; a refused SYNC inside MULTI left the session proxied and captured; a subscriber's SYNC was refused by Redis and the subscription went on");
}

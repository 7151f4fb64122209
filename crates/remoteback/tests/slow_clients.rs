//! Clients that read slowly, never read, or go quiet cost the proxy bounded
//! memory and no lost write (docs/limits.md): the in-flight budget, the
//! output buffer limit and the idle timeout, against real redis-server,
//! tansu, proxy and replay processes.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::pipeline::connect;
use common::pipeline::{Pipeline, Setup};
use common::status::Status;
use common::{free_port, raise_open_files_limit, rss_bytes, wait_until, RedisServer, Service};

fn pipeline(extra: &str) -> (Pipeline, Status) {
    let metrics = free_port();
    let p = Pipeline::start(Setup {
        proxy_extra: format!("metrics = \"127.0.0.1:{metrics}\"\n{extra}"),
        ..Setup::default()
    });
    p.proxy.wait_port(metrics);
    (p, Status(metrics))
}

fn raw_client(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    stream
}

/// A proxy whose memory is the sessions': records go to a LogSender whose
/// lines are not written (no Kafka backlog, no log I/O) and no reply
/// timeout cuts a client that waits long.
fn measured_proxy(primary: &RedisServer) -> (Service, u16) {
    let port = free_port();
    let proxy = Service::proxy(&format!(
        "bindport = {port}\nconnport = {}\nrsptimeout = 0\n\n[[sender]]\nclass = \"LogSender\"\nlogger = \"unlogged\"\nlevel = \"trace\"\n",
        primary.port()
    ));
    proxy.wait_port(port);
    (proxy, port)
}

fn set_get(con: &mut redis::Connection, key: &str) {
    let _: () = redis::cmd("SET").arg(key).arg("v").query(con).expect("SET");
    let got: String = redis::cmd("GET").arg(key).query(con).expect("GET");
    assert_eq!(got, "v");
}

/// Reads until the proxy closes the connection; returns the bytes read.
fn read_until_closed(stream: &mut TcpStream) -> usize {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("reading until the proxy closes: {e}"),
        }
    }
}

/// A client that asks for far more than the output buffer limit and never
/// reads is closed and counted; the writes it pipelined still reach the
/// backup, and another client is not affected.
#[test]
fn a_client_over_the_output_limit_is_closed_and_its_writes_still_replicate() {
    let (p, status) = pipeline("client_output_buffer_limit = \"1mb 0 0\"\n");
    let mut other = p.client();
    let mut primary = p.on_primary();
    let big = vec![b'x'; 100 * 1024];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut primary)
        .unwrap();

    // 400 GETs of 100 KB (40 MB of replies) with an INCR after each, sent
    // without reading a byte.
    let mut reader = raw_client(p.proxy_port);
    let mut request = Vec::new();
    for _ in 0..400 {
        request.extend_from_slice(
            b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n",
        );
    }
    let mut writer = reader.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        // The proxy may close the connection before it read everything.
        let _ = writer.write_all(&request);
    });
    wait_until(
        Duration::from_secs(30),
        "the client to be closed at the output limit",
        || status.value("remoteback_proxy_clients_closed_output_limit_total") == 1,
    );
    sender.join().unwrap();
    let read = read_until_closed(&mut reader);
    // Less than all 400 replies; how much got through before the close
    // depends on the socket buffers the kernel gave (a few MB on loopback).
    assert!(
        read < 400 * 100 * 1024,
        "the client was closed before it got all its replies ({read} bytes)"
    );
    set_get(&mut other, "other");

    let done: i64 = redis::cmd("GET")
        .arg("counter")
        .query(&mut primary)
        .unwrap();
    assert!(done > 0, "some INCRs ran before the close");
    p.wait_backup_value(0, "counter", &done.to_string());
    p.wait_backup_value(0, "other", "v");
    let log = p.proxy.log();
    assert!(log.contains("over client_output_buffer_limit"), "{log}");
    eprintln!(
        "[check] output limit 1 MB: the non-reading client was closed after {read} bytes \
         read, counted once; {done} INCRs ran on the primary and the backup has the same \
         value; another client's SET/GET answered"
    );
}

/// A client that pipelines 300,000 writes without reading its replies
/// takes bounded memory from the proxy: its in-flight budget and its unread
/// replies. (The records of its writes wait for Kafka in the backlog, which
/// `backlog_bytes` bounds for all clients together; a LogSender keeps that
/// out of this measure.) It gets every reply once it reads.
#[test]
fn a_client_that_pipelines_without_reading_costs_bounded_memory() {
    const WRITES: usize = 300_000;
    let primary = RedisServer::start();
    let (proxy, port) = measured_proxy(&primary);
    let pid = proxy.pid().expect("proxy pid");
    let mut other = connect(port);
    set_get(&mut other, "warm");
    let before = rss_bytes(pid);

    let mut stream = raw_client(port);
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let value = "v".repeat(64);
        let mut batch = Vec::new();
        for i in 0..WRITES {
            let key = format!("key:{i}");
            batch.extend_from_slice(
                format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                    key.len(),
                    value.len()
                )
                .as_bytes(),
            );
            if batch.len() > 1 << 20 {
                writer.write_all(&batch).expect("send");
                batch.clear();
            }
        }
        writer.write_all(&batch).expect("send");
    });
    // While the writes go in unread, the proxy's memory stays near where
    // it was.
    let mut peak = before;
    while !sender.is_finished() {
        peak = peak.max(rss_bytes(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    sender.join().unwrap();
    peak = peak.max(rss_bytes(pid));
    set_get(&mut other, "during");

    // Now the client reads: every reply is there, in order.
    let mut replies = Vec::with_capacity(WRITES * 5);
    let mut buf = vec![0u8; 1 << 16];
    while replies.len() < WRITES * 5 {
        let n = stream.read(&mut buf).expect("read replies");
        assert!(n > 0, "the proxy closed the connection");
        replies.extend_from_slice(&buf[..n]);
    }
    assert_eq!(replies.len(), WRITES * 5);
    assert!(replies.chunks(5).all(|r| r == b"+OK\r\n"));
    stream.shutdown(Shutdown::Both).ok();
    let after = rss_bytes(pid);
    let mb = |b: u64| b as f64 / 1024.0 / 1024.0;
    assert!(
        peak < before + 32 * 1024 * 1024,
        "proxy RSS went from {:.1} MB to {:.1} MB",
        mb(before),
        mb(peak)
    );
    let mut on_primary = connect(primary.port());
    let size: u64 = redis::cmd("DBSIZE").query(&mut on_primary).unwrap();
    assert_eq!(size, WRITES as u64 + 2, "every write, plus warm and during");
    eprintln!(
        "[check] {WRITES} SETs pipelined unread: proxy RSS {:.1} MB before, {:.1} MB at most \
         while they went in, {:.1} MB after; all {WRITES} replies +OK in order",
        mb(before),
        mb(peak),
        mb(after)
    );
}

/// `timeout = 1`: a client that sends nothing is closed and counted; one
/// that is subscribed or blocked is not (as in Redis), and a busy one is
/// never cut.
#[test]
fn an_idle_client_is_closed_after_timeout_but_not_a_subscriber_or_a_blocked_one() {
    let (p, status) = pipeline("timeout = 1\n");
    let started = Instant::now();
    let mut idle = raw_client(p.proxy_port);
    idle.write_all(b"PING\r\n").unwrap();
    let mut subscriber = raw_client(p.proxy_port);
    subscriber
        .write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n")
        .unwrap();
    let mut blocked = raw_client(p.proxy_port);
    blocked
        .write_all(b"*3\r\n$5\r\nBLPOP\r\n$5\r\nqueue\r\n$1\r\n0\r\n")
        .unwrap();
    let mut pong = [0u8; 7];
    idle.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    let mut confirmation = vec![0u8; 1024];
    let n = subscriber.read(&mut confirmation).unwrap();
    assert!(confirmation[..n].starts_with(b"*3\r\n$9\r\nsubscribe"));

    let mut rest = Vec::new();
    idle.read_to_end(&mut rest)
        .expect("the proxy closes the idle client");
    assert!(rest.is_empty(), "closed without a reply: {rest:?}");
    let idle_for = started.elapsed();
    assert!(idle_for >= Duration::from_secs(1), "not before the timeout");
    assert_eq!(
        status.value("remoteback_proxy_clients_closed_idle_total"),
        1
    );

    // Twice the timeout later, the subscriber and the blocked client are
    // still served.
    std::thread::sleep(Duration::from_secs(2));
    let mut other = p.client();
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hello")
        .query(&mut other)
        .unwrap();
    assert_eq!(receivers, 1);
    let n = subscriber.read(&mut confirmation).unwrap();
    assert!(
        String::from_utf8_lossy(&confirmation[..n]).contains("hello"),
        "the subscriber still receives"
    );
    let _: i64 = redis::cmd("RPUSH")
        .arg("queue")
        .arg("job")
        .query(&mut other)
        .unwrap();
    let n = blocked.read(&mut confirmation).unwrap();
    assert_eq!(
        &confirmation[..n],
        b"*2\r\n$5\r\nqueue\r\n$3\r\njob\r\n",
        "the blocked client gets its reply"
    );
    assert_eq!(
        status.value("remoteback_proxy_clients_closed_idle_total"),
        1
    );
    eprintln!(
        "[check] timeout = 1: the idle client was closed after {idle_for:?}, counted once; a \
         subscriber and a client blocked in BLPOP were kept and served 3 s later"
    );
}

/// Many clients pipelining without reading at once: the proxy's memory is
/// bounded per client, not by what they send. 100 clients × 2,000 writes by
/// default; `REMOTEBACK_SLOW_FULL=1` runs the documented 1,000 × 10,000.
#[test]
fn many_clients_pipelining_without_reading_cost_bounded_memory() {
    let full = std::env::var_os("REMOTEBACK_SLOW_FULL").is_some();
    let (clients, writes) = if full { (1_000, 10_000) } else { (100, 2_000) };
    raise_open_files_limit(clients as u64 + 256);
    let primary = RedisServer::start();
    let (proxy, port) = measured_proxy(&primary);
    let pid = proxy.pid().expect("proxy pid");
    let before = rss_bytes(pid);

    let streams: Vec<TcpStream> = (0..clients).map(|_| raw_client(port)).collect();
    let senders: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(c, s)| {
            let mut writer = s.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                for i in 0..writes {
                    let key = format!("c{c}:{i}");
                    batch.extend_from_slice(
                        format!(
                            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$5\r\nvalue\r\n",
                            key.len()
                        )
                        .as_bytes(),
                    );
                }
                writer.write_all(&batch).expect("send");
            })
        })
        .collect();
    let mut peak = before;
    while senders.iter().any(|s| !s.is_finished()) {
        peak = peak.max(rss_bytes(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    for s in senders {
        s.join().unwrap();
    }
    let mut on_primary = connect(primary.port());
    let total = (clients * writes) as u64;
    let patience = Duration::from_secs(if full { 1800 } else { 120 });
    wait_until(patience, "every write on the primary", || {
        peak = peak.max(rss_bytes(pid));
        redis::cmd("DBSIZE").query::<u64>(&mut on_primary).unwrap() == total
    });
    let during = rss_bytes(pid);
    for mut s in streams {
        let mut replies = vec![0u8; writes * 5];
        s.read_exact(&mut replies).expect("every reply");
        assert!(replies.chunks(5).all(|r| r == b"+OK\r\n"));
    }
    let mut other = connect(port);
    set_get(&mut other, "after");
    let after = rss_bytes(pid);
    let mb = |b: u64| b as f64 / 1024.0 / 1024.0;
    eprintln!(
        "[check] {clients} clients x {writes} SETs pipelined unread: proxy RSS {:.1} MB before, \
         {:.1} MB at most while they went in, {:.1} MB with all replies unread, {:.1} MB after \
         they were read; every reply +OK",
        mb(before),
        mb(peak),
        mb(during),
        mb(after)
    );
    // Each client may hold its budget (256 KiB of requests in flight, and
    // the read chunks they lie in), its unread replies and its session's
    // buffers: measured about half a megabyte a client; a megabyte each is
    // the bound here, where what they send grows without one.
    let bound = before + clients as u64 * 1024 * 1024;
    assert!(peak < bound, "peak {:.1} MB", mb(peak));
}

/// `client_query_buffer_limit = "1mb"`: a client that sends more than that
/// of one request without finishing it is closed and counted, and nothing
/// of that request reaches the primary; the requests before it are served.
#[test]
fn an_unfinished_request_over_the_query_buffer_limit_closes_the_client() {
    let (p, status) = pipeline("client_query_buffer_limit = \"1mb\"\n");
    let mut client = raw_client(p.proxy_port);
    client
        .write_all(b"*3\r\n$3\r\nSET\r\n$6\r\nbefore\r\n$1\r\n1\r\n")
        .unwrap();
    client
        .write_all(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$4000000\r\n")
        .unwrap();
    // 2 MB of the 4 MB value, then nothing: the rest never comes.
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..32 {
        if client.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got);
    assert_eq!(
        got, b"+OK\r\n",
        "the SET before is answered, then the close"
    );
    assert_eq!(
        status.value("remoteback_proxy_clients_closed_query_limit_total"),
        1
    );
    let mut other = p.client();
    set_get(&mut other, "other");
    let mut primary = p.on_primary();
    let exists: i64 = redis::cmd("EXISTS").arg("big").query(&mut primary).unwrap();
    assert_eq!(
        exists, 0,
        "nothing of the unfinished request reached the primary"
    );
    p.wait_backup_value(0, "before", "1");
    p.wait_backup_value(0, "other", "v");
    let log = p.proxy.log();
    assert!(log.contains("over client_query_buffer_limit"), "{log}");
    eprintln!("[check] client_query_buffer_limit 1 MB: the client sending 2 MB of an unfinished 4 MB SET was closed after the reply to the SET before it, counted once; 'big' is not on the primary; another client was served");
}

//! Rebuilds against real `redis-server`s: keys of every type are made on a
//! source, rebuilt batch by batch into a target (one MULTI/EXEC per batch,
//! as the replay applies a record), and the target must then equal the
//! source.
//!
//! The program can be chosen with `REMOTEBACK_TEST_REDIS_SERVER`, as in
//! the binary's integration tests.

use std::net::TcpListener;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::Value;
use remoteback_protocol::Command;

use super::rebuild::Rebuild;

/// A throw-away redis-server without persistence.
struct Server {
    port: u16,
    child: Child,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// A redis-server on a free port, with `extra` arguments; panics when
    /// none can be started (scripts/setup.sh installs it).
    fn start_with(extra: &[&str]) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let program = std::env::var("REMOTEBACK_TEST_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".to_string());
        let child = Process::new(program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/setup.sh to install it)");
        let server = Server { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    async fn connect(&self) -> MultiplexedConnection {
        self.connect_url(&format!("redis://127.0.0.1:{}/", self.port))
            .await
    }

    async fn connect_resp3(&self) -> MultiplexedConnection {
        self.connect_url(&format!("redis://127.0.0.1:{}/?protocol=resp3", self.port))
            .await
    }

    async fn connect_url(&self, url: &str) -> MultiplexedConnection {
        // No response timeout: the views of big keys take a while to parse
        // in a debug build.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        redis::Client::open(url)
            .expect("a client")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connect")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command from byte-string parts.
fn command(parts: &[&[u8]]) -> redis::Cmd {
    let mut c = redis::Cmd::new();
    for p in parts {
        c.arg(*p);
    }
    c
}

async fn call(conn: &mut MultiplexedConnection, parts: &[&[u8]]) -> Value {
    command(parts)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("{:?}: {e}", parts[0].escape_ascii().to_string()))
}

/// Sends many commands in one round trip.
async fn pipeline(conn: &mut MultiplexedConnection, commands: Vec<Vec<Vec<u8>>>) {
    let mut pipe = redis::pipe();
    for parts in &commands {
        let mut c = redis::Cmd::new();
        for p in parts {
            c.arg(&p[..]);
        }
        pipe.add_command(c).ignore();
    }
    pipe.query_async::<()>(conn).await.expect("pipeline");
}

/// Every batch of the rebuild of `key`, each applied to `target` as one
/// transaction once read.
async fn rebuild(
    source: &mut MultiplexedConnection,
    target: &mut MultiplexedConnection,
    key: &[u8],
    chunk: usize,
) -> Vec<Vec<Command>> {
    let mut r = Rebuild::start(source, Bytes::copy_from_slice(key))
        .await
        .expect("start");
    let mut batches = Vec::new();
    while let Some(batch) = r.next(source, chunk).await.expect("next") {
        apply(target, &batch).await;
        batches.push(batch);
    }
    assert!(r.next(source, chunk).await.unwrap().is_none(), "stays done");
    batches
}

/// `batch` as MULTI/EXEC, as the replay applies a record.
async fn apply(target: &mut MultiplexedConnection, batch: &[Command]) {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for c in batch {
        let mut cmd = redis::Cmd::new();
        for a in c.args() {
            cmd.arg(&a[..]);
        }
        pipe.add_command(cmd);
    }
    if let Err(e) = pipe.query_async::<Vec<Value>>(target).await {
        let names: Vec<String> = batch
            .iter()
            .map(|c| c.name().escape_ascii().to_string())
            .collect();
        panic!("applying {names:?}: {e}");
    }
}

fn size(c: &Command) -> usize {
    c.args().iter().map(|a| a.len()).sum()
}

/// The shape every rebuild has: DEL first, PEXPIREAT last when the key
/// expires, and batches within `chunk` (but for the PEXPIREAT, and a
/// batch with an element larger than the chunk).
fn check_batches(key: &[u8], batches: &[Vec<Command>], chunk: usize, expires: bool) {
    assert!(!batches.is_empty());
    let first = &batches[0][0];
    assert!(first.is("DEL"), "{:?}", first.name());
    assert_eq!(first.args().len(), 2);
    assert_eq!(&first.args()[1][..], key);
    let last = batches.last().unwrap().last().unwrap();
    assert_eq!(last.is("PEXPIREAT"), expires);
    for (i, batch) in batches.iter().enumerate() {
        assert!(!batch.is_empty());
        let mut bytes: usize = batch.iter().map(size).sum();
        if batch.last().unwrap().is("PEXPIREAT") {
            bytes -= size(batch.last().unwrap());
        }
        // Whether the huge element alone is what makes the batch too big
        // is checked where there is one.
        let huge = batch.iter().flat_map(|c| c.args()).any(|a| a.len() > chunk);
        assert!(
            bytes <= chunk || huge,
            "batch {i} of {}: {bytes} bytes for a chunk of {chunk}",
            batches.len()
        );
        for c in batch.iter().skip(usize::from(i == 0)) {
            assert!(!c.is("DEL"), "only the first command deletes");
        }
    }
}

/// A reply as a tree of byte strings, comparable across servers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Tree {
    Nil,
    Int(i64),
    Str(Vec<u8>),
    List(Vec<Tree>),
}

fn tree(v: Value) -> Tree {
    match v {
        Value::Nil => Tree::Nil,
        Value::Int(n) => Tree::Int(n),
        Value::BulkString(b) => Tree::Str(b),
        Value::SimpleString(s) => Tree::Str(s.into_bytes()),
        Value::Okay => Tree::Str(b"OK".to_vec()),
        Value::Array(items) | Value::Set(items) => {
            Tree::List(items.into_iter().map(tree).collect())
        }
        other => panic!("unexpected reply {other:?}"),
    }
}

async fn view(conn: &mut MultiplexedConnection, parts: &[&[u8]]) -> Tree {
    tree(call(conn, parts).await)
}

fn sorted(t: Tree, width: usize) -> Tree {
    let Tree::List(items) = t else {
        panic!("{t:?}")
    };
    let mut groups: Vec<Vec<Tree>> = items.chunks(width).map(<[Tree]>::to_vec).collect();
    groups.sort();
    Tree::List(groups.into_iter().flatten().collect())
}

/// The stream's state as `XINFO STREAM FULL` shows it, with the times
/// that cannot be equal taken out: consumers' seen and active times are
/// dropped, and the delivery times of pending entries are returned apart
/// (they are rebuilt to the millisecond of the clocks, not exactly).
async fn stream_view(conn: &mut MultiplexedConnection, key: &[u8]) -> (Tree, Vec<i64>) {
    let full = view(conn, &[b"XINFO", b"STREAM", key, b"FULL", b"COUNT", b"0"]).await;
    let mut times = Vec::new();
    let Tree::List(top) = full else { panic!() };
    let mut out = Vec::new();
    for pair in top.chunks(2) {
        let (name, value) = (&pair[0], pair[1].clone());
        // How the entries lie in memory, not what the stream holds: the
        // source's nodes keep the tombstones of deleted entries.
        if *name == Tree::Str(b"radix-tree-keys".to_vec())
            || *name == Tree::Str(b"radix-tree-nodes".to_vec())
        {
            continue;
        }
        let value = if *name == Tree::Str(b"groups".to_vec()) {
            let Tree::List(groups) = value else { panic!() };
            Tree::List(
                groups
                    .into_iter()
                    .map(|g| group_view(g, &mut times))
                    .collect(),
            )
        } else {
            value
        };
        out.push(name.clone());
        out.push(value);
    }
    (Tree::List(out), times)
}

fn group_view(group: Tree, times: &mut Vec<i64>) -> Tree {
    let Tree::List(fields) = group else { panic!() };
    let mut out = Vec::new();
    for pair in fields.chunks(2) {
        let name = pair[0].clone();
        let mut value = pair[1].clone();
        match &name {
            Tree::Str(n) if n == b"pending" => take_times(&mut value, 2, times),
            Tree::Str(n) if n == b"consumers" => {
                let Tree::List(consumers) = value else {
                    panic!()
                };
                value = Tree::List(
                    consumers
                        .into_iter()
                        .map(|c| {
                            let Tree::List(fields) = c else { panic!() };
                            let mut kept = Vec::new();
                            for pair in fields.chunks(2) {
                                let Tree::Str(n) = &pair[0] else { panic!() };
                                if n == b"seen-time" || n == b"active-time" {
                                    continue;
                                }
                                let mut v = pair[1].clone();
                                if n == b"pending" {
                                    take_times(&mut v, 1, times);
                                }
                                kept.push(pair[0].clone());
                                kept.push(v);
                            }
                            Tree::List(kept)
                        })
                        .collect(),
                );
            }
            _ => {}
        }
        out.push(name);
        out.push(value);
    }
    Tree::List(out)
}

/// Moves field `at` of each pending entry into `times`.
fn take_times(pending: &mut Tree, at: usize, times: &mut Vec<i64>) {
    let Tree::List(entries) = pending else {
        panic!()
    };
    for e in entries {
        let Tree::List(fields) = e else { panic!() };
        let Tree::Int(t) = std::mem::replace(&mut fields[at], Tree::Nil) else {
            panic!("{fields:?}")
        };
        times.push(t);
    }
}

/// Everything observable of `key` on one server.
async fn state(conn: &mut MultiplexedConnection, key: &[u8]) -> (Tree, Tree, Vec<i64>) {
    let kind = view(conn, &[b"TYPE", key]).await;
    let Tree::Str(name) = &kind else { panic!() };
    let mut times = Vec::new();
    let content = match &name[..] {
        b"none" => Tree::Nil,
        b"string" => view(conn, &[b"GET", key]).await,
        b"list" => view(conn, &[b"LRANGE", key, b"0", b"-1"]).await,
        b"hash" => sorted(view(conn, &[b"HGETALL", key]).await, 2),
        b"set" => sorted(view(conn, &[b"SMEMBERS", key]).await, 1),
        b"zset" => view(conn, &[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"]).await,
        b"stream" => {
            let entries = view(conn, &[b"XRANGE", key, b"-", b"+"]).await;
            let (info, t) = stream_view(conn, key).await;
            times = t;
            Tree::List(vec![entries, info])
        }
        other => panic!("type {other:?}"),
    };
    let expiry = view(conn, &[b"PEXPIRETIME", key]).await;
    (Tree::List(vec![kind, expiry]), content, times)
}

/// Where `a` and `b` first differ, shortly.
fn difference(a: &Tree, b: &Tree) -> Option<String> {
    match (a, b) {
        (Tree::List(x), Tree::List(y)) => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                if let Some(d) = difference(p, q) {
                    let label = match (i % 2, x.get(i - 1)) {
                        (1, Some(Tree::Str(n))) => n.escape_ascii().to_string(),
                        _ => i.to_string(),
                    };
                    return Some(format!("{label}/{d}"));
                }
            }
            (x.len() != y.len()).then(|| format!("{} vs {} items", x.len(), y.len()))
        }
        _ if a == b => None,
        _ => Some(format!(
            "{:.200} vs {:.200}",
            format!("{a:?}"),
            format!("{b:?}")
        )),
    }
}

/// Asserts that `key` is the same on both servers.
async fn assert_same(
    source: &mut MultiplexedConnection,
    target: &mut MultiplexedConnection,
    key: &[u8],
) {
    let (s_meta, s_content, s_times) = state(source, key).await;
    let (t_meta, t_content, t_times) = state(target, key).await;
    let shown = key.escape_ascii().to_string();
    assert_eq!(s_meta, t_meta, "type and expiry of {shown}");
    if let Some(at) = difference(&s_content, &t_content) {
        panic!("content of {shown} differs: {at}");
    }
    assert_eq!(s_times.len(), t_times.len());
    for (s, t) in s_times.iter().zip(&t_times) {
        assert!((s - t).abs() <= 5, "delivery time of {shown}: {s} vs {t}");
    }
}

/// Deterministic bytes with every value, \0 and \xff included.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A binary name: `prefix`, \0, \xff and `i`.
fn name(prefix: &str, i: usize) -> Vec<u8> {
    let mut n = prefix.as_bytes().to_vec();
    n.extend_from_slice(b"\0\xff");
    n.extend_from_slice(i.to_string().as_bytes());
    n
}

fn parts(items: &[&[u8]]) -> Vec<Vec<u8>> {
    items.iter().map(|i| i.to_vec()).collect()
}

/// Makes `count` elements of `head key ...` in pipelines of 1000.
async fn fill(
    conn: &mut MultiplexedConnection,
    count: usize,
    element: impl Fn(usize) -> Vec<Vec<u8>>,
    head: &[&[u8]],
) {
    let mut i = 0;
    while i < count {
        let mut commands = Vec::new();
        for _ in 0..10 {
            let mut c = parts(head);
            for j in i..(i + 100).min(count) {
                c.extend(element(j));
            }
            i = (i + 100).min(count);
            commands.push(c);
            if i >= count {
                break;
            }
        }
        pipeline(conn, commands).await;
    }
}

const HOUR_MS: &[u8] = b"3600000";

#[tokio::test]
async fn keys_of_every_type_are_rebuilt_equal() {
    let source_server = Server::start();
    let target_server = Server::start();
    let mut source = source_server.connect().await;
    let mut target = target_server.connect().await;
    let chunk = 16 * 1024;

    // Strings: a 3 MB one with an expiry read 64 KiB at a time, an empty
    // one, a number.
    let big = b"str\0\xffbig".to_vec();
    call(&mut source, &[b"SET", &big, &noise(1, 3 << 20)]).await;
    call(&mut source, &[b"PEXPIRE", &big, HOUR_MS]).await;
    call(&mut source, &[b"SET", b"empty\0\xff", b""]).await;
    call(&mut source, &[b"SET", b"n", b"12345"]).await;
    let batches = rebuild(&mut source, &mut target, &big, 64 * 1024).await;
    check_batches(&big, &batches, 64 * 1024, true);
    assert!(
        (48..=50).contains(&batches.len()),
        "{} batches",
        batches.len()
    );
    assert!(batches[0][1].is("SET"));
    assert!(batches[1][0].is("APPEND"));
    assert_same(&mut source, &mut target, &big).await;
    for key in [&b"empty\0\xff"[..], b"n"] {
        let batches = rebuild(&mut source, &mut target, key, chunk).await;
        check_batches(key, &batches, chunk, false);
        assert_eq!(batches.len(), 1);
        assert_same(&mut source, &mut target, key).await;
    }

    // A list of 30k elements of 0 to 99 bytes.
    let list = name("list", 0);
    fill(
        &mut source,
        30_000,
        |i| vec![noise(i as u64, i % 100)],
        &[b"RPUSH", &list],
    )
    .await;
    // A hash of 100k fields, with an expiry, and a small one.
    let hash = name("hash", 0);
    fill(
        &mut source,
        100_000,
        |i| vec![name("f", i), noise(i as u64, i % 20)],
        &[b"HSET", &hash],
    )
    .await;
    call(&mut source, &[b"PEXPIRE", &hash, HOUR_MS]).await;
    call(
        &mut source,
        &[b"HSET", b"small-hash", b"\0", b"\xff", b"", b""],
    )
    .await;
    // A set of 50k members, and one of integers.
    let set = name("set", 0);
    fill(
        &mut source,
        50_000,
        |i| vec![name("m", i)],
        &[b"SADD", &set],
    )
    .await;
    call(&mut source, &[b"SADD", b"intset", b"1", b"2", b"-3"]).await;
    // Sorted sets: 20k members with fractional scores, inf and -inf; a
    // small one.
    let zset = name("zset", 0);
    fill(
        &mut source,
        20_000,
        |i| {
            let score = match i % 5 {
                0 => format!("{}", i as f64 / 3.0),
                1 => format!("-{}e-300", i),
                2 => format!("{}.1", i),
                3 => format!("{}e300", i % 17),
                _ => i.to_string(),
            };
            vec![score.into_bytes(), name("m", i)]
        },
        &[b"ZADD", &zset],
    )
    .await;
    call(
        &mut source,
        &[b"ZADD", &zset, b"inf", b"top", b"-inf", b"bottom"],
    )
    .await;
    call(
        &mut source,
        &[
            b"ZADD",
            b"small-zset",
            b"0.1",
            b"a\0",
            b"+inf",
            b"b",
            b"-1e-310",
            b"c",
        ],
    )
    .await;

    for key in [
        &list[..],
        &hash,
        b"small-hash",
        &set,
        b"intset",
        &zset,
        b"small-zset",
    ] {
        let batches = rebuild(&mut source, &mut target, key, chunk).await;
        check_batches(key, &batches, chunk, key == &hash[..]);
        assert_same(&mut source, &mut target, key).await;
    }
    let batches = rebuild(&mut source, &mut target, &hash, chunk).await;
    assert!(batches.len() > 50, "{} batches", batches.len());
    assert!(batches
        .iter()
        .flatten()
        .all(|c| c.args().len() <= 2 + 2 * 1024));

    // A key that is not there.
    call(&mut target, &[b"SET", b"missing", b"stale"]).await;
    let batches = rebuild(&mut source, &mut target, b"missing", chunk).await;
    assert_eq!(batches, [[Command::from_parts(["DEL", "missing"])]]);
    assert_same(&mut source, &mut target, b"missing").await;
}

/// A stream of 3000 entries, some deleted, with two groups: `g1` read by
/// two consumers (some entries acknowledged, some claimed with other
/// delivery counts) and `g2` made at an id of its own with a consumer
/// that read nothing.
async fn make_stream(conn: &mut MultiplexedConnection, key: &[u8]) {
    let mut commands = Vec::new();
    for i in 1..=3000usize {
        let mut c = parts(&[b"XADD", key]);
        c.push(format!("{i}-{}", i % 3).into_bytes());
        for f in 0..(i % 4 + 1) {
            c.push(name("field", f));
            c.push(noise(i as u64, i % 50));
        }
        commands.push(c);
    }
    pipeline(conn, commands).await;
    call(conn, &[b"XGROUP", b"CREATE", key, b"g1\0", b"0"]).await;
    call(conn, &[b"XGROUP", b"CREATE", key, b"g2", b"1500-0"]).await;
    call(conn, &[b"XGROUP", b"CREATECONSUMER", key, b"g2", b"nobody"]).await;
    for (consumer, count) in [(&b"alice\xff"[..], &b"1200"[..]), (b"bob", b"300")] {
        call(
            conn,
            &[
                b"XREADGROUP",
                b"GROUP",
                b"g1\0",
                consumer,
                b"COUNT",
                count,
                b"STREAMS",
                key,
                b">",
            ],
        )
        .await;
    }
    // Acknowledged, then deleted: gone from the stream, not pending.
    call(conn, &[b"XACK", key, b"g1\0", b"10-1", b"11-2", b"12-0"]).await;
    call(conn, &[b"XDEL", key, b"10-1", b"11-2", b"2900-2"]).await;
    // Delivered again: counts of 4, and a later delivery time.
    call(
        conn,
        &[
            b"XCLAIM",
            key,
            b"g1\0",
            b"bob",
            b"0",
            b"20-2",
            b"21-0",
            b"RETRYCOUNT",
            b"4",
        ],
    )
    .await;
}

#[tokio::test]
async fn streams_are_rebuilt_with_their_groups_and_pending_entries() {
    let source_server = Server::start();
    let target_server = Server::start();
    let mut source = source_server.connect().await;
    let mut target = target_server.connect().await;
    let chunk = 8 * 1024;

    let key = name("stream", 0);
    make_stream(&mut source, &key).await;
    call(&mut source, &[b"PEXPIRE", &key, HOUR_MS]).await;
    let batches = rebuild(&mut source, &mut target, &key, chunk).await;
    check_batches(&key, &batches, chunk, true);
    assert!(batches.len() > 10, "{} batches", batches.len());
    assert_same(&mut source, &mut target, &key).await;
    // Pending entries delivered together are claimed together.
    let claims = batches.iter().flatten().filter(|c| c.is("XCLAIM")).count();
    assert!(claims < 100, "{claims} XCLAIMs");

    // Emptied by XDEL: no entries, a last id and a max deleted id.
    call(&mut source, &[b"XADD", b"emptied", b"5-1", b"f", b"v"]).await;
    call(&mut source, &[b"XADD", b"emptied", b"7-1", b"f", b"v"]).await;
    call(&mut source, &[b"XDEL", b"emptied", b"5-1", b"7-1"]).await;
    // Trimmed to nothing: a last id, no max deleted id.
    call(&mut source, &[b"XADD", b"trimmed", b"9-9", b"f", b"v"]).await;
    call(&mut source, &[b"XTRIM", b"trimmed", b"MAXLEN", b"0"]).await;
    // Made by a group, never written: 0-0.
    call(
        &mut source,
        &[b"XGROUP", b"CREATE", b"made", b"g", b"$", b"MKSTREAM"],
    )
    .await;
    for key in [&b"emptied"[..], b"trimmed", b"made"] {
        let batches = rebuild(&mut source, &mut target, key, chunk).await;
        check_batches(key, &batches, chunk, false);
        assert_same(&mut source, &mut target, key).await;
        let groups = view(&mut target, &[b"XINFO", b"GROUPS", key]).await;
        let expected = usize::from(key == b"made");
        assert!(
            matches!(&groups, Tree::List(g) if g.len() == expected),
            "{groups:?}"
        );
    }
}

#[tokio::test]
async fn replies_in_resp3_rebuild_the_same() {
    let source_server = Server::start();
    let target_server = Server::start();
    let mut setup = source_server.connect().await;
    let mut source = source_server.connect_resp3().await;
    let mut target = target_server.connect().await;
    let key = name("stream", 3);
    make_stream(&mut setup, &key).await;
    call(
        &mut setup,
        &[b"ZADD", b"z", b"0.1", b"a", b"inf", b"b", b"-2.5", b"c"],
    )
    .await;
    call(&mut setup, &[b"HSET", b"h", b"\0", b"\xff"]).await;
    call(&mut setup, &[b"PEXPIRE", b"h", HOUR_MS]).await;
    for key in [&key[..], b"z", b"h"] {
        let batches = rebuild(&mut source, &mut target, key, 4096).await;
        check_batches(key, &batches, 4096, key == b"h");
        assert_same(&mut setup, &mut target, key).await;
    }
}

#[tokio::test]
async fn an_element_larger_than_the_chunk_is_a_batch_of_its_own() {
    let source_server = Server::start();
    let target_server = Server::start();
    let mut source = source_server.connect().await;
    let mut target = target_server.connect().await;
    let chunk = 1024;
    let huge = noise(7, 10 * chunk);
    call(
        &mut source,
        &[b"RPUSH", b"l", b"a", &huge, b"b", &huge, b"c"],
    )
    .await;
    call(&mut source, &[b"SADD", b"s", b"a", &huge, b"b"]).await;
    call(&mut source, &[b"XADD", b"x", b"1-1", b"f", &huge]).await;
    call(&mut source, &[b"XADD", b"x", b"2-1", b"f", b"v"]).await;
    for key in [&b"l"[..], b"s", b"x"] {
        let batches = rebuild(&mut source, &mut target, key, chunk).await;
        check_batches(key, &batches, chunk, false);
        assert_same(&mut source, &mut target, key).await;
        let holding: Vec<&Vec<Command>> = batches
            .iter()
            .filter(|b| b.iter().any(|c| c.args().iter().any(|a| a.len() > chunk)))
            .collect();
        for batch in holding {
            let elements: usize = batch
                .iter()
                .filter(|c| !c.is("DEL") && !c.is("XSETID"))
                .map(|c| if c.is("XADD") { 1 } else { c.args().len() - 2 })
                .sum();
            assert_eq!(elements, 1, "{key:?}: the huge element is alone");
        }
    }
}

/// Waits until the source has let `key` expire.
async fn expired(conn: &mut MultiplexedConnection, key: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(conn, &[b"EXISTS", key]).await != Value::Int(0) {
        assert!(Instant::now() < deadline, "{key:?} did not expire");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_key_that_expires_mid_way_ends_deleted_on_the_backup_too() {
    let source_server = Server::start();
    let target_server = Server::start();
    let mut source = source_server.connect().await;
    let mut target = target_server.connect().await;
    let chunk = 1024;
    fill(
        &mut source,
        2000,
        |i| vec![noise(i as u64, 20)],
        &[b"RPUSH", b"list"],
    )
    .await;
    fill(
        &mut source,
        2000,
        |i| vec![name("f", i), b"v".to_vec()],
        &[b"HSET", b"hash"],
    )
    .await;
    call(&mut source, &[b"SET", b"string", &noise(3, 20 * chunk)]).await;
    make_stream(&mut source, b"stream").await;

    for key in [&b"list"[..], b"hash", b"string", b"stream"] {
        call(&mut source, &[b"PEXPIRE", key, b"300"]).await;
        let mut r = Rebuild::start(&mut source, Bytes::copy_from_slice(key))
            .await
            .unwrap();
        let first = r.next(&mut source, chunk).await.unwrap().unwrap();
        apply(&mut target, &first).await;
        assert_eq!(
            call(&mut target, &[b"EXISTS", key]).await,
            Value::Int(1),
            "partly rebuilt"
        );
        expired(&mut source, key).await;
        let mut batches = vec![first];
        while let Some(batch) = r.next(&mut source, chunk).await.unwrap() {
            apply(&mut target, &batch).await;
            batches.push(batch);
        }
        check_batches(key, &batches, chunk, true);
        assert_eq!(
            call(&mut target, &[b"EXISTS", key]).await,
            Value::Int(0),
            "{key:?} deleted on the backup too"
        );
    }
}

#[tokio::test]
async fn without_pexpiretime_the_expiry_comes_from_pttl_and_time() {
    let source_server =
        Server::start_with(&["--rename-command", "PEXPIRETIME", "HIDDENPEXPIRETIME"]);
    let target_server = Server::start();
    let mut source = source_server.connect().await;
    let mut target = target_server.connect().await;
    call(&mut source, &[b"SET", b"k", b"v", b"PX", HOUR_MS]).await;
    let batches = rebuild(&mut source, &mut target, b"k", 1024).await;
    check_batches(b"k", &batches, 1024, true);
    let Value::Int(at) = call(&mut source, &[b"HIDDENPEXPIRETIME", b"k"]).await else {
        panic!()
    };
    let Value::Int(rebuilt) = call(&mut target, &[b"PEXPIRETIME", b"k"]).await else {
        panic!()
    };
    assert!((0..=2).contains(&(rebuilt - at)), "{at} vs {rebuilt}");
    assert_eq!(
        call(&mut target, &[b"GET", b"k"]).await,
        Value::BulkString(b"v".to_vec())
    );
}

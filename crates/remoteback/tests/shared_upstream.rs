//! The connection to the primary that sessions share (`share_upstream`):
//! keyed commands of many clients go on it, each client's commands keep
//! their order across it and the client's own connection, a client that
//! changed its connection stays on its own, and a shared connection the
//! primary closed is replaced. Real redis-server and proxy; a LogSender
//! (no broker).

mod common;

use std::thread;
use std::time::Duration;

use common::pipeline::connect;
use common::status::Status;
use common::{free_port, wait_until, RedisServer, Service};

struct Proxied {
    primary: RedisServer,
    _proxy: Service,
    port: u16,
    status: Status,
}

fn start(share: bool) -> Proxied {
    start_with(share, &[])
}

fn start_with(share: bool, primary_args: &[&str]) -> Proxied {
    let primary = RedisServer::start_with(primary_args);
    let (port, metrics) = (free_port(), free_port());
    let proxy = Service::proxy(&format!(
        r#"
bindport = {port}
connport = {primary}
metrics = "127.0.0.1:{metrics}"
share_upstream = {share}

[[sender]]
class = "LogSender"
logger = "capture"
level = "debug"
"#,
        primary = primary.port()
    ));
    proxy.wait_port(port);
    proxy.wait_port(metrics);
    Proxied {
        primary,
        _proxy: proxy,
        port,
        status: Status(metrics),
    }
}

/// The primary's connections: (id, name), "" for none.
fn clients(primary: &mut redis::Connection) -> Vec<(String, String)> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(primary)
        .expect("CLIENT LIST");
    let field = |line: &str, name: &str| {
        line.split(' ')
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_default()
            .to_owned()
    };
    list.lines()
        .map(|l| (field(l, "id="), field(l, "name=")))
        .collect()
}

/// The primary's connections named as the shared one, by id.
fn shared_ids(primary: &mut redis::Connection) -> Vec<String> {
    clients(primary)
        .into_iter()
        .filter(|(_, name)| name == "remoteback-shared")
        .map(|(id, _)| id)
        .collect()
}

const CLIENTS: usize = 8;
const ROUNDS: usize = 200;

/// Each client pipelines pushes to its own list (shared connection) with a
/// script reading the list's length after each (the client's own
/// connection): the script sees every push before it and none after.
fn push_and_count(port: u16) {
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            thread::spawn(move || {
                let mut con = connect(port);
                let key = format!("list:{c}");
                let mut pipe = redis::pipe();
                for i in 0..ROUNDS {
                    pipe.cmd("RPUSH").arg(&key).arg(i);
                    pipe.cmd("EVAL")
                        .arg("return redis.call('LLEN', KEYS[1])")
                        .arg(1)
                        .arg(&key);
                }
                let replies: Vec<i64> = pipe.query(&mut con).expect("pipeline");
                for (i, pair) in replies.chunks(2).enumerate() {
                    let n = i as i64 + 1;
                    assert_eq!(
                        pair,
                        [n, n],
                        "client {c}, round {i}: push and count in order"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client");
    }
}

#[test]
fn clients_share_one_connection_and_keep_their_order() {
    let p = start(true);
    push_and_count(p.port);
    let mut primary = connect(p.primary.port());
    for c in 0..CLIENTS {
        let items: Vec<i64> = redis::cmd("LRANGE")
            .arg(format!("list:{c}"))
            .arg(0)
            .arg(-1)
            .query(&mut primary)
            .expect("LRANGE");
        assert_eq!(items, (0..ROUNDS as i64).collect::<Vec<_>>(), "list:{c}");
    }
    assert_eq!(
        p.status
            .value("remoteback_proxy_shared_upstream_commands_total"),
        (CLIENTS * ROUNDS) as u64,
        "every push, and nothing else, went on the shared connection"
    );
    assert_eq!(
        p.status
            .value("remoteback_proxy_shared_upstream_connections_total"),
        1
    );
    assert_eq!(shared_ids(&mut primary).len(), 1, "one shared connection");
}

#[test]
fn with_sharing_off_every_command_goes_on_its_client_s_connection() {
    let p = start(false);
    push_and_count(p.port);
    assert_eq!(
        p.status
            .value("remoteback_proxy_shared_upstream_commands_total"),
        0
    );
    assert!(shared_ids(&mut connect(p.primary.port())).is_empty());
}

#[test]
fn a_client_that_changed_its_connection_stays_on_its_own() {
    let p = start(true);
    let mut con = connect(p.port);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("db0")
        .query(&mut con)
        .unwrap();
    let shared_before = p
        .status
        .value("remoteback_proxy_shared_upstream_commands_total");
    assert_eq!(shared_before, 1);
    let _: () = redis::cmd("SELECT").arg(1).query(&mut con).unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("db1")
        .query(&mut con)
        .unwrap();
    let got: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(got, "db1", "the client reads its own database");
    let mut primary = connect(p.primary.port());
    let db0: String = redis::cmd("GET").arg("k").query(&mut primary).unwrap();
    assert_eq!(
        db0, "db0",
        "the write after SELECT did not reach database 0"
    );
    let _: () = redis::cmd("SELECT").arg(1).query(&mut primary).unwrap();
    let db1: String = redis::cmd("GET").arg("k").query(&mut primary).unwrap();
    assert_eq!(db1, "db1");
    // Back to database 0 the client still does not share: its connection
    // was changed once, and that is all the proxy tracks.
    let _: () = redis::cmd("SELECT").arg(0).query(&mut con).unwrap();
    let _: () = redis::cmd("SET").arg("j").arg("v").query(&mut con).unwrap();
    assert_eq!(
        p.status
            .value("remoteback_proxy_shared_upstream_commands_total"),
        shared_before
    );
    // A transaction's commands run on the client's own connection.
    let mut other = connect(p.port);
    let (a, b): (String, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("t")
        .arg("1")
        .cmd("INCR")
        .arg("t")
        .query(&mut other)
        .unwrap();
    assert_eq!((a.as_str(), b), ("OK", 2));
    assert_eq!(
        p.status
            .value("remoteback_proxy_shared_upstream_commands_total"),
        shared_before
    );
}

#[test]
fn a_shared_connection_the_primary_closed_is_replaced() {
    let p = start(true);
    let mut con = connect(p.port);
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let mut primary = connect(p.primary.port());
    let ids = shared_ids(&mut primary);
    assert_eq!(ids.len(), 1);
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&ids[0])
        .query(&mut primary)
        .unwrap();
    assert_eq!(killed, 1);
    // Nothing was in flight on it: the next command of a client finds a
    // new shared connection (a client whose command raced the close would
    // be closed, as when its own connection fails, and reconnects).
    wait_until(Duration::from_secs(10), "a write after the close", || {
        let mut fresh = connect(p.port);
        redis::cmd("SET")
            .arg("after")
            .arg("1")
            .query::<()>(&mut fresh)
            .is_ok()
    });
    let after: String = redis::cmd("GET").arg("after").query(&mut primary).unwrap();
    assert_eq!(after, "1");
    assert_eq!(
        p.status
            .value("remoteback_proxy_shared_upstream_connections_total"),
        2
    );
    let now = shared_ids(&mut primary);
    assert_eq!(now.len(), 1);
    assert_ne!(now, ids, "a new connection");
}

#[test]
fn a_client_whose_own_connection_the_primary_closed_idle_goes_on_sharing() {
    // The primary closes connections idle for a second: the client's own
    // one, which none of its SETs use.
    let p = start_with(true, &["--timeout", "1"]);
    let mut con = connect(p.port);
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("app")
        .query(&mut con)
        .unwrap();
    let mut admin = connect(p.primary.port());
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("admin")
        .query(&mut admin)
        .unwrap();
    let mut i = 0;
    wait_until(
        Duration::from_secs(15),
        "the client's own connection closed",
        || {
            i += 1;
            let _: () = redis::cmd("SET")
                .arg("k")
                .arg(i)
                .query(&mut con)
                .expect("SET while sharing");
            thread::sleep(Duration::from_millis(50));
            !clients(&mut admin).iter().any(|(_, name)| name == "app")
        },
    );
    for _ in 0..20 {
        i += 1;
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg(i)
            .query(&mut con)
            .expect("SET after the close");
    }
    let got: i64 = redis::cmd("GET").arg("k").query(&mut admin).unwrap();
    assert_eq!(got, i);
    // Its next command for its own connection finds it closed, as it
    // would without the proxy.
    assert!(redis::cmd("PING").query::<String>(&mut con).is_err());
}

//! The proxy's limits on clients (docs/limits.md), against a real
//! redis-server and a `remoteback proxy` process (a LogSender only).

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use common::status::Status;
use common::{free_port, wait_until, RedisServer, Service};

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

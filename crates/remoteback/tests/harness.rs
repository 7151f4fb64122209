//! Smoke tests of the integration-test harness itself: a throw-away
//! redis-server and a tansu broker that really stores and serves records.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use common::{free_port, port_open, wait_until, Broker, RedisServer};

fn redis_conn(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .expect("redis client")
        .get_connection()
        .expect("redis connection")
}

#[test]
fn free_ports_are_not_handed_out_twice() {
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let unique: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(unique.len(), ports.len(), "{ports:?}");
    // Outside the range the kernel gives outgoing connections, so another
    // test's client cannot take one before its server binds it.
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| {
            let mut it = r.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        });
    if let Some((low, high)) = ephemeral.filter(|(low, _)| *low >= 4096) {
        assert!(
            ports.iter().all(|p| *p < low || *p > high),
            "{ports:?} within {low}-{high}"
        );
    }
}

#[test]
fn redis_server_starts_restarts_and_stops() {
    let mut server = RedisServer::start();
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));

    let mut con = redis_conn(&server);
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut con)
        .unwrap();
    let v: Option<String> = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v.as_deref(), Some("v"));

    // Same port after a restart, and no persistence: the key is gone.
    server.restart();
    assert_eq!(server.port(), port);
    let mut con = redis_conn(&server);
    let v: Option<String> = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v, None);

    let dir = server.dir().to_path_buf();
    drop(server);
    assert!(!port_open(port), "redis-server still listens after drop");
    assert!(!dir.exists(), "temp dir {} not removed", dir.display());
}

#[test]
fn broker_produces_and_consumes() {
    let broker = Broker::start();
    assert!(broker.pid() > 0);
    let topic = "harness-smoke";
    broker.create_topic(topic, 2);

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    producer
        .send(
            BaseRecord::to(topic)
                .partition(1)
                .key("smoke-key")
                .payload("smoke-payload"),
        )
        .map_err(|(e, _)| e)
        .expect("enqueue record");
    producer
        .flush(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("flush: {e}\n{}", broker.log()));

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "harness-smoke")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..2 {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");

    let deadline = Instant::now() + Duration::from_secs(30);
    let (partition, key, payload) = loop {
        assert!(
            Instant::now() < deadline,
            "no record consumed within 30 s\n{}",
            broker.log()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(e)) => panic!("consume: {e}\n{}", broker.log()),
            Some(Ok(m)) => {
                break (
                    m.partition(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                )
            }
        }
    };
    assert_eq!(partition, 1);
    assert_eq!(key.as_deref(), Some(&b"smoke-key"[..]));
    assert_eq!(payload.as_deref(), Some(&b"smoke-payload"[..]));

    let port = broker.port();
    drop(broker);
    wait_until(Duration::from_secs(5), "broker port to close", || {
        !port_open(port)
    });
}

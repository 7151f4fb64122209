//! Records Kafka holds twice, and configurations whose producer may write
//! them: real primary and backup redis-server, a tansu broker, `remoteback
//! proxy` and `remoteback replay`.
//!
//! The load (`INCR`, `LPUSH`, `APPEND`, transactions) shows a record applied
//! twice as a wrong number; each client counts what it wrote.

mod common;

use std::time::Duration;

use common::faults::{check_tallies, Load, Setup, TOPIC};
use common::status::Status;
use common::{free_port, wait_until, Service};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;
const DUPLICATES: &str = "remoteback_replay_duplicates_skipped_total";

/// A replay with its status endpoints on a free port.
fn replay(s: &Setup) -> (Service, Status) {
    let port = free_port();
    let replay = s.replay(&format!("metrics = \"127.0.0.1:{port}\""), "");
    replay.wait_port(port);
    (replay, Status(port))
}

/// One partition's records from `from` to `to`, as they are (key, payload,
/// headers).
type Copied = (Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

fn read_range(s: &Setup, partition: i32, from: i64, to: i64) -> Vec<Copied> {
    let consumer: BaseConsumer = s
        .broker
        .client_config()
        .set("group.id", "duplicates-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(TOPIC, partition, Offset::Offset(from))
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let mut next = from;
    wait_until(Duration::from_secs(30), "the range to be read", || {
        while let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            if m.offset() < next || m.offset() >= to {
                continue;
            }
            next = m.offset() + 1;
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or(b"").to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or(b"").to_vec(),
                headers,
            ));
        }
        next >= to
    });
    out
}

/// Writes `records` to `partition` again, as a producer retrying without
/// idempotence, or a mirror, would.
fn write_again(s: &Setup, partition: i32, records: &[Copied]) {
    let producer: BaseProducer = s
        .broker
        .client_config()
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    for (key, payload, headers) in records {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(TOPIC)
            .partition(partition)
            .payload(payload)
            .headers(h);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer.send(record).map_err(|(e, _)| e).expect("enqueue");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// A range of every partition written a second time after the replay applied
/// it: the replay skips each copy, counts it, and the backup stays exact.
#[test]
fn a_range_the_topic_holds_twice_is_applied_once() {
    let s = Setup::start(&[], PARTITIONS);
    let (replay, status) = replay(&s);
    let load = Load::start(s.proxy_port, 4);
    std::thread::sleep(Duration::from_millis(3000));
    let tallies = load.finish();
    let ends = s.converge(PARTITIONS, &[&replay]);
    let mut copied = 0;
    for (p, &end) in ends.iter().enumerate() {
        let from = end / 3;
        let range = read_range(&s, p as i32, from, end);
        copied += range.len() as u64;
        write_again(&s, p as i32, &range);
    }
    eprintln!("[inject] {copied} records written a second time: the last two thirds of each partition (ends {ends:?})");
    let now = s.converge(PARTITIONS, &[&replay]);
    assert!(now.iter().zip(&ends).all(|(n, e)| n > e), "{now:?}");
    check_tallies(&s.backup, &tallies);
    assert_eq!(status.value(DUPLICATES), copied);
    eprintln!("[check] the replay skipped all {copied} copies ({DUPLICATES} {copied}); the backup holds each client's count once");
}

/// A KafkaSender table written for the original system (`acks = "1"`,
/// `retries = "0"`) loads with a warning, and the pipeline converges.
#[test]
fn the_original_configuration_with_acks_1_loads_and_converges() {
    let s = Setup::start_with(&[], PARTITIONS, "", "acks = \"1\"\nretries = \"0\"");
    let log = s.proxy.log();
    assert!(
        log.contains("acks = \"1\", retries = \"0\": the idempotent producer is off"),
        "{log}"
    );
    let (replay, status) = replay(&s);
    let load = Load::start(s.proxy_port, 4);
    std::thread::sleep(Duration::from_millis(2000));
    let tallies = load.finish();
    let ends = s.converge(PARTITIONS, &[&replay]);
    check_tallies(&s.backup, &tallies);
    assert_eq!(status.value(DUPLICATES), 0);
    eprintln!("[check] acks = \"1\", retries = \"0\": the proxy warned once and ran; records per partition {ends:?}; the backup holds each client's count");
}

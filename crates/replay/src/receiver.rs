//! `KafkaReceiver`: records of one topic partition, from a given offset.
//!
//! Each partition gets a consumer of its own, assigned (not subscribed) at
//! the offset the backup stored: no group coordinator is involved, start-up
//! is immediate, and the position is never committed to Kafka (it lives in
//! the backup, see [`offsets`](crate::offsets)).

use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use remoteback_protocol::record::Meta;

use crate::settings::ReceiverSettings;

/// Consumer properties remoteback sets unless the configuration overrides
/// them: no commits to Kafka, and an out-of-range stored offset is an error
/// rather than a silent jump.
const DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "error"),
    ("group.id", "remoteback-replay"),
];

/// Most records applied in one transaction.
pub const MAX_BATCH: usize = 1000;
/// Most payload bytes applied in one transaction.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A consumed record.
#[derive(Clone, Debug)]
pub struct Received {
    pub offset: i64,
    pub meta: Meta,
    pub payload: Bytes,
}

impl Received {
    pub fn time_ms(&self) -> Option<u64> {
        self.meta.time_ms
    }
}

/// A Kafka problem: a bad record, or a consumer error.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("record at {topic}[{partition}]@{offset}: {reason}")]
    BadRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("kafka: {0}")]
    Kafka(String),
}

/// The client configuration: remoteback's defaults, then the passthrough.
pub fn client_config(settings: &ReceiverSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in DEFAULTS {
        config.set(*k, *v);
    }
    for (k, v) in &settings.kafka {
        config.set(k, v);
    }
    config
}

/// Every partition of the configured topics. Waits (logging once) while a
/// topic does not exist yet, so the replay may start before the proxy.
pub async fn partitions(settings: &ReceiverSettings) -> Result<Vec<(String, i32)>, ReceiveError> {
    let config = client_config(settings);
    let topics = settings.topics.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<(String, i32)>, ReceiveError> {
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| ReceiveError::Kafka(e.to_string()))?;
        let mut found = Vec::new();
        for topic in &topics {
            let mut warned = false;
            loop {
                let partitions = match consumer.fetch_metadata(Some(topic), Duration::from_secs(10))
                {
                    Ok(m) => m
                        .topics()
                        .iter()
                        .filter(|t| t.name() == topic && t.error().is_none())
                        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                        .collect::<Vec<_>>(),
                    Err(e) => {
                        log::warn!("cannot read metadata of topic {topic}: {e}");
                        Vec::new()
                    }
                };
                if !partitions.is_empty() {
                    found.extend(partitions.into_iter().map(|p| (topic.clone(), p)));
                    break;
                }
                if !warned {
                    log::warn!("topic {topic} not found (yet); waiting for it");
                    warned = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Ok(found)
    })
    .await
    .map_err(|e| ReceiveError::Kafka(e.to_string()))?
}

/// A consumer assigned to `topic`/`partition` at `start` (the beginning
/// when the backup has no stored offset).
pub fn consumer(
    settings: &ReceiverSettings,
    topic: &str,
    partition: i32,
    start: Option<i64>,
) -> Result<StreamConsumer, ReceiveError> {
    let consumer: StreamConsumer = client_config(settings)
        .create()
        .map_err(|e| ReceiveError::Kafka(e.to_string()))?;
    let mut assignment = TopicPartitionList::new();
    let offset = start.map(Offset::Offset).unwrap_or(Offset::Beginning);
    assignment
        .add_partition_offset(topic, partition, offset)
        .map_err(|e| ReceiveError::Kafka(e.to_string()))?;
    consumer
        .assign(&assignment)
        .map_err(|e| ReceiveError::Kafka(e.to_string()))?;
    Ok(consumer)
}

/// Waits up to `poll_timeout` for a record, then takes whatever else is
/// already there, up to the batch limits. Empty when nothing arrived.
pub async fn next_batch(
    consumer: &StreamConsumer,
    poll_timeout: Duration,
) -> Result<Vec<Received>, ReceiveError> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut wait = poll_timeout;
    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
        let message = match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => return Err(ReceiveError::Kafka(e.to_string())),
            Ok(Ok(m)) => m,
        };
        let received = convert(&message)?;
        bytes += received.payload.len();
        batch.push(received);
        wait = Duration::ZERO;
    }
    Ok(batch)
}

fn convert(message: &rdkafka::message::BorrowedMessage<'_>) -> Result<Received, ReceiveError> {
    let headers = message.headers();
    let pairs = headers
        .iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value.unwrap_or_default()));
    let meta = Meta::from_headers(pairs).map_err(|e| ReceiveError::BadRecord {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        reason: e.to_string(),
    })?;
    Ok(Received {
        offset: message.offset(),
        meta,
        payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
    })
}

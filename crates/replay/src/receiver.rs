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
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use remoteback_protocol::record::Meta;

use crate::error::{BadRecord, Unreadable};
use crate::settings::ReceiverSettings;

/// Consumer properties remoteback sets unless the configuration overrides
/// them: no commits to Kafka; an out-of-range stored offset is an error
/// rather than a silent jump; and a fetch returns after at most 20 ms when
/// fewer bytes than asked for are there (librdkafka's 500 ms default would
/// add half a second to the replication lag on brokers that wait it out).
const DEFAULTS: &[(&str, &str)] = &[
    ("fetch.wait.max.ms", "20"),
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

/// A Kafka problem: a bad record, a partition that is not there, or a
/// consumer error.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    BadRecord(#[from] BadRecord),
    #[error("topic {topic} has no partition {partition} (it has {}); check `partitions` in [receiver]", describe_partitions(.available))]
    NoPartition {
        topic: String,
        partition: i32,
        available: Vec<i32>,
    },
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("kafka: reading the end offset of {topic}[{partition}]: {source}")]
    EndOffset {
        topic: String,
        partition: i32,
        source: KafkaError,
    },
    #[error("kafka: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl ReceiveError {
    /// Whether the configuration asks for something that is not there.
    pub fn is_config(&self) -> bool {
        matches!(self, ReceiveError::NoPartition { .. })
    }

    /// Whether it says only that the brokers cannot be reached now.
    pub fn is_transient(&self) -> bool {
        match self {
            ReceiveError::Kafka(e) | ReceiveError::EndOffset { source: e, .. } => is_transient(e),
            _ => false,
        }
    }
}

fn describe_partitions(ids: &[i32]) -> String {
    match ids {
        [] => "none".into(),
        [one] => format!("only partition {one}"),
        _ if ids.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!("partitions {}-{}", ids[0], ids[ids.len() - 1])
        }
        _ => {
            let list: Vec<String> = ids.iter().map(|p| p.to_string()).collect();
            format!("partitions {}", list.join(", "))
        }
    }
}

/// Where a partition's consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The first record the partition holds.
    Beginning,
    /// This offset.
    Offset(i64),
}

/// What one poll brought: consecutive records, and the problem that ended
/// the batch early (a record that cannot be read, a consumer error), if any.
/// The records come before the problem and are to be applied first.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Received>,
    pub error: Option<ReceiveError>,
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

/// The partitions of the configured topics this replay applies: all, or
/// those `partitions` lists (each of which must exist in every topic). Waits
/// (logging once) while a topic does not exist yet, so the replay may start
/// before the proxy.
pub async fn partitions(settings: &ReceiverSettings) -> Result<Vec<(String, i32)>, ReceiveError> {
    let config = client_config(settings);
    let topics = settings.topics.clone();
    let listed = settings.partitions.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<(String, i32)>, ReceiveError> {
        let consumer: BaseConsumer = config.create()?;
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
                    let mut available = partitions;
                    available.sort_unstable();
                    let chosen = match &listed {
                        None => available,
                        Some(listed) => {
                            if let Some(&missing) = listed.iter().find(|p| !available.contains(p)) {
                                return Err(ReceiveError::NoPartition {
                                    topic: topic.clone(),
                                    partition: missing,
                                    available,
                                });
                            }
                            listed.clone()
                        }
                    };
                    found.extend(chosen.into_iter().map(|p| (topic.clone(), p)));
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
    .await?
}

/// The partition's high watermark: the offset the next record written to it
/// will get (where `start = "latest"` begins).
pub async fn high_watermark(
    settings: &ReceiverSettings,
    topic: &str,
    partition: i32,
) -> Result<i64, ReceiveError> {
    watermarks(settings, topic, partition)
        .await
        .map(|(_low, high)| high)
}

/// The partition's high watermark as the consumer last heard it from the
/// broker (every fetch response carries it), without asking again; `None`
/// before the first fetch.
///
/// rdkafka offers only the blocking `fetch_watermarks` (a request to the
/// broker each time); librdkafka's cached `rd_kafka_get_watermark_offsets`
/// is called directly so that the records a partition is behind can be
/// told after every batch for nothing.
pub fn cached_high_watermark(
    consumer: &StreamConsumer,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is the consumer's own, alive for the
    // call; the topic is a NUL-terminated string alive for the call; low
    // and high are written by librdkafka only.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// The first offset a partition still holds and the one its next record
/// will get.
pub async fn watermarks(
    settings: &ReceiverSettings,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), ReceiveError> {
    let config = client_config(settings);
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        consumer
            .fetch_watermarks(&topic, partition, Duration::from_secs(30))
            .map_err(|source| ReceiveError::EndOffset {
                topic,
                partition,
                source,
            })
    })
    .await?
}

/// A consumer assigned to `topic`/`partition` at `start`.
pub fn consumer(
    settings: &ReceiverSettings,
    topic: &str,
    partition: i32,
    start: StartAt,
) -> Result<StreamConsumer, ReceiveError> {
    let consumer: StreamConsumer = client_config(settings).create()?;
    let mut assignment = TopicPartitionList::new();
    let offset = match start {
        StartAt::Beginning => Offset::Beginning,
        StartAt::Offset(o) => Offset::Offset(o),
    };
    assignment.add_partition_offset(topic, partition, offset)?;
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Whether a consumer error says only that the brokers cannot be reached
/// now (librdkafka connects again by itself), rather than that records are
/// gone or the configuration is wrong.
pub fn is_transient(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        e.rdkafka_error_code(),
        Some(
            Code::AllBrokersDown
                | Code::BrokerTransportFailure
                | Code::BrokerNotAvailable
                | Code::NetworkException
                | Code::RequestTimedOut
                | Code::OperationTimedOut
                | Code::LeaderNotAvailable
                | Code::NotLeaderForPartition
                | Code::NotCoordinator
                | Code::CoordinatorNotAvailable
                | Code::Resolve
        )
    )
}

/// Waits up to `poll_timeout` for a record, then takes whatever else is
/// already there, up to the batch limits. Empty when nothing arrived. A
/// record that cannot be read or a consumer error ends the batch; the
/// records before it come back with it.
pub async fn next_batch(consumer: &StreamConsumer, poll_timeout: Duration) -> Batch {
    let mut batch = Batch::default();
    let mut bytes = 0;
    while batch.records.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
        // Only the first record is waited for.
        let message = if batch.records.is_empty() {
            match tokio::time::timeout(poll_timeout, consumer.recv()).await {
                Err(_) => break,
                Ok(m) => m,
            }
        } else {
            // What is already there, without waiting: a zero timeout would
            // wait for the timer's next tick instead, up to a millisecond
            // at the end of every batch (seen as 1 of the 1.4 ms a record
            // spent in an idle replay).
            tokio::select! {
                biased;
                m = consumer.recv() => m,
                () = std::future::ready(()) => break,
            }
        };
        let message = match message {
            Err(e) => {
                batch.error = Some(ReceiveError::Kafka(e));
                break;
            }
            Ok(m) => m,
        };
        match convert(&message) {
            Ok(received) => {
                bytes += received.payload.len();
                batch.records.push(received);
            }
            Err(e) => {
                batch.error = Some(e);
                break;
            }
        }
    }
    batch
}

fn convert(message: &rdkafka::message::BorrowedMessage<'_>) -> Result<Received, ReceiveError> {
    let headers = message.headers();
    let pairs = headers
        .iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value.unwrap_or_default()));
    let meta = Meta::from_headers(pairs).map_err(|e| BadRecord {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        reason: Unreadable::Header(e),
    })?;
    Ok(Received {
        offset: message.offset(),
        meta,
        payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode as Code;

    use super::*;

    #[test]
    fn unreachable_brokers_are_waited_for_lost_records_are_not() {
        assert!(is_transient(&KafkaError::MessageConsumption(
            Code::AllBrokersDown
        )));
        assert!(is_transient(&KafkaError::MessageConsumption(
            Code::BrokerTransportFailure
        )));
        assert!(!is_transient(&KafkaError::MessageConsumption(
            Code::OffsetOutOfRange
        )));
        assert!(!is_transient(&KafkaError::MessageConsumption(
            Code::UnknownTopicOrPartition
        )));
    }
}

//! Making sure a `KafkaSender`'s topic exists before the proxy takes clients.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::kafka::client_config;
use crate::settings::KafkaSenderSettings;

/// Why the topic could not be checked or created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("{0}")]
    Client(#[source] KafkaError),
    #[error("cannot read metadata of topic {topic}: {source}")]
    Metadata { topic: String, source: KafkaError },
    #[error("cannot create topic {topic}: {source}")]
    Create { topic: String, source: KafkaError },
    #[error("cannot create topic {topic}: {code}")]
    Refused {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// Creates the sender's topic when the broker does not have it (one
/// partition, replication factor 1: fine for a local pipeline; production
/// topics should be created by the operator with the replication and
/// partitions they need). Returns the topic's partition count.
pub async fn ensure_topic(settings: &KafkaSenderSettings) -> Result<u32, TopicError> {
    let topic = &settings.topic;
    let admin: AdminClient<DefaultClientContext> = client_config(settings)
        .create()
        .map_err(TopicError::Client)?;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| TopicError::Metadata {
            topic: topic.clone(),
            source,
        })?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as u32);
    if let Some(partitions) = partitions {
        return Ok(partitions);
    }
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .map_err(|source| TopicError::Create {
            topic: topic.clone(),
            source,
        })?;
    for r in results {
        match r {
            Ok(_) => log::info!("created topic {topic} (1 partition)"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Refused { topic, code }),
        }
    }
    Ok(1)
}

//! `ack = "kafka"`: a client's reply to a write waits for Kafka.
//!
//! With `ack = "redis"` (the default) a client gets the primary's reply at
//! once and its record follows asynchronously, so a proxy or broker failure
//! can lose writes the client saw succeed. With `ack = "kafka"` each record
//! handed to a Kafka sender comes with a [`Delivery`] that resolves when the
//! broker acknowledged it (`acks=all`) or the producer gave up; the session
//! holds the reply, and every reply after it, until then.

use rdkafka::error::KafkaError;
use tokio::sync::oneshot;

/// Whether replies wait for Kafka (`ack`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckMode {
    /// Replies go to the client as soon as the primary answered.
    #[default]
    Redis,
    /// A write's reply goes to the client once Kafka acknowledged its record.
    Kafka,
}

impl AckMode {
    pub fn name(self) -> &'static str {
        match self {
            AckMode::Redis => "redis",
            AckMode::Kafka => "kafka",
        }
    }
}

/// Whether a send reports its record's delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Track {
    /// As `ack` says: a client's write reports it only with `ack = "kafka"`.
    AsAcked,
    /// Always: the sync needs to know what Kafka holds to bound what it has
    /// in flight and to say where a resumed sync starts.
    Always,
}

/// Why a record did not reach Kafka: the backup misses its write. A held
/// reply reports it to the client instead of the primary's success.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Lost {
    /// The record never entered the producer's queue.
    #[error("the record was dropped: {0}")]
    Dropped(#[source] Dropped),
    /// The producer gave up on it after its retries.
    #[error("Kafka did not acknowledge the record: {0}")]
    NotAcknowledged(#[source] KafkaError),
    /// The delivery report never came (the producer went away).
    #[error("the producer discarded the record without a delivery report")]
    Discarded,
}

/// Why a record was dropped before it was queued.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Dropped {
    /// The backlog was full and `on_backlog_full = "drop"`.
    #[error("the backlog is full ({bytes} of {limit} bytes, on_backlog_full = \"drop\")")]
    BacklogFull { bytes: u64, limit: u64 },
    /// librdkafka's queue did not take it.
    #[error("{0}")]
    NotQueued(#[source] KafkaError),
}

/// The outcome of one record's delivery, as a held reply waits for it.
#[derive(Debug)]
pub enum Delivery {
    /// Resolved by the producer's delivery report.
    Pending(oneshot::Receiver<Result<(), Lost>>),
    /// Known lost already (dropped at a full backlog or queue).
    Lost(Lost),
}

/// The sending half, kept with the record until its delivery report.
pub type DeliveryReport = oneshot::Sender<Result<(), Lost>>;

impl Delivery {
    /// A pending delivery and the sender that resolves it.
    pub fn pending() -> (DeliveryReport, Delivery) {
        let (tx, rx) = oneshot::channel();
        (tx, Delivery::Pending(rx))
    }

    /// The outcome if already known, without waiting.
    pub fn ready(&mut self) -> Option<Result<(), Lost>> {
        match self {
            Delivery::Lost(lost) => Some(Err(lost.clone())),
            Delivery::Pending(rx) => match rx.try_recv() {
                Ok(outcome) => Some(outcome),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(Lost::Discarded)),
            },
        }
    }

    /// Waits for the outcome without giving the delivery up: cancelling the
    /// wait (a timeout around it) leaves it pending, to be waited for again.
    pub async fn wait(&mut self) -> Result<(), Lost> {
        match self {
            Delivery::Lost(lost) => Err(lost.clone()),
            Delivery::Pending(rx) => rx.await.unwrap_or(Err(Lost::Discarded)),
        }
    }

    /// Waits for the outcome.
    pub async fn outcome(self) -> Result<(), Lost> {
        match self {
            Delivery::Lost(lost) => Err(lost),
            Delivery::Pending(rx) => rx.await.unwrap_or(Err(Lost::Discarded)),
        }
    }
}

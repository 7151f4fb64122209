//! `ack = "kafka"`: a client's reply to a write waits for Kafka.
//!
//! With `ack = "redis"` (the default) a client gets the primary's reply at
//! once and its record follows asynchronously, so a proxy or broker failure
//! can lose writes the client saw succeed. With `ack = "kafka"` each record
//! handed to a Kafka sender comes with a [`Delivery`] that resolves when the
//! broker acknowledged it (`acks=all`) or the producer gave up; the session
//! holds the reply, and every reply after it, until then.

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

/// The outcome of one record's delivery, as a held reply waits for it.
#[derive(Debug)]
pub enum Delivery {
    /// Resolved by the producer's delivery report.
    Pending(oneshot::Receiver<Result<(), String>>),
    /// Known lost already (dropped at a full backlog or queue).
    Lost(String),
}

/// The sending half, kept with the record until its delivery report.
pub type Report = oneshot::Sender<Result<(), String>>;

impl Delivery {
    /// A pending delivery and the sender that resolves it.
    pub fn pending() -> (Report, Delivery) {
        let (tx, rx) = oneshot::channel();
        (tx, Delivery::Pending(rx))
    }

    /// The outcome if already known, without waiting.
    pub fn ready(&mut self) -> Option<Result<(), String>> {
        match self {
            Delivery::Lost(reason) => Some(Err(reason.clone())),
            Delivery::Pending(rx) => match rx.try_recv() {
                Ok(outcome) => Some(outcome),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(gone())),
            },
        }
    }

    /// Waits for the outcome.
    pub async fn outcome(self) -> Result<(), String> {
        match self {
            Delivery::Lost(reason) => Err(reason),
            Delivery::Pending(rx) => rx.await.unwrap_or_else(|_| Err(gone())),
        }
    }
}

fn gone() -> String {
    "the producer discarded the record without a delivery report".to_owned()
}

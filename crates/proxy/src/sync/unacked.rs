//! The sync's records Kafka has not acknowledged yet.
//!
//! Two things depend on them. The bound: the sync hands no more records to
//! the senders while `inflight_bytes` of its own are unacknowledged, so
//! that it cannot fill the backlog clients' writes go through. And the
//! resume position: a key counts as copied only once every record of it
//! and of every key before it is acknowledged, so a position the sync
//! reports is one it can restart from after a crash without a gap.

use std::collections::VecDeque;

use crate::sender::ack::{Delivery, Lost};

use super::position::SyncPosition;

/// Records handed to the senders together, and where the sync stands once
/// they and all before them are acknowledged.
struct Entry {
    deliveries: Vec<Delivery>,
    bytes: u64,
    /// `Some` at the end of a `SCAN` page: the position after it.
    reached: Option<SyncPosition>,
}

/// The sync's unacknowledged records, oldest first.
pub(crate) struct Unacked {
    entries: VecDeque<Entry>,
    bytes: u64,
    acked: SyncPosition,
    /// The first loss: from then on the position stays where it was.
    lost: Option<Lost>,
}

impl Unacked {
    /// Nothing in flight; everything before `start` is acknowledged.
    pub fn new(start: SyncPosition) -> Unacked {
        Unacked {
            entries: VecDeque::new(),
            bytes: 0,
            acked: start,
            lost: None,
        }
    }

    /// Records of `bytes` handed to the senders, with their deliveries.
    pub fn push(&mut self, deliveries: Vec<Delivery>, bytes: u64) {
        self.entries.push_back(Entry {
            deliveries,
            bytes,
            reached: None,
        });
        self.bytes += bytes;
    }

    /// Every record pushed so far covers the keyspace up to `position`.
    pub fn reached(&mut self, position: SyncPosition) {
        self.entries.push_back(Entry {
            deliveries: Vec::new(),
            bytes: 0,
            reached: Some(position),
        });
    }

    /// Bytes handed to the senders and not yet acknowledged.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The position everything before which Kafka holds.
    pub fn acked(&self) -> SyncPosition {
        self.acked
    }

    /// Takes the acknowledged entries off the front, without waiting. A lost
    /// record is an error: the backup misses a key's state.
    pub fn settle(&mut self) -> Result<(), Lost> {
        self.check()?;
        while let Some(front) = self.entries.front_mut() {
            while let Some(delivery) = front.deliveries.last_mut() {
                match delivery.ready() {
                    None => return Ok(()),
                    Some(Ok(())) => {
                        front.deliveries.pop();
                    }
                    Some(Err(lost)) => return self.record(Err(lost)),
                }
            }
            self.pop_front();
        }
        Ok(())
    }

    /// Waits for the oldest entry's deliveries; returns at once when
    /// nothing is in flight. Safe to cancel: a delivery leaves the entry
    /// only once it resolved, so a timeout around this wait cannot make an
    /// unacknowledged record count as acknowledged.
    pub async fn wait_oldest(&mut self) -> Result<(), Lost> {
        self.check()?;
        let Some(front) = self.entries.front_mut() else {
            return Ok(());
        };
        while let Some(delivery) = front.deliveries.last_mut() {
            match delivery.wait().await {
                Ok(()) => {
                    front.deliveries.pop();
                }
                Err(lost) => return self.record(Err(lost)),
            }
        }
        self.pop_front();
        self.settle()
    }

    /// Waits until everything handed to the senders is acknowledged.
    pub async fn drain(&mut self) -> Result<(), Lost> {
        while !self.entries.is_empty() {
            self.wait_oldest().await?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), Lost> {
        self.lost.clone().map_or(Ok(()), Err)
    }

    fn record(&mut self, outcome: Result<(), Lost>) -> Result<(), Lost> {
        if let Err(lost) = &outcome {
            self.lost.get_or_insert_with(|| lost.clone());
        }
        outcome
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= entry.bytes;
            if let Some(position) = entry.reached {
                self.acked = position;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(db: u32, cursor: u64) -> SyncPosition {
        SyncPosition { db, cursor }
    }

    #[tokio::test]
    async fn the_position_moves_once_all_before_it_is_acknowledged() {
        let mut unacked = Unacked::new(at(0, 0));
        let (first, d1) = Delivery::pending();
        let (second, d2) = Delivery::pending();
        unacked.push(vec![d1], 10);
        unacked.reached(at(0, 7));
        unacked.push(vec![d2], 5);
        unacked.reached(at(1, 0));
        assert_eq!(unacked.bytes(), 15);

        // The later record is acknowledged first: nothing moves yet.
        second.send(Ok(())).unwrap();
        unacked.settle().unwrap();
        assert_eq!((unacked.acked(), unacked.bytes()), (at(0, 0), 15));

        first.send(Ok(())).unwrap();
        unacked.settle().unwrap();
        assert_eq!((unacked.acked(), unacked.bytes()), (at(1, 0), 0));
    }

    #[tokio::test]
    async fn a_wait_cut_short_leaves_the_record_unacknowledged() {
        let mut unacked = Unacked::new(at(0, 0));
        let (report, delivery) = Delivery::pending();
        unacked.push(vec![delivery], 8);
        unacked.reached(at(0, 5));
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), unacked.wait_oldest()).await;
        assert!(waited.is_err(), "nothing acknowledged yet");
        unacked.settle().unwrap();
        assert_eq!((unacked.acked(), unacked.bytes()), (at(0, 0), 8));
        report.send(Ok(())).unwrap();
        unacked.drain().await.unwrap();
        assert_eq!((unacked.acked(), unacked.bytes()), (at(0, 5), 0));
    }

    #[tokio::test]
    async fn a_lost_record_is_an_error_and_the_position_stays_before_it() {
        let mut unacked = Unacked::new(at(2, 0));
        let (report, delivery) = Delivery::pending();
        unacked.push(vec![delivery], 3);
        unacked.reached(at(2, 9));
        drop(report);
        assert_eq!(unacked.drain().await, Err(Lost::Discarded));
        assert_eq!(unacked.settle(), Err(Lost::Discarded), "stays failed");
        assert_eq!(unacked.acked(), at(2, 0));
    }
}

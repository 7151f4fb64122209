//! Promoting the backup when the primary's region is gone: a running
//! replay asked to apply everything Kafka holds and stop there.
//!
//! Asked once, each partition takes its end at that moment as its
//! [`Bound`] and stops when it reached it; the replay then applies nothing
//! more and goes on serving its status until it is stopped. What each
//! partition reached is the recovery point (`remoteback promote`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::bound::Bound;

/// The switch, shared by the replay's partitions and whoever promotes.
#[derive(Clone)]
pub struct Promotion(Arc<Inner>);

struct Inner {
    bound: watch::Sender<Option<Arc<Bound>>>,
    /// The replay's partitions, once it knows them.
    partitions: AtomicUsize,
}

impl Default for Promotion {
    fn default() -> Self {
        Promotion(Arc::new(Inner {
            bound: watch::channel(None).0,
            partitions: AtomicUsize::new(usize::MAX),
        }))
    }
}

impl Promotion {
    /// Asks for it (once: asking again gives the same bound).
    pub fn request(&self) -> Arc<Bound> {
        let mut bound = None;
        self.0.bound.send_if_modified(|current| {
            let asked = current.is_none();
            let b = current.get_or_insert_with(|| {
                let b = Bound::new(None);
                b.set_partitions(self.0.partitions.load(Ordering::SeqCst));
                Arc::new(b)
            });
            bound = Some(b.clone());
            asked
        });
        bound.expect("set above")
    }

    /// The bound, once asked for.
    pub fn bound(&self) -> Option<Arc<Bound>> {
        self.0.bound.borrow().clone()
    }

    /// How many partitions the replay runs: the promotion is done when
    /// they all reached its bound.
    pub(crate) fn set_partitions(&self, n: usize) {
        self.0.partitions.store(n, Ordering::SeqCst);
        if let Some(bound) = self.bound() {
            bound.set_partitions(n);
        }
    }
}

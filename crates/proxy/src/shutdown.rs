//! Graceful shutdown of client sessions.
//!
//! On SIGTERM the proxy stops reading new requests from its clients, lets
//! every command already forwarded get its reply (so its record is captured),
//! and only then flushes the senders. A session that cannot finish (a client
//! blocked on `BLPOP key 0`) is cut after a bounded wait.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// Tells sessions to stop reading and counts the ones still running.
#[derive(Debug)]
pub(crate) struct Drain {
    closing: watch::Sender<bool>,
    live: AtomicUsize,
    ended: Notify,
    /// Clients refused at `maxclients`.
    refused: AtomicU64,
}

/// Held by a running session; dropping it counts the session as ended.
#[derive(Debug)]
pub(crate) struct Live(Arc<Drain>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain {
            closing: watch::channel(false).0,
            live: AtomicUsize::new(0),
            ended: Notify::new(),
            refused: AtomicU64::new(0),
        })
    }

    /// Registers a session.
    pub fn enter(self: &Arc<Self>) -> Live {
        self.live.fetch_add(1, Ordering::AcqRel);
        Live(self.clone())
    }

    /// A client was refused (`maxclients`); returns how many so far.
    pub fn refuse(&self) -> u64 {
        self.refused.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Clients refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Sessions running now: the connected clients.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// A receiver that turns `true` when shutdown begins (a session keeps
    /// one and waits on it beside every read).
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Starts the shutdown and waits up to `limit` for every session to end;
    /// returns how many were still running.
    pub async fn close(&self, limit: Duration) -> usize {
        self.closing.send_replace(true);
        let all_ended = async {
            loop {
                let ended = self.ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if self.live.load(Ordering::Acquire) == 0 {
                    return;
                }
                ended.await;
            }
        };
        let _ = tokio::time::timeout(limit, all_ended).await;
        self.live.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn close_waits_for_sessions_then_gives_up() {
        let drain = Drain::new();
        let live = drain.enter();
        let d = drain.clone();
        let session = tokio::spawn(async move {
            let _ = d.closing().wait_for(|c| *c).await;
            drop(live);
        });
        assert_eq!(drain.close(Duration::from_secs(5)).await, 0);
        session.await.expect("join");
        let _stuck = drain.enter();
        assert_eq!(drain.close(Duration::from_millis(20)).await, 1);
    }
}

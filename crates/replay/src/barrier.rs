//! Barriers: a record written as a copy to every partition of the topic
//! (`rb-barrier: <number>/<partitions>`) is applied once, at the place the
//! primary ran it relative to every partition's records.
//!
//! Each partition's applier, on meeting a copy:
//!
//! 1. has committed everything before it;
//! 2. if the barrier is done already (`barrier:<topic>:<source>` in the
//!    state is at or after it), passes its copy: stores the offset after it
//!    (and its `rb-seq`) and goes on;
//! 3. else records its arrival (`arrived:<topic>:<partition>`, with the
//!    offset of the copy, in one `MULTI`/`EXEC`) and waits:
//! 4. partition 0's applier, once every partition `0..partitions` has
//!    arrived, applies the command together with its offset and the done
//!    mark, in one `MULTI`/`EXEC`; the others, once they see it done, pass
//!    their copy.
//!
//! The backup is the only thing the replays sharing a topic share, so the
//! arrivals and the done mark live in its state hash (`state`). A process
//! wakes its own waiting partitions at once ([`Barriers`]) and polls the
//! backup at a short interval for partitions other processes own.
//!
//! Crash safety: a partition's offset stays at its copy until it passes
//! it, and it passes only after the done mark, which the command was
//! applied with; so a restart anywhere either finds the barrier done (and
//! passes) or arrives again (idempotent) and waits, and no partition
//! applies a record after a barrier before the barrier ran.

use std::sync::Arc;
use std::time::Duration;

use remoteback_protocol::frame::Frame;
use remoteback_protocol::record::Barrier;
use tokio::sync::Notify;

use crate::state::Position;

/// How often a waiting partition reads the backup's state again when no
/// partition of this process woke it.
pub const POLL: Duration = Duration::from_millis(50);
/// A wait longer than this is logged (and again every [`LOG_EVERY`]).
pub const LOG_AFTER: Duration = Duration::from_secs(10);
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// The wake-up this process's partitions share: notified after each
/// arrival at a barrier and each barrier applied.
#[derive(Clone, Debug, Default)]
pub struct Barriers(Arc<Notify>);

impl Barriers {
    pub fn notify(&self) {
        self.0.notify_waiters();
    }

    pub fn notify_handle(&self) -> Arc<Notify> {
        self.0.clone()
    }
}

/// One barrier, as a copy names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BarrierId {
    pub source: String,
    /// The proxy run and the barrier's number in it.
    pub at: Position,
    pub partitions: u32,
}

impl BarrierId {
    pub fn new(source: &str, run: u64, barrier: Barrier) -> BarrierId {
        BarrierId {
            source: source.to_string(),
            at: Position {
                run,
                n: barrier.number,
            },
            partitions: barrier.partitions,
        }
    }

    /// The value of `arrived:<topic>:<partition>` while a partition waits
    /// at this barrier.
    pub fn arrived_value(&self) -> String {
        format!("{}:{}:{}", self.at.run, self.at.n, self.source)
    }
}

impl std::fmt::Display for BarrierId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "barrier {}/{} of {} run {}",
            self.at.n, self.partitions, self.source, self.at.run
        )
    }
}

/// What the backup's state says about a barrier: its source's last barrier
/// applied, and where each partition `0..partitions` waits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub done: Option<Position>,
    pub arrived: Vec<Option<Vec<u8>>>,
}

/// What a partition does next at a barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The barrier ran: store the offset after the copy and go on.
    Pass,
    /// Every partition arrived and this one applies the command.
    Apply,
    /// Not yet.
    Wait,
}

impl View {
    /// From the reply to `HMGET state barrier:<topic>:<source>
    /// arrived:<topic>:0 ...`.
    pub fn parse(reply: &Frame) -> Option<View> {
        let items = reply.as_array()?;
        let (done, arrived) = items.split_first()?;
        let value = |f: &Frame| match f {
            Frame::Bulk(b) => Some(b.to_vec()),
            _ => None,
        };
        Some(View {
            done: value(done).and_then(|v| Position::parse(&v)),
            arrived: arrived.iter().map(value).collect(),
        })
    }

    pub fn is_done(&self, id: &BarrierId) -> bool {
        self.done.is_some_and(|d| d >= id.at)
    }

    /// The partitions that have not arrived at `id`.
    pub fn missing(&self, id: &BarrierId) -> Vec<u32> {
        let want = id.arrived_value();
        (0..id.partitions)
            .filter(|p| {
                self.arrived
                    .get(*p as usize)
                    .and_then(|a| a.as_deref())
                    .is_none_or(|a| a != want.as_bytes())
            })
            .collect()
    }

    /// The step for partition `me` (partition 0 applies).
    pub fn step(&self, id: &BarrierId, me: i32) -> Step {
        if self.is_done(id) {
            Step::Pass
        } else if me == 0 && self.missing(id).is_empty() {
            Step::Apply
        } else {
            Step::Wait
        }
    }
}

/// The log line for a wait that lasts: the barrier, the partitions not
/// there yet, and what a partition nobody consumes means.
pub fn describe_wait(
    id: &BarrierId,
    view: &View,
    topic: &str,
    me: i32,
    waited: Duration,
) -> String {
    let missing = view.missing(id);
    let list: Vec<String> = missing.iter().map(|p| format!("{topic}[{p}]")).collect();
    let what = if missing.is_empty() {
        format!(
            "every partition arrived; {topic}[0] applies it and has not yet (is a replay \
             consuming {topic}[0]?)"
        )
    } else {
        format!(
            "not arrived yet: {} (a partition no replay consumes stalls the barrier forever: \
             check `partitions` of the replays sharing the topic)",
            list.join(", ")
        )
    };
    format!(
        "partition {topic}[{me}]: waiting {:.0}s at {id}: {what}",
        waited.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn id() -> BarrierId {
        BarrierId::new(
            "h:1",
            100,
            Barrier {
                number: 3,
                partitions: 3,
            },
        )
    }

    fn view(done: Option<&str>, arrived: [Option<&str>; 3]) -> View {
        let bulk = |s: Option<&str>| match s {
            Some(s) => Frame::Bulk(Bytes::copy_from_slice(s.as_bytes())),
            None => Frame::Null,
        };
        let mut items = vec![bulk(done)];
        items.extend(arrived.into_iter().map(bulk));
        View::parse(&Frame::Array(items)).expect("view")
    }

    #[test]
    fn partition_zero_applies_once_all_arrived_and_the_others_pass_once_done() {
        let id = id();
        let here = Some("100:3:h:1");
        let some = view(None, [here, None, here]);
        assert_eq!(some.missing(&id), [1]);
        assert_eq!(some.step(&id, 0), Step::Wait);
        assert_eq!(some.step(&id, 2), Step::Wait);
        let all = view(Some("100:2"), [here, here, here]);
        assert_eq!(all.step(&id, 0), Step::Apply);
        assert_eq!(all.step(&id, 1), Step::Wait, "only partition 0 applies");
        let done = view(Some("100:3"), [None, here, here]);
        assert_eq!(done.step(&id, 1), Step::Pass);
        assert_eq!(done.step(&id, 0), Step::Pass, "never twice");
        let newer_run = view(Some("101:1"), [None, None, None]);
        assert_eq!(newer_run.step(&id, 2), Step::Pass);
    }

    #[test]
    fn an_arrival_at_another_barrier_does_not_count() {
        let id = id();
        let v = view(
            None,
            [Some("100:3:h:1"), Some("100:2:h:1"), Some("100:3:h:2")],
        );
        assert_eq!(v.missing(&id), [1, 2]);
        let text = describe_wait(&id, &v, "t", 0, Duration::from_secs(12));
        assert!(text.contains("t[1], t[2]"), "{text}");
        assert!(text.contains("barrier 3/3 of h:1 run 100"), "{text}");
        let all = view(None, [Some("100:3:h:1"); 3]);
        let text = describe_wait(&id, &all, "t", 1, Duration::from_secs(12));
        assert!(text.contains("t[0] applies it"), "{text}");
    }
}

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
//! 4. once every partition `0..partitions` has arrived, the lowest of them
//!    (partition 0) applies the command together with its offset and the
//!    done mark, in one `MULTI`/`EXEC`; the others, once they see it done,
//!    pass their copy.
//!
//! A partition that is beyond the barrier without having met its copy (it
//! waits at a later barrier of the same source, or applied records of a
//! newer run: the proxy died while writing the copies) will never arrive;
//! it does not hold the barrier up, the lowest partition that has the copy
//! applies it, and the lost copies are reported as a gap (resync needed).
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
pub const POLL: Duration = Duration::from_millis(10);
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
/// applied, where each partition `0..partitions` waits (or last waited),
/// and the last record of the source each applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub done: Option<Position>,
    pub arrived: Vec<Option<Vec<u8>>>,
    pub seqs: Vec<Option<Position>>,
}

/// Where a partition is relative to a barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Waiting at its copy.
    At,
    /// Beyond where its copy would be, without it: at a later barrier of
    /// the source, or at records of a newer run. Its copy was lost (the
    /// proxy died while writing the copies); it will never arrive.
    Past,
    /// Not there yet.
    Before,
}

/// What a partition does next at a barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The barrier ran: store the offset after the copy and go on.
    Pass,
    /// Every partition is at its copy or past it, and this one applies the
    /// command.
    Apply,
    /// Not yet.
    Wait,
}

impl View {
    /// From the reply to `HMGET state barrier:<topic>:<source>
    /// arrived:<topic>:0 ... seq:<topic>:0:<source> ...` (`partitions`
    /// of each).
    pub fn parse(reply: &Frame, partitions: u32) -> Option<View> {
        let items = reply.as_array()?;
        let n = partitions as usize;
        if items.len() != 1 + 2 * n {
            return None;
        }
        let value = |f: &Frame| match f {
            Frame::Bulk(b) => Some(b.to_vec()),
            _ => None,
        };
        Some(View {
            done: value(&items[0]).and_then(|v| Position::parse(&v)),
            arrived: items[1..=n].iter().map(value).collect(),
            seqs: items[1 + n..]
                .iter()
                .map(|f| value(f).and_then(|v| Position::parse(&v)))
                .collect(),
        })
    }

    pub fn is_done(&self, id: &BarrierId) -> bool {
        self.done.is_some_and(|d| d >= id.at)
    }

    /// Where partition `p` is relative to `id`.
    pub fn place(&self, id: &BarrierId, p: u32) -> Place {
        let arrived = self.arrived.get(p as usize).and_then(|a| a.as_deref());
        if arrived == Some(id.arrived_value().as_bytes()) {
            return Place::At;
        }
        let later_barrier = arrived
            .and_then(|a| {
                let at = Position::parse(a)?;
                let source = std::str::from_utf8(a).ok()?.splitn(3, ':').nth(2)?;
                Some(source == id.source && at > id.at)
            })
            .unwrap_or(false);
        let newer_run = self
            .seqs
            .get(p as usize)
            .copied()
            .flatten()
            .is_some_and(|s| s.run > id.at.run);
        if later_barrier || newer_run {
            Place::Past
        } else {
            Place::Before
        }
    }

    fn with(&self, id: &BarrierId, place: Place) -> Vec<u32> {
        (0..id.partitions)
            .filter(|p| self.place(id, *p) == place)
            .collect()
    }

    /// The partitions that have not arrived at `id` yet.
    pub fn missing(&self, id: &BarrierId) -> Vec<u32> {
        self.with(id, Place::Before)
    }

    /// The partitions that went past `id` without its copy.
    pub fn lost(&self, id: &BarrierId) -> Vec<u32> {
        self.with(id, Place::Past)
    }

    /// The partition that applies `id`: the lowest at its copy, once no
    /// partition is still before it (partition 0 unless its copy was lost).
    /// Stable once chosen: a partition at the copy stays until the barrier
    /// is done, and one past it never comes back.
    pub fn applier(&self, id: &BarrierId) -> Option<u32> {
        if !self.missing(id).is_empty() {
            return None;
        }
        self.with(id, Place::At).first().copied()
    }

    /// The step for partition `me`.
    pub fn step(&self, id: &BarrierId, me: i32) -> Step {
        if self.is_done(id) {
            Step::Pass
        } else if self.applier(id).is_some_and(|a| a as i64 == me as i64) {
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
    let what = match view.applier(id) {
        Some(a) => format!(
            "every partition arrived; {topic}[{a}] applies it and has not yet (is a replay \
             consuming {topic}[{a}]?)"
        ),
        None => {
            let list: Vec<String> = missing
                .iter()
                .map(|p| {
                    let last = view.arrived.get(*p as usize).and_then(|a| a.as_deref());
                    match last {
                        Some(a) => format!(
                            "{topic}[{p}] (last at barrier {})",
                            String::from_utf8_lossy(a)
                        ),
                        None => format!("{topic}[{p}]"),
                    }
                })
                .collect();
            format!(
                "not arrived yet: {} (a partition no replay consumes stalls the barrier forever: \
                 check `partitions` of the replays sharing the topic)",
                list.join(", ")
            )
        }
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
        view_seqs(done, arrived, [None; 3])
    }

    fn view_seqs(done: Option<&str>, arrived: [Option<&str>; 3], seqs: [Option<&str>; 3]) -> View {
        let bulk = |s: Option<&str>| match s {
            Some(s) => Frame::Bulk(Bytes::copy_from_slice(s.as_bytes())),
            None => Frame::Null,
        };
        let mut items = vec![bulk(done)];
        items.extend(arrived.into_iter().map(bulk));
        items.extend(seqs.into_iter().map(bulk));
        View::parse(&Frame::Array(items), 3).expect("view")
    }

    #[test]
    fn a_partition_past_the_barrier_without_its_copy_does_not_hold_it_up() {
        let id = id();
        let here = Some("100:3:h:1");
        // Partition 1 is at barrier 4 of the same run: its copy of 3 was lost.
        let v = view(None, [here, Some("100:4:h:1"), here]);
        assert_eq!(v.lost(&id), [1]);
        assert_eq!(v.step(&id, 0), Step::Apply);
        // Partition 0 applies records of a newer run: partition 1 applies.
        let v = view_seqs(None, [None, here, here], [Some("101:7"), None, None]);
        assert_eq!(v.lost(&id), [0]);
        assert_eq!(v.step(&id, 1), Step::Apply);
        assert_eq!(v.step(&id, 2), Step::Wait);
        // Another source's later barrier says nothing about this one.
        let v = view(None, [here, Some("100:9:h:2"), here]);
        assert_eq!(v.missing(&id), [1]);
        assert_eq!(v.step(&id, 0), Step::Wait);
        let text = describe_wait(&id, &v, "t", 0, Duration::from_secs(11));
        assert!(text.contains("t[1] (last at barrier 100:9:h:2)"), "{text}");
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
        assert!(
            text.contains("t[1] (last at barrier 100:2:h:1), t[2] (last at barrier 100:3:h:2)"),
            "{text}"
        );
        assert!(text.contains("barrier 3/3 of h:1 run 100"), "{text}");
        let all = view(None, [Some("100:3:h:1"); 3]);
        let text = describe_wait(&id, &all, "t", 1, Duration::from_secs(12));
        assert!(text.contains("t[0] applies it"), "{text}");
    }
}

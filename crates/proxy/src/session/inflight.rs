//! Matching the primary's replies to the commands that caused them.
//!
//! Redis answers a connection's commands in order, one reply each, so a FIFO
//! of in-flight commands is enough, with three exceptions that this module
//! owns: pub/sub (subscription confirmations and messages are not one reply
//! per command, and RESP3 pushes arrive between replies), `MONITOR` (after it
//! everything is a feed line) and `CLIENT REPLY OFF|SKIP` (commands with no
//! reply at all).

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use remoteback_protocol::commands::CommandSpec;
use remoteback_protocol::frame::{self, Frame};
use remoteback_protocol::request::ProtocolError;
use remoteback_protocol::Command;

use super::tunnel::HandoverRequest;
use crate::capture::Verdict;
use crate::ordering::Hold;

/// What the request side hands the reply side, in the order it was sent.
#[derive(Debug)]
pub(crate) enum Pending {
    /// A command forwarded to the primary.
    Command(InFlight),
    /// The client sent a malformed request: after the replies to everything
    /// before it, the client gets this error and the connection closes.
    ProtocolError(ProtocolError),
    /// The client's next command asks for the replication stream.
    Handover(HandoverRequest),
}

/// A forwarded command waiting for its reply.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub command: Command,
    /// What the proxy decided about it when it was read.
    pub verdict: Verdict,
    pub sent_at: Instant,
    /// How the reply side recognises this command's answer.
    pub shape: Shape,
    /// Key locks (or a blocking pop's registration) held until the reply
    /// was captured.
    pub hold: Option<Hold>,
    /// What it counts against the client's in-flight budget.
    pub cost: usize,
    /// What the client gets instead of the primary's reply: a write refused
    /// during a failover ([`super::refusal`]).
    pub answer: Option<Bytes>,
}

impl InFlight {
    /// The entry for a command forwarded now, with its verdict, the shape of
    /// its answer and what it holds.
    pub fn new(
        command: Command,
        verdict: Verdict,
        shape: Shape,
        hold: Option<Hold>,
        cost: usize,
    ) -> InFlight {
        InFlight {
            command,
            verdict,
            sent_at: Instant::now(),
            shape,
            hold,
            cost,
            answer: None,
        }
    }
}

/// How many replies a command produces, and of which kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One ordinary reply.
    One,
    /// No reply at all (`CLIENT REPLY OFF` or `SKIP` in force).
    Silent,
    /// A (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE: one confirmation per channel,
    /// as an array (RESP2) or a push (RESP3). `None` channels: an argument-less
    /// unsubscribe, answered once per current subscription (at least once).
    Subscription {
        kind: SubKind,
        channels: Option<usize>,
    },
    /// `MONITOR`: one `+OK`, then a feed until the connection ends.
    Monitor,
}

/// The three pub/sub namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubKind {
    Channel,
    Pattern,
    Shard,
}

/// Whether a client command may stay unanswered for a long time by design,
/// so the reply timeout must not apply to it.
pub(crate) fn waits_by_design(command: &Command, spec: Option<&CommandSpec>) -> bool {
    spec.is_some_and(|s| s.is_blocking())
        || command.is("WAIT")
        || command.is("WAITAOF")
        || command.is("MONITOR")
        || subscription(command).is_some()
}

/// Whether `command` is one of the (un)subscribe commands.
pub(crate) fn is_subscription(command: &Command) -> bool {
    subscription(command).is_some()
}

fn subscription(command: &Command) -> Option<(SubKind, bool)> {
    let name = command.name();
    let table: [(&str, SubKind, bool); 6] = [
        ("SUBSCRIBE", SubKind::Channel, true),
        ("UNSUBSCRIBE", SubKind::Channel, false),
        ("PSUBSCRIBE", SubKind::Pattern, true),
        ("PUNSUBSCRIBE", SubKind::Pattern, false),
        ("SSUBSCRIBE", SubKind::Shard, true),
        ("SUNSUBSCRIBE", SubKind::Shard, false),
    ];
    table
        .iter()
        .find(|(n, _, _)| name.eq_ignore_ascii_case(n.as_bytes()))
        .map(|(_, k, sub)| (*k, *sub))
}

/// Whether replies are on, off, or off for the next command only, as set by
/// `CLIENT REPLY`. Tracked on the request side, where command order is known.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyMode {
    #[default]
    On,
    Off,
    Skip,
}

impl ReplyMode {
    /// The shape of `command`'s reply, updating the mode for the next one.
    pub fn shape_of(&mut self, command: &Command) -> Shape {
        let mut shape = natural_shape(command);
        if command.is("CLIENT")
            && command
                .arg(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"REPLY"))
        {
            let arg = command.arg(2).map(|a| a.to_ascii_uppercase());
            match arg.as_deref() {
                Some(b"ON") => {
                    *self = ReplyMode::On;
                    return Shape::One;
                }
                Some(b"OFF") => {
                    *self = ReplyMode::Off;
                    return Shape::Silent;
                }
                Some(b"SKIP") if *self == ReplyMode::On => {
                    *self = ReplyMode::Skip;
                    return Shape::Silent;
                }
                _ => {}
            }
        }
        match *self {
            ReplyMode::On => {}
            ReplyMode::Off => shape = Shape::Silent,
            ReplyMode::Skip => {
                *self = ReplyMode::On;
                shape = Shape::Silent;
            }
        }
        shape
    }
}

fn natural_shape(command: &Command) -> Shape {
    if command.is("MONITOR") {
        return Shape::Monitor;
    }
    match subscription(command) {
        // Without a channel SUBSCRIBE is an arity error: one ordinary reply.
        Some((_, true)) if command.args().len() < 2 => Shape::One,
        Some((kind, true)) => Shape::Subscription {
            kind,
            channels: Some(command.args().len() - 1),
        },
        Some((kind, false)) if command.args().len() < 2 => Shape::Subscription {
            kind,
            channels: None,
        },
        Some((kind, false)) => Shape::Subscription {
            kind,
            channels: Some(command.args().len() - 1),
        },
        None => Shape::One,
    }
}

/// The result of matching one reply.
#[derive(Debug)]
pub(crate) enum Matched {
    /// The reply answers this command.
    Reply(InFlight),
    /// Out-of-band data (pub/sub message, confirmation, monitor feed): pass
    /// it through, it answers nothing that capture cares about.
    Event,
    /// A reply with nothing in flight: the connection is out of step.
    Unexpected,
}

/// The reply side's view of the connection: in-flight commands and the
/// pub/sub state needed to tell events from replies.
#[derive(Debug, Default)]
pub(crate) struct InFlightQueue {
    queue: VecDeque<InFlight>,
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    shards: HashSet<Bytes>,
    /// Confirmations still owed to the subscription command at the head.
    owed: Option<usize>,
    monitoring: bool,
    /// In-flight budget of commands done without a reply of their own (a
    /// subscription's last confirmation, a command sent while monitoring),
    /// not yet given back.
    freed: usize,
}

impl InFlightQueue {
    pub fn push(&mut self, command: InFlight) {
        if self.monitoring {
            // Redis answers a monitoring client's commands only inside its
            // feed ("Replica can't interact with the keyspace"): nothing
            // to match or capture, nothing to keep.
            self.freed += command.cost;
            return;
        }
        self.queue.push_back(command);
    }

    /// The in-flight budget of commands that ended without a reply of
    /// their own since the last call.
    pub fn take_freed(&mut self) -> usize {
        std::mem::take(&mut self.freed)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The oldest command still waiting for an ordinary reply, if any.
    pub fn head(&self) -> Option<&InFlight> {
        self.queue.front()
    }

    /// Every command still in flight, oldest first.
    pub fn commands(&self) -> impl Iterator<Item = &InFlight> {
        self.queue.iter()
    }

    /// Whether anything is still owed a reply (subscription commands whose
    /// confirmations are pending count; a monitor feed does not).
    pub fn awaiting(&self) -> bool {
        !self.monitoring && !self.queue.is_empty()
    }

    /// Subscribed to something or monitoring: replies come without
    /// commands.
    pub fn listening(&self) -> bool {
        self.monitoring || self.subscribed()
    }

    fn subscribed(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shards.is_empty())
    }

    /// Removes commands that will never get a reply from the head, handing
    /// them to `silent` (their outcome is unknown).
    pub fn drain_silent(&mut self, mut silent: impl FnMut(InFlight)) {
        while self.queue.front().is_some_and(|c| c.shape == Shape::Silent) {
            if let Some(c) = self.queue.pop_front() {
                silent(c);
            }
        }
    }

    /// Matches one complete reply.
    pub fn match_reply(&mut self, reply: &Bytes) -> Matched {
        if self.monitoring {
            return Matched::Event;
        }
        if let Some(kind) = self.event_kind(reply) {
            self.on_event(kind, reply);
            return Matched::Event;
        }
        let Some(head) = self.queue.pop_front() else {
            return Matched::Unexpected;
        };
        self.owed = None;
        if head.shape == Shape::Monitor && !frame::is_error(reply) {
            self.monitoring = true;
        }
        if head.command.is("RESET") {
            self.reset();
        }
        Matched::Reply(head)
    }

    fn reset(&mut self) {
        self.channels.clear();
        self.patterns.clear();
        self.shards.clear();
        self.monitoring = false;
    }

    /// The pub/sub event name if `reply` is a pub/sub event rather than the
    /// reply to the head command.
    fn event_kind(&self, reply: &Bytes) -> Option<Vec<u8>> {
        let push = frame::is_push(reply);
        let head_subscribes = matches!(
            self.queue.front().map(|c| c.shape),
            Some(Shape::Subscription { .. })
        );
        if !push && !(reply.first() == Some(&b'*') && (head_subscribes || self.subscribed())) {
            return None;
        }
        let (frame, _) = frame::decode(reply).ok()??;
        let items = frame.as_array()?;
        let kind = items.first()?.as_bytes()?.to_ascii_lowercase();
        let known = matches!(
            &kind[..],
            b"subscribe"
                | b"unsubscribe"
                | b"psubscribe"
                | b"punsubscribe"
                | b"ssubscribe"
                | b"sunsubscribe"
        );
        let message = matches!(&kind[..], b"message" | b"pmessage" | b"smessage");
        if push || known || (message && self.subscribed()) {
            Some(kind)
        } else {
            None
        }
    }

    fn on_event(&mut self, kind: Vec<u8>, reply: &Bytes) {
        let Some(channel) = frame::decode(reply)
            .ok()
            .flatten()
            .and_then(|(f, _)| f.as_array().and_then(|a| a.get(1).cloned()))
        else {
            return;
        };
        let name = match channel {
            Frame::Bulk(b) | Frame::Simple(b) => Some(b),
            _ => None,
        };
        let (set, added, sub_kind) = match &kind[..] {
            b"subscribe" => (&mut self.channels, true, SubKind::Channel),
            b"unsubscribe" => (&mut self.channels, false, SubKind::Channel),
            b"psubscribe" => (&mut self.patterns, true, SubKind::Pattern),
            b"punsubscribe" => (&mut self.patterns, false, SubKind::Pattern),
            b"ssubscribe" => (&mut self.shards, true, SubKind::Shard),
            b"sunsubscribe" => (&mut self.shards, false, SubKind::Shard),
            _ => return,
        };
        let before = set.len();
        if let Some(name) = name {
            if added {
                set.insert(name);
            } else {
                set.remove(&name);
            }
        }
        self.confirm(sub_kind, before);
    }

    /// Counts a confirmation against the subscription command at the head.
    fn confirm(&mut self, kind: SubKind, set_size_before: usize) {
        let Some(Shape::Subscription {
            kind: head_kind,
            channels,
        }) = self.queue.front().map(|c| c.shape)
        else {
            return;
        };
        if head_kind != kind {
            return;
        }
        // An argument-less unsubscribe is answered once per subscription it
        // removes, or once if there were none.
        let owed = self
            .owed
            .unwrap_or_else(|| channels.unwrap_or(set_size_before.max(1)));
        let owed = owed.saturating_sub(1);
        if owed == 0 {
            if let Some(done) = self.queue.pop_front() {
                self.freed += done.cost;
            }
            self.owed = None;
        } else {
            self.owed = Some(owed);
        }
    }
}

#[cfg(test)]
mod tests {
    use remoteback_protocol::Format;

    use super::*;
    use crate::capture::{Filter, Routes};

    fn queue_of(cmds: &[&[&str]]) -> InFlightQueue {
        let routes = Routes::from_parts(Format::Protocol, "t", vec![Filter::Writes]);
        let mut q = InFlightQueue::default();
        let mut mode = ReplyMode::default();
        for c in cmds {
            let command = Command::from_parts(c.iter());
            let verdict = routes.verdict(&command);
            let shape = mode.shape_of(&command);
            q.push(InFlight::new(command, verdict, shape, None, 0));
        }
        q
    }

    fn reply(b: &'static [u8]) -> Bytes {
        Bytes::from_static(b)
    }

    fn replied(m: Matched) -> String {
        match m {
            Matched::Reply(c) => String::from_utf8_lossy(c.command.name()).into_owned(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn plain_replies_match_in_order() {
        let mut q = queue_of(&[&["SET", "a", "1"], &["GET", "a"]]);
        assert_eq!(replied(q.match_reply(&reply(b"+OK\r\n"))), "SET");
        assert_eq!(replied(q.match_reply(&reply(b"$1\r\n1\r\n"))), "GET");
        assert!(matches!(
            q.match_reply(&reply(b"+OK\r\n")),
            Matched::Unexpected
        ));
    }

    #[test]
    fn resp2_subscriptions_and_messages_are_events() {
        let mut q = queue_of(&[
            &["SUBSCRIBE", "a", "b"],
            &["PING"],
            &["UNSUBSCRIBE"],
            &["SET", "k", "v"],
        ]);
        let ev = |q: &mut InFlightQueue, b| matches!(q.match_reply(&reply(b)), Matched::Event);
        assert!(ev(&mut q, b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"));
        assert!(ev(&mut q, b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"));
        assert!(ev(
            &mut q,
            b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"
        ));
        assert_eq!(
            replied(q.match_reply(&reply(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"))),
            "PING"
        );
        assert!(ev(&mut q, b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n"));
        assert!(ev(&mut q, b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"));
        // Out of pub/sub mode, an array starting with "message" is a reply.
        assert_eq!(replied(q.match_reply(&reply(b"+OK\r\n"))), "SET");
        assert!(q.is_empty());
    }

    #[test]
    fn resp3_pushes_never_take_a_reply() {
        let mut q = queue_of(&[&["SUBSCRIBE", "a"], &["SET", "k", "v"]]);
        assert!(matches!(
            q.match_reply(&reply(b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")),
            Matched::Event
        ));
        assert!(matches!(
            q.match_reply(&reply(b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n")),
            Matched::Event
        ));
        assert_eq!(replied(q.match_reply(&reply(b"+OK\r\n"))), "SET");
    }

    #[test]
    fn failed_subscribe_takes_its_error() {
        let mut q = queue_of(&[&["SUBSCRIBE", "a"], &["GET", "k"]]);
        assert_eq!(
            replied(q.match_reply(&reply(b"-NOPERM no\r\n"))),
            "SUBSCRIBE"
        );
        assert_eq!(replied(q.match_reply(&reply(b"$-1\r\n"))), "GET");
    }

    #[test]
    fn client_reply_off_and_skip_make_commands_silent() {
        let mut mode = ReplyMode::default();
        let shapes: Vec<Shape> = [
            &["CLIENT", "REPLY", "SKIP"][..],
            &["SET", "a", "1"],
            &["SET", "b", "1"],
            &["client", "reply", "off"],
            &["SET", "c", "1"],
            &["CLIENT", "REPLY", "ON"],
            &["GET", "a"],
        ]
        .iter()
        .map(|c| mode.shape_of(&Command::from_parts(c.iter())))
        .collect();
        use Shape::*;
        assert_eq!(shapes, vec![Silent, Silent, One, Silent, Silent, One, One]);
    }

    #[test]
    fn monitor_turns_everything_into_events() {
        let mut q = queue_of(&[&["MONITOR"]]);
        assert_eq!(replied(q.match_reply(&reply(b"+OK\r\n"))), "MONITOR");
        assert!(matches!(
            q.match_reply(&reply(b"+1700000000.1 [0 127.0.0.1:1] \"get\"\r\n")),
            Matched::Event
        ));
        assert!(!q.awaiting());
    }

    /// A command pushed with an in-flight cost, as the request side does.
    fn push_costing(q: &mut InFlightQueue, parts: &[&str], cost: usize) {
        let routes = Routes::from_parts(Format::Protocol, "t", vec![Filter::Writes]);
        let command = Command::from_parts(parts.iter());
        let verdict = routes.verdict(&command);
        let shape = ReplyMode::default().shape_of(&command);
        q.push(InFlight::new(command, verdict, shape, None, cost));
    }

    #[test]
    fn commands_done_without_a_reply_of_their_own_give_their_budget_back() {
        let mut q = InFlightQueue::default();
        push_costing(&mut q, &["SUBSCRIBE", "a", "b"], 100);
        assert!(matches!(
            q.match_reply(&reply(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")),
            Matched::Event
        ));
        assert_eq!(q.take_freed(), 0, "one confirmation still owed");
        assert!(matches!(
            q.match_reply(&reply(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")),
            Matched::Event
        ));
        assert_eq!(q.take_freed(), 100, "the last confirmation ends it");
        assert_eq!(q.take_freed(), 0);
        assert!(q.is_empty());

        push_costing(&mut q, &["MONITOR"], 10);
        assert_eq!(replied(q.match_reply(&reply(b"+OK\r\n"))), "MONITOR");
        push_costing(&mut q, &["GET", "a"], 30);
        assert_eq!(q.take_freed(), 30, "answered inside the feed only");
        assert!(q.is_empty());
    }
}

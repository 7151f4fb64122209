//! Faults around a running proxy, with real processes: primary and backup
//! redis-server, a tansu broker, `remoteback proxy` (with `/metrics` and
//! `/health`) and `remoteback replay`.
//!
//! The broker is frozen with `SIGSTOP` (its connections stay open, nothing
//! is answered, as with a broker stuck in a long pause) and resumed with
//! `SIGCONT`, or the proxy is killed with `SIGKILL`, while clients write
//! through the proxy the load of `common::faults`: `INCR` counters, `LPUSH`
//! lists, `APPEND` strings, `MULTI`/`EXEC` and `INCRBY` in database 1, so a
//! lost or repeated record shows as a wrong number.
//!
//! Every test prints (eprintln!) what it injected and what it checked;
//! `cargo nextest run --no-capture` or a failure shows it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::faults::{
    check_tallies, end_offsets, figures, get, key, signal, Load, OnError, Setup, Tally, DBS,
    FIGURES, TOPIC,
};
use common::status::Status;
use common::{compare, free_port, wait_until, Broker, Service};

/// Clients writing through the proxy, about 200 writes a second each.
const CLIENTS: usize = 4;
/// How long the broker stays frozen: long enough for the backlog to fill,
/// far below librdkafka's timeouts (`message.timeout.ms` 300 s,
/// `request.timeout.ms` 30 s), so the producer waits instead of failing.
const FREEZE: Duration = Duration::from_secs(10);
/// Records that must reach the topic to show that the pipeline flows.
const FLOWING: i64 = 300;

const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

const BACKLOG_BYTES: &str = "remoteback_proxy_backlog_bytes";
const BACKLOG_LIMIT: &str = "remoteback_proxy_backlog_limit_bytes";
const BACKLOG_WAITS: &str = "remoteback_proxy_backlog_waits_total";
const DELIVERED: &str = "remoteback_proxy_records_delivered_total";
const FAILED: &str = "remoteback_proxy_records_failed_total";
const DROPPED: &str = "remoteback_proxy_records_dropped_total";
const RESYNC_NEEDED: &str = "remoteback_proxy_resync_needed";

// ---------------------------------------------------------------------------
// The proxy's /metrics and /health
// ---------------------------------------------------------------------------

/// The proxy's status endpoints, with its own checks.
struct StatusPort(Status);

impl std::ops::Deref for StatusPort {
    type Target = Status;

    fn deref(&self) -> &Status {
        &self.0
    }
}

impl StatusPort {
    /// Every loss counter is zero and `/health` says ok.
    #[track_caller]
    fn assert_nothing_lost(&self) {
        let (dropped, failed) = (self.value(DROPPED), self.value(FAILED));
        let (code, health) = self.get("/health");
        assert_eq!((dropped, failed), (0, 0), "records dropped, failed");
        assert_eq!(self.value(RESYNC_NEEDED), 0);
        assert_eq!(code, 200, "/health: {health}");
        assert!(health.starts_with("ok"), "/health: {health}");
        eprintln!(
            "[check] metrics: {DROPPED} 0, {FAILED} 0, {RESYNC_NEEDED} 0; /health 200 \"{health}\""
        );
    }
}

/// The pipeline with `proxy_top` among the proxy's top-level keys and its
/// status endpoints on a free port.
fn start(proxy_top: &str) -> (Setup, StatusPort) {
    let port = free_port();
    let top = format!("{proxy_top}\nmetrics = \"127.0.0.1:{port}\"");
    let s = Setup::start_with(&[], 1, &top, "");
    s.proxy.wait_port(port);
    eprintln!("[inject] proxy started with {}", top.replace('\n', ", "));
    (s, StatusPort(Status(port)))
}

// ---------------------------------------------------------------------------
// Faults and probes
// ---------------------------------------------------------------------------

/// The broker stopped with `SIGSTOP`; `SIGCONT` when dropped.
struct Frozen {
    pid: u32,
    since: Instant,
}

impl Frozen {
    fn start(broker: &Broker) -> Frozen {
        let pid = broker.pid();
        signal(pid, SIGSTOP);
        Frozen {
            pid,
            since: Instant::now(),
        }
    }

    /// Sleeps until the broker has been frozen for [`FREEZE`].
    fn wait_out(&self) {
        std::thread::sleep(FREEZE.saturating_sub(self.since.elapsed()));
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.pid, SIGCONT);
    }
}

/// The load, with the broker frozen for [`FREEZE`] once records flow.
struct FrozenUnderLoad<'a> {
    s: &'a Setup,
    load: Load,
    frozen: Option<Frozen>,
}

impl<'a> FrozenUnderLoad<'a> {
    fn start(s: &'a Setup) -> FrozenUnderLoad<'a> {
        let load = Load::start(s.proxy_port, CLIENTS);
        let end = wait_flowing(s, 0);
        let frozen = Frozen::start(&s.broker);
        eprintln!(
            "[inject] broker (tansu, pid {}) frozen with SIGSTOP for {FREEZE:?} at {:.1}s of load ({CLIENTS} clients), topic end {end}",
            frozen.pid,
            load.elapsed()
        );
        FrozenUnderLoad {
            s,
            load,
            frozen: Some(frozen),
        }
    }

    fn frozen(&self) -> &Frozen {
        self.frozen.as_ref().expect("the broker is frozen")
    }

    /// Waits out the freeze and resumes the broker (`SIGCONT`).
    fn resume(&mut self) {
        if let Some(frozen) = self.frozen.take() {
            frozen.wait_out();
            let frozen_for = frozen.since.elapsed();
            drop(frozen);
            eprintln!(
                "[inject] broker resumed with SIGCONT after {:.1}s frozen, at {:.1}s of load",
                frozen_for.as_secs_f64(),
                self.load.elapsed()
            );
        }
    }

    /// Resumes the broker if need be, lets the load run until records flow
    /// again, and stops it.
    fn finish(mut self) -> Vec<Tally> {
        self.resume();
        let at = end_offsets(&self.s.broker, TOPIC, 1)[0];
        let end = wait_flowing(self.s, at);
        eprintln!(
            "[check] records flow again after the resume: topic end {at} -> {end} at {:.1}s of load",
            self.load.elapsed()
        );
        self.load.finish()
    }
}

/// Waits until the topic holds [`FLOWING`] records more than `from`;
/// returns its end offset.
#[track_caller]
fn wait_flowing(s: &Setup, from: i64) -> i64 {
    let mut end = 0;
    wait_until(
        Duration::from_secs(60),
        &format!("{FLOWING} more records in the topic after offset {from}"),
        || {
            end = end_offsets(&s.broker, TOPIC, 1)[0];
            end >= from + FLOWING
        },
    );
    end
}

/// A command sent on a fresh connection through the proxy, its reply not
/// read yet.
struct Probe {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Probe {
    fn send(port: u16, args: &[&str]) -> Probe {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(request.as_bytes()).expect("send");
        Probe {
            stream,
            buf: Vec::new(),
        }
    }

    /// The reply if it is complete within `timeout`; `None` if not (the
    /// probe may wait again).
    fn reply(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 256];
        while !complete(&self.buf) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "the proxy closed the connection; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("read the reply: {e}"),
            }
        }
        Some(String::from_utf8_lossy(&self.buf).into_owned())
    }
}

/// Whether `buf` holds a whole simple, integer, error or bulk reply.
fn complete(buf: &[u8]) -> bool {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if buf[0] != b'$' {
        return true;
    }
    let len: i64 = String::from_utf8_lossy(&buf[1..eol])
        .parse()
        .expect("a bulk length");
    len < 0 || buf.len() >= eol + 2 + len as usize + 2
}

/// The `INCR`s of every client on the primary.
fn incrs_on_primary(s: &Setup) -> i64 {
    (0..CLIENTS).map(|c| figures(s.primary.port(), c)[0]).sum()
}

/// Every record of the topic applied, the backup equal to the primary,
/// each client's counts exact, and every record in the topic delivered
/// once by the proxy.
#[track_caller]
fn assert_nothing_lost(s: &Setup, status: &StatusPort, replay: &Service, tallies: &[Tally]) {
    let ends = s.converge(1, &[replay]);
    check_tallies(&s.backup, tallies);
    let delivered = status.value(DELIVERED);
    let in_topic = s.broker.writes_in_topic(TOPIC, 1);
    assert_eq!(
        delivered as i64, in_topic,
        "writes the proxy saw delivered vs writes in the topic"
    );
    eprintln!(
        "[check] {DELIVERED} {delivered} = writes in the topic's {} records",
        ends[0]
    );
    status.assert_nothing_lost();
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// `on_backlog_full = "block"` with a 16 KiB backlog: while the broker is
/// frozen the backlog fills and writes are held (each client gets at most
/// the write it had in flight through), reads keep being answered; after
/// the resume the held writes go on and nothing is lost.
#[test]
fn broker_frozen_with_a_full_backlog_holds_writes_serves_reads_and_loses_nothing() {
    // rsptimeout well above the freeze: a write held for longer than
    // rsptimeout is the subject of
    // writes_held_at_a_full_backlog_longer_than_rsptimeout_are_answered_and_captured.
    let (s, status) =
        start("backlog_bytes = 16384\non_backlog_full = \"block\"\nrsptimeout = 30000");
    let replay = s.replay("", "");
    let run = FrozenUnderLoad::start(&s);
    let limit = status.value(BACKLOG_LIMIT);
    // The backlog cannot shrink while the broker is frozen: once full, it
    // stays full until the resume.
    wait_until(
        Duration::from_secs(5),
        "the backlog full and a write held",
        || status.value(BACKLOG_BYTES) >= limit && status.value(BACKLOG_WAITS) > 0,
    );
    let full_after = run.frozen().since.elapsed();
    let bytes = status.value(BACKLOG_BYTES);
    let incrs = incrs_on_primary(&s);
    let counter = key(0, "counter");
    let asked = Instant::now();
    let read = Probe::send(s.proxy_port, &["GET", &counter]).reply(Duration::from_secs(1));
    let read_took = asked.elapsed();
    assert!(
        read.as_deref().is_some_and(|r| r.starts_with('$')),
        "GET {counter} through the proxy answered within 1 s while writes are held: {read:?}"
    );
    eprintln!(
        "[check] backlog full {:.2}s into the freeze: {BACKLOG_BYTES} {bytes} of {limit}, {BACKLOG_WAITS} > 0; GET {counter} on a fresh connection answered in {} ms: {:?}",
        full_after.as_secs_f64(),
        read_took.as_millis(),
        read.unwrap_or_default().replace("\r\n", " ").trim_end()
    );
    run.frozen().wait_out();
    let held = incrs_on_primary(&s) - incrs;
    let waits = status.value(BACKLOG_WAITS);
    assert!(
        held <= CLIENTS as i64,
        "writes held: at most the one in flight per client reaches the primary, got {held} INCRs"
    );
    eprintln!(
        "[check] while the backlog was full (until the resume) the primary took {held} more INCRs from {CLIENTS} clients (at most 1 each: the writes already in flight); {BACKLOG_WAITS} {waits}"
    );
    let tallies = run.finish();
    assert_nothing_lost(&s, &status, &replay, &tallies);
}

/// `ack = "kafka"`: a write sent while the broker is frozen takes effect on
/// the primary, but its reply waits until Kafka acknowledged its record,
/// after the resume; nothing is lost.
#[test]
fn broker_frozen_with_ack_kafka_holds_the_reply_until_kafka_has_the_write() {
    const PROBE: &str = "{probe}:n";
    let (s, status) = start("ack = \"kafka\"");
    let replay = s.replay("", "");
    let mut run = FrozenUnderLoad::start(&s);
    let mut probe = Probe::send(s.proxy_port, &["INCR", PROBE]);
    let early = probe.reply(Duration::from_secs(3));
    assert_eq!(early, None, "INCR answered while Kafka cannot acknowledge");
    let on_primary = get(s.primary.port(), 0, PROBE);
    assert_eq!(
        on_primary.as_deref(),
        Some("1"),
        "the INCR ran on the primary"
    );
    eprintln!(
        "[check] INCR {PROBE} on a fresh connection {:.1}s into the freeze: no reply within 3 s, while the primary already holds {PROBE} = 1",
        run.frozen().since.elapsed().as_secs_f64()
    );
    run.resume();
    let resumed = Instant::now();
    let reply = probe.reply(Duration::from_secs(30));
    assert_eq!(
        reply.as_deref(),
        Some(":1\r\n"),
        "the reply after the resume"
    );
    eprintln!(
        "[check] the INCR was answered :1 {} ms after the resume",
        resumed.elapsed().as_millis()
    );
    let tallies = run.finish();
    assert_nothing_lost(&s, &status, &replay, &tallies);
}

/// `ack = "kafka"`, the proxy killed with `SIGKILL` under load: each client
/// stops at its first error, and every write it got a reply for is on the
/// backup once the replay applied the topic. The backup may hold more (a
/// record delivered whose reply the kill cut off), never more than the
/// primary.
#[test]
fn proxy_killed_with_ack_kafka_every_acknowledged_write_is_on_the_backup() {
    let (mut s, _status) = start("ack = \"kafka\"");
    let replay = s.replay("", "");
    let load = Load::start_with(s.proxy_port, CLIENTS, OnError::Stop);
    let end = wait_flowing(&s, 0);
    s.proxy.kill();
    eprintln!(
        "[inject] proxy SIGKILLed at {:.1}s of load ({CLIENTS} clients), topic end {end} just before",
        load.elapsed()
    );
    wait_until(
        Duration::from_secs(10),
        "every client stopped at an error",
        || load.running() == 0,
    );
    let tallies = load.finish();
    for t in &tallies {
        let error = t.error.as_deref();
        assert!(error.is_some(), "client {} stopped at an error", t.client);
        eprintln!(
            "[load] client {} stopped at: {}",
            t.client,
            error.unwrap_or_default()
        );
    }
    s.apply_topic(1, &[&replay]);
    let in_topic = s.broker.writes_in_topic(TOPIC, 1);
    let acknowledged: i64 = tallies.iter().map(Tally::writes).sum();
    for t in &tallies {
        let backup = figures(s.backup.port(), t.client);
        let primary = figures(s.primary.port(), t.client);
        let acked = t.figures();
        for i in 0..FIGURES.len() {
            assert!(
                acked[i] <= backup[i] && backup[i] <= primary[i],
                "client {}, {}: acknowledged {} <= backup {} <= primary {}",
                t.client,
                FIGURES[i],
                acked[i],
                backup[i],
                primary[i]
            );
        }
        eprintln!(
            "[check] client {}: (counter, list length, log bytes, tx, db1 counter) acknowledged {acked:?} <= backup {backup:?} <= primary {primary:?}",
            t.client
        );
    }
    assert!(
        acknowledged <= in_topic,
        "each acknowledged write is in the topic"
    );
    eprintln!(
        "[check] {acknowledged} acknowledged writes <= {in_topic} writes in the topic ({} delivered whose replies the kill cut off)",
        in_topic - acknowledged
    );
}

/// `on_backlog_full = "drop"` with a 2 KiB backlog and the broker frozen:
/// records are dropped, and every one is counted: the topic's records plus
/// the dropped ones are exactly the writes the clients made. The proxy says
/// the backup needs a resync (log, `/health`, `/metrics`).
#[test]
fn broker_frozen_with_on_backlog_full_drop_counts_every_dropped_record() {
    let (s, status) = start("backlog_bytes = 2048\non_backlog_full = \"drop\"");
    let replay = s.replay("", "");
    let run = FrozenUnderLoad::start(&s);
    wait_until(Duration::from_secs(5), "records dropped", || {
        status.value(DROPPED) > 0
    });
    eprintln!(
        "[check] records dropped {:.2}s into the freeze",
        run.frozen().since.elapsed().as_secs_f64()
    );
    let tallies = run.finish();
    wait_until(Duration::from_secs(60), "the backlog settled", || {
        status.value(BACKLOG_BYTES) == 0
    });
    let captured: i64 = tallies.iter().map(Tally::writes).sum();
    let in_topic = s.broker.writes_in_topic(TOPIC, 1);
    let (dropped, failed, delivered) = (
        status.value(DROPPED),
        status.value(FAILED),
        status.value(DELIVERED),
    );
    eprintln!(
        "[check] {captured} writes captured = {in_topic} in the topic + {dropped} dropped ({DELIVERED} {delivered}, {FAILED} {failed})"
    );
    assert!(dropped > 0);
    assert_eq!(
        in_topic + dropped as i64,
        captured,
        "writes in the topic + dropped = writes captured"
    );
    assert_eq!(
        delivered as i64, in_topic,
        "delivered = writes in the topic"
    );
    let (code, health) = status.get("/health");
    assert_eq!(code, 503, "/health: {health}");
    assert!(
        health.starts_with(&format!("resync needed: {dropped} records")),
        "/health: {health}"
    );
    assert_eq!(status.value(RESYNC_NEEDED), 1);
    let log = s.proxy.log();
    let said = log
        .lines()
        .filter(|l| l.contains("record dropped") && l.contains("the backup needs a resync"))
        .count();
    assert!(said > 0, "the proxy logs the loss:\n{log}");
    eprintln!(
        "[check] /health 503 \"{health}\"; {RESYNC_NEEDED} 1; the proxy logged \"record dropped ... the backup needs a resync\" {said} times"
    );
    s.apply_topic(1, &[&replay]);
    let diffs = compare::differences(s.primary.port(), s.backup.port(), &DBS);
    assert!(
        !diffs.is_empty(),
        "the dropped writes are missing on the backup"
    );
    eprintln!(
        "[check] the backup applied the whole topic and differs from the primary in {} keys (the dropped writes)",
        diffs.len()
    );

    // The resync: a full sync through the proxy makes the backup right and
    // clears the state.
    let sync = std::process::Command::new(common::remoteback_bin())
        .args(["sync", "--proxy", &format!("127.0.0.1:{}", status.0 .0)])
        .args(["--chunk-bytes", "1024"])
        .output()
        .expect("run remoteback sync");
    assert!(
        sync.status.success(),
        "{}{}",
        String::from_utf8_lossy(&sync.stdout),
        String::from_utf8_lossy(&sync.stderr)
    );
    s.converge(1, &[&replay]);
    assert_eq!(status.value(RESYNC_NEEDED), 0);
    let (code, health) = status.get("/health");
    assert_eq!(code, 200, "/health after the sync: {health}");
    eprintln!("[check] after `remoteback sync`: the backup equals the primary, /health 200, {RESYNC_NEEDED} 0");
}

/// `on_backlog_full = "block"`: a write held at the full backlog for longer
/// than `rsptimeout` is forwarded once there is room, and the primary
/// answers it at once: the client gets that reply and the record reaches
/// Kafka. (Eight writes on eight connections are held, so that one run
/// shows what each of them risks.)
#[test]
fn writes_held_at_a_full_backlog_longer_than_rsptimeout_are_answered_and_captured() {
    const N: &str = "{held}:n";
    const HELD: usize = 8;
    let (s, status) = start("rsptimeout = 2000\nbacklog_bytes = 1\non_backlog_full = \"block\"");
    let replay = s.replay("", "");
    let mut client = s.client();
    let incr =
        |c: &mut redis::Connection| -> i64 { redis::cmd("INCR").arg(N).query(c).expect("INCR") };
    assert_eq!(incr(&mut client), 1);
    wait_until(
        Duration::from_secs(30),
        "the first INCR in the topic",
        || s.broker.writes_in_topic(TOPIC, 1) == 1 && status.value(BACKLOG_BYTES) == 0,
    );
    let frozen = Frozen::start(&s.broker);
    // Taken into the backlog (it was empty): the backlog is full now.
    assert_eq!(incr(&mut client), 2);
    let mut probes: Vec<Probe> = (0..HELD)
        .map(|_| Probe::send(s.proxy_port, &["INCR", N]))
        .collect();
    for p in &mut probes {
        assert_eq!(
            p.reply(Duration::from_millis(500)),
            None,
            "held at the full backlog"
        );
    }
    eprintln!(
        "[inject] broker frozen for {FREEZE:?}; rsptimeout = 2000, backlog_bytes = 1: INCR {N} answered :2 (the backlog is full now), {HELD} more INCRs on fresh connections are held"
    );
    frozen.wait_out();
    drop(frozen);
    let replies: Vec<String> = probes
        .iter_mut()
        .map(|p| {
            p.reply(Duration::from_secs(30))
                .expect("a reply after the resume")
        })
        .collect();
    wait_until(Duration::from_secs(30), "the backlog settled", || {
        status.value(BACKLOG_BYTES) == 0
    });
    let errors = replies.iter().filter(|r| r.starts_with('-')).count();
    let in_topic = s.broker.writes_in_topic(TOPIC, 1);
    let on_primary = get(s.primary.port(), 0, N);
    let lost = status.value(DROPPED) + status.value(FAILED);
    let (code, health) = status.get("/health");
    eprintln!(
        "[check] after the resume: {errors} of {HELD} held INCRs got an error ({:?}); primary {N} = {on_primary:?}; {in_topic} writes in the topic; {lost} counted lost; /health {code} {health:?}",
        replies.iter().find(|r| r.starts_with('-')).map(|r| r.trim_end())
    );
    assert_eq!(errors, 0, "replies to the held INCRs: {replies:?}");
    assert_eq!(
        in_topic,
        2 + HELD as i64,
        "each INCR that took effect is in the topic"
    );
    s.converge(1, &[&replay]);
}

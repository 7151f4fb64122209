//! What the fault tests (`replay_faults.rs`, `proxy_faults.rs`) share: the
//! pipeline with real processes (primary and backup redis-server, a tansu
//! broker, `remoteback proxy`; replays are started by the tests), the load
//! that shows a lost or a repeated record as a wrong number, and the checks
//! against the topic and the backup.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

pub use super::pipeline::connect;
use super::{compare, free_port, Broker, RedisServer, Service};

pub const TOPIC: &str = "faults";
/// Databases the load writes.
pub const DBS: [u32; 2] = [0, 1];
/// How long the backup may take to catch up once the load stopped.
pub const CONVERGE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// The pipeline
// ---------------------------------------------------------------------------

/// Primary, backup, broker and proxy; replays are started by the tests.
pub struct Setup {
    pub primary: RedisServer,
    pub backup: RedisServer,
    pub broker: Broker,
    pub proxy: Service,
    pub proxy_port: u16,
}

impl Setup {
    /// `backup_args` go to the backup's redis-server; the topic gets
    /// `partitions` partitions.
    pub fn start(backup_args: &[&str], partitions: i32) -> Setup {
        Setup::start_with(backup_args, partitions, "", "")
    }

    /// Like [`Setup::start`], with `proxy_top` among the proxy's top-level
    /// keys (`ack = "kafka"`, `backlog_bytes = 2048`, `metrics = ...`) and
    /// `sender` at the end of its `KafkaSender` table.
    pub fn start_with(
        backup_args: &[&str],
        partitions: i32,
        proxy_top: &str,
        sender: &str,
    ) -> Setup {
        let primary = RedisServer::start();
        let backup = RedisServer::start_with(backup_args);
        let broker = Broker::start();
        broker.create_topic(TOPIC, partitions);
        let proxy_port = free_port();
        let proxy = Service::proxy(&format!(
            r#"
bindport = {proxy_port}
connport = {primary}
message = "PROTOCOL"
{proxy_top}

[[sender]]
class = "KafkaSender"
topic = "{TOPIC}"
bootstrap-servers = "{bootstrap}"
linger-ms = 5
{sender}
"#,
            primary = primary.port(),
            bootstrap = broker.bootstrap(),
        ));
        proxy.wait_port(proxy_port);
        Setup {
            primary,
            backup,
            broker,
            proxy,
            proxy_port,
        }
    }

    /// A replay of [`TOPIC`]; `top` goes above `message`, `receiver` into
    /// `[receiver]`.
    pub fn replay(&self, top: &str, receiver: &str) -> Service {
        Service::replay(&replay_config(
            &self.broker,
            &self.backup,
            TOPIC,
            top,
            receiver,
        ))
    }

    pub fn client(&self) -> redis::Connection {
        connect(self.proxy_port)
    }

    /// How far the backup is: its stored offsets against the topic's end.
    pub fn progress(&self, partitions: i32) -> Progress {
        Progress {
            stored: stored_offsets(&self.backup, TOPIC, partitions),
            ends: end_offsets(&self.broker, TOPIC, partitions),
        }
    }

    /// Waits until every record of the topic is applied (the stored offset
    /// of each partition is the partition's end) and the backup equals the
    /// primary. Returns the end offsets; panics with the differences and
    /// `logs` otherwise.
    pub fn converge(&self, partitions: i32, logs: &[&Service]) -> Vec<i64> {
        self.wait_applied(partitions, logs, true)
    }

    /// Waits until every record of the topic is applied, whatever the
    /// primary holds; returns the end offsets, panics with `logs` after
    /// [`CONVERGE`].
    pub fn apply_topic(&self, partitions: i32, logs: &[&Service]) -> Vec<i64> {
        self.wait_applied(partitions, logs, false)
    }

    fn wait_applied(&self, partitions: i32, logs: &[&Service], equal: bool) -> Vec<i64> {
        let started = Instant::now();
        loop {
            let Progress { stored, ends } = self.progress(partitions);
            let diffs = match equal {
                true => compare::differences(self.primary.port(), self.backup.port(), &DBS),
                false => Vec::new(),
            };
            let caught_up = stored
                .iter()
                .zip(&ends)
                .all(|(s, e)| *e == 0 || *s == Some(*e));
            if caught_up && diffs.is_empty() {
                eprintln!(
                    "[check] {} within {:.1}s of checking: stored offsets {stored:?} = topic end offsets {ends:?}{}",
                    if equal { "converged" } else { "topic applied" },
                    started.elapsed().as_secs_f64(),
                    if equal {
                        format!(", primary and backup equal in dbs {DBS:?}")
                    } else {
                        String::new()
                    }
                );
                return ends;
            }
            if started.elapsed() > CONVERGE {
                let shown: Vec<String> = diffs.iter().take(10).map(|d| format!("{d:?}")).collect();
                let logs: Vec<String> = logs
                    .iter()
                    .map(|s| format!("--- {} log ---\n{}", s.mode(), tail(&s.log(), 60)))
                    .collect();
                panic!(
                    "no convergence within {CONVERGE:?}: stored offsets {stored:?}, topic end offsets {ends:?}, {} differences:\n{}\n--- proxy log ---\n{}\n{}",
                    diffs.len(),
                    shown.join("\n"),
                    tail(&self.proxy.log(), 30),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The offsets the backup stored and the topic's end offsets, per partition.
#[derive(Debug)]
pub struct Progress {
    pub stored: Vec<Option<i64>>,
    pub ends: Vec<i64>,
}

pub fn replay_config(
    broker: &Broker,
    backup: &RedisServer,
    topic: &str,
    top: &str,
    receiver: &str,
) -> String {
    format!(
        r#"
{top}
message = "PROTOCOL"
worker = "coroutine"

[receiver]
class = "KafkaReceiver"
topic = "{topic}"
polltimeout = 100
bootstrap-servers = "{bootstrap}"
{receiver}

[redis]
connip = "127.0.0.1"
connport = {backup}
"#,
        bootstrap = broker.bootstrap(),
        backup = backup.port(),
    )
}

/// The last `lines` lines of `log`.
pub fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The end offset (high watermark) of each partition.
pub fn end_offsets(broker: &Broker, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "faults-watermarks")
        .create()
        .expect("watermark client");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("watermarks of {topic}[{p}]: {e}"))
                .1
        })
        .collect()
}

/// The offsets the replay stored in the backup, per partition.
pub fn stored_offsets(backup: &RedisServer, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let mut con = connect(backup.port());
    (0..partitions)
        .map(|p| {
            redis::cmd("HGET")
                .arg("__remoteback:state")
                .arg(format!("offset:{topic}:{p}"))
                .query(&mut con)
                .expect("HGET offset")
        })
        .collect()
}

pub fn get(port: u16, db: u32, key: &str) -> Option<String> {
    let mut con = connect(port);
    let _: () = redis::cmd("SELECT")
        .arg(db)
        .query(&mut con)
        .expect("SELECT");
    redis::cmd("GET").arg(key).query(&mut con).expect("GET")
}

/// Sends `sig` to `pid` (a process the test started).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: a plain kill(2) to a child of the test process.
    unsafe {
        super::kill(pid as i32, sig);
    }
}

// ---------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------

/// What one client wrote (all through the proxy, all acknowledged: the
/// client received the reply).
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub client: usize,
    /// `INCR {cN}:counter`
    pub incr: i64,
    /// `LPUSH {cN}:list` (transactions included)
    pub push: i64,
    /// Bytes `APPEND`ed to `{cN}:log`
    pub appended: i64,
    /// How many `APPEND`s
    pub appends: i64,
    /// `MULTI; INCR {cN}:tx; LPUSH {cN}:list; EXEC`
    pub tx: i64,
    /// Sum of `INCRBY {cN}:counter 3` in database 1
    pub incrby_db1: i64,
    /// Why the client stopped before it was told to ([`OnError::Stop`]).
    pub error: Option<String>,
}

impl Tally {
    /// Acknowledged writes, each one record in `PROTOCOL` format: a
    /// `MULTI`/`EXEC` is one record, `SELECT`s are none.
    pub fn writes(&self) -> i64 {
        // `push` counts the LPUSH of each transaction, which is in the
        // transaction's record.
        self.incr + self.push + self.appends + self.incrby_db1 / 3
    }

    /// (counter, list length, log bytes, tx, db 1 counter): what the
    /// backup shows of this client.
    pub fn figures(&self) -> [i64; 5] {
        [
            self.incr,
            self.push,
            self.appended,
            self.tx,
            self.incrby_db1,
        ]
    }
}

/// The names of [`Tally::figures`].
pub const FIGURES: [&str; 5] = ["counter", "list length", "log bytes", "tx", "db1 counter"];

/// What a client does when a command fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Panic: the test expects every write to succeed.
    Panic,
    /// Stop writing and report what was acknowledged until then.
    Stop,
}

/// Clients writing through the proxy until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Tally>>,
    started: Instant,
}

impl Load {
    /// Clients that panic at the first error.
    pub fn start(proxy_port: u16, clients: usize) -> Load {
        Load::start_with(proxy_port, clients, OnError::Panic)
    }

    pub fn start_with(proxy_port: u16, clients: usize, on_error: OnError) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|c| {
                let stop = stop.clone();
                std::thread::spawn(move || write_until(proxy_port, c, &stop, on_error))
            })
            .collect();
        Load {
            stop,
            clients,
            started: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Clients still writing (with [`OnError::Stop`], a client ends at its
    /// first error).
    pub fn running(&self) -> usize {
        self.clients.iter().filter(|c| !c.is_finished()).count()
    }

    pub fn finish(self) -> Vec<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        let tallies: Vec<Tally> = self
            .clients
            .into_iter()
            .map(|t| t.join().expect("load client"))
            .collect();
        let total: i64 = tallies.iter().map(Tally::writes).sum();
        let stopped = tallies.iter().filter(|t| t.error.is_some()).count();
        eprintln!(
            "[load] {} clients wrote for {:.1}s: {total} acknowledged writes ({} INCR, {} LPUSH, {} MULTI/EXEC, {} APPENDs of {} bytes, {} INCRBY in db 1){}",
            tallies.len(),
            self.started.elapsed().as_secs_f64(),
            tallies.iter().map(|t| t.incr).sum::<i64>(),
            tallies.iter().map(|t| t.push - t.tx).sum::<i64>(),
            tallies.iter().map(|t| t.tx).sum::<i64>(),
            tallies.iter().map(|t| t.appends).sum::<i64>(),
            tallies.iter().map(|t| t.appended).sum::<i64>(),
            tallies.iter().map(|t| t.incrby_db1 / 3).sum::<i64>(),
            match stopped {
                0 => String::new(),
                n => format!("; {n} clients stopped at an error"),
            }
        );
        tallies
    }
}

pub fn key(client: usize, name: &str) -> String {
    // One hash tag per client: all its keys share a slot, hence a partition,
    // so their relative order survives a multi-partition topic.
    format!("{{client{client}}}:{name}")
}

fn write_until(port: u16, client: usize, stop: &AtomicBool, on_error: OnError) -> Tally {
    let mut con = connect(port);
    let mut t = Tally {
        client,
        ..Tally::default()
    };
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        if let Err(e) = write_one(&mut con, client, i, &mut t) {
            match on_error {
                OnError::Panic => panic!("client {client}: {e}"),
                OnError::Stop => {
                    t.error = Some(e);
                    break;
                }
            }
        }
        // About 200 writes a second per client: enough to keep the replay
        // busy, little enough for a sqlite-backed broker on two cores.
        std::thread::sleep(Duration::from_millis(4));
    }
    t
}

/// Write number `i` of `client`, counted in `t` once its reply arrived.
fn write_one(
    con: &mut redis::Connection,
    client: usize,
    i: u64,
    t: &mut Tally,
) -> Result<(), String> {
    let failed = |what: &str| {
        let what = what.to_string();
        move |e: redis::RedisError| format!("{what} through the proxy: {e}")
    };
    match i % 6 {
        0 => {
            let _: redis::Value = redis::pipe()
                .atomic()
                .cmd("INCR")
                .arg(key(client, "tx"))
                .cmd("LPUSH")
                .arg(key(client, "list"))
                .arg(format!("t{i}"))
                .query(con)
                .map_err(failed("MULTI/EXEC"))?;
            t.tx += 1;
            t.push += 1;
        }
        1 | 4 => {
            let _: i64 = redis::cmd("INCR")
                .arg(key(client, "counter"))
                .query(con)
                .map_err(failed("INCR"))?;
            t.incr += 1;
        }
        2 => {
            let _: i64 = redis::cmd("LPUSH")
                .arg(key(client, "list"))
                .arg(i)
                .query(con)
                .map_err(failed("LPUSH"))?;
            t.push += 1;
        }
        3 => {
            let piece = format!("{i},");
            let _: i64 = redis::cmd("APPEND")
                .arg(key(client, "log"))
                .arg(&piece)
                .query(con)
                .map_err(failed("APPEND"))?;
            t.appended += piece.len() as i64;
            t.appends += 1;
        }
        _ => {
            let _: () = redis::cmd("SELECT")
                .arg(1)
                .query(con)
                .map_err(failed("SELECT 1"))?;
            let _: i64 = redis::cmd("INCRBY")
                .arg(key(client, "counter"))
                .arg(3)
                .query(con)
                .map_err(failed("INCRBY"))?;
            t.incrby_db1 += 3;
            let _: () = redis::cmd("SELECT")
                .arg(0)
                .query(con)
                .map_err(failed("SELECT 0"))?;
        }
    }
    Ok(())
}

/// What a client's keys hold on the server at `port`, as
/// [`Tally::figures`] counts them.
pub fn figures(port: u16, client: usize) -> [i64; 5] {
    let mut con = connect(port);
    let num = |db: u32, name: &str| -> i64 {
        get(port, db, &key(client, name))
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(0)
    };
    let llen: i64 = redis::cmd("LLEN")
        .arg(key(client, "list"))
        .query(&mut con)
        .expect("LLEN");
    let strlen: i64 = redis::cmd("STRLEN")
        .arg(key(client, "log"))
        .query(&mut con)
        .expect("STRLEN");
    [
        num(0, "counter"),
        llen,
        strlen,
        num(0, "tx"),
        num(1, "counter"),
    ]
}

/// The backup holds exactly what the clients wrote: a lost record shows as
/// a smaller, a repeated one as a larger number.
#[track_caller]
pub fn check_tallies(backup: &RedisServer, tallies: &[Tally]) {
    for t in tallies {
        let c = t.client;
        let got = figures(backup.port(), c);
        assert_eq!(
            got,
            t.figures(),
            "client {c}: backup (counter, list length, log bytes, tx, db1 counter) vs what the client wrote"
        );
        eprintln!(
            "[check] client {c} on the backup: counter = {} INCRs, list = {} LPUSHes, log = {} bytes APPENDed, tx = {} transactions, db1 counter = {}: exactly what it wrote",
            got[0], got[1], got[2], got[3], got[4]
        );
    }
}

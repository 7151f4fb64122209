//! Topics of several partitions, with real processes: primary and backup
//! redis-server, a tansu broker, `remoteback proxy` and one or two
//! `remoteback replay` sharing the topic.
//!
//! The load races writers doing `INCR` and `RPUSH` over 400 keys of every
//! slot against a client running what spans partitions or names no key:
//! cross-slot `MSET`, `RENAME`, `COPY`, transactions and scripts over keys of
//! several slots, `FLUSHDB`, `SWAPDB 0 1` and `FLUSHALL`. Applied out of the
//! primary's order relative to any partition, such a command leaves the backup
//! different from the primary (a counter flushed too early or too late, a
//! list renamed before or after a push). The replays are killed with SIGKILL
//! while they apply. At the end the backup must equal the primary.
//!
//! Every test prints what it injected and what it checked.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::faults::{connect, signal, tail, Setup};
use common::status::Status;
use common::workload::{env_seed, Rng};
use common::{free_port, Service};

const PARTITIONS: i32 = 4;
/// Keys per kind (`c<n>` counters, `l<n>` lists, `s<n>` strings).
const KEYS: u64 = 400;
const SIGKILL: i32 = 9;

fn seed() -> u64 {
    env_seed().unwrap_or(20261201)
}

/// What the racing clients did, for the log.
#[derive(Default)]
struct Counts {
    writes: AtomicU64,
    spanning: AtomicU64,
    flushes: AtomicU64,
}

/// The racing load: `writers` clients of plain writes, one of spanning ones.
struct Race {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Race {
    fn start(proxy_port: u16, writers: usize, seed: u64) -> Race {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let mut threads = Vec::new();
        for w in 0..writers {
            let (stop, counts) = (stop.clone(), counts.clone());
            threads.push(std::thread::spawn(move || {
                write_plain(proxy_port, w, seed + w as u64, &stop, &counts)
            }));
        }
        let (stop2, counts2) = (stop.clone(), counts.clone());
        threads.push(std::thread::spawn(move || {
            write_spanning(proxy_port, seed + 1000, &stop2, &counts2)
        }));
        Race {
            stop,
            counts,
            threads,
            started: Instant::now(),
        }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load client");
        }
        eprintln!(
            "[load] {:.1}s: {} plain writes (INCR, RPUSH), {} spanning partitions or keyless (MSET, RENAME, COPY, MULTI, EVAL, SWAPDB), {} FLUSHDB/FLUSHALL",
            self.started.elapsed().as_secs_f64(),
            self.counts.writes.load(Ordering::Relaxed),
            self.counts.spanning.load(Ordering::Relaxed),
            self.counts.flushes.load(Ordering::Relaxed),
        );
    }
}

/// A connection to the proxy in each of databases 0 and 1.
fn connections(proxy_port: u16) -> [redis::Connection; 2] {
    let db0 = connect(proxy_port);
    let mut db1 = connect(proxy_port);
    let _: () = redis::cmd("SELECT")
        .arg(1)
        .query(&mut db1)
        .expect("SELECT 1");
    [db0, db1]
}

fn write_plain(proxy_port: u16, writer: usize, seed: u64, stop: &AtomicBool, counts: &Counts) {
    let mut cons = connections(proxy_port);
    let mut rng = Rng::new(seed);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let con = &mut cons[rng.below(2) as usize];
        let k = rng.below(KEYS);
        let result: redis::RedisResult<i64> = match rng.below(2) {
            0 => redis::cmd("INCR").arg(format!("c{k}")).query(con),
            _ => redis::cmd("RPUSH")
                .arg(format!("l{k}"))
                .arg(format!("{writer}:{n}"))
                .query(con),
        };
        // A key a COPY or RENAME made a string answers WRONGTYPE: not a
        // write, nothing to replicate.
        if result.is_ok() {
            counts.writes.fetch_add(1, Ordering::Relaxed);
        }
        n += 1;
    }
}

fn write_spanning(proxy_port: u16, seed: u64, stop: &AtomicBool, counts: &Counts) {
    let mut cons = connections(proxy_port);
    let mut rng = Rng::new(seed);
    let mut round = 0u64;
    let mut flushed_all = false;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let db = rng.below(2) as usize;
        let con = &mut cons[db];
        let (a, b, c) = (rng.below(KEYS), rng.below(KEYS), rng.below(KEYS));
        let cmd = match rng.below(100) {
            0..=19 => {
                let mut m = redis::cmd("MSET");
                m.arg(format!("s{a}"))
                    .arg(round)
                    .arg(format!("s{b}"))
                    .arg(round)
                    .arg(format!("s{c}"))
                    .arg(round);
                m
            }
            20..=34 => {
                let mut m = redis::cmd("RENAME");
                m.arg(format!("l{a}")).arg(format!("l{b}"));
                m
            }
            35..=44 => {
                let mut m = redis::cmd("COPY");
                m.arg(format!("c{a}")).arg(format!("c{b}")).arg("REPLACE");
                m
            }
            45..=64 => {
                let mut m = redis::cmd("EVAL");
                m.arg(
                    "redis.call('INCRBY', KEYS[1], 10) \
                     redis.call('RPUSH', KEYS[2], ARGV[1]) \
                     return redis.call('LLEN', KEYS[2])",
                )
                .arg(2)
                .arg(format!("c{a}"))
                .arg(format!("l{b}"))
                .arg(format!("eval:{round}"));
                m
            }
            65..=84 => {
                let mut p = redis::pipe();
                p.atomic()
                    .cmd("INCR")
                    .arg(format!("c{a}"))
                    .cmd("RPUSH")
                    .arg(format!("l{b}"))
                    .arg(format!("multi:{round}"))
                    .cmd("DEL")
                    .arg(format!("s{c}"));
                let done: redis::RedisResult<redis::Value> = p.query(con);
                if done.is_ok() {
                    counts.spanning.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            85..=91 => redis::cmd("SWAPDB").arg(0).arg(1).clone(),
            92..=97 => {
                counts.flushes.fetch_add(1, Ordering::Relaxed);
                redis::cmd("FLUSHDB")
            }
            _ if !flushed_all && round > 30 => {
                flushed_all = true;
                counts.flushes.fetch_add(1, Ordering::Relaxed);
                redis::cmd("FLUSHALL")
            }
            _ => continue,
        };
        // RENAME of a missing key, EVAL on a key of the wrong type: errors
        // the primary gave, nothing captured.
        let done: redis::RedisResult<redis::Value> = cmd.query(con);
        if done.is_ok() {
            counts.spanning.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(5 + rng.below(20)));
    }
}

/// The pipeline on a four-partition topic, the proxy's status port.
fn start(sender: &str) -> (Setup, Status) {
    let port = free_port();
    let s = Setup::start_with(
        &[],
        PARTITIONS,
        &format!("metrics = \"127.0.0.1:{port}\""),
        sender,
    );
    s.proxy.wait_port(port);
    (s, Status(port))
}

/// Runs the race for about `seconds` while killing one of `replays` with
/// SIGKILL `kills` times at seeded moments, restarting it each time.
fn race_with_kills(s: &Setup, replays: &mut [Service], seconds: u64, kills: usize) {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let race = Race::start(s.proxy_port, 4, seed);
    let step = Duration::from_millis(seconds * 1000 / (kills as u64 + 1));
    for k in 0..kills {
        std::thread::sleep(step / 2 + Duration::from_millis(rng.below(step.as_millis() as u64)));
        let count = replays.len();
        let r = &mut replays[k % count];
        signal(r.pid().expect("replay running"), SIGKILL);
        let status = r.wait_exit(Duration::from_secs(10));
        assert!(status.is_some(), "the replay did not die of SIGKILL");
        eprintln!(
            "[inject] SIGKILL of replay {} at {:.1}s of load (seed {seed}), restarted",
            k % count,
            race.started.elapsed().as_secs_f64()
        );
        r.restart();
    }
    std::thread::sleep(step / 2);
    race.finish();
}

/// One replay on a four-partition topic, killed four times while the load
/// races spanning and keyless commands against plain writes.
#[test]
fn four_partitions_with_flushes_swaps_and_cross_slot_writes_end_exact() {
    let (s, status) = start("");
    let mut replays = [s.replay("", "")];
    race_with_kills(&s, &mut replays, 8, 4);
    let logs: Vec<&Service> = replays.iter().collect();
    let ends = s.converge(PARTITIONS, &logs);
    let barriers = status.value("remoteback_proxy_barriers_total");
    assert!(barriers > 0, "the load wrote barriers");
    assert!(
        ends.iter().all(|&e| e > barriers as i64),
        "every partition has records of its own besides the barriers: {ends:?}"
    );
    eprintln!("[check] {barriers} barriers, each in all {PARTITIONS} partitions; records per partition {ends:?}");
}

/// Two replays share the topic (`partitions = [0, 1]` and `[2, 3]`): the
/// barriers meet across processes; each is killed twice.
#[test]
fn two_replays_sharing_four_partitions_end_exact() {
    let (s, status) = start("");
    let mut replays = [
        s.replay("", "partitions = [0, 1]"),
        s.replay("", "partitions = [2, 3]"),
    ];
    race_with_kills(&s, &mut replays, 8, 4);
    let logs: Vec<&Service> = replays.iter().collect();
    let ends = s.converge(PARTITIONS, &logs);
    let barriers = status.value("remoteback_proxy_barriers_total");
    assert!(barriers > 0, "the load wrote barriers");
    eprintln!("[check] two replays, {barriers} barriers; records per partition {ends:?}");
    for r in &replays {
        assert!(
            !r.log().contains("ERROR"),
            "a replay logged an error:\n{}",
            tail(&r.log(), 40)
        );
    }
}

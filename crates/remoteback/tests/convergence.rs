//! The convergence harness: a seeded random workload from 16 concurrent
//! clients racing on 32 hot keys with every data type, TTLs, transactions,
//! scripts, blocking pops and three databases. When the replay has caught
//! up, the comparator walks both servers and every difference is listed.
//!
//! CI runs three seeds on redis-server and one with valkey-server as
//! primary and backup (its command table read from its `COMMAND`). A
//! longer run is one command:
//!
//! ```text
//! REMOTEBACK_CONVERGENCE_COMMANDS=1000000 cargo nextest run -p remoteback --test convergence seed_1
//! ```

mod common;

use std::time::{Duration, Instant};

use common::mixed;
use common::pipeline::{Pipeline, Setup};
use common::ServerKind;
use remoteback::compare::{self, Options};

const CLIENTS: usize = 16;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(seed: u64, commands: u64) {
    run_on(ServerKind::Redis, seed, commands)
}

fn run_on(server: ServerKind, seed: u64, commands: u64) {
    let p = Pipeline::start(Setup {
        server,
        ..Setup::default()
    });
    let port = p.proxy_port;
    let started = Instant::now();
    let per_client = (commands / CLIENTS as u64) as usize;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            std::thread::spawn(move || {
                let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .and_then(|c| c.get_connection())
                    .expect("connect through the proxy");
                mixed::run_client(&mut con, client, per_client, seed);
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    eprintln!(
        "seed {seed}: {commands} commands from {CLIENTS} clients in {:?}",
        started.elapsed()
    );

    let url = |p: u16| format!("redis://127.0.0.1:{p}");
    let mut on_primary = compare::connect(&url(p.primary.port())).expect("primary");
    let mut on_backup = compare::connect(&url(p.backup.port())).expect("backup");
    let options = Options {
        dbs: mixed::DBS.to_vec(),
        ttl_tolerance_ms: 2000,
    };
    // Catching up takes longer the more was written (the local broker
    // serves some thousands of records a second).
    let deadline = Instant::now() + Duration::from_secs(120 + commands / 1000);
    loop {
        let diffs =
            compare::differences(&mut on_primary, &mut on_backup, &options).expect("compare");
        if diffs.is_empty() {
            eprintln!(
                "seed {seed}: backup equals primary after {:?}",
                started.elapsed()
            );
            return;
        }
        if Instant::now() > deadline {
            let listed: Vec<String> = diffs.iter().map(|d| d.to_string()).collect();
            let warnings: Vec<String> = p
                .proxy
                .log()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .map(str::to_string)
                .collect();
            panic!(
                "seed {seed}: {} differences:\n{}\n--- proxy warnings ---\n{}\n--- replay log ---\n{}",
                diffs.len(),
                listed.join("\n"),
                warnings.join("\n"),
                p.replay.as_ref().map(|r| r.log()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn seed_1_converges() {
    run(1, env_or("REMOTEBACK_CONVERGENCE_COMMANDS", 8000));
}

#[test]
fn seed_2_converges() {
    run(2, env_or("REMOTEBACK_CONVERGENCE_COMMANDS", 8000));
}

#[test]
fn seed_3_converges() {
    run(3, env_or("REMOTEBACK_CONVERGENCE_COMMANDS", 8000));
}

#[test]
fn valkey_seed_1_converges() {
    run_on(
        ServerKind::Valkey,
        1,
        env_or("REMOTEBACK_CONVERGENCE_COMMANDS", 8000),
    );
}

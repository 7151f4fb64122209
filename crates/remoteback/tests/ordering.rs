//! Writes to the same key from different clients reach the backup in the
//! order the primary executed them (key locks), blocking pops included.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::pipeline::{connect, Pipeline, Setup};
use common::{blocked_clients, wait_until};

fn get(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(con).expect("GET")
}

#[test]
fn racing_writers_end_with_the_primary_value_50_of_50() {
    let p = Pipeline::start(Setup::default());
    let port = p.proxy_port;
    let (mut on_primary, mut on_backup) = (p.on_primary(), p.on_backup());
    let mut equal = 0;
    for run in 0..50 {
        let key = format!("race:{run}");
        let start = Arc::new(Barrier::new(2));
        let writers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|who| {
                let (key, start) = (key.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut c = connect(port);
                    start.wait();
                    // Pipelined bursts: many writes in flight at once.
                    for burst in 0..5 {
                        let mut pipe = redis::pipe();
                        for i in 0..20 {
                            pipe.cmd("SET")
                                .arg(&key)
                                .arg(format!("{who}{burst}-{i}"))
                                .ignore();
                        }
                        let _: () = pipe.query(&mut c).expect("SET burst");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        let want = get(&mut on_primary, &key);
        // Written after both writers saw all their replies, so its record
        // follows all of theirs: once it is on the backup, so are they.
        p.wait_applied();
        let got = get(&mut on_backup, &key);
        if got == want {
            equal += 1;
        } else {
            eprintln!("run {run}: primary {want:?}, backup {got:?}");
        }
    }
    eprintln!("backup equal to primary after {equal} of 50 races");
    assert_eq!(equal, 50, "{}", p.logs());
}

#[test]
fn blocking_pops_racing_with_pushes_keep_the_primary_order() {
    let p = Pipeline::start(Setup::default());
    let port = p.proxy_port;
    let start = Arc::new(Barrier::new(8));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let start = start.clone();
            std::thread::spawn(move || {
                let mut c = connect(port);
                start.wait();
                for i in 0..150 {
                    let mut cmd = redis::cmd(match (w % 2, i % 3) {
                        (0, 0) => "BLPOP",
                        (0, _) => "BRPOP",
                        (_, 0) => "LPUSH",
                        (_, 1) => "RPUSH",
                        (_, _) => "LPOP",
                    });
                    cmd.arg("q");
                    match (w % 2, i % 3) {
                        (0, _) => cmd.arg(0.01),
                        (_, 0) => cmd.arg(format!("{w}-{i}")),
                        (_, 1) => cmd.arg(format!("{w}-{i}")).arg("x"),
                        (_, _) => &mut cmd,
                    };
                    let _: redis::Value = cmd.query(&mut c).expect("list command");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    p.wait_applied();
    let list = |c: &mut redis::Connection| -> Vec<String> {
        redis::cmd("LRANGE")
            .arg("q")
            .arg(0)
            .arg(-1)
            .query(c)
            .expect("LRANGE")
    };
    assert_eq!(
        list(&mut p.on_backup()),
        list(&mut p.on_primary()),
        "{}",
        p.logs()
    );
}

/// A client blocked in `BLPOP` (on its own connection) is served by the
/// first of another client's pipelined `LPUSH`es to its key, which go on the shared
/// connection: the pop's record must come between that push and the next,
/// or the backup pops the next push's element instead.
#[test]
fn a_pop_served_by_a_pipelined_push_replays_between_the_pushes() {
    let p = Pipeline::start(Setup::default());
    let port = p.proxy_port;
    const POPS: usize = 100;
    let consumer = std::thread::spawn(move || {
        let mut c = connect(port);
        for burst in 0..POPS {
            let _: (String, String) = redis::cmd("BLPOP")
                .arg(format!("q{burst}"))
                .arg(0)
                .query(&mut c)
                .expect("BLPOP");
        }
    });
    let mut on_primary = p.on_primary();
    let mut producer = connect(port);
    for burst in 0..POPS {
        // The consumer is blocked: the burst's first push serves it.
        wait_until(Duration::from_secs(10), "the consumer's BLPOP", || {
            blocked_clients(&mut on_primary) > 0
        });
        let mut pipe = redis::pipe();
        for i in 0..3 {
            pipe.cmd("LPUSH")
                .arg(format!("q{burst}"))
                .arg(format!("{burst}-{i}"))
                .ignore();
        }
        let _: () = pipe.query(&mut producer).expect("LPUSH burst");
    }
    consumer.join().expect("consumer");
    p.wait_applied();
    let lists = |c: &mut redis::Connection| -> Vec<Vec<String>> {
        (0..POPS)
            .map(|burst| {
                redis::cmd("LRANGE")
                    .arg(format!("q{burst}"))
                    .arg(0)
                    .arg(-1)
                    .query(c)
                    .expect("LRANGE")
            })
            .collect()
    };
    let want = lists(&mut on_primary);
    assert!(want.iter().all(|l| l.len() == 2), "{want:?}");
    assert_eq!(lists(&mut p.on_backup()), want, "{}", p.logs());
}

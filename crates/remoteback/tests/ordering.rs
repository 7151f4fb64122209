//! Writes to the same key from different clients reach the backup in the
//! order the primary executed them (key locks), blocking pops included.

mod common;

use std::sync::{Arc, Barrier};

use common::pipeline::{connect, Pipeline, Setup};

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

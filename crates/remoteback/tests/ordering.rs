//! Writes to the same key from different clients reach the backup in the
//! order the primary executed them (key locks).

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{free_port, Broker, RedisServer, Service};

fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
}

fn get(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(con).expect("GET")
}

#[test]
fn racing_writers_end_with_the_primary_value_50_of_50() {
    let primary = RedisServer::start();
    let backup = RedisServer::start();
    let broker = Broker::start();
    broker.create_topic("race", 1);
    let port = free_port();
    let proxy = Service::proxy(&format!(
        "bindport = {port}\nconnport = {}\n[[sender]]\nclass = \"KafkaSender\"\ntopic = \"race\"\nbootstrap-servers = \"{}\"\nlinger-ms = 1\n",
        primary.port(),
        broker.bootstrap()
    ));
    proxy.wait_port(port);
    let replay = Service::replay(&format!(
        "[receiver]\nclass = \"KafkaReceiver\"\ntopic = \"race\"\npolltimeout = 50\nbootstrap-servers = \"{}\"\n[redis]\nconnport = {}\n",
        broker.bootstrap(),
        backup.port()
    ));
    let mut on_primary = connect(primary.port());
    let mut on_backup = connect(backup.port());
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
                        let mut p = redis::pipe();
                        for i in 0..20 {
                            p.cmd("SET")
                                .arg(&key)
                                .arg(format!("{who}{burst}-{i}"))
                                .ignore();
                        }
                        let _: () = p.query(&mut c).expect("SET burst");
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
        let sentinel = format!("{key}:done");
        let _: () = redis::cmd("SET")
            .arg(&sentinel)
            .arg(1)
            .query(&mut connect(port))
            .expect("SET");
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(&mut on_backup, &sentinel).is_none() {
            assert!(
                Instant::now() < deadline,
                "run {run}: sentinel never reached the backup"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let got = get(&mut on_backup, &key);
        if got == want {
            equal += 1;
        } else {
            eprintln!("run {run}: primary {want:?}, backup {got:?}");
        }
    }
    eprintln!("backup equal to primary after {equal} of 50 races");
    assert_eq!(equal, 50, "--- replay log ---\n{}", replay.log());
}

#[test]
fn blocking_pops_racing_with_pushes_keep_the_primary_order() {
    let primary = RedisServer::start();
    let backup = RedisServer::start();
    let broker = Broker::start();
    broker.create_topic("pops", 1);
    let port = free_port();
    let proxy = Service::proxy(&format!(
        "bindport = {port}\nconnport = {}\n[[sender]]\nclass = \"KafkaSender\"\ntopic = \"pops\"\nbootstrap-servers = \"{}\"\nlinger-ms = 1\n",
        primary.port(),
        broker.bootstrap()
    ));
    proxy.wait_port(port);
    let replay = Service::replay(&format!(
        "[receiver]\nclass = \"KafkaReceiver\"\ntopic = \"pops\"\npolltimeout = 50\nbootstrap-servers = \"{}\"\n[redis]\nconnport = {}\n",
        broker.bootstrap(),
        backup.port()
    ));
    let start = Arc::new(Barrier::new(8));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let start = start.clone();
            std::thread::spawn(move || {
                let mut c = connect(port);
                start.wait();
                for i in 0..150 {
                    let cmd = match (w % 2, i % 3) {
                        (0, 0) => redis::cmd("BLPOP").arg("q").arg(0.01).clone(),
                        (0, _) => redis::cmd("BRPOP").arg("q").arg(0.01).clone(),
                        (_, 0) => redis::cmd("LPUSH").arg("q").arg(format!("{w}-{i}")).clone(),
                        (_, 1) => redis::cmd("RPUSH")
                            .arg("q")
                            .arg(format!("{w}-{i}"))
                            .arg("x")
                            .clone(),
                        (_, _) => redis::cmd("LPOP").arg("q").clone(),
                    };
                    let _: redis::Value = cmd.query(&mut c).expect("list command");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let _: () = redis::cmd("SET")
        .arg("done")
        .arg(1)
        .query(&mut connect(port))
        .expect("SET");
    let mut on_backup = connect(backup.port());
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&mut on_backup, "done").is_none() {
        assert!(
            Instant::now() < deadline,
            "sentinel never reached the backup"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = |c: &mut redis::Connection| -> Vec<String> {
        redis::cmd("LRANGE")
            .arg("q")
            .arg(0)
            .arg(-1)
            .query(c)
            .expect("LRANGE")
    };
    let want = list(&mut connect(primary.port()));
    let got = list(&mut on_backup);
    assert_eq!(
        got,
        want,
        "--- proxy log ---\n{}\n--- replay log ---\n{}",
        proxy.log(),
        replay.log()
    );
}

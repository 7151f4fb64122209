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

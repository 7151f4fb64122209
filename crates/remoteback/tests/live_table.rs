//! The command table comes from the primary: a module's write command,
//! which no built-in table knows, is captured with its keys; where the
//! primary cannot give its table, the built-in one classifies and a command
//! it lacks is still captured (keyless, under the barrier) and counted.
//!
//! The module is `crates/testmodule` (`RBTEST.SETPAIR key1 key2 value`),
//! built by cargo as a dependency of these tests and loaded into primary
//! and backup.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use common::pipeline::{connect, Pipeline, Setup};
use common::status::Status;
use common::{free_port, wait_until};
use remoteback_protocol::slot::hash_slot;

/// `libremoteback_testmodule.so`, as cargo built it for this test binary
/// (target/<profile>/deps/ or target/<profile>/): the newest.
fn module_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir");
    let dirs = [
        deps.to_path_buf(),
        deps.parent().expect("profile dir").to_path_buf(),
    ];
    let mut found: Vec<(SystemTime, PathBuf)> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libremoteback_testmodule") && n.ends_with(".so"))
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("no libremoteback_testmodule*.so in {dirs:?}"))
}

fn with_module(proxy_extra: &str, user: &[&str]) -> Setup {
    let mut server_args = vec![
        "--loadmodule".to_string(),
        module_path().display().to_string(),
    ];
    if !user.is_empty() {
        server_args.push("--user".to_string());
        server_args.extend(user.iter().map(|s| s.to_string()));
    }
    Setup {
        proxy_extra: proxy_extra.to_string(),
        server_args,
        ..Setup::default()
    }
}

fn setpair(con: &mut redis::Connection, a: &[u8], b: &[u8], value: &str) {
    let ok: String = redis::cmd("RBTEST.SETPAIR")
        .arg(a)
        .arg(b)
        .arg(value)
        .query(con)
        .expect("RBTEST.SETPAIR");
    assert_eq!(ok, "OK");
}

fn get(con: &mut redis::Connection, key: &[u8]) -> Option<String> {
    redis::cmd("GET").arg(key).query(con).expect("GET")
}

/// The Kafka keys of the records whose payload names `command`.
fn keys_of(p: &Pipeline, command: &str) -> Vec<Option<String>> {
    p.topic_keys()
        .into_iter()
        .filter(|(_, payload)| {
            payload
                .windows(command.len())
                .any(|w| w == command.as_bytes())
        })
        .map(|(key, _)| key.map(|k| String::from_utf8_lossy(&k).into_owned()))
        .collect()
}

#[test]
fn a_module_write_is_captured_with_its_keys() {
    let p = Pipeline::start(with_module("", &[]));
    let mut client = p.client();
    // Binary keys: bytes, never strings.
    let (a, b) = (&b"mod:\xff\x00a"[..], &b"mod:b"[..]);
    setpair(&mut client, a, b, "v1");
    p.wait_applied();
    let mut backup = p.on_backup();
    assert_eq!(get(&mut backup, a).as_deref(), Some("v1"), "{}", p.logs());
    assert_eq!(get(&mut backup, b).as_deref(), Some("v1"));
    // Its record is keyed by the slot of its first key: the keys were found
    // with the primary's table (a keyless record has no key).
    assert_eq!(
        keys_of(&p, "RBTEST.SETPAIR"),
        [Some(hash_slot(a).to_string())],
        "{}",
        p.logs()
    );
    let log = p.proxy.log();
    assert!(log.contains("command table from primary"), "{log}");
    assert!(!log.contains("neither"), "{log}");

    // Key locks order it against plain writes to the same key from another
    // client: the backup ends with the primary's value every time.
    let port = p.proxy_port;
    let (mut on_primary, mut on_backup) = (p.on_primary(), p.on_backup());
    for run in 0..10 {
        let (k1, k2) = (format!("race:{run}:a"), format!("race:{run}:b"));
        let start = Arc::new(Barrier::new(2));
        let writers: Vec<_> = [true, false]
            .into_iter()
            .map(|module| {
                let (k1, k2, start) = (k1.clone(), k2.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut c = connect(port);
                    start.wait();
                    let mut pipe = redis::pipe();
                    for i in 0..30 {
                        if module {
                            pipe.cmd("RBTEST.SETPAIR")
                                .arg(&k1)
                                .arg(&k2)
                                .arg(format!("m{i}"));
                        } else {
                            pipe.cmd("SET").arg(&k2).arg(format!("s{i}"));
                        }
                        pipe.ignore();
                    }
                    let _: () = pipe.query(&mut c).expect("burst");
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        p.wait_applied();
        assert_eq!(
            get(&mut on_backup, k2.as_bytes()),
            get(&mut on_primary, k2.as_bytes()),
            "run {run}\n{}",
            p.logs()
        );
    }
}

#[test]
fn without_the_primary_s_table_an_unknown_write_is_still_captured_and_counted() {
    // The proxy's own user may not run COMMAND: the built-in table
    // classifies, and it does not know the module's command.
    let status = free_port();
    let p = Pipeline::start(with_module(
        &format!("connusername = \"rb\"\nconnpassword = \"pw\"\nmetrics = \"127.0.0.1:{status}\""),
        &["rb", "on", ">pw", "~*", "&*", "+@all", "-command"],
    ));
    p.proxy.wait_port(status);
    let mut client = p.client();
    setpair(&mut client, b"fb:a", b"fb:b", "v1");
    setpair(&mut client, b"fb:a", b"fb:c", "v2");
    p.wait_applied();
    let mut backup = p.on_backup();
    assert_eq!(
        get(&mut backup, b"fb:b").as_deref(),
        Some("v1"),
        "{}",
        p.logs()
    );
    assert_eq!(get(&mut backup, b"fb:a").as_deref(), Some("v2"));
    assert_eq!(get(&mut backup, b"fb:c").as_deref(), Some("v2"));
    // Keyless records (the keys are unknown).
    assert_eq!(keys_of(&p, "RBTEST.SETPAIR"), [None, None], "{}", p.logs());
    assert_eq!(
        Status(status).value("remoteback_proxy_unclassified_commands_total"),
        2
    );
    let log = p.proxy.log();
    assert!(
        log.contains("cannot read the command table of primary"),
        "{log}"
    );
    assert_eq!(
        log.matches("\"RBTEST.SETPAIR\" is in neither").count(),
        1,
        "{log}"
    );
}

#[test]
fn a_primary_unreachable_at_start_gives_its_table_once_it_is_back() {
    let mut p = Pipeline::start(with_module("", &[]));
    p.primary.stop();
    p.proxy.restart();
    p.proxy.wait_port(p.proxy_port);
    p.primary.restart();
    wait_until(
        Duration::from_secs(30),
        "the proxy reads the table of the primary that came back",
        || p.proxy.log().matches("command table from primary").count() >= 2,
    );
    let mut client = p.client();
    setpair(&mut client, b"back:a", b"back:b", "v");
    p.wait_applied();
    assert_eq!(
        get(&mut p.on_backup(), b"back:b").as_deref(),
        Some("v"),
        "{}",
        p.logs()
    );
    assert_eq!(
        keys_of(&p, "back:a"),
        [Some(hash_slot(b"back:a").to_string())],
        "{}",
        p.logs()
    );
}

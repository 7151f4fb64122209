//! `remoteback sync`: a primary that already holds data is copied to an
//! empty backup through the log while clients keep writing through the
//! proxy, and the backup ends equal to the primary.
//!
//! CI loads a scaled-down dataset (20,000 keys, big keys of a few MB, a
//! 12 MB hash, chunks of 1 MB). The dataset of the proof (200,000 keys,
//! 20 keys of 5-50 MB, a 300 MB hash, chunks of 4 MB) is one command:
//!
//! ```text
//! REMOTEBACK_SYNC_FULL=1 scripts/test.sh -p remoteback --test sync
//! ```

mod common;

use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::dataset::Dataset;
use common::pipeline::{Pipeline, Setup};
use common::{free_port, mixed, remoteback_bin, wait_until};
use remoteback::admin::client::{AdminClient, AdminError};
use remoteback::admin::SyncStart;

const CLIENTS: usize = 8;
/// Every database the dataset and the workload use.
const ALL_DBS: [u32; 4] = [0, 1, 2, 3];

fn full() -> bool {
    std::env::var("REMOTEBACK_SYNC_FULL").is_ok_and(|v| v == "1")
}

fn dataset() -> Dataset {
    if full() {
        Dataset {
            small_keys: 200_000,
            big_keys: (0..20).map(|i| (5 + i * 45 / 19) << 20).collect(),
            big_hash_bytes: 300 << 20,
        }
    } else {
        Dataset {
            small_keys: 20_000,
            big_keys: vec![6 << 20, 3 << 20, 2 << 20, 2 << 20, 3 << 20, 2 << 20],
            big_hash_bytes: 12 << 20,
        }
    }
}

/// `--chunk-bytes` for the run. Not the 8 MiB default even for the full
/// dataset: tansu 0.6.0 hands out at most 5 MiB a fetch and never a record
/// larger than that, so a bigger record would stall the replay.
fn chunk() -> &'static str {
    if full() {
        "4mb"
    } else {
        "1mb"
    }
}

/// How long the replay may take to apply what the sync wrote.
fn catch_up() -> Duration {
    Duration::from_secs(if full() { 3600 } else { 60 })
}

/// A pipeline whose proxy serves its admin API, and that address.
fn pipeline(extra: &str) -> (Pipeline, String) {
    let admin = format!("127.0.0.1:{}", free_port());
    let p = Pipeline::start(Setup {
        proxy_extra: format!("metrics = \"{admin}\"\n{extra}"),
        ..Setup::default()
    });
    (p, admin)
}

/// Loads the dataset and the workload's hot keys straight into the primary.
fn load(p: &Pipeline) {
    let started = Instant::now();
    let mut primary = p.on_primary();
    dataset().load(&mut primary);
    for client in 0..4 {
        mixed::run_client(&mut primary, client, 500, 99);
    }
    eprintln!("dataset loaded in {:?}", started.elapsed());
}

/// `CLIENTS` clients writing `commands` each through the proxy.
fn workload(p: &Pipeline, commands: usize, seed: u64) -> Vec<JoinHandle<()>> {
    let port = p.proxy_port;
    (0..CLIENTS)
        .map(|client| {
            std::thread::spawn(move || {
                let mut con = common::pipeline::connect(port);
                mixed::run_client(&mut con, client, commands, seed);
            })
        })
        .collect()
}

fn sync(admin: &str, args: &[&str]) -> Output {
    Command::new(remoteback_bin())
        .args(["sync", "--proxy", admin])
        .args(args)
        .output()
        .expect("run remoteback sync")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn join(clients: Vec<JoinHandle<()>>) {
    for c in clients {
        c.join().expect("workload client");
    }
}

/// The whole run: the dataset, then the sync with clients writing during
/// all of it, then the backup must converge.
fn sync_while_writing(method: &str) {
    let (p, admin) = pipeline("");
    load(&p);
    let clients = workload(&p, 4_000, 7);
    let started = Instant::now();
    let out = sync(&admin, &["--method", method, "--chunk-bytes", chunk()]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "sync failed:\n{}\n{}",
        text(&out),
        p.logs()
    );
    let summary = text(&out);
    assert!(summary.contains("sync done"), "{summary}");
    eprintln!("sync ({method}) took {took:?}: {summary}");
    join(clients);
    p.wait_applied_within(catch_up());
    p.assert_converges(&ALL_DBS, Duration::from_secs(120));
    let verified = verify(&p, &[]);
    assert!(
        verified.status.success(),
        "verify disagrees:\n{}",
        text(&verified)
    );
}

/// `remoteback verify` of the pipeline's backup against its primary.
fn verify(p: &Pipeline, args: &[&str]) -> Output {
    Command::new(remoteback_bin())
        .args([
            "verify",
            "--source",
            &p.primary.url(),
            "--target",
            &p.backup.url(),
        ])
        .args(["--interval", "500ms"])
        .args(args)
        .output()
        .expect("run remoteback verify")
}

#[test]
fn sync_copies_a_loaded_primary_while_clients_write() {
    sync_while_writing("restore");
}

#[test]
fn sync_with_typed_commands_copies_the_same() {
    sync_while_writing("commands");
}

#[test]
fn a_sync_killed_with_the_proxy_resumes_from_its_position() {
    // ack = "kafka": a write's reply means Kafka has its record, so the
    // writes a client saw succeed survive the proxy's SIGKILL.
    let (mut p, admin) = pipeline("ack = \"kafka\"");
    load(&p);
    let client = AdminClient::new(&admin, None);
    let first = workload(&p, 300, 11);
    let slow = (dataset().small_keys / 20).to_string();
    let cli = {
        let admin = admin.clone();
        std::thread::spawn(move || {
            sync(
                &admin,
                &["--chunk-bytes", chunk(), "--keys-per-second", &slow],
            )
        })
    };
    join(first);
    wait_until(
        Duration::from_secs(60),
        "a third of the keys copied",
        || {
            client.status().is_ok_and(|s| {
                s.keys_done * 3 > s.keys_total && s.position.as_deref() != Some("0:0")
            })
        },
    );
    p.proxy.kill();
    let out = cli.join().expect("sync CLI");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = text(&out);
    let position = printed
        .split("--resume ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no position printed:\n{printed}"))
        .to_string();
    assert_ne!(position, "0:0", "{printed}");

    p.proxy.restart();
    p.proxy.wait_port(p.proxy_port);
    let second = workload(&p, 2_000, 12);
    let out = sync(&admin, &["--chunk-bytes", chunk(), "--resume", &position]);
    assert!(out.status.success(), "{}\n{}", text(&out), p.logs());
    join(second);
    p.wait_applied_within(catch_up());
    p.assert_converges(&ALL_DBS, Duration::from_secs(120));
}

#[test]
fn flush_empties_the_backup_first_and_keeps_the_replay_position() {
    let (mut p, admin) = pipeline("");
    let mut client = p.client();
    for _ in 0..5 {
        let _: i64 = redis::cmd("INCR")
            .arg("counter")
            .query(&mut client)
            .unwrap();
    }
    p.wait_applied();
    let mut backup = p.on_backup();
    let _: () = redis::cmd("SET")
        .arg("only:on:backup")
        .arg(1)
        .query(&mut backup)
        .unwrap();
    let _: () = redis::cmd("SELECT").arg(5).query(&mut backup).unwrap();
    let _: () = redis::cmd("SET")
        .arg("stale")
        .arg(1)
        .query(&mut backup)
        .unwrap();

    // Without --flush, keys only the backup has stay.
    let out = sync(&admin, &[]);
    assert!(out.status.success(), "{}", text(&out));
    p.wait_applied();
    let exists: i64 = redis::cmd("EXISTS")
        .arg("stale")
        .query(&mut backup)
        .unwrap();
    assert_eq!(exists, 1);

    let out = sync(&admin, &["--flush"]);
    assert!(out.status.success(), "{}", text(&out));
    p.wait_applied();
    let gone: i64 = redis::cmd("EXISTS")
        .arg("stale")
        .query(&mut backup)
        .unwrap();
    assert_eq!(gone, 0, "--flush empties every database of the backup");
    p.assert_converges(&[0, 5], Duration::from_secs(30));

    // The replay's offset survived the flush: a restarted replay goes on
    // from it instead of applying the INCRs again.
    p.replay.as_mut().expect("replay").restart();
    let _: i64 = redis::cmd("INCR")
        .arg("counter")
        .query(&mut client)
        .unwrap();
    p.wait_applied();
    assert_eq!(
        p.backup_get(0, "counter").as_deref(),
        Some("6"),
        "{}",
        p.logs()
    );
}

#[test]
fn the_admin_token_guards_what_changes_the_backup() {
    let token = "correct-horse-battery-staple";
    let (p, admin) = pipeline(&format!("admin_token = \"{token}\""));
    let refused = |client: &AdminClient| match client.start(&SyncStart::default()) {
        Err(AdminError::Refused { status, .. }) => status,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(refused(&AdminClient::new(&admin, None)), 401);
    assert_eq!(
        refused(&AdminClient::new(&admin, Some("wrong".into()))),
        401
    );
    // Reading the progress is open, like /metrics.
    let open = AdminClient::new(&admin, None).status().expect("GET /sync");
    assert_eq!(open.state, "idle");

    let out = sync(&admin, &["--admin-token", token]);
    assert!(out.status.success(), "{}", text(&out));
    let status = AdminClient::new(&admin, None).status().unwrap();
    assert_eq!(status.state, "done");
    assert!(!p.proxy.log().contains(token), "the token is never logged");
}

#[test]
fn a_sync_is_refused_while_one_runs_and_can_be_cancelled() {
    let (p, admin) = pipeline("");
    load(&p);
    let client = AdminClient::new(&admin, None);
    let slow = SyncStart {
        keys_per_second: Some(500),
        ..SyncStart::default()
    };
    client.start(&slow).expect("start");
    match client.start(&SyncStart::default()) {
        Err(AdminError::Refused { status: 409, .. }) => {}
        other => panic!("a second sync must be refused, got {other:?}"),
    }
    let out = sync(&admin, &["--cancel"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a cancelled sync is not done: {}",
        text(&out)
    );
    let status = client.status().unwrap();
    assert_eq!(status.state, "cancelled", "{}", p.logs());
    assert!(status.keys_done < status.keys_total);
}

/// `RENAME a b` while the sync runs: the backup runs it against its copy
/// of `a`, which the sync may not have made yet, and `b` did not exist when
/// `SCAN` passed. The sync copies the keys of such writes again after its
/// walk, so the backup still ends equal.
#[test]
fn multi_key_writes_during_the_sync_are_copied_again() {
    const PAIRS: usize = 2_000;
    const STEPS: usize = 10;
    let (p, admin) = pipeline("");
    let mut primary = p.on_primary();
    Dataset {
        small_keys: 20_000,
        big_keys: Vec::new(),
        big_hash_bytes: 0,
    }
    .load(&mut primary);
    let mut fill = redis::pipe();
    for i in 0..PAIRS {
        fill.cmd("SET").arg(format!("mv:src:{i}")).arg(i).ignore();
        fill.cmd("RPUSH")
            .arg(format!("mv:list:{i}"))
            .arg("a")
            .arg(i)
            .ignore();
    }
    let _: () = fill.query(&mut primary).unwrap();

    let client = AdminClient::new(&admin, None);
    client
        .start(&SyncStart {
            keys_per_second: Some(5_000),
            ..SyncStart::default()
        })
        .expect("start the sync");
    let mut through = p.client();
    let per_step = PAIRS / STEPS;
    for step in 0..STEPS {
        wait_until(Duration::from_secs(60), "the sync to progress", || {
            client
                .status()
                .is_ok_and(|s| s.keys_done * STEPS as u64 >= s.keys_total * step as u64)
        });
        let mut moves = redis::pipe();
        for i in step * per_step..(step + 1) * per_step {
            moves
                .cmd("RENAME")
                .arg(format!("mv:src:{i}"))
                .arg(format!("mv:dst:{i}"))
                .ignore();
            moves
                .cmd("LMOVE")
                .arg(format!("mv:list:{i}"))
                .arg(format!("mv:moved:{i}"))
                .arg("LEFT")
                .arg("RIGHT")
                .ignore();
        }
        let _: () = moves
            .query(&mut through)
            .expect("RENAME and LMOVE through the proxy");
    }
    wait_until(Duration::from_secs(120), "the sync to end", || {
        client.status().is_ok_and(|s| s.state != "running")
    });
    let status = client.status().unwrap();
    assert_eq!(status.state, "done", "{status:?}\n{}", p.logs());
    assert!(status.keys_recopied > 0, "{status:?}");
    eprintln!("{} keys copied again after the walk", status.keys_recopied);
    p.wait_applied();
    p.assert_converges(&[0, 3], Duration::from_secs(60));
}

/// `verify --repair` resyncs every persistent difference through the
/// proxy, whichever side it is on, and then finds none.
#[test]
fn verify_repair_resyncs_each_difference_through_the_proxy() {
    let (p, admin) = pipeline("");
    let mut client = p.client();
    for (k, v) in [("same", "1"), ("changed", "2"), ("lost", "3"), ("ttl", "4")] {
        let _: () = redis::cmd("SET").arg(k).arg(v).query(&mut client).unwrap();
    }
    let _: () = redis::cmd("HSET")
        .arg("retyped")
        .arg("f")
        .arg("v")
        .query(&mut client)
        .unwrap();
    let _: () = redis::cmd("EXPIRE")
        .arg("ttl")
        .arg(3600)
        .query(&mut client)
        .unwrap();
    p.wait_applied();
    let mut backup = p.on_backup();
    let _: () = redis::cmd("SET")
        .arg("changed")
        .arg("wrong")
        .query(&mut backup)
        .unwrap();
    let _: () = redis::cmd("DEL").arg("lost").query(&mut backup).unwrap();
    let _: () = redis::cmd("PERSIST").arg("ttl").query(&mut backup).unwrap();
    let _: () = redis::cmd("DEL").arg("retyped").query(&mut backup).unwrap();
    let _: () = redis::cmd("SET")
        .arg("retyped")
        .arg("s")
        .query(&mut backup)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("extra")
        .arg("x")
        .query(&mut backup)
        .unwrap();

    let found = verify(&p, &["--rounds", "2"]);
    assert_eq!(found.status.code(), Some(1), "{}", text(&found));
    let listed = text(&found);
    for key in ["changed", "lost", "ttl", "retyped", "extra"] {
        assert!(listed.contains(key), "{key} not reported:\n{listed}");
    }

    let repaired = verify(&p, &["--rounds", "2", "--repair", "--proxy", &admin]);
    assert!(
        repaired.status.success(),
        "{}\n{}",
        text(&repaired),
        p.logs()
    );
    p.assert_converges(&[0], Duration::from_secs(10));
    assert_eq!(verify(&p, &[]).status.code(), Some(0));
}

/// The proxy user of docs/operations.md, as `redis-server --user`
/// arguments with password `pw`.
fn documented_proxy_user() -> Vec<String> {
    let docs = include_str!("../../../docs/operations.md");
    let rule = docs
        .lines()
        .find_map(|l| l.strip_prefix("ACL SETUSER remoteback-proxy "))
        .expect("docs/operations.md gives the proxy's ACL user");
    let mut args = vec!["--user".to_owned(), "remoteback-proxy".to_owned()];
    args.extend(
        rule.split_whitespace()
            .map(|w| if w == ">CHANGE-ME" { ">pw" } else { w }.to_owned()),
    );
    args
}

/// The ACL the operations guide gives the proxy's user is all its own
/// connections need: the command table is read, and both kinds of sync
/// copy every type of key, with nothing refused.
#[test]
fn the_documented_acl_is_all_the_proxy_user_needs() {
    let admin = format!("127.0.0.1:{}", free_port());
    let p = Pipeline::start(Setup {
        proxy_extra: format!(
            "metrics = \"{admin}\"\nconnusername = \"remoteback-proxy\"\nconnpassword = \"pw\"\n"
        ),
        server_args: documented_proxy_user(),
        ..Setup::default()
    });
    let mut primary = p.on_primary();
    for client in 0..4 {
        mixed::run_client(&mut primary, client, 300, 5);
    }
    for method in ["restore", "commands"] {
        let out = sync(&admin, &["--method", method, "--flush"]);
        assert!(
            out.status.success() && text(&out).contains("sync done"),
            "sync --method {method} as the documented user:\n{}\n{}",
            text(&out),
            p.logs()
        );
        p.wait_applied();
        p.assert_converges(&ALL_DBS, Duration::from_secs(60));
    }
    let log = p.proxy.log();
    assert!(
        !log.contains("NOPERM") && !log.contains("cannot read the command table"),
        "nothing was refused to the proxy's user:\n{log}"
    );
}

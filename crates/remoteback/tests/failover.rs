//! The unplanned failover, rehearsed: clients write through the proxy with
//! `ack = "kafka"`, the primary's region goes (proxy and primary killed),
//! `remoteback promote` has the replay apply everything Kafka holds, and
//! its report's recovery point matches what the backup holds.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::pipeline::{connect, Pipeline, Setup};
use common::{remoteback_bin, wait_until};
use remoteback::admin::client::AdminClient;
use remoteback_proxy::failover::WritesDuring;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The time after `label` in the report (`... captured at 2026-...Z`).
fn time_after(report: &str, label: &str) -> u64 {
    let at = report
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in:\n{report}"));
    let text: String = report[at + label.len()..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ';')
        .collect();
    let time = humantime::parse_rfc3339(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    time.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A client through the proxy in the middle of a transaction: `MULTI`,
/// then `SET queued:before 1` queued; its `EXEC` is the test's to send.
fn queued_transaction(port: u16) -> redis::Connection {
    let mut transaction = connect(port);
    let _: () = redis::cmd("MULTI").query(&mut transaction).unwrap();
    let queued: String = redis::cmd("SET")
        .arg("queued:before")
        .arg(1)
        .query(&mut transaction)
        .unwrap();
    assert_eq!(queued, "QUEUED");
    transaction
}

/// What a writer had acknowledged: its last value and when it was sent.
struct Acked {
    value: AtomicU64,
    sent_ms: AtomicU64,
}

/// Three clients writing through the proxy, each its value `n` = 1, 2, ...
/// with `write`, until a write fails (or times out after `timeout`).
struct Writers {
    acked: Vec<Arc<Acked>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    /// Starts them and waits until each had 300 writes acknowledged.
    fn start(
        port: u16,
        timeout: Duration,
        write: fn(&mut redis::Connection, usize, u64) -> redis::RedisResult<()>,
    ) -> Writers {
        let acked: Vec<Arc<Acked>> = (0..3)
            .map(|_| {
                Arc::new(Acked {
                    value: AtomicU64::new(0),
                    sent_ms: AtomicU64::new(0),
                })
            })
            .collect();
        let threads = acked
            .iter()
            .enumerate()
            .map(|(w, acked)| {
                let acked = acked.clone();
                std::thread::spawn(move || {
                    let mut con = connect(port);
                    let _ = con.set_read_timeout(Some(timeout));
                    for n in 1.. {
                        let sent = now_ms();
                        if write(&mut con, w, n).is_err() {
                            return;
                        }
                        acked.sent_ms.store(sent, Ordering::SeqCst);
                        acked.value.store(n, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        wait_until(Duration::from_secs(30), "each writer acknowledged", || {
            acked.iter().all(|a| a.value.load(Ordering::SeqCst) >= 300)
        });
        Writers { acked, threads }
    }

    /// Waits for every writer to end; what each had acknowledged.
    fn join(self) -> Vec<Arc<Acked>> {
        for t in self.threads {
            t.join().expect("writer");
        }
        self.acked
    }
}

#[test]
fn an_unplanned_failover_reports_the_recovery_point_the_backup_holds() {
    let (mut p, _, replay_metrics) = Pipeline::start_with_metrics(Setup {
        partitions: 2,
        proxy_extra: "ack = \"kafka\"\nheartbeat_ms = 100\n".to_owned(),
        ..Setup::default()
    });
    // The idle proxy's heartbeats reach both partitions before the load.
    let replay_status = common::status::Status(replay_metrics);
    wait_until(
        Duration::from_secs(20),
        "heartbeats on both partitions",
        || replay_status.value("remoteback_replay_heartbeats_total") >= 4,
    );
    let writers = Writers::start(p.proxy_port, Duration::from_secs(5), |con, w, n| {
        redis::cmd("SET")
            .arg(format!("writer:{w}"))
            .arg(n)
            .query(con)
    });

    // The region goes: the proxy and the primary at once.
    p.proxy.kill();
    p.primary.stop();
    let gone_ms = now_ms();
    let writers = writers.join();

    let out = Command::new(remoteback_bin())
        .args([
            "promote",
            "--replay",
            &format!("127.0.0.1:{replay_metrics}"),
        ])
        .output()
        .expect("run remoteback promote");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promote:\n{report}\n{}", p.logs());
    eprintln!("{report}");
    assert!(report.contains("promoted: every partition applied up to the end Kafka held"));

    // Nothing a client saw succeed is missing, and the newest write on the
    // backup is the one the report names.
    let mut backup = p.on_backup();
    let mut last_sent = 0;
    for (w, acked) in writers.iter().enumerate() {
        let on_backup: u64 = redis::cmd("GET")
            .arg(format!("writer:{w}"))
            .query(&mut backup)
            .unwrap();
        let value = acked.value.load(Ordering::SeqCst);
        assert!(
            on_backup >= value,
            "writer {w}: the backup holds {on_backup}, the client saw {value} succeed"
        );
        last_sent = last_sent.max(acked.sent_ms.load(Ordering::SeqCst));
    }
    let last_write = time_after(&report, "the last write applied was captured at ");
    assert!(
        (last_sent..=gone_ms).contains(&last_write),
        "the last write applied ({last_write}) was captured after the last acknowledged one was \
         sent ({last_sent}) and before the region went ({gone_ms})"
    );
    let everywhere = time_after(&report, "every partition holds the writes captured up to ");
    assert!(everywhere <= last_write.max(gone_ms), "{report}");
    // Past the proxy's last sign of life on a partition, its writes are
    // counted: the writers' writes followed the heartbeats of the idle start.
    let after_heartbeat: u64 = report
        .lines()
        .filter_map(|l| {
            let (before, _) = l.split_once(" records with writes applied after it")?;
            before.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum();
    assert!(after_heartbeat > 0, "{report}");

    // The replay's histograms saw every batch it applied.
    let batches = replay_status.value("remoteback_replay_apply_seconds_count");
    assert!(batches > 0);
    assert_eq!(
        replay_status.value("remoteback_replay_batch_records_count"),
        batches
    );
    assert_eq!(
        replay_status.value("remoteback_replay_delay_seconds_count"),
        batches
    );
    assert_eq!(
        replay_status.value("remoteback_replay_records_behind"),
        0,
        "every partition at its end"
    );

    // The replay applies nothing more but keeps serving its status.
    assert!(
        p.replay.as_mut().unwrap().try_wait().is_none(),
        "the replay still runs"
    );
    let again = Command::new(remoteback_bin())
        .args([
            "promote",
            "--replay",
            &format!("127.0.0.1:{replay_metrics}"),
        ])
        .output()
        .expect("run remoteback promote");
    assert!(again.status.success(), "asking twice gives the same answer");
}

/// The planned failover, rehearsed: writes wait at the proxy, everything
/// it forwarded reaches the backup, the report says nothing was lost, and
/// the reverse pipeline it prints replicates the old backup's writes back
/// into the old primary.
#[test]
fn a_planned_failover_loses_nothing_and_the_reverse_pipeline_replicates_back() {
    let (mut p, proxy_metrics, replay_metrics) = Pipeline::start_with_metrics(Setup {
        partitions: 2,
        ..Setup::default()
    });
    // A write held by the failover times out after 2 s.
    let writers = Writers::start(p.proxy_port, Duration::from_secs(2), |con, w, n| {
        redis::pipe()
            .cmd("SET")
            .arg(format!("writer:{w}"))
            .arg(n)
            .ignore()
            .cmd("HSET")
            .arg(format!("history:{w}"))
            .arg(n % 50)
            .arg(n)
            .ignore()
            .query(con)
    });

    // A transaction queued before the failover, its EXEC sent after.
    let mut transaction = queued_transaction(p.proxy_port);

    let dir = common::temp_dir("reverse");
    let out = Command::new(remoteback_bin())
        .args([
            "failover",
            "--proxy",
            &format!("127.0.0.1:{proxy_metrics}"),
            "--replay",
            &format!("127.0.0.1:{replay_metrics}"),
            "--write",
        ])
        .arg(&dir)
        .output()
        .expect("run remoteback failover");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{report}");
    assert!(out.status.success(), "failover:\n{report}\n{}", p.logs());
    assert!(
        report.contains(
            "nothing lost: every write the primary took through the proxy is on the backup"
        ),
        "{report}"
    );
    writers.join();
    // The EXEC waits at the proxy like every write: it never runs.
    let _ = transaction.set_read_timeout(Some(Duration::from_secs(1)));
    let exec: redis::RedisResult<redis::Value> = redis::cmd("EXEC").query(&mut transaction);
    assert!(exec.is_err(), "EXEC answered during the failover: {exec:?}");
    let on_primary: Option<String> = redis::cmd("GET")
        .arg("queued:before")
        .query(&mut p.on_primary())
        .unwrap();
    assert_eq!(
        on_primary, None,
        "the transaction did not reach the primary"
    );
    // Writes still wait at the proxy: the primary is as the backup.
    let diffs = common::compare::differences(p.primary.port(), p.backup.port(), &[0]);
    assert!(
        diffs.is_empty(),
        "{} keys differ after the failover",
        diffs.len()
    );

    // The old region's proxy and replay go; the reverse pipeline starts
    // from the files the failover wrote.
    p.proxy.kill();
    if let Some(mut replay) = p.replay.take() {
        replay.kill();
    }
    p.broker.create_topic("remoteback-reverse", 1);
    let (bind, metrics) = (common::free_port(), common::free_port());
    let proxy_file = std::fs::read_to_string(dir.join("proxy-reverse.toml")).unwrap();
    let reverse_proxy = common::Service::proxy(&format!(
        "bindport = {bind}\nmetrics = \"127.0.0.1:{metrics}\"\n{proxy_file}"
    ));
    reverse_proxy.wait_port(metrics);
    let replay_file = std::fs::read_to_string(dir.join("replay-reverse.toml")).unwrap();
    let _reverse_replay = common::Service::replay(&replay_file);

    let mut client = connect(bind);
    let _: () = redis::cmd("SET")
        .arg("written:after:failover")
        .arg("yes")
        .query(&mut client)
        .unwrap();
    let mut old_primary = p.on_primary();
    wait_until(
        Duration::from_secs(30),
        "the old primary to get the new primary's write",
        || {
            redis::cmd("GET")
                .arg("written:after:failover")
                .query::<Option<String>>(&mut old_primary)
                .unwrap()
                .as_deref()
                == Some("yes")
        },
    );
    let synced = Command::new(remoteback_bin())
        .args([
            "sync",
            "--proxy",
            &format!("127.0.0.1:{metrics}"),
            "--flush",
        ])
        .output()
        .expect("run remoteback sync");
    assert!(
        synced.status.success(),
        "{}",
        String::from_utf8_lossy(&synced.stderr)
    );
    wait_until(
        Duration::from_secs(30),
        "the old primary to equal the new one",
        || common::compare::differences(p.backup.port(), p.primary.port(), &[0]).is_empty(),
    );
}

/// A failover started with `--clients readonly`: writes are refused with
/// `-READONLY` as by a Redis replica (in a transaction, at `EXEC`), reads
/// go on, nothing refused reaches the primary, and writes go again when
/// the failover is cancelled.
#[test]
fn a_readonly_failover_refuses_writes_and_serves_reads() {
    let (p, proxy_metrics, _) = Pipeline::start_with_metrics(Setup::default());
    let mut client = connect(p.proxy_port);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("before")
        .query(&mut client)
        .unwrap();
    let mut transaction = queued_transaction(p.proxy_port);

    let admin = AdminClient::new(&format!("127.0.0.1:{proxy_metrics}"), None);
    let status = admin.failover(WritesDuring::Readonly).unwrap();
    assert!(status.paused && status.refusing, "{status:?}");

    // The error code and text a client sees.
    let refused = |r: redis::RedisResult<redis::Value>| {
        let e = r.expect_err("a write answered during a readonly failover");
        format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
    };
    let e = refused(redis::cmd("SET").arg("k").arg("during").query(&mut client));
    assert_eq!(e, "READONLY remoteback: failover in progress");
    // Replies stay in order around a refusal.
    let replies: Vec<redis::RedisResult<Option<String>>> = redis::pipe()
        .cmd("GET")
        .arg("k")
        .cmd("INCR")
        .arg("counter")
        .cmd("GET")
        .arg("k")
        .ignore_errors()
        .query(&mut client)
        .unwrap();
    assert_eq!(replies.len(), 3);
    assert_eq!(replies[0].as_ref().unwrap().as_deref(), Some("before"));
    let e = replies[1].as_ref().expect_err("INCR refused");
    assert_eq!(e.code(), Some("READONLY"), "{e}");
    assert_eq!(replies[2].as_ref().unwrap().as_deref(), Some("before"));
    // The transaction queued before: its EXEC is refused.
    let e = refused(redis::cmd("EXEC").query(&mut transaction));
    assert_eq!(
        e,
        "EXECABORT Transaction discarded because of: READONLY remoteback: failover in progress"
    );
    // One begun now: the write in it is refused, and so is the EXEC.
    let _: () = redis::cmd("MULTI").query(&mut transaction).unwrap();
    let e = refused(
        redis::cmd("SET")
            .arg("queued:during")
            .arg(1)
            .query(&mut transaction),
    );
    assert_eq!(e, "READONLY remoteback: failover in progress");
    let e = refused(redis::cmd("EXEC").query(&mut transaction));
    assert!(e.starts_with("EXECABORT "), "{e}");
    // A transaction of reads still runs.
    let (read,): (Option<String>,) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg("k")
        .query(&mut transaction)
        .unwrap();
    assert_eq!(read.as_deref(), Some("before"));

    let mut primary = p.on_primary();
    let on_primary: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = redis::pipe()
        .cmd("GET")
        .arg("k")
        .cmd("GET")
        .arg("counter")
        .cmd("GET")
        .arg("queued:before")
        .cmd("GET")
        .arg("queued:during")
        .query(&mut primary)
        .unwrap();
    assert_eq!(
        on_primary,
        (Some("before".into()), None, None, None),
        "no refused write reached the primary"
    );
    wait_until(Duration::from_secs(10), "the proxy to drain", || {
        admin.failover_status().unwrap().drained
    });

    admin.cancel_failover().unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("after")
        .query(&mut client)
        .unwrap();
    p.wait_backup_value(0, "k", "after");
    // Refused commands were sent by clients all the same.
    let status = common::status::Status(proxy_metrics);
    let sets = status.sample("remoteback_proxy_commands_total{command=\"set\"}");
    assert_eq!(sets, Some(5), "SET k, queued:before, k, queued:during, k");
}

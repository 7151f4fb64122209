//! The appliers against a real `redis-server` (no Kafka): refusals with
//! `on_apply_error` continue and stop, a backup that refuses writes for its
//! own reasons, goes away, comes back empty, and a shutdown while waiting.
//!
//! Skipped (with a note) when `redis-server` is not installed; the program
//! can be chosen with `REMOTEBACK_TEST_REDIS_SERVER`, as in the binary's
//! integration tests.

use std::net::TcpListener;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use remoteback_protocol::frame::Frame;
use remoteback_protocol::record::Meta;
use remoteback_protocol::{Command, Format};
use tokio::sync::watch;

use crate::applier::{Applier, Policy};
use crate::backup::Backup;
use crate::error::ApplyError;
use crate::link::BackupLink;
use crate::receiver::Received;
use crate::row::RowApplier;
use crate::settings::{BackupSettings, OnApplyError};
use crate::stats::Stats;

const TOPIC: &str = "t";
const PARTITION: i32 = 0;

/// A throw-away redis-server without persistence.
struct Server {
    port: u16,
    child: Option<Child>,
}

impl Server {
    /// A redis-server on a free port; panics when none can be started
    /// (scripts/setup.sh installs it).
    fn start() -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Server { port, child: None };
        assert!(
            server.launch(),
            "cannot start redis-server on port {port} (run scripts/setup.sh to install it)"
        );
        server
    }

    fn launch(&mut self) -> bool {
        let program = std::env::var("REMOTEBACK_TEST_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".to_string());
        let child = Process::new(program)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn settings(&self) -> BackupSettings {
        BackupSettings {
            host: "127.0.0.1".into(),
            port: self.port,
            tls: None,
            username: None,
            password: None,
        }
    }

    async fn call(&self, parts: &[&str]) -> Frame {
        let mut b = Backup::connect(&self.settings()).await.expect("connect");
        b.call(&Command::from_parts(parts.iter().copied()))
            .await
            .expect("call")
    }

    async fn get(&self, key: &str) -> Option<String> {
        match self.call(&["GET", key]).await {
            Frame::Bulk(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Frame::Null => None,
            other => panic!("GET {key}: {other:?}"),
        }
    }

    async fn lrange(&self, key: &str) -> Vec<String> {
        match self.call(&["LRANGE", key, "0", "-1"]).await {
            Frame::Array(items) => items
                .iter()
                .map(|i| String::from_utf8_lossy(i.as_bytes().expect("bulk")).into_owned())
                .collect(),
            other => panic!("LRANGE {key}: {other:?}"),
        }
    }

    async fn stored(&self) -> Option<i64> {
        let field = crate::state::offset_field(TOPIC, PARTITION);
        match self.call(&["HGET", crate::state::STATE_KEY, &field]).await {
            Frame::Bulk(b) => Some(String::from_utf8_lossy(&b).parse().expect("offset")),
            Frame::Null => None,
            other => panic!("HGET {field}: {other:?}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PROTOCOL record in database 0 with `commands`.
fn record(offset: i64, commands: &[&[&str]]) -> Received {
    let mut payload = BytesMut::new();
    for c in commands {
        Command::from_parts(c.iter().copied()).write_resp(&mut payload);
    }
    Received {
        offset,
        meta: Meta {
            run: None,
            barrier: None,
            format: Format::Protocol,
            db: Some(0),
            source: None,
            seq: None,
            time_ms: None,
            conn: None,
            close: false,
            heartbeat: false,
            sync: None,
        },
        payload: payload.freeze(),
    }
}

fn applier(
    server: &Server,
    on_error: OnApplyError,
    stats: &Stats,
) -> (Applier, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    let a = Applier::new(
        server.settings(),
        TOPIC,
        PARTITION,
        stats.clone(),
        Policy {
            on_error,
            rewind_when_emptied: true,
        },
        rx,
        crate::barrier::Barriers::default(),
    );
    (a, tx)
}

/// Records 0..=3; record 2 pushes onto `s`, which the backup holds as a
/// string (a divergence), so the backup refuses it with WRONGTYPE.
fn batch_with_a_refusal() -> Vec<Received> {
    vec![
        record(0, &[&["INCR", "n"]]),
        record(1, &[&["APPEND", "a", "x"]]),
        record(2, &[&["LPUSH", "s", "v"]]),
        record(3, &[&["INCR", "n"]]),
    ]
}

#[tokio::test]
async fn continue_counts_a_refused_command_and_applies_the_rest() {
    let server = Server::start();
    server.call(&["SET", "s", "diverged"]).await;
    let stats = Stats::default();
    let (mut a, _stop) = applier(&server, OnApplyError::Continue, &stats);
    assert_eq!(a.stored_offset().await.unwrap(), None);
    a.apply(batch_with_a_refusal()).await.unwrap();
    assert_eq!(server.get("n").await.as_deref(), Some("2"));
    assert_eq!(server.get("a").await.as_deref(), Some("x"));
    assert_eq!(server.stored().await, Some(4));
    assert_eq!((stats.applied(), stats.refused()), (3, 1));
}

#[tokio::test]
async fn stop_stores_the_offset_of_the_refused_record_and_applies_nothing_after_it() {
    let server = Server::start();
    server.call(&["SET", "s", "diverged"]).await;
    let stats = Stats::default();
    let (mut a, _stop) = applier(&server, OnApplyError::Stop, &stats);
    a.stored_offset().await.unwrap();
    let e = a.apply(batch_with_a_refusal()).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ApplyError::Refused { offset: 2, .. }), "{text}");
    assert!(text.contains("t[0]@2"), "{text}");
    assert!(text.contains("WRONGTYPE"), "{text}");
    assert!(text.contains("a restart resumes at it"), "{text}");
    assert_eq!(
        server.get("n").await.as_deref(),
        Some("1"),
        "record 3 not applied"
    );
    assert_eq!(server.get("a").await.as_deref(), Some("x"));
    assert_eq!(server.stored().await, Some(2));
    assert_eq!((stats.applied(), stats.refused()), (2, 1));

    // Fixed: a new applier resumes at record 2 and applies it once.
    server.call(&["DEL", "s"]).await;
    let (mut a, _stop) = applier(&server, OnApplyError::Stop, &stats);
    assert_eq!(a.stored_offset().await.unwrap(), Some(2));
    a.apply(batch_with_a_refusal().split_off(2)).await.unwrap();
    assert_eq!(server.lrange("s").await, ["v"]);
    assert_eq!(server.get("n").await.as_deref(), Some("2"));
    assert_eq!(server.stored().await, Some(4));
}

#[tokio::test]
async fn stop_goes_past_a_record_that_partly_took_effect() {
    let server = Server::start();
    server.call(&["SET", "s", "diverged"]).await;
    let stats = Stats::default();
    let (mut a, _stop) = applier(&server, OnApplyError::Stop, &stats);
    a.stored_offset().await.unwrap();
    let batch = vec![record(
        7,
        &[&["MULTI"], &["INCR", "n"], &["LPUSH", "s", "v"], &["EXEC"]],
    )];
    let e = a.apply(batch).await.unwrap_err().to_string();
    assert!(e.contains("1 of its 2 commands took effect"), "{e}");
    assert_eq!(server.get("n").await.as_deref(), Some("1"));
    assert_eq!(server.stored().await, Some(8), "not applied twice");
}

#[tokio::test]
async fn a_record_aborted_at_queue_time_is_skipped_or_stopped_at() {
    let server = Server::start();
    let unknown = || {
        vec![
            record(0, &[&["INCR", "n"]]),
            record(1, &[&["NOSUCHCOMMAND", "x"]]),
            record(2, &[&["INCR", "n"]]),
        ]
    };
    let stats = Stats::default();
    let (mut a, _stop) = applier(&server, OnApplyError::Continue, &stats);
    a.stored_offset().await.unwrap();
    a.apply(unknown()).await.unwrap();
    assert_eq!(server.get("n").await.as_deref(), Some("2"));
    assert_eq!(server.stored().await, Some(3));
    assert_eq!(stats.refused(), 1);

    server.call(&["FLUSHALL"]).await;
    let (mut a, _stop) = applier(&server, OnApplyError::Stop, &stats);
    a.stored_offset().await.unwrap();
    let e = a.apply(unknown()).await.unwrap_err().to_string();
    assert!(e.contains("t[0]@1"), "{e}");
    assert!(e.contains("unknown command"), "{e}");
    assert_eq!(server.get("n").await.as_deref(), Some("1"));
    assert_eq!(server.stored().await, Some(1));
}

#[tokio::test]
async fn a_backup_out_of_memory_is_waited_for_not_skipped() {
    let server = Server::start();
    let stats = Stats::default();
    let (mut a, _stop) = applier(&server, OnApplyError::Continue, &stats);
    a.stored_offset().await.unwrap();
    server.call(&["CONFIG", "SET", "maxmemory", "1"]).await;
    let settings = server.settings();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut b = Backup::connect(&settings).await.unwrap();
        b.call(&Command::from_parts(["CONFIG", "SET", "maxmemory", "0"]))
            .await
            .unwrap();
    });
    a.apply(vec![record(0, &[&["RPUSH", "l", "a"]])])
        .await
        .unwrap();
    release.await.unwrap();
    assert_eq!(server.lrange("l").await, ["a"]);
    assert_eq!(server.stored().await, Some(1));
    assert_eq!(stats.refused(), 0, "OOM is not a refusal of the record");
    assert!(stats.reconnects() >= 2, "{}", stats.reconnects());
}

#[tokio::test]
async fn a_backup_that_is_down_is_waited_for_and_a_restart_without_data_rewinds() {
    let mut server = Server::start();
    server.kill();
    let stats = Stats::default();
    let (mut a, _stop) = applier(&server, OnApplyError::Continue, &stats);
    let port = server.port;
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        server.launch();
        server
    });
    // Waits until the backup is there.
    assert_eq!(a.stored_offset().await.unwrap(), None);
    let mut server = restart.join().unwrap();
    assert_eq!(server.port, port);
    assert!(stats.reconnects() >= 2);
    a.apply(vec![record(0, &[&["INCR", "n"]])]).await.unwrap();
    assert_eq!(server.stored().await, Some(1));

    // The backup restarts empty (no persistence): with start = earliest the
    // partition must be read again from its beginning.
    server.kill();
    assert!(server.launch());
    let e = a
        .apply(vec![record(1, &[&["INCR", "n"]])])
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ApplyError::Rewind {
                from: 1,
                to: None,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_shutdown_while_the_backup_is_down_stops_waiting() {
    let mut server = Server::start();
    let stats = Stats::default();
    let (mut a, stop) = applier(&server, OnApplyError::Continue, &stats);
    a.stored_offset().await.unwrap();
    server.kill();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = stop.send(true);
    });
    let started = Instant::now();
    let e = a
        .apply(vec![record(0, &[&["INCR", "n"]])])
        .await
        .unwrap_err();
    assert!(matches!(e, ApplyError::Stopped), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A connection given up on (a reply timeout) may still be open on the
/// backup with a transaction queued: the next connection kills it before it
/// reads the stored offset.
#[tokio::test]
async fn a_reconnect_kills_the_connection_it_replaces() {
    let server = Server::start();
    let (_tx, stop) = watch::channel(false);
    let mut link = BackupLink::new(
        server.settings(),
        TOPIC,
        PARTITION,
        Stats::default(),
        true,
        stop,
    );
    link.connect().await.unwrap();
    let mut old = link.take_connection().expect("connected");
    assert!(old.call(&Command::from_parts(["PING"])).await.is_ok());
    link.connect().await.unwrap();
    let after = old.call(&Command::from_parts(["PING"])).await;
    assert!(after.is_err(), "the old connection is gone: {after:?}");
    assert!(link.backup_answers().await, "the new one works");
}

/// A backup user that may not `CLIENT KILL`: the reconnect goes on without
/// the fence (a warning says what that gives up).
#[tokio::test]
async fn a_backup_refusing_client_kill_still_reconnects() {
    let server = Server::start();
    let created = server
        .call(&[
            "ACL",
            "SETUSER",
            "replay",
            "on",
            ">secret",
            "~*",
            "&*",
            "+@all",
            "-client|kill",
        ])
        .await;
    assert!(!created.is_error(), "{created:?}");
    let mut settings = server.settings();
    settings.username = Some("replay".into());
    settings.password = Some("secret".into());
    let (_tx, stop) = watch::channel(false);
    let mut link = BackupLink::new(settings, TOPIC, PARTITION, Stats::default(), true, stop);
    link.connect().await.unwrap();
    let _old = link.take_connection().expect("connected");
    link.connect()
        .await
        .expect("a refused CLIENT KILL is no failure");
    assert!(link.backup_answers().await);
}

#[tokio::test]
async fn row_records_are_sent_again_after_the_backup_went_away() {
    let mut server = Server::start();
    let stats = Stats::default();
    let (_tx, stop) = watch::channel(false);
    let link = BackupLink::new(
        server.settings(),
        TOPIC,
        PARTITION,
        stats.clone(),
        true,
        stop,
    );
    let mut row = RowApplier::new(link, stats.clone());
    row.stored_offset().await.unwrap();
    let raw = |offset: i64, bytes: &'static [u8]| Received {
        offset,
        meta: Meta {
            run: None,
            barrier: None,
            format: Format::Row,
            db: None,
            source: Some("p:1".into()),
            seq: None,
            time_ms: None,
            conn: Some(1),
            close: false,
            heartbeat: false,
            sync: None,
        },
        payload: Bytes::from_static(bytes),
    };
    row.apply(vec![raw(0, b"RPUSH l a\r\n")]).await.unwrap();
    assert_eq!(server.lrange("l").await, ["a"]);
    // The backup restarts (empty): the next batch reaches it anyway.
    server.kill();
    let port = server.port;
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        server.launch();
        server
    });
    row.apply(vec![raw(1, b"RPUSH l b\r\n")]).await.unwrap();
    let server = restart.join().unwrap();
    assert_eq!(server.port, port);
    assert_eq!(server.lrange("l").await, ["b"]);
    assert_eq!(server.stored().await, Some(2));
}

#[tokio::test]
async fn a_shutdown_lets_the_batch_in_hand_finish_when_the_backup_answers() {
    let server = Server::start();
    let stats = Stats::default();
    let (mut a, stop) = applier(&server, OnApplyError::Continue, &stats);
    a.stored_offset().await.unwrap();
    stop.send(true).unwrap();
    a.apply(batch_with_a_refusal()[..2].to_vec()).await.unwrap();
    assert_eq!(server.stored().await, Some(2));
    assert_eq!(server.get("n").await.as_deref(), Some("1"));
}

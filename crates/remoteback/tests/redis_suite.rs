//! Cases found by running Redis 7.0.15's own test suite through the proxy
//! (`scripts/redis-suite.sh`, docs/semantics.md): each is the smallest
//! reproduction of a test that passed against redis-server and failed, or
//! left the backup different from the primary, through the pipeline.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::pipeline::{Pipeline, Setup};

/// Sends `request` on a new connection to `port` and reads until the reply
/// ends with `end`.
fn raw_exchange(port: u16, request: &[u8], end: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while !out.ends_with(end) {
        match s.read(&mut buf) {
            Ok(0) => panic!("closed after {} bytes", out.len()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read after {} bytes: {e}", out.len()),
        }
    }
    out
}

/// scripting.tcl, "Script return recursive object": a script returning a
/// table that contains itself is answered with thousands of nested
/// one-element arrays, then an error at Lua's stack limit. The replay reads
/// the backup's answer to the replicated `EVAL` too; it used to refuse it
/// ("nesting too deep") and stop, so nothing after it reached the backup.
#[test]
fn a_script_answered_thousands_of_levels_deep_does_not_stop_the_replay() {
    let p = Pipeline::start(Setup::default());
    let script =
        "redis.call('set', 'before', '1'); local a = {}; local b = {a}; a[1] = b; return a";
    let request = format!(
        "*3\r\n$4\r\nEVAL\r\n${}\r\n{script}\r\n$1\r\n0\r\n",
        script.len()
    );
    let reply = raw_exchange(
        p.proxy_port,
        request.as_bytes(),
        b"-ERR reached lua stack limit\r\n",
    );
    let levels = reply.windows(4).filter(|w| w == b"*1\r\n").count();
    assert!(levels > 1000, "only {levels} levels deep");
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("2")
        .query(&mut p.client())
        .expect("SET");
    p.wait_applied();
    assert_eq!(p.backup_get(0, "before").as_deref(), Some("1"));
    assert_eq!(p.backup_get(0, "after").as_deref(), Some("2"));
    p.assert_converges(&[0], Duration::from_secs(10));
}

/// A script that writes and then fails keeps its writes on the primary
/// (Redis does not roll scripts back), so the backup must run it too; the
/// proxy used to drop every script answered with an error. A script
/// refused before it ran (`NOSCRIPT`) still replicates nothing.
#[test]
fn scripts_that_fail_after_writing_reach_the_backup() {
    let p = Pipeline::start(Setup::default());
    let mut c = p.client();
    let failed = |c: &mut redis::Connection, cmd: &mut redis::Cmd| {
        let err = cmd.query::<redis::Value>(c).expect_err("the script fails");
        err.to_string()
    };
    let raised = failed(
        &mut c,
        redis::cmd("EVAL")
            .arg("redis.call('set', KEYS[1], 'a'); error('boom')")
            .arg(1)
            .arg("raised"),
    );
    assert!(raised.contains("boom"), "{raised}");
    let returned = failed(
        &mut c,
        redis::cmd("EVAL")
            .arg("redis.call('set', KEYS[1], 'b'); return redis.error_reply('no')")
            .arg(1)
            .arg("returned"),
    );
    assert!(returned.contains("no"), "{returned}");
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=lib\nredis.register_function('f', function(keys) redis.call('set', keys[1], 'c'); redis.call('incr', keys[1]) end)")
        .query(&mut c)
        .expect("FUNCTION LOAD");
    let wrongtype = failed(&mut c, redis::cmd("FCALL").arg("f").arg(1).arg("function"));
    assert!(wrongtype.contains("not an integer"), "{wrongtype}");
    let noscript = failed(
        &mut c,
        redis::cmd("EVALSHA")
            .arg("0000000000000000000000000000000000000000")
            .arg(0),
    );
    assert!(noscript.contains("No matching script"), "{noscript}");
    p.wait_applied();
    // The replay told the scripts that raised (the EVAL and the FCALL)
    // from refusals (it tells once the backup answered the batch, which
    // may come just after the backup shows the data).
    let raised = |log: &str| {
        log.matches("raised on the backup, as on the primary")
            .count()
    };
    common::wait_until(
        Duration::from_secs(10),
        "two scripts told as raised",
        || raised(&p.logs()) >= 2,
    );
    let log = p.logs();
    assert_eq!(raised(&log), 2, "{log}");
    assert_eq!(p.backup_get(0, "raised").as_deref(), Some("a"));
    assert_eq!(p.backup_get(0, "returned").as_deref(), Some("b"));
    assert_eq!(p.backup_get(0, "function").as_deref(), Some("c"));
    p.assert_converges(&[0], Duration::from_secs(10));
}

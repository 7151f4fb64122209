//! TLS to the primary and to the backup, as managed Redis serves it: real
//! `redis-server`s on TLS ports with certificates the tests make, a proxy
//! and a replay that reach them only through TLS with client certificates,
//! and what an operator sees when a certificate is not trusted.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

use common::pipeline::{Pipeline, Setup};
use common::tls::{TestCerts, SERVER_NAME};
use common::{free_port, remoteback_bin, wait_until, Broker, RedisServer, Service};

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Primary and backup serve TLS only to remoteback: the proxy's sessions,
/// its command table and sync connections, and the replay's backup
/// connection all check the server's certificate under the name they are
/// given (not the address they connect to) and present the client
/// certificate, and what clients write and what the sync copies arrives
/// whole on the backup.
#[test]
fn writes_and_a_sync_travel_over_tls_with_client_certificates() {
    let admin = format!("127.0.0.1:{}", free_port());
    let p = Pipeline::start(Setup {
        tls: true,
        proxy_extra: format!("metrics = \"{admin}\"\n"),
        ..Setup::default()
    });
    let log = p.proxy.log();
    assert!(
        log.contains(&format!(
            "for primary 127.0.0.1:{} (TLS)",
            p.primary.tls_port().unwrap()
        )),
        "the start line says the primary is reached through TLS:\n{log}"
    );

    // Keys the primary had before: only the sync, on the `redis` crate's
    // TLS connections, can bring them over.
    let mut primary = p.on_primary();
    for i in 0..300u32 {
        let key = [b"old:".as_slice(), &i.to_be_bytes(), b"\x00\xff"].concat();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(vec![i as u8; 1 + (i as usize % 700)])
            .query(&mut primary)
            .unwrap();
    }
    let _: () = redis::cmd("HSET")
        .arg("old:hash")
        .arg("f")
        .arg("v")
        .query(&mut primary)
        .unwrap();
    let out = Command::new(remoteback_bin())
        .args(["sync", "--proxy", &admin])
        .output()
        .expect("run remoteback sync");
    assert!(
        out.status.success() && text(&out).contains("sync done"),
        "sync over TLS:\n{}\n{}",
        text(&out),
        p.logs()
    );

    // Writes through the proxy: large and binary values (several TLS
    // records each), a transaction, another database.
    let mut client = p.client();
    for i in 0..200u32 {
        let value: Vec<u8> = (0..(i * 997 % 70_000)).map(|b| (b % 251) as u8).collect();
        let _: () = redis::cmd("SET")
            .arg(format!("new:{i}"))
            .arg(value)
            .query(&mut client)
            .unwrap();
    }
    let (): () = redis::pipe()
        .atomic()
        .cmd("INCRBY")
        .arg("counter")
        .arg(5)
        .ignore()
        .cmd("RPUSH")
        .arg("list")
        .arg(b"\r\n\x00")
        .ignore()
        .query(&mut client)
        .unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut client).unwrap();
    let _: () = redis::cmd("SET")
        .arg("in-db-3")
        .arg("x")
        .query(&mut client)
        .unwrap();
    p.wait_applied();
    p.assert_converges(&[0, 3], Duration::from_secs(30));

    // The tools take rediss:// URLs, trusting the authority SSL_CERT_FILE
    // names as every rustls client on the system does.
    let certs = p.certs.as_ref().unwrap();
    let verified = Command::new(remoteback_bin())
        .args([
            "verify",
            "--source",
            &format!("rediss://{SERVER_NAME}:{}", p.primary.tls_port().unwrap()),
            "--target",
            &p.backup.url(),
        ])
        .env("SSL_CERT_FILE", certs.ca())
        .output()
        .expect("run remoteback verify");
    assert!(
        verified.status.success(),
        "verify over TLS:\n{}",
        text(&verified)
    );
}

/// A proxy that does not trust the primary's certificate serves nothing
/// from it: each client is told why, in a Redis error, and the log says it
/// too; the primary got nothing.
#[test]
fn an_untrusted_primary_certificate_is_refused_with_the_reason() {
    let certs = TestCerts::generate();
    let stranger = TestCerts::generate();
    let tls_port = free_port();
    let args = certs.server_args(tls_port, "no");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let primary = RedisServer::start_with(&args);
    let broker = Broker::start();
    broker.create_topic("writes", 1);
    let proxy_port = free_port();
    let proxy = Service::proxy(&format!(
        "bindport = {proxy_port}\nconnport = {tls_port}\nconntls = true\n\
         conntls_ca_file = \"{}\"\n\n[[sender]]\nclass = \"KafkaSender\"\ntopic = \"writes\"\n\
         bootstrap-servers = \"{}\"\n",
        stranger.ca().display(),
        broker.bootstrap()
    ));
    proxy.wait_port(proxy_port);

    let mut client = TcpStream::connect(("127.0.0.1", proxy_port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.write_all(b"SET k v\r\n").unwrap();
    let mut reply = String::new();
    client.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with(&format!(
            "-ERR remoteback: primary 127.0.0.1:{tls_port} unreachable: "
        )) && reply.contains("certificate")
            && reply.ends_with("\r\n"),
        "the client is told why: {reply:?}"
    );
    wait_until(Duration::from_secs(10), "the refusal in the log", || {
        proxy.log().contains("unreachable") && proxy.log().contains("certificate")
    });
    let keys: i64 = redis::cmd("DBSIZE")
        .query(&mut common::pipeline::connect(primary.port()))
        .unwrap();
    assert_eq!(keys, 0, "nothing reached the primary");
}

/// A replay whose backup wants a client certificate it does not have
/// applies nothing and says why in its log, and applies
/// everything once restarted with the certificate.
#[test]
fn a_backup_that_wants_a_client_certificate_gets_nothing_without_one() {
    let mut p = Pipeline::start(Setup {
        tls: true,
        replay: false,
        ..Setup::default()
    });
    let mut client = p.client();
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut client)
            .unwrap();
    }
    let config = p.replay_config("PROTOCOL", "coroutine");
    let without_certificate: String = config
        .lines()
        .filter(|l| !l.starts_with("tls_cert_file") && !l.starts_with("tls_key_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let replay = Service::replay(&without_certificate);
    let backup = format!("127.0.0.1:{}", p.backup.tls_port().unwrap());
    wait_until(
        Duration::from_secs(20),
        "the backup's refusal in the replay's log",
        || {
            replay.log().contains(&format!(
                "backup {backup}: received fatal alert: CertificateRequired; retrying"
            ))
        },
    );
    assert!(
        replay.log().contains(&format!("→ backup {backup} (TLS)")),
        "the start line says the backup is reached through TLS:\n{}",
        replay.log()
    );
    let keys: i64 = redis::cmd("DBSIZE").query(&mut p.on_backup()).unwrap();
    assert_eq!(keys, 0, "nothing applied without the certificate");
    drop(replay);

    p.start_replay();
    p.wait_applied();
    p.assert_converges(&[0], Duration::from_secs(30));
}

/// A proxy serving its clients TLS (`bindtls`) and wanting their
/// certificates: a client with one reads and writes as over plain TCP,
/// large replies included (they leave through rustls's buffer a piece at
/// a time), and its writes reach the backup; a client without one, or
/// speaking plain RESP, is served nothing, and is counted.
#[test]
fn clients_reach_the_proxy_over_tls_with_their_certificates() {
    let certs = TestCerts::generate();
    let (cert, key) = certs.pair("server");
    let metrics = free_port();
    let p = Pipeline::start(Setup {
        proxy_extra: format!(
            "metrics = \"127.0.0.1:{metrics}\"\nbindtls = true\nbindtls_cert_file = \"{}\"\n\
             bindtls_key_file = \"{}\"\nbindtls_ca_file = \"{}\"\n",
            cert.display(),
            key.display(),
            certs.ca().display()
        ),
        ..Setup::default()
    });
    // The port opens a moment before the start line is written.
    let start_line = format!("proxy listening on 127.0.0.1:{} (TLS)", p.proxy_port);
    wait_until(
        Duration::from_secs(10),
        "the start line saying clients speak TLS",
        || p.proxy.log().contains(&start_line),
    );
    let (client_cert, client_key) = certs.pair("client");
    let read = |path: &std::path::Path| std::fs::read(path).unwrap();
    let tls_client = |with_cert: bool| {
        redis::Client::build_with_tls(
            format!("rediss://{SERVER_NAME}:{}", p.proxy_port),
            redis::TlsCertificates {
                client_tls: with_cert.then(|| redis::ClientTlsConfig {
                    client_cert: read(&client_cert),
                    client_key: read(&client_key),
                }),
                root_cert: Some(read(&certs.ca())),
            },
        )
        .unwrap()
    };
    let mut client = tls_client(true)
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("a TLS client with a certificate: {e}\n{}", p.logs()));
    let values: Vec<Vec<u8>> = (0..60u32)
        .map(|i| (0..(i * 7919 % 300_000)).map(|b| (b % 253) as u8).collect())
        .collect();
    let mut pipe = redis::pipe();
    for (i, v) in values.iter().enumerate() {
        pipe.cmd("SET").arg(format!("tls:{i}")).arg(v).ignore();
    }
    let (): () = pipe.query(&mut client).unwrap();
    let mut pipe = redis::pipe();
    for i in 0..values.len() {
        pipe.cmd("GET").arg(format!("tls:{i}"));
    }
    let got: Vec<Vec<u8>> = pipe.query(&mut client).unwrap();
    assert!(
        got == values,
        "the values read back over TLS are the ones written"
    );
    p.assert_converges(&[0], Duration::from_secs(30));

    // No certificate: the handshake fails; plain RESP: nothing comes back.
    assert!(
        tls_client(false)
            .get_connection_with_timeout(Duration::from_secs(10))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err(),
        "a client without a certificate is served"
    );
    let mut plain = TcpStream::connect(("127.0.0.1", p.proxy_port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"+PONG"),
        "plain RESP answered on a TLS port: {answer:?}"
    );
    let status = common::status::Status(metrics);
    wait_until(
        Duration::from_secs(15),
        "both refused clients to be counted",
        || status.value("remoteback_proxy_client_tls_handshakes_failed_total") >= 2,
    );

    // The proxy's certificate is renewed in place, from another authority:
    // clients that trust the new one get in without a restart, and the old
    // connection goes on.
    let renewed = TestCerts::generate();
    let (new_cert, new_key) = renewed.pair("server");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let trusting_the_new = redis::Client::build_with_tls(
        format!("rediss://{SERVER_NAME}:{}", p.proxy_port),
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read(&client_cert),
                client_key: read(&client_key),
            }),
            root_cert: Some(read(&renewed.ca())),
        },
    )
    .unwrap();
    wait_until(
        Duration::from_secs(15),
        "the renewed certificate to be served",
        || {
            trusting_the_new
                .get_connection_with_timeout(Duration::from_secs(5))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        },
    );
    let pong: String = redis::cmd("PING").query(&mut client).unwrap();
    assert_eq!(pong, "PONG", "a connection made before the renewal goes on");
    assert!(
        p.proxy
            .log()
            .contains("TLS for clients: renewed files taken up"),
        "{}",
        p.proxy.log()
    );
}

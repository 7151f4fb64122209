//! The whole pipeline for a test: primary and backup redis-server, a tansu
//! broker with the topic, `remoteback proxy` and (usually) `remoteback
//! replay`, all on free loopback ports.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use remoteback_protocol::codec::protocol;
use remoteback_protocol::Command;

use super::tls::{TestCerts, SERVER_NAME};
use super::{compare, free_port, Broker, RedisServer, ServerKind, Service};

/// The topic every pipeline uses (each test has a broker of its own).
pub const TOPIC: &str = "remoteback";

/// What to start.
#[derive(Clone, Debug)]
pub struct Setup {
    pub message: &'static str,
    pub worker: &'static str,
    pub partitions: i32,
    /// Extra top-level lines for the proxy (`ack = "kafka"`, ...).
    pub proxy_extra: String,
    /// Extra lines for the proxy's `KafkaSender` table.
    pub sender_extra: String,
    /// Extra lines for the replay's `[receiver]` table.
    pub receiver_extra: &'static str,
    /// Whether to start the replay right away.
    pub replay: bool,
    /// The program of primary and backup.
    pub server: ServerKind,
    /// Extra arguments of both (`--loadmodule ...`).
    pub server_args: Vec<String>,
    /// Whether primary and backup serve TLS, and remoteback reaches both
    /// only through it, presenting a client certificate: the backup wants
    /// one (`tls-auth-clients yes`), the primary checks one it is given
    /// (`optional`, so that tools can reach it with a `rediss://` URL).
    pub tls: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            message: "PROTOCOL",
            worker: "coroutine",
            partitions: 1,
            proxy_extra: String::new(),
            sender_extra: String::new(),
            receiver_extra: "",
            replay: true,
            server: ServerKind::Redis,
            server_args: Vec::new(),
            tls: false,
        }
    }
}

/// A consumed record: its headers and payload.
pub type TopicRecord = (Vec<(String, Vec<u8>)>, Vec<u8>);

/// A running pipeline; everything stops when it is dropped.
pub struct Pipeline {
    pub setup: Setup,
    pub primary: RedisServer,
    pub backup: RedisServer,
    pub broker: Broker,
    pub proxy: Service,
    pub replay: Option<Service>,
    pub proxy_port: u16,
    /// The certificates of a TLS pipeline.
    pub certs: Option<TestCerts>,
}

/// A connection to 127.0.0.1:`port`.
pub fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
}

impl Pipeline {
    pub fn start(setup: Setup) -> Pipeline {
        let certs = setup.tls.then(TestCerts::generate);
        let server = |auth_clients: &str| {
            let mut args = setup.server_args.clone();
            if let Some(certs) = &certs {
                args.extend(certs.server_args(free_port(), auth_clients));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            RedisServer::start_kind(setup.server, &args)
        };
        let (primary, backup) = (server("optional"), server("yes"));
        let broker = Broker::start();
        broker.create_topic(TOPIC, setup.partitions);
        let proxy_port = free_port();
        let proxy = Service::proxy(&format!(
            "bindport = {proxy_port}\n{connect}message = \"{message}\"\nworker = \"{worker}\"\n{top}\n\
             [[sender]]\nclass = \"KafkaSender\"\ntopic = \"{TOPIC}\"\nbootstrap-servers = \"{bootstrap}\"\n\
             linger-ms = 1\n{extra}\n",
            connect = connect_lines(&primary, certs.as_ref(), "conn", "conntls"),
            message = setup.message,
            worker = setup.worker,
            top = setup.proxy_extra,
            bootstrap = broker.bootstrap(),
            extra = setup.sender_extra,
        ));
        proxy.wait_port(proxy_port);
        let mut p = Pipeline {
            setup,
            primary,
            backup,
            broker,
            proxy,
            replay: None,
            proxy_port,
            certs,
        };
        if p.setup.replay {
            p.start_replay();
        }
        p
    }

    /// Starts the replay with the pipeline's format and worker.
    /// [`start`](Pipeline::start) with `metrics` addresses for the proxy
    /// and the replay (started whatever `setup.replay` says): the pipeline
    /// and the two status ports, both answering.
    pub fn start_with_metrics(mut setup: Setup) -> (Pipeline, u16, u16) {
        let (proxy_metrics, replay_metrics) = (free_port(), free_port());
        setup.proxy_extra = format!(
            "metrics = \"127.0.0.1:{proxy_metrics}\"\n{}",
            setup.proxy_extra
        );
        setup.replay = false;
        let mut p = Pipeline::start(setup);
        p.proxy.wait_port(proxy_metrics);
        let config = format!(
            "metrics = \"127.0.0.1:{replay_metrics}\"\n{}",
            p.replay_config(p.setup.message, p.setup.worker)
        );
        let replay = Service::replay(&config);
        replay.wait_port(replay_metrics);
        p.replay = Some(replay);
        (p, proxy_metrics, replay_metrics)
    }

    pub fn start_replay(&mut self) {
        let config = self.replay_config(self.setup.message, self.setup.worker);
        self.replay = Some(Service::replay(&config));
    }

    /// A replay configuration for this pipeline's broker and backup.
    pub fn replay_config(&self, message: &str, worker: &str) -> String {
        format!(
            "message = \"{message}\"\nworker = \"{worker}\"\n\n[receiver]\nclass = \"KafkaReceiver\"\n\
             topic = \"{TOPIC}\"\npolltimeout = 50\nbootstrap-servers = \"{}\"\n{}\n[redis]\n{}",
            self.broker.bootstrap(),
            self.setup.receiver_extra,
            connect_lines(&self.backup, self.certs.as_ref(), "conn", "tls"),
        )
    }

    /// A client connection through the proxy.
    pub fn client(&self) -> redis::Connection {
        connect(self.proxy_port)
    }

    pub fn on_primary(&self) -> redis::Connection {
        connect(self.primary.port())
    }

    pub fn on_backup(&self) -> redis::Connection {
        connect(self.backup.port())
    }

    /// The string at `key` in database `db` of the backup, if any.
    pub fn backup_get(&self, db: u32, key: &str) -> Option<String> {
        let mut b = self.on_backup();
        let _: () = redis::cmd("SELECT").arg(db).query(&mut b).expect("SELECT");
        redis::cmd("GET").arg(key).query(&mut b).expect("GET")
    }

    /// Waits until database `db` of the backup holds `key` = `value`;
    /// panics with what it held last and the logs if it does not.
    pub fn wait_backup_value(&self, db: u32, key: &str, value: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let held = self.backup_get(db, key);
            if held.as_deref() == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after 30s waiting for {key} = {value} on the backup (it holds \
                 {held:?})\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The proxy's and the replay's logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- proxy log ---\n{}\n--- replay log ---\n{}",
            tail(&self.proxy.log()),
            self.replay
                .as_ref()
                .map(|r| tail(&r.log()))
                .unwrap_or_default()
        )
    }

    /// Writes a sentinel through the proxy (after every other write of the
    /// test returned) and waits until the backup has it: by then the backup
    /// applied every earlier record of a single-partition topic.
    pub fn wait_applied(&self) {
        self.wait_applied_within(Duration::from_secs(60));
    }

    /// [`wait_applied`](Self::wait_applied) for a backlog that takes longer.
    pub fn wait_applied_within(&self, timeout: Duration) {
        let sentinel = format!("sentinel:{}", free_port());
        let _: () = redis::cmd("SET")
            .arg(&sentinel)
            .arg(1)
            .query(&mut self.client())
            .expect("SET sentinel");
        let mut backup = self.on_backup();
        let deadline = Instant::now() + timeout;
        loop {
            let n: i64 = redis::cmd("EXISTS")
                .arg(&sentinel)
                .query(&mut backup)
                .expect("EXISTS");
            if n == 1 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the backup did not catch up within {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the backup equals the primary in `dbs`; panics with the
    /// differences and the logs if it does not within `timeout`.
    pub fn assert_converges(&self, dbs: &[u32], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let diffs = compare::differences(self.primary.port(), self.backup.port(), dbs);
            if diffs.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let shown: Vec<String> = diffs.iter().take(20).map(|d| d.to_string()).collect();
                panic!(
                    "backup differs from primary in {} keys after {timeout:?}:\n{}\n{}",
                    diffs.len(),
                    shown.join("\n"),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every record of partition 0, up to its end at the time of the call.
    pub fn topic_records(&self) -> Vec<TopicRecord> {
        self.read_partition_0(|m| {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            (headers, m.payload().unwrap_or_default().to_vec())
        })
    }

    /// The payloads of partition 0 one after the other: the commands
    /// captured, in order, however the proxy packed them into messages.
    pub fn topic_payload(&self) -> Vec<u8> {
        self.read_partition_0(|m| m.payload().unwrap_or_default().to_vec())
            .concat()
    }

    /// The `PROTOCOL` commands of partition 0, in order.
    pub fn topic_commands(&self) -> Vec<Command> {
        protocol::decode(&Bytes::from(self.topic_payload())).expect("PROTOCOL payloads")
    }

    /// The Kafka key and payload of every record of partition 0.
    pub fn topic_keys(&self) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        self.read_partition_0(|m| {
            (
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            )
        })
    }

    fn read_partition_0<T>(&self, each: impl Fn(&BorrowedMessage<'_>) -> T) -> Vec<T> {
        self.broker.read_partition(TOPIC, 0, each)
    }
}

/// `connport` of `server` and, for a TLS pipeline, its TLS port and the
/// `<tls>` keys (the authority and the client certificate).
fn connect_lines(server: &RedisServer, certs: Option<&TestCerts>, conn: &str, tls: &str) -> String {
    match (certs, server.tls_port()) {
        (Some(certs), Some(port)) => {
            let (cert, key) = certs.pair("client");
            format!(
                "{conn}port = {port}\n{tls} = true\n{tls}_ca_file = \"{}\"\n\
                 {tls}_cert_file = \"{}\"\n{tls}_key_file = \"{}\"\n\
                 {tls}_server_name = \"{SERVER_NAME}\"\n",
                certs.ca().display(),
                cert.display(),
                key.display()
            )
        }
        _ => format!("{conn}port = {}\n", server.port()),
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

//! Throw-away `tansu` (Kafka protocol) brokers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use remoteback_protocol::codec::protocol;

use super::process::*;

/// How long a freshly started broker may take to accept connections.
pub(super) const BROKER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The tansu binary: `$REMOTEBACK_TEST_TANSU`, else `tansu` on PATH, else
/// `$CARGO_HOME/bin/tansu` (where `scripts/setup.sh` installs it).
pub fn tansu_program() -> PathBuf {
    if let Some(p) = std::env::var_os("REMOTEBACK_TEST_TANSU") {
        return PathBuf::from(p);
    }
    if let Some(p) = find_in_path("tansu") {
        return p;
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(p) = cargo_home.map(|h| h.join("bin").join("tansu")) {
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("tansu")
}

/// Adds the index tansu 0.6.0's sqlite schema lacks to a running broker's
/// database (`scripts/tansu-index.py` says why: without it a consumer reading
/// a backlog of more than about 10,000 records stalls the broker).
pub(super) fn index_tansu_headers(db: &Path) -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/tansu-index.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(db)
        .output()
        .map_err(|e| format!("cannot run python3 {}: {e}", script.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {} failed ({}): {}",
            script.display(),
            db.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A throw-away single-node tansu broker on 127.0.0.1 with sqlite storage.
/// Topics are not created automatically: use [`Broker::create_topic`].
pub struct Broker {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Broker {
        let dir = temp_dir("tansu");
        let mut broker = Broker {
            port: 0,
            dir,
            child: None,
        };
        let mut last_error = String::new();
        for _ in 0..3 {
            broker.port = free_port();
            match broker.launch() {
                Ok(()) => return broker,
                Err(e) => last_error = e,
            }
        }
        panic!("tansu broker did not start: {last_error}");
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Process id of the broker.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("broker is not running")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("tansu.log")
    }

    pub fn log(&self) -> String {
        file_tail(&self.log_path(), LOG_TAIL_BYTES)
    }

    /// Kills the broker (SIGKILL); its data stays for [`Broker::restart`].
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Kills the broker and starts it again on the same port with the same
    /// sqlite file, so topics and records survive.
    pub fn restart(&mut self) {
        self.stop();
        relaunch("tansu", self.port, BROKER_START_TIMEOUT, || self.launch());
    }

    fn launch(&mut self) -> Result<(), String> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // tansu resolves `sqlite://NAME` against its working directory
        // (`sqlite:///abs/path` would too, hence the relative name + cwd).
        let storage = "sqlite://tansu.db";
        let mut cmd = Command::new(tansu_program());
        cmd.arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg(storage)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log_file(&self.log_path()))
            .stderr(log_file(&self.log_path()));
        let child = spawn(cmd).map_err(|e| {
            format!(
                "cannot run {} (run scripts/setup.sh to install it): {e}",
                tansu_program().display()
            )
        })?;
        self.child = Some(child);
        let (port, log) = (self.port, self.log_path());
        wait_ready(
            &mut self.child,
            &format!("tansu on port {port}"),
            "accept connections",
            BROKER_START_TIMEOUT,
            &log,
            || port_open(port),
        )?;
        index_tansu_headers(&self.dir.join("tansu.db")).inspect_err(|_| kill_child(&mut self.child))
    }

    /// A client config pointing at this broker.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        config
    }

    /// Creates `topic` with `partitions` partitions (replication 1) and waits
    /// until its metadata shows all partitions. An existing topic is fine.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .unwrap_or_else(|e| panic!("create admin client: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = runtime
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(30),
                    admin.create_topics([&new_topic], &options),
                )
                .await
            })
            .unwrap_or_else(|_| panic!("create topic {topic}: timed out\n{}", self.log()))
            .unwrap_or_else(|e| panic!("create topic {topic}: {e}\n{}", self.log()));
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => panic!("create topic {name}: {code}\n{}", self.log()),
            }
        }
        self.wait_topic(topic, partitions);
    }

    /// Waits until the broker's metadata lists `topic` with `partitions`
    /// partitions.
    #[track_caller]
    pub fn wait_topic(&self, topic: &str, partitions: i32) {
        let consumer: BaseConsumer = self
            .client_config()
            .create()
            .unwrap_or_else(|e| panic!("create metadata client: {e}"));
        wait_until(
            Duration::from_secs(30),
            &format!(
                "topic {topic} with {partitions} partitions on {}",
                self.bootstrap()
            ),
            || {
                consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
                    .map(|md| {
                        md.topics().iter().any(|t| {
                            t.name() == topic
                                && t.error().is_none()
                                && t.partitions().len() == partitions as usize
                        })
                    })
                    .unwrap_or(false)
            },
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log_tail(&format!("tansu :{}", self.port), &self.log_path());
        }
        kill_child(&mut self.child);
        remove_temp(&self.dir);
    }
}

impl Broker {
    /// `each` of every record of `topic[partition]`, up to its end at the
    /// time of the call.
    pub fn read_partition<T>(
        &self,
        topic: &str,
        partition: i32,
        each: impl Fn(&BorrowedMessage<'_>) -> T,
    ) -> Vec<T> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .expect("watermarks");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let mut next = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while next < high {
            assert!(
                std::time::Instant::now() < deadline,
                "read only up to offset {next} of {high}"
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    out.push(each(&m));
                    next = m.offset() + 1;
                }
                Some(Err(e)) => panic!("consume: {e}"),
                None => {}
            }
        }
        out
    }

    /// The writes captured in `topic`'s first `partitions` partitions, as
    /// the proxy counts them (`remoteback_proxy_records_delivered_total`):
    /// a command, or a transaction's `MULTI` ... `EXEC`, however many were
    /// packed into one record (the `SELECT`s a pack adds between them are
    /// none); a barrier counts in each partition it was copied to.
    pub fn writes_in_topic(&self, topic: &str, partitions: i32) -> i64 {
        (0..partitions)
            .flat_map(|p| {
                self.read_partition(topic, p, |m| {
                    let payload = bytes::Bytes::copy_from_slice(m.payload().unwrap_or_default());
                    captured_writes(&payload)
                })
            })
            .sum()
    }
}

/// The writes in one `PROTOCOL` payload (see [`Broker::writes_in_topic`]).
pub fn captured_writes(payload: &bytes::Bytes) -> i64 {
    let mut writes = 0;
    let mut in_transaction = false;
    for command in protocol::decode(payload).expect("a PROTOCOL payload") {
        if command.is("MULTI") {
            in_transaction = true;
            writes += 1;
        } else if command.is("EXEC") {
            in_transaction = false;
        } else if !in_transaction && !command.is("SELECT") {
            writes += 1;
        }
    }
    writes
}

//! Shared harness for the integration tests: free ports, throw-away
//! `redis-server` and `tansu` (Kafka protocol) brokers, and `remoteback`
//! subprocesses.
//!
//! Every process started here is killed when its handle is dropped, also
//! while a test unwinds from a panic. As a second line of defence the
//! children are spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG = SIGKILL`, so they die with the test process even
//! when it is killed outright (a test-runner timeout, `SIGKILL`, an abort).
//!
//! External programs can be overridden with environment variables:
//! `REMOTEBACK_TEST_REDIS_SERVER` (default `redis-server`) and
//! `REMOTEBACK_TEST_TANSU` (default `tansu` on `PATH`, then
//! `$CARGO_HOME/bin/tansu`).
//!
//! Set `REMOTEBACK_TEST_KEEP=1` to keep the temporary directories (data,
//! configs and logs) after the test for inspection.

#![allow(dead_code)]

/// Comparing the contents of two Redis servers (primary vs. backup).
pub mod compare;
pub mod faults;
pub mod mixed;
pub mod pipeline;
pub mod workload;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

/// How long a freshly started redis-server may take to answer PING.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a freshly started broker may take to accept connections.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default wait for a `remoteback` service to open its port.
const SERVICE_PORT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many bytes of a log are shown when a test fails.
const LOG_TAIL_BYTES: u64 = 8 * 1024;

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1. A port is never handed out twice within
/// the same test process.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut given = given.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return port;
        }
    }
    panic!("free_port: no unused port found after 1000 attempts");
}

/// Polls `f` (with a short, growing pause) until it returns true; panics
/// naming `what` if that does not happen within `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The `remoteback` binary built by cargo for these integration tests.
pub fn remoteback_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_remoteback"))
}

/// A fresh, empty directory under the system temp dir, unique to this
/// process and call.
pub fn temp_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "remoteback-test-{}-{}-{}-{:08x}",
        label,
        std::process::id(),
        n,
        nanos
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn keep_temp() -> bool {
    std::env::var_os("REMOTEBACK_TEST_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

fn remove_temp(dir: &Path) {
    if keep_temp() {
        eprintln!("[harness] kept {}", dir.display());
    } else {
        let _ = fs::remove_dir_all(dir);
    }
}

/// The last `max` bytes of a file (lossy UTF-8), or a note if unreadable.
pub fn file_tail(path: &Path, max: u64) -> String {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("<cannot read {}: {e}>", path.display()),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    let _ = file.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        // Drop the partial first line.
        match text.find('\n') {
            Some(i) => format!("[...]\n{}", &text[i + 1..]),
            None => text,
        }
    } else {
        text
    }
}

fn print_log_tail(what: &str, path: &Path) {
    eprintln!(
        "----- {what}: last lines of {} -----\n{}\n----- end of {what} log -----",
        path.display(),
        file_tail(path, LOG_TAIL_BYTES).trim_end()
    );
}

/// Opens (creating) a log file for a child's stdout/stderr, appending.
fn log_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Spawning children that cannot outlive the test process
// ---------------------------------------------------------------------------

const PR_SET_PDEATHSIG: i32 = 1;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

unsafe extern "C" {
    fn prctl(option: i32, ...) -> i32;
    fn getppid() -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that the kernel kills the child when the test process
/// dies. `PR_SET_PDEATHSIG` fires when the *thread* that forked the child
/// exits, so all children are forked by one thread that lives as long as
/// the process (test threads come and go; shared fixtures must survive them).
fn spawn(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let parent = std::process::id() as i32;
    // SAFETY: only async-signal-safe system calls run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if prctl(PR_SET_PDEATHSIG, SIGKILL as std::ffi::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if getppid() != parent {
                return Err(io::Error::other("test process already gone"));
            }
            Ok(())
        });
    }
    let sender = SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("harness-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .expect("start the harness spawner thread");
            Mutex::new(tx)
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("harness spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("harness spawner thread is gone"))?
}

/// Kills a child (SIGKILL) and reaps it; never panics.
fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Sends SIGTERM and waits up to `grace` for the child to exit, then
/// SIGKILLs it. Returns the exit status when the child exited by itself.
fn terminate_child(child: &mut Option<Child>, grace: Duration) -> Option<ExitStatus> {
    let mut c = child.take()?;
    if let Ok(Some(status)) = c.try_wait() {
        return Some(status);
    }
    unsafe {
        kill(c.id() as i32, SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = c.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------

fn redis_server_program() -> PathBuf {
    std::env::var_os("REMOTEBACK_TEST_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// Sends an inline PING and returns true on `+PONG`.
pub fn redis_ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.shutdown(Shutdown::Both);
    got.starts_with(b"+PONG")
}

/// A throw-away `redis-server` on 127.0.0.1, without persistence unless
/// started with [`RedisServer::start_with`] arguments that turn it on.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    /// Extra `redis-server` arguments, after the defaults (so they win).
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a redis-server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments
    /// given after the defaults, e.g. `["--appendonly", "yes",
    /// "--appendfsync", "always"]` for a server whose data survives
    /// [`RedisServer::restart`] (its files stay in [`RedisServer::dir`]).
    pub fn start_with(args: &[&str]) -> RedisServer {
        let dir = temp_dir("redis");
        let mut server = RedisServer {
            port: 0,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        // Another process may grab the port between free_port() and the
        // server's bind; then try another one.
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.launch() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's working directory (also holds `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    pub fn log(&self) -> String {
        file_tail(&self.log_path(), LOG_TAIL_BYTES)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server (SIGKILL). Without persistence its data is lost.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Kills the server and starts a new one on the same port and directory;
    /// its data is gone unless it was started with persistence
    /// ([`RedisServer::start_with`]).
    pub fn restart(&mut self) {
        self.stop();
        relaunch("redis-server", self.port, REDIS_START_TIMEOUT, || {
            self.launch()
        });
    }

    fn launch(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(redis_server_program());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--daemonize")
            .arg("no")
            .arg("--protected-mode")
            .arg("no")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log_file(&self.log_path()))
            .stderr(log_file(&self.log_path()));
        let child = spawn(cmd)
            .map_err(|e| format!("cannot run {}: {e}", redis_server_program().display()))?;
        self.child = Some(child);
        let (port, log) = (self.port, self.log_path());
        wait_ready(
            &mut self.child,
            &format!("redis-server on port {port}"),
            "answer PING",
            REDIS_START_TIMEOUT,
            &log,
            || redis_ping(port),
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log_tail(&format!("redis-server :{}", self.port), &self.log_path());
        }
        kill_child(&mut self.child);
        remove_temp(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// tansu (Kafka protocol broker)
// ---------------------------------------------------------------------------

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

/// Waits until `ready()` says the freshly started `child` serves; an error
/// (with the end of its log) when it exits first or `timeout` passes, then
/// it is killed.
fn wait_ready(
    child: &mut Option<Child>,
    what: &str,
    ready_means: &str,
    timeout: Duration,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
            *child = None;
            return Err(format!(
                "{what} exited with {status}; log:\n{}",
                file_tail(log, LOG_TAIL_BYTES)
            ));
        }
        if Instant::now() >= deadline {
            kill_child(child);
            return Err(format!(
                "{what} did not {ready_means} within {timeout:?}; log:\n{}",
                file_tail(log, LOG_TAIL_BYTES)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Calls `launch` until it succeeds: the port a killed server held may take
/// a moment to be free again. Panics after `timeout`.
fn relaunch(
    what: &str,
    port: u16,
    timeout: Duration,
    mut launch: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        match launch() {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!("{what} did not restart on port {port}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Adds the index tansu 0.6.0's sqlite schema lacks to a running broker's
/// database (`scripts/tansu-index.py` says why: without it a consumer reading
/// a backlog of more than about 10,000 records stalls the broker).
fn index_tansu_headers(db: &Path) -> Result<(), String> {
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

// ---------------------------------------------------------------------------
// remoteback subprocesses
// ---------------------------------------------------------------------------

/// A running `remoteback proxy|replay --config FILE` subprocess. Its stdout
/// and stderr go to a log file whose tail is printed if the test panics.
pub struct Service {
    mode: String,
    dir: PathBuf,
    config: PathBuf,
    envs: Vec<(String, String)>,
    child: Option<Child>,
}

impl Service {
    /// `remoteback proxy --config FILE` with `config_toml` as FILE.
    pub fn proxy(config_toml: &str) -> Service {
        Service::start("proxy", config_toml, &[])
    }

    /// `remoteback replay --config FILE` with `config_toml` as FILE.
    pub fn replay(config_toml: &str) -> Service {
        Service::start("replay", config_toml, &[])
    }

    /// `remoteback MODE --config FILE` with extra environment variables.
    pub fn start(mode: &str, config_toml: &str, envs: &[(&str, &str)]) -> Service {
        let dir = temp_dir(mode);
        let config = dir.join(format!("{mode}.toml"));
        fs::write(&config, config_toml)
            .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let mut service = Service {
            mode: mode.to_string(),
            dir,
            config,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        service.launch();
        service
    }

    fn launch(&mut self) {
        let log = self.log_path();
        let mut cmd = Command::new(remoteback_bin());
        cmd.arg(&self.mode)
            .arg("--config")
            .arg(&self.config)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log_file(&log))
            .stderr(log_file(&log));
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let child =
            spawn(cmd).unwrap_or_else(|e| panic!("cannot run {}: {e}", remoteback_bin().display()));
        self.child = Some(child);
    }

    /// Kills the process (if running) and starts it again with the same
    /// config file and log (appended).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn mode(&self) -> &str {
        &self.mode
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.mode))
    }

    /// The whole log (stdout + stderr) so far.
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns the exit status if the
    /// process exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        terminate_child(&mut self.child, grace)
    }

    /// Waits until 127.0.0.1:`port` accepts connections; panics with the
    /// log if the process exits first or it takes longer than 30 s.
    #[track_caller]
    pub fn wait_port(&self, port: u16) {
        self.wait_port_timeout(port, SERVICE_PORT_TIMEOUT)
    }

    #[track_caller]
    pub fn wait_port_timeout(&self, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if port_open(port) {
                return;
            }
            if let Some(child) = self.child.as_ref() {
                // try_wait needs &mut; probe with a signal-free check instead.
                if !process_alive(child.id()) {
                    panic!(
                        "remoteback {} exited before port {port} opened; log:\n{}",
                        self.mode,
                        self.log()
                    );
                }
            } else {
                panic!("remoteback {} is not running", self.mode);
            }
            if Instant::now() >= deadline {
                panic!(
                    "remoteback {} did not open port {port} within {timeout:?}; log:\n{}",
                    self.mode,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// True while `pid` is running (a zombie counts as exited).
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log_tail(&format!("remoteback {}", self.mode), &self.log_path());
        }
        kill_child(&mut self.child);
        remove_temp(&self.dir);
    }
}

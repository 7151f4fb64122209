//! Throw-away `redis-server` (or `valkey-server`) processes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::*;

/// How long a freshly started redis-server may take to answer PING.
pub(super) const REDIS_START_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) fn redis_server_program() -> PathBuf {
    std::env::var_os("REMOTEBACK_TEST_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// Which server program to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerKind {
    /// `redis-server` (`REMOTEBACK_TEST_REDIS_SERVER`).
    #[default]
    Redis,
    /// `valkey-server` (`REMOTEBACK_TEST_VALKEY_SERVER`), which takes the
    /// same arguments.
    Valkey,
}

impl ServerKind {
    pub fn program(self) -> PathBuf {
        match self {
            ServerKind::Redis => redis_server_program(),
            ServerKind::Valkey => std::env::var_os("REMOTEBACK_TEST_VALKEY_SERVER")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("valkey-server")),
        }
    }
}

/// The server's `blocked_clients` (`INFO clients`): how many clients wait
/// in a blocking command.
pub fn blocked_clients(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("clients").query(con).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("blocked_clients in INFO")
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
    kind: ServerKind,
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
        RedisServer::start_kind(ServerKind::Redis, args)
    }

    /// Like [`RedisServer::start_with`], running `kind`'s program.
    pub fn start_kind(kind: ServerKind, args: &[&str]) -> RedisServer {
        let dir = temp_dir("redis");
        let mut server = RedisServer {
            kind,
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
        panic!("{} did not start: {last_error}", kind.program().display());
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port it serves TLS on, when started with `--tls-port`.
    pub fn tls_port(&self) -> Option<u16> {
        let at = self.args.iter().position(|a| a == "--tls-port")?;
        self.args.get(at + 1)?.parse().ok()
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
        let program = self.kind.program();
        let mut cmd = Command::new(&program);
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
        let child = spawn(cmd).map_err(|e| format!("cannot run {}: {e}", program.display()))?;
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

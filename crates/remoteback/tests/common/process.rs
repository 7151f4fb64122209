//! Processes of the harness: free ports, temporary directories, logs, and
//! children that cannot outlive the test process.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many bytes of a log are shown when a test fails.
pub(super) const LOG_TAIL_BYTES: u64 = 8 * 1024;

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// Ports handed out: the lower half of the ports below the kernel's
/// ephemeral range (32768-60999 by default: 16384-32767), so that no
/// outgoing connection of a concurrent test (a client, librdkafka) takes
/// one as its local port between the check and the server's bind, which
/// ports from `bind(0)` allowed. A machine whose ephemeral range starts
/// too low to leave room gets 20000-32767.
fn ports() -> std::ops::Range<u16> {
    static PORTS: OnceLock<std::ops::Range<u16>> = OnceLock::new();
    PORTS
        .get_or_init(|| {
            let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .ok()
                .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok());
            match low {
                Some(low) if low >= 4096 => low / 2..low,
                _ => 20_000..32_768,
            }
        })
        .clone()
}

/// A free TCP port on 127.0.0.1, chosen at random among [`ports`]. A port
/// is never handed out twice within the same test process; concurrent test
/// processes each pick at random.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    let mut state = u64::from(std::process::id())
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    for _ in 0..1000 {
        // xorshift: enough to spread the picks of concurrent processes.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let range = ports();
        let span = u64::from(range.end - range.start);
        let port = range.start + (state % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
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

pub(super) fn keep_temp() -> bool {
    std::env::var_os("REMOTEBACK_TEST_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

pub(super) fn remove_temp(dir: &Path) {
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

pub(super) fn print_log_tail(what: &str, path: &Path) {
    eprintln!(
        "----- {what}: last lines of {} -----\n{}\n----- end of {what} log -----",
        path.display(),
        file_tail(path, LOG_TAIL_BYTES).trim_end()
    );
}

/// Opens (creating) a log file for a child's stdout/stderr, appending.
pub(super) fn log_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Spawning children that cannot outlive the test process
// ---------------------------------------------------------------------------

pub(super) const PR_SET_PDEATHSIG: i32 = 1;
pub(super) const SIGKILL: i32 = 9;
pub(super) const SIGTERM: i32 = 15;

unsafe extern "C" {
    fn prctl(option: i32, ...) -> i32;
    fn getppid() -> i32;
    pub(super) fn kill(pid: i32, sig: i32) -> i32;
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that the kernel kills the child when the test process
/// dies. `PR_SET_PDEATHSIG` fires when the *thread* that forked the child
/// exits, so all children are forked by one thread that lives as long as
/// the process (test threads come and go; shared fixtures must survive them).
pub(super) fn spawn(mut cmd: Command) -> io::Result<Child> {
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
pub(super) fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Sends SIGTERM and waits up to `grace` for the child to exit, then
/// SIGKILLs it. Returns the exit status when the child exited by itself.
pub(super) fn terminate_child(child: &mut Option<Child>, grace: Duration) -> Option<ExitStatus> {
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

pub(super) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Waits until `ready()` says the freshly started `child` serves; an error
/// (with the end of its log) when it exits first or `timeout` passes, then
/// it is killed.
pub(super) fn wait_ready(
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
pub(super) fn relaunch(
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

/// The resident memory of process `pid` (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Raises this process's soft open-files limit to at least `want` (up to
/// the hard limit), for tests that hold many sockets: many systems give a
/// process 1,024.
pub fn raise_open_files_limit(want: u64) {
    #[repr(C)]
    struct Rlimit {
        cur: u64,
        max: u64,
    }
    extern "C" {
        fn getrlimit(resource: i32, limit: *mut Rlimit) -> i32;
        fn setrlimit(resource: i32, limit: *const Rlimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut limit = Rlimit { cur: 0, max: 0 };
    // SAFETY: both calls only read or write the struct given.
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut limit) == 0 && limit.cur < want {
            limit.cur = want.min(limit.max);
            setrlimit(RLIMIT_NOFILE, &limit);
        }
    }
}

//! `remoteback` subprocesses.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::process::*;

/// Default wait for a `remoteback` service to open its port.
pub(super) const SERVICE_PORT_TIMEOUT: Duration = Duration::from_secs(30);

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
pub(super) fn process_alive(pid: u32) -> bool {
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

//! The configuration as an operator meets it: `check-config`, and services
//! refusing to start on a bad file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{remoteback_bin, temp_dir};

fn run(args: &[&str]) -> Output {
    Command::new(remoteback_bin())
        .args(args)
        .output()
        .expect("run remoteback")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs")
        .join(name)
}

/// A configuration file in a temp dir of its own, removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn to_str(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn write(name: &str, text: &str) -> TempConfig {
    let path = temp_dir("config").join(name);
    std::fs::write(&path, text).expect("write config");
    TempConfig(path)
}

/// `remoteback check-config` on a file `name` holding `text`.
fn check_config(name: &str, text: &str) -> Output {
    let path = write(name, text);
    run(&["check-config", path.to_str()])
}

#[test]
fn configs_of_the_original_system_load_unchanged() {
    for name in ["original-proxy.toml", "original-replay.toml"] {
        let out = run(&["check-config", fixture(name).to_str().expect("path")]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("effective settings"), "{stdout}");
    }
}

#[test]
fn check_config_names_file_key_line_and_what_is_allowed() {
    let out = check_config(
        "bad-proxy.toml",
        "bindport = 6666\nworker = \"fiber\"\n[[sender]]\nclass = \"LogSender\"\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad-proxy.toml:2"), "{err}");
    assert!(err.contains("worker"), "{err}");
    assert!(
        err.contains("coroutine") && err.contains("thread"),
        "allowed values named: {err}"
    );
}

#[test]
fn unknown_keys_get_a_suggestion() {
    let out = check_config("typo.toml", "bindprot = 6666\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("typo.toml:1") && err.contains("bindport"),
        "{err}"
    );
}

#[test]
fn proxy_refuses_to_start_on_a_bad_file() {
    let path = write(
        "proxy.toml",
        "[[sender]]\nclass = \"KafkaSender\"\ntopic = \"t\"\nbootstrap-servers = \"127.0.0.1:1\"\nlevel = \"info\"\n",
    );
    let out = run(&["proxy", "--config", path.to_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("proxy.toml:5") && err.contains("sender[0]") && err.contains("level"),
        "{err}"
    );
}

#[test]
fn bad_kafka_property_is_reported_by_librdkafka() {
    let path = write(
        "proxy.toml",
        &format!(
            "bindport = {}\n[[sender]]\nclass = \"KafkaSender\"\ntopic = \"t\"\nbootstrap-servers = \"127.0.0.1:1\"\nno-such-property = 1\n",
            common::free_port()
        ),
    );
    let out = run(&["proxy", "--config", path.to_str()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no.such.property"), "{err}");
}

#[test]
fn replay_refuses_a_missing_file() {
    let out = run(&["replay", "--config", "/nonexistent/replay.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/replay.toml"), "{err}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "proxy",
        "replay",
        "check-config",
        "sync",
        "verify",
        "status",
    ] {
        let out = run(&[sub, "--help"]);
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{sub}"
        );
    }
}

#[test]
fn check_config_lets_librdkafka_judge_kafka_properties() {
    let out = check_config(
        "proxy.toml",
        "[[sender]]\nclass = \"KafkaSender\"\ntopic = \"t\"\nbootstrap-servers = \"127.0.0.1:1\"\nacks = \"most\"\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sender[0] (KafkaSender)") && err.contains("acks"),
        "{err}"
    );
}

#[test]
fn check_config_prints_the_threads_and_the_shared_connection_it_runs_with() {
    let out = check_config(
        "proxy.toml",
        "worker_threads = 3\nshare_upstream = false\nheartbeat_ms = 0\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "worker_threads = 3",
        "share_upstream = false",
        "heartbeat_ms = 0 ",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }

    let out = check_config("proxy.toml", "bindport = 6666\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let threads = format!(
        "# worker_threads not set: {},",
        remoteback_proxy::default_worker_threads()
    );
    assert!(stdout.contains(&threads), "{threads}: {stdout}");
    assert!(stdout.contains("share_upstream = true"), "{stdout}");
    assert!(stdout.contains("heartbeat_ms = 1000"), "{stdout}");
}

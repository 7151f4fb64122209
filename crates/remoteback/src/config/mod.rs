//! Configuration files: TOML in, [`ProxySettings`] or [`ReplaySettings`] out.
//!
//! A proxy file has top-level `bindip`, `bindport`, `connip`, `connport`,
//! `message`, `worker`, `rsptimeout` and `[[sender]]` tables; a replay file
//! has `message`, `worker`, `on_apply_error`, a `[receiver]` and a `[redis]`
//! table. Files written for the original JVM implementation load unchanged: fully
//! qualified class names (`com.example.sender.KafkaSender`) and
//! `worker = "rx"` are accepted.
//!
//! Every error names the file, the line and the key, says what is wrong and
//! what is allowed (see [`ConfigError`]).

mod common;
mod error;
mod kafka;
mod proxy;
mod render;
mod replay;
mod source;
mod suggest;
mod tls;

use std::path::Path;

use remoteback_proxy::settings::ProxySettings;
use remoteback_replay::settings::ReplaySettings;

pub(crate) use common::parse_size;
pub use error::ConfigError;
use source::Source;

/// A configuration file of either kind, as `check-config` reads it. Its
/// [`Display`](std::fmt::Display) prints the effective settings as TOML,
/// defaults included and secrets masked.
#[derive(Clone, Debug, PartialEq)]
pub enum Loaded {
    Proxy(ProxySettings),
    Replay(ReplaySettings),
}

/// Reads and checks a proxy configuration file.
pub fn load_proxy(path: &Path) -> Result<ProxySettings, ConfigError> {
    let (origin, text) = read(path)?;
    parse_proxy(&text, &origin)
}

/// Checks a proxy configuration; `origin` names it in error messages.
pub fn parse_proxy(text: &str, origin: &str) -> Result<ProxySettings, ConfigError> {
    let src = Source { origin, text };
    proxy::settings(src, &src.parse()?)
}

/// Reads and checks a replay configuration file.
pub fn load_replay(path: &Path) -> Result<ReplaySettings, ConfigError> {
    let (origin, text) = read(path)?;
    parse_replay(&text, &origin)
}

/// Checks a replay configuration; `origin` names it in error messages.
pub fn parse_replay(text: &str, origin: &str) -> Result<ReplaySettings, ConfigError> {
    let src = Source { origin, text };
    replay::settings(src, &src.parse()?)
}

/// Reads and checks a configuration file of either kind: one with a
/// `[receiver]` or `[redis]` table is a replay configuration, any other a
/// proxy configuration.
pub fn load_any(path: &Path) -> Result<Loaded, ConfigError> {
    let (origin, text) = read(path)?;
    parse_any(&text, &origin)
}

/// [`load_any`] on text already read.
fn parse_any(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    let src = Source { origin, text };
    let doc = src.parse()?;
    if doc.contains_key("receiver") || doc.contains_key("redis") {
        replay::settings(src, &doc).map(Loaded::Replay)
    } else {
        proxy::settings(src, &doc).map(Loaded::Proxy)
    }
}

/// The file's name for messages, and its text.
fn read(path: &Path) -> Result<(String, String), ConfigError> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((origin, text)),
        Err(e) => Err(ConfigError::io(&origin, &e)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use remoteback_protocol::{Format, Worker};
    use remoteback_proxy::settings::{Filter, SenderSettings};

    use super::*;

    /// Runs `f`, returning what it returned and the warnings it logged on
    /// this thread.
    pub(super) fn warnings_from<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
        use std::cell::RefCell;
        use std::sync::Once;

        thread_local! {
            static WARNINGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
        }
        struct Capture;
        impl log::Log for Capture {
            fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
                metadata.level() <= log::Level::Warn
            }
            fn log(&self, record: &log::Record<'_>) {
                if self.enabled(record.metadata()) {
                    WARNINGS.with(|w| w.borrow_mut().push(record.args().to_string()));
                }
            }
            fn flush(&self) {}
        }
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            log::set_logger(&Capture).expect("no other logger in unit tests");
            log::set_max_level(log::LevelFilter::Warn);
        });
        WARNINGS.with(|w| w.borrow_mut().clear());
        let value = f();
        (value, WARNINGS.with(|w| w.take()))
    }

    const ORIGINAL_PROXY: &str = include_str!("../../tests/configs/original-proxy.toml");
    const ORIGINAL_REPLAY: &str = include_str!("../../tests/configs/original-replay.toml");

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn original_proxy_configuration_loads_unchanged() {
        let s = parse_proxy(ORIGINAL_PROXY, "original-proxy.toml").unwrap();
        assert_eq!(s.bind_ip, "0.0.0.0");
        assert_eq!(s.bind_port, 6666);
        assert_eq!(s.upstream_ip, "10.1.2.3");
        assert_eq!(s.upstream_port, 6379);
        assert_eq!(s.message, Format::Row);
        assert_eq!(s.worker, Worker::Coroutine);
        assert_eq!(s.reply_timeout, Some(Duration::from_millis(5000)));
        assert_eq!(s.senders.len(), 2);
        let SenderSettings::Log(log) = &s.senders[0] else {
            panic!("{:?}", s.senders[0]);
        };
        assert_eq!(log.logger, "remoteback::capture");
        assert_eq!(log.level, log::Level::Debug);
        let SenderSettings::Kafka(kafka) = &s.senders[1] else {
            panic!("{:?}", s.senders[1]);
        };
        assert_eq!(kafka.topic, "redis-capture");
        assert_eq!(kafka.filter, Filter::Writes);
        assert_eq!(
            kafka.kafka,
            pairs(&[
                ("bootstrap.servers", "kafka1.dc2:9092,kafka2.dc2:9092"),
                ("acks", "all"),
                ("linger.ms", "5"),
                ("retries", "3"),
                ("compression.type", "lz4"),
                ("enable.idempotence", "true"),
            ])
        );
    }

    #[test]
    fn original_replay_configuration_loads_unchanged() {
        let s = parse_replay(ORIGINAL_REPLAY, "original-replay.toml").unwrap();
        assert_eq!(s.message, Format::Row);
        assert_eq!(s.worker, Worker::Coroutine);
        assert_eq!(s.receiver.topics, ["redis-capture"]);
        assert_eq!(s.receiver.poll_timeout, Duration::from_millis(200));
        assert_eq!(
            s.receiver.kafka,
            pairs(&[
                ("bootstrap.servers", "kafka1.dc2:9092,kafka2.dc2:9092"),
                ("group.id", "redis-backup-dc2"),
                ("auto.offset.reset", "earliest"),
                ("enable.auto.commit", "false"),
            ])
        );
        assert_eq!(s.backup.host, "10.2.3.4");
        assert_eq!(s.backup.port, 6380);
        assert_eq!(s.backup.username, None);
        assert_eq!(s.backup.password.as_deref(), Some("s3cret-backup"));
    }

    #[test]
    fn load_any_tells_the_kinds_apart() {
        assert!(matches!(
            parse_any(ORIGINAL_PROXY, "p.toml"),
            Ok(Loaded::Proxy(_))
        ));
        assert!(matches!(
            parse_any(ORIGINAL_REPLAY, "r.toml"),
            Ok(Loaded::Replay(_))
        ));
        assert!(matches!(parse_any("", "empty.toml"), Ok(Loaded::Proxy(_))));
        // Only [redis] is enough to be a replay file, which then lacks [receiver].
        let e = parse_any("[redis]\nconnport = 6380\n", "r.toml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("r.toml: receiver: the [receiver] table is missing"),
            "{e}"
        );
    }

    #[test]
    fn load_reads_files_and_names_them_in_errors() {
        let dir = std::env::temp_dir().join(format!("remoteback-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("proxy.toml");
        std::fs::write(&good, "bindport = 7000\n").unwrap();
        assert_eq!(load_proxy(&good).unwrap().bind_port, 7000);
        assert!(matches!(load_any(&good), Ok(Loaded::Proxy(_))));

        let replay = dir.join("replay.toml");
        std::fs::write(&replay, ORIGINAL_REPLAY).unwrap();
        assert_eq!(load_replay(&replay).unwrap().backup.port, 6380);

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "\nbindport = 'abc'\n").unwrap();
        let e = load_proxy(&bad).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:2: bindport: expected an integer 1-65535, got \"abc\"",
                bad.display()
            )
        );

        let missing = dir.join("missing.toml");
        let e = load_replay(&missing).unwrap_err();
        assert!(e.to_string().starts_with(&format!(
            "{}: cannot read the configuration file: ",
            missing.display()
        )));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syntax_errors_carry_tomls_message_file_and_line() {
        let e = parse_proxy("bindport = 6666\nconnip = 10.0.0.1\n", "proxy.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("proxy.toml:2:"), "{e}");
        assert!(e.contains("invalid TOML: "), "{e}");

        let e = parse_replay("message = 'ROW'\n\n[redis]\n[redis]\n", "replay.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("replay.toml:4:"), "{e}");
        assert!(e.contains("duplicate key"), "{e}");
    }

    #[test]
    fn check_config_prints_every_proxy_setting() {
        let loaded = parse_any(ORIGINAL_PROXY, "p.toml").unwrap();
        assert_eq!(
            loaded.to_string(),
            format!(
                r#"# proxy configuration, effective settings
bindip = "0.0.0.0"
bindport = 6666
bindtls = false
connip = "10.1.2.3"
connport = 6379
conntls = false
# connusername not set
# connpassword not set
message = "ROW"
worker = "coroutine"
# worker_threads not set: {threads}, half the cores, at least one
share_upstream = true
heartbeat_ms = 1000
rsptimeout = 5000
maxclients = 10000
tcp_keepalive = 300
timeout = 0 # idle clients are never closed
client_output_buffer_limit = "268435456 67108864 60"
client_query_buffer_limit = 1073741824
proto_max_bulk_len = 536870912
backlog_bytes = 268435456
on_backlog_full = "block"
ack = "redis"
# metrics not set: no /metrics or /health endpoint
# admin_token not set: sync and repair are taken from loopback addresses only

[[sender]]
class = "LogSender"
logger = "remoteback::capture"
level = "debug"

[[sender]]
class = "KafkaSender"
topic = "redis-capture"
# filter not set: every command Redis would replicate
"bootstrap.servers" = "kafka1.dc2:9092,kafka2.dc2:9092"
acks = "all"
"linger.ms" = "5"
retries = "3"
"compression.type" = "lz4"
"enable.idempotence" = "true""#,
                threads = remoteback_proxy::default_worker_threads()
            )
        );
    }

    #[test]
    fn check_config_prints_defaults() {
        let loaded = parse_any("", "empty.toml").unwrap();
        assert_eq!(
            loaded.to_string(),
            format!(
                r#"# proxy configuration, effective settings
bindip = "127.0.0.1"
bindport = 6666
bindtls = false
connip = "127.0.0.1"
connport = 6379
conntls = false
# connusername not set
# connpassword not set
message = "PROTOCOL"
worker = "coroutine"
# worker_threads not set: {threads}, half the cores, at least one
share_upstream = true
heartbeat_ms = 1000
rsptimeout = 10000
maxclients = 10000
tcp_keepalive = 300
timeout = 0 # idle clients are never closed
client_output_buffer_limit = "268435456 67108864 60"
client_query_buffer_limit = 1073741824
proto_max_bulk_len = 536870912
backlog_bytes = 268435456
on_backlog_full = "block"
ack = "redis"
# metrics not set: no /metrics or /health endpoint
# admin_token not set: sync and repair are taken from loopback addresses only

# no [[sender]]: commands are proxied, nothing is captured"#,
                threads = remoteback_proxy::default_worker_threads()
            )
        );
        let loaded = parse_any("rsptimeout = 0\n[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\nfilter = ['set', 'Del']\nbootstrap-servers = 'k:9092'\nsasl-password = 'hunter2'\n", "p.toml").unwrap();
        let text = loaded.to_string();
        assert!(text.contains("rsptimeout = 0 # wait forever\n"), "{text}");
        assert!(text.contains("filter = [\"DEL\", \"SET\"]\n"), "{text}");
        assert!(text.ends_with("\"sasl.password\" = \"***\""), "{text}");
        assert!(!text.contains("hunter2"), "{text}");

        let loaded = parse_any("connusername = 'sync'\nconnpassword = 'pw-hunter3'\nadmin_token = 'token-hunter4-0123'\n", "p.toml").unwrap();
        let text = loaded.to_string();
        assert!(
            text.contains("connusername = \"sync\"\nconnpassword = \"***\"\n"),
            "{text}"
        );
        assert!(text.contains("admin_token = \"***\"\n"), "{text}");
        assert!(
            !text.contains("hunter3") && !text.contains("hunter4"),
            "{text}"
        );
    }

    #[test]
    fn check_config_prints_replay_settings_and_hides_passwords() {
        let loaded = parse_any(ORIGINAL_REPLAY, "r.toml").unwrap();
        let text = loaded.to_string();
        assert_eq!(
            text,
            r#"# replay configuration, effective settings
message = "ROW"
worker = "coroutine"
on_apply_error = "continue"
on_bad_record = "stop"
# metrics not set: no /metrics or /health endpoint

[receiver]
class = "KafkaReceiver"
topic = ["redis-capture"]
polltimeout = 200
# partitions not set: every partition of each topic
start = "earliest"
"bootstrap.servers" = "kafka1.dc2:9092,kafka2.dc2:9092"
"group.id" = "redis-backup-dc2"
"auto.offset.reset" = "earliest"
"enable.auto.commit" = "false"

[redis]
connip = "10.2.3.4"
connport = 6380
tls = false
# username not set
password = "***""#
        );
        assert!(!text.contains("s3cret"));

        let loaded = parse_any(
            "[receiver]\nclass = 'KafkaReceiver'\ntopic = ['a', 'b']\nbootstrap-servers = 'k:9092'\n\
             sasl-username = 'svc'\nsasl-password = 'kpass'\n[redis]\nusername = 'repl'\n",
            "r.toml",
        )
        .unwrap();
        let text = loaded.to_string();
        assert!(
            text.contains("topic = [\"a\", \"b\"]\npolltimeout = 100\n"),
            "{text}"
        );
        assert!(text.contains("\"sasl.username\" = \"svc\"\n"), "{text}");
        assert!(text.contains("\"sasl.password\" = \"***\"\n"), "{text}");
        assert!(
            text.contains("\"group.id\" = \"remoteback-replay\"\n"),
            "{text}"
        );
        assert!(
            text.ends_with("username = \"repl\"\n# password not set"),
            "{text}"
        );
        assert!(!text.contains("kpass"), "{text}");

        let loaded = parse_any(
            "on_apply_error = 'stop'\n[receiver]\nclass = 'KafkaReceiver'\ntopic = 't'\n\
             partitions = [1, 2]\nstart = 'latest'\nbootstrap-servers = 'k:9092'\n[redis]\n",
            "r.toml",
        )
        .unwrap();
        let text = loaded.to_string();
        assert!(text.contains("on_apply_error = \"stop\"\n"), "{text}");
        assert!(
            text.contains("partitions = [1, 2]\nstart = \"latest\"\n"),
            "{text}"
        );
        let again = parse_any(&text, "printed.toml").unwrap();
        assert_eq!(again, loaded);
    }

    #[test]
    fn printed_settings_load_back_to_the_same_settings() {
        for (text, origin) in [(ORIGINAL_PROXY, "p.toml"), (ORIGINAL_REPLAY, "r.toml")] {
            let loaded = parse_any(text, origin).unwrap();
            let printed = loaded.to_string();
            let again = parse_any(&printed, "printed.toml").unwrap();
            match (&loaded, &again) {
                // The password is masked, so it comes back as "***".
                (Loaded::Replay(a), Loaded::Replay(b)) => {
                    assert_eq!(a.receiver, b.receiver);
                    assert_eq!(b.backup.password.as_deref(), Some("***"));
                }
                _ => assert_eq!(loaded, again),
            }
        }
    }
}

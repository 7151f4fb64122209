//! The replay's file: record format, scheduling, the `[receiver]` it
//! consumes through and the backup `[redis]` it writes to.

use std::time::Duration;

use remoteback_protocol::{Format, Worker};
use remoteback_replay::settings::{
    BackupSettings, OnApplyError, OnBadRecord, ReceiverSettings, ReplaySettings, Start,
};
use toml::de::{DeTable, DeValue};

use super::common::{self, DEFAULT_REDIS_IP, DEFAULT_REDIS_PORT};
use super::kafka::{self, Properties};
use super::source::{in_file_order, join, Key, Source, Value};
use super::suggest;
use super::tls::TlsKeys;
use super::ConfigError;

const DEFAULT_POLLTIMEOUT_MS: u64 = 100;
const DEFAULT_GROUP_ID: &str = "remoteback-replay";

/// Top-level keys of a replay file.
const KEYS: &[&str] = &[
    "message",
    "worker",
    "on_apply_error",
    "on_bad_record",
    "metrics",
    "receiver",
    "redis",
];
const KEYS_TEXT: &str =
    "message, worker, on_apply_error, on_bad_record, metrics, [receiver], [redis]";
/// Proxy keys, pointed out when they turn up in a replay file.
const PROXY_KEYS: &[&str] = &["bindip", "bindport", "rsptimeout", "sender"];

/// Keys of `[receiver]` that are not Kafka properties.
const RECEIVER_KEYS: &[&str] = &["class", "topic", "partitions", "start", "polltimeout"];
const RECEIVER_TAKES: &str =
    "[receiver] takes class, topic, partitions, start, polltimeout and Kafka client properties";
const REDIS_KEYS: &[&str] = &[
    "connip",
    "connport",
    "password",
    "username",
    "tls",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_server_name",
];
const REDIS_TAKES: &str = "[redis] takes connip, connport, password, username, tls, \
                           tls_ca_file, tls_cert_file, tls_key_file and tls_server_name";

/// The replay's settings from a parsed file.
pub(super) fn settings(src: Source<'_>, doc: &DeTable<'_>) -> Result<ReplaySettings, ConfigError> {
    let mut message = Format::default();
    let mut worker = Worker::default();
    let mut on_apply_error = OnApplyError::default();
    let mut on_bad_record = OnBadRecord::default();
    let mut metrics = None;
    let mut receiver_settings = None;
    let mut backup_settings = None;
    for (key, value) in in_file_order(doc) {
        let name = key.get_ref().as_ref();
        let path = join("", name);
        match name {
            "message" => message = common::message(src, &path, value)?,
            "worker" => worker = common::worker(src, &path, value)?,
            "on_apply_error" => on_apply_error = self::on_apply_error(src, &path, value)?,
            "on_bad_record" => {
                on_bad_record = common::choice(
                    src,
                    &path,
                    value,
                    &[("stop", OnBadRecord::Stop), ("skip", OnBadRecord::Skip)],
                )?
            }
            "metrics" => metrics = Some(common::listen_address(src, &path, value)?),
            "receiver" => receiver_settings = Some(receiver(src, value)?),
            "redis" => backup_settings = Some(redis(src, value)?),
            _ => return Err(unknown_top_level(src, key)),
        }
    }
    let receiver = receiver_settings.ok_or_else(|| {
        src.error_unlocated(
            "receiver",
            "the [receiver] table is missing; it needs class = \"KafkaReceiver\", \
             topic and bootstrap-servers",
        )
    })?;
    let backup = backup_settings.ok_or_else(|| {
        src.error_unlocated(
            "redis",
            "the [redis] table is missing; it gives the backup Redis (connip, connport, \
             and password or username if it needs them)",
        )
    })?;
    Ok(ReplaySettings {
        message,
        worker,
        on_apply_error,
        on_bad_record,
        metrics,
        receiver,
        backup,
    })
}

fn unknown_top_level(src: Source<'_>, key: &Key<'_>) -> ConfigError {
    let name = key.get_ref().as_ref();
    let underscored = name.replace('-', "_");
    let hint = if underscored != name && KEYS.contains(&underscored.as_str()) {
        format!(" (did you mean `{underscored}`?)")
    } else if REDIS_KEYS.contains(&name) {
        " (it belongs inside the [redis] table)".to_owned()
    } else if PROXY_KEYS.contains(&name) {
        " (it belongs in a proxy configuration)".to_owned()
    } else if RECEIVER_KEYS.contains(&name) || name.contains('-') || name.contains('.') {
        " (it belongs inside the [receiver] table)".to_owned()
    } else {
        suggest::did_you_mean(name, KEYS)
    };
    src.error(
        &key.span(),
        &join("", name),
        format!("unknown key{hint}; a replay configuration takes {KEYS_TEXT}"),
    )
}

/// `value` as a single table, written `[name]`.
fn table<'v, 'i>(
    src: Source<'_>,
    name: &str,
    value: &'v Value<'i>,
) -> Result<&'v DeTable<'i>, ConfigError> {
    match value.get_ref() {
        DeValue::Table(table) => Ok(table),
        _ => Err(src.unexpected(name, value, &format!("a table, written [{name}]"))),
    }
}

/// The `[receiver]` table.
fn receiver(src: Source<'_>, value: &Value<'_>) -> Result<ReceiverSettings, ConfigError> {
    const PATH: &str = "receiver";
    const CLASSES: &str = "KafkaReceiver (or a fully qualified name ending in .KafkaReceiver)";
    let table = table(src, PATH, value)?;
    let span = value.span();
    match table.get("class") {
        None => {
            return Err(src.error(
                &span,
                PATH,
                format!("key `class` is missing; it must be {CLASSES}"),
            ))
        }
        Some(class) => {
            let class_path = join(PATH, "class");
            let name = src.string(&class_path, class, "a receiver class name")?;
            let simple = name.rsplit('.').next().unwrap_or(name);
            if !simple.eq_ignore_ascii_case("KafkaReceiver") {
                let hint = suggest::did_you_mean(simple, &["KafkaReceiver"]);
                return Err(src.error(
                    &class.span(),
                    &class_path,
                    format!("unknown receiver class {name:?}{hint}; accepted: {CLASSES}"),
                ));
            }
        }
    }
    let mut topics = None;
    let mut partitions = None;
    let mut start = Start::default();
    let mut poll_timeout = Duration::from_millis(DEFAULT_POLLTIMEOUT_MS);
    let mut properties = Properties::new(PATH);
    for (key, value) in in_file_order(table) {
        let name = key.get_ref().as_ref();
        let key_path = join(PATH, name);
        match name {
            "class" => {}
            "topic" => topics = Some(self::topics(src, &key_path, value)?),
            "partitions" => partitions = Some(self::partitions(src, &key_path, value)?),
            "start" => start = self::start(src, &key_path, value)?,
            "polltimeout" => {
                let ms = src.integer(
                    &key_path,
                    value,
                    1..=i64::MAX,
                    "a number of milliseconds > 0",
                )?;
                poll_timeout = Duration::from_millis(ms.unsigned_abs());
            }
            _ if KEYS.contains(&name) || REDIS_KEYS.contains(&name) => {
                let place = if KEYS.contains(&name) {
                    "a top-level key: move it above [receiver]"
                } else {
                    "a [redis] key: move it into the [redis] table"
                };
                return Err(src.error(
                    &key.span(),
                    PATH,
                    format!(
                        "key `{name}` is not allowed here (`{name}` is {place}, since every key \
                         after a [receiver] header belongs to it); {RECEIVER_TAKES}"
                    ),
                ));
            }
            // `topics`, `poll-timeout`: misspellings, not Kafka properties.
            _ if !name.contains('.')
                && suggest::closest(&name.replace(['-', '_'], ""), RECEIVER_KEYS).is_some() =>
            {
                let hint = suggest::did_you_mean(&name.replace(['-', '_'], ""), RECEIVER_KEYS);
                return Err(src.error(
                    &key.span(),
                    PATH,
                    format!("key `{name}` is not allowed here{hint}; {RECEIVER_TAKES}"),
                ));
            }
            _ => properties.add(src, key, value)?,
        }
    }
    let Some(topics) = topics else {
        return Err(src.error(
            &span,
            PATH,
            "key `topic` is missing; it names the topic (or array of topics) to replay",
        ));
    };
    properties.require(
        src,
        PATH,
        &span,
        kafka::BOOTSTRAP_SERVERS,
        "kafka1:9092,kafka2:9092",
    )?;
    properties.default("group.id", DEFAULT_GROUP_ID);
    Ok(ReceiverSettings {
        topics,
        partitions,
        start,
        poll_timeout,
        kafka: properties.into_vec(),
    })
}

/// A key that takes one value or a non-empty array of them: each item with
/// its key path (`topic[1]`). `single` tells a lone value from a wrong type.
fn one_or_many<'a, 'v>(
    src: Source<'_>,
    path: &str,
    value: &'a Value<'v>,
    single: fn(&DeValue<'v>) -> bool,
    expected: &str,
) -> Result<Vec<(String, &'a Value<'v>)>, ConfigError> {
    match value.get_ref() {
        v if single(v) => Ok(vec![(path.to_owned(), value)]),
        DeValue::Array(items) if !items.is_empty() => Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| (format!("{path}[{i}]"), item))
            .collect()),
        _ => Err(src.unexpected(path, value, expected)),
    }
}

/// `topic = "a"` or `topic = ["a", "b"]`.
fn topics(src: Source<'_>, path: &str, value: &Value<'_>) -> Result<Vec<String>, ConfigError> {
    const EXPECTED: &str = "a topic name or a non-empty array of topic names";
    let items = one_or_many(
        src,
        path,
        value,
        |v| matches!(v, DeValue::String(_)),
        EXPECTED,
    )?;
    let mut topics: Vec<String> = Vec::with_capacity(items.len());
    for (item_path, item) in items {
        let topic = src.word(&item_path, item, "a topic name")?;
        if topics.contains(&topic) {
            return Err(src.error(
                &item.span(),
                &item_path,
                format!("topic {topic:?} is listed twice"),
            ));
        }
        topics.push(topic);
    }
    Ok(topics)
}

/// `on_apply_error = "continue" | "stop"`, in any case.
fn on_apply_error(
    src: Source<'_>,
    path: &str,
    value: &Value<'_>,
) -> Result<OnApplyError, ConfigError> {
    common::choice(
        src,
        path,
        value,
        &[
            ("continue", OnApplyError::Continue),
            ("stop", OnApplyError::Stop),
        ],
    )
}

/// `start = "earliest" | "latest"`, in any case.
fn start(src: Source<'_>, path: &str, value: &Value<'_>) -> Result<Start, ConfigError> {
    common::choice(
        src,
        path,
        value,
        &[("earliest", Start::Earliest), ("latest", Start::Latest)],
    )
}

/// `partitions = [0, 2]` (or a single number): partition numbers, each once.
fn partitions(src: Source<'_>, path: &str, value: &Value<'_>) -> Result<Vec<i32>, ConfigError> {
    const EXPECTED: &str = "a partition number or a non-empty array of partition numbers";
    const NUMBER: &str = "a partition number (an integer 0 or more)";
    let items = one_or_many(
        src,
        path,
        value,
        |v| matches!(v, DeValue::Integer(_)),
        EXPECTED,
    )?;
    let mut partitions: Vec<i32> = Vec::with_capacity(items.len());
    for (item_path, item) in items {
        if !matches!(item.get_ref(), DeValue::Integer(_)) {
            return Err(src.unexpected(&item_path, item, NUMBER));
        }
        let n = src.integer(&item_path, item, 0..=i64::from(i32::MAX), NUMBER)?;
        let n = i32::try_from(n).expect("checked range");
        if partitions.contains(&n) {
            return Err(src.error(
                &item.span(),
                &item_path,
                format!("partition {n} is listed twice"),
            ));
        }
        partitions.push(n);
    }
    Ok(partitions)
}

/// The `[redis]` table: the backup Redis.
fn redis(src: Source<'_>, value: &Value<'_>) -> Result<BackupSettings, ConfigError> {
    const PATH: &str = "redis";
    let table = table(src, PATH, value)?;
    let mut backup = BackupSettings {
        host: DEFAULT_REDIS_IP.to_owned(),
        port: DEFAULT_REDIS_PORT,
        tls: None,
        username: None,
        password: None,
    };
    let mut tls = TlsKeys::new(PATH, "tls");
    for (key, value) in in_file_order(table) {
        let name = key.get_ref().as_ref();
        let key_path = join(PATH, name);
        match name {
            "connip" => backup.host = common::host(src, &key_path, value)?,
            "connport" => backup.port = common::port(src, &key_path, value)?,
            "password" => backup.password = common::optional(src, &key_path, value, "a password")?,
            "username" => backup.username = common::optional(src, &key_path, value, "a user name")?,
            _ if tls.read(src, name, value)? => {}
            _ => {
                let hint = if KEYS.contains(&name) {
                    format!(
                        " (`{name}` is a top-level key: move it above [redis], since every key \
                         after a [redis] header belongs to it)"
                    )
                } else {
                    suggest::did_you_mean(name, REDIS_KEYS)
                };
                return Err(src.error(
                    &key.span(),
                    PATH,
                    format!("key `{name}` is not allowed here{hint}; {REDIS_TAKES}"),
                ));
            }
        }
    }
    backup.tls = tls.finish(src, &backup.host)?;
    Ok(backup)
}

/// An optional string; empty means not set.
#[cfg(test)]
mod tests {
    use super::super::parse_replay;
    use super::super::tests::warnings_from;
    use super::*;

    const MINIMAL: &str = "[receiver]\nclass = 'KafkaReceiver'\ntopic = 'writes'\nbootstrap-servers = 'k1:9092'\n\n[redis]\n";

    fn parse(text: &str) -> ReplaySettings {
        parse_replay(text, "replay.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        parse_replay(text, "replay.toml").unwrap_err().to_string()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        assert_eq!(
            parse(MINIMAL),
            ReplaySettings {
                message: Format::Protocol,
                worker: Worker::Coroutine,
                on_apply_error: OnApplyError::Continue,
                on_bad_record: OnBadRecord::Stop,
                metrics: None,
                receiver: ReceiverSettings {
                    topics: vec!["writes".into()],
                    partitions: None,
                    start: Start::Earliest,
                    poll_timeout: Duration::from_millis(100),
                    kafka: pairs(&[
                        ("bootstrap.servers", "k1:9092"),
                        ("group.id", "remoteback-replay"),
                    ]),
                },
                backup: BackupSettings {
                    host: "127.0.0.1".into(),
                    port: 6379,
                    tls: None,
                    username: None,
                    password: None,
                },
            }
        );
    }

    #[test]
    fn every_key() {
        let s = parse(
            r#"
message = "protocol"
worker = "thread"
on_apply_error = "Stop"

[receiver]
class = "KafkaReceiver"
topic = ["a", "b"]
partitions = [2, 0]
start = "LATEST"
polltimeout = 50
bootstrap-servers = "k1:9092,k2:9092"
group-id = "dr"
auto-offset-reset = "earliest"
fetch-wait-max-ms = 10
"enable.partition.eof" = false

[redis]
connip = "10.0.0.9"
connport = 6380
username = "replayer"
password = "pw"
"#,
        );
        assert_eq!(s.message, Format::Protocol);
        assert_eq!(s.worker, Worker::Thread);
        assert_eq!(s.on_apply_error, OnApplyError::Stop);
        let skip = parse(&format!("on_bad_record = 'Skip'\n{MINIMAL}"));
        assert_eq!(skip.on_bad_record, OnBadRecord::Skip);
        assert_eq!(
            error(&format!("on_bad_record = 'continue'\n{MINIMAL}")),
            "replay.toml:1: on_bad_record: expected one of stop, skip, got \"continue\""
        );
        assert_eq!(s.receiver.topics, ["a", "b"]);
        assert_eq!(s.receiver.partitions, Some(vec![2, 0]));
        assert_eq!(s.receiver.start, Start::Latest);
        assert_eq!(s.receiver.poll_timeout, Duration::from_millis(50));
        assert_eq!(
            s.receiver.kafka,
            pairs(&[
                ("bootstrap.servers", "k1:9092,k2:9092"),
                ("group.id", "dr"),
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", "10"),
                ("enable.partition.eof", "false"),
            ])
        );
        assert_eq!(
            s.backup,
            BackupSettings {
                host: "10.0.0.9".into(),
                port: 6380,
                tls: None,
                username: Some("replayer".into()),
                password: Some("pw".into()),
            }
        );
    }

    #[test]
    fn empty_credentials_are_not_set() {
        let s = parse(&format!("{MINIMAL}password = ''\nusername = ''\n"));
        assert_eq!(s.backup.password, None);
        assert_eq!(s.backup.username, None);
    }

    #[test]
    fn class_name_variants() {
        for class in [
            "KafkaReceiver",
            "com.remoteback.receiver.KafkaReceiver",
            "kafkareceiver",
        ] {
            let text = MINIMAL.replace("'KafkaReceiver'", &format!("'{class}'"));
            assert_eq!(parse(&text).receiver.topics, ["writes"], "{class}");
        }
    }

    #[test]
    fn worker_rx_is_coroutine_with_a_warning() {
        let (s, warnings) = warnings_from(|| parse(&format!("worker = 'RX'\n{MINIMAL}")));
        assert_eq!(s.worker, Worker::Coroutine);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("replay.toml:1: worker = \"RX\""),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_single_partition_may_be_a_number() {
        let text = MINIMAL.replace("'k1:9092'", "'k1:9092'\npartitions = 3");
        assert_eq!(parse(&text).receiver.partitions, Some(vec![3]));
    }

    // Error messages.

    #[test]
    fn partitions_start_and_on_apply_error_errors() {
        let with = |line: &str| MINIMAL.replace("'k1:9092'", &format!("'k1:9092'\n{line}"));
        assert_eq!(
            error(&with("partitions = []")),
            "replay.toml:5: receiver.partitions: expected a partition number or a non-empty \
             array of partition numbers, got an array"
        );
        assert_eq!(
            error(&with("partitions = [0, 2, 0]")),
            "replay.toml:5: receiver.partitions[2]: partition 0 is listed twice"
        );
        assert_eq!(
            error(&with("partitions = [0, -1]")),
            "replay.toml:5: receiver.partitions[1]: expected a partition number (an integer 0 \
             or more), got -1"
        );
        assert_eq!(
            error(&with("partitions = ['1']")),
            "replay.toml:5: receiver.partitions[0]: expected a partition number (an integer 0 \
             or more), got \"1\""
        );
        assert_eq!(
            error(&with("partitions = 'all'")),
            "replay.toml:5: receiver.partitions: expected a partition number or a non-empty \
             array of partition numbers, got \"all\""
        );
        assert_eq!(
            error(&with("start = 'beginning'")),
            "replay.toml:5: receiver.start: expected one of earliest, latest, got \"beginning\""
        );
        assert_eq!(
            error(&with("partition = [1]")),
            "replay.toml:5: receiver: key `partition` is not allowed here (did you mean \
             `partitions`?); [receiver] takes class, topic, partitions, start, polltimeout and \
             Kafka client properties"
        );
        assert_eq!(
            error(&format!("on_apply_error = 'skip'\n{MINIMAL}")),
            "replay.toml:1: on_apply_error: expected one of continue, stop, got \"skip\""
        );
        assert_eq!(
            error(&format!("on-apply-error = 'stop'\n{MINIMAL}")),
            "replay.toml:1: on-apply-error: unknown key (did you mean `on_apply_error`?); a \
             replay configuration takes message, worker, on_apply_error, on_bad_record, metrics, \
             [receiver], [redis]"
        );
        assert_eq!(
            error(&with("on_apply_error = 'stop'")),
            "replay.toml:5: receiver: key `on_apply_error` is not allowed here \
             (`on_apply_error` is a top-level key: move it above [receiver], since every key \
             after a [receiver] header belongs to it); [receiver] takes class, topic, \
             partitions, start, polltimeout and Kafka client properties"
        );
    }

    #[test]
    fn missing_tables() {
        assert_eq!(
            error("[redis]\n"),
            "replay.toml: receiver: the [receiver] table is missing; it needs class = \
             \"KafkaReceiver\", topic and bootstrap-servers"
        );
        let without_redis = MINIMAL.replace("[redis]\n", "");
        assert_eq!(
            error(&without_redis),
            "replay.toml: redis: the [redis] table is missing; it gives the backup Redis \
             (connip, connport, and password or username if it needs them)"
        );
        assert_eq!(
            error(&format!("{MINIMAL}[[receiver]]\n")),
            "replay.toml:7:3: invalid TOML: duplicate key"
        );
        assert_eq!(
            error("[[receiver]]\nclass = 'KafkaReceiver'\n[redis]\n"),
            "replay.toml:1: receiver: expected a table, written [receiver], got an array"
        );
        assert_eq!(
            error("receiver = 'kafka'\n[redis]\n"),
            "replay.toml:1: receiver: expected a table, written [receiver], got \"kafka\""
        );
    }

    #[test]
    fn receiver_class() {
        assert_eq!(
            error("[receiver]\ntopic = 't'\n[redis]\n"),
            "replay.toml:1: receiver: key `class` is missing; it must be KafkaReceiver (or a \
             fully qualified name ending in .KafkaReceiver)"
        );
        assert_eq!(
            error("[receiver]\nclass = 'com.example.KafkaReciever'\n[redis]\n"),
            "replay.toml:2: receiver.class: unknown receiver class \"com.example.KafkaReciever\" \
             (did you mean `KafkaReceiver`?); accepted: KafkaReceiver (or a fully qualified name \
             ending in .KafkaReceiver)"
        );
    }

    #[test]
    fn receiver_keys() {
        let text = MINIMAL.replace("topic = 'writes'\n", "");
        assert_eq!(
            error(&text),
            "replay.toml:1: receiver: key `topic` is missing; it names the topic (or array of \
             topics) to replay"
        );
        let text = MINIMAL.replace("topic = 'writes'", "topic = []");
        assert_eq!(
            error(&text),
            "replay.toml:3: receiver.topic: expected a topic name or a non-empty array of topic \
             names, got an array"
        );
        let text = MINIMAL.replace("topic = 'writes'", "topic = ['a', 'a']");
        assert_eq!(
            error(&text),
            "replay.toml:3: receiver.topic[1]: topic \"a\" is listed twice"
        );
        let text = MINIMAL.replace("'k1:9092'", "'k1:9092'\npolltimeout = 0");
        assert_eq!(
            error(&text),
            "replay.toml:5: receiver.polltimeout: expected a number of milliseconds > 0, got 0"
        );
        let text = MINIMAL.replace("'k1:9092'", "'k1:9092'\npoll-timeout = 10");
        assert_eq!(
            error(&text),
            "replay.toml:5: receiver: key `poll-timeout` is not allowed here (did you mean \
             `polltimeout`?); [receiver] takes class, topic, partitions, start, polltimeout and Kafka client properties"
        );
        let text = MINIMAL.replace("bootstrap-servers = 'k1:9092'\n", "group-id = 'g'\n");
        assert_eq!(
            error(&text),
            "replay.toml:1: receiver: Kafka property `bootstrap-servers` is required; add for \
             example bootstrap-servers = \"kafka1:9092,kafka2:9092\""
        );
        let text = MINIMAL.replace("'k1:9092'", "'k1:9092'\nconnport = 6380");
        assert_eq!(
            error(&text),
            "replay.toml:5: receiver: key `connport` is not allowed here (`connport` is a [redis] \
             key: move it into the [redis] table, since every key after a [receiver] header \
             belongs to it); [receiver] takes class, topic, partitions, start, polltimeout and Kafka client properties"
        );
        let text = MINIMAL.replace("'k1:9092'", "'k1:9092'\nmax-poll-records = [1]");
        assert_eq!(
            error(&text),
            "replay.toml:5: receiver.max-poll-records: Kafka property `max.poll.records` must be \
             a string, integer or boolean, got an array; list several values in one \
             comma-separated string (\"a,b\")"
        );
    }

    #[test]
    fn redis_keys() {
        assert_eq!(
            error(&format!("{MINIMAL}connport = 'x'\n")),
            "replay.toml:7: redis.connport: expected an integer 1-65535, got \"x\""
        );
        assert_eq!(
            error(&format!("{MINIMAL}passwd = 'x'\n")),
            "replay.toml:7: redis: key `passwd` is not allowed here (did you mean `password`?); \
             [redis] takes connip, connport, password, username, tls, tls_ca_file, tls_cert_file, \
             tls_key_file and tls_server_name"
        );
        assert_eq!(
            error(&format!("{MINIMAL}password = 1234\n")),
            "replay.toml:7: redis.password: expected a password, got 1234"
        );
        assert_eq!(
            error(&format!("{MINIMAL}worker = 'thread'\n")),
            "replay.toml:7: redis: key `worker` is not allowed here (`worker` is a top-level \
             key: move it above [redis], since every key after a [redis] header belongs to it); \
             [redis] takes connip, connport, password, username, tls, tls_ca_file, tls_cert_file, \
             tls_key_file and tls_server_name"
        );
    }

    #[test]
    fn unknown_top_level_keys() {
        assert_eq!(
            error(&format!("mesage = 'ROW'\n{MINIMAL}")),
            "replay.toml:1: mesage: unknown key (did you mean `message`?); a replay \
             configuration takes message, worker, on_apply_error, on_bad_record, metrics, [receiver], \
             [redis]"
        );
        assert_eq!(
            error(&format!("connip = '10.0.0.1'\n{MINIMAL}")),
            "replay.toml:1: connip: unknown key (it belongs inside the [redis] table); a replay \
             configuration takes message, worker, on_apply_error, on_bad_record, metrics, [receiver], \
             [redis]"
        );
        assert_eq!(
            error(&format!("bindport = 6666\n{MINIMAL}")),
            "replay.toml:1: bindport: unknown key (it belongs in a proxy configuration); a \
             replay configuration takes message, worker, on_apply_error, on_bad_record, metrics, [receiver], \
             [redis]"
        );
        assert_eq!(
            error(&format!("group-id = 'g'\n{MINIMAL}")),
            "replay.toml:1: group-id: unknown key (it belongs inside the [receiver] table); a \
             replay configuration takes message, worker, on_apply_error, on_bad_record, metrics, [receiver], \
             [redis]"
        );
    }
}

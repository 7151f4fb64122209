//! The proxy's file: listening and upstream addresses, record format,
//! scheduling, reply timeout and the `[[sender]]` tables.

use std::collections::HashSet;
use std::ops::Range;
use std::time::Duration;

use remoteback_protocol::request::DEFAULT_MAX_BULK_LEN;
use remoteback_protocol::{Format, Worker};
use remoteback_proxy::settings::{
    AckMode, Filter, KafkaSenderSettings, LogSenderSettings, OnFull, OutputLimit, ProxySettings,
    SenderSettings, DEFAULT_BACKLOG_BYTES, DEFAULT_PACK_BYTES, DEFAULT_PACK_GAP_MS,
    DEFAULT_QUERY_BUFFER_LIMIT, MAX_SENDERS,
};
use toml::de::{DeTable, DeValue};

use super::common::{self, DEFAULT_REDIS_IP, DEFAULT_REDIS_PORT};
use super::kafka::{self, Properties};
use super::source::{in_file_order, join, Key, Source, Value};
use super::suggest;
use super::tls::TlsKeys;
use super::ConfigError;

const DEFAULT_BIND_IP: &str = "127.0.0.1";
const DEFAULT_BIND_PORT: u16 = 6666;
const DEFAULT_RSPTIMEOUT_MS: u64 = 10_000;
/// `heartbeat_ms` unless set: a second without a record on a partition.
const DEFAULT_HEARTBEAT_MS: u64 = 1_000;
const DEFAULT_LOGGER: &str = "remoteback::capture";
const DEFAULT_LEVEL: log::Level = log::Level::Info;

/// Redis's own defaults for `maxclients` and `tcp-keepalive`.
const DEFAULT_MAX_CLIENTS: usize = 10_000;
const DEFAULT_TCP_KEEPALIVE_S: u64 = 300;
/// The least `proto-max-bulk-len` Redis takes (1 MiB).
const MIN_PROTO_MAX_BULK_LEN: u64 = 1024 * 1024;

/// Top-level keys of a proxy file.
const KEYS: &[&str] = &[
    "bindip",
    "bindport",
    "bindtls",
    "bindtls_cert_file",
    "bindtls_key_file",
    "bindtls_ca_file",
    "connip",
    "connport",
    "connusername",
    "connpassword",
    "conntls",
    "conntls_ca_file",
    "conntls_cert_file",
    "conntls_key_file",
    "conntls_server_name",
    "message",
    "worker",
    "worker_threads",
    "rsptimeout",
    "share_upstream",
    "heartbeat_ms",
    "maxclients",
    "tcp_keepalive",
    "timeout",
    "client_output_buffer_limit",
    "client_query_buffer_limit",
    "proto_max_bulk_len",
    "backlog_bytes",
    "on_backlog_full",
    "ack",
    "metrics",
    "admin_token",
    "admin_token_file",
    "sender",
];
const KEYS_TEXT: &str = "bindip, bindport, bindtls, bindtls_cert_file, bindtls_key_file, \
                         bindtls_ca_file, connip, connport, connusername, connpassword, \
                         conntls, conntls_ca_file, conntls_cert_file, conntls_key_file, \
                         conntls_server_name, message, worker, worker_threads, rsptimeout, share_upstream, heartbeat_ms, maxclients, tcp_keepalive, timeout, \
                         client_output_buffer_limit, client_query_buffer_limit, \
                         proto_max_bulk_len, backlog_bytes, on_backlog_full, ack, metrics, \
                         admin_token, admin_token_file, [[sender]]";

/// Keys of a `[[sender]]` table that are not Kafka properties.
const LOG_KEYS: &[&str] = &["class", "logger", "level"];
const KAFKA_KEYS: &[&str] = &["class", "topic", "filter", "pack_bytes", "pack_gap_ms"];

const CLASSES_TEXT: &str = "LogSender or KafkaSender (fully qualified names ending in \
                            .LogSender, .LogRxSender or .KafkaSender are accepted too)";

/// The proxy's settings from a parsed file.
pub(super) fn settings(src: Source<'_>, doc: &DeTable<'_>) -> Result<ProxySettings, ConfigError> {
    let mut settings = ProxySettings {
        bind_ip: DEFAULT_BIND_IP.to_owned(),
        bind_port: DEFAULT_BIND_PORT,
        upstream_ip: DEFAULT_REDIS_IP.to_owned(),
        upstream_port: DEFAULT_REDIS_PORT,
        upstream_tls: None,
        client_tls: None,
        upstream_username: None,
        upstream_password: None,
        message: Format::default(),
        worker: Worker::default(),
        worker_threads: None,
        reply_timeout: Some(Duration::from_millis(DEFAULT_RSPTIMEOUT_MS)),
        share_upstream: true,
        heartbeat: Some(Duration::from_millis(DEFAULT_HEARTBEAT_MS)),
        max_clients: DEFAULT_MAX_CLIENTS,
        tcp_keepalive: Some(Duration::from_secs(DEFAULT_TCP_KEEPALIVE_S)),
        idle_timeout: None,
        output_limit: OutputLimit::default(),
        query_buffer_limit: DEFAULT_QUERY_BUFFER_LIMIT,
        proto_max_bulk_len: DEFAULT_MAX_BULK_LEN,
        backlog_bytes: DEFAULT_BACKLOG_BYTES,
        on_backlog_full: OnFull::default(),
        ack: AckMode::default(),
        metrics: None,
        admin_token: None,
        senders: Vec::new(),
    };
    let mut token_key: Option<&str> = None;
    let mut tls = TlsKeys::new("", "conntls");
    let mut client_tls = TlsKeys::new("", "bindtls");
    let mut ack_at = None;
    for (key, value) in in_file_order(doc) {
        let name = key.get_ref().as_ref();
        let path = join("", name);
        match name {
            "bindip" => settings.bind_ip = common::host(src, &path, value)?,
            "bindport" => settings.bind_port = common::port(src, &path, value)?,
            "connip" => settings.upstream_ip = common::host(src, &path, value)?,
            "connport" => settings.upstream_port = common::port(src, &path, value)?,
            "connusername" => {
                settings.upstream_username = common::optional(src, &path, value, "a user name")?
            }
            "connpassword" => {
                settings.upstream_password = common::optional(src, &path, value, "a password")?
            }
            "admin_token" | "admin_token_file" => {
                if let Some(other) = token_key {
                    return Err(src.error(
                        &key.span(),
                        &path,
                        format!("{other} is set already: give the token once"),
                    ));
                }
                settings.admin_token = Some(admin_token(src, &path, name, value)?);
                token_key = Some(name);
            }
            "message" => settings.message = common::message(src, &path, value)?,
            "worker" => settings.worker = common::worker(src, &path, value)?,
            "worker_threads" => {
                let n = src.integer(&path, value, 1..=1024, "a number of threads 1-1024")?;
                settings.worker_threads = Some(n as usize);
            }
            "rsptimeout" => {
                let ms = src.integer(
                    &path,
                    value,
                    0..=i64::MAX,
                    "a number of milliseconds >= 0 (0 waits forever)",
                )?;
                settings.reply_timeout = (ms > 0).then(|| Duration::from_millis(ms.unsigned_abs()));
            }
            "share_upstream" => {
                let DeValue::Boolean(on) = value.get_ref() else {
                    return Err(src.unexpected(&path, value, "true or false"));
                };
                settings.share_upstream = *on;
            }
            "heartbeat_ms" => {
                const EXPECTED: &str = "0 (no heartbeats) or a number of milliseconds 100-3600000";
                let ms = src.integer(&path, value, 0..=3_600_000, EXPECTED)?;
                if (1..100).contains(&ms) {
                    // Each heartbeat is a message and a state update on the
                    // backup, per partition.
                    return Err(src.unexpected(&path, value, EXPECTED));
                }
                settings.heartbeat = (ms > 0).then(|| Duration::from_millis(ms.unsigned_abs()));
            }
            "maxclients" => {
                settings.max_clients =
                    src.integer(&path, value, 1..=1_000_000, "a number of clients 1-1000000")?
                        as usize
            }
            "tcp_keepalive" => {
                let s = src.integer(
                    &path,
                    value,
                    0..=86_400,
                    "a number of seconds 0-86400 (0 sends no keepalive probes)",
                )?;
                settings.tcp_keepalive = (s > 0).then(|| Duration::from_secs(s.unsigned_abs()));
            }
            "timeout" => {
                let s = src.integer(
                    &path,
                    value,
                    0..=i64::from(u32::MAX),
                    "a number of seconds >= 0 (0 never closes an idle client)",
                )?;
                settings.idle_timeout = (s > 0).then(|| Duration::from_secs(s.unsigned_abs()));
            }
            "client_output_buffer_limit" => {
                settings.output_limit = output_limit(src, &path, value)?
            }
            "client_query_buffer_limit" => {
                settings.query_buffer_limit =
                    at_least_1mb(src, &path, value, "client-query-buffer-limit", "1gb")?
            }
            "proto_max_bulk_len" => {
                settings.proto_max_bulk_len =
                    at_least_1mb(src, &path, value, "proto-max-bulk-len", "512mb")?
            }
            "backlog_bytes" => settings.backlog_bytes = common::bytes(src, &path, value)?,
            "on_backlog_full" => settings.on_backlog_full = on_backlog_full(src, &path, value)?,
            "ack" => {
                settings.ack = ack(src, &path, value)?;
                ack_at = Some(value.span());
            }
            "metrics" => settings.metrics = Some(common::listen_address(src, &path, value)?),
            "sender" => settings.senders = senders(src, value)?,
            _ if tls.read(src, name, value)? => {}
            _ if client_tls.read(src, name, value)? => {}
            _ => return Err(unknown_top_level(src, key)),
        }
    }
    settings.upstream_tls = tls.finish(src, &settings.upstream_ip)?;
    settings.client_tls = client_tls.finish_server(src)?;
    if let (AckMode::Kafka, Some(span)) = (settings.ack, ack_at) {
        if settings.message == Format::Row {
            return Err(src.error(
                &span,
                "ack",
                "ack = \"kafka\" needs message = \"PROTOCOL\" or \"STRING\": ROW records are \
                 the client's requests, not writes the primary answered",
            ));
        }
        if !settings
            .senders
            .iter()
            .any(|s| matches!(s, SenderSettings::Kafka(_)))
        {
            return Err(src.error(
                &span,
                "ack",
                "ack = \"kafka\" needs a [[sender]] with class = \"KafkaSender\"",
            ));
        }
    }
    if settings.senders.is_empty() {
        log::warn!(
            "{}: no [[sender]] table: commands are proxied but nothing is captured",
            src.origin
        );
    }
    Ok(settings)
}

/// `client_output_buffer_limit = "<hard> <soft> <seconds>"`, as Redis's
/// directive without its class: sizes as `backlog_bytes` takes them in a
/// string ("256mb"), 0 for none.
fn output_limit(
    src: Source<'_>,
    path: &str,
    value: &Value<'_>,
) -> Result<OutputLimit, ConfigError> {
    const EXPECTED: &str = "\"<hard> <soft> <seconds>\" such as \"256mb 64mb 60\" \
                            (sizes in bytes or with k, kb, m, mb, g, gb; 0 for no limit)";
    let text = src.string(path, value, EXPECTED)?;
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [hard, soft, seconds] = parts[..] else {
        return Err(src.unexpected(path, value, EXPECTED));
    };
    let size = |t: &str| common::parse_size(t).ok_or_else(|| src.unexpected(path, value, EXPECTED));
    let limit = OutputLimit {
        hard: size(hard)?,
        soft: size(soft)?,
        soft_for: Duration::from_secs(
            seconds
                .parse::<u64>()
                .map_err(|_| src.unexpected(path, value, EXPECTED))?,
        ),
    };
    if limit.hard > 0 && limit.soft > limit.hard {
        return Err(src.error(
            &value.span(),
            path,
            format!("the soft limit ({soft}) is above the hard limit ({hard})"),
        ));
    }
    Ok(limit)
}

/// `proto_max_bulk_len`, `client_query_buffer_limit`: a size as
/// `backlog_bytes` takes it, within the range Redis takes for its
/// directive `redis_name` (1mb up).
fn at_least_1mb(
    src: Source<'_>,
    path: &str,
    value: &Value<'_>,
    redis_name: &str,
    example: &str,
) -> Result<u64, ConfigError> {
    let expected = format!(
        "a size in bytes of 1mb (1048576) or more, as Redis's {redis_name}: an integer, or a \
         string such as \"{example}\""
    );
    common::bytes(src, path, value)
        .ok()
        .filter(|n| (MIN_PROTO_MAX_BULK_LEN..=i64::MAX.unsigned_abs()).contains(n))
        .ok_or_else(|| src.unexpected(path, value, &expected))
}

/// The admin token: the value of `admin_token`, or the first line of the
/// file `admin_token_file` names. It is never shown again (check-config
/// masks it); at least 16 characters, so that it cannot be guessed.
fn admin_token(
    src: Source<'_>,
    path: &str,
    name: &str,
    value: &Value<'_>,
) -> Result<String, ConfigError> {
    const MIN: usize = 16;
    let token = if name == "admin_token_file" {
        let file = src.word(path, value, "the path of a file holding the admin token")?;
        let text = std::fs::read_to_string(&file)
            .map_err(|e| src.error(&value.span(), path, format!("cannot read {file}: {e}")))?;
        text.lines().next().unwrap_or_default().trim().to_owned()
    } else {
        src.string(path, value, "a token of at least 16 characters")?
            .to_owned()
    };
    if token.chars().count() < MIN {
        return Err(src.error(
            &value.span(),
            path,
            format!("the admin token must have at least {MIN} characters"),
        ));
    }
    Ok(token)
}

/// `on_backlog_full = "block" | "drop"`, in any case.
fn on_backlog_full(src: Source<'_>, path: &str, value: &Value<'_>) -> Result<OnFull, ConfigError> {
    common::choice(
        src,
        path,
        value,
        &[("block", OnFull::Block), ("drop", OnFull::Drop)],
    )
}

/// `ack = "redis" | "kafka"`, in any case.
fn ack(src: Source<'_>, path: &str, value: &Value<'_>) -> Result<AckMode, ConfigError> {
    common::choice(
        src,
        path,
        value,
        &[("redis", AckMode::Redis), ("kafka", AckMode::Kafka)],
    )
}

fn unknown_top_level(src: Source<'_>, key: &Key<'_>) -> ConfigError {
    let name = key.get_ref().as_ref();
    let hint = match name {
        "receiver" | "redis" => {
            " ([receiver] and [redis] belong in a replay configuration)".to_owned()
        }
        "class" | "topic" | "filter" | "logger" | "level" => {
            " (it belongs inside a [[sender]] table)".to_owned()
        }
        _ if name.contains('-') || name.contains('.') => {
            " (Kafka properties belong inside a [[sender]] table with class = \"KafkaSender\")"
                .to_owned()
        }
        _ => suggest::did_you_mean(name, KEYS),
    };
    src.error(
        &key.span(),
        &join("", name),
        format!("unknown key{hint}; a proxy configuration takes {KEYS_TEXT}"),
    )
}

/// The `[[sender]]` array.
fn senders(src: Source<'_>, value: &Value<'_>) -> Result<Vec<SenderSettings>, ConfigError> {
    const EXPECTED: &str = "an array of tables, written [[sender]]";
    let DeValue::Array(items) = value.get_ref() else {
        return Err(src.unexpected("sender", value, EXPECTED));
    };
    if items.len() > MAX_SENDERS {
        return Err(src.error(
            &value.span(),
            "sender",
            format!(
                "{} [[sender]] tables; a proxy takes at most {MAX_SENDERS}",
                items.len()
            ),
        ));
    }
    let mut senders = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("sender[{i}]");
        let DeValue::Table(table) = item.get_ref() else {
            return Err(src.unexpected(&path, item, EXPECTED));
        };
        senders.push(sender(src, &path, &item.span(), table)?);
    }
    Ok(senders)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Class {
    Log,
    Kafka,
}

impl Class {
    /// `LogSender`, `KafkaSender`, or a fully qualified name ending in
    /// `.LogSender`, `.LogRxSender` or `.KafkaSender`, in any case.
    fn of(name: &str) -> Option<Class> {
        let simple = name.rsplit('.').next().unwrap_or(name);
        match simple.to_ascii_lowercase().as_str() {
            "logsender" | "logrxsender" => Some(Class::Log),
            "kafkasender" => Some(Class::Kafka),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::Log => "LogSender",
            Class::Kafka => "KafkaSender",
        }
    }

    fn takes(self) -> &'static str {
        match self {
            Class::Log => "LogSender takes logger and level",
            Class::Kafka => "KafkaSender takes topic, filter and Kafka client properties",
        }
    }
}

/// One `[[sender]]` table.
fn sender(
    src: Source<'_>,
    path: &str,
    span: &Range<usize>,
    table: &DeTable<'_>,
) -> Result<SenderSettings, ConfigError> {
    let class = match table.get("class") {
        None => {
            return Err(src.error(
                span,
                path,
                format!("key `class` is missing; it names the sender: {CLASSES_TEXT}"),
            ))
        }
        Some(value) => {
            let class_path = join(path, "class");
            let name = src.string(&class_path, value, "a sender class name")?;
            Class::of(name).ok_or_else(|| {
                let simple = name.rsplit('.').next().unwrap_or(name);
                let hint = suggest::did_you_mean(simple, &["LogSender", "KafkaSender"]);
                src.error(
                    &value.span(),
                    &class_path,
                    format!("unknown sender class {name:?}{hint}; accepted: {CLASSES_TEXT}"),
                )
            })?
        }
    };
    let label = format!("{path} ({})", class.name());
    match class {
        Class::Log => log_sender(src, path, &label, table).map(SenderSettings::Log),
        Class::Kafka => kafka_sender(src, path, &label, span, table).map(SenderSettings::Kafka),
    }
}

/// A key that is not allowed in this sender.
fn not_allowed(
    src: Source<'_>,
    label: &str,
    class: Class,
    key: &Key<'_>,
    candidates: &[&str],
) -> ConfigError {
    let name = key.get_ref().as_ref();
    let hint = if KEYS.contains(&name) {
        format!(
            " (`{name}` is a top-level key: move it above the first [[sender]], \
             since every key after a [[sender]] header belongs to that sender)"
        )
    } else {
        suggest::did_you_mean(name, candidates)
    };
    src.error(
        &key.span(),
        label,
        format!("key `{name}` is not allowed here{hint}; {}", class.takes()),
    )
}

fn log_sender(
    src: Source<'_>,
    path: &str,
    label: &str,
    table: &DeTable<'_>,
) -> Result<LogSenderSettings, ConfigError> {
    let mut settings = LogSenderSettings {
        logger: DEFAULT_LOGGER.to_owned(),
        level: DEFAULT_LEVEL,
    };
    for (key, value) in in_file_order(table) {
        let name = key.get_ref().as_ref();
        let key_path = join(path, name);
        match name {
            "class" => {}
            "logger" => settings.logger = src.word(&key_path, value, "a logger name")?,
            "level" => {
                const EXPECTED: &str = "one of trace, debug, info, warn, error (any case)";
                settings.level = src
                    .string(&key_path, value, EXPECTED)?
                    .parse()
                    .map_err(|_| src.unexpected(&key_path, value, EXPECTED))?;
            }
            _ => return Err(not_allowed(src, label, Class::Log, key, LOG_KEYS)),
        }
    }
    Ok(settings)
}

fn kafka_sender(
    src: Source<'_>,
    path: &str,
    label: &str,
    span: &Range<usize>,
    table: &DeTable<'_>,
) -> Result<KafkaSenderSettings, ConfigError> {
    let mut topic = None;
    let mut filter = Filter::Writes;
    let mut pack_bytes = DEFAULT_PACK_BYTES;
    let mut pack_gap = Duration::from_millis(DEFAULT_PACK_GAP_MS);
    let mut properties = Properties::new(path);
    for (key, value) in in_file_order(table) {
        let name = key.get_ref().as_ref();
        let key_path = join(path, name);
        match name {
            "class" => {}
            "topic" => topic = Some(src.word(&key_path, value, "a topic name")?),
            "filter" => filter = self::filter(src, &key_path, value)?,
            "pack_bytes" => pack_bytes = self::pack_bytes(src, &key_path, value)?,
            "pack_gap_ms" => {
                let ms = src.integer(
                    &key_path,
                    value,
                    0..=1000,
                    "a number of milliseconds 0-1000",
                )?;
                pack_gap = Duration::from_millis(ms.unsigned_abs());
            }
            // LogSender's keys, and top-level keys written after the header.
            _ if name == "logger" || name == "level" || KEYS.contains(&name) => {
                return Err(not_allowed(src, label, Class::Kafka, key, KAFKA_KEYS))
            }
            // `topics`, `filters`: not Kafka properties, surely misspellings.
            _ if !name.contains(['-', '.', '_'])
                && suggest::closest(name, &["topic", "filter"]).is_some() =>
            {
                return Err(not_allowed(
                    src,
                    label,
                    Class::Kafka,
                    key,
                    &["topic", "filter", "pack_bytes", "pack_gap_ms"],
                ))
            }
            _ => properties.add(src, key, value)?,
        }
    }
    let Some(topic) = topic else {
        return Err(src.error(
            span,
            label,
            "key `topic` is missing; it names the Kafka topic captured writes go to",
        ));
    };
    properties.require(
        src,
        label,
        span,
        kafka::BOOTSTRAP_SERVERS,
        "kafka1:9092,kafka2:9092",
    )?;
    properties.producer_guarantee(src, label)?;
    Ok(KafkaSenderSettings {
        topic,
        filter,
        kafka: properties.into_vec(),
        pack_bytes,
        pack_gap,
    })
}

/// `pack_bytes`: 0 (every record its own message), or a size up to the
/// 64 MiB a message may have (the producer's `message.max.bytes`).
fn pack_bytes(src: Source<'_>, path: &str, value: &Value<'_>) -> Result<usize, ConfigError> {
    const MAX: u64 = 64 * 1024 * 1024;
    if let DeValue::Integer(_) = value.get_ref() {
        if src.integer(path, value, 0..=0, "0").is_ok() {
            return Ok(0);
        }
    }
    let size = common::bytes(src, path, value)?;
    if size > MAX {
        return Err(src.error(
            &value.span(),
            path,
            format!(
                "{size} bytes is more than a Kafka message takes here (64mb, the producer's \
                 message.max.bytes); the broker's own limit (message.max.bytes, 1 MB by default) \
                 should be above it too"
            ),
        ));
    }
    Ok(size as usize)
}

/// `filter = ["set", "del", ...]`: command names, stored upper case.
fn filter(src: Source<'_>, path: &str, value: &Value<'_>) -> Result<Filter, ConfigError> {
    const EXPECTED: &str = "an array of command names, such as [\"SET\", \"DEL\"]";
    let DeValue::Array(items) = value.get_ref() else {
        return Err(src.unexpected(path, value, EXPECTED));
    };
    if items.is_empty() {
        return Err(src.error(
            &value.span(),
            path,
            "an empty filter would send nothing; list command names, or remove `filter` \
             to send every write command",
        ));
    }
    let mut names = HashSet::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = src.string(
            &format!("{path}[{i}]"),
            item,
            "a command name such as \"SET\"",
        )?;
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(src.unexpected(
                &format!("{path}[{i}]"),
                item,
                "a command name such as \"SET\" (one word)",
            ));
        }
        names.insert(name.to_ascii_uppercase().into_bytes());
    }
    Ok(Filter::Names(names))
}

#[cfg(test)]
mod tests {
    use super::super::parse_proxy;
    use super::super::tests::warnings_from;
    use super::*;

    fn parse(text: &str) -> ProxySettings {
        parse_proxy(text, "proxy.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        parse_proxy(text, "proxy.toml").unwrap_err().to_string()
    }

    fn kafka(settings: &ProxySettings, i: usize) -> &KafkaSenderSettings {
        match &settings.senders[i] {
            SenderSettings::Kafka(k) => k,
            other => panic!("{other:?}"),
        }
    }

    fn log(settings: &ProxySettings, i: usize) -> &LogSenderSettings {
        match &settings.senders[i] {
            SenderSettings::Log(l) => l,
            other => panic!("{other:?}"),
        }
    }

    /// The least Kafka sender, with `line` added.
    fn kafka_sender_with(line: &str) -> String {
        format!("[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\nbootstrap-servers = 'k:9092'\n{line}\n")
    }

    #[test]
    fn pack_gap_is_milliseconds_up_to_a_second() {
        let with = |v: &str| kafka_sender_with(&format!("pack_gap_ms = {v}"));
        let default = parse(&kafka_sender_with(""));
        assert_eq!(kafka(&default, 0).pack_gap, Duration::from_millis(2));
        assert_eq!(kafka(&parse(&with("0")), 0).pack_gap, Duration::ZERO);
        let p = parse(&with("250"));
        assert_eq!(kafka(&p, 0).pack_gap, Duration::from_millis(250));
        assert!(
            !kafka(&p, 0).kafka.iter().any(|(k, _)| k.contains("pack")),
            "not a librdkafka property"
        );
        for bad in ["1001", "-1", "'2ms'"] {
            let e = error(&with(bad));
            assert!(
                e.contains("sender[0].pack_gap_ms") && e.contains("0-1000"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn pack_bytes_is_a_size_or_zero() {
        let with = |v: &str| kafka_sender_with(&format!("pack_bytes = {v}"));
        let default = parse(&kafka_sender_with(""));
        assert_eq!(kafka(&default, 0).pack_bytes, 512 * 1024);
        assert_eq!(kafka(&parse(&with("0")), 0).pack_bytes, 0);
        assert_eq!(kafka(&parse(&with("'1mb'")), 0).pack_bytes, 1024 * 1024);
        assert_eq!(kafka(&parse(&with("4096")), 0).pack_bytes, 4096);
        let p = parse(&with("4096"));
        assert!(
            !kafka(&p, 0).kafka.iter().any(|(k, _)| k.contains("pack")),
            "not a librdkafka property"
        );
        let e = error(&with("'65mb'"));
        assert!(
            e.contains("sender[0].pack_bytes") && e.contains("64mb"),
            "{e}"
        );
        let e = error(&with("-1"));
        assert!(
            e.contains("sender[0].pack_bytes") && e.contains("a size in bytes"),
            "{e}"
        );
    }

    #[test]
    fn at_most_64_senders() {
        let one = "[[sender]]\nclass = \"LogSender\"\n";
        assert_eq!(parse(&one.repeat(64)).senders.len(), 64);
        let e = error(&one.repeat(65));
        assert!(
            e.contains("sender: 65 [[sender]] tables; a proxy takes at most 64"),
            "{e}"
        );
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn admin_token_and_primary_credentials() {
        let s = parse(
            "admin_token = 'a-token-of-16-chars'\nconnusername = 'sync'\nconnpassword = 'pw'\n",
        );
        assert_eq!(s.admin_token.as_deref(), Some("a-token-of-16-chars"));
        assert_eq!(s.upstream_username.as_deref(), Some("sync"));
        assert_eq!(s.upstream_password.as_deref(), Some("pw"));

        let short = parse_proxy("admin_token = 'short'\n", "proxy.toml").unwrap_err();
        assert!(
            short.to_string().contains("at least 16 characters"),
            "{short}"
        );

        let dir = std::env::temp_dir().join(format!("rb-token-{}", std::process::id()));
        std::fs::write(&dir, "from-a-file-0123456789\nignored\n").unwrap();
        let text = format!("admin_token_file = {:?}\n", dir.display().to_string());
        assert_eq!(
            parse(&text).admin_token.as_deref(),
            Some("from-a-file-0123456789")
        );
        let both = parse_proxy(
            &format!("{text}admin_token = 'a-token-of-16-chars'\n"),
            "proxy.toml",
        )
        .unwrap_err();
        assert!(
            both.to_string().contains("admin_token_file is set already"),
            "{both}"
        );
        std::fs::remove_file(&dir).unwrap();
        let missing =
            parse_proxy("admin_token_file = '/nonexistent/token'\n", "proxy.toml").unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("cannot read /nonexistent/token"),
            "{missing}"
        );
    }

    #[test]
    fn worker_threads_are_a_number_of_threads() {
        assert_eq!(parse("").worker_threads, None);
        assert_eq!(parse("worker_threads = 3\n").worker_threads, Some(3));
        assert_eq!(
            error("worker_threads = 0"),
            "proxy.toml:1: worker_threads: expected a number of threads 1-1024, got 0"
        );
        assert_eq!(
            error("worker_threads = 'auto'"),
            "proxy.toml:1: worker_threads: expected a number of threads 1-1024, got \"auto\""
        );
    }

    #[test]
    fn share_upstream_can_be_turned_off() {
        assert!(!parse("share_upstream = false\n").share_upstream);
        assert!(parse("share_upstream = true\n").share_upstream);
    }

    #[test]
    fn defaults() {
        let (s, warnings) = warnings_from(|| parse(""));
        assert_eq!(
            s,
            ProxySettings {
                bind_ip: "127.0.0.1".into(),
                bind_port: 6666,
                upstream_ip: "127.0.0.1".into(),
                upstream_port: 6379,
                upstream_tls: None,
                client_tls: None,
                upstream_username: None,
                upstream_password: None,
                message: Format::Protocol,
                worker: Worker::Coroutine,
                worker_threads: None,
                reply_timeout: Some(Duration::from_secs(10)),
                share_upstream: true,
                heartbeat: Some(Duration::from_secs(1)),
                max_clients: 10_000,
                tcp_keepalive: Some(Duration::from_secs(300)),
                idle_timeout: None,
                output_limit: OutputLimit::default(),
                query_buffer_limit: 1024 * 1024 * 1024,
                proto_max_bulk_len: 512 * 1024 * 1024,
                backlog_bytes: 256 * 1024 * 1024,
                on_backlog_full: OnFull::Block,
                ack: AckMode::Redis,
                metrics: None,
                admin_token: None,
                senders: vec![],
            }
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("proxy.toml: no [[sender]]"),
            "{warnings:?}"
        );
    }

    #[test]
    fn every_key() {
        let s = parse(
            r#"
bindip = "0.0.0.0"
bindport = 7777
connip = "redis.primary"
connport = 6380
message = "string"
worker = "Thread"
rsptimeout = 250
backlog_bytes = "16mb"
on_backlog_full = "Drop"
ack = "KAFKA"
metrics = "0.0.0.0:9121"

[[sender]]
class = "LogSender"
logger = "capture"
level = "warn"

[[sender]]
class = "KafkaSender"
topic = "writes"
filter = ["set", "Del", "HSET"]
bootstrap-servers = "k1:9092"
"#,
        );
        assert_eq!(s.bind_ip, "0.0.0.0");
        assert_eq!(s.bind_port, 7777);
        assert_eq!(s.upstream_ip, "redis.primary");
        assert_eq!(s.upstream_port, 6380);
        assert_eq!(s.message, Format::String);
        assert_eq!(s.worker, Worker::Thread);
        assert_eq!(s.reply_timeout, Some(Duration::from_millis(250)));
        assert_eq!(s.backlog_bytes, 16 * 1024 * 1024);
        assert_eq!(s.on_backlog_full, OnFull::Drop);
        assert_eq!(s.ack, AckMode::Kafka);
        assert_eq!(s.metrics.as_deref(), Some("0.0.0.0:9121"));
        assert_eq!(
            log(&s, 0),
            &LogSenderSettings {
                logger: "capture".into(),
                level: log::Level::Warn
            }
        );
        let k = kafka(&s, 1);
        assert_eq!(k.topic, "writes");
        let names: HashSet<Vec<u8>> = [&b"SET"[..], b"DEL", b"HSET"]
            .iter()
            .map(|n| n.to_vec())
            .collect();
        assert_eq!(k.filter, Filter::Names(names));
        assert_eq!(k.kafka, pairs(&[("bootstrap.servers", "k1:9092")]));
    }

    #[test]
    fn ack_kafka_needs_a_kafka_sender_and_a_command_format() {
        let e = error("ack = 'kafka'\n[[sender]]\nclass = 'LogSender'\n");
        assert_eq!(
            e,
            "proxy.toml:1: ack: ack = \"kafka\" needs a [[sender]] with class = \"KafkaSender\""
        );
        let e = error(
            "message = 'ROW'\nack = 'kafka'\n[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\nbootstrap-servers = 'k:9092'\n",
        );
        assert!(
            e.starts_with("proxy.toml:2: ack: ack = \"kafka\" needs message"),
            "{e}"
        );
        assert_eq!(
            error("on_backlog_full = 'wait'"),
            "proxy.toml:1: on_backlog_full: expected one of block, drop, got \"wait\""
        );
    }

    #[test]
    fn rsptimeout_zero_waits_forever() {
        assert_eq!(parse("rsptimeout = 0").reply_timeout, None);
        assert_eq!(parse("heartbeat_ms = 0").heartbeat, None);
        assert_eq!(
            parse("heartbeat_ms = 250").heartbeat,
            Some(Duration::from_millis(250))
        );
        for bad in ["-1", "50"] {
            let e = error(&format!("heartbeat_ms = {bad}"));
            assert!(
                e.contains("heartbeat_ms") && e.contains("100-3600000"),
                "{e}"
            );
        }
        assert_eq!(
            parse("rsptimeout = 1").reply_timeout,
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn log_sender_defaults_and_levels() {
        let s = parse("[[sender]]\nclass = 'LogSender'\n");
        assert_eq!(
            log(&s, 0),
            &LogSenderSettings {
                logger: "remoteback::capture".into(),
                level: log::Level::Info
            }
        );
        for (text, level) in [
            ("trace", log::Level::Trace),
            ("DEBUG", log::Level::Debug),
            ("Info", log::Level::Info),
            ("WARN", log::Level::Warn),
            ("error", log::Level::Error),
        ] {
            let s = parse(&format!(
                "[[sender]]\nclass = 'LogSender'\nlevel = '{text}'\n"
            ));
            assert_eq!(log(&s, 0).level, level);
        }
    }

    #[test]
    fn class_name_variants() {
        for class in [
            "LogSender",
            "LogRxSender",
            "com.remoteback.sender.LogRxSender",
            "com.example.remoteback.sender.LogSender",
            "logsender",
        ] {
            let s = parse(&format!("[[sender]]\nclass = '{class}'\n"));
            assert!(matches!(s.senders[0], SenderSettings::Log(_)), "{class}");
        }
        for class in [
            "KafkaSender",
            "com.remoteback.sender.KafkaSender",
            "org.example.KAFKASENDER",
        ] {
            let s = parse(&format!(
                "[[sender]]\nclass = '{class}'\ntopic = 't'\nbootstrap-servers = 'k:9092'\n"
            ));
            assert!(matches!(s.senders[0], SenderSettings::Kafka(_)), "{class}");
        }
    }

    #[test]
    fn senders_as_inline_tables() {
        let s =
            parse("sender = [{ class = 'LogSender' }, { class = 'LogSender', level = 'error' }]");
        assert_eq!(s.senders.len(), 2);
        assert_eq!(log(&s, 1).level, log::Level::Error);
    }

    #[test]
    fn worker_rx_is_coroutine_with_a_warning() {
        let (s, warnings) =
            warnings_from(|| parse("\nworker = \"rx\"\n[[sender]]\nclass = 'LogSender'\n"));
        assert_eq!(s.worker, Worker::Coroutine);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("proxy.toml:2: worker = \"rx\""),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("using coroutine"), "{warnings:?}");
    }

    #[test]
    fn kafka_properties_pass_through_renamed_and_rendered() {
        let s = parse(
            r#"
[[sender]]
class = "KafkaSender"
topic = "t"
bootstrap-servers = "k1:9092,k2:9092"
acks = "all"
linger-ms = 5
enable-idempotence = true
"message.max.bytes" = 1_000_000
security-protocol = "SASL_SSL"
"#,
        );
        assert_eq!(
            kafka(&s, 0).kafka,
            pairs(&[
                ("bootstrap.servers", "k1:9092,k2:9092"),
                ("acks", "all"),
                ("linger.ms", "5"),
                ("enable.idempotence", "true"),
                ("message.max.bytes", "1000000"),
                ("security.protocol", "SASL_SSL"),
            ])
        );
    }

    #[test]
    fn original_delivery_settings_turn_idempotence_off_with_a_warning() {
        let text = "[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\n\
                    bootstrap-servers = 'k:9092'\nacks = \"1\"\nretries = \"0\"\n";
        let (s, warnings) = warnings_from(|| parse(text));
        assert_eq!(
            kafka(&s, 0).kafka,
            pairs(&[
                ("bootstrap.servers", "k:9092"),
                ("acks", "1"),
                ("retries", "0"),
                ("enable.idempotence", "false"),
            ])
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "proxy.toml:5: sender[0] (KafkaSender): acks = \"1\", retries = \"0\": \
                 the idempotent producer is off"
            ),
            "{warnings:?}"
        );
        let (s, warnings) = warnings_from(|| {
            parse("[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\nbootstrap-servers = 'k'\nmax-in-flight = 5\nacks = -1\n")
        });
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!kafka(&s, 0)
            .kafka
            .iter()
            .any(|(k, _)| k == "enable.idempotence"));
    }

    #[test]
    fn idempotence_written_out_with_values_it_cannot_have_is_an_error() {
        assert_eq!(
            error(
                "[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\nbootstrap-servers = 'k'\n\
                   enable-idempotence = true\nmax-in-flight-requests-per-connection = 6\n"
            ),
            "proxy.toml:5: sender[0].enable-idempotence: `enable-idempotence = true` needs \
             acks = \"all\", retries of at least 1 and at most 5 requests in flight, but the \
             table sets max-in-flight-requests-per-connection = \"6\"; remove \
             `enable-idempotence` (the replay then skips duplicated records and reports lost \
             ones) or those values"
        );
    }

    // Error messages: file, line, key path, reason and what is allowed.

    #[test]
    fn bad_port() {
        assert_eq!(
            error("# listen\n\nbindport = \"abc\"\n"),
            "proxy.toml:3: bindport: expected an integer 1-65535, got \"abc\""
        );
        assert_eq!(
            error("connport = 70000"),
            "proxy.toml:1: connport: expected an integer 1-65535, got 70000"
        );
    }

    #[test]
    fn bad_scalars() {
        assert_eq!(
            error("message = 'json'"),
            "proxy.toml:1: message: expected one of ROW, STRING, PROTOCOL (any case), got \"json\""
        );
        assert_eq!(
            error("\nworker = 4"),
            "proxy.toml:2: worker: expected one of coroutine, thread, got 4"
        );
        assert_eq!(
            error("maxclients = 0"),
            "proxy.toml:1: maxclients: expected a number of clients 1-1000000, got 0"
        );
        assert_eq!(
            parse("proto_max_bulk_len = '2mb'").proto_max_bulk_len,
            2 * 1024 * 1024
        );
        assert_eq!(
            parse("proto_max_bulk_len = 1048576").proto_max_bulk_len,
            1024 * 1024
        );
        assert_eq!(
            error("proto_max_bulk_len = '1kb'"),
            "proxy.toml:1: proto_max_bulk_len: expected a size in bytes of 1mb (1048576) or more, \
             as Redis's proto-max-bulk-len: an integer, or a string such as \"512mb\", got \"1kb\""
        );
        assert_eq!(
            error("proto_max_bulk_len = -1"),
            "proxy.toml:1: proto_max_bulk_len: expected a size in bytes of 1mb (1048576) or more, \
             as Redis's proto-max-bulk-len: an integer, or a string such as \"512mb\", got -1"
        );
        assert_eq!(
            parse("maxclients = 2\ntcp_keepalive = 0").tcp_keepalive,
            None,
            "0 sends no keepalive probes"
        );
        assert_eq!(
            parse("timeout = 30").idle_timeout,
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse("timeout = 0").idle_timeout, None);
        assert_eq!(
            error("timeout = -1"),
            "proxy.toml:1: timeout: expected a number of seconds >= 0 (0 never closes an idle client), got -1"
        );
        assert_eq!(
            parse("client_output_buffer_limit = \"1mb 512kb 10\"").output_limit,
            OutputLimit {
                hard: 1024 * 1024,
                soft: 512 * 1024,
                soft_for: Duration::from_secs(10)
            }
        );
        assert_eq!(
            parse("client_output_buffer_limit = \"0 0 0\"").output_limit,
            OutputLimit::NONE
        );
        assert_eq!(
            error("client_output_buffer_limit = \"1mb\""),
            "proxy.toml:1: client_output_buffer_limit: expected \"<hard> <soft> <seconds>\" such as \"256mb 64mb 60\" (sizes in bytes or with k, kb, m, mb, g, gb; 0 for no limit), got \"1mb\""
        );
        assert_eq!(
            error("client_output_buffer_limit = \"1mb 2mb 60\""),
            "proxy.toml:1: client_output_buffer_limit: the soft limit (2mb) is above the hard limit (1mb)"
        );
        assert_eq!(
            error("rsptimeout = -5"),
            "proxy.toml:1: rsptimeout: expected a number of milliseconds >= 0 (0 waits forever), got -5"
        );
        assert_eq!(
            error("rsptimeout = 1.5"),
            "proxy.toml:1: rsptimeout: expected a number of milliseconds >= 0 (0 waits forever), got a float (1.5)"
        );
        assert_eq!(
            error("share_upstream = 1"),
            "proxy.toml:1: share_upstream: expected true or false, got 1"
        );
        assert_eq!(
            error("bindip = ''"),
            "proxy.toml:1: bindip: expected an IP address or host name, got \"\""
        );
    }

    #[test]
    fn unknown_top_level_key_suggests_and_lists() {
        assert_eq!(
            error("bindport = 1\nbindprot = 2\n"),
            "proxy.toml:2: bindprot: unknown key (did you mean `bindport`?); a proxy configuration \
             takes bindip, bindport, bindtls, bindtls_cert_file, bindtls_key_file, bindtls_ca_file, \
             connip, connport, connusername, connpassword, conntls, \
             conntls_ca_file, conntls_cert_file, conntls_key_file, conntls_server_name, message, \
             worker, worker_threads, rsptimeout, share_upstream, heartbeat_ms, maxclients, tcp_keepalive, timeout, client_output_buffer_limit, \
             client_query_buffer_limit, proto_max_bulk_len, backlog_bytes, on_backlog_full, ack, \
             metrics, admin_token, admin_token_file, [[sender]]"
        );
        let e = error("listen = 1");
        assert!(
            e.starts_with("proxy.toml:1: listen: unknown key; a proxy configuration takes bindip,"),
            "{e}"
        );
        let e = error("topic = 't'");
        assert!(
            e.contains("topic: unknown key (it belongs inside a [[sender]] table)"),
            "{e}"
        );
        let e = error("bootstrap-servers = 'k'");
        assert!(
            e.contains("(Kafka properties belong inside a [[sender]] table"),
            "{e}"
        );
    }

    #[test]
    fn key_not_allowed_in_a_sender() {
        let text = "bindport = 6666\n\n[[sender]]\nclass = 'LogSender'\n\n[[sender]]\nclass = 'KafkaSender'\nlevel = 'info'\n";
        assert_eq!(
            error(text),
            "proxy.toml:8: sender[1] (KafkaSender): key `level` is not allowed here; \
             KafkaSender takes topic, filter and Kafka client properties"
        );
        assert_eq!(
            error("[[sender]]\nclass = 'LogSender'\nlevle = 'info'\n"),
            "proxy.toml:3: sender[0] (LogSender): key `levle` is not allowed here (did you mean \
             `level`?); LogSender takes logger and level"
        );
        let e = error("[[sender]]\nclass = 'KafkaSender'\ntopics = 't'\n");
        assert!(e.starts_with("proxy.toml:3: sender[0] (KafkaSender): key `topics` is not allowed here (did you mean `topic`?)"), "{e}");
    }

    #[test]
    fn top_level_key_after_a_sender_header() {
        let e = error("[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\nbootstrap-servers = 'k'\nrsptimeout = 10\n");
        assert!(e.starts_with("proxy.toml:5: sender[0] (KafkaSender): key `rsptimeout` is not allowed here (`rsptimeout` is a top-level key: move it above the first [[sender]]"), "{e}");
        let e = error("[[sender]]\nclass = 'LogSender'\nworker = 'thread'\n");
        assert!(e.starts_with("proxy.toml:3: sender[0] (LogSender): key `worker` is not allowed here (`worker` is a top-level key"), "{e}");
    }

    #[test]
    fn missing_or_unknown_class() {
        assert_eq!(
            error("[[sender]]\ntopic = 't'\n"),
            "proxy.toml:1: sender[0]: key `class` is missing; it names the sender: LogSender or \
             KafkaSender (fully qualified names ending in .LogSender, .LogRxSender or .KafkaSender \
             are accepted too)"
        );
        assert_eq!(
            error(
                "[[sender]]\nclass = 'LogSender'\n[[sender]]\nclass = 'com.example.FileSender'\n"
            ),
            "proxy.toml:4: sender[1].class: unknown sender class \"com.example.FileSender\"; \
             accepted: LogSender or KafkaSender (fully qualified names ending in .LogSender, \
             .LogRxSender or .KafkaSender are accepted too)"
        );
        let e = error("[[sender]]\nclass = 'KafkaSendr'\n");
        assert!(e.contains("unknown sender class \"KafkaSendr\" (did you mean `KafkaSender`?); accepted: LogSender or KafkaSender"), "{e}");
    }

    #[test]
    fn kafka_sender_requirements() {
        assert_eq!(
            error("\n[[sender]]\nclass = 'KafkaSender'\nbootstrap-servers = 'k:9092'\n"),
            "proxy.toml:2: sender[0] (KafkaSender): key `topic` is missing; it names the Kafka \
             topic captured writes go to"
        );
        assert_eq!(
            error("[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\nacks = 1\n"),
            "proxy.toml:1: sender[0] (KafkaSender): Kafka property `bootstrap-servers` is \
             required; add for example bootstrap-servers = \"kafka1:9092,kafka2:9092\""
        );
        let e = error("[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\nbootstrap-server = 'k'\n");
        assert!(
            e.contains("is required (is `bootstrap-server` a misspelling of it?)"),
            "{e}"
        );
        assert_eq!(
            error("[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\nbootstrap-servers = ''\n"),
            "proxy.toml:4: sender[0].bootstrap-servers: expected a non-empty string, such as \
             bootstrap-servers = \"kafka1:9092,kafka2:9092\""
        );
    }

    #[test]
    fn bad_kafka_property_values_name_the_key() {
        let e = error("[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\nbootstrap-servers = 'k'\nlinger-ms = 0.5\n");
        assert_eq!(
            e,
            "proxy.toml:5: sender[0].linger-ms: Kafka property `linger.ms` must be a string, \
             integer or boolean, got a float (0.5); write it as a string (\"0.5\") if that is what you mean"
        );
        let e = error("[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\nbootstrap.servers = 'k'\n");
        assert!(e.starts_with("proxy.toml:4: sender[0].bootstrap: Kafka property `bootstrap` must be a string, integer or boolean, got a table; a dotted name must be quoted"), "{e}");
    }

    #[test]
    fn bad_filters() {
        let head = "[[sender]]\nclass = 'KafkaSender'\ntopic = 't'\nbootstrap-servers = 'k'\n";
        assert_eq!(
            error(&format!("{head}filter = []\n")),
            "proxy.toml:5: sender[0].filter: an empty filter would send nothing; list command \
             names, or remove `filter` to send every write command"
        );
        assert_eq!(
            error(&format!("{head}filter = 'SET'\n")),
            "proxy.toml:5: sender[0].filter: expected an array of command names, such as \
             [\"SET\", \"DEL\"], got \"SET\""
        );
        assert_eq!(
            error(&format!("{head}filter = [\n  'SET',\n  'MULTI EXEC',\n]\n")),
            "proxy.toml:7: sender[0].filter[1]: expected a command name such as \"SET\" (one \
             word), got \"MULTI EXEC\""
        );
        assert_eq!(
            error(&format!("{head}filter = ['SET', 3]\n")),
            "proxy.toml:5: sender[0].filter[1]: expected a command name such as \"SET\", got 3"
        );
    }

    #[test]
    fn sender_must_be_an_array_of_tables() {
        assert_eq!(
            error("[sender]\nclass = 'LogSender'\n"),
            "proxy.toml:1: sender: expected an array of tables, written [[sender]], got a table"
        );
        assert_eq!(
            error("sender = ['LogSender']"),
            "proxy.toml:1: sender[0]: expected an array of tables, written [[sender]], got \"LogSender\""
        );
    }

    #[test]
    fn replay_tables_in_a_proxy_file() {
        let e = error("bindport = 1\n[receiver]\n");
        assert!(e.starts_with("proxy.toml:2: receiver: unknown key ([receiver] and [redis] belong in a replay configuration)"), "{e}");
    }
}

//! The effective settings written back as TOML, for `check-config`: every
//! key with the value in force, defaults included, secrets masked.

use std::fmt::{self, Write};

use remoteback_proxy::settings::{Filter, ProxySettings, SenderSettings};
use remoteback_replay::settings::ReplaySettings;

use super::source::{display_key, quote};
use super::tls;
use super::Loaded;

/// What a secret is shown as.
const MASK: &str = "***";

/// Lines of TOML; no newline after the last, as for any `Display`.
impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        match self {
            Loaded::Proxy(settings) => proxy(&mut text, settings)?,
            Loaded::Replay(settings) => replay(&mut text, settings)?,
        }
        f.write_str(text.trim_end_matches('\n'))
    }
}

fn proxy(f: &mut String, s: &ProxySettings) -> fmt::Result {
    writeln!(f, "# proxy configuration, effective settings")?;
    writeln!(f, "bindip = {}", quote(&s.bind_ip))?;
    writeln!(f, "bindport = {}", s.bind_port)?;
    tls::render_server(f, "bindtls", s.client_tls.as_ref())?;
    writeln!(f, "connip = {}", quote(&s.upstream_ip))?;
    writeln!(f, "connport = {}", s.upstream_port)?;
    tls::render(f, "conntls", s.upstream_tls.as_ref())?;
    match &s.upstream_username {
        Some(username) => writeln!(f, "connusername = {}", quote(username))?,
        None => writeln!(f, "# connusername not set")?,
    }
    match &s.upstream_password {
        Some(_) => writeln!(f, "connpassword = {}", quote(MASK))?,
        None => writeln!(f, "# connpassword not set")?,
    }
    writeln!(f, "message = {}", quote(s.message.name()))?;
    writeln!(f, "worker = {}", quote(&s.worker.to_string()))?;
    match s.worker_threads {
        Some(n) => writeln!(f, "worker_threads = {n}")?,
        None => writeln!(
            f,
            "# worker_threads not set: {}, half the cores, at least one",
            remoteback_proxy::default_worker_threads()
        )?,
    }
    writeln!(f, "share_upstream = {}", s.share_upstream)?;
    match s.heartbeat {
        Some(every) => writeln!(f, "heartbeat_ms = {}", every.as_millis())?,
        None => writeln!(f, "heartbeat_ms = 0 # no heartbeats")?,
    }
    match s.reply_timeout {
        Some(timeout) => writeln!(f, "rsptimeout = {}", timeout.as_millis())?,
        None => writeln!(f, "rsptimeout = 0 # wait forever")?,
    }
    writeln!(f, "maxclients = {}", s.max_clients)?;
    match s.tcp_keepalive {
        Some(idle) => writeln!(f, "tcp_keepalive = {}", idle.as_secs())?,
        None => writeln!(f, "tcp_keepalive = 0 # no keepalive probes")?,
    }
    match s.idle_timeout {
        Some(idle) => writeln!(f, "timeout = {}", idle.as_secs())?,
        None => writeln!(f, "timeout = 0 # idle clients are never closed")?,
    }
    let limit = s.output_limit;
    writeln!(
        f,
        "client_output_buffer_limit = \"{} {} {}\"",
        limit.hard,
        limit.soft,
        limit.soft_for.as_secs()
    )?;
    writeln!(f, "client_query_buffer_limit = {}", s.query_buffer_limit)?;
    writeln!(f, "proto_max_bulk_len = {}", s.proto_max_bulk_len)?;
    writeln!(f, "backlog_bytes = {}", s.backlog_bytes)?;
    writeln!(f, "on_backlog_full = {}", quote(s.on_backlog_full.name()))?;
    writeln!(f, "ack = {}", quote(s.ack.name()))?;
    metrics(f, s.metrics.as_deref())?;
    match &s.admin_token {
        Some(_) => writeln!(f, "admin_token = {}", quote(MASK))?,
        None => writeln!(
            f,
            "# admin_token not set: sync and repair are taken from loopback addresses only"
        )?,
    }
    if s.senders.is_empty() {
        writeln!(
            f,
            "\n# no [[sender]]: commands are proxied, nothing is captured"
        )?;
    }
    for sender in &s.senders {
        writeln!(f, "\n[[sender]]")?;
        match sender {
            SenderSettings::Log(log) => {
                writeln!(f, "class = \"LogSender\"")?;
                writeln!(f, "logger = {}", quote(&log.logger))?;
                let level = log.level.as_str().to_ascii_lowercase();
                writeln!(f, "level = {}", quote(&level))?;
            }
            SenderSettings::Kafka(kafka) => {
                writeln!(f, "class = \"KafkaSender\"")?;
                writeln!(f, "topic = {}", quote(&kafka.topic))?;
                match &kafka.filter {
                    Filter::Writes => {
                        writeln!(f, "# filter not set: every command Redis would replicate")?
                    }
                    Filter::Names(names) => {
                        let mut names: Vec<String> = names
                            .iter()
                            .map(|n| quote(&String::from_utf8_lossy(n)))
                            .collect();
                        names.sort();
                        writeln!(f, "filter = [{}]", names.join(", "))?;
                    }
                }
                properties(f, &kafka.kafka)?;
            }
        }
    }
    Ok(())
}

fn metrics(f: &mut String, address: Option<&str>) -> fmt::Result {
    match address {
        Some(a) => writeln!(f, "metrics = {}", quote(a)),
        None => writeln!(f, "# metrics not set: no /metrics or /health endpoint"),
    }
}

fn replay(f: &mut String, s: &ReplaySettings) -> fmt::Result {
    writeln!(f, "# replay configuration, effective settings")?;
    writeln!(f, "message = {}", quote(s.message.name()))?;
    writeln!(f, "worker = {}", quote(&s.worker.to_string()))?;
    writeln!(f, "on_apply_error = {}", quote(s.on_apply_error.name()))?;
    writeln!(f, "on_bad_record = {}", quote(s.on_bad_record.name()))?;
    metrics(f, s.metrics.as_deref())?;

    let r = &s.receiver;
    writeln!(f, "\n[receiver]")?;
    writeln!(f, "class = \"KafkaReceiver\"")?;
    let topics: Vec<String> = r.topics.iter().map(|t| quote(t)).collect();
    writeln!(f, "topic = [{}]", topics.join(", "))?;
    writeln!(f, "polltimeout = {}", r.poll_timeout.as_millis())?;
    match &r.partitions {
        Some(partitions) => {
            let list: Vec<String> = partitions.iter().map(|p| p.to_string()).collect();
            writeln!(f, "partitions = [{}]", list.join(", "))?;
        }
        None => writeln!(f, "# partitions not set: every partition of each topic")?,
    }
    writeln!(f, "start = {}", quote(r.start.name()))?;
    properties(f, &r.kafka)?;

    let b = &s.backup;
    writeln!(f, "\n[redis]")?;
    writeln!(f, "connip = {}", quote(&b.host))?;
    writeln!(f, "connport = {}", b.port)?;
    tls::render(f, "tls", b.tls.as_ref())?;
    match &b.username {
        Some(username) => writeln!(f, "username = {}", quote(username))?,
        None => writeln!(f, "# username not set")?,
    }
    match &b.password {
        Some(_) => writeln!(f, "password = {}", quote(MASK))?,
        None => writeln!(f, "# password not set")?,
    }
    Ok(())
}

/// Kafka properties under their librdkafka names, secrets masked.
fn properties(f: &mut String, props: &[(String, String)]) -> fmt::Result {
    for (name, value) in props {
        let shown = if is_secret(name) { MASK } else { value };
        writeln!(f, "{} = {}", display_key(name), quote(shown))?;
    }
    Ok(())
}

/// Kafka properties whose values must not be shown: passwords, secrets,
/// private keys and JAAS or OAuth configurations that embed them.
fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "key.pem",
        "oauthbearer.config",
    ]
    .iter()
    .any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets() {
        for name in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "sasl.jaas.config",
            "ssl.key.pem",
        ] {
            assert!(is_secret(name), "{name}");
        }
        for name in [
            "sasl.username",
            "bootstrap.servers",
            "ssl.ca.location",
            "ssl.certificate.pem",
        ] {
            assert!(!is_secret(name), "{name}");
        }
    }
}

//! `remoteback failover`: the planned switch to the backup. Writes stop at
//! the proxy (they wait, or are refused with `-READONLY`; reads go on), every write the primary took through
//! it reaches Kafka, the replay applies the topic to its end and stops, and
//! this says whether nothing was lost and prints the reverse direction's
//! configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use remoteback::admin::client::AdminClient;
use remoteback::admin::promotion::PromotionStatus;
use remoteback::admin::{self, FailoverStatus};
use remoteback_proxy::failover::WritesDuring;

use crate::promote_command;

/// How often the proxy is asked whether it drained.
const POLL: Duration = Duration::from_millis(100);

#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// The proxy's admin address: its `metrics` setting, HOST:PORT.
    #[arg(long, value_name = "ADMIN_ADDR")]
    proxy: String,
    /// The replay's admin address, HOST:PORT (from the replay's own host).
    #[arg(long, value_name = "ADMIN_ADDR")]
    replay: String,
    /// The proxy's admin_token (or set REMOTEBACK_ADMIN_TOKEN).
    #[arg(long, value_name = "TOKEN", conflicts_with = "admin_token_file")]
    admin_token: Option<String>,
    /// A file holding the proxy's admin token.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// How long the proxy may take to have every write it forwarded in
    /// Kafka; past it writes go again and the failover is given up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// How long the replay may take to apply the topic to its end.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    promote_timeout: Duration,
    /// What clients' writes meet meanwhile: `wait` (held until the proxy
    /// stops, a slow write but no error) or `readonly` (refused with
    /// `-READONLY remoteback: failover in progress`, as by a Redis replica).
    #[arg(long, default_value = "wait", value_name = "wait|readonly")]
    clients: WritesDuring,
    /// Also write the reverse direction's configurations,
    /// proxy-reverse.toml and replay-reverse.toml, into DIR.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
}

pub fn run(args: FailoverArgs) -> ExitCode {
    let token = match admin::token(args.admin_token.clone(), args.admin_token_file.as_deref()) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let proxy = AdminClient::new(&args.proxy, token);
    if let Err(e) = proxy.failover(args.clients) {
        eprintln!("error: failover: proxy: {e}");
        return ExitCode::from(2);
    }
    let held = match args.clients {
        WritesDuring::Wait => "writes wait at the proxy",
        WritesDuring::Readonly => "the proxy refuses writes (-READONLY)",
    };
    eprintln!("failover: {held}; waiting until every write it forwarded is in Kafka");
    let drained = match drain(&proxy, args.drain_timeout) {
        Ok(state) => state,
        Err(e) => {
            let _ = proxy.cancel_failover();
            eprintln!("error: failover: {e}; writes go to the primary again");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("failover: the proxy drained; applying the topic to its end");
    let promoted = match promote_command::promote(&args.replay, args.promote_timeout) {
        Ok(status) => status,
        Err((code, e)) => {
            eprintln!(
                "error: failover: replay: {e}; writes still wait at the proxy (cancel with \
                 DELETE /failover, or stop the proxy)"
            );
            return code;
        }
    };
    let (proxy_config, replay_config) = reverse(&drained, &promoted);
    if let Some(dir) = &args.write {
        for (name, text) in [
            ("proxy-reverse.toml", &proxy_config),
            ("replay-reverse.toml", &replay_config),
        ] {
            let path = dir.join(name);
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!("error: write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", report(&drained, &promoted));
    println!("\n# The reverse direction: a proxy in front of the old backup (proxy-reverse.toml)\n{proxy_config}");
    println!("# and a replay into the old primary (replay-reverse.toml)\n{replay_config}");
    println!(
        "# Before the old primary serves again: start both, then bring it up to date through the \
         new proxy: remoteback sync --proxy <its metrics address> --flush"
    );
    ExitCode::SUCCESS
}

/// Waits until the proxy says it drained twice in a row (a write that was
/// waiting for another's key locks when writes were paused takes them a
/// moment later).
fn drain(proxy: &AdminClient, timeout: Duration) -> Result<FailoverStatus, String> {
    let deadline = Instant::now() + timeout;
    let mut drained_once = false;
    loop {
        let state = proxy.failover_status().map_err(|e| e.to_string())?;
        if state.drained && drained_once {
            return Ok(state);
        }
        drained_once = state.drained;
        if Instant::now() >= deadline {
            return Err(format!(
                "the proxy did not drain within {timeout:?} (writes in flight: {}, backlog {} bytes)",
                !state.none_in_flight, state.backlog_bytes
            ));
        }
        std::thread::sleep(POLL);
    }
}

fn report(proxy: &FailoverStatus, replay: &PromotionStatus) -> String {
    let mut out = format!(
        "failover done: the backup {} holds the primary {}'s writes up to the pause\n",
        replay.backup, proxy.primary
    );
    let missing: Vec<String> = [
        (
            proxy.records_lost,
            "records the proxy lost (not delivered to Kafka)",
        ),
        (
            proxy.writes_uncaptured,
            "writes whose reply never came (they may have run on the primary)",
        ),
        (
            replay.records_missing,
            "records that never reached the replay",
        ),
        (replay.bad_records_skipped, "unreadable records skipped"),
        (replay.commands_refused, "commands the backup refused"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if missing.is_empty() && !proxy.resync_needed {
        out.push_str(
            "nothing lost: every write the primary took through the proxy is on the backup\n",
        );
    } else {
        out.push_str(&format!(
            "the backup may differ from the primary since the last full sync: {}\n",
            missing.join("; ")
        ));
    }
    out.push_str(&promote_command::report(replay));
    out
}

/// The reverse direction's configurations: a proxy in front of the old
/// backup writing to a new topic, and a replay of it into the old
/// primary. Credentials and TLS are not known here: add them as in the
/// originals.
fn reverse(proxy: &FailoverStatus, replay: &PromotionStatus) -> (String, String) {
    let (backup_host, backup_port) = split(&replay.backup);
    let (primary_host, primary_port) = split(&proxy.primary);
    let (topic, servers) = proxy
        .kafka
        .first()
        .map(|k| (k.topic.as_str(), k.bootstrap_servers.as_str()))
        .unwrap_or(("redis-writes", "localhost:9092"));
    let topic = format!("{topic}-reverse");
    let proxy_config = format!(
        "# add connusername/connpassword and conntls as in the original proxy\n\
         connip = \"{backup_host}\"\nconnport = {backup_port}\nmessage = \"PROTOCOL\"\n\n\
         [[sender]]\nclass = \"KafkaSender\"\ntopic = \"{topic}\"\nbootstrap-servers = \"{servers}\"\n"
    );
    let replay_config = format!(
        "# add [redis] username/password and tls as in the original replay\n\
         message = \"PROTOCOL\"\n\n[receiver]\nclass = \"KafkaReceiver\"\ntopic = \"{topic}\"\n\
         bootstrap-servers = \"{servers}\"\ngroup-id = \"remoteback-replay-reverse\"\n\n\
         [redis]\nconnip = \"{primary_host}\"\nconnport = {primary_port}\n"
    );
    (proxy_config, replay_config)
}

/// `HOST:PORT` into its parts (an IPv6 host keeps its brackets off).
fn split(addr: &str) -> (String, String) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port.to_owned(),
        ),
        None => (addr.to_owned(), "6379".to_owned()),
    }
}

//! `remoteback sync`: asks a running proxy to copy the primary's keys to
//! the backup through the log, shows its progress and waits for it.
//!
//! The copy runs in the proxy (only it can order a key's snapshot against
//! the clients' writes); this command is its remote control. Leaving it
//! does not stop the sync: `--cancel` does.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::parse_size;
use remoteback::admin;
use remoteback::admin::client::{AdminClient, AdminError};
use remoteback::admin::{SyncStart, SyncStatus};

/// How often the progress is asked.
const POLL: Duration = Duration::from_millis(500);
/// How often a plain progress line is written when stderr is not a
/// terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// How long the proxy may not answer before the command gives up waiting.
const CONTACT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The proxy's admin address: its `metrics` setting, HOST:PORT.
    #[arg(long, value_name = "ADMIN_ADDR")]
    proxy: String,
    /// Copy this database only (repeat for several); every database that
    /// has keys by default.
    #[arg(long = "db", value_name = "N")]
    dbs: Vec<u32>,
    /// Copy the keys matching this SCAN pattern only.
    #[arg(long = "match", value_name = "PATTERN")]
    pattern: Option<String>,
    /// restore: DUMP/RESTORE, for a backup on the same or a newer Redis;
    /// commands: typed commands (HSET, RPUSH, ...) for every key, for an
    /// older Redis or Valkey.
    #[arg(long, default_value = "restore", value_parser = ["restore", "commands"])]
    method: String,
    /// First empty the backup (remoteback's own keys stay), so keys that
    /// exist only there go too. Without it, sync never deletes such keys.
    #[arg(long)]
    flush: bool,
    /// Copy at most this many keys a second (no limit by default).
    #[arg(long, value_name = "N")]
    keys_per_second: Option<u64>,
    /// A key whose state would take more than this goes as typed commands
    /// in records of about this size (units k, kb, m, mb, g, gb).
    #[arg(long, default_value = "8mb", value_parser = size, value_name = "SIZE")]
    chunk_bytes: u64,
    /// The sync's records Kafka has not acknowledged, at most; separate
    /// from the clients' backlog, which the sync never fills.
    #[arg(long, default_value = "64mb", value_parser = size, value_name = "SIZE")]
    inflight_bytes: u64,
    /// Continue an interrupted sync from the position it printed (DB:CURSOR).
    #[arg(long, value_name = "POSITION")]
    resume: Option<String>,
    /// Show the running or last sync's progress and exit.
    #[arg(long, conflicts_with_all = ["cancel", "detach"])]
    status: bool,
    /// Ask the running sync to stop after the key in hand, and wait for it.
    #[arg(long)]
    cancel: bool,
    /// Start the sync and exit without waiting for it.
    #[arg(long)]
    detach: bool,
    /// The proxy's admin_token (or set REMOTEBACK_ADMIN_TOKEN); not needed
    /// from the proxy's own host when it has none.
    #[arg(long, value_name = "TOKEN", conflicts_with = "admin_token_file")]
    admin_token: Option<String>,
    /// A file whose first line is the admin token.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

fn size(text: &str) -> Result<u64, String> {
    parse_size(text)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a size (e.g. 8mb, 65536)"))
}

pub fn run(args: SyncArgs) -> ExitCode {
    let token = match admin::token(args.admin_token.clone(), args.admin_token_file.as_deref()) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let client = AdminClient::new(&args.proxy, token);
    let started = if args.status {
        client.status()
    } else if args.cancel {
        client.cancel()
    } else {
        client.start(&SyncStart {
            db: (!args.dbs.is_empty()).then(|| args.dbs.clone()),
            pattern: args.pattern.clone(),
            method: Some(args.method.clone()),
            flush: args.flush,
            keys_per_second: args.keys_per_second,
            chunk_bytes: Some(args.chunk_bytes),
            inflight_bytes: Some(args.inflight_bytes),
            resume: args.resume.clone(),
        })
    };
    let status = match started {
        Ok(status) => status,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.status || args.detach {
        println!("{}", line(&status));
        return ExitCode::SUCCESS;
    }
    if !args.cancel {
        eprintln!(
            "sync started on {} ({} keys); leaving this command does not stop it (--cancel does)",
            args.proxy, status.keys_total
        );
    }
    follow(&client, &args, status)
}

/// Shows the sync's progress until it ends.
fn follow(client: &AdminClient, args: &SyncArgs, mut status: SyncStatus) -> ExitCode {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(status.keys_total.max(1));
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} keys, {per_sec}, ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut last_plain = Instant::now();
    let mut last_contact = Instant::now();
    loop {
        if let Some(bar) = &bar {
            bar.set_length(status.keys_total.max(status.keys_done).max(1));
            bar.set_position(status.keys_done);
            bar.set_message(format!(
                "{} MB, {} big keys",
                status.bytes / 1_000_000,
                status.big_keys
            ));
        } else if last_plain.elapsed() >= PLAIN_EVERY {
            eprintln!("{}", line(&status));
            last_plain = Instant::now();
        }
        if status.state != "running" {
            break;
        }
        std::thread::sleep(POLL);
        match client.status() {
            Ok(s) => {
                status = s;
                last_contact = Instant::now();
            }
            Err(e @ AdminError::Unreachable { .. }) if last_contact.elapsed() > CONTACT_TIMEOUT => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                eprintln!("error: {e}");
                eprintln!(
                    "the proxy went away during the sync; once it runs again, continue with: \
                     remoteback sync --proxy {} --resume {}",
                    args.proxy,
                    status.position.as_deref().unwrap_or("0:0")
                );
                return ExitCode::FAILURE;
            }
            Err(_) => {}
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    println!("{}", line(&status));
    if status.unordered_writes > 0 {
        eprintln!(
            "warning: {} writes whose keys the proxy cannot name (SWAPDB, MOVE, COPY, scripts \
             without declared keys) ran during the sync: the keys they changed may differ on the \
             backup; run `remoteback verify --repair`",
            status.unordered_writes
        );
    }
    match status.state.as_str() {
        "done" => ExitCode::SUCCESS,
        _ => {
            if let Some(position) = &status.position {
                eprintln!(
                    "continue with: remoteback sync --proxy {} --resume {position}",
                    args.proxy
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// One line about the sync, as the plain progress and the summary.
fn line(s: &SyncStatus) -> String {
    let percent = if s.keys_total > 0 {
        format!(
            " ({:.0}%)",
            100.0 * s.keys_done as f64 / s.keys_total as f64
        )
    } else {
        String::new()
    };
    let eta = s
        .eta_seconds
        .map(|e| {
            format!(
                ", ETA {}",
                humantime::format_duration(Duration::from_secs(e as u64))
            )
        })
        .unwrap_or_default();
    let error = s
        .error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    format!(
        "sync {}{error}: {}/{} keys{percent}, {:.0} keys/s, {} deleted, {} big keys, {} copied again, {} records, {} bytes, {:.1} s{eta}, position {}",
        s.state,
        s.keys_done,
        s.keys_total,
        s.keys_per_second,
        s.keys_deleted,
        s.big_keys,
        s.keys_recopied,
        s.records,
        s.bytes,
        s.elapsed_seconds,
        s.position.as_deref().unwrap_or("-"),
    )
}

//! `remoteback promote`: the primary's region is gone; the running replay
//! applies everything Kafka holds, stops there, and this says what the
//! backup now holds: the recovery point, and what may be missing.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use remoteback::admin::client::AdminClient;
use remoteback::admin::promotion::PromotionStatus;

use crate::restore_command::show_time;

/// How often the replay is asked how far it got.
const POLL: Duration = Duration::from_millis(200);
/// How often a plain progress line is written when stderr is not a
/// terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// The replay's admin address: its `metrics` setting, HOST:PORT (from
    /// the replay's own host).
    #[arg(long, value_name = "ADMIN_ADDR")]
    replay: String,
    /// How long every partition may take to reach its end; past it the
    /// command exits 1 with where they are (the replay goes on).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub fn run(args: PromoteArgs) -> ExitCode {
    match promote(&args.replay, args.timeout) {
        Ok(status) => {
            print!("{}", report(&status));
            print!("{}", MAY_BE_MISSING);
            ExitCode::SUCCESS
        }
        Err((code, e)) => {
            eprintln!("error: promote: {e}");
            code
        }
    }
}

/// Promotes the replay at `address` and waits until every partition is at
/// its end; the exit code and the reason when that fails.
pub fn promote(address: &str, timeout: Duration) -> Result<PromotionStatus, (ExitCode, String)> {
    let deadline = Instant::now() + timeout;
    let client = AdminClient::new(address, None);
    let mut status = client
        .promote()
        .map_err(|e| (ExitCode::from(2), e.to_string()))?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} promote {elapsed}: {msg}")
                .expect("a valid template"),
        );
        bar
    });
    let mut plain_at = Instant::now();
    while !status.done {
        let line = format!(
            "{} partitions at their end, {} writes applied since the request",
            status.partitions.len(),
            status.partitions.iter().map(|p| p.records).sum::<u64>()
        );
        match &bar {
            Some(bar) => {
                bar.set_message(line);
                bar.tick();
            }
            None if plain_at.elapsed() >= PLAIN_EVERY => {
                eprintln!("promote: {line}");
                plain_at = Instant::now();
            }
            None => {}
        }
        if Instant::now() >= deadline {
            return Err((
                ExitCode::FAILURE,
                format!(
                    "not every partition reached its end within {timeout:?}; so far:\n{}",
                    report(&status)
                ),
            ));
        }
        std::thread::sleep(POLL);
        status = client
            .promotion()
            .map_err(|e| (ExitCode::FAILURE, e.to_string()))?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(status)
}

pub fn report(status: &PromotionStatus) -> String {
    let mut out = String::from(
        "promoted: every partition applied up to the end Kafka held when asked; the replay \
         applies nothing more\n",
    );
    let mut partitions = status.partitions.clone();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    for p in &partitions {
        let heard = match p.last_heartbeat_ms {
            Some(ms) => format!(
                "; last heartbeat {}, {} records with writes applied after it",
                show_time(ms),
                p.records_since_heartbeat
            ),
            None => String::new(),
        };
        out.push_str(&format!(
            "  {}[{}]: next offset {} (the end), {} records with writes applied since the request{heard}\n",
            p.topic, p.partition, p.next_offset, p.records
        ));
    }
    if status.applied_everywhere_ms > 0 {
        out.push_str(&format!(
            "recovery point: every partition holds the writes captured up to {}",
            show_time(status.applied_everywhere_ms)
        ));
        if status.last_write_ms > 0 {
            out.push_str(&format!(
                "; the last write applied was captured at {}",
                show_time(status.last_write_ms)
            ));
        }
        out.push('\n');
    } else {
        out.push_str("recovery point: no record was applied yet\n");
    }
    out
}

/// What an unplanned promotion cannot know about.
const MAY_BE_MISSING: &str = "what may be missing: writes the primary answered after that which \
     the proxy had not handed to Kafka. With ack = \"kafka\" no client saw such a write succeed; \
     with ack = \"redis\", at most what the proxy's backlog held (remoteback_proxy_backlog_bytes).\n";

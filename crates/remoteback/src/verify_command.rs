//! `remoteback verify`: the command line of the comparison in
//! `remoteback::verify`, its summary, report and exit code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use remoteback::{admin, verify};

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The primary: redis://[user:password@]host:port[/db].
    #[arg(long)]
    source: String,
    /// The backup: redis://[user:password@]host:port[/db].
    #[arg(long)]
    target: String,
    /// A database to compare; repeat for several. Default: every database
    /// with keys on either side (or the one a URL names).
    #[arg(long = "db", value_name = "N")]
    dbs: Vec<u32>,
    /// The largest difference between the two sides' TTLs that is no
    /// difference (500ms, 2s).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    ttl_tolerance: std::time::Duration,
    /// The wait before a differing key is checked again.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
    /// Rounds in all: only keys that differ in every round are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// At most N commands a second to each server (a pipeline of N
    /// commands counts N). Default: no limit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    qps: Option<u32>,
    /// Only keys matching this SCAN MATCH pattern, on both sides.
    #[arg(long = "match", value_name = "PATTERN")]
    pattern: Option<std::ffi::OsString>,
    /// Compare a deterministic share of the keys (0 < RATE <= 1), chosen by
    /// a hash of the key: the same keys on both sides and in every round.
    #[arg(long, value_name = "RATE", value_parser = parse_sample)]
    sample: Option<verify::Sample>,
    /// Write every persistent difference to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Resync each persistent difference through the proxy (--proxy), then
    /// check it again until it is equal or interval x rounds has passed.
    #[arg(long, requires = "proxy")]
    repair: bool,
    /// The proxy's admin address (host:port) for --repair.
    #[arg(long, value_name = "ADMIN_ADDR", requires = "repair")]
    proxy: Option<String>,
    /// The proxy's admin token.
    #[arg(long, value_name = "TOKEN", conflicts_with = "admin_token_file")]
    admin_token: Option<String>,
    /// A file holding the proxy's admin token (kept out of the process list).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

fn parse_sample(text: &str) -> Result<verify::Sample, String> {
    let rate: f64 = text.parse().map_err(|e| format!("{e}"))?;
    verify::Sample::new(rate)
}

/// Runs the comparison. Exit code 0: the backup equals the primary; 1:
/// persistent differences (after `--repair`: differences that remain); 2:
/// verify could not run.
pub fn run(args: VerifyArgs) -> ExitCode {
    let token = match admin::token(args.admin_token, args.admin_token_file.as_deref()) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let options = verify::Options {
        source: args.source,
        target: args.target,
        dbs: args.dbs,
        ttl_tolerance: args.ttl_tolerance,
        interval: args.interval,
        rounds: args.rounds,
        qps: args.qps,
        pattern: args.pattern.map(|p| p.into_encoded_bytes()),
        sample: args.sample.unwrap_or(verify::Sample::ALL),
        repair: args
            .proxy
            .filter(|_| args.repair)
            .map(|proxy| verify::RepairOptions { proxy, token }),
        display: verify::Display::for_stderr(),
    };
    let summary = match verify::run(&options) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("error: verify: {}", crate::explain(&e));
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let written = summary.write_text(&mut out).and_then(|()| out.flush());
    if let Err(e) = written {
        eprintln!("error: verify: cannot write the summary: {e}");
        return ExitCode::from(2);
    }
    if let Some(file) = &args.report {
        let text = serde_json::to_string_pretty(&summary.json()).unwrap_or_default();
        if let Err(e) = std::fs::write(file, text + "\n") {
            eprintln!(
                "error: verify: cannot write the report {}: {e}",
                file.display()
            );
            return ExitCode::from(2);
        }
    }
    if summary.remaining() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

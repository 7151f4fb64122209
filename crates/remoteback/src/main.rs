//! `remoteback`: the one binary with the proxy, the replay and the tools.

mod config;
mod logging;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use clap::{Parser, Subcommand};
use remoteback_proxy::{Proxy, SenderSettings};

/// Redis disaster recovery: a RESP proxy that clones the primary's writes
/// into Kafka, and a replay that applies them to a backup Redis.
#[derive(Parser)]
#[command(name = "remoteback", version)]
struct Cli {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Run the proxy in front of the primary Redis.
    Proxy {
        /// The proxy configuration file.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Run the replay that applies captured writes to the backup Redis.
    Replay {
        /// The replay configuration file.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Load and validate a proxy or replay configuration file, print the
    /// effective settings, exit non-zero with the reason if it is bad.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Prove that a backup equals its primary, key by key in both directions.
    ///
    /// Every key's type, value and TTL are compared; a key that differs is
    /// checked again over several rounds, so that writes in flight are not
    /// reported. Exit code 0: no difference; 1: differences (listed on
    /// stdout); 2: verify could not run.
    Verify(Box<VerifyArgs>),
}

#[derive(clap::Args)]
struct VerifyArgs {
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
    sample: Option<remoteback::verify::Sample>,
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

fn parse_sample(text: &str) -> Result<remoteback::verify::Sample, String> {
    let rate: f64 = text.parse().map_err(|e| format!("{e}"))?;
    remoteback::verify::Sample::new(rate)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    match cli.action {
        Action::Proxy { config } => run_proxy(config),
        Action::Replay { config } => run_replay(config),
        Action::CheckConfig { file } => check_config(file),
        Action::Verify(args) => verify(args),
    }
}

fn check_config(file: PathBuf) -> ExitCode {
    let loaded = match config::load_any(&file) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = validate_kafka(&loaded) {
        eprintln!("error: {}: {e}", file.display());
        return ExitCode::from(2);
    }
    println!("{loaded}");
    ExitCode::SUCCESS
}

/// 0: the backup equals the primary; 1: persistent differences (after
/// `--repair`: differences that remain); 2: verify could not run.
fn verify(args: Box<VerifyArgs>) -> ExitCode {
    let args = *args;
    use remoteback::verify;
    use std::io::Write;
    let token = match (args.admin_token, &args.admin_token_file) {
        (Some(token), _) => Some(token),
        (None, Some(file)) => match verify::read_token(file) {
            Ok(token) => Some(token),
            Err(e) => {
                eprintln!("error: {}", explain(&e));
                return ExitCode::from(2);
            }
        },
        (None, None) => None,
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
            eprintln!("error: verify: {}", explain(&e));
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

/// Lets librdkafka check the Kafka properties, as it will at start (no
/// connection is made).
fn validate_kafka(loaded: &config::Loaded) -> Result<(), String> {
    match loaded {
        config::Loaded::Proxy(p) => Proxy::validate(p).map_err(|e| e.to_string()),
        config::Loaded::Replay(r) => {
            remoteback_replay::validate(r).map_err(|e| format!("receiver (KafkaReceiver): {e}"))
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn run_proxy(file: PathBuf) -> ExitCode {
    let settings = match config::load_proxy(&file) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    for sender in &settings.senders {
        if let SenderSettings::Log(l) = sender {
            logging::add_target(&l.logger, l.level);
        }
    }
    let metrics = settings.metrics.clone();
    let result = runtime().map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async {
            let proxy = Proxy::bind(settings).await?;
            if let Some(address) = metrics {
                let report = status::proxy::ProxyReport {
                    status: proxy.status(),
                };
                status::start(&address, Arc::new(report))
                    .await
                    .with_context(|| format!("metrics: cannot listen on {address}"))?;
            }
            proxy.run(shutdown_signal()).await?;
            Ok(())
        })
    });
    finish("proxy", result)
}

fn run_replay(file: PathBuf) -> ExitCode {
    let settings = match config::load_replay(&file) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let stats = remoteback_replay::Stats::default();
    let result = match runtime() {
        Ok(rt) => {
            if let Some(address) = settings.metrics.clone() {
                let report = status::replay::ReplayReport {
                    stats: stats.clone(),
                };
                if let Err(e) = rt.block_on(status::start(&address, Arc::new(report))) {
                    log::error!("replay: metrics: cannot listen on {address}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            let result = rt.block_on(remoteback_replay::run(
                settings,
                shutdown_signal(),
                stats.clone(),
            ));
            // Do not wait for a blocking Kafka call still in progress (a
            // metadata request to an unreachable broker).
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
            result
        }
        Err(e) => {
            log::error!("replay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "replay: {} records applied, {} commands refused by the backup, {} retries while the \
         backup was unreachable or unavailable",
        stats.applied(),
        stats.refused(),
        stats.reconnects()
    );
    // 0: stopped by SIGTERM/SIGINT; 2: the configuration asks for what is
    // not there (a listed partition); 1: any other failure.
    match result {
        Err(e) if e.is_config() => {
            log::error!("replay: {e}");
            ExitCode::from(2)
        }
        other => finish("replay", other.map_err(anyhow::Error::from)),
    }
}

fn finish(what: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => {
            log::info!("{what} stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{what}: {}", explain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error with its causes, each once: the project's errors already name
/// their cause in their message, a context added on the way (`anyhow`)
/// does not.
fn explain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

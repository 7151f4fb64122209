//! `remoteback`: the one binary with the proxy, the replay and the tools.

mod config;
mod failover_command;
mod logging;
mod promote_command;
mod restore_command;
mod status;
mod status_command;
mod sync_command;
mod verify_command;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use clap::{Parser, Subcommand};
use remoteback::admin;
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
    /// Copy the primary's existing keys to the backup through a running
    /// proxy, while clients keep writing; show the progress and wait.
    Sync(sync_command::SyncArgs),
    /// Prove that a backup equals its primary, key by key in both directions.
    ///
    /// Every key's type, value and TTL are compared; a key that differs is
    /// checked again over several rounds, so that writes in flight are not
    /// reported. Exit code 0: no difference; 1: differences (listed on
    /// stdout); 2: verify could not run.
    Verify(Box<verify_command::VerifyArgs>),
    /// One screen for a person: the health, clients, rates, backlog, losses
    /// and lag of running proxies and replays, from their metrics
    /// addresses; redrawn every second on a terminal, printed once
    /// otherwise. Exit code 0: all healthy; 1: one is not; 2: one cannot
    /// be reached.
    Status(status_command::StatusArgs),
    /// Apply a topic's records to a fresh Redis up to a primary time (the
    /// moment before someone ran FLUSHALL), or to the topic's end; report
    /// where each partition stopped and the recovery point. Exit code 0:
    /// restored; 1: it failed or was interrupted; 2: bad arguments or a
    /// target that holds other data.
    Restore(restore_command::RestoreArgs),
    /// The primary's region is gone: have the running replay apply
    /// everything Kafka holds and stop there, and report the recovery
    /// point. Exit code 0: promoted; 1: it failed; 2: the replay cannot be
    /// reached or refused.
    Promote(promote_command::PromoteArgs),
    /// The planned switch to the backup: writes wait at the proxy, every
    /// write it forwarded reaches Kafka, the replay applies the topic to
    /// its end; says whether nothing was lost and prints the reverse
    /// direction's configuration. Exit code 0: done; 1: it failed (writes
    /// go again); 2: a service cannot be reached or refused.
    Failover(failover_command::FailoverArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    match cli.action {
        Action::Proxy { config } => run_proxy(config),
        Action::Replay { config } => run_replay(config),
        Action::CheckConfig { file } => check_config(file),
        Action::Sync(args) => sync_command::run(args),
        Action::Verify(args) => verify_command::run(*args),
        Action::Status(args) => status_command::run(args),
        Action::Restore(args) => restore_command::run(args),
        Action::Promote(args) => promote_command::run(args),
        Action::Failover(args) => failover_command::run(args),
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

/// A multi-threaded runtime with `threads` workers (the proxy's
/// `worker_threads`), or tokio's default of one per core.
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
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
    let token = settings.admin_token.clone();
    let threads = settings
        .worker_threads
        .unwrap_or_else(remoteback_proxy::default_worker_threads);
    let result = runtime(Some(threads)).map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async {
            let proxy = Proxy::bind(settings).await?;
            if let Some(address) = metrics {
                let report = status::proxy::ProxyReport {
                    status: proxy.status(),
                };
                let access = match token {
                    Some(_) => "with the admin token",
                    None => "from loopback addresses only (no admin_token)",
                };
                let admin = admin::server::routes(Arc::new(admin::server::Admin {
                    sync: proxy.sync(),
                    failover: proxy.failover(),
                    token,
                }));
                status::start(&address, Arc::new(report), admin)
                    .await
                    .with_context(|| format!("metrics: cannot listen on {address}"))?;
                log::info!(
                    "serving /metrics, /health and /sync on {address}; sync and repair requests are taken {access}"
                );
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
    let promotion = remoteback_replay::Promotion::default();
    let result = match runtime(None) {
        Ok(rt) => {
            if let Some(address) = settings.metrics.clone() {
                let report = status::replay::ReplayReport {
                    stats: stats.clone(),
                };
                let backup = format!("{}:{}", settings.backup.host, settings.backup.port);
                let admin = admin::promotion::routes(promotion.clone(), stats.clone(), backup);
                let started = status::start(&address, Arc::new(report), admin);
                if let Err(e) = rt.block_on(started) {
                    log::error!("replay: metrics: cannot listen on {address}: {e}");
                    return ExitCode::FAILURE;
                }
                log::info!(
                    "serving /metrics, /health and /promote on {address}; promotion is taken \
                     from loopback addresses only"
                );
            }
            let result = rt.block_on(remoteback_replay::serve(
                settings,
                shutdown_signal(),
                stats.clone(),
                promotion,
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

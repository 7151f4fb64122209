//! `remoteback status`: one screen for a person on call, from a proxy's and
//! a replay's `/health` and `/metrics`: healthy or not and why, clients,
//! rates, backlog, losses, lag.
//!
//! On a terminal the screen is redrawn every second until interrupted; off
//! one (a pipe, a script), it is printed once and the exit code says
//! whether everything was healthy.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

/// How often the screen is redrawn on a terminal.
const REFRESH: Duration = Duration::from_secs(1);
/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A proxy's `metrics` address, HOST:PORT (repeat for several).
    #[arg(long = "proxy", value_name = "ADDR")]
    proxies: Vec<String>,
    /// A replay's `metrics` address, HOST:PORT (repeat for several).
    #[arg(long = "replay", value_name = "ADDR")]
    replays: Vec<String>,
    /// Print once and exit, even on a terminal.
    #[arg(long)]
    once: bool,
}

/// A service as last read: its health and its metrics (each name's samples
/// summed over their labels).
struct Reading {
    healthy: bool,
    summary: String,
    metrics: HashMap<String, f64>,
    at: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Proxy,
    Replay,
}

/// Exit codes: 0 every service healthy, 1 one unhealthy, 2 one unreachable.
pub fn run(args: StatusArgs) -> ExitCode {
    if args.proxies.is_empty() && args.replays.is_empty() {
        eprintln!("error: give at least one --proxy or --replay address");
        return ExitCode::from(2);
    }
    let services: Vec<(Kind, String)> = args
        .proxies
        .iter()
        .map(|a| (Kind::Proxy, a.clone()))
        .chain(args.replays.iter().map(|a| (Kind::Replay, a.clone())))
        .collect();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        .build()
        .new_agent();
    let live = std::io::stdout().is_terminal() && !args.once;
    let mut last: Vec<Option<Reading>> = services.iter().map(|_| None).collect();
    loop {
        let mut screen = String::new();
        let mut code = 0u8;
        for ((kind, addr), previous) in services.iter().zip(last.iter_mut()) {
            let reading = read(&agent, addr);
            code = code.max(match &reading {
                Ok(r) if r.healthy => 0,
                Ok(_) => 1,
                Err(_) => 2,
            });
            match reading {
                Ok(r) => {
                    describe(&mut screen, *kind, addr, &r, previous.as_ref());
                    *previous = Some(r);
                }
                Err(e) => {
                    let _ = writeln!(screen, "{} {addr}: UNREACHABLE: {e}", name(*kind));
                    *previous = None;
                }
            }
        }
        if !live {
            print!("{screen}");
            return ExitCode::from(code);
        }
        // Clear the screen, then draw it from the top.
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "\x1b[2J\x1b[Hremoteback status (every {} s, Ctrl-C to leave)\n\n{screen}",
            REFRESH.as_secs()
        );
        let _ = out.flush();
        drop(out);
        std::thread::sleep(REFRESH);
    }
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Proxy => "proxy",
        Kind::Replay => "replay",
    }
}

fn read(agent: &ureq::Agent, addr: &str) -> Result<Reading, String> {
    let base = if addr.contains("://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    };
    let get = |path: &str, accept: &str| -> Result<(u16, String), String> {
        let mut response = agent
            .get(format!("{base}{path}"))
            .header("Accept", accept)
            .call()
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((status, body))
    };
    let (status, summary) = get("/health", "text/plain")?;
    let (metrics_status, text) = get("/metrics", "*/*")?;
    if metrics_status != 200 {
        return Err(format!("/metrics answered {metrics_status}"));
    }
    Ok(Reading {
        healthy: status == 200,
        summary: summary.trim().to_string(),
        metrics: parse_metrics(&text),
        at: Instant::now(),
    })
}

/// Sums each metric's samples over their labels; `# ` lines are skipped.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        *out.entry(name.to_string()).or_insert(0.0) += value;
    }
    out
}

fn describe(screen: &mut String, kind: Kind, addr: &str, now: &Reading, before: Option<&Reading>) {
    let value = |name: &str| now.metrics.get(name).copied().unwrap_or(0.0);
    // Per second since the last reading, when there is one.
    let rate = |name: &str| {
        before
            .map(|b| {
                let secs = now.at.duration_since(b.at).as_secs_f64().max(0.001);
                let was = b.metrics.get(name).copied().unwrap_or(0.0);
                format!("{:.0}/s", (value(name) - was).max(0.0) / secs)
            })
            .unwrap_or_else(|| "-/s".to_string())
    };
    // A healthy service's summary starts with "ok" already.
    let state = if now.healthy { "" } else { "UNHEALTHY: " };
    let _ = writeln!(screen, "{} {addr}: {state}{}", name(kind), now.summary);
    match kind {
        Kind::Proxy => {
            let _ = writeln!(
                screen,
                "  clients {:.0}   writes delivered {} ({:.0} in all)   backlog {} of {}",
                value("remoteback_proxy_clients"),
                rate("remoteback_proxy_records_delivered_total"),
                value("remoteback_proxy_records_delivered_total"),
                bytes(value("remoteback_proxy_backlog_bytes")),
                bytes(value("remoteback_proxy_backlog_limit_bytes")),
            );
            let _ = writeln!(
                screen,
                "  lost: records failed {:.0}, dropped {:.0}, writes uncaptured {:.0}   clients closed by limits {:.0}",
                value("remoteback_proxy_records_failed_total"),
                value("remoteback_proxy_records_dropped_total"),
                value("remoteback_proxy_writes_uncaptured_total"),
                value("remoteback_proxy_clients_closed_output_limit_total")
                    + value("remoteback_proxy_clients_closed_query_limit_total")
                    + value("remoteback_proxy_clients_closed_idle_total"),
            );
        }
        Kind::Replay => {
            let _ = writeln!(
                screen,
                "  writes applied {} ({:.0} in all)   lag {} (age of the newest write applied)",
                rate("remoteback_replay_commands_applied_total"),
                value("remoteback_replay_commands_applied_total"),
                millis(value("remoteback_replay_age_of_last_applied_ms")),
            );
            let _ = writeln!(
                screen,
                "  duplicates skipped {:.0}   sequence gaps {:.0}   bad records skipped {:.0}   refused by the backup {:.0}   partitions waiting at a barrier {:.0}",
                value("remoteback_replay_duplicates_skipped_total"),
                value("remoteback_replay_sequence_gaps_total"),
                value("remoteback_replay_bad_records_skipped_total"),
                value("remoteback_replay_commands_refused_total"),
                value("remoteback_replay_partitions_waiting"),
            );
        }
    }
}

fn bytes(n: f64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n >= MIB {
        format!("{:.1} MiB", n / MIB)
    } else {
        format!("{n:.0} B")
    }
}

fn millis(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_their_labels() {
        let text = "# HELP x\n# TYPE x counter\n\
                    remoteback_proxy_records_delivered_total{sender=\"0\",topic=\"a\"} 3\n\
                    remoteback_proxy_records_delivered_total{sender=\"1\",topic=\"b\"} 4\n\
                    remoteback_proxy_clients 2\n# EOF\n";
        let m = parse_metrics(text);
        assert_eq!(m["remoteback_proxy_records_delivered_total"], 7.0);
        assert_eq!(m["remoteback_proxy_clients"], 2.0);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn sizes_and_times_read_for_a_person() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(256.0 * 1024.0 * 1024.0), "256.0 MiB");
        assert_eq!(millis(35.0), "35 ms");
        assert_eq!(millis(12_500.0), "12.5 s");
    }
}

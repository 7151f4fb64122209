//! A small stderr logger.
//!
//! The `log` facade is used (rather than `tracing`) because `LogSender`
//! writes under a target named in the configuration at run time, which
//! `log` supports and `tracing`'s static call-site metadata does not.
//!
//! The level comes from `REMOTEBACK_LOG` (or `RUST_LOG`): a default level
//! followed by optional `target=level` pairs, e.g. `info,capture=debug`.
//! A target matches itself and its `::` children.

use std::io::Write;
use std::sync::{OnceLock, RwLock};

use log::{LevelFilter, Log, Metadata, Record};

struct Logger {
    default: LevelFilter,
    targets: Vec<(String, LevelFilter)>,
}

/// The installed logger's settings; configuration can add targets after the
/// logger is installed (so messages while loading it are not lost).
static ACTIVE: OnceLock<RwLock<Logger>> = OnceLock::new();

/// What `log` calls; reads the active settings.
struct Installed;

impl Log for Installed {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        ACTIVE
            .get()
            .and_then(|l| l.read().ok().map(|l| l.enabled(metadata)))
            .unwrap_or(false)
    }

    fn log(&self, record: &Record<'_>) {
        if let Some(Ok(l)) = ACTIVE.get().map(|l| l.read()) {
            l.log(record);
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

impl Logger {
    fn level_for(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .filter(|(t, _)| target == t || target.starts_with(&format!("{t}::")))
            .max_by_key(|(t, _)| t.len())
            .map(|(_, l)| *l)
            .unwrap_or(self.default)
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level_for(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = humantime_now();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "{now} {:<5} {}: {}",
            record.level(),
            record.target(),
            record.args()
        );
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// UTC wall-clock time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn humantime_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn parse_spec(spec: &str) -> Logger {
    let mut logger = Logger {
        default: LevelFilter::Info,
        targets: Vec::new(),
    };
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((target, level)) => {
                if let Ok(l) = level.parse() {
                    logger.targets.push((target.to_string(), l));
                }
            }
            None => {
                if let Ok(l) = part.parse() {
                    logger.default = l;
                }
            }
        }
    }
    logger
}

/// Installs the logger, configured from the environment.
pub fn init() {
    let spec = std::env::var("REMOTEBACK_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_default();
    let logger = parse_spec(&spec);
    let max = max_level(&logger);
    if ACTIVE.set(RwLock::new(logger)).is_ok() && log::set_logger(&Installed).is_ok() {
        log::set_max_level(max);
    }
}

/// Enables `target` at `level` (LogSender targets), unless the environment
/// already set a level for it.
pub fn add_target(target: &str, level: log::Level) {
    let Some(Ok(mut logger)) = ACTIVE.get().map(|l| l.write()) else {
        return;
    };
    if !logger.targets.iter().any(|(t, _)| t == target) {
        logger
            .targets
            .push((target.to_string(), level.to_level_filter()));
    }
    log::set_max_level(max_level(&logger));
}

fn max_level(logger: &Logger) -> LevelFilter {
    logger
        .targets
        .iter()
        .map(|(_, l)| *l)
        .chain([logger.default])
        .max()
        .unwrap_or(LevelFilter::Info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_sets_default_and_targets() {
        let l = parse_spec("warn,capture=debug,remoteback_proxy::session=trace");
        assert_eq!(l.level_for("anything"), LevelFilter::Warn);
        assert_eq!(l.level_for("capture"), LevelFilter::Debug);
        assert_eq!(l.level_for("remoteback_proxy::session"), LevelFilter::Trace);
        assert_eq!(
            l.level_for("remoteback_proxy::session::x"),
            LevelFilter::Trace
        );
        assert_eq!(l.level_for("remoteback_proxy"), LevelFilter::Warn);
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_782), (2026, 11, 25));
    }
}

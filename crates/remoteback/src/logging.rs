//! The stderr logger for the `log` facade.
//!
//! The `log` facade is used (rather than `tracing`) because `LogSender`
//! writes under a target named in the configuration at run time, which
//! `log` supports and `tracing`'s static call-site metadata does not.
//!
//! The level comes from `REMOTEBACK_LOG` (or `RUST_LOG`), in env_logger's
//! syntax, read by env_filter: a default level and `target=level`
//! directives, e.g. `info,remoteback_proxy::session=debug`. A directive
//! applies to every target that starts with it; the longest one that
//! applies wins. The logger is installed before the configuration is read
//! (so that warnings about the file are shown), and each `LogSender`'s
//! target is enabled afterwards, which rebuilds the filter.

use std::io::Write;
use std::sync::{OnceLock, RwLock};
use std::time::SystemTime;

use env_filter::{Builder, Filter};
use log::{LevelFilter, Log, Metadata, Record};

/// The directives the logger was started with, and the `LogSender`
/// targets added since.
struct Directives {
    spec: String,
    senders: Vec<(String, LevelFilter)>,
}

impl Directives {
    /// The filter: info by default, the `LogSender` targets at their
    /// levels, then the environment's directives, which win over both.
    fn filter(&self) -> Filter {
        let mut builder = Builder::new();
        builder.filter_level(LevelFilter::Info);
        for (target, level) in &self.senders {
            builder.filter_module(target, *level);
        }
        builder.parse(&self.spec);
        builder.build()
    }
}

/// The directives and the filter built from them.
struct Installed {
    directives: Directives,
    filter: Filter,
}

/// The installed logger; `LogSender` targets are added to it after the
/// configuration was read.
static ACTIVE: OnceLock<RwLock<Installed>> = OnceLock::new();

/// What `log` calls.
struct Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        ACTIVE
            .get()
            .and_then(|l| l.read().ok().map(|l| l.filter.enabled(metadata)))
            .unwrap_or(false)
    }

    fn log(&self, record: &Record<'_>) {
        let Some(Ok(installed)) = ACTIVE.get().map(|l| l.read()) else {
            return;
        };
        if !installed.filter.matches(record) {
            return;
        }
        let now = humantime::format_rfc3339_millis(SystemTime::now());
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

/// Installs the logger, configured from the environment.
pub fn init() {
    let spec = std::env::var("REMOTEBACK_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_default();
    let directives = Directives {
        spec,
        senders: Vec::new(),
    };
    let filter = directives.filter();
    let max = filter.filter();
    let installed = Installed { directives, filter };
    if ACTIVE.set(RwLock::new(installed)).is_ok() && log::set_logger(&Logger).is_ok() {
        log::set_max_level(max);
    }
}

/// Enables `target` at `level` (LogSender targets), unless the environment
/// set a level for it.
pub fn add_target(target: &str, level: log::Level) {
    let Some(Ok(mut installed)) = ACTIVE.get().map(|l| l.write()) else {
        return;
    };
    installed
        .directives
        .senders
        .push((target.to_string(), level.to_level_filter()));
    installed.filter = installed.directives.filter();
    log::set_max_level(installed.filter.filter());
}

#[cfg(test)]
mod tests {
    use log::Level;

    use super::*;

    fn enabled(d: &Directives, target: &str, level: Level) -> bool {
        d.filter()
            .enabled(&Metadata::builder().target(target).level(level).build())
    }

    /// The most verbose level at which `target` logs.
    fn level_for(d: &Directives, target: &str) -> LevelFilter {
        [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
        ]
        .into_iter()
        .find(|l| enabled(d, target, *l))
        .map_or(LevelFilter::Off, |l| l.to_level_filter())
    }

    fn directives(spec: &str) -> Directives {
        Directives {
            spec: spec.to_string(),
            senders: Vec::new(),
        }
    }

    #[test]
    fn spec_sets_default_and_targets() {
        let l = directives("warn,capture=debug,remoteback_proxy::session=trace");
        assert_eq!(level_for(&l, "anything"), LevelFilter::Warn);
        assert_eq!(level_for(&l, "capture"), LevelFilter::Debug);
        assert_eq!(
            level_for(&l, "remoteback_proxy::session"),
            LevelFilter::Trace
        );
        assert_eq!(
            level_for(&l, "remoteback_proxy::session::x"),
            LevelFilter::Trace
        );
        assert_eq!(level_for(&l, "remoteback_proxy"), LevelFilter::Warn);
    }

    #[test]
    fn log_sender_targets_yield_to_the_environment() {
        let mut d = directives("warn,audit=error");
        d.senders.push(("audit".into(), LevelFilter::Debug));
        d.senders.push(("capture".into(), LevelFilter::Debug));
        assert_eq!(level_for(&d, "audit"), LevelFilter::Error);
        assert_eq!(level_for(&d, "capture"), LevelFilter::Debug);
        assert_eq!(level_for(&d, "other"), LevelFilter::Warn);
        let d = directives("");
        assert_eq!(level_for(&d, "other"), LevelFilter::Info);
    }
}

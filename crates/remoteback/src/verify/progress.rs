//! VerifyProgress while verify walks the keys.
//!
//! On a terminal a bar with keys/s and the time left (the total is the
//! databases' `DBSIZE`, or unknown with `--match`); elsewhere (a log, a
//! cron job) a plain line every few seconds, since redrawn bars make
//! unreadable logs.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain lines come.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// A bar redrawn on stderr.
    Bar,
    /// A line on stderr every [`LINE_EVERY`].
    Lines,
    /// Nothing.
    Quiet,
}

impl Display {
    /// A bar when stderr is a terminal, lines otherwise.
    pub fn for_stderr() -> Display {
        if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Lines
        }
    }
}

#[derive(Default)]
struct Counts {
    done: AtomicU64,
    found: AtomicU64,
    phase: Mutex<String>,
}

/// The walk's progress, shown as asked.
pub struct VerifyProgress {
    counts: Arc<Counts>,
    bar: Option<ProgressBar>,
    ticker: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl VerifyProgress {
    /// Starts showing progress towards `total` keys (`None`: unknown).
    pub fn start(display: Display, total: Option<u64>) -> VerifyProgress {
        let counts = Arc::new(Counts::default());
        let mut progress = VerifyProgress {
            counts: counts.clone(),
            bar: None,
            ticker: None,
        };
        match display {
            Display::Quiet => {}
            Display::Bar => {
                let (bar, template) = match total {
                    Some(total) => (
                        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
                        "{msg} [{bar:30}] {human_pos}/{human_len} keys, {per_sec:0}, ETA {eta}",
                    ),
                    None => (
                        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                        "{msg} {human_pos} keys, {per_sec:0}, {elapsed}",
                    ),
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.enable_steady_tick(Duration::from_millis(200));
                progress.bar = Some(bar);
            }
            Display::Lines => {
                let (stop, stopped) = mpsc::channel::<()>();
                let started = Instant::now();
                let ticker = std::thread::Builder::new()
                    .name("verify-progress".into())
                    .spawn(move || {
                        while let Err(mpsc::RecvTimeoutError::Timeout) =
                            stopped.recv_timeout(LINE_EVERY)
                        {
                            eprintln!("{}", line(&counts, total, started.elapsed()));
                        }
                    });
                progress.ticker = ticker.ok().map(|t| (stop, t));
            }
        }
        progress
    }

    /// What is being walked now (`db 0: source keys`).
    pub fn phase(&self, text: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.clone());
        }
        *self.counts.phase.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }

    /// `keys` more keys walked.
    pub fn advance(&self, keys: u64) {
        self.counts.done.fetch_add(keys, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(keys);
        }
    }

    /// `n` more keys that differ (before they are checked again).
    pub fn found(&self, n: u64) {
        self.counts.found.fetch_add(n, Ordering::Relaxed);
    }

    /// Stops showing progress.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some((stop, ticker)) = self.ticker.take() {
            drop(stop);
            let _ = ticker.join();
        }
    }
}

impl Drop for VerifyProgress {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `verify: db 0: source keys: 120000 of 1000000 keys (12%), 51234 keys/s,
/// ETA 17 s, 3 differing so far`
fn line(counts: &Counts, total: Option<u64>, elapsed: Duration) -> String {
    let done = counts.done.load(Ordering::Relaxed);
    let found = counts.found.load(Ordering::Relaxed);
    let phase = counts
        .phase
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    let mut text = format!("verify: {phase}: {done}");
    if let Some(total) = total.filter(|&t| t > 0) {
        let share = (done as f64 / total as f64 * 100.0).min(100.0);
        text.push_str(&format!(" of {total} keys ({share:.0}%)"));
    } else {
        text.push_str(" keys");
    }
    text.push_str(&format!(", {rate:.0} keys/s"));
    if let Some(total) = total {
        if rate > 0.0 && total > done {
            let left = ((total - done) as f64 / rate).ceil();
            text.push_str(&format!(", ETA {left:.0} s"));
        }
    }
    text.push_str(&format!(", {found} differing so far"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_rate_share_and_time_left() {
        let counts = Counts::default();
        counts.done.store(500, Ordering::Relaxed);
        counts.found.store(2, Ordering::Relaxed);
        *counts.phase.lock().unwrap() = "db 0: source keys".into();
        assert_eq!(
            line(&counts, Some(1000), Duration::from_secs(5)),
            "verify: db 0: source keys: 500 of 1000 keys (50%), 100 keys/s, ETA 5 s, 2 differing so far"
        );
        assert_eq!(
            line(&counts, None, Duration::from_secs(5)),
            "verify: db 0: source keys: 500 keys, 100 keys/s, 2 differing so far"
        );
    }
}

//! Certificates renewed on disk taken up without a restart.
//!
//! Short-lived certificates (a day, from an internal authority; ninety days
//! from a public one) are replaced in place by whatever renews them. A
//! [`Renewing`] value is built from files and built again when one of them
//! changed: before a connection is opened or taken, at most once a second,
//! the files' sizes and modification times are compared with the last
//! build's (a few `stat`s, no read). A new build that fails (a file caught
//! half-written, a key that does not go with its certificate) leaves the
//! last good one in use and is tried again at the next look.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::tls::TlsError;

/// How often the files are looked at, at most.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// What a file looked like: its size and modification time (`None` when
/// it could not be read).
type Stamp = Vec<Option<(u64, SystemTime)>>;

/// A value built from files, rebuilt when they change.
pub(crate) struct Renewing<T> {
    current: ArcSwap<T>,
    files: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    /// When the files were last looked at, and what they were at the last
    /// build.
    looked: Mutex<(Instant, Stamp)>,
    /// What the files are called in the log (`TLS for clients`).
    what: &'static str,
}

impl<T> Renewing<T> {
    /// Builds the first value (an error is the caller's: the configuration
    /// is wrong).
    pub fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Renewing<T>, TlsError> {
        let stamp = stamp(&files);
        let first = build()?;
        Ok(Renewing {
            current: ArcSwap::from_pointee(first),
            files,
            build: Box::new(build),
            looked: Mutex::new((Instant::now(), stamp)),
            what,
        })
    }

    /// The value to use now: rebuilt first if a file changed since the
    /// last build (looked at once a second at most).
    pub fn get(&self) -> Arc<T> {
        self.renew(Instant::now());
        self.current.load_full()
    }

    fn renew(&self, now: Instant) {
        let mut looked = match self.looked.try_lock() {
            Ok(looked) => looked,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            // Another connection is looking right now.
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if now.duration_since(looked.0) < LOOK_EVERY {
            return;
        }
        looked.0 = now;
        let seen = stamp(&self.files);
        if seen == looked.1 {
            return;
        }
        match (self.build)() {
            Ok(value) => {
                self.current.store(Arc::new(value));
                looked.1 = seen;
                log::info!("{}: renewed files taken up", self.what);
            }
            Err(e) => log::warn!(
                "{}: the files changed but cannot be used ({e}); the previous ones stay in use, \
                 looked at again in a second",
                self.what
            ),
        }
    }
}

fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok()?;
            Some((meta.len(), meta.modified().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn a_changed_file_is_built_again_and_a_bad_build_keeps_the_last_good_one() {
        let dir = std::env::temp_dir().join(format!("remoteback-renewal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cert.pem");
        std::fs::write(&file, "one").unwrap();
        let builds = Arc::new(AtomicU32::new(0));
        let (path, counted) = (file.clone(), builds.clone());
        let renewing = Renewing::new("test", vec![file.clone()], move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            match text.as_str() {
                "bad" => Err(TlsError::NoCertificate { path: path.clone() }),
                _ => Ok(text),
            }
        })
        .unwrap();
        assert_eq!(*renewing.get(), "one");
        let start = Instant::now();
        std::fs::write(&file, "two!").unwrap();
        renewing.renew(start);
        assert_eq!(
            *renewing.current.load_full(),
            "one",
            "not looked at within a second"
        );
        renewing.renew(start + LOOK_EVERY * 2);
        assert_eq!(*renewing.current.load_full(), "two!");
        std::fs::write(&file, "bad").unwrap();
        renewing.renew(start + LOOK_EVERY * 4);
        assert_eq!(
            *renewing.current.load_full(),
            "two!",
            "the last good one stays"
        );
        let before = builds.load(Ordering::SeqCst);
        renewing.renew(start + LOOK_EVERY * 6);
        assert_eq!(
            builds.load(Ordering::SeqCst),
            before + 1,
            "a failed build is tried again"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

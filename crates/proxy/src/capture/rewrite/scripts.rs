//! The bodies of the Lua scripts the proxy has seen, by SHA-1.
//!
//! `EVALSHA sha ...` names a script the primary has cached; the backup may
//! not have it (it restarted, or the script was loaded before the proxy
//! ran). So the proxy remembers every body it sees go by (`EVAL`,
//! `EVAL_RO`, `SCRIPT LOAD`) and replicates `EVALSHA` as `EVAL body ...`.
//!
//! One cache serves every session of a proxy, because a script loaded on
//! one connection is run by others. It is bounded, by script count and by
//! total body bytes; when a new script does not fit, the oldest-learned
//! scripts are forgotten first. Redis 7.0 itself never forgets a script
//! until `SCRIPT FLUSH`, so an `EVALSHA` of a forgotten script is replicated
//! verbatim and counted like one the proxy never saw.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use bytes::Bytes;
use sha1_smol::{Digest, Sha1};

/// Accounting overhead per cached script (key, queue slot, map entry).
const ENTRY_OVERHEAD: usize = 64;
/// How many distinct unknown SHA-1s are remembered as already logged.
const REPORTED_LIMIT: usize = 1024;

/// Script bodies by SHA-1, shared by all sessions.
pub(crate) struct ScriptCache {
    inner: RwLock<Inner>,
    max_scripts: usize,
    max_bytes: usize,
    /// `EVALSHA`s replicated verbatim because the body was unknown.
    unknown: AtomicU64,
    /// Unknown SHA-1s already logged, so a hot script logs once, not per call.
    reported: Mutex<HashSet<Digest>>,
}

#[derive(Default)]
struct Inner {
    bodies: HashMap<Digest, Bytes>,
    /// Learning order, oldest first: who goes when the cache is full.
    order: VecDeque<Digest>,
    bytes: usize,
}

impl Default for ScriptCache {
    fn default() -> Self {
        ScriptCache::new()
    }
}

impl ScriptCache {
    /// Default bound on the number of scripts.
    pub const DEFAULT_MAX_SCRIPTS: usize = 10_000;
    /// Default bound on the total size of the bodies (64 MiB).
    pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

    /// An empty cache with the default bounds.
    pub fn new() -> Self {
        ScriptCache::with_limits(Self::DEFAULT_MAX_SCRIPTS, Self::DEFAULT_MAX_BYTES)
    }

    /// An empty cache holding at most `max_scripts` scripts and `max_bytes`
    /// bytes of bodies (plus a small per-script overhead).
    pub fn with_limits(max_scripts: usize, max_bytes: usize) -> Self {
        ScriptCache {
            inner: RwLock::new(Inner::default()),
            max_scripts,
            max_bytes,
            unknown: AtomicU64::new(0),
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// Remembers `body` and returns its SHA-1 (shown as Redis names
    /// scripts: 40 lowercase hex digits). The body is copied, so the cache
    /// never pins a client's read buffer.
    pub fn learn(&self, body: &[u8]) -> Digest {
        let sha = Sha1::from(body).digest();
        if self.read().bodies.contains_key(&sha) {
            return sha;
        }
        let size = body.len() + ENTRY_OVERHEAD;
        if size > self.max_bytes || self.max_scripts == 0 {
            log::warn!(
                "script {sha} ({} bytes) is larger than the script cache; EVALSHA of it will be replicated verbatim",
                body.len()
            );
            return sha;
        }
        let mut inner = self.write();
        if inner.bodies.contains_key(&sha) {
            return sha;
        }
        while inner.bodies.len() >= self.max_scripts || inner.bytes + size > self.max_bytes {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(b) = inner.bodies.remove(&old) {
                inner.bytes -= b.len() + ENTRY_OVERHEAD;
            }
        }
        inner.bodies.insert(sha, Bytes::copy_from_slice(body));
        inner.order.push_back(sha);
        inner.bytes += size;
        sha
    }

    /// The body whose SHA-1 is `sha_hex` (40 hex digits, any case).
    pub fn body(&self, sha_hex: &[u8]) -> Option<Bytes> {
        let sha = parse_hex(sha_hex)?;
        self.read().bodies.get(&sha).cloned()
    }

    /// Forgets every script (`SCRIPT FLUSH`).
    pub fn flush(&self) {
        let mut inner = self.write();
        inner.bodies.clear();
        inner.order.clear();
        inner.bytes = 0;
    }

    /// How many scripts are cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.read().bodies.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many `EVALSHA`s were replicated verbatim because the proxy did
    /// not know the script's body.
    #[cfg(test)]
    pub fn unknown_evalsha(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }

    /// Counts an `EVALSHA` of an unknown script; logs each SHA-1 at error
    /// level the first time it is seen (and again after 1024 others were).
    pub(crate) fn note_unknown(&self, sha_hex: &[u8]) {
        let total = self.unknown.fetch_add(1, Ordering::Relaxed) + 1;
        let key = parse_hex(sha_hex).unwrap_or_else(|| Sha1::from(sha_hex).digest());
        let first = {
            let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            if reported.len() >= REPORTED_LIMIT {
                reported.clear();
            }
            reported.insert(key)
        };
        if first {
            log::error!(
                "EVALSHA {}: the proxy never saw this script's body (loaded before the proxy started, or forgotten by its bounded cache); replicated as EVALSHA, which the backup refuses with NOSCRIPT unless it has the script ({total} unknown EVALSHA so far)",
                String::from_utf8_lossy(sha_hex)
            );
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A SHA-1 as a client names it: exactly 40 hex digits, any case.
fn parse_hex(text: &[u8]) -> Option<Digest> {
    if text.len() != 40 || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_and_finds_by_sha_in_any_case() {
        let cache = ScriptCache::new();
        let sha = cache.learn(b"return 1");
        assert_eq!(sha.to_string(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        assert_eq!(
            cache
                .body(b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
                .as_deref(),
            Some(&b"return 1"[..])
        );
        assert_eq!(
            cache
                .body(b"E0E1F9FABFC9D4800C877A703B823AC0578FF8DB")
                .as_deref(),
            Some(&b"return 1"[..])
        );
        assert_eq!(cache.body(b"nonsense"), None);
        cache.learn(b"return 1");
        assert_eq!(cache.len(), 1);
        cache.flush();
        assert!(cache.is_empty());
        assert_eq!(
            cache.body(b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"),
            None
        );
    }

    #[test]
    fn a_malformed_sha_finds_nothing() {
        let cache = ScriptCache::new();
        cache.learn(b"return 1");
        let multibyte = "é".repeat(20);
        for bad in [
            &b"+0e1f9fabfc9d4800c877a703b823ac0578ff8db"[..],
            multibyte.as_bytes(),
            b"e0e1f9fabfc9d4800c877a703b823ac0578ff8d",
        ] {
            assert!(cache.body(bad).is_none(), "{}", bad.escape_ascii());
        }
    }

    #[test]
    fn bounded_by_count_oldest_first() {
        let cache = ScriptCache::with_limits(2, 1 << 20);
        let a = cache.learn(b"return 'a'");
        let b = cache.learn(b"return 'b'");
        let c = cache.learn(b"return 'c'");
        assert_eq!(cache.len(), 2);
        assert!(cache.body(a.to_string().as_bytes()).is_none());
        assert!(cache.body(b.to_string().as_bytes()).is_some());
        assert!(cache.body(c.to_string().as_bytes()).is_some());
    }

    #[test]
    fn bounded_by_bytes() {
        let cache = ScriptCache::with_limits(100, 2 * (100 + ENTRY_OVERHEAD));
        let bodies: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; 100]).collect();
        let shas: Vec<_> = bodies.iter().map(|b| cache.learn(b)).collect();
        assert_eq!(cache.len(), 2);
        assert!(cache.body(shas[0].to_string().as_bytes()).is_none());
        assert!(cache.body(shas[2].to_string().as_bytes()).is_some());
        // Larger than the whole cache: not kept, nothing evicted.
        cache.learn(&vec![b'z'; 1000]);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn counts_unknown_evalsha() {
        let cache = ScriptCache::new();
        assert_eq!(cache.unknown_evalsha(), 0);
        cache.note_unknown(b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        cache.note_unknown(b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        cache.note_unknown(b"not-a-sha");
        assert_eq!(cache.unknown_evalsha(), 3);
    }
}

//! What the sync must know of the clients' writes while it runs.
//!
//! A copy under a key's lock orders that key's snapshot against writes to
//! it. A write that reads other keys than it writes (`RENAME a b`,
//! `LMOVE a b`, `SUNIONSTORE`, a transaction, a script with declared keys)
//! is replayed on the backup against the backup's copy of those keys, and
//! while the sync runs some of them may not be copied yet: `b` would end
//! wrong on the backup, and a `b` the sync has passed is never copied
//! again. So while a sync walks the keyspace, every key of every write
//! that names more than one key is noted, and the sync copies those keys
//! again once the walk is done. During those second copies a write is
//! noted only when it names a key still waiting for one (the others are
//! right on the backup by then), so the set drains.
//!
//! Writes whose keys the proxy cannot name (they take the barrier:
//! `SWAPDB`, `MOVE`, `COPY`, a script without declared keys) cannot be
//! repaired this way; they are counted, and the sync says the backup
//! needs a `verify --repair`. `FLUSHALL` and `FLUSHDB` need nothing: they
//! empty both sides alike.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use remoteback_protocol::Command;

use super::locks::Need;

/// Noted keys the sync copies again, at most: past it the sync stops
/// noting and fails, saying it could not keep track.
pub(crate) const MAX_NOTED: usize = 1_000_000;

/// The notes of the running sync; empty and idle when none runs.
#[derive(Default)]
pub(crate) struct SyncWatch {
    /// Whether a sync runs: the one check on a write's path when none does.
    active: AtomicBool,
    notes: Mutex<Notes>,
}

#[derive(Default)]
struct Notes {
    /// The walk is on: every multi-key write is noted.
    walking: bool,
    /// Keys to copy again.
    pending: HashSet<(u32, Bytes)>,
    /// Writes of keys the proxy cannot name, since the sync started.
    unnamed: u64,
    /// More than [`MAX_NOTED`] keys were noted: some were not.
    overflowed: bool,
}

/// What a sync learned of the writes that ran during it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Unordered {
    /// Writes of keys the proxy cannot name.
    pub unnamed: u64,
    /// Whether some keys that needed a second copy were not noted.
    pub overflowed: bool,
}

impl SyncWatch {
    fn notes(&self) -> MutexGuard<'_, Notes> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sync starts walking.
    pub fn start(&self) {
        *self.notes() = Notes {
            walking: true,
            ..Notes::default()
        };
        self.active.store(true, Ordering::Release);
    }

    /// The walk is done: from now on only writes naming a pending key are
    /// noted.
    pub fn walked(&self) {
        self.notes().walking = false;
    }

    /// Notes a write that is about to take `need`.
    pub fn note(&self, need: &Need, command: &Command) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let mut notes = self.notes();
        match need {
            Need::Keys(keys) if keys.len() > 1 => {
                let relevant = notes.walking || keys.iter().any(|k| notes.pending.contains(k));
                if !relevant {
                    return;
                }
                if notes.pending.len() + keys.len() > MAX_NOTED {
                    notes.overflowed = true;
                    return;
                }
                notes.pending.extend(keys.iter().cloned());
            }
            Need::Barrier if !command.is("FLUSHALL") && !command.is("FLUSHDB") => {
                notes.unnamed += 1;
            }
            _ => {}
        }
    }

    /// Up to `n` keys waiting for their second copy (they stay noted until
    /// [`copied`](SyncWatch::copied)).
    pub fn pending(&self, n: usize) -> Vec<(u32, Bytes)> {
        self.notes().pending.iter().take(n).cloned().collect()
    }

    /// `key` was copied again, under its lock: writes naming it from now on
    /// apply to a right copy.
    pub fn copied(&self, key: &(u32, Bytes)) {
        self.notes().pending.remove(key);
    }

    /// The sync ended: what it could not order.
    pub fn stop(&self) -> Unordered {
        self.active.store(false, Ordering::Release);
        let notes = std::mem::take(&mut *self.notes());
        Unordered {
            unnamed: notes.unnamed,
            overflowed: notes.overflowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Need {
        Need::Keys(
            names
                .iter()
                .map(|k| (0, Bytes::copy_from_slice(k.as_bytes())))
                .collect(),
        )
    }

    fn key(name: &str) -> (u32, Bytes) {
        (0, Bytes::copy_from_slice(name.as_bytes()))
    }

    #[test]
    fn notes_multi_key_writes_only_while_a_sync_runs() {
        let watch = SyncWatch::default();
        let rename = Command::from_parts(["RENAME", "a", "b"]);
        watch.note(&keys(&["a", "b"]), &rename);
        watch.start();
        assert!(watch.pending(10).is_empty(), "nothing before the start");
        watch.note(&keys(&["k"]), &Command::from_parts(["SET", "k", "v"]));
        assert!(
            watch.pending(10).is_empty(),
            "single-key writes need nothing"
        );
        watch.note(&keys(&["a", "b"]), &rename);
        let mut pending = watch.pending(10);
        pending.sort();
        assert_eq!(pending, [key("a"), key("b")]);

        // After the walk, only writes naming a pending key are noted.
        watch.walked();
        watch.note(
            &keys(&["x", "y"]),
            &Command::from_parts(["RENAME", "x", "y"]),
        );
        watch.note(
            &keys(&["b", "c"]),
            &Command::from_parts(["LMOVE", "b", "c"]),
        );
        watch.copied(&key("a"));
        watch.copied(&key("b"));
        assert_eq!(watch.pending(10), [key("c")]);
        watch.copied(&key("c"));

        watch.note(&Need::Barrier, &Command::from_parts(["FLUSHALL"]));
        watch.note(&Need::Barrier, &Command::from_parts(["SWAPDB", "0", "1"]));
        assert_eq!(
            watch.stop(),
            Unordered {
                unnamed: 1,
                overflowed: false
            }
        );
        watch.note(&keys(&["a", "b"]), &rename);
        assert!(watch.pending(10).is_empty(), "nothing after the stop");
    }
}

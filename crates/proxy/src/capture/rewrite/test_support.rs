//! Helpers shared by the rewrite unit tests: build a command, rewrite it
//! against a raw RESP reply (or none), and spell the expected commands.

use bytes::Bytes;
use remoteback_protocol::Command;

use super::{apply, refused, Reply, Rewrite, Rewritten, ScriptCache};

pub(super) const NOW: u64 = 1_700_000_000_000;

pub(super) fn cmd(parts: &[&str]) -> Command {
    Command::from_parts(parts.iter())
}

/// What capture replicates for `command` answered with `reply` at [`NOW`]:
/// its family's rewrite, or the command verbatim when it has none.
pub(super) fn rewrite(command: &Command, reply: Reply<'_>, scripts: &ScriptCache) -> Rewritten {
    match Rewrite::of(command.name()) {
        Some(family) => apply(family, command, reply, NOW, scripts),
        None => Rewritten::Verbatim,
    }
}

/// What capture notes of `command` when the primary refused it with `error`.
pub(super) fn refuse(command: &Command, error: &[u8], scripts: &ScriptCache) {
    if let Some(family) = Rewrite::of(command.name()) {
        refused(family, command, error, scripts);
    }
}

/// Rewrites `parts` given the raw RESP `reply`.
pub(super) fn rw_with(parts: &[&str], reply: &str, scripts: &ScriptCache) -> Rewritten {
    let bytes = Bytes::copy_from_slice(reply.as_bytes());
    rewrite(&cmd(parts), Reply::Raw(&bytes), scripts)
}

pub(super) fn rw(parts: &[&str], reply: &str) -> Rewritten {
    rw_with(parts, reply, &ScriptCache::new())
}

pub(super) fn rw_unknown(parts: &[&str]) -> Rewritten {
    rewrite(&cmd(parts), Reply::Unknown, &ScriptCache::new())
}

/// The expected commands, each written as space-separated words.
pub(super) fn to(lines: &[&str]) -> Rewritten {
    Rewritten::Commands(lines.iter().map(|l| cmd(&words(l))).collect())
}

pub(super) fn words(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}

pub(super) fn at(offset_ms: i64) -> String {
    (NOW as i64 + offset_ms).to_string()
}

//! Scripts: `EVALSHA sha ...` replicated as `EVAL <body> ...`, and the
//! commands that keep the [`ScriptCache`] up to date (`EVAL`, `EVAL_RO`,
//! `SCRIPT LOAD`, `SCRIPT FLUSH`).
//!
//! `EVALSHA` names a script the primary has cached; the backup may lack it
//! (it restarted, or the script was loaded before the proxy ran), so the
//! proxy replicates the body when it saw it go by.

use bytes::Bytes;
use remoteback_protocol::frame::Frame;

use super::{is, one, word, Reply, Rewritten, ScriptCache};

/// `EVAL|EVAL_RO body numkeys ...` teaches the cache its body; replicated
/// verbatim.
pub(super) fn eval(args: &[Bytes], scripts: &ScriptCache) -> Option<Rewritten> {
    if let Some(body) = args.get(1) {
        scripts.learn(body);
    }
    None
}

pub(super) fn failed_to_compile(error: &[u8]) -> bool {
    let head = &error[..error.len().min(96)];
    head.windows(22).any(|w| w == b"Error compiling script")
}

/// `EVALSHA sha numkeys ...` → `EVAL <body> numkeys ...` when the body is
/// cached; otherwise counted, logged and replicated verbatim.
pub(super) fn evalsha(args: &[Bytes], scripts: &ScriptCache) -> Option<Rewritten> {
    let sha = args.get(1)?;
    match scripts.body(sha) {
        Some(body) => {
            let mut parts = args.to_vec();
            parts[0] = word("EVAL");
            parts[1] = body;
            one(parts)
        }
        None => {
            scripts.note_unknown(sha);
            Some(Rewritten::Verbatim)
        }
    }
}

/// `SCRIPT LOAD body` teaches the cache (the reply is the SHA-1, checked
/// against ours); `SCRIPT FLUSH` empties it. Both replicate verbatim.
pub(super) fn script(args: &[Bytes], reply: Reply<'_>, scripts: &ScriptCache) -> Option<Rewritten> {
    let sub = args.get(1)?;
    if is(sub, "LOAD") {
        let sha = scripts.learn(args.get(2)?).to_string();
        if let Some(answer) = reply.decode().as_deref().and_then(Frame::as_bytes) {
            if !answer.eq_ignore_ascii_case(sha.as_bytes()) {
                log::warn!(
                    "SCRIPT LOAD: the primary named the script {} but the proxy computed {sha}",
                    String::from_utf8_lossy(answer)
                );
            }
        }
    } else if is(sub, "FLUSH") {
        scripts.flush();
    }
    Some(Rewritten::Verbatim)
}

#[cfg(test)]
mod tests {
    use crate::capture::rewrite::test_support::*;
    use crate::capture::rewrite::{Rewritten, ScriptCache};

    #[test]
    fn evalsha_becomes_eval_when_the_body_is_known() {
        let scripts = ScriptCache::new();
        let sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
        let evalsha = ["EVALSHA", sha, "1", "k", "arg"];
        assert_eq!(rw_with(&evalsha, ":1\r\n", &scripts), Rewritten::Verbatim);
        assert_eq!(scripts.unknown_evalsha(), 1);
        // SCRIPT LOAD on some connection teaches the cache.
        let loaded = format!("$40\r\n{sha}\r\n");
        assert_eq!(
            rw_with(&["SCRIPT", "LOAD", "return 1"], &loaded, &scripts),
            Rewritten::Verbatim
        );
        let expected = Rewritten::Commands(vec![cmd(&["EVAL", "return 1", "1", "k", "arg"])]);
        assert_eq!(rw_with(&evalsha, ":1\r\n", &scripts), expected);
        let upper = sha.to_ascii_uppercase();
        assert_eq!(
            rw_with(&["evalsha", &upper, "1", "k", "arg"], ":1\r\n", &scripts),
            expected
        );
        assert_eq!(scripts.unknown_evalsha(), 1);
        // SCRIPT FLUSH forgets.
        assert_eq!(
            rw_with(&["SCRIPT", "FLUSH", "ASYNC"], "+OK\r\n", &scripts),
            Rewritten::Verbatim
        );
        assert_eq!(rw_with(&evalsha, ":1\r\n", &scripts), Rewritten::Verbatim);
        assert_eq!(scripts.unknown_evalsha(), 2);
        // EVAL and EVAL_RO teach it too, even when the script failed.
        rw_with(&["EVAL", "return 1", "0"], ":1\r\n", &scripts);
        assert_eq!(rw_with(&evalsha, ":1\r\n", &scripts), expected);
        scripts.flush();
        rw_with(&["eval_ro", "return 1", "0"], ":1\r\n", &scripts);
        assert_eq!(rw_with(&evalsha, ":1\r\n", &scripts), expected);
        scripts.flush();
        refuse(
            &cmd(&["EVAL", "return 1", "0"]),
            b"ERR user_script:1: oops",
            &scripts,
        );
        assert_eq!(rw_with(&evalsha, ":1\r\n", &scripts), expected);
        scripts.flush();
        refuse(
            &cmd(&["EVAL", "return 1", "0"]),
            b"ERR Error compiling script (new function): user_script:1: ...",
            &scripts,
        );
        assert!(scripts.is_empty());
        refuse(&cmd(&["SCRIPT", "LOAD", "return 1"]), b"ERR x", &scripts);
        assert!(scripts.is_empty());
    }
}

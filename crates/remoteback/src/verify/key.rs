//! One key compared in full: existence, type, value by type, expiry.
//!
//! This is the path for what the batched fast path cannot settle: large
//! keys, values whose serializations differ, keys that changed between two
//! steps, and keys checked again in later rounds.

use std::time::Duration;

use super::difference::{Kind, Verdict};
use super::reply::{bytes, expect_len, int, must, Halt};
use super::side::{pipeline, Pair};
use super::ttl::Ttl;
use super::value;

/// A key's type and expiry on one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub kind: String,
    pub ttl: Ttl,
}

impl Head {
    pub fn exists(&self) -> bool {
        self.kind != "none"
    }

    /// `hash, ttl 1500 ms`, or `none`.
    pub fn describe(&self) -> String {
        if self.exists() {
            format!("{}, {}", self.kind, self.ttl.describe())
        } else {
            "none".to_string()
        }
    }
}

/// Compares `key` on both sides of `pair`.
pub fn compare(pair: &Pair, key: &[u8], tolerance: Duration) -> anyhow::Result<Verdict> {
    let mut pipe = pipeline();
    pipe.cmd("TYPE").arg(key).cmd("PTTL").arg(key);
    let (s, t) = pair.both(pipe)?;
    let (s, t) = (head(&s)?, head(&t)?);
    Ok(match (s.exists(), t.exists()) {
        (false, false) => Verdict::Same,
        (true, false) => Verdict::differs(Kind::Missing, s.describe(), "none"),
        (false, true) => Verdict::differs(Kind::Extra, "none", t.describe()),
        (true, true) if s.kind != t.kind => {
            Verdict::differs(Kind::Type, s.describe(), t.describe())
        }
        (true, true) => match value::compare(pair, &s.kind, key) {
            Ok(Some((source, target))) => Verdict::differs(Kind::Value, source, target),
            Ok(None) => ttls(&s, &t, tolerance),
            Err(Halt::Changed) => Verdict::differs(
                Kind::Value,
                format!("{}, changed while compared", s.kind),
                format!("{}, changed while compared", t.kind),
            ),
            Err(Halt::Failed(e)) => return Err(e),
        },
    })
}

/// The verdict on two keys with equal values.
pub fn ttls(s: &Head, t: &Head, tolerance: Duration) -> Verdict {
    if s.ttl.close(t.ttl, tolerance) {
        Verdict::Same
    } else {
        Verdict::differs(Kind::Ttl, s.describe(), t.describe())
    }
}

/// A `TYPE` and a `PTTL` reply.
fn head(replies: &[redis::Value]) -> anyhow::Result<Head> {
    expect_len(replies, 2, "TYPE, PTTL")?;
    let kind = bytes(must(&replies[0], "TYPE")?)
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .ok_or_else(|| anyhow::anyhow!("TYPE: unexpected reply {:?}", replies[0]))?;
    let ttl = int(must(&replies[1], "PTTL")?)
        .map(Ttl::from_pttl)
        .ok_or_else(|| anyhow::anyhow!("PTTL: unexpected reply {:?}", replies[1]))?;
    // A key that expired between the two commands.
    let ttl = if kind == "none" { Ttl::Absent } else { ttl };
    let kind = if ttl == Ttl::Absent {
        "none".to_string()
    } else {
        kind
    };
    Ok(Head { kind, ttl })
}

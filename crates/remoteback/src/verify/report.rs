//! What verify found: the summary an operator reads and the JSON report
//! (`--report FILE`) a script reads.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use serde_json::json;

use super::difference::{Difference, Kind};
use super::escape::{escape, hex};

/// The result of a verification.
#[derive(Debug)]
pub struct Summary {
    /// `host:port` of each side (a URL's credentials stay out of reports).
    pub source: String,
    pub target: String,
    pub dbs: Vec<u32>,
    /// Keys compared in the first round: every sampled source key, and the
    /// target's keys that the source lacked.
    pub keys: u64,
    /// Rounds run: fewer than asked when no difference was left to check.
    pub rounds: u32,
    /// The first round, the walk over every key.
    pub walk: Duration,
    /// From connecting to the end, rounds and repairs included.
    pub duration: Duration,
    /// The differences that persisted through every round.
    pub found: Vec<Found>,
    /// Whether `--repair` ran.
    pub repaired: bool,
}

/// One persistent difference, and what repairing it did.
#[derive(Debug)]
pub struct Found {
    pub difference: Difference,
    pub repair: Option<Repair>,
}

/// What `--repair` did for one key.
#[derive(Debug)]
pub struct Repair {
    /// The records the proxy wrote, or why it did not.
    pub outcome: Result<u64, String>,
    /// How the key still differs after the wait; `None` once equal.
    pub after: Option<Difference>,
}

impl Found {
    /// Whether the key still differs at the end.
    pub fn remains(&self) -> bool {
        match &self.repair {
            None => true,
            Some(r) => r.outcome.is_err() || r.after.is_some(),
        }
    }
}

impl Summary {
    /// Keys compared a second over the walk.
    pub fn keys_per_second(&self) -> f64 {
        self.keys as f64 / self.walk.as_secs_f64().max(1e-6)
    }

    /// The differences that remain (all of them without `--repair`).
    pub fn remaining(&self) -> usize {
        self.found.iter().filter(|f| f.remains()).count()
    }

    /// Persistent differences by kind, every kind present.
    pub fn by_kind(&self) -> BTreeMap<Kind, usize> {
        let mut counts: BTreeMap<Kind, usize> = Kind::ALL.iter().map(|&k| (k, 0)).collect();
        for f in &self.found {
            *counts.entry(f.difference.kind).or_default() += 1;
        }
        counts
    }

    /// One line a difference, then the summary.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        for f in &self.found {
            write!(out, "{}", f.difference)?;
            if let Some(r) = &f.repair {
                match (&r.outcome, &r.after) {
                    (Err(e), _) => write!(out, " -> not repaired: {e}")?,
                    (Ok(n), None) => write!(out, " -> repaired ({n} records), now equal")?,
                    (Ok(n), Some(d)) => write!(
                        out,
                        " -> repaired ({n} records), still differs: {}: source {}; target {}",
                        d.kind, d.source, d.target
                    )?,
                }
            }
            writeln!(out)?;
        }
        let kinds: Vec<String> = self
            .by_kind()
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            out,
            "verify: {} keys compared in {:.1} s ({:.0} keys/s), {} round{}, {:.1} s in all",
            self.keys,
            self.walk.as_secs_f64(),
            self.keys_per_second(),
            self.rounds,
            if self.rounds == 1 { "" } else { "s" },
            self.duration.as_secs_f64()
        )?;
        writeln!(
            out,
            "verify: {} difference{} ({})",
            self.found.len(),
            if self.found.len() == 1 { "" } else { "s" },
            kinds.join(", ")
        )?;
        if self.repaired {
            writeln!(
                out,
                "verify: repaired {} of {}, {} still differ{}",
                self.found.len() - self.remaining(),
                self.found.len(),
                self.remaining(),
                if self.remaining() == 1 { "s" } else { "" }
            )?;
        }
        Ok(())
    }

    /// The JSON report.
    pub fn json(&self) -> serde_json::Value {
        let by_kind: serde_json::Map<String, serde_json::Value> = self
            .by_kind()
            .iter()
            .map(|(k, n)| (k.name().to_string(), json!(n)))
            .collect();
        let differences: Vec<serde_json::Value> = self
            .found
            .iter()
            .map(|f| {
                let mut entry = difference(&f.difference);
                if let Some(r) = &f.repair {
                    entry["repair"] = match &r.outcome {
                        Ok(records) => json!({
                            "records": records,
                            "equal_after": r.after.is_none(),
                            "after": r.after.as_ref().map(sides),
                        }),
                        Err(e) => json!({ "error": e }),
                    };
                }
                entry
            })
            .collect();
        json!({
            "source": self.source,
            "target": self.target,
            "dbs": self.dbs,
            "keys_compared": self.keys,
            "rounds": self.rounds,
            "walk_seconds": self.walk.as_secs_f64(),
            "duration_seconds": self.duration.as_secs_f64(),
            "keys_per_second": self.keys_per_second(),
            "differences_by_kind": by_kind,
            "differences": differences,
            "remaining": self.remaining(),
        })
    }
}

/// One difference in the report; the key readable (`key`) and exact
/// (`key_hex`).
fn difference(d: &Difference) -> serde_json::Value {
    json!({
        "db": d.db,
        "key": escape(&d.key),
        "key_hex": hex(&d.key),
        "kind": d.kind.name(),
        "source": d.source,
        "target": d.target,
    })
}

fn sides(d: &Difference) -> serde_json::Value {
    json!({ "kind": d.kind.name(), "source": d.source, "target": d.target })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(found: Vec<Found>) -> Summary {
        Summary {
            source: "127.0.0.1:1".into(),
            target: "127.0.0.1:2".into(),
            dbs: vec![0, 3],
            keys: 1000,
            rounds: 3,
            walk: Duration::from_secs(2),
            duration: Duration::from_secs(6),
            found,
            repaired: false,
        }
    }

    fn found(key: &[u8], kind: Kind) -> Found {
        Found {
            difference: Difference {
                db: 3,
                key: key.to_vec(),
                kind,
                source: "string, no ttl".into(),
                target: "none".into(),
            },
            repair: None,
        }
    }

    #[test]
    fn json_keys_are_escaped_and_exact() {
        let report = summary(vec![found(b"caf\xc3\xa9\xff\n\"", Kind::Missing)]).json();
        let d = &report["differences"][0];
        assert_eq!(d["key"], "café\\xff\\n\"");
        assert_eq!(d["key_hex"], "636166c3a9ff0a22");
        assert_eq!(d["kind"], "missing");
        assert_eq!(d["db"], 3);
        assert_eq!(d["source"], "string, no ttl");
        assert_eq!(report["differences_by_kind"]["missing"], 1);
        assert_eq!(report["differences_by_kind"]["ttl"], 0);
        assert_eq!(report["keys_per_second"], 500.0);
        // Valid JSON text, as written to the file.
        let text = serde_json::to_string(&report).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn the_text_summary_counts_by_kind() {
        let s = summary(vec![found(b"a", Kind::Value), found(b"b", Kind::Value)]);
        let mut out = Vec::new();
        s.write_text(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("db 3 key \"a\": value: source string, no ttl; target none\n"));
        assert!(text.contains("1000 keys compared in 2.0 s (500 keys/s), 3 rounds, 6.0 s in all"));
        assert!(text.contains("2 differences (missing 0, extra 0, type 0, value 2, ttl 0)"));
        assert_eq!(s.remaining(), 2);
    }

    #[test]
    fn repaired_keys_that_converged_no_longer_remain() {
        let mut fixed = found(b"a", Kind::Missing);
        fixed.repair = Some(Repair {
            outcome: Ok(2),
            after: None,
        });
        let mut failed = found(b"b", Kind::Missing);
        failed.repair = Some(Repair {
            outcome: Err("the proxy answered 400: bad".into()),
            after: None,
        });
        let mut s = summary(vec![fixed, failed]);
        s.repaired = true;
        assert_eq!(s.remaining(), 1);
        let report = s.json();
        assert_eq!(report["differences"][0]["repair"]["records"], 2);
        assert_eq!(report["differences"][0]["repair"]["equal_after"], true);
        assert_eq!(
            report["differences"][1]["repair"]["error"],
            "the proxy answered 400: bad"
        );
        assert_eq!(report["remaining"], 1);
    }
}

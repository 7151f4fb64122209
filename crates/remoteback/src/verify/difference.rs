//! What verify finds: one key that is not the same on both sides, and how.

use std::fmt;

use super::escape::escape;

/// How a key differs. One kind a key: the first of type, value, TTL that
/// differs (a different value makes the TTL beside the point).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// On the source, not on the target.
    Missing,
    /// On the target only.
    Extra,
    /// Of another type on each side.
    Type,
    /// Same type, other value.
    Value,
    /// Same value, an expiry that differs by more than the tolerance or
    /// exists on one side only.
    Ttl,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Missing,
        Kind::Extra,
        Kind::Type,
        Kind::Value,
        Kind::Ttl,
    ];

    /// The name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Type => "type",
            Kind::Value => "value",
            Kind::Ttl => "ttl",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One key that differs, with each side described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub db: u32,
    pub key: Vec<u8>,
    pub kind: Kind,
    /// The key on the source (`none` when absent).
    pub source: String,
    /// The key on the target (`none` when absent).
    pub target: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "db {} key \"{}\": {}: source {}; target {}",
            self.db,
            escape(&self.key),
            self.kind,
            self.source,
            self.target
        )
    }
}

/// How one key compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Same,
    Differs {
        kind: Kind,
        source: String,
        target: String,
    },
}

impl Verdict {
    pub fn differs(kind: Kind, source: impl Into<String>, target: impl Into<String>) -> Verdict {
        Verdict::Differs {
            kind,
            source: source.into(),
            target: target.into(),
        }
    }

    /// The difference of `key` in `db`, if any.
    pub fn into_difference(self, db: u32, key: Vec<u8>) -> Option<Difference> {
        match self {
            Verdict::Same => None,
            Verdict::Differs {
                kind,
                source,
                target,
            } => Some(Difference {
                db,
                key,
                kind,
                source,
                target,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_reads_as_a_line() {
        let d = Verdict::differs(Kind::Missing, "string, 3 bytes, no ttl", "none")
            .into_difference(3, b"k\xff".to_vec())
            .unwrap();
        assert_eq!(
            d.to_string(),
            "db 3 key \"k\\xff\": missing: source string, 3 bytes, no ttl; target none"
        );
        assert_eq!(Verdict::Same.into_difference(0, b"k".to_vec()), None);
    }
}

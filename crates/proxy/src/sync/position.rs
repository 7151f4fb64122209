//! Where a sync is in the primary's keyspace, as an operator resumes it.

use std::fmt;
use std::str::FromStr;

/// Every key of the databases before `db`, and of `db` before `SCAN`
/// cursor `cursor`, has its records acknowledged by Kafka. Written
/// `DB:CURSOR`; `3:0` is the start of database 3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SyncPosition {
    pub db: u32,
    pub cursor: u64,
}

impl SyncPosition {
    /// The start of database `db`.
    pub fn start_of(db: u32) -> SyncPosition {
        SyncPosition { db, cursor: 0 }
    }
}

impl fmt::Display for SyncPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.db, self.cursor)
    }
}

/// A position that is not `DB:CURSOR`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a sync position: expected DB:CURSOR, as the sync printed it (e.g. 0:1536)")]
pub struct BadPosition(pub String);

impl FromStr for SyncPosition {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPosition(s.to_string());
        let (db, cursor) = s.split_once(':').ok_or_else(bad)?;
        Ok(SyncPosition {
            db: db.parse().map_err(|_| bad())?,
            cursor: cursor.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_read_back() {
        let p = SyncPosition {
            db: 3,
            cursor: 1536,
        };
        assert_eq!(p.to_string(), "3:1536");
        assert_eq!("3:1536".parse::<SyncPosition>(), Ok(p));
        assert!("3".parse::<SyncPosition>().is_err());
        assert!("x:1".parse::<SyncPosition>().is_err());
        assert!("1:-1".parse::<SyncPosition>().is_err());
        assert!(SyncPosition::start_of(2) > SyncPosition { db: 1, cursor: 99 });
    }
}

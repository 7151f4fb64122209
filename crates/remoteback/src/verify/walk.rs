//! Walking a server's keys with `SCAN`, and finding its databases.
//!
//! `SCAN` returns every key that exists for the whole walk, whatever
//! happens meanwhile, without blocking the server: the guarantee verify
//! needs to miss no key that stays put. A key may come twice, which costs a
//! second comparison and nothing else. The next page is asked for as soon
//! as a page arrives, so the server reads it while the batch is compared.

use std::collections::BTreeSet;

use anyhow::{anyhow, Context};

use super::reply::{bytes, must, page, Halt};
use super::sample::Sample;
use super::side::{pipeline, Pending, Side};

/// What a walk yields: the keys one `SCAN` page holds that are compared.
pub struct Scan<'a> {
    side: &'a Side,
    cursor: Vec<u8>,
    pattern: Option<&'a [u8]>,
    count: usize,
    sample: Sample,
    finished: bool,
    /// The next page, asked for already.
    next: Option<Pending>,
}

impl<'a> Scan<'a> {
    /// Walks the selected database of `side`, `count` keys a page, keys
    /// matching `pattern` (`SCAN MATCH`) and chosen by `sample`.
    pub fn new(
        side: &'a Side,
        pattern: Option<&'a [u8]>,
        count: usize,
        sample: Sample,
    ) -> Scan<'a> {
        Scan {
            side,
            cursor: b"0".to_vec(),
            pattern,
            count,
            sample,
            finished: false,
            next: None,
        }
    }

    fn ask(&self) -> Pending {
        let mut pipe = pipeline();
        pipe.cmd("SCAN").arg(&self.cursor);
        if let Some(pattern) = self.pattern {
            pipe.arg("MATCH").arg(pattern);
        }
        pipe.arg("COUNT").arg(self.count);
        self.side.send(std::sync::Arc::new(pipe), 1)
    }

    /// The next page's keys, filtered; `None` at the end. Also gives how
    /// many keys the page held before the sample chose, for progress.
    pub fn next_page(&mut self) -> anyhow::Result<Option<(Vec<Vec<u8>>, usize)>> {
        if self.finished {
            return Ok(None);
        }
        let pending = match self.next.take() {
            Some(pending) => pending,
            None => self.ask(),
        };
        let replies = pending.wait()?;
        let reply = replies.first().ok_or_else(|| anyhow!("SCAN: no reply"))?;
        let (cursor, items) = page(reply, "SCAN").map_err(|e| match e {
            Halt::Failed(e) => e,
            Halt::Changed => anyhow!("SCAN: unexpected reply"),
        })?;
        let scanned = items.len();
        let keys = items
            .iter()
            .filter_map(bytes)
            .filter(|k| compared(k) && self.sample.chooses(k))
            .map(<[u8]>::to_vec)
            .collect();
        self.finished = cursor == b"0";
        self.cursor = cursor.to_vec();
        if !self.finished {
            self.next = Some(self.ask());
        }
        Ok(Some((keys, scanned)))
    }
}

/// Whether verify looks at a key: not the replay's own state
/// (`__remoteback:*`), which exists on the backup only.
pub fn compared(key: &[u8]) -> bool {
    !key.starts_with(remoteback_replay::KEY_PREFIX.as_bytes())
}

/// The databases that hold keys on `side`, from `INFO keyspace`.
pub fn databases(side: &Side) -> anyhow::Result<BTreeSet<u32>> {
    let mut pipe = pipeline();
    pipe.cmd("INFO").arg("keyspace");
    let replies = side.query(pipe)?;
    let reply = replies.first().ok_or_else(|| anyhow!("INFO: no reply"))?;
    let text = bytes(must(reply, "INFO keyspace")?)
        .ok_or_else(|| anyhow!("INFO keyspace: unexpected reply {reply:?}"))?;
    Ok(keyspace(&String::from_utf8_lossy(text)))
}

/// The databases `INFO keyspace` lists with keys (`db3:keys=10,...`).
pub fn keyspace(info: &str) -> BTreeSet<u32> {
    info.lines()
        .filter_map(|line| {
            let (db, fields) = line.trim().strip_prefix("db")?.split_once(':')?;
            let keys: u64 = fields
                .split(',')
                .find_map(|f| f.strip_prefix("keys="))?
                .parse()
                .ok()?;
            (keys > 0).then_some(db.parse().ok()?)
        })
        .collect()
}

/// Selects `db` on `side` and returns its number of keys (`DBSIZE`).
pub fn select(side: &Side, db: u32) -> anyhow::Result<u64> {
    let mut pipe = pipeline();
    pipe.cmd("SELECT").arg(db).cmd("DBSIZE");
    let replies = side
        .query(pipe)
        .with_context(|| format!("{}: select db {db}", side.label()))?;
    let (Some(selected), Some(size)) = (replies.first(), replies.get(1)) else {
        return Err(anyhow!("SELECT, DBSIZE: no reply"));
    };
    must(
        selected,
        &format!("{} {}: SELECT {db}", side.label(), side.address()),
    )?;
    super::reply::int(must(size, "DBSIZE")?)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| anyhow!("DBSIZE: unexpected reply {size:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_lists_databases_with_keys() {
        let info = "# Keyspace\r\ndb0:keys=12,expires=1,avg_ttl=300\r\ndb3:keys=1,expires=0,avg_ttl=0\r\ndb5:keys=0,expires=0,avg_ttl=0\r\n";
        assert_eq!(keyspace(info), BTreeSet::from([0, 3]));
        assert!(keyspace("# Keyspace\r\n").is_empty());
    }

    #[test]
    fn the_replays_state_is_never_compared() {
        assert!(!compared(
            format!("{}offsets", remoteback_replay::KEY_PREFIX).as_bytes()
        ));
        assert!(compared(b"user:1"));
        assert!(compared(b"__remoteback"));
    }
}

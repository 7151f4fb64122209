//! Walks two Redis servers and lists every key whose type or value differs.

use std::collections::BTreeMap;

use redis::{Connection, Value};

/// Keys remoteback writes to the backup for itself.
const INTERNAL_PREFIX: &[u8] = b"__remoteback:";

/// One difference between primary and backup.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub db: u32,
    pub key: Vec<u8>,
    pub primary: String,
    pub backup: String,
}

/// A key's type and value in a comparable form.
fn snapshot(con: &mut Connection, key: &[u8]) -> String {
    let kind: String = redis::cmd("TYPE").arg(key).query(con).unwrap_or_default();
    let value: Value = match kind.as_str() {
        "string" => redis::cmd("GET").arg(key).query(con),
        "list" => redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query(con),
        "hash" => redis::cmd("HGETALL").arg(key).query(con),
        "set" => redis::cmd("SMEMBERS").arg(key).query(con),
        "zset" => redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(con),
        "stream" => redis::cmd("XRANGE").arg(key).arg("-").arg("+").query(con),
        _ => Ok(Value::Nil),
    }
    .unwrap_or(Value::Nil);
    let items = match &value {
        Value::Array(items) => items.iter().map(text).collect(),
        other => vec![text(other)],
    };
    let items = match kind.as_str() {
        // Unordered: compare as sorted members / sorted field=value pairs.
        "set" => sorted(items),
        "hash" => sorted(items.chunks(2).map(|p| p.join("=")).collect()),
        _ => items,
    };
    format!("{kind}:{items:?}")
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

/// Text for a value: strings with every byte visible.
fn text(value: &Value) -> String {
    match value {
        Value::BulkString(b) if b.len() > 256 => {
            format!("{} bytes, fnv {:016x}", b.len(), fnv(b))
        }
        Value::BulkString(b) => b.escape_ascii().to_string(),
        Value::Array(items) => format!("{:?}", items.iter().map(text).collect::<Vec<_>>()),
        other => format!("{other:?}"),
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn keys(con: &mut Connection) -> Vec<Vec<u8>> {
    let mut cursor: u64 = 0;
    let mut out = Vec::new();
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .expect("SCAN");
        out.extend(
            batch
                .into_iter()
                .filter(|k| !k.starts_with(INTERNAL_PREFIX)),
        );
        if next == 0 {
            break;
        }
        cursor = next;
    }
    out.sort();
    out.dedup();
    out
}

/// Every difference in databases `dbs`, in both directions.
pub fn differences(
    primary: &mut Connection,
    backup: &mut Connection,
    dbs: &[u32],
) -> Vec<Difference> {
    let mut diffs = Vec::new();
    for &db in dbs {
        let _: () = redis::cmd("SELECT")
            .arg(db)
            .query(primary)
            .expect("SELECT primary");
        let _: () = redis::cmd("SELECT")
            .arg(db)
            .query(backup)
            .expect("SELECT backup");
        let mut all: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
        for k in keys(primary).into_iter().chain(keys(backup)) {
            all.insert(k, ());
        }
        for key in all.into_keys() {
            let p = snapshot(primary, &key);
            let b = snapshot(backup, &key);
            if p != b {
                diffs.push(Difference {
                    db,
                    key,
                    primary: p,
                    backup: b,
                });
            }
        }
    }
    diffs
}

//! An existing dataset on a primary, loaded directly (not through the
//! proxy): what an operator has before remoteback is put in front of it.
//! Keys of every type, with and without TTLs, in databases 0 and 3, binary
//! names among them, and big keys that a sync must copy in chunks.

use redis::Connection;

/// Databases the dataset fills.
pub const DBS: [u32; 2] = [0, 3];

/// How much to load.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Small keys, spread over [`DBS`] and the six types.
    pub small_keys: usize,
    /// Big keys of about these sizes in bytes (types in turn: hash, list,
    /// set, sorted set, string, stream), in database 0.
    pub big_keys: Vec<usize>,
    /// One hash of about this many bytes, in database 3 (0: none).
    pub big_hash_bytes: usize,
}

/// Elements of big keys: 100-byte values.
const ELEMENT: usize = 100;
/// Commands per pipeline while loading.
const BATCH: usize = 5_000;

fn element(i: usize) -> Vec<u8> {
    let mut v = format!("{i:012}:").into_bytes();
    v.resize(ELEMENT, b'x' + (i % 3) as u8);
    v
}

impl Dataset {
    /// Loads the dataset through `con` (the primary, directly).
    pub fn load(&self, con: &mut Connection) {
        self.small(con);
        for (n, &bytes) in self.big_keys.iter().enumerate() {
            select(con, 0);
            big(con, n, bytes);
        }
        if self.big_hash_bytes > 0 {
            select(con, 3);
            fill(
                con,
                b"big:hash:300",
                self.big_hash_bytes / ELEMENT,
                |i, c| {
                    c.cmd("HSET")
                        .arg(b"big:hash:300")
                        .arg(format!("f{i}"))
                        .arg(element(i));
                },
            );
        }
        select(con, 0);
    }

    fn small(&self, con: &mut Connection) {
        for db in DBS {
            select(con, db);
            let mut p = redis::pipe();
            for i in (0..self.small_keys).filter(|i| DBS[i % 2] == db) {
                let key: Vec<u8> = if i % 97 == 0 {
                    format!("bin:\0\u{ff}:{i}").into_bytes()
                } else {
                    format!("k:{i}").into_bytes()
                };
                match i % 6 {
                    0 => p.cmd("SET").arg(&key).arg(format!("v{i}")).ignore(),
                    1 => p
                        .cmd("HSET")
                        .arg(&key)
                        .arg("a")
                        .arg(i)
                        .arg("b")
                        .arg(b"\0\xff")
                        .ignore(),
                    2 => p.cmd("RPUSH").arg(&key).arg("x").arg(i).arg("x").ignore(),
                    3 => p.cmd("SADD").arg(&key).arg(i).arg("s").ignore(),
                    4 => p
                        .cmd("ZADD")
                        .arg(&key)
                        .arg(1.5)
                        .arg("m")
                        .arg("-inf")
                        .arg(i)
                        .ignore(),
                    _ => {
                        p.cmd("XADD").arg(&key).arg("1-1").arg("f").arg(i).ignore();
                        p.cmd("XADD")
                            .arg(&key)
                            .arg("2-1")
                            .arg("g")
                            .arg("h")
                            .ignore();
                        if i % 5 == 0 {
                            p.cmd("XGROUP")
                                .arg("CREATE")
                                .arg(&key)
                                .arg("grp")
                                .arg("1-1")
                                .ignore();
                        }
                        p.cmd("XDEL").arg(&key).arg("1-1").ignore()
                    }
                };
                if i % 4 == 0 {
                    p.cmd("PEXPIRE").arg(&key).arg(3_600_000 + i).ignore();
                }
                if p.cmd_iter().count() >= BATCH {
                    let _: () = p.query(con).expect("load small keys");
                    p = redis::pipe();
                }
            }
            let _: () = p.query(con).expect("load small keys");
        }
    }
}

fn select(con: &mut Connection, db: u32) {
    let _: () = redis::cmd("SELECT").arg(db).query(con).expect("SELECT");
}

/// One big key, number `n`, of about `bytes`.
fn big(con: &mut Connection, n: usize, bytes: usize) {
    let count = bytes / ELEMENT;
    let key = format!("big:{n}").into_bytes();
    match n % 6 {
        0 => fill(con, &key, count, |i, c| {
            c.cmd("HSET").arg(&key).arg(format!("f{i}")).arg(element(i));
        }),
        1 => fill(con, &key, count, |i, c| {
            c.cmd("RPUSH").arg(&key).arg(element(i));
        }),
        2 => fill(con, &key, count, |i, c| {
            c.cmd("SADD").arg(&key).arg(element(i));
        }),
        3 => fill(con, &key, count, |i, c| {
            c.cmd("ZADD").arg(&key).arg(i as f64 / 7.0).arg(element(i));
        }),
        4 => fill(con, &key, count / 1000 + 1, |_, c| {
            c.cmd("APPEND").arg(&key).arg(vec![b'z'; 1000 * ELEMENT]);
        }),
        _ => {
            fill(con, &key, count, |i, c| {
                c.cmd("XADD")
                    .arg(&key)
                    .arg(format!("{}-0", i + 1))
                    .arg("f")
                    .arg(element(i));
            });
            let _: () = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&key)
                .arg("readers")
                .arg("0")
                .query(con)
                .expect("XGROUP");
            let _: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("readers")
                .arg("r1")
                .arg("COUNT")
                .arg(10)
                .arg("STREAMS")
                .arg(&key)
                .arg(">")
                .query(con)
                .expect("XREADGROUP");
        }
    }
    if n % 2 == 1 {
        let _: () = redis::cmd("PEXPIRE")
            .arg(&key)
            .arg(7_200_000)
            .query(con)
            .expect("PEXPIRE");
    }
}

/// `count` commands made by `add`, pipelined.
fn fill(
    con: &mut Connection,
    key: &[u8],
    count: usize,
    mut add: impl FnMut(usize, &mut redis::Pipeline),
) {
    let mut p = redis::pipe();
    for i in 0..count {
        add(i, &mut p);
        p.ignore();
        if (i + 1) % BATCH == 0 {
            let _: () = p
                .query(con)
                .unwrap_or_else(|e| panic!("load {}: {e}", key.escape_ascii()));
            p = redis::pipe();
        }
    }
    let _: () = p
        .query(con)
        .unwrap_or_else(|e| panic!("load {}: {e}", key.escape_ascii()));
}

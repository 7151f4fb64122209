//! A seeded mixed workload: each client writes its own keys with strings,
//! counters, lists, hashes, sets and sorted sets, in two databases, with
//! reads, pipelines, transactions and refused writes mixed in.

use redis::Connection;

/// A small deterministic generator (xorshift64*), so a failing seed replays.
pub struct Rng(u64);

/// `REMOTEBACK_TEST_SEED`, when set to a number: a run's random choices
/// repeated.
pub fn env_seed() -> Option<u64> {
    std::env::var("REMOTEBACK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
}

/// [`env_seed`], else one from the clock (the test prints it).
pub fn seed() -> u64 {
    env_seed().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    })
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A value: mostly short text, sometimes arbitrary bytes.
    pub fn value(&mut self) -> Vec<u8> {
        let len = self.below(12) as usize;
        if self.below(4) == 0 {
            (0..len).map(|_| self.next() as u8).collect()
        } else {
            (0..len).map(|_| b'a' + self.below(26) as u8).collect()
        }
    }
}

/// Keys of one client: `w<client>:<type>:<n>`.
fn key(client: usize, kind: &str, n: u64) -> String {
    format!("w{client}:{kind}:{n}")
}

/// One random command (name and arguments) on this client's keys.
fn command(rng: &mut Rng, client: usize) -> redis::Cmd {
    let n = rng.below(8);
    let mut c;
    match rng.below(20) {
        0 => {
            c = redis::cmd("SET");
            c.arg(key(client, "s", n)).arg(rng.value());
        }
        1 => {
            c = redis::cmd("APPEND");
            c.arg(key(client, "s", n)).arg(rng.value());
        }
        2 => {
            c = redis::cmd("MSET");
            c.arg(key(client, "s", n))
                .arg(rng.value())
                .arg(key(client, "s", n + 1))
                .arg(rng.value());
        }
        3 => {
            c = redis::cmd("INCRBY");
            c.arg(key(client, "c", n)).arg(rng.below(100) as i64 - 50);
        }
        4 => {
            c = redis::cmd(if rng.below(2) == 0 { "LPUSH" } else { "RPUSH" });
            c.arg(key(client, "l", n)).arg(rng.value()).arg(rng.value());
        }
        5 => {
            c = redis::cmd(if rng.below(2) == 0 { "LPOP" } else { "RPOP" });
            c.arg(key(client, "l", n));
        }
        6 => {
            c = redis::cmd("LTRIM");
            c.arg(key(client, "l", n)).arg(0).arg(rng.below(10));
        }
        7 => {
            c = redis::cmd("HSET");
            c.arg(key(client, "h", n)).arg(rng.value()).arg(rng.value());
        }
        8 => {
            c = redis::cmd("HINCRBY");
            c.arg(key(client, "h", n)).arg("n").arg(rng.below(10));
        }
        9 => {
            c = redis::cmd("SADD");
            c.arg(key(client, "t", n))
                .arg(rng.below(20))
                .arg(rng.value());
        }
        10 => {
            c = redis::cmd("SREM");
            c.arg(key(client, "t", n)).arg(rng.below(20));
        }
        11 => {
            c = redis::cmd("ZADD");
            c.arg(key(client, "z", n))
                .arg(rng.below(1000))
                .arg(rng.value());
        }
        12 => {
            c = redis::cmd("ZINCRBY");
            c.arg(key(client, "z", n)).arg(rng.below(5)).arg("m");
        }
        13 => {
            c = redis::cmd("DEL");
            c.arg(key(
                client,
                ["s", "l", "h", "t", "z", "c"][rng.below(6) as usize],
                n,
            ));
        }
        14 => {
            c = redis::cmd("GET");
            c.arg(key(client, "s", n));
        }
        15 => {
            c = redis::cmd("LRANGE");
            c.arg(key(client, "l", n)).arg(0).arg(-1);
        }
        16 => {
            c = redis::cmd("HGETALL");
            c.arg(key(client, "h", n));
        }
        17 => {
            c = redis::cmd("RENAME");
            c.arg(key(client, "s", n)).arg(key(client, "s", n + 2));
        }
        18 => {
            // Refused: WRONGTYPE when the key holds a list (or works on a
            // missing key, creating a counter); either way the backup must
            // end up equal.
            c = redis::cmd("INCR");
            c.arg(key(client, "l", n));
        }
        _ => {
            c = redis::cmd("ZREM");
            c.arg(key(client, "z", n)).arg("m");
        }
    }
    c
}

/// Runs `count` commands for `client` on `con`, switching between
/// databases 0 and 1 (see [`drive`]).
pub fn run_client(con: &mut Connection, client: usize, count: usize, seed: u64) {
    let mut rng = Rng::new(seed ^ (client as u64 + 1));
    drive(con, &mut rng, count, &[0, 1], |rng| command(rng, client));
}

/// Sends about `count` commands made by `next`: single commands, pipelines
/// and MULTI/EXEC blocks, with `SELECT`s among `dbs` in between. Refused
/// commands are part of the workload (a refused command inside a
/// transaction does not stop the others, exactly as on the primary).
pub fn drive(
    con: &mut Connection,
    rng: &mut Rng,
    count: usize,
    dbs: &[u32],
    mut next: impl FnMut(&mut Rng) -> redis::Cmd,
) {
    let mut done = 0;
    while done < count {
        match rng.below(10) {
            0 => {
                let db = dbs[rng.below(dbs.len() as u64) as usize];
                let _: () = redis::cmd("SELECT").arg(db).query(con).expect("SELECT");
                done += 1;
            }
            1 => {
                let mut p = redis::pipe();
                p.atomic();
                let n = 2 + rng.below(3) as usize;
                for _ in 0..n {
                    p.add_command(next(rng));
                }
                let _: redis::RedisResult<redis::Value> = p.query(con);
                done += n + 2;
            }
            2 | 3 => {
                let mut p = redis::pipe();
                let n = 2 + rng.below(7) as usize;
                for _ in 0..n {
                    p.add_command(next(rng));
                }
                let _: redis::RedisResult<redis::Value> = p.query(con);
                done += n;
            }
            _ => {
                let _: redis::RedisResult<redis::Value> = next(rng).query(con);
                done += 1;
            }
        }
    }
}

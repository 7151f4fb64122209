//! The convergence workload: many clients racing on a hot set of keys with
//! every data type, TTLs, transactions, scripts, blocking pops and several
//! databases. Seeded, so a failing seed can be run again.

use redis::Connection;

use super::workload::{drive, Rng};

/// Keys every client writes (half of all writes go here).
pub const HOT_KEYS: u64 = 32;
/// Databases the workload uses.
pub const DBS: [u32; 3] = [0, 1, 2];

/// Types are fixed per key number, so most commands hit a key of their type.
fn kind(n: u64) -> u64 {
    n % 6
}

fn key(rng: &mut Rng, client: usize) -> (String, u64, bool) {
    if rng.below(2) == 0 {
        let n = rng.below(HOT_KEYS);
        (format!("hot:{n}"), n, true)
    } else {
        let n = rng.below(12);
        (format!("c{client}:{n}"), n, false)
    }
}

/// One write or read on a key of the right type.
fn command(rng: &mut Rng, client: usize) -> redis::Cmd {
    let (k, n, _) = key(rng, client);
    let v = rng.value();
    let mut c;
    match (kind(n), rng.below(6)) {
        (0, 0) => {
            c = redis::cmd("SET");
            c.arg(&k).arg(v).arg("EX").arg(100 + rng.below(1000));
        }
        (0, 1) => {
            c = redis::cmd("INCRBYFLOAT");
            c.arg(&k)
                .arg(format!("{}.{}", rng.below(10), rng.below(100)));
        }
        (0, 2) => {
            c = redis::cmd("APPEND");
            c.arg(&k).arg(v);
        }
        (0, 3) => {
            c = redis::cmd("PEXPIRE");
            c.arg(&k).arg(50_000 + rng.below(100_000));
        }
        (0, 4) => {
            c = redis::cmd("GETDEL");
            c.arg(&k);
        }
        (0, _) => {
            c = redis::cmd("SET");
            c.arg(&k).arg(v);
        }
        (1, 0) | (1, 1) => {
            c = redis::cmd(if rng.below(2) == 0 { "LPUSH" } else { "RPUSH" });
            c.arg(&k).arg(v).arg(rng.value());
        }
        (1, 2) => {
            c = redis::cmd("LPOP");
            c.arg(&k);
        }
        (1, 3) => {
            // Blocking pops race with other clients' pushes on hot lists; a
            // short timeout keeps the workload moving when a list is empty.
            c = redis::cmd(if rng.below(2) == 0 { "BLPOP" } else { "BRPOP" });
            c.arg(&k).arg(0.01);
        }
        (1, 4) => {
            c = redis::cmd("LMOVE");
            c.arg(&k).arg(&k).arg("LEFT").arg("RIGHT");
        }
        (1, _) => {
            c = redis::cmd("LTRIM");
            c.arg(&k).arg(0).arg(5 + rng.below(10));
        }
        (2, 0) => {
            c = redis::cmd("HINCRBYFLOAT");
            c.arg(&k).arg("f").arg(format!("{}.5", rng.below(10)));
        }
        (2, 1) => {
            c = redis::cmd("HDEL");
            c.arg(&k).arg(rng.below(5));
        }
        (2, 2) => {
            // Scripts replicate as the script, so they must be deterministic
            // (docs/semantics.md).
            c = redis::cmd("EVAL");
            c.arg(
                "redis.call('HINCRBY', KEYS[1], 'n', ARGV[1]) return redis.call('HLEN', KEYS[1])",
            )
            .arg(1)
            .arg(&k)
            .arg(rng.below(10));
        }
        (2, _) => {
            c = redis::cmd("HSET");
            c.arg(&k).arg(rng.below(5)).arg(v);
        }
        (3, 0) => {
            c = redis::cmd("SPOP");
            c.arg(&k);
        }
        (3, 1) => {
            c = redis::cmd("SREM");
            c.arg(&k).arg(rng.below(10));
        }
        (3, _) => {
            c = redis::cmd("SADD");
            c.arg(&k).arg(rng.below(10)).arg(v);
        }
        (4, 0) => {
            c = redis::cmd("ZINCRBY");
            c.arg(&k).arg(rng.below(5)).arg(rng.below(8));
        }
        (4, 1) => {
            c = redis::cmd("ZPOPMIN");
            c.arg(&k);
        }
        (4, _) => {
            c = redis::cmd("ZADD");
            c.arg(&k).arg(rng.below(100)).arg(rng.below(8));
        }
        (_, 0) => {
            c = redis::cmd("XTRIM");
            c.arg(&k).arg("MAXLEN").arg(20);
        }
        (_, 1) => {
            c = redis::cmd("XDEL");
            c.arg(&k).arg("0-1");
        }
        (_, _) => {
            c = redis::cmd("XADD");
            c.arg(&k).arg("*").arg("f").arg(v);
        }
    }
    c
}

/// Runs about `count` commands as `client` (see [`drive`]), one in twelve a
/// plain read.
pub fn run_client(con: &mut Connection, client: usize, count: usize, seed: u64) {
    let mut rng = Rng::new(seed.wrapping_mul(31) ^ (client as u64 + 7));
    drive(con, &mut rng, count, &DBS, |rng| {
        if rng.below(12) == 0 {
            let (k, _, _) = key(rng, client);
            let mut get = redis::cmd("GET");
            get.arg(k);
            get
        } else {
            command(rng, client)
        }
    });
}

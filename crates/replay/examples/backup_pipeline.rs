//! How fast the applier's raw pipelined connection to the backup
//! ([`remoteback_replay::backup::Backup`]) applies transactions, beside the
//! `redis` crate's atomic pipeline doing the same work, in one run.
//!
//! Each transaction is what the applier sends for a batch: `MULTI`, 1000
//! `SET`s with 100-byte values, the offset `SET`, `EXEC`, all pipelined,
//! then every reply read. The rounds alternate between the two clients;
//! the medians are printed. With `raw` or `crate` as third argument only
//! that client runs, once (for counting its instructions with callgrind).
//! `bench/backup-connection.sh` starts a redis-server and runs this.
//!
//!     cargo run --release -p remoteback-replay --example backup_pipeline -- PORT [TRANSACTIONS [raw|crate]]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use redis::aio::MultiplexedConnection;
use remoteback_protocol::Command;
use remoteback_replay::backup::Backup;
use remoteback_replay::BackupSettings;

const BATCH: usize = 1000;
const ROUNDS: usize = 5;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .ok_or("usage: backup_pipeline PORT [TRANSACTIONS [raw|crate]]")?
        .parse()?;
    let transactions: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(200);
    let only = args.next();
    let batch = batch();
    let settings = BackupSettings {
        host: "127.0.0.1".into(),
        port,
        tls: None,
        username: None,
        password: None,
    };
    let mut raw = Backup::connect(&settings).await?;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut crate_conn = client.get_multiplexed_async_connection().await?;
    match only.as_deref() {
        Some("raw") => return apply_raw(&mut raw, &batch, transactions).await.map(drop),
        Some("crate") => {
            return apply_crate(&mut crate_conn, &batch, transactions)
                .await
                .map(drop)
        }
        Some(other) => return Err(format!("{other}: not raw or crate").into()),
        None => {}
    }
    // Warm both up once.
    apply_raw(&mut raw, &batch, 10).await?;
    apply_crate(&mut crate_conn, &batch, 10).await?;
    let (mut raw_rates, mut crate_rates) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let r = rate(
            transactions,
            apply_raw(&mut raw, &batch, transactions).await?,
        );
        let c = rate(
            transactions,
            apply_crate(&mut crate_conn, &batch, transactions).await?,
        );
        println!("round {round}: raw {r:.0} records/s, redis crate {c:.0} records/s");
        raw_rates.push(r);
        crate_rates.push(c);
    }
    let (r, c) = (median(&mut raw_rates), median(&mut crate_rates));
    println!(
        "median of {ROUNDS} rounds, {transactions} transactions of {BATCH} records each: \
         raw {r:.0} records/s, redis crate {c:.0} records/s, raw / crate = {:.2}",
        r / c
    );
    Ok(())
}

/// One batch's commands, as the applier holds them after decoding records.
fn batch() -> Vec<Command> {
    let value = Bytes::from(vec![b'v'; 100]);
    (0..BATCH)
        .map(|i| {
            Command::new(vec![
                Bytes::from_static(b"SET"),
                Bytes::from(format!("key:{i}")),
                value.clone(),
            ])
        })
        .collect()
}

fn offset(n: usize) -> Command {
    Command::from_parts([
        "HSET",
        "__remoteback:state",
        "offset:bench:0",
        &n.to_string(),
    ])
}

/// The applier's way: one buffer, written at once, every reply read back.
async fn apply_raw(
    backup: &mut Backup,
    batch: &[Command],
    transactions: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    for n in 0..transactions {
        let mut bytes = BytesMut::new();
        Command::from_parts(["MULTI"]).write_resp(&mut bytes);
        for command in batch {
            command.write_resp(&mut bytes);
        }
        offset(n).write_resp(&mut bytes);
        Command::from_parts(["EXEC"]).write_resp(&mut bytes);
        backup.send(&bytes).await?;
        for _ in 0..batch.len() + 3 {
            if backup.reply().await?.is_error() {
                return Err("the server refused a command".into());
            }
        }
    }
    Ok(started.elapsed())
}

/// The same transactions through the `redis` crate's atomic pipeline.
async fn apply_crate(
    conn: &mut MultiplexedConnection,
    batch: &[Command],
    transactions: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    for n in 0..transactions {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for command in batch.iter().chain([&offset(n)]) {
            let mut cmd = redis::Cmd::new();
            for arg in command.args() {
                cmd.arg(&arg[..]);
            }
            pipe.add_command(cmd);
        }
        let _: Vec<redis::Value> = pipe.query_async(conn).await?;
    }
    Ok(started.elapsed())
}

fn rate(transactions: usize, took: Duration) -> f64 {
    (transactions * BATCH) as f64 / took.as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

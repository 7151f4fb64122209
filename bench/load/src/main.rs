//! Load generators for `bench/suite.sh`. Each subcommand prints its results
//! as `key=value` lines on stdout.
//!
//! ```text
//! remoteback-load lag --proxy ADDR --backup ADDR [--rate 20000] [--conns 8]
//!                     [--idle 10] [--load 30] [--tail 10] [--probe-ms 50] [--settle 120]
//! remoteback-load produce --brokers ADDR --topic T [--records 200000] [--headers 1]
//! remoteback-load idle --addr ADDR [--clients 1000] [--seconds 600]
//! ```
//!
//! `lag`: a probe `SET rbprobe:<n>` through the proxy every `probe-ms`; its
//! lag is the time from the proxy's `+OK` to the backup's keyspace
//! notification for that key. Phases: `idle` (probes only), `load` (probes
//! while `conns` connections write `rate` SETs a second of random keys in
//! total, pipelined every 10 ms), `tail` (probes only again, the drain).
//!
//! `produce`: `records` records, the size and (with `--headers 1`) the
//! headers of a PROTOCOL `SET` record of the proxy, from one librdkafka
//! producer with the proxy's producer settings, as fast as the broker takes
//! them.
//!
//! `idle`: opens `clients` connections, sends one `PING` on each, prints
//! `ready=<clients>` and holds them open for `seconds`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> Result<Args> {
        let mut map = HashMap::new();
        let mut it = rest.iter();
        while let Some(key) = it.next() {
            let name = key
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --option, got {key}"))?;
            let value = it.next().ok_or_else(|| format!("{key} needs a value"))?;
            map.insert(name.to_string(), value.clone());
        }
        Ok(Args(map))
    }

    fn str(&self, name: &str) -> Result<String> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| format!("--{name} is required").into())
    }

    fn num(&self, name: &str, default: u64) -> Result<u64> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: expected a number, got {v}").into()),
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        eprintln!("usage: remoteback-load lag|produce|idle --option value ...");
        std::process::exit(2);
    };
    let result = Args::parse(&argv[1..]).and_then(|args| match cmd.as_str() {
        "lag" => runtime().block_on(lag(args)),
        "produce" => produce(args),
        "idle" => runtime().block_on(idle(args)),
        other => Err(format!("unknown subcommand {other}").into()),
    });
    if let Err(e) = result {
        eprintln!("remoteback-load {cmd}: {e}");
        std::process::exit(1);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn client(addr: &str) -> Result<redis::Client> {
    Ok(redis::Client::open(format!("redis://{addr}/"))?)
}

/// A connection that waits for its replies as long as they take: the
/// crate's default gives up after 500 ms, which a loaded proxy exceeds.
async fn connect(client: &redis::Client) -> Result<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(None);
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// A cheap xorshift generator: keys spread over the keyspace without a
/// dependency on `rand`.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle,
    Load,
    Tail,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Load => "load",
            Phase::Tail => "tail",
        }
    }
}

struct Probe {
    phase: Phase,
    /// Seconds since the start of the phase at which it was acknowledged.
    at: f64,
    acked: Instant,
}

async fn lag(args: Args) -> Result<()> {
    let proxy = args.str("proxy")?;
    let backup = args.str("backup")?;
    let rate = args.num("rate", 20_000)?;
    let conns = args.num("conns", 8)?.max(1);
    let idle_s = args.num("idle", 10)?;
    let load_s = args.num("load", 30)?;
    let tail_s = args.num("tail", 10)?;
    let probe_every = Duration::from_millis(args.num("probe-ms", 50)?.max(1));
    let settle = Duration::from_secs(args.num("settle", 120)?);

    // The backup announces every string write to a key as a keyspace event,
    // until the end of this run: the setting is put back as it was, so
    // that what is measured after it does not pay for the events.
    let backup_client = client(&backup)?;
    let mut backup_conn = connect(&backup_client).await?;
    let (_, events_before): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut backup_conn)
        .await?;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("K$")
        .exec_async(&mut backup_conn)
        .await?;
    let seen: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let mut pubsub = backup_client.get_async_pubsub().await?;
    pubsub.psubscribe("__keyspace@0__:rbprobe:*").await?;
    let seen_by_subscriber = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let now = Instant::now();
            let channel = msg.get_channel_name();
            if let Some(id) = channel
                .rsplit(':')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
            {
                seen_by_subscriber.lock().unwrap().entry(id).or_insert(now);
            }
        }
    });

    let proxy_client = client(&proxy)?;
    let mut probe_conn = connect(&proxy_client).await?;
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let mut probes: HashMap<u64, Probe> = HashMap::new();
    let mut next_id = 0u64;
    let mut written = 0u64;
    let mut write_seconds = 0f64;
    for (phase, seconds) in [
        (Phase::Idle, idle_s),
        (Phase::Load, load_s),
        (Phase::Tail, tail_s),
    ] {
        eprintln!("lag: phase {} for {seconds} s", phase.name());
        let started = Instant::now();
        let until = started + Duration::from_secs(seconds);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        if phase == Phase::Load && rate > 0 {
            for w in 0..conns {
                let mut conn = connect(&proxy_client).await?;
                let per_conn = rate as f64 / conns as f64;
                let stop = Arc::clone(&stop);
                writers.push(tokio::spawn(async move {
                    write_at_rate(&mut conn, per_conn, w, stop).await
                }));
            }
        }
        let mut tick = tokio::time::interval(probe_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while Instant::now() < until {
            tick.tick().await;
            let id = next_id;
            next_id += 1;
            redis::cmd("SET")
                .arg(format!("rbprobe:{id}"))
                .arg(format!("{run}"))
                .exec_async(&mut probe_conn)
                .await?;
            let acked = Instant::now();
            probes.insert(
                id,
                Probe {
                    phase,
                    at: (acked - started).as_secs_f64(),
                    acked,
                },
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            written += w.await??;
        }
        if phase == Phase::Load {
            write_seconds = started.elapsed().as_secs_f64();
        }
    }

    // Waits for the last probes to reach the backup.
    let deadline = Instant::now() + settle;
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            probes.keys().filter(|id| !seen.contains_key(id)).count()
        };
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&events_before)
        .exec_async(&mut backup_conn)
        .await?;

    let seen = seen.lock().unwrap();
    println!("writes={written}");
    println!(
        "writes_per_s={:.0}",
        written as f64 / write_seconds.max(1e-9)
    );
    for phase in [Phase::Idle, Phase::Load, Phase::Tail] {
        let mut lags = Vec::new();
        let mut unseen = 0;
        for (id, p) in probes.iter().filter(|(_, p)| p.phase == phase) {
            match seen.get(id) {
                Some(t) => lags.push(t.saturating_duration_since(p.acked).as_secs_f64() * 1e3),
                None => unseen += 1,
            }
        }
        let n = lags.len();
        println!(
            "{}_probes={} {}_unseen={unseen} {}_p50_ms={:.1} {}_p99_ms={:.1} {}_max_ms={:.1}",
            phase.name(),
            n + unseen,
            phase.name(),
            phase.name(),
            quantile(&mut lags, 0.5),
            phase.name(),
            quantile(&mut lags, 0.99),
            phase.name(),
            quantile(&mut lags, 1.0),
        );
    }
    // The load phase's median lag in each third: growing from one third to
    // the next means the backup falls further behind.
    let thirds: Vec<String> = (0..3)
        .map(|i| {
            let lo = load_s as f64 * i as f64 / 3.0;
            let hi = load_s as f64 * (i + 1) as f64 / 3.0;
            let mut lags: Vec<f64> = probes
                .iter()
                .filter(|(_, p)| p.phase == Phase::Load && p.at >= lo && p.at < hi)
                .filter_map(|(id, p)| seen.get(id).map(|t| t.saturating_duration_since(p.acked)))
                .map(|d| d.as_secs_f64() * 1e3)
                .collect();
            format!("{:.1}", quantile(&mut lags, 0.5))
        })
        .collect();
    println!("load_thirds_p50_ms={}", thirds.join(","));
    Ok(())
}

/// Sends SETs of random keys on `conn` at `per_s` a second, a pipeline every
/// 10 ms catching up with the schedule, until `stop`; returns how many.
async fn write_at_rate(
    conn: &mut redis::aio::MultiplexedConnection,
    per_s: f64,
    seed: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<u64> {
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15 ^ (seed + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * per_s) as u64;
        let batch = due.saturating_sub(sent).min(2_000);
        if batch == 0 {
            continue;
        }
        let mut pipe = redis::pipe();
        for _ in 0..batch {
            pipe.cmd("SET")
                .arg(format!("lag:{:07}", rng.next() % 1_000_000))
                .arg("vvvvvvvvvvvvvvvv")
                .ignore();
        }
        pipe.exec_async(conn).await?;
        sent += batch;
    }
    Ok(sent)
}

/// The `q` quantile of `v` (nearest rank); NaN when empty.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[derive(Default)]
struct Counting {
    ok: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

struct CountingContext(Arc<Counting>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        let counter = if result.is_ok() {
            &self.0.ok
        } else {
            &self.0.failed
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn produce(args: Args) -> Result<()> {
    let brokers = args.str("brokers")?;
    let topic = args.str("topic")?;
    let records = args.num("records", 200_000)?;
    let with_headers = args.num("headers", 1)? != 0;
    let counts = Arc::new(Counting::default());
    // The settings the proxy's KafkaSender gives librdkafka.
    let producer: ThreadedProducer<CountingContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.max.bytes", "67108864")
        .set("queue.buffering.max.messages", "2147483647")
        .set("queue.buffering.max.kbytes", "2147483647")
        .create_with_context(CountingContext(Arc::clone(&counts)))?;
    // Like the proxy, create the topic (one partition) before timing: the
    // broker does not create it on a producer's metadata request.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    let created = runtime().block_on(admin.create_topics(
        &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for result in created {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating topic {name}: {code}").into()),
        }
    }
    producer
        .client()
        .fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)?
        .as_millis()
        .to_string();
    let started = Instant::now();
    for seq in 1..=records {
        let key = format!("key:{:012}", seq % 1_000_000);
        let payload = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$3\r\nxxx\r\n",
            key.len()
        );
        let seq_text = seq.to_string();
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)?
            .as_millis()
            .to_string();
        let mut record = BaseRecord::to(&topic).payload(&payload).key(&key);
        if with_headers {
            record = record.headers(
                OwnedHeaders::new()
                    .insert(Header {
                        key: "rb-format",
                        value: Some("PROTOCOL"),
                    })
                    .insert(Header {
                        key: "rb-source",
                        value: Some("bench:1"),
                    })
                    .insert(Header {
                        key: "rb-run",
                        value: Some(&run),
                    })
                    .insert(Header {
                        key: "rb-seq",
                        value: Some(&seq_text),
                    })
                    .insert(Header {
                        key: "rb-time",
                        value: Some(&time),
                    })
                    .insert(Header {
                        key: "rb-db",
                        value: Some("0"),
                    }),
            );
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(600))?;
    let seconds = started.elapsed().as_secs_f64();
    let ok = counts.ok.load(std::sync::atomic::Ordering::Relaxed);
    let failed = counts.failed.load(std::sync::atomic::Ordering::Relaxed);
    println!("records={records} delivered={ok} failed={failed} seconds={seconds:.2}");
    println!("records_per_s={:.0}", ok as f64 / seconds);
    Ok(())
}

async fn idle(args: Args) -> Result<()> {
    let addr = args.str("addr")?;
    let clients = args.num("clients", 1000)?;
    let seconds = args.num("seconds", 600)?;
    let mut held = Vec::with_capacity(clients as usize);
    for _ in 0..clients {
        let mut s = TcpStream::connect(&addr).await?;
        s.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        s.read_exact(&mut reply).await?;
        if &reply != b"+PONG\r\n" {
            return Err(format!("unexpected reply {:?}", String::from_utf8_lossy(&reply)).into());
        }
        held.push(s);
    }
    println!("ready={}", held.len());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    Ok(())
}

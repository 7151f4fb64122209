//! `remoteback restore`: the topic's records applied to a fresh Redis up
//! to a primary time, for the day someone ran `FLUSHALL` at 14:03:12 and
//! the dataset of 14:03:11 is wanted back on a new instance.
//!
//! It is the replay, bounded (`remoteback_replay::Bound`): every partition
//! from the offset the target holds up to the first record captured after
//! `--until`, or to where the partition ended when the restore began. A
//! fresh target begins at the start of the last full sync the topic holds
//! whole (its marks, `rb-sync`, ended before `--until`), or at the
//! beginning when there is none. The target keeps the replay's state, so a
//! later restore to a later time goes on from there.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use redis::{ConnectionAddr, IntoConnectionInfo};
use remoteback_protocol::Format;
use remoteback_replay::offset_field;
use remoteback_replay::settings::TlsSettings;
use remoteback_replay::{
    BackupSettings, Bound, OnApplyError, OnBadRecord, Reached, ReceiverSettings, ReplaySettings,
    Start, Stats, SyncInLog, STATE_KEY,
};

/// How often a plain progress line is written when stderr is not a
/// terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The topic the proxy writes (repeat for several).
    #[arg(long = "topic", value_name = "TOPIC", required = true)]
    topics: Vec<String>,
    /// The Kafka brokers, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "SERVERS")]
    bootstrap_servers: String,
    /// Another librdkafka property for the consumer (repeat for several):
    /// security.protocol=SASL_SSL, sasl.username=...
    #[arg(short = 'X', long = "kafka", value_name = "NAME=VALUE", value_parser = property)]
    kafka: Vec<(String, String)>,
    /// Apply the writes captured at or before this primary time: RFC 3339
    /// in UTC (2026-12-01T14:03:11Z, "2026-12-01 14:03:11.250") or Unix
    /// milliseconds. Default: everything the topic holds now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<u64>,
    /// Stop TOPIC's PARTITION at OFFSET, the record there unapplied
    /// (repeat for several partitions; with --until, whichever comes
    /// first). Partitions not named go to --until or their end.
    #[arg(long = "until-offset", value_name = "TOPIC:PARTITION:OFFSET", value_parser = parse_stop)]
    until_offsets: Vec<(String, i32, i64)>,
    /// The Redis to restore into: redis://[user:password@]host:port, or
    /// rediss:// for TLS. Empty, or left by an earlier restore of the same
    /// topic to an earlier time.
    #[arg(long, value_name = "URL")]
    target: String,
    /// The topic's record format (the proxy's `message`).
    #[arg(long, default_value = "PROTOCOL", value_parser = parse_format)]
    message: Format,
    /// Begin at the topic's first record even when a full sync in it would
    /// do (it needs the whole history, never deleted by retention).
    #[arg(long)]
    from_beginning: bool,
}

fn property(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    Ok((name.trim().replace(['-', '_'], "."), value.to_owned()))
}

/// `TOPIC:PARTITION:OFFSET` (a topic name holds no `:`).
fn parse_stop(text: &str) -> Result<(String, i32, i64), String> {
    let bad = || format!("{text:?} is not TOPIC:PARTITION:OFFSET (redis-writes:0:1500)");
    let mut parts = text.rsplitn(3, ':');
    let (offset, partition, topic) = (parts.next(), parts.next(), parts.next());
    let (Some(offset), Some(partition), Some(topic)) = (offset, partition, topic) else {
        return Err(bad());
    };
    let (Ok(partition), Ok(offset)) = (partition.parse::<i32>(), offset.parse::<i64>()) else {
        return Err(bad());
    };
    if topic.is_empty() || partition < 0 || offset < 0 {
        return Err(bad());
    }
    Ok((topic.to_owned(), partition, offset))
}

fn parse_format(text: &str) -> Result<Format, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not ROW, STRING or PROTOCOL"))
}

/// RFC 3339 (UTC unless it says otherwise) or Unix milliseconds.
fn parse_time(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|e| format!("{text:?}: {e}"));
    }
    let time = humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).map_err(|e| {
        format!("{text:?} is not a time such as 2026-12-01T14:03:11Z or Unix milliseconds ({e})")
    })?;
    Ok(millis(time))
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A primary time as an operator reads it.
pub fn show_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn run(args: RestoreArgs) -> ExitCode {
    let target = match target(&args.target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --target: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some((topic, _, _)) = args
        .until_offsets
        .iter()
        .find(|(t, _, _)| !args.topics.contains(t))
    {
        eprintln!("error: --until-offset names topic {topic}, not one of the --topic");
        return ExitCode::from(2);
    }
    let claim = match claim_target(&args.target, &args.topics, args.until, &args.until_offsets) {
        Ok(claim) => claim,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut kafka = vec![(
        "bootstrap.servers".to_owned(),
        args.bootstrap_servers.clone(),
    )];
    kafka.extend(args.kafka.iter().cloned());
    if !kafka.iter().any(|(name, _)| name == "group.id") {
        // Offsets live in the target, not in the group: any name does.
        kafka.push(("group.id".to_owned(), "remoteback-restore".to_owned()));
    }
    let settings = ReplaySettings {
        message: args.message,
        worker: Default::default(),
        on_apply_error: OnApplyError::Continue,
        on_bad_record: OnBadRecord::Stop,
        metrics: None,
        receiver: ReceiverSettings {
            topics: args.topics.clone(),
            partitions: None,
            start: Start::Earliest,
            poll_timeout: Duration::from_millis(100),
            kafka,
        },
        backup: target,
    };
    if let Err(e) = remoteback_replay::validate(&settings) {
        eprintln!("error: Kafka properties: {e}");
        return ExitCode::from(2);
    }
    let addr = format!("{}:{}", settings.backup.host, settings.backup.port);
    let bound = Arc::new(Bound::with_offsets(args.until, args.until_offsets.clone()));
    let stats = Stats::default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let began = match (claim, args.from_beginning) {
        (Claim::Fresh, false) => {
            let began =
                begin_at_last_sync(&args.target, &settings, args.until, &args.until_offsets);
            match runtime.block_on(began) {
                Ok(began) => began,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let progress = Progress::start(stats.clone());
    // The replay ends without error when every partition is done, and
    // when a signal stopped it: the two must be told apart.
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = interrupted.clone();
    let signalled = async move {
        crate::shutdown_signal().await;
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let result = runtime.block_on(remoteback_replay::run_until(
        settings,
        bound.clone(),
        signalled,
        stats.clone(),
    ));
    progress.finish();
    runtime.shutdown_timeout(Duration::from_secs(2));
    if let Err(e) = result {
        eprintln!("error: restore stopped: {e}");
        return ExitCode::FAILURE;
    }
    let reached = bound.reached();
    if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!(
            "restore interrupted: the target holds a prefix of the log; run it again to go on"
        );
        return ExitCode::FAILURE;
    }
    if let Some(sync) = &began {
        println!(
            "began at the full sync of {} started {} (ended {}): the records before it were not needed",
            sync.source,
            show_time(sync.id),
            show_time(sync.ended_ms)
        );
    }
    print!("{}", report(&addr, args.until, &reached, &stats));
    ExitCode::SUCCESS
}

/// The backup settings for a `redis://` or `rediss://` URL.
fn target(url: &str) -> anyhow::Result<BackupSettings> {
    let info = url
        .into_connection_info()
        .map_err(|e| anyhow!("bad URL: {e}"))?;
    let (host, port, tls) = match info.addr() {
        ConnectionAddr::Tcp(host, port) => (host.clone(), *port, None),
        ConnectionAddr::TcpTls { host, port, .. } => {
            (host.clone(), *port, Some(TlsSettings::default()))
        }
        _ => bail!("a restore target is a redis:// or rediss:// URL"),
    };
    let redis = info.redis_settings();
    if redis.db() != 0 {
        bail!(
            "the URL names database {}: a restore writes every database",
            redis.db()
        );
    }
    Ok(BackupSettings {
        host,
        port,
        tls,
        username: redis.username().map(str::to_owned),
        password: redis.password().map(str::to_owned),
    })
}

/// The fields a restore marks its target with, in the replay's state hash
/// (which a replayed `FLUSHALL` keeps): the topics and the `--until`
/// restored so far, so that only a restore of the same topics to the same
/// or a later time goes on in it. A topic name cannot hold `:`, so no
/// partition's field can be one of these.
const TOPICS_FIELD: &str = "restore:topics";
const UNTIL_FIELD: &str = "restore:until";

/// What a restore's mark says: `topics` joined by commas, and the time
/// (`end` for everything).
fn mark(topics: &[String], until: Option<u64>) -> (String, String) {
    let until = until.map_or_else(|| "end".to_owned(), |ms| ms.to_string());
    (topics.join(","), until)
}

/// Takes the target for this restore: an empty Redis, or one an earlier
/// restore of the same topics to the same or an earlier time left (it goes
/// on from there). Anything else is refused before a write: a restore adds
/// to what is there, so another dataset would be mixed in, and a live
/// backup's replay would be raced. The mark is written before the first
/// record.
fn claim_target(
    url: &str,
    topics: &[String],
    until: Option<u64>,
    offsets: &[(String, i32, i64)],
) -> anyhow::Result<Claim> {
    let mut con = remoteback::compare::connect(url).context("connect to the target")?;
    let claim = check_target(&mut con, topics, until, offsets)?;
    // The mark never moves back: `check_target` took only an `--until` at
    // or after it, and a restore without one (bounded by offsets or not)
    // marks the end, since the partitions it names no offset for go there.
    let (topics, until) = mark(topics, until);
    let _: () = redis::cmd("HSET")
        .arg(STATE_KEY)
        .arg(TOPICS_FIELD)
        .arg(topics)
        .arg(UNTIL_FIELD)
        .arg(until)
        .query(&mut con)
        .context("HSET on the target")?;
    Ok(claim)
}

/// What the target held when the restore took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    /// Nothing: the restore begins where the topic allows.
    Fresh,
    /// An earlier restore of the same topics: it goes on from there.
    GoesOn,
}

/// On a fresh target, finds the last full sync the topic holds whole and
/// stores its start marks' offsets as the target's positions, so that the
/// restore begins there. `None` (nothing stored): there is none, and the
/// restore begins at the first record.
async fn begin_at_last_sync(
    url: &str,
    settings: &ReplaySettings,
    until: Option<u64>,
    offsets: &[(String, i32, i64)],
) -> anyhow::Result<Option<SyncInLog>> {
    let scanned = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watch = Progress::scanning(scanned.clone());
    let found =
        remoteback_replay::last_full_sync(&settings.receiver, until, offsets, &scanned).await;
    watch.finish();
    let Some(sync) = found.context("looking for the last full sync in the topic")? else {
        eprintln!("restore: no full sync ended before --until in the topic: beginning at its first record");
        return Ok(None);
    };
    let mut con = remoteback::compare::connect(url).context("connect to the target")?;
    let mut hset = redis::cmd("HSET");
    hset.arg(STATE_KEY);
    for (topic, partition, offset) in &sync.starts {
        hset.arg(offset_field(topic, *partition)).arg(*offset);
    }
    let _: () = hset.query(&mut con).context("HSET on the target")?;
    eprintln!(
        "restore: beginning at the full sync of {} started {}, ended {}",
        sync.source,
        show_time(sync.id),
        show_time(sync.ended_ms)
    );
    Ok(Some(sync))
}

fn check_target(
    con: &mut redis::Connection,
    topics: &[String],
    until: Option<u64>,
    offsets: &[(String, i32, i64)],
) -> anyhow::Result<Claim> {
    let keyspace: String = redis::cmd("INFO")
        .arg("keyspace")
        .query(con)
        .context("INFO keyspace on the target")?;
    let keys: u64 = keyspace
        .lines()
        .filter_map(|l| {
            l.split_once(":keys=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    if keys == 0 {
        return Ok(Claim::Fresh);
    }
    let (marked_topics, marked_until): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(STATE_KEY)
        .arg(TOPICS_FIELD)
        .arg(UNTIL_FIELD)
        .query(con)
        .context("HMGET on the target")?;
    let (Some(marked_topics), Some(marked_until)) = (marked_topics, marked_until) else {
        let state: bool = redis::cmd("EXISTS")
            .arg(STATE_KEY)
            .query(con)
            .context("EXISTS on the target")?;
        if state {
            bail!(
                "the target is a replay's backup ({STATE_KEY} without a restore's mark): restore \
                 into a new, empty Redis"
            );
        }
        bail!(
            "the target holds {keys} keys and none of a restore's: restore into an empty Redis \
             (FLUSHALL it if its data may go)"
        );
    };
    let (topics_now, _) = mark(topics, until);
    if marked_topics != topics_now {
        bail!(
            "the target holds a restore of {marked_topics}, not of {topics_now}: restore into an \
             empty Redis"
        );
    }
    let earlier = match (marked_until.parse::<u64>().ok(), until) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(_), None) => true,
        (Some(was), Some(now)) => was <= now,
    };
    if !earlier {
        let was = marked_until
            .parse::<u64>()
            .map_or_else(|_| "the end of the topic".to_owned(), show_time);
        bail!(
            "the target was restored up to {was} already, later than --until: restore into an \
             empty Redis to go back further"
        );
    }
    // Marked, but stopped before any offset was stored (while looking
    // for the last sync): as fresh.
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(STATE_KEY)
        .query(con)
        .context("HKEYS on the target")?;
    if !fields.iter().any(|f| f.starts_with("offset:")) {
        return Ok(Claim::Fresh);
    }
    for (topic, partition, stop) in offsets {
        let at: Option<i64> = redis::cmd("HGET")
            .arg(STATE_KEY)
            .arg(offset_field(topic, *partition))
            .query(con)
            .context("HGET on the target")?;
        if let Some(at) = at.filter(|at| at > stop) {
            bail!(
                "the target holds {topic}[{partition}] up to offset {at} already, past \
                 --until-offset {stop}: restore into an empty Redis to go back further"
            );
        }
    }
    Ok(Claim::GoesOn)
}

fn report(addr: &str, until: Option<u64>, reached: &[Reached], stats: &Stats) -> String {
    let mut out = String::new();
    let records: u64 = reached.iter().map(|r| r.records).sum();
    let up_to = match until {
        Some(ms) => format!("the writes captured up to {}", show_time(ms)),
        None => "everything the topic held".to_owned(),
    };
    out.push_str(&format!(
        "restore done: {up_to} are on {addr} ({records} records, {} writes applied; {} refused by the target)\n",
        stats.commands(),
        stats.refused()
    ));
    let mut sorted = reached.to_vec();
    sorted.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    for r in &sorted {
        let stop = match (r.first_after_ms, r.until_offset) {
            (Some(ms), _) => format!("next record captured at {}, after --until", show_time(ms)),
            (None, Some(o)) if o == r.end_offset => format!("--until-offset {o}"),
            (None, _) => format!("the end of the partition (offset {})", r.end_offset),
        };
        out.push_str(&format!(
            "  {}[{}]: {} records applied, next offset {}; stopped at {stop}\n",
            r.topic, r.partition, r.records, r.next_offset
        ));
    }
    for r in sorted.iter().filter(|r| r.deleted_before.is_some()) {
        out.push_str(&format!(
            "warning: {}[{}] began at offset {}: the records before it were deleted (retention), \
             and the writes they held are missing from the target unless a later sync copied \
             their keys\n",
            r.topic,
            r.partition,
            r.deleted_before.unwrap_or_default()
        ));
    }
    match sorted.iter().filter_map(|r| r.last_write_ms).max() {
        Some(ms) => out.push_str(&format!(
            "recovery point: the last write applied was captured at {}\n",
            show_time(ms)
        )),
        None => out.push_str("recovery point: no write was applied by this run\n"),
    }
    out
}

/// What a person watching sees while the restore runs: a spinner with
/// `line()` on a terminal, else `line()` every few seconds.
struct Progress {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// The applying: writes so far and how far every partition is.
    fn start(stats: Stats) -> Progress {
        Progress::showing(move || {
            let at = stats.applied_everywhere_ms();
            let at = if at > 0 {
                format!(", every partition at {}", show_time(at))
            } else {
                String::new()
            };
            format!("{} writes applied{at}", stats.commands())
        })
    }

    /// The search for the last full sync: records read so far.
    fn scanning(scanned: Arc<std::sync::atomic::AtomicU64>) -> Progress {
        Progress::showing(move || {
            let read = scanned.load(std::sync::atomic::Ordering::Relaxed);
            format!("looking for the last full sync: {read} records read")
        })
    }

    fn showing(line: impl Fn() -> String + Send + 'static) -> Progress {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} restore {elapsed}: {msg}")
                        .expect("a valid template"),
                );
                bar
            });
            let every = if bar.is_some() {
                Duration::from_millis(200)
            } else {
                PLAIN_EVERY
            };
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                match &bar {
                    Some(bar) => {
                        bar.set_message(line());
                        bar.tick();
                    }
                    None => eprintln!("restore: {}", line()),
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        Progress {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn finish(mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc_or_unix_milliseconds() {
        assert_eq!(parse_time("1764597791250"), Ok(1_764_597_791_250));
        assert_eq!(parse_time("2025-12-01T14:03:11Z"), Ok(1_764_597_791_000));
        assert_eq!(parse_time("2025-12-01 14:03:11.250"), Ok(1_764_597_791_250));
        assert!(parse_time("yesterday")
            .unwrap_err()
            .contains("is not a time"));
        assert_eq!(show_time(1_764_597_791_250), "2025-12-01T14:03:11.250Z");
    }

    #[test]
    fn targets_are_whole_servers_with_their_credentials() {
        let t = target("rediss://restorer:pw@10.0.0.9:6380").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.9", 6380));
        assert_eq!(t.tls, Some(TlsSettings::default()));
        assert_eq!(t.username.as_deref(), Some("restorer"));
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert_eq!(target("redis://127.0.0.1:7000").unwrap().tls, None);
        let e = target("redis://127.0.0.1:7000/3").unwrap_err().to_string();
        assert!(e.contains("writes every database"), "{e}");
    }

    #[test]
    fn offsets_name_their_topic_and_partition() {
        assert_eq!(
            parse_stop("redis-writes:3:1500"),
            Ok(("redis-writes".into(), 3, 1500))
        );
        for bad in ["redis-writes:1500", "t:x:1", "t:0:-1", ":0:1", "t:-1:4"] {
            assert!(parse_stop(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kafka_properties_take_either_spelling() {
        assert_eq!(
            property("security-protocol=SASL_SSL"),
            Ok(("security.protocol".to_owned(), "SASL_SSL".to_owned()))
        );
        assert!(property("nonsense").is_err());
    }
}

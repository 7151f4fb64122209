//! `remoteback verify`: proving, key by key and in both directions, that a
//! backup equals its primary.
//!
//! The first round walks the source (`SCAN`) and compares every key with
//! the target, batch by batch ([`batch`]), then walks the target for the
//! keys the source lacks. A replicated system is never still: a key written
//! a moment ago may not have reached the backup yet. So a key that differs
//! is only a candidate; it is checked again after `interval`, and only what
//! differs in every one of `rounds` rounds is reported. With `--repair`
//! each of those keys is resynced through the proxy and checked until it
//! converges or the wait is over.
//!
//! Both servers are read at once (one connection thread each, [`side`]),
//! each paced by `--qps`; values are read in chunks, so memory stays
//! bounded whatever the size of a key.

mod batch;
mod difference;
mod escape;
mod key;
mod progress;
mod rate;
mod repair;
mod reply;
mod report;
mod sample;
mod side;
mod small;
mod ttl;
mod value;
mod walk;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

pub use difference::{Difference, Kind};
pub use escape::{escape, hex};
pub use progress::Display;
pub use report::{Found, Repair, Summary};
pub use sample::Sample;

use side::{pipeline, Endpoint, Pair, Side};
use walk::Scan;

/// Keys a `SCAN` page asks for, and so the most keys a batch compares.
const BATCH: usize = 1000;
/// The longest pause between two checks of repaired keys.
const REPAIR_POLL: Duration = Duration::from_millis(500);

/// What to verify, and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// The primary, `redis://[user:password@]host:port[/db]`.
    pub source: String,
    /// The backup, same form.
    pub target: String,
    /// Databases to compare; empty: every database that holds keys on
    /// either side (or the one a URL names).
    pub dbs: Vec<u32>,
    /// The largest difference between two expiries that is no difference.
    pub ttl_tolerance: Duration,
    /// The wait before a differing key is checked again.
    pub interval: Duration,
    /// Rounds in all (at least 1): a key is reported if it differs in each.
    pub rounds: u32,
    /// Commands a second to each server; `None` for no limit.
    pub qps: Option<u32>,
    /// `SCAN MATCH` pattern, on both sides.
    pub pattern: Option<Vec<u8>>,
    pub sample: Sample,
    /// Resync each persistent difference through this proxy.
    pub repair: Option<RepairOptions>,
    pub display: Display,
}

/// Where `--repair` sends its requests.
#[derive(Clone, Debug)]
pub struct RepairOptions {
    /// The proxy's admin address, `host:port`.
    pub proxy: String,
    pub token: Option<String>,
}

/// Verifies as `options` say. An error means verify could not run (a bad
/// URL, an unreachable server, an error reply); the differences are in the
/// summary.
pub fn run(options: &Options) -> anyhow::Result<Summary> {
    if options.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let started = Instant::now();
    let source = Endpoint::parse(&options.source).map_err(|e| anyhow!("--source: {e}"))?;
    let target = Endpoint::parse(&options.target).map_err(|e| anyhow!("--target: {e}"))?;
    let proxy = match &options.repair {
        Some(r) => Some(repair::Proxy::new(&r.proxy, r.token.clone())?),
        None => None,
    };
    let pair = Pair {
        source: Side::connect("source", &source, options.qps)?,
        target: Side::connect("target", &target, options.qps)?,
    };
    let dbs = databases(options, &source, &target, &pair)?;
    let batch = rate::Pace::new(options.qps).batch(BATCH);

    let mut total = 0;
    for &db in &dbs {
        total += walk::select(&pair.source, db)? + walk::select(&pair.target, db)?;
    }
    let total = options.pattern.is_none().then_some(total);
    let progress = progress::VerifyProgress::start(options.display, total);
    let walk_started = Instant::now();
    let mut candidates = BTreeMap::new();
    let mut keys = 0;
    for &db in &dbs {
        walk::select(&pair.source, db)?;
        walk::select(&pair.target, db)?;
        let pattern = options.pattern.as_deref();
        progress.phase(format!("db {db}: source keys"));
        let mut scan = Scan::new(&pair.source, pattern, batch, options.sample);
        while let Some((page, scanned)) = scan.next_page()? {
            if !page.is_empty() {
                keys += page.len() as u64;
                let found = batch::compare(&pair, db, &page, options.ttl_tolerance)?;
                progress.found(found.len() as u64);
                add(&mut candidates, found);
            }
            progress.advance(scanned as u64);
        }
        progress.phase(format!("db {db}: target keys"));
        let mut scan = Scan::new(&pair.target, pattern, batch, options.sample);
        while let Some((page, scanned)) = scan.next_page()? {
            let absent = absent_from(&pair.source, page)?;
            if !absent.is_empty() {
                keys += absent.len() as u64;
                let found = batch::compare(&pair, db, &absent, options.ttl_tolerance)?;
                progress.found(found.len() as u64);
                add(&mut candidates, found);
            }
            progress.advance(scanned as u64);
        }
    }
    let walk = walk_started.elapsed();
    progress.finish();

    let mut rounds = 1;
    while rounds < options.rounds && !candidates.is_empty() {
        if options.display != Display::Quiet {
            eprintln!(
                "verify: round {} of {}: {} differing key{} checked again in {}",
                rounds + 1,
                options.rounds,
                candidates.len(),
                if candidates.len() == 1 { "" } else { "s" },
                humantime::format_duration(options.interval)
            );
        }
        std::thread::sleep(options.interval);
        candidates = recheck(
            &pair,
            candidates.into_values(),
            batch,
            options.ttl_tolerance,
        )?;
        rounds += 1;
    }

    let mut found: Vec<Found> = candidates
        .into_values()
        .map(|difference| Found {
            difference,
            repair: None,
        })
        .collect();
    if let Some(proxy) = &proxy {
        repair_all(&pair, proxy, &mut found, options, batch)?;
    }
    Ok(Summary {
        source: source.address,
        target: target.address,
        dbs,
        keys,
        rounds,
        walk,
        duration: started.elapsed(),
        found,
        repaired: proxy.is_some(),
    })
}

type Candidates = BTreeMap<(u32, Vec<u8>), Difference>;

/// Adds differences, a key once (a walk may meet a key twice).
fn add(candidates: &mut Candidates, found: Vec<Difference>) {
    for d in found {
        candidates.insert((d.db, d.key.clone()), d);
    }
}

/// The databases to compare: `--db`, else the one a URL names, else every
/// database with keys on either side.
fn databases(
    options: &Options,
    source: &Endpoint,
    target: &Endpoint,
    pair: &Pair,
) -> anyhow::Result<Vec<u32>> {
    if !options.dbs.is_empty() {
        let mut dbs = options.dbs.clone();
        dbs.sort_unstable();
        dbs.dedup();
        return Ok(dbs);
    }
    let named = |e: &Endpoint| u32::try_from(e.db()).ok().filter(|&db| db != 0);
    match (named(source), named(target)) {
        (Some(a), Some(b)) if a != b => bail!(
            "the URLs name different databases ({a} and {b}); verify compares a database with \
             the same one on the other side"
        ),
        (Some(db), _) | (None, Some(db)) => Ok(vec![db]),
        (None, None) => {
            let mut dbs = walk::databases(&pair.source)?;
            dbs.extend(walk::databases(&pair.target)?);
            Ok(dbs.into_iter().collect())
        }
    }
}

/// Of `keys` (found on the target), those the source lacks.
fn absent_from(source: &Side, keys: Vec<Vec<u8>>) -> anyhow::Result<Vec<Vec<u8>>> {
    if keys.is_empty() {
        return Ok(keys);
    }
    let mut pipe = pipeline();
    for k in &keys {
        pipe.cmd("EXISTS").arg(k);
    }
    let replies = source.query(pipe)?;
    reply::expect_len(&replies, keys.len(), "EXISTS")?;
    let mut absent = Vec::new();
    for (key, exists) in keys.into_iter().zip(&replies) {
        match reply::int(reply::must(exists, "EXISTS")?) {
            Some(0) => absent.push(key),
            Some(_) => {}
            None => bail!("EXISTS: unexpected reply {exists:?}"),
        }
    }
    Ok(absent)
}

/// Checks `differences` again; those that still differ, as they now do.
fn recheck(
    pair: &Pair,
    differences: impl IntoIterator<Item = Difference>,
    batch: usize,
    tolerance: Duration,
) -> anyhow::Result<Candidates> {
    let mut by_db: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    for d in differences {
        by_db.entry(d.db).or_default().push(d.key);
    }
    let mut still = BTreeMap::new();
    for (db, keys) in by_db {
        walk::select(&pair.source, db)?;
        walk::select(&pair.target, db)?;
        for chunk in keys.chunks(batch) {
            add(&mut still, batch::compare(pair, db, chunk, tolerance)?);
        }
    }
    Ok(still)
}

/// Resyncs every difference through the proxy, then checks the repaired
/// keys until they are equal or `interval` × `rounds` has passed.
fn repair_all(
    pair: &Pair,
    proxy: &repair::Proxy,
    found: &mut [Found],
    options: &Options,
    batch: usize,
) -> anyhow::Result<()> {
    let mut stopped: Option<String> = None;
    for f in found.iter_mut() {
        let outcome = match &stopped {
            Some(reason) => Err(format!("not attempted: {reason}")),
            None => proxy
                .repair(f.difference.db, &f.difference.key)
                .map_err(|e| {
                    if e.stops_all() {
                        stopped = Some(e.to_string());
                    }
                    e.to_string()
                }),
        };
        f.repair = Some(Repair {
            outcome,
            after: None,
        });
    }
    if let Some(reason) = &stopped {
        eprintln!("verify: repair stopped: {reason}");
    }
    let deadline = Instant::now() + options.interval * options.rounds;
    let repaired = |f: &Found| f.repair.as_ref().is_some_and(|r| r.outcome.is_ok());
    let mut pending: Vec<Difference> = found
        .iter()
        .filter(|f| repaired(f))
        .map(|f| f.difference.clone())
        .collect();
    let mut still = Candidates::new();
    while !pending.is_empty() {
        still = recheck(pair, pending, batch, options.ttl_tolerance)?;
        if still.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(REPAIR_POLL.min(options.interval));
        pending = still.values().cloned().collect();
    }
    for f in found.iter_mut().filter(|f| repaired(f)) {
        if let Some(r) = &mut f.repair {
            r.after = still.remove(&(f.difference.db, f.difference.key.clone()));
        }
    }
    Ok(())
}

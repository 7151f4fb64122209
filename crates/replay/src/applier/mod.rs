//! Applying `STRING` and `PROTOCOL` records to the backup, exactly once.
//!
//! Records become `MULTI` ... `EXEC` transactions on the backup that also
//! store the partition's next offset and the last record of each source
//! applied (see [`state`](crate::state)). Redis runs each atomically, so
//! after any crash the stored offset says exactly which records took
//! effect. A record numbered at or before the last applied of its source
//! (in Kafka twice) is skipped; a number skipped is a gap, counted and
//! reported (resync needed). A barrier copy ends the transaction before it
//! and meets the other partitions ([`barrier`](crate::barrier)).
//!
//! With `on_apply_error = "continue"` a whole batch of consecutive records is
//! one transaction. With `"stop"` every record is a transaction of its own:
//! Redis has no rollback, so this is the only way to stop before anything
//! after a refused record took effect.
//!
//! Inside a transaction each record's commands are preceded by a `SELECT` of
//! the record's database when it differs from the current one. A record's
//! own `MULTI`/`EXEC` wrapper is dropped: the transaction already makes it
//! atomic, and Redis does not nest transactions.
//!
//! The backup being unreachable, restarting or refusing writes for its own
//! reasons (`LOADING`, `OOM`, `READONLY`, ...) is never an error: the applier
//! waits with backoff ([`retry`](crate::retry)), reconnects, reads the stored
//! offset again and applies only what did not take effect.

mod barrier;
mod decode;
mod transaction;

use remoteback_protocol::frame::{self, Frame};
use tokio::sync::watch;

use crate::backup::BackupError;
use crate::barrier::Barriers;
use crate::error::ApplyError;
use crate::link::BackupLink;
use crate::receiver::Received;
use crate::settings::{BackupSettings, OnApplyError};
use crate::state::{self, STATE_KEY};
use crate::stats::Stats;
use decode::Decoded;
use transaction::Exec;

/// How an [`Applier`] reacts to refusals and to a backup that lost data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `on_apply_error`.
    pub on_error: OnApplyError,
    /// When the backup comes back without any stored offset after one had
    /// been stored (it was emptied), read the partition again from its
    /// beginning (`start = "earliest"`) rather than go on with the records
    /// at hand (`start = "latest"`).
    pub rewind_when_emptied: bool,
}

/// Applies the records of one partition.
pub struct Applier {
    link: BackupLink,
    stats: Stats,
    policy: Policy,
    barriers: Barriers,
    stop: watch::Receiver<bool>,
    /// Where a bounded replay's partitions end: a barrier whose other
    /// copies lie past it is not waited for.
    ends: Option<crate::Ends>,
}

/// A command of a record that the backup refused inside `EXEC`.
struct Refusal {
    offset: i64,
    reason: String,
}

impl Applier {
    pub fn new(
        settings: BackupSettings,
        topic: &str,
        partition: i32,
        stats: Stats,
        policy: Policy,
        stop: watch::Receiver<bool>,
        barriers: Barriers,
    ) -> Self {
        Applier {
            link: BackupLink::new(
                settings,
                topic,
                partition,
                stats.clone(),
                policy.rewind_when_emptied,
                stop.clone(),
            ),
            stats,
            policy,
            barriers,
            stop,
            ends: None,
        }
    }

    /// The applier of a partition that ends at a bound or a promotion.
    pub(crate) fn ending(mut self, ends: crate::Ends) -> Self {
        self.ends = Some(ends);
        self
    }

    /// The offset to start from, as stored in the backup. Waits for the
    /// backup as long as it takes.
    pub async fn stored_offset(&mut self) -> Result<Option<i64>, ApplyError> {
        self.link.stored_offset().await
    }

    /// Stores `next` as the partition's position (outside any transaction),
    /// waiting for the backup as long as it takes.
    pub async fn store_offset(&mut self, next: i64) -> Result<(), ApplyError> {
        self.link.store_offset(next).await
    }

    /// Applies `batch` (consecutive records of this partition) exactly once:
    /// after a lost connection it reads the stored offset again and applies
    /// only what did not take effect.
    ///
    /// A record that cannot be decoded ends the batch: the records before it
    /// are applied, then [`ApplyError::BadRecord`] is returned.
    pub async fn apply(&mut self, batch: Vec<Received>) -> Result<(), ApplyError> {
        let (mut rest, bad) = self.decode_all(batch);
        while !rest.is_empty() {
            match rest.iter().position(|r| r.barrier.is_some()) {
                None => {
                    self.apply_records(rest).await?;
                    break;
                }
                Some(0) => {
                    let copy = rest.remove(0);
                    self.barrier(copy).await?;
                }
                Some(i) => {
                    let after = rest.split_off(i);
                    self.apply_records(rest).await?;
                    rest = after;
                }
            }
        }
        match bad {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Applies consecutive records without barriers, reconnecting as
    /// needed.
    async fn apply_records(&mut self, mut pending: Vec<Decoded>) -> Result<(), ApplyError> {
        while !pending.is_empty() {
            if self.link.backup().is_none() {
                let stored = self.link.connect().await?;
                self.resume(&mut pending, stored)?;
                continue;
            }
            let started = std::time::Instant::now();
            let result = match self.policy.on_error {
                OnApplyError::Continue => self.apply_batch(&pending).await,
                OnApplyError::Stop => self.apply_each(&pending).await,
            };
            match result {
                Ok(()) => {
                    let newest = pending.iter().rev().find_map(|r| r.time_ms);
                    self.stats
                        .add_batch(pending.len(), started.elapsed(), newest);
                    pending.clear();
                    self.link.progressed();
                }
                Err(ApplyError::Backup(e)) if e.is_retryable() => {
                    let doing = format!(
                        "applying records {}..={}",
                        pending[0].offset,
                        pending[pending.len() - 1].offset
                    );
                    self.link.pause(&e, &doing).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// After reconnecting: drops the pending records the backup already
    /// has, or asks for a rewind when it lost some.
    fn resume(
        &mut self,
        pending: &mut Vec<Decoded>,
        stored: Option<i64>,
    ) -> Result<(), ApplyError> {
        let first = pending.first().map(|r| r.offset).unwrap_or_default();
        self.link.check_lost(stored, first)?;
        if let Some(next) = stored {
            let before = pending.len();
            pending.retain(|r| r.offset >= next);
            if pending.len() < before {
                log::info!(
                    "partition {}[{}]: {} records had taken effect before the connection was lost",
                    self.link.topic(),
                    self.link.partition(),
                    before - pending.len()
                );
            }
            self.link.position = Some(next);
        }
        Ok(())
    }

    /// The whole batch as one transaction; when the backup aborts it, record
    /// by record.
    async fn apply_batch(&mut self, records: &[Decoded]) -> Result<(), ApplyError> {
        match self.transaction(records).await? {
            (owners, Exec::Ran(results)) => {
                let refusals = self.ran(records, &owners, &results)?;
                for r in &refusals {
                    self.log_refusal(r);
                }
                Ok(())
            }
            (_, Exec::Aborted(reason)) if records.len() == 1 => {
                self.aborted(&records[0], &reason).await
            }
            (_, Exec::Aborted(reason)) => {
                log::warn!(
                    "partition {}[{}]: backup aborted the transaction of records {}..={} ({reason}); \
                     applying them one at a time",
                    self.link.topic(),
                    self.link.partition(),
                    records[0].offset,
                    records[records.len() - 1].offset
                );
                self.apply_each(records).await
            }
        }
    }

    /// Each record as a transaction of its own.
    async fn apply_each(&mut self, records: &[Decoded]) -> Result<(), ApplyError> {
        for record in records {
            // After a reconnect the backup may already have some of them.
            if self.link.position.is_some_and(|p| record.offset < p) {
                continue;
            }
            self.apply_one(record).await?;
        }
        Ok(())
    }

    async fn apply_one(&mut self, record: &Decoded) -> Result<(), ApplyError> {
        let records = std::slice::from_ref(record);
        // The source's place before the record, to go back to if nothing
        // of it takes effect.
        let before = record
            .seq
            .as_ref()
            .map(|(source, _)| (source.as_str(), self.link.seqs.get(source).copied()));
        let (owners, exec) = self.transaction(records).await?;
        let results = match exec {
            Exec::Ran(results) => results,
            Exec::Aborted(reason) => return self.aborted(record, &reason).await,
        };
        let refusals = self.ran(records, &owners, &results)?;
        if refusals.is_empty() {
            return Ok(());
        }
        for r in &refusals {
            self.log_refusal(r);
        }
        if self.policy.on_error == OnApplyError::Continue {
            return Ok(());
        }
        let reasons: Vec<&str> = refusals.iter().map(|r| r.reason.as_str()).collect();
        let reason = reasons.join("; ");
        let refused_writes = refusals.len();
        if refused_writes < record.writes() {
            // Part of the record took effect; applying it again would apply
            // that part twice, so the stored offset stays past it.
            return Err(self.refused_error(
                record,
                reason,
                format!(
                    "{} of its {} commands took effect and were not undone (Redis has no rollback), \
                     the refused ones were not applied; the stored offset is {} (after the record), \
                     so a restart goes on after it",
                    record.writes() - refused_writes,
                    record.writes(),
                    record.offset + 1
                ),
            ));
        }
        // Nothing of the record took effect: move the stored offset back to
        // it, so a restart after fixing the backup applies it.
        self.link.position = Some(record.offset);
        match self.link.store_position(record.offset, before).await {
            Ok(()) => Err(self.refused_error(
                record,
                reason,
                format!(
                    "nothing of it took effect; the stored offset is {}, so a restart resumes at it",
                    record.offset
                ),
            )),
            Err(e) => Err(self.refused_error(
                record,
                reason,
                format!(
                    "nothing of it took effect, but the stored offset could not be moved back to it \
                     ({e}): it says {}; set field {} of {} to {} in database 0 of the backup to \
                     apply the record after fixing the backup",
                    record.offset + 1,
                    state::offset_field(self.link.topic(), self.link.partition()),
                    STATE_KEY,
                    record.offset
                ),
            )),
        }
    }

    /// The backup refused a whole record while queueing it (`EXECABORT`),
    /// so nothing of it ran: skip it (`continue`) or stop at it (`stop`).
    async fn aborted(&mut self, record: &Decoded, reason: &str) -> Result<(), ApplyError> {
        // Nothing of it ran: every write it holds (a packed record holds
        // several) is one the backup misses.
        self.stats.add_refused(record.writes().max(1) as u64);
        match self.policy.on_error {
            OnApplyError::Continue => {
                log::error!(
                    "backup refused the record at {}[{}]@{}: {reason}; skipped with its {} writes \
                     (on_apply_error = \"continue\")",
                    self.link.topic(),
                    self.link.partition(),
                    record.offset,
                    record.writes()
                );
                // Its place is stored (nothing else): a later copy of it is
                // a duplicate, the record after it no gap.
                let skipped = record.without_commands();
                match self.transaction(std::slice::from_ref(&skipped)).await? {
                    (owners, Exec::Ran(results)) => {
                        self.ran(std::slice::from_ref(&skipped), &owners, &results)?;
                        Ok(())
                    }
                    (_, Exec::Aborted(reason)) => Err(BackupError::BadReply {
                        addr: self.link.addr(),
                        reason: format!(
                            "storing the position after the refused record at {}[{}]@{}: {reason}",
                            self.link.topic(),
                            self.link.partition(),
                            record.offset
                        ),
                    }
                    .into()),
                }
            }
            OnApplyError::Stop => {
                let stored = match self.link.position {
                    Some(p) => format!("the stored offset is {p}"),
                    None => "no offset is stored yet".to_string(),
                };
                Err(self.refused_error(
                    record,
                    reason.to_string(),
                    format!("nothing of it took effect; {stored}, so a restart resumes at it"),
                ))
            }
        }
    }

    fn refused_error(&self, record: &Decoded, reason: String, resume: String) -> ApplyError {
        ApplyError::Refused {
            topic: self.link.topic().to_string(),
            partition: self.link.partition(),
            offset: record.offset,
            reason,
            resume,
        }
    }

    /// Bookkeeping after `EXEC` ran `records`: the new position, counters,
    /// and the commands the backup refused.
    fn ran(
        &mut self,
        records: &[Decoded],
        owners: &[Option<i64>],
        results: &[Frame],
    ) -> Result<Vec<Refusal>, ApplyError> {
        let last = &records[records.len() - 1];
        let mut refusals = Vec::new();
        for (owner, result) in owners.iter().zip(results) {
            let Frame::Error(e) = result else { continue };
            match owner {
                // A script that raised while it ran: its writes before the
                // error took effect, as on the primary, where it raised too
                // (the proxy captures a failed script only then). Not a
                // refusal: counted, and told at warn level.
                Some(offset) if frame::raised_in_script(e) => {
                    self.stats.add_script_raised();
                    log::warn!(
                        "a script of the record at {}[{}]@{} raised on the backup, as on the primary: {}",
                        self.link.topic(),
                        self.link.partition(),
                        offset,
                        String::from_utf8_lossy(e)
                    );
                }
                Some(offset) => refusals.push(Refusal {
                    offset: *offset,
                    reason: with_advice(String::from_utf8_lossy(e).into_owned()),
                }),
                // A SELECT or the offset update of remoteback's own failed:
                // the position no longer matches the data.
                None => {
                    self.link.disconnect();
                    return Err(BackupError::BadReply {
                        addr: self.link.addr(),
                        reason: format!(
                            "a SELECT or the offset update in the transaction of records {}..={} \
                             failed: {}; the records took effect but the stored offset may not say \
                             so, or they took effect in another database (check the backup: \
                             `databases` as many as the primary's, {STATE_KEY} a hash)",
                            records[0].offset,
                            last.offset,
                            String::from_utf8_lossy(e),
                        ),
                    }
                    .into());
                }
            }
        }
        self.link.position = Some(last.offset + 1);
        // The last record of each run of one source's records is its place
        // now (a batch is one source's records, or a few: one map update
        // per run of records, not per record).
        for (i, record) in records.iter().enumerate() {
            let Some((source, at)) = &record.seq else {
                continue;
            };
            let same_next = records
                .get(i + 1)
                .and_then(|r| r.seq.as_ref())
                .is_some_and(|(s, _)| s == source);
            if same_next {
                continue;
            }
            match self.link.seqs.get_mut(source) {
                Some(stored) => *stored = *at,
                None => {
                    self.link.seqs.insert(source.clone(), *at);
                }
            }
        }
        self.stats.add_refused(refusals.len() as u64);
        let refused_records = {
            let mut offsets: Vec<i64> = refusals.iter().map(|r| r.offset).collect();
            offsets.dedup();
            offsets
        };
        let fully_refused = records
            .iter()
            .filter(|r| {
                refused_records.contains(&r.offset)
                    && refusals.iter().filter(|x| x.offset == r.offset).count() >= r.writes()
            })
            .count();
        let nothing = records.iter().filter(|r| r.commands.is_empty()).count();
        let writes: usize = records.iter().map(Decoded::writes).sum();
        // A heartbeat is the record with no commands and no number (a
        // sync's mark has one).
        let heartbeat = records
            .iter()
            .rposition(|r| r.commands.is_empty() && r.seq.is_none())
            .map(|i| {
                let after = records[i + 1..]
                    .iter()
                    .filter(|r| !r.commands.is_empty())
                    .count();
                (records[i].time_ms, after as u64)
            });
        self.stats.add_applied(
            (self.link.topic(), self.link.partition()),
            (records.len() - fully_refused - nothing) as u64,
            writes.saturating_sub(refusals.len()) as u64,
            records.iter().rev().find_map(|r| r.time_ms),
            heartbeat,
        );
        Ok(refusals)
    }

    fn log_refusal(&self, refusal: &Refusal) {
        log::error!(
            "backup refused a command of the record at {}[{}]@{}: {}",
            self.link.topic(),
            self.link.partition(),
            refusal.offset,
            refusal.reason
        );
    }
}

/// A refusal's text, with what to do about the refusals an operator can
/// fix: a `RESTORE` from `remoteback sync` whose payload the backup cannot
/// read comes from a newer Redis than the backup's (or from Redis to
/// Valkey), and typed commands copy across versions.
fn with_advice(reason: String) -> String {
    if reason.contains("DUMP payload version or checksum are wrong") {
        format!(
            "{reason} (a RESTORE from `remoteback sync`: the backup runs an older Redis than \
             the primary, or another server; resync with `remoteback sync --method commands`)"
        )
    } else {
        reason
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use remoteback_protocol::record::Meta;
    use remoteback_protocol::Format;

    use super::*;

    fn applier(on_error: OnApplyError) -> Applier {
        applier_with(on_error, true)
    }

    fn applier_with(on_error: OnApplyError, rewind_when_emptied: bool) -> Applier {
        let (_tx, rx) = watch::channel(false);
        Applier::new(
            BackupSettings {
                host: "127.0.0.1".into(),
                port: 1,
                tls: None,
                username: None,
                password: None,
            },
            "t",
            3,
            Stats::default(),
            Policy {
                on_error,
                rewind_when_emptied,
            },
            rx,
            Barriers::default(),
        )
    }

    fn received(offset: i64, db: Option<u32>, payload: &'static [u8]) -> Received {
        Received {
            offset,
            meta: Meta {
                run: None,
                barrier: None,
                format: Format::Protocol,
                db,
                source: None,
                seq: None,
                time_ms: None,
                conn: None,
                close: false,
                heartbeat: false,
                sync: None,
            },
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn a_restore_the_backup_cannot_read_says_how_to_copy_instead() {
        let advised = with_advice("ERR DUMP payload version or checksum are wrong".into());
        assert!(advised.contains("--method commands"), "{advised}");
        let other = with_advice("WRONGTYPE Operation against a key".into());
        assert_eq!(other, "WRONGTYPE Operation against a key");
    }

    #[test]
    fn decoding_stops_at_the_first_bad_record() {
        let a = applier(OnApplyError::Continue);
        let batch = vec![
            received(5, Some(0), b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"),
            received(
                6,
                Some(1),
                b"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n*1\r\n$4\r\nEXEC\r\n",
            ),
            received(7, Some(0), b"*2\r\n$4\r\nINCR"),
            received(8, Some(0), b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"),
        ];
        let (good, bad) = a.decode_all(batch);
        assert_eq!(good.iter().map(|d| d.offset).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(good[1].commands.len(), 1, "MULTI/EXEC dropped");
        let e = bad.expect("bad record").to_string();
        assert!(e.starts_with("record at t[3]@7: payload: "), "{e}");
    }

    #[test]
    fn a_record_without_its_database_is_bad() {
        let a = applier(OnApplyError::Continue);
        let (good, bad) = a.decode_all(vec![received(9, None, b"*1\r\n$4\r\nPING\r\n")]);
        assert!(good.is_empty());
        let e = bad.expect("bad record").to_string();
        assert!(e.contains("t[3]@9: header rb-db is missing"), "{e}");
    }

    #[test]
    fn a_plan_selects_databases_and_stores_the_next_offset() {
        let a = applier(OnApplyError::Continue);
        let (records, _) = a.decode_all(vec![
            received(5, Some(2), b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"),
            received(6, Some(2), b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"),
        ]);
        let plan = a.plan(&records);
        let text = String::from_utf8_lossy(&plan.bytes).replace("\r\n", " ");
        assert_eq!(
            text,
            "*1 $5 MULTI *2 $6 SELECT $1 2 *2 $4 INCR $1 k *2 $4 INCR $1 k *2 $6 SELECT $1 0 \
             *4 $4 HSET $18 __remoteback:state $10 offset:t:3 $1 7 *1 $4 EXEC "
        );
        assert_eq!(plan.owners, [None, Some(5), Some(6), None, None]);
    }

    #[test]
    fn resume_drops_what_took_effect_and_rewinds_on_loss() {
        let mut a = applier(OnApplyError::Continue);
        let (mut pending, _) = a.decode_all(vec![
            received(10, Some(0), b"*1\r\n$4\r\nPING\r\n"),
            received(11, Some(0), b"*1\r\n$4\r\nPING\r\n"),
        ]);
        a.link.position = Some(10);
        a.resume(&mut pending, Some(11)).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(a.link.position, Some(11));
        match a.resume(&mut pending, Some(4)) {
            Err(ApplyError::Rewind { from, to, .. }) => assert_eq!((from, to), (11, Some(4))),
            other => panic!("{other:?}"),
        }
        a.link.position = Some(11);
        match a.resume(&mut pending, None) {
            Err(ApplyError::Rewind { to: None, .. }) => {}
            other => panic!("{other:?}"),
        }
        let mut a = applier_with(OnApplyError::Continue, false);
        a.link.position = Some(11);
        a.resume(&mut pending, None).unwrap();
        assert_eq!(pending.len(), 1, "latest: goes on with what it has");
    }

    fn numbered(offset: i64, run: u64, seq: u64, payload: &'static [u8]) -> Received {
        let mut r = received(offset, Some(0), payload);
        r.meta.source = Some("h:1".into());
        r.meta.run = Some(run);
        r.meta.seq = Some(seq);
        r
    }

    const INCR: &[u8] = b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n";

    #[test]
    fn duplicates_lose_their_commands_and_gaps_ask_for_a_resync() {
        let mut a = applier(OnApplyError::Continue);
        a.link
            .seqs
            .insert("h:1".into(), crate::state::Position { run: 100, n: 5 });
        let (records, bad) = a.decode_all(vec![
            numbered(20, 100, 4, INCR),
            numbered(21, 100, 5, INCR),
            numbered(22, 100, 6, INCR),
            numbered(23, 100, 6, INCR),
            numbered(24, 100, 9, INCR),
            numbered(25, 99, 50, INCR),
            numbered(26, 101, 1, INCR),
        ]);
        assert!(bad.is_none());
        let kept: Vec<i64> = records
            .iter()
            .filter(|r| !r.commands.is_empty())
            .map(|r| r.offset)
            .collect();
        assert_eq!(kept, [22, 24, 26]);
        assert_eq!(a.stats.duplicates(), 4);
        assert_eq!((a.stats.gaps(), a.stats.missing()), (1, 2));
        let why = a.stats.resync_needed().expect("resync needed");
        assert!(
            why.starts_with("records 7..=8 of source h:1 run 100 on partition t[3]"),
            "{why}"
        );
        let plan = a.plan(&records);
        let text = String::from_utf8_lossy(&plan.bytes).replace("\r\n", " ");
        assert!(
            text.ends_with("$11 seq:t:3:h:1 $5 101:1 *1 $4 EXEC "),
            "the last place of the source stored: {text}"
        );
        assert_eq!(plan.owners.iter().filter(|o| o.is_some()).count(), 3);
    }

    #[test]
    fn a_barrier_header_needs_its_source_and_this_partition() {
        use remoteback_protocol::record::Barrier;
        let a = applier(OnApplyError::Continue);
        let mut anonymous = received(1, Some(0), INCR);
        anonymous.meta.barrier = Some(Barrier {
            number: 1,
            partitions: 4,
        });
        let (_, bad) = a.decode_all(vec![anonymous]);
        let e = bad.expect("bad record").to_string();
        assert!(e.contains("without rb-source and rb-run"), "{e}");
        let mut outside = numbered(2, 100, 1, INCR);
        outside.meta.barrier = Some(Barrier {
            number: 1,
            partitions: 2,
        });
        let (_, bad) = a.decode_all(vec![outside]);
        let e = bad.expect("bad record").to_string();
        assert!(
            e.contains("on partition 3, outside the barrier's partitions 0..2"),
            "{e}"
        );
    }

    #[test]
    fn a_guarded_plan_writes_the_state_back_and_removes_stray_copies() {
        let a = applier(OnApplyError::Continue);
        let (records, _) = a.decode_all(vec![received(
            7,
            Some(0),
            b"*3\r\n$6\r\nSWAPDB\r\n$1\r\n0\r\n$1\r\n2\r\n",
        )]);
        assert!(records[0].risky);
        let snapshot = [Bytes::from_static(b"offset:t:1"), Bytes::from_static(b"40")];
        let plan = a.plan_with(&records, &transaction::Extra::default(), Some(&snapshot));
        let text = String::from_utf8_lossy(&plan.bytes).replace("\r\n", " ");
        assert_eq!(
            text,
            "*1 $5 MULTI *3 $6 SWAPDB $1 0 $1 2 *2 $6 SELECT $1 2 *2 $3 DEL $18 __remoteback:state \
             *2 $6 SELECT $1 0 *2 $3 DEL $18 __remoteback:state \
             *4 $4 HSET $18 __remoteback:state $10 offset:t:1 $2 40 \
             *4 $4 HSET $18 __remoteback:state $10 offset:t:3 $1 8 *1 $4 EXEC "
        );
    }
}

//! Records as the applier queues them: decoded from their payload, their
//! own `MULTI`/`EXEC` wrapper dropped, checked against the last record of
//! their source applied (duplicates skipped, gaps reported).

use remoteback_protocol::codec::{protocol, string};
use remoteback_protocol::record::HEADER_BARRIER;
use remoteback_protocol::{Command, Format};

use super::Applier;
use crate::barrier::BarrierId;
use crate::error::{ApplyError, BadRecord, Unreadable};
use crate::receiver::Received;
use crate::state::{self, Position, SeqCheck};

/// A record ready to be queued.
#[derive(Debug)]
pub(super) struct Decoded {
    pub offset: i64,
    pub db: u32,
    pub time_ms: Option<u64>,
    /// Its commands, without a `MULTI`/`EXEC` wrapper; none for a
    /// duplicate (skipped) or a barrier copy passed.
    pub commands: Vec<Command>,
    /// Its source and place in the source's numbering (`rb-source`,
    /// `rb-run`, `rb-seq`), stored with it; `None` for older producers'
    /// records and for duplicates (nothing to store).
    pub seq: Option<(String, Position)>,
    /// A copy of this barrier (not a duplicate).
    pub barrier: Option<BarrierId>,
    /// Whether a command may touch the replay state ([`state::is_risky`]).
    pub risky: bool,
}

impl Decoded {
    /// Commands that change data (all but `SELECT`).
    pub fn writes(&self) -> usize {
        self.commands.iter().filter(|c| !c.is("SELECT")).count()
    }

    /// The record with nothing to apply, only its place to store (a
    /// barrier copy passed, a record the backup refused and skipped).
    pub fn without_commands(&self) -> Decoded {
        Decoded {
            offset: self.offset,
            db: self.db,
            time_ms: self.time_ms,
            commands: Vec::new(),
            seq: self.seq.clone(),
            barrier: None,
            risky: false,
        }
    }
}

impl Applier {
    /// Decodes records up to the first that cannot be, which comes back as
    /// the error. Duplicates come back without commands (counted); gaps
    /// are counted and logged.
    pub(super) fn decode_all(&self, batch: Vec<Received>) -> (Vec<Decoded>, Option<ApplyError>) {
        let mut out = Vec::with_capacity(batch.len());
        // The last place per source in this batch so far; before it, what
        // the backup stored (`link.seqs`).
        let mut latest: Vec<(String, Position)> = Vec::new();
        let mut duplicates = 0u64;
        for record in batch {
            match self.decode(record) {
                Ok(mut d) => {
                    if self.check(&mut d, &mut latest) == SeqCheck::Duplicate {
                        duplicates += 1;
                    }
                    out.push(d);
                }
                Err(e) => {
                    self.log_duplicates(duplicates, &out);
                    return (out, Some(e));
                }
            }
        }
        self.log_duplicates(duplicates, &out);
        (out, None)
    }

    fn log_duplicates(&self, n: u64, records: &[Decoded]) {
        if n > 0 {
            log::info!(
                "partition {}[{}]: skipped {n} of the records at offsets {}..={}: already applied \
                 (in Kafka twice: their rb-seq is at or before the last applied of their source)",
                self.link.topic(),
                self.link.partition(),
                records[0].offset,
                records[records.len() - 1].offset
            );
        }
    }

    /// The sequence check of one record, against `latest` and the stored
    /// state.
    fn check(&self, d: &mut Decoded, latest: &mut Vec<(String, Position)>) -> SeqCheck {
        let Some((source, at)) = &d.seq else {
            return SeqCheck::Next;
        };
        let found = latest.iter().position(|(s, _)| s == source);
        let last = match found {
            Some(i) => Some(latest[i].1),
            None => self.link.seqs.get(source).copied(),
        };
        let check = state::check_seq(last, *at);
        match check {
            SeqCheck::Duplicate => {
                self.stats.add_duplicate();
                d.commands.clear();
                d.barrier = None;
                d.risky = false;
                d.seq = None;
                return check;
            }
            SeqCheck::Gap { from, to } => {
                let (topic, partition) = (self.link.topic(), self.link.partition());
                let what = format!(
                    "records {from}..={to} of source {source} run {} on partition {topic}[{partition}] \
                     never arrived (the record at offset {} is number {})",
                    at.run, d.offset, at.n
                );
                log::error!(
                    "{what}: the backup misses the writes of {} records; resync needed (`remoteback sync`)",
                    to - from + 1
                );
                self.stats.add_gap(to - from + 1, what);
            }
            SeqCheck::Next => {}
        }
        match found {
            Some(i) => latest[i].1 = *at,
            None => latest.push((source.clone(), *at)),
        }
        check
    }

    fn decode(&self, record: Received) -> Result<Decoded, ApplyError> {
        let bad = |reason: Unreadable| {
            ApplyError::BadRecord(BadRecord {
                topic: self.link.topic().to_string(),
                partition: self.link.partition(),
                offset: record.offset,
                reason,
            })
        };
        if record.meta.heartbeat {
            if !record.payload.is_empty() {
                return Err(bad(Unreadable::Heartbeat(record.payload.len())));
            }
            // Nothing to apply and no number to check: its place is
            // stored with the batch, and its time is the lag's.
            self.stats.add_heartbeat();
            return Ok(Decoded {
                offset: record.offset,
                db: record.meta.db.unwrap_or(0),
                time_ms: record.meta.time_ms,
                commands: Vec::new(),
                seq: None,
                barrier: None,
                risky: false,
            });
        }
        let commands = match record.meta.format {
            Format::Protocol => {
                protocol::decode(&record.payload).map_err(|e| bad(Unreadable::Protocol(e)))?
            }
            Format::String => {
                string::decode(&record.payload).map_err(|e| bad(Unreadable::String(e)))?
            }
            Format::Row => return Err(bad(Unreadable::Row)),
        };
        // A sync's mark holds no commands; any other record holds some.
        if commands.is_empty() && record.meta.sync.is_none() {
            return Err(bad(Unreadable::Empty));
        }
        let db = record
            .meta
            .db
            .ok_or_else(|| bad(Unreadable::NoDatabase(record.meta.format)))?;
        let barrier = match record.meta.barrier {
            None => None,
            Some(b) => {
                let (Some(source), Some(run)) = (&record.meta.source, record.meta.run) else {
                    return Err(bad(Unreadable::Barrier(format!(
                        "{HEADER_BARRIER} {b} without rb-source and rb-run (a barrier is named by \
                         its source's run)"
                    ))));
                };
                let partition = self.link.partition();
                if u32::try_from(partition).map_or(true, |p| p >= b.partitions) {
                    return Err(bad(Unreadable::Barrier(format!(
                        "{HEADER_BARRIER} {b} on partition {partition}, outside the barrier's \
                         partitions 0..{}",
                        b.partitions
                    ))));
                }
                Some(BarrierId::new(source, run, b))
            }
        };
        let commands: Vec<Command> = commands
            .into_iter()
            .filter(|c| !c.is("MULTI") && !c.is("EXEC"))
            .collect();
        let risky = commands.iter().any(state::is_risky);
        let meta = record.meta;
        let seq = match (meta.source, meta.run, meta.seq) {
            (Some(source), Some(run), Some(n)) => Some((source, Position { run, n })),
            _ => None,
        };
        Ok(Decoded {
            offset: record.offset,
            db,
            time_ms: meta.time_ms,
            commands,
            seq,
            barrier,
            risky,
        })
    }
}

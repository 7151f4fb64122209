//! A partition's part at a barrier (see [`crate::barrier`] for the
//! protocol): arrive, wait for the others, apply (partition 0) or pass.

use std::time::Instant;

use bytes::Bytes;
use remoteback_protocol::Command;

use super::decode::Decoded;
use super::transaction::{Exec, Extra};
use super::Applier;
use crate::backup::{refused, BackupError};
use crate::barrier::{describe_wait, BarrierId, Place, Step, View, LOG_AFTER, LOG_EVERY, POLL};
use crate::error::ApplyError;
use crate::settings::OnApplyError;
use crate::state::{self, STATE_KEY};

/// How long a partition has waited at a barrier, for the log.
struct Waiting {
    since: Instant,
    logged: Option<Instant>,
    arrived: bool,
}

impl Applier {
    /// Applies a barrier copy: everything before it was committed.
    pub(super) async fn barrier(&mut self, mut copy: Decoded) -> Result<(), ApplyError> {
        let Some(id) = copy.barrier.clone() else {
            return self.apply_records(vec![copy]).await;
        };
        let mut waiting = Waiting {
            since: Instant::now(),
            logged: None,
            arrived: false,
        };
        loop {
            if self.link.backup().is_none() {
                let stored = self.link.connect().await?;
                let mut pending = vec![copy];
                self.resume(&mut pending, stored)?;
                match pending.pop() {
                    Some(c) => copy = c,
                    // Passed (or applied) before the connection was lost.
                    None => return Ok(()),
                }
                waiting.arrived = false;
            }
            match self.barrier_round(&copy, &id, &mut waiting).await {
                Ok(true) => {
                    self.link.progressed();
                    return Ok(());
                }
                Ok(false) => {}
                Err(ApplyError::Backup(e)) if e.is_retryable() => {
                    let doing = format!("at {id} (offset {})", copy.offset);
                    self.link.pause(&e, &doing).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One look at the backup's state and what follows from it; `true`
    /// once the copy is behind the partition.
    async fn barrier_round(
        &mut self,
        copy: &Decoded,
        id: &BarrierId,
        waiting: &mut Waiting,
    ) -> Result<bool, ApplyError> {
        let notify = self.barriers.notify_handle();
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let view = self.barrier_view(id).await?;
        let me = self.link.partition();
        match view.step(id, me) {
            Step::Pass => {
                self.apply_records(vec![copy.without_commands()]).await?;
                log::debug!(
                    "partition {}[{me}]: passed {id} at offset {}",
                    self.link.topic(),
                    copy.offset
                );
                return Ok(true);
            }
            Step::Apply => {
                let lost = view.lost(id);
                self.apply_barrier(copy, id).await?;
                if !lost.is_empty() {
                    let topic = self.link.topic();
                    let list: Vec<String> = lost.iter().map(|p| format!("{topic}[{p}]")).collect();
                    let what = format!(
                        "{id} never reached {} (their copies were lost: the proxy stopped while \
                         writing them); applied by {topic}[{me}] after those partitions had gone \
                         on",
                        list.join(", ")
                    );
                    log::error!("{what}: the backup may differ from the primary; resync needed");
                    self.stats.add_gap(lost.len() as u64, what);
                }
                self.barriers.notify();
                return Ok(true);
            }
            Step::Wait => {}
        }
        // Not arrived yet, or the arrival is gone from the state (emptied
        // by hand, or by a FLUSHALL among ROW bytes, without a reconnect):
        // without storing it again every partition would wait for ever.
        if !waiting.arrived || view.place(id, me as u32) != Place::At {
            if waiting.arrived {
                log::warn!(
                    "partition {}[{me}]: its arrival at {id} is gone from {STATE_KEY}; stored again",
                    self.link.topic()
                );
            }
            self.arrive(copy, id).await?;
            waiting.arrived = true;
            self.barriers.notify();
            // Perhaps it was the last to arrive.
            return Ok(false);
        }
        if let Some(bound) = self.ends.as_ref().and_then(crate::Ends::bound) {
            // The partitions this copy waits for stopped before reaching
            // theirs: they never will in this run.
            let missing = view.missing(id);
            let topic = self.link.topic();
            if !missing.is_empty() && missing.iter().all(|p| bound.has_reached(topic, *p as i32)) {
                return Err(ApplyError::PastBound {
                    next_offset: copy.offset,
                });
            }
        }
        let waited = waiting.since.elapsed();
        if waited >= LOG_AFTER && waiting.logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            waiting.logged = Some(Instant::now());
            log::info!(
                "{}",
                describe_wait(id, &view, self.link.topic(), me, waited)
            );
        }
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return Err(ApplyError::Stopped);
        }
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return Err(ApplyError::Stopped),
        }
        Ok(false)
    }

    /// `HMGET` of the barrier's done mark and every partition's arrival.
    async fn barrier_view(&mut self, id: &BarrierId) -> Result<View, ApplyError> {
        let topic = self.link.topic().to_string();
        let mut parts = vec![
            Bytes::from_static(b"HMGET"),
            Bytes::from_static(STATE_KEY.as_bytes()),
            state::barrier_field(&topic, &id.source).into(),
        ];
        parts.extend(
            (0..id.partitions).map(|p| Bytes::from(state::arrived_field(&topic, p as i32))),
        );
        parts.extend((0..id.partitions).map(|p| {
            Bytes::from(format!(
                "{}{}",
                state::seq_prefix(&topic, p as i32),
                id.source
            ))
        }));
        let reply = self
            .state_call(Command::new(parts), "reading the barrier state")
            .await?;
        View::parse(&reply, id.partitions).ok_or_else(|| {
            BackupError::BadReply {
                addr: self.link.addr(),
                reason: format!("unexpected reply reading the barrier state: {reply:?}"),
            }
            .into()
        })
    }

    /// Stores that the partition waits at `id`, with the copy's offset as
    /// its position (one `HSET`, atomic).
    async fn arrive(&mut self, copy: &Decoded, id: &BarrierId) -> Result<(), ApplyError> {
        let (topic, partition) = (self.link.topic().to_string(), self.link.partition());
        let command = Command::from_parts([
            "HSET".to_string(),
            STATE_KEY.to_string(),
            state::offset_field(&topic, partition),
            copy.offset.to_string(),
            state::arrived_field(&topic, partition),
            id.arrived_value(),
        ]);
        self.state_call(command, "storing the arrival at a barrier")
            .await?;
        self.link.position = Some(copy.offset);
        log::debug!(
            "partition {topic}[{partition}]: arrived at {id} (offset {})",
            copy.offset
        );
        Ok(())
    }

    /// Partition 0, everyone there: the command, the offset after the copy
    /// and the done mark, in one guarded transaction.
    async fn apply_barrier(&mut self, copy: &Decoded, id: &BarrierId) -> Result<(), ApplyError> {
        let extra = Extra {
            set: vec![(
                state::barrier_field(self.link.topic(), &id.source),
                id.at.encode(),
            )],
            guard: true,
        };
        let records = std::slice::from_ref(copy);
        match self.transaction_with(records, &extra).await? {
            (owners, Exec::Ran(results)) => {
                let refusals = self.ran(records, &owners, &results)?;
                for r in &refusals {
                    self.log_refusal(r);
                }
                if !refusals.is_empty() && self.policy.on_error == OnApplyError::Stop {
                    // The done mark went with what took effect: the other
                    // partitions go on, and so does a restart of this one.
                    self.stats.add_barrier();
                    let reasons: Vec<&str> = refusals.iter().map(|r| r.reason.as_str()).collect();
                    return Err(self.refused_error(
                        copy,
                        reasons.join("; "),
                        format!(
                            "{} of its {} commands took effect and were not undone (Redis has no \
                             rollback), the refused ones were not applied; the barrier is marked \
                             done and the stored offset is {} (after the record), so a restart \
                             goes on after it",
                            copy.writes() - refusals.len().min(copy.writes()),
                            copy.writes(),
                            copy.offset + 1
                        ),
                    ));
                }
            }
            (_, Exec::Aborted(reason)) => {
                self.stats.add_refused(1);
                if self.policy.on_error == OnApplyError::Stop {
                    return Err(self.refused_error(
                        copy,
                        reason,
                        format!(
                            "nothing of it took effect; the stored offset is {}, so a restart \
                             resumes at it (the other partitions wait at the barrier)",
                            copy.offset
                        ),
                    ));
                }
                log::error!(
                    "backup refused the barrier record at {}[{}]@{} ({id}): {reason}; skipped \
                     (on_apply_error = \"continue\")",
                    self.link.topic(),
                    self.link.partition(),
                    copy.offset
                );
                let skipped = copy.without_commands();
                let records = std::slice::from_ref(&skipped);
                match self.transaction_with(records, &extra).await? {
                    (owners, Exec::Ran(results)) => {
                        self.ran(records, &owners, &results)?;
                    }
                    (_, Exec::Aborted(reason)) => {
                        return Err(BackupError::BadReply {
                            addr: self.link.addr(),
                            reason: format!("storing the done mark of {id}: {reason}"),
                        }
                        .into())
                    }
                }
            }
        }
        self.stats.add_barrier();
        log::debug!(
            "partition {}[{}]: applied {id} at offset {}",
            self.link.topic(),
            self.link.partition(),
            copy.offset
        );
        Ok(())
    }

    /// `SELECT 0` and `command` on the partition's connection; its reply.
    async fn state_call(
        &mut self,
        command: Command,
        what: &str,
    ) -> Result<remoteback_protocol::frame::Frame, ApplyError> {
        let closed = self.link.addr();
        let Some(backup) = self.link.backup() else {
            return Err(BackupError::Closed(closed).into());
        };
        let mut bytes = Command::from_parts(["SELECT", "0"]).to_resp().to_vec();
        bytes.extend_from_slice(&command.to_resp());
        let sent = async {
            backup.send(&bytes).await?;
            let selected = backup.reply().await?;
            let reply = backup.reply().await?;
            Ok::<_, BackupError>((selected, reply))
        }
        .await;
        let (selected, reply) = match sent {
            Ok(r) => r,
            Err(e) => {
                self.link.disconnect();
                return Err(e.into());
            }
        };
        self.link.db = Some(0);
        for reply in [&selected, &reply] {
            if reply.is_error() {
                return Err(refused(&self.link.addr(), what, reply).into());
            }
        }
        Ok(reply)
    }
}

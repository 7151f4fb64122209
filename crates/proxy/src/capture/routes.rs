//! Which senders take which commands, decided once per command.
//!
//! When the request side reads a command, [`Routes::verdict`] looks it up
//! in the command table, finds its rewrite family and asks every sender's
//! filter whether it takes it. The [`Verdict`] travels with the command to
//! the reply side, so capture neither looks the command up again nor asks
//! the filters again; only a rewritten command, which is a new command, is
//! looked up and filtered on its own ([`Routes::rewritten`]).
//!
//! [`Routes::dispatch`] then turns a capture into records, encoding each
//! distinct selection of commands once, and hands them to the senders that
//! take them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use remoteback_protocol::commands::CommandSpec;
use remoteback_protocol::record::SyncMark;
use remoteback_protocol::{Command, Format, Record};

use super::encode;
use super::filter::Filter;
use super::rewrite::Rewrite;
use crate::sender::ack::{Delivery, Track};
use crate::sender::{Heartbeat, SenderSet, Senders};
use crate::settings::{ProxySettings, SenderSettings};
use crate::table::CommandTable;

/// What the proxy decided about a command when it read it.
/// The default is the verdict on a command no table knows and no sender
/// takes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Verdict {
    /// Its entry in the command table (the primary's, else the built-in
    /// one), if a table knows it. `'static`: tables are never freed (see
    /// `ServerTable::leak`), so holding one costs nothing on the hot path.
    pub spec: Option<&'static CommandSpec>,
    /// Its rewrite family, if replaying it verbatim could give another
    /// result (never in `ROW` format, which replicates requests as sent).
    pub rewrite: Option<Rewrite>,
    /// The senders whose filter takes it (none in `ROW` format).
    pub senders: SenderSet,
}

impl Verdict {
    /// Whether some sender takes the command: it is a write to capture.
    pub fn is_captured(&self) -> bool {
        !self.senders.is_empty()
    }
}

/// A command to replicate, with its table entry and the senders that take
/// it.
#[derive(Clone, Debug)]
pub(crate) struct Captured {
    pub command: Command,
    pub spec: Option<&'static CommandSpec>,
    pub senders: SenderSet,
}

impl Captured {
    /// `command` replicated as the client sent it, as its verdict says.
    pub fn verbatim(command: Command, verdict: &Verdict) -> Captured {
        Captured {
            command,
            spec: verdict.spec,
            senders: verdict.senders,
        }
    }
}

/// How captures become records: the format, this proxy's name in
/// `rb-source`, and each sender's filter in configuration order. Shared by
/// every session.
pub(crate) struct Routes {
    format: Format,
    source: Arc<str>,
    filters: Vec<Filter>,
    /// The command table commands are classified with.
    table: Arc<CommandTable>,
    /// This run of the proxy (`rb-run`): its start in ms since the epoch.
    run: u64,
    /// Added to connection numbers in `ROW` records (`rb-conn`), so that a
    /// connection id is never reused by a later run of the proxy.
    row_base: u64,
}

impl Routes {
    /// The routes of `settings`' senders (a `LogSender` takes what Redis
    /// replicates); `source` names this proxy in record headers.
    pub fn new(settings: &ProxySettings, source: &str, table: Arc<CommandTable>) -> Routes {
        let filters = settings
            .senders
            .iter()
            .map(|s| match s {
                SenderSettings::Log(_) => Filter::Writes,
                SenderSettings::Kafka(k) => k.filter.clone(),
            })
            .collect();
        let run = remoteback_protocol::record::now_ms();
        Routes {
            format: settings.message,
            source: source.into(),
            filters,
            table,
            run,
            row_base: encode::row_base(run),
        }
    }

    /// What the senders' heartbeats carry, every `every`; none for `ROW`,
    /// whose records name a client connection.
    pub fn heartbeat(&self, every: Duration) -> Option<Heartbeat> {
        (self.format != Format::Row).then(|| Heartbeat {
            format: self.format,
            source: self.source.clone(),
            run: self.run,
            every,
        })
    }

    /// Routes built directly, for tests.
    #[cfg(test)]
    pub fn from_parts(format: Format, source: &str, filters: Vec<Filter>) -> Routes {
        Routes {
            format,
            source: source.into(),
            filters,
            table: Arc::new(CommandTable::builtin()),
            run: 1,
            row_base: 0,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The one lookup of a client's command: its table entry, rewrite
    /// family and senders. A command no table knows is counted and taken
    /// as a write (see `CommandTable`).
    pub fn verdict(&self, command: &Command) -> Verdict {
        let spec = self.table.lookup(command.args());
        if self.format == Format::Row {
            return Verdict {
                spec,
                rewrite: None,
                senders: SenderSet::NONE,
            };
        }
        if spec.is_none() {
            self.table.note_unclassified(command.name());
        }
        Verdict {
            spec,
            rewrite: Rewrite::of(command.name()),
            senders: self.senders_for(command, spec),
        }
    }

    /// A command a rewrite produced, looked up and filtered on its own.
    pub fn rewritten(&self, command: Command) -> Captured {
        let spec = self.table.lookup(command.args());
        let senders = self.senders_for(&command, spec);
        Captured {
            command,
            spec,
            senders,
        }
    }

    fn senders_for(&self, command: &Command, spec: Option<&CommandSpec>) -> SenderSet {
        self.filters
            .iter()
            .enumerate()
            .filter(|(_, f)| f.accepts(command, spec))
            .fold(SenderSet::NONE, |set, (i, _)| set.with(i))
    }

    /// Hands `writes` (captured in database `db`, at `time_ms`) to every
    /// sender that takes some of them, as one record each; the deliveries a
    /// held reply must wait for go to `deliveries`. In a transaction a
    /// sender gets the `SELECT`s with the commands it takes, and nothing if
    /// it takes none.
    pub fn dispatch(
        &self,
        senders: &Senders,
        db: u32,
        writes: &[Captured],
        transaction: bool,
        time_ms: u64,
        deliveries: &mut Vec<Delivery>,
    ) {
        let track = Track::AsAcked;
        self.route(senders, db, writes, transaction, time_ms, track, deliveries);
    }

    /// Hands the sync's `writes` for one key (in database `db`) to every
    /// sender that takes some of them, as [`dispatch`](Routes::dispatch)
    /// does for a transaction, and returns every delivery, whatever `ack`
    /// says.
    pub fn dispatch_sync(
        &self,
        senders: &Senders,
        db: u32,
        writes: &[Captured],
        time_ms: u64,
    ) -> Vec<Delivery> {
        let mut deliveries = Vec::new();
        self.route(
            senders,
            db,
            writes,
            true,
            time_ms,
            Track::Always,
            &mut deliveries,
        );
        deliveries
    }

    /// Hands a sync's `mark` (a record of no commands, keyless: a barrier
    /// on every partition) to every sender, and returns its deliveries.
    pub fn dispatch_mark(&self, senders: &Senders, mark: SyncMark, time_ms: u64) -> Vec<Delivery> {
        let mut record = encode::commands(
            self.format,
            &self.source,
            self.run,
            0,
            std::iter::empty(),
            false,
            time_ms,
        );
        record.sync = Some(mark);
        let mut deliveries = Vec::new();
        senders.send_each(
            0..self.filters.len(),
            record,
            Track::Always,
            &mut deliveries,
        );
        deliveries
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &self,
        senders: &Senders,
        db: u32,
        writes: &[Captured],
        transaction: bool,
        time_ms: u64,
        track: Track,
        deliveries: &mut Vec<Delivery>,
    ) {
        if let [write] = writes {
            // One command: the same record for every sender that takes it.
            if !write.senders.is_empty() {
                let record = encode::commands(
                    self.format,
                    &self.source,
                    self.run,
                    db,
                    writes.iter(),
                    false,
                    time_ms,
                );
                let takers = (0..self.filters.len()).filter(|&i| write.senders.contains(i));
                senders.send_each(takers, record, track, deliveries);
            }
            return;
        }
        // Senders with the same selection share one encoding.
        let mut last: Option<(Vec<bool>, Record)> = None;
        for i in 0..self.filters.len() {
            let keep: Vec<bool> = writes
                .iter()
                .map(|w| w.command.is("SELECT") || w.senders.contains(i))
                .collect();
            let takes_some = writes
                .iter()
                .zip(&keep)
                .any(|(w, &k)| k && !w.command.is("SELECT"));
            if !takes_some {
                continue;
            }
            let record = match &last {
                Some((kept, record)) if *kept == keep => record.clone(),
                _ => {
                    let kept = writes.iter().zip(&keep).filter(|(_, &k)| k).map(|(w, _)| w);
                    let record = encode::commands(
                        self.format,
                        &self.source,
                        self.run,
                        db,
                        kept,
                        transaction,
                        time_ms,
                    );
                    last = Some((keep, record.clone()));
                    record
                }
            };
            senders.send_each(std::iter::once(i), record, track, deliveries);
        }
    }

    /// Hands raw client bytes of connection `conn` (`ROW`) to every sender.
    pub fn dispatch_row(
        &self,
        senders: &Senders,
        conn: u64,
        bytes: Bytes,
        close: bool,
        time_ms: u64,
    ) {
        senders.send_to_all(encode::row(
            &self.source,
            self.run,
            self.row_base + conn,
            bytes,
            close,
            time_ms,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::recorder::Recorder;

    /// Each record taken by `r`, its commands joined by " ; ".
    fn lines(r: &Recorder) -> Vec<String> {
        r.take().into_iter().map(|c| c.join(" ; ")).collect()
    }

    /// Sender 0 takes every write, sender 1 only `SET`.
    fn two_senders() -> (Routes, Senders, Recorder, Recorder) {
        let set_only = Filter::Names([b"SET".to_vec()].into_iter().collect());
        let routes = Routes::from_parts(Format::Protocol, "t", vec![Filter::Writes, set_only]);
        let (all, sets) = (Recorder::default(), Recorder::default());
        let senders = Senders::from_parts(vec![Box::new(all.clone()), Box::new(sets.clone())]);
        (routes, senders, all, sets)
    }

    fn writes(routes: &Routes, commands: &[&[&str]]) -> Vec<Captured> {
        commands
            .iter()
            .map(|parts| {
                let command = Command::from_parts(parts.iter());
                let verdict = routes.verdict(&command);
                Captured::verbatim(command, &verdict)
            })
            .collect()
    }

    #[test]
    fn each_sender_gets_what_its_filter_takes() {
        let (routes, senders, all, sets) = two_senders();
        let mut deliveries = Vec::new();
        let set = writes(&routes, &[&["SET", "a", "1"]]);
        routes.dispatch(&senders, 0, &set, false, 1, &mut deliveries);
        let incr = writes(&routes, &[&["INCR", "n"]]);
        routes.dispatch(&senders, 0, &incr, false, 1, &mut deliveries);
        assert_eq!(lines(&all), ["SET a 1", "INCR n"]);
        assert_eq!(lines(&sets), ["SET a 1"]);

        let transaction = writes(
            &routes,
            &[&["SET", "a", "2"], &["SELECT", "1"], &["INCR", "n"]],
        );
        routes.dispatch(&senders, 0, &transaction, true, 1, &mut deliveries);
        assert_eq!(lines(&all), ["MULTI ; SET a 2 ; SELECT 1 ; INCR n ; EXEC"]);
        assert_eq!(lines(&sets), ["MULTI ; SET a 2 ; SELECT 1 ; EXEC"]);

        // A sender that would get only SELECTs gets nothing.
        let no_set = writes(&routes, &[&["SELECT", "2"], &["INCR", "n"]]);
        routes.dispatch(&senders, 0, &no_set, true, 1, &mut deliveries);
        assert_eq!(lines(&all), ["MULTI ; SELECT 2 ; INCR n ; EXEC"]);
        assert!(lines(&sets).is_empty());
        assert!(deliveries.is_empty(), "no sender here holds replies");
    }

    #[test]
    fn a_verdict_is_decided_once_per_command() {
        let (routes, _, _, _) = two_senders();
        let v = routes.verdict(&Command::from_parts(["set", "k", "v", "EX", "10"]));
        assert_eq!(v.spec.map(|s| s.name()), Some("set"));
        assert_eq!(v.rewrite, Some(Rewrite::Set));
        assert!(v.senders.contains(0) && v.senders.contains(1));
        let v = routes.verdict(&Command::from_parts(["GET", "k"]));
        assert!(!v.is_captured() && v.rewrite.is_none());
        let v = routes.verdict(&Command::from_parts(["LPUSH", "l", "x"]));
        assert!(v.senders.contains(0) && !v.senders.contains(1));
        let row = Routes::from_parts(Format::Row, "t", vec![Filter::Writes]);
        let v = row.verdict(&Command::from_parts(["SET", "k", "v"]));
        assert!(v.spec.is_some() && v.rewrite.is_none() && !v.is_captured());
    }
}

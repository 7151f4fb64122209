//! A pack: consecutive records of one partition that travel as one Kafka
//! message.
//!
//! A broker's cost is per message (tansu here took about 4,400 messages a
//! second with remoteback's headers, and 190,000 commands a second packed
//! 500 to a message), so a `KafkaSender` gathers the records bound for a
//! partition while that partition's previous message is on its way, and
//! sends them together when it was acknowledged. When nothing is on its
//! way, a record leaves at once, alone: packing costs no latency when idle
//! and grows with the load.
//!
//! The payload stays what the format says: the records' commands one after
//! the other, in the order the primary answered them, each transaction in
//! its own `MULTI` ... `EXEC`. The headers are the first record's; where a
//! later record's database differs from the one selected at that point, a
//! `SELECT` precedes it, as inside a transaction's payload.

use bytes::{Bytes, BytesMut};
use remoteback_protocol::record::Barrier;
use remoteback_protocol::{Command, Format, Record};

/// Records gathered for one message, and what their delivery settles.
pub(super) struct Pack<R> {
    /// The first record, whose headers the message carries (its payload is
    /// in `payload`).
    head: Record,
    payload: Payload,
    /// The database selected after the commands so far.
    db_after: Option<u32>,
    /// Records packed (the pack's commands, as capture counts them).
    records: u64,
    /// The pack's share of the backlog.
    size: u64,
    /// Who waits for the records' delivery.
    reports: Vec<R>,
}

/// One record's bytes as they came (no copy), or several records' bytes
/// gathered.
enum Payload {
    One(Bytes),
    Many(BytesMut),
}

impl<R> Pack<R> {
    /// A pack of `record`, which weighs `size` in the backlog.
    pub fn new(mut record: Record, size: u64, report: Option<R>) -> Pack<R> {
        let payload = Payload::One(std::mem::take(&mut record.payload));
        Pack {
            db_after: record.db_after,
            head: record,
            payload,
            records: 1,
            size,
            reports: report.into_iter().collect(),
        }
    }

    /// A heartbeat: a message of no record, which nothing joins.
    pub fn heartbeat(record: Record) -> Pack<R> {
        debug_assert!(record.heartbeat);
        Pack {
            records: 0,
            ..Pack::new(record, 0, None)
        }
    }

    /// Whether this is a heartbeat.
    pub fn is_heartbeat(&self) -> bool {
        self.head.heartbeat
    }

    /// Whether `record` may join a pack at all: `ROW` records carry their
    /// connection in their headers, and a record without keys stays alone
    /// so that a restore to a point in time can stop right before a
    /// `FLUSHALL` (with several partitions it is a barrier anyway).
    pub fn packable(record: &Record) -> bool {
        record.format != Format::Row && record.placement.first_slot().is_some()
    }

    /// Payload bytes so far.
    pub fn bytes(&self) -> usize {
        match &self.payload {
            Payload::One(b) => b.len(),
            Payload::Many(b) => b.len(),
        }
    }

    /// Adds `record` (of the pack's format and partition) after the
    /// records so far, with a `SELECT` first when its database is not the
    /// one selected.
    pub fn push(&mut self, record: &Record, size: u64, report: Option<R>) {
        debug_assert_eq!(record.format, self.head.format);
        if let Payload::One(first) = &self.payload {
            let mut gathered = BytesMut::with_capacity((first.len() * 4).max(4096));
            gathered.extend_from_slice(first);
            self.payload = Payload::Many(gathered);
        }
        let Payload::Many(out) = &mut self.payload else {
            unreachable!("gathered above")
        };
        if let Some(db) = record.db.filter(|db| Some(*db) != self.db_after) {
            let select = Command::from_parts(["SELECT".as_bytes(), db.to_string().as_bytes()]);
            record.format.write_command(&select, out);
        }
        out.extend_from_slice(&record.payload);
        self.db_after = record.db_after;
        self.records += 1;
        self.size += size;
        self.reports.extend(report);
    }

    /// Records packed.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The pack's share of the backlog.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The message: the first record's metadata numbered `seq` (and the
    /// copy of `barrier`), the whole payload, and what its delivery
    /// settles.
    pub fn into_message(self, seq: u64, barrier: Option<Barrier>) -> (Record, Vec<R>) {
        let mut head = self.head;
        head.seq = seq;
        head.barrier = barrier;
        head.payload = match self.payload {
            Payload::One(b) => b,
            Payload::Many(b) => b.freeze(),
        };
        (head, self.reports)
    }
}

#[cfg(test)]
mod tests {
    use remoteback_protocol::codec::protocol;
    use remoteback_protocol::record::Placement;

    use super::*;

    fn record(format: Format, db: u32, db_after: u32, commands: &[&[&str]]) -> Record {
        let mut payload = BytesMut::new();
        for c in commands {
            format.write_command(&Command::from_parts(c.iter()), &mut payload);
        }
        Record {
            format,
            db: Some(db),
            db_after: Some(db_after),
            payload: payload.freeze(),
            key: Some("1".into()),
            placement: Placement::Slot(1),
            source: "h:1".into(),
            run: 7,
            seq: 0,
            barrier: None,
            time_ms: 100 + u64::from(db),
            conn: None,
            close: false,
            heartbeat: false,
            sync: None,
        }
    }

    fn words(payload: &Bytes) -> Vec<String> {
        protocol::decode(payload)
            .unwrap()
            .iter()
            .map(|c| {
                let args: Vec<String> = c
                    .args()
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.join(" ")
            })
            .collect()
    }

    #[test]
    fn a_lone_record_leaves_as_it_came() {
        let r = record(Format::Protocol, 0, 0, &[&["SET", "a", "1"]]);
        let expected = r.clone();
        let (message, reports) = Pack::new(r, 10, Some(1)).into_message(5, None);
        assert_eq!(message.payload, expected.payload);
        assert_eq!(message.seq, 5);
        assert_eq!(reports, vec![1]);
    }

    #[test]
    fn records_follow_each_other_and_select_their_database_when_it_changes() {
        let mut pack = Pack::new(
            record(Format::Protocol, 0, 0, &[&["SET", "a", "1"]]),
            10,
            None,
        );
        pack.push(
            &record(Format::Protocol, 0, 0, &[&["SET", "b", "2"]]),
            5,
            Some(1),
        );
        // A transaction that starts in db 3 and selects db 4.
        let tx = record(
            Format::Protocol,
            3,
            4,
            &[
                &["MULTI"],
                &["SET", "c", "3"],
                &["SELECT", "4"],
                &["SET", "d", "4"],
                &["EXEC"],
            ],
        );
        pack.push(&tx, 5, Some(2));
        pack.push(
            &record(Format::Protocol, 4, 4, &[&["SET", "e", "5"]]),
            5,
            None,
        );
        pack.push(
            &record(Format::Protocol, 0, 0, &[&["SET", "f", "6"]]),
            5,
            Some(3),
        );
        assert_eq!(pack.records(), 5);
        assert_eq!(pack.size(), 30);
        let (message, reports) = pack.into_message(9, None);
        assert_eq!(
            words(&message.payload),
            [
                "SET a 1", "SET b 2", "SELECT 3", "MULTI", "SET c 3", "SELECT 4", "SET d 4",
                "EXEC", "SET e 5", "SELECT 0", "SET f 6"
            ]
        );
        assert_eq!(message.db, Some(0), "the first record's database");
        assert_eq!(message.time_ms, 100, "the first record's time");
        assert_eq!(reports, vec![1, 2, 3]);
    }

    #[test]
    fn string_packs_are_lines() {
        let mut pack: Pack<()> =
            Pack::new(record(Format::String, 1, 1, &[&["SET", "a", "1"]]), 1, None);
        pack.push(
            &record(Format::String, 2, 2, &[&["SET", "b", "x y"]]),
            1,
            None,
        );
        let (message, _) = pack.into_message(1, None);
        assert_eq!(&message.payload[..], b"SET a 1\nSELECT 2\nSET b \"x y\"\n");
    }

    #[test]
    fn row_and_keyless_records_stay_alone() {
        let r = record(Format::Protocol, 0, 0, &[&["SET", "a", "1"]]);
        assert!(Pack::<()>::packable(&r));
        let keyless = Record {
            placement: Placement::Keyless,
            key: None,
            ..r.clone()
        };
        assert!(!Pack::<()>::packable(&keyless));
        let row = Record {
            format: Format::Row,
            placement: Placement::Connection(1),
            ..r
        };
        assert!(!Pack::<()>::packable(&row));
    }
}

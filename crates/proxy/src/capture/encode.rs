//! Building the Kafka record for a capture, in the configured format.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use remoteback_protocol::record::Placement;
use remoteback_protocol::{slot, Command, Format, Record};

use super::routes::Captured;

/// A record for `writes`, the commands one sender takes of a capture. A
/// transaction of more than one command is wrapped in `MULTI` ... `EXEC` so
/// that a consumer applies it atomically, as the primary did. The Kafka key
/// is the hash slot of the first key any of them names, found with the table
/// entries the writes carry; the placement holds the slots of all of them.
pub(crate) fn commands<'a>(
    format: Format,
    source: &Arc<str>,
    run: u64,
    db: u32,
    writes: impl Iterator<Item = &'a Captured> + Clone,
    transaction: bool,
    time_ms: u64,
) -> Record {
    let mut out = BytesMut::new();
    let wrap = transaction && writes.clone().nth(1).is_some();
    if wrap {
        format.write_command(&Command::from_parts(["MULTI"]), &mut out);
    }
    for w in writes.clone() {
        format.write_command(&w.command, &mut out);
    }
    if wrap {
        format.write_command(&Command::from_parts(["EXEC"]), &mut out);
    }
    let placement = placement(
        writes
            .clone()
            .filter(|w| !w.command.is("SELECT"))
            .map(|w| w.spec.map(|spec| spec.keys(w.command.args()))),
    );
    let db_after = match transaction {
        // The last SELECT queued among the writes is the one in effect.
        true => writes
            .clone()
            .filter(|w| w.command.is("SELECT"))
            .filter_map(|w| std::str::from_utf8(w.command.arg(1)?).ok()?.parse().ok())
            .last()
            .unwrap_or(db),
        false => db,
    };
    Record {
        format,
        db: Some(db),
        db_after: Some(db_after),
        payload: out.freeze(),
        key: placement.first_slot().map(|s| s.to_string()),
        placement,
        source: source.clone(),
        run,
        seq: 0,
        barrier: None,
        time_ms,
        conn: None,
        close: false,
        heartbeat: false,
        sync: None,
    }
}

/// The placement of commands naming `keys` (one list per command; `None`
/// for a command no table knows). A command without keys (`FLUSHALL`,
/// `EVAL` with none, a write whose keys cannot be found) makes the whole
/// record keyless, also inside a transaction with keyed commands: it takes
/// the ordering barrier (`ordering/plan.rs`), and its record must be one
/// too. Only a record whose keys are in more than one slot allocates.
fn placement<'a>(keys: impl Iterator<Item = Option<Vec<&'a Bytes>>>) -> Placement {
    let mut first = None;
    let mut others: Vec<u16> = Vec::new();
    for command in keys {
        let command = match command {
            Some(keys) if !keys.is_empty() => keys,
            _ => return Placement::Keyless,
        };
        for key in command {
            let s = slot::hash_slot(key);
            match first {
                None => first = Some(s),
                Some(f) if f == s => {}
                Some(_) if others.contains(&s) => {}
                Some(_) => others.push(s),
            }
        }
    }
    match first {
        None => Placement::Keyless,
        Some(f) if others.is_empty() => Placement::Slot(f),
        Some(f) => {
            others.insert(0, f);
            Placement::Slots(others.into_boxed_slice())
        }
    }
}

/// A `ROW` record: bytes as the client sent them on connection `conn`.
/// Keyed by connection, so one connection's bytes stay in one partition, in
/// order.
pub(crate) fn row(
    source: &Arc<str>,
    run: u64,
    conn: u64,
    bytes: Bytes,
    close: bool,
    time_ms: u64,
) -> Record {
    Record {
        format: Format::Row,
        db: None,
        db_after: None,
        payload: bytes,
        key: Some(conn.to_string()),
        placement: Placement::Connection(conn),
        source: source.clone(),
        run,
        seq: 0,
        barrier: None,
        time_ms,
        conn: Some(conn),
        close,
        heartbeat: false,
        sync: None,
    }
}

/// The `rb-conn` base of a proxy run started at `start_ms`: the start time
/// followed by six digits of connection number (`1795632173803000042` is
/// connection 42 of the run started at 1795632173803 ms).
pub(crate) fn row_base(start_ms: u64) -> u64 {
    start_ms.saturating_mul(1_000_000)
}

#[cfg(test)]
mod tests {
    use remoteback_protocol::codec::protocol;
    use remoteback_protocol::commands;

    use super::*;
    use crate::sender::SenderSet;

    fn writes(cmds: &[&[&str]]) -> Vec<Captured> {
        cmds.iter()
            .map(|parts| {
                let command = Command::from_parts(parts.iter());
                Captured {
                    spec: commands::lookup(command.args()),
                    command,
                    senders: SenderSet::NONE.with(0),
                }
            })
            .collect()
    }

    #[test]
    fn transaction_is_wrapped_and_keyed_by_first_key() {
        let w = writes(&[&["SET", "foo", "1"], &["INCR", "bar"]]);
        let r = commands(Format::Protocol, &"h:1".into(), 1, 2, w.iter(), true, 5);
        let decoded = protocol::decode(&r.payload).unwrap();
        assert_eq!(decoded.len(), 4);
        assert!(decoded[0].is("MULTI") && decoded[3].is("EXEC"));
        assert_eq!(r.key.as_deref(), Some("12182"));
        assert_eq!(r.placement, Placement::Slots(vec![12182, 5061].into()));
        assert_eq!(r.db, Some(2));
    }

    #[test]
    fn single_command_in_string_format() {
        let command = Command::from_parts([&b"set"[..], b"a b", b"\0\xff"]);
        let w = [Captured {
            spec: commands::lookup(command.args()),
            command,
            senders: SenderSet::NONE.with(0),
        }];
        let r = commands(Format::String, &"h:1".into(), 1, 0, w.iter(), false, 5);
        assert_eq!(&r.payload[..], b"set \"a b\" \"\\x00\\xff\"\n");
    }

    #[test]
    fn keys_of_one_slot_need_no_list() {
        let w = writes(&[&["MSET", "{u}a", "1", "{u}b", "2"], &["DEL", "{u}c"]]);
        let r = commands(Format::Protocol, &"h:1".into(), 1, 0, w.iter(), true, 5);
        assert!(matches!(r.placement, Placement::Slot(_)));
    }

    #[test]
    fn a_keyless_command_in_a_transaction_makes_it_a_barrier() {
        let w = writes(&[
            &["SET", "a", "1"],
            &["SELECT", "2"],
            &["FLUSHALL"],
            &["SET", "a", "2"],
        ]);
        let r = commands(Format::Protocol, &"h:1".into(), 1, 0, w.iter(), true, 5);
        assert_eq!(r.placement, Placement::Keyless);
        assert_eq!(r.placement.partition(4), None);
        let w = writes(&[&["SET", "a", "1"], &["SELECT", "2"], &["SET", "a", "2"]]);
        let r = commands(Format::Protocol, &"h:1".into(), 1, 0, w.iter(), true, 5);
        assert!(
            matches!(r.placement, Placement::Slot(_)),
            "SELECT names no key and is no write"
        );
    }

    #[test]
    fn keyless_commands_have_no_key() {
        let w = writes(&[&["FLUSHALL"]]);
        let r = commands(Format::Protocol, &"h:1".into(), 1, 0, w.iter(), false, 5);
        assert_eq!(r.key, None);
        assert_eq!(r.placement, Placement::Keyless);
    }
}

//! Building the Kafka record for a capture, in the configured format.

use bytes::{Bytes, BytesMut};
use remoteback_protocol::codec::{protocol, string};
use remoteback_protocol::{commands, slot, Command, Format, Record};

/// A record for `commands` (already filtered). A transaction of more than
/// one command is wrapped in `MULTI` ... `EXEC` so that a consumer applies it
/// atomically, as the primary did.
pub fn for_commands(
    format: Format,
    source: &str,
    db: u32,
    commands: &[Command],
    transaction: bool,
    time_ms: u64,
) -> Record {
    let mut out = BytesMut::new();
    let wrap = transaction && commands.len() > 1;
    let multi = [Command::from_parts(["MULTI"])];
    let exec = [Command::from_parts(["EXEC"])];
    let parts: [&[Command]; 3] = if wrap {
        [&multi, commands, &exec]
    } else {
        [&[], commands, &[]]
    };
    for part in parts {
        match format {
            Format::String => string::encode(part, &mut out),
            Format::Protocol | Format::Row => protocol::encode(part, &mut out),
        }
    }
    Record {
        format,
        db: Some(db),
        payload: out.freeze(),
        key: first_slot(commands).map(|s| s.to_string()),
        source: source.to_string(),
        seq: 0,
        time_ms,
        conn: None,
        close: false,
    }
}

/// A `ROW` record: bytes as the client sent them on connection `conn`.
/// Keyed by connection, so one connection's bytes stay in one partition, in
/// order.
pub fn for_row(source: &str, conn: u64, bytes: Bytes, close: bool, time_ms: u64) -> Record {
    Record {
        format: Format::Row,
        db: None,
        payload: bytes,
        key: Some(conn.to_string()),
        source: source.to_string(),
        seq: 0,
        time_ms,
        conn: Some(conn),
        close,
    }
}

/// The hash slot of the first key any of `commands` names.
fn first_slot(cmds: &[Command]) -> Option<u16> {
    cmds.iter().find_map(|c| {
        let spec = commands::lookup(c.args())?;
        spec.first_key(c.args()).map(|k| slot::hash_slot(k))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_is_wrapped_and_keyed_by_first_key() {
        let cmds = vec![
            Command::from_parts(["SET", "foo", "1"]),
            Command::from_parts(["INCR", "bar"]),
        ];
        let r = for_commands(Format::Protocol, "h:1", 2, &cmds, true, 5);
        let decoded = protocol::decode(&r.payload).unwrap();
        assert_eq!(decoded.len(), 4);
        assert!(decoded[0].is("MULTI") && decoded[3].is("EXEC"));
        assert_eq!(r.key.as_deref(), Some("12182"));
        assert_eq!(r.db, Some(2));
    }

    #[test]
    fn single_command_in_string_format() {
        let cmds = vec![Command::from_parts([&b"set"[..], b"a b", b"\0\xff"])];
        let r = for_commands(Format::String, "h:1", 0, &cmds, false, 5);
        assert_eq!(&r.payload[..], b"set \"a b\" \"\\x00\\xff\"\n");
    }

    #[test]
    fn keyless_commands_have_no_key() {
        let r = for_commands(
            Format::Protocol,
            "h:1",
            0,
            &[Command::from_parts(["FLUSHALL"])],
            false,
            5,
        );
        assert_eq!(r.key, None);
    }
}

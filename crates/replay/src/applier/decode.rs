//! Records as the applier queues them: decoded from their payload, their
//! own `MULTI`/`EXEC` wrapper dropped.

use remoteback_protocol::codec::{protocol, string};
use remoteback_protocol::{Command, Format};

use super::Applier;
use crate::error::{ApplyError, BadRecord, Unreadable};
use crate::receiver::Received;

/// A record ready to be queued.
#[derive(Debug)]
pub(super) struct Decoded {
    pub offset: i64,
    pub db: u32,
    pub time_ms: Option<u64>,
    /// Its commands, without a `MULTI`/`EXEC` wrapper.
    pub commands: Vec<Command>,
}

impl Decoded {
    /// Commands that change data (all but `SELECT`).
    pub fn writes(&self) -> usize {
        self.commands.iter().filter(|c| !c.is("SELECT")).count()
    }
}

impl Applier {
    /// Decodes records up to the first that cannot be, which comes back as
    /// the error.
    pub(super) fn decode_all(&self, batch: Vec<Received>) -> (Vec<Decoded>, Option<ApplyError>) {
        let mut out = Vec::with_capacity(batch.len());
        for record in batch {
            match self.decode(&record) {
                Ok(d) => out.push(d),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    fn decode(&self, record: &Received) -> Result<Decoded, ApplyError> {
        let bad = |reason: Unreadable| {
            ApplyError::BadRecord(BadRecord {
                topic: self.link.topic().to_string(),
                partition: self.link.partition(),
                offset: record.offset,
                reason,
            })
        };
        let commands = match record.meta.format {
            Format::Protocol => {
                protocol::decode(&record.payload).map_err(|e| bad(Unreadable::Protocol(e)))?
            }
            Format::String => {
                string::decode(&record.payload).map_err(|e| bad(Unreadable::String(e)))?
            }
            Format::Row => return Err(bad(Unreadable::Row)),
        };
        if commands.is_empty() {
            return Err(bad(Unreadable::Empty));
        }
        let db = record
            .meta
            .db
            .ok_or_else(|| bad(Unreadable::NoDatabase(record.meta.format)))?;
        Ok(Decoded {
            offset: record.offset,
            db,
            time_ms: record.time_ms(),
            commands: commands
                .into_iter()
                .filter(|c| !c.is("MULTI") && !c.is("EXEC"))
                .collect(),
        })
    }
}

//! A sender for unit tests: it keeps every record it is given.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use remoteback_protocol::codec::protocol;
use remoteback_protocol::Record;

use super::ack::{Delivery, Track};
use super::{FlushError, Sender};

/// Keeps the records it is sent; clones share them.
#[derive(Clone, Default)]
pub(crate) struct Recorder(Arc<Mutex<Vec<Record>>>);

impl Sender for Recorder {
    fn send(&self, record: Record, _: Track) -> Option<Delivery> {
        self.0.lock().unwrap().push(record);
        None
    }
    fn flush(&self, _: Duration) -> Result<(), FlushError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "Recorder".into()
    }
}

impl Recorder {
    /// The records kept since the last call: each a `PROTOCOL` payload's
    /// commands, one space-separated line per command.
    pub fn take(&self) -> Vec<Vec<String>> {
        self.0
            .lock()
            .unwrap()
            .drain(..)
            .map(|r| {
                protocol::decode(&r.payload)
                    .expect("a PROTOCOL payload")
                    .iter()
                    .map(|c| String::from_utf8_lossy(&c.args().join(&b' ')).into_owned())
                    .collect()
            })
            .collect()
    }
}

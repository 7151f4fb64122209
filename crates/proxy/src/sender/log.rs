//! `LogSender`: captured writes written through the log, for debugging and
//! for operators who want an audit trail of what was replicated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use remoteback_protocol::codec::{protocol, string};
use remoteback_protocol::{Format, Record};

use super::ack::{Delivery, Track};
use super::{FlushError, Sender};
use crate::settings::LogSenderSettings;

/// Logs each record under the configured target and level. The payload is
/// shown in the `STRING` grammar whatever the format, so any byte is
/// readable.
pub struct LogSender {
    target: String,
    level: log::Level,
    seq: AtomicU64,
}

impl LogSender {
    pub fn new(settings: &LogSenderSettings) -> Self {
        LogSender {
            target: settings.logger.clone(),
            level: settings.level,
            seq: AtomicU64::new(0),
        }
    }
}

impl Sender for LogSender {
    fn send(&self, record: Record, _: Track) -> Option<Delivery> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if !log::log_enabled!(target: &self.target, self.level) {
            return None;
        }
        let text = render(&record);
        match record.conn {
            Some(conn) => {
                log::log!(target: &self.target, self.level, "seq={seq} conn={conn} {text}")
            }
            None => log::log!(
                target: &self.target,
                self.level,
                "seq={seq} db={} {text}",
                record.db.unwrap_or(0)
            ),
        }
        None
    }

    fn flush(&self, _timeout: Duration) -> Result<(), FlushError> {
        log::logger().flush();
        Ok(())
    }

    fn describe(&self) -> String {
        format!("LogSender(logger={}, level={})", self.target, self.level)
    }
}

fn render(record: &Record) -> String {
    let mut out = bytes::BytesMut::new();
    match record.format {
        Format::String => out.extend_from_slice(&record.payload),
        Format::Protocol => match protocol::decode(&record.payload) {
            Ok(cmds) => string::encode(&cmds, &mut out),
            Err(e) => return format!("<{e}>"),
        },
        Format::Row => {
            let raw = remoteback_protocol::Command::new(vec![record.payload.clone()]);
            string::encode_command(&raw, &mut out);
        }
    }
    String::from_utf8_lossy(&out)
        .trim_end()
        .replace('\n', " ; ")
}

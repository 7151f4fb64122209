//! Where the replay keeps its progress: in the backup itself.
//!
//! Each applied batch also sets `__remoteback:offset:<topic>:<partition>` (in
//! database 0) to the offset of the next record to apply, inside the same
//! `MULTI`/`EXEC`. The data and the position therefore change together or
//! not at all, which is what makes the replay exactly-once without Kafka
//! transactions or a consumer-group commit.

use remoteback_protocol::frame::Frame;
use remoteback_protocol::Command;

use crate::backup::{refused, Backup, BackupError};

pub use remoteback_protocol::record::KEY_PREFIX;

/// The key holding the next offset of `topic`/`partition`.
pub fn key(topic: &str, partition: i32) -> String {
    format!("{KEY_PREFIX}offset:{topic}:{partition}")
}

/// The stored next offset, if any.
pub async fn read(
    backup: &mut Backup,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, BackupError> {
    backup
        .send(&Command::from_parts(["SELECT", "0"]).to_resp())
        .await?;
    let selected = backup.reply().await?;
    let reply = backup
        .call(&Command::from_parts([
            "GET".as_bytes(),
            key(topic, partition).as_bytes(),
        ]))
        .await?;
    if selected.is_error() || reply.is_error() {
        let error = if selected.is_error() {
            &selected
        } else {
            &reply
        };
        return Err(refused(backup.addr(), "reading the stored offset", error));
    }
    match reply {
        Frame::Null => Ok(None),
        Frame::Bulk(b) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| BackupError::BadReply {
                addr: backup.addr().to_string(),
                reason: format!(
                    "{} holds {:?}, not an offset",
                    key(topic, partition),
                    String::from_utf8_lossy(&b)
                ),
            }),
        other => Err(BackupError::BadReply {
            addr: backup.addr().to_string(),
            reason: format!("unexpected reply reading the offset: {other:?}"),
        }),
    }
}

/// Stores `next` as the partition's position, outside any transaction (for
/// positions no data change goes with: the start of `start = "latest"`, a
/// skipped or refused record, a `ROW` batch).
pub async fn write(
    backup: &mut Backup,
    topic: &str,
    partition: i32,
    next: i64,
) -> Result<(), BackupError> {
    let mut bytes = Command::from_parts(["SELECT", "0"]).to_resp().to_vec();
    bytes.extend_from_slice(&store(topic, partition, next).to_resp());
    backup.send(&bytes).await?;
    let selected = backup.reply().await?;
    let set = backup.reply().await?;
    for (what, reply) in [("SELECT 0", &selected), ("storing the offset", &set)] {
        if reply.is_error() {
            return Err(refused(backup.addr(), what, reply));
        }
    }
    Ok(())
}

/// The command that stores `next` as the partition's position.
pub fn store(topic: &str, partition: i32, next: i64) -> Command {
    Command::from_parts([
        "SET".as_bytes(),
        key(topic, partition).as_bytes(),
        next.to_string().as_bytes(),
    ])
}

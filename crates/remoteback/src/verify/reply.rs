//! Reading replies, and what an error reply means during a comparison.
//!
//! A key can change between two steps of its comparison (a write between
//! `TYPE` and `HSCAN` turns it into a string): the step's `WRONGTYPE` reply
//! means the key is in flight, not that verify cannot run. Any other error
//! reply (no permission, an unknown command) stops the verification.

use anyhow::anyhow;
use redis::Value;

/// Why a comparison stopped before its verdict.
#[derive(Debug)]
pub enum Halt {
    /// The key changed while it was compared; a later round looks again.
    Changed,
    /// Verify cannot go on.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Halt {
    fn from(e: anyhow::Error) -> Halt {
        Halt::Failed(e)
    }
}

pub type Step<T> = Result<T, Halt>;

/// `reply`, or why it is an error reply; `command` names it in messages.
pub fn ok<'a>(reply: &'a Value, command: &str) -> Step<&'a Value> {
    match reply {
        Value::ServerError(e) if e.code() == "WRONGTYPE" => Err(Halt::Changed),
        Value::ServerError(e) => Err(Halt::Failed(anyhow!("{command}: {e}"))),
        other => Ok(other),
    }
}

/// Like [`ok`] where no reply can mean a change (an error stops).
pub fn must<'a>(reply: &'a Value, command: &str) -> anyhow::Result<&'a Value> {
    match reply {
        Value::ServerError(e) => Err(anyhow!("{command}: {e}")),
        other => Ok(other),
    }
}

/// The bytes of a string reply.
pub fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        Value::Okay => Some(b"OK"),
        _ => None,
    }
}

/// An integer reply, or a string reply holding one.
pub fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        other => bytes(other).and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()),
    }
}

pub fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// The replies of a pipeline, `n` of them expected.
pub fn expect_len(replies: &[Value], n: usize, what: &str) -> anyhow::Result<()> {
    if replies.len() == n {
        Ok(())
    } else {
        Err(anyhow!(
            "{what}: {} replies for {n} commands",
            replies.len()
        ))
    }
}

/// A reply as text for a description.
pub fn text(value: &Value) -> String {
    match value {
        Value::Nil => "nil".to_string(),
        Value::Int(i) => i.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Array(items) | Value::Set(items) => {
            let items: Vec<String> = items.iter().map(text).collect();
            format!("[{}]", items.join(", "))
        }
        other => match bytes(other) {
            Some(b) => super::escape::preview(b),
            None => format!("{other:?}"),
        },
    }
}

/// A cursor-paged reply (`SCAN`, `HSCAN`, ...): the next cursor and the
/// items.
pub fn page<'a>(reply: &'a Value, command: &str) -> Step<(&'a [u8], &'a [Value])> {
    let parts = array(ok(reply, command)?);
    match parts {
        Some([cursor, items]) => match (bytes(cursor), array(items)) {
            (Some(cursor), Some(items)) => Ok((cursor, items)),
            _ => Err(Halt::Failed(anyhow!(
                "{command}: unexpected reply {reply:?}"
            ))),
        },
        _ => Err(Halt::Failed(anyhow!(
            "{command}: unexpected reply {reply:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_in_either_form() {
        assert_eq!(int(&Value::Int(-2)), Some(-2));
        assert_eq!(int(&Value::BulkString(b"17".to_vec())), Some(17));
        assert_eq!(int(&Value::Nil), None);
    }
}

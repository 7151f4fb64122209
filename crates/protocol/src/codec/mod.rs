//! The three payload formats a record can carry (`message` in the config).

pub mod protocol;
pub mod string;

use std::fmt;
use std::str::FromStr;

/// The format of a record's payload, chosen with `message = ...`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// The raw bytes a client sent, unparsed and unfiltered, per connection.
    Row,
    /// redis-cli style quoted words, one command a line (see [`string`]).
    String,
    /// RESP multi-bulk commands, concatenated (see [`protocol`]).
    #[default]
    Protocol,
}

impl Format {
    /// The name used in configuration files and in the `rb-format` header.
    pub fn name(self) -> &'static str {
        match self {
            Format::Row => "ROW",
            Format::String => "STRING",
            Format::Protocol => "PROTOCOL",
        }
    }

    /// Appends `command` to a payload of this format (`ROW` payloads are
    /// the client's bytes, so commands are written to them as `PROTOCOL`).
    pub fn write_command(self, command: &crate::Command, out: &mut bytes::BytesMut) {
        match self {
            Format::String => string::encode_command(command, out),
            Format::Protocol | Format::Row => command.write_resp(out),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    /// Parses `ROW`, `STRING` or `PROTOCOL`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "ROW" => Ok(Format::Row),
            "STRING" => Ok(Format::String),
            "PROTOCOL" => Ok(Format::Protocol),
            _ => Err(format!(
                "unknown message format `{s}`, expected one of ROW, STRING, PROTOCOL"
            )),
        }
    }
}

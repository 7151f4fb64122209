//! [`ConfigError`]: what is wrong with a configuration file, and where.

use std::fmt;
use std::io;

/// A configuration file that could not be read, parsed or accepted.
///
/// Displayed on one line as `FILE:LINE: KEY: REASON`, for example
/// `proxy.toml:3: bindport: expected an integer 1-65535, got "abc"`. The line
/// is left out when there is none (a required table missing from the file, an
/// unreadable file), and so is the key when the error is not about one (TOML
/// syntax errors, which carry a column instead: `proxy.toml:3:9: ...`).
#[derive(Debug)]
pub struct ConfigError {
    origin: String,
    line: Option<usize>,
    column: Option<usize>,
    path: String,
    reason: String,
}

impl ConfigError {
    /// An error about the key (or table) at `path`, found at `line`.
    pub(super) fn at(
        origin: &str,
        line: Option<usize>,
        path: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError {
            origin: origin.to_owned(),
            line,
            column: None,
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The file could not be read at all.
    pub(super) fn io(origin: &str, err: &io::Error) -> Self {
        ConfigError {
            reason: format!("cannot read the configuration file: {err}"),
            ..ConfigError::at(origin, None, "", "")
        }
    }

    /// The file is not valid TOML; `err` is toml's own report.
    pub(super) fn syntax(origin: &str, text: &str, err: &toml::de::Error) -> Self {
        let (line, column) = match err.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError {
            line,
            column,
            ..ConfigError::at(
                origin,
                None,
                "",
                format!("invalid TOML: {}", err.message().trim_end()),
            )
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.reason)
    }
}

/// The reading error, when there is one, is part of the message rather than
/// a source, so that printing the error chain does not repeat it.
impl std::error::Error for ConfigError {}

/// The 1-based line and column of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = 1 + before.bytes().filter(|&b| b == b'\n').count();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, 1 + before[line_start..].chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_line_and_key() {
        let e = ConfigError::at("proxy.toml", Some(3), "bindport", "expected an integer");
        assert_eq!(e.to_string(), "proxy.toml:3: bindport: expected an integer");
    }

    #[test]
    fn display_without_line_or_key() {
        let e = ConfigError::at("replay.toml", None, "", "the [redis] table is missing");
        assert_eq!(e.to_string(), "replay.toml: the [redis] table is missing");
    }

    #[test]
    fn io_error_names_file() {
        let io = io::Error::new(io::ErrorKind::NotFound, "no such file");
        let e = ConfigError::io("/etc/remoteback/proxy.toml", &io);
        assert_eq!(
            e.to_string(),
            "/etc/remoteback/proxy.toml: cannot read the configuration file: no such file"
        );
    }

    #[test]
    fn line_and_column() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 3)); // after the two-byte `é`
        assert_eq!(line_column(text, 100), (3, 1));
    }
}

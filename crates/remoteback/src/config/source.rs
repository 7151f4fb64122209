//! One configuration file's text and its parsed, position-carrying TOML tree,
//! with typed reads that report errors at the key's line.

use std::borrow::Cow;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{line_column, ConfigError};

/// A key as written in the file, with its position.
pub(super) type Key<'i> = Spanned<Cow<'i, str>>;
/// A value as written in the file, with its position.
pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// The file being read: its name for messages and its text for line numbers.
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub origin: &'a str,
    pub text: &'a str,
}

impl<'a> Source<'a> {
    /// Parses the whole file; syntax errors come back located.
    pub fn parse(self) -> Result<DeTable<'a>, ConfigError> {
        DeTable::parse(self.text)
            .map(Spanned::into_inner)
            .map_err(|e| ConfigError::syntax(self.origin, self.text, &e))
    }

    /// The 1-based line a span starts on; `None` for the document root, whose
    /// span is empty.
    pub fn line(self, span: &Range<usize>) -> Option<usize> {
        if span.is_empty() && span.start == 0 {
            return None;
        }
        Some(line_column(self.text, span.start).0)
    }

    /// An error about `path`, located where `span` starts.
    pub fn error(self, span: &Range<usize>, path: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::at(self.origin, self.line(span), path, reason)
    }

    /// An error about `path`, which has no position (e.g. a missing table).
    pub fn error_unlocated(self, path: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::at(self.origin, None, path, reason)
    }

    /// `value` as a string, or an error saying `expected` (e.g. "a topic name").
    pub fn string<'v>(
        self,
        path: &str,
        value: &'v Value<'_>,
        expected: &str,
    ) -> Result<&'v str, ConfigError> {
        match value.get_ref() {
            DeValue::String(s) => Ok(s),
            _ => Err(self.unexpected(path, value, expected)),
        }
    }

    /// `value` as a non-empty string without surrounding whitespace.
    pub fn word(
        self,
        path: &str,
        value: &Value<'_>,
        expected: &str,
    ) -> Result<String, ConfigError> {
        let s = self.string(path, value, expected)?;
        if s.trim().is_empty() || s.trim() != s {
            return Err(self.unexpected(path, value, expected));
        }
        Ok(s.to_owned())
    }

    /// `value` as an integer within `range`. A string holding a decimal
    /// integer is accepted too, as older configurations sometimes quote them.
    pub fn integer(
        self,
        path: &str,
        value: &Value<'_>,
        range: std::ops::RangeInclusive<i64>,
        expected: &str,
    ) -> Result<i64, ConfigError> {
        let n = match value.get_ref() {
            DeValue::Integer(_) => integer_of(value.get_ref()),
            DeValue::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match n {
            Some(n) if range.contains(&n) => Ok(n),
            _ => Err(self.unexpected(path, value, expected)),
        }
    }

    /// "`path`: expected X, got Y".
    pub fn unexpected(self, path: &str, value: &Value<'_>, expected: &str) -> ConfigError {
        self.error(
            &value.span(),
            path,
            format!("expected {expected}, got {}", describe(value.get_ref())),
        )
    }
}

/// The integer a TOML integer value stands for, if it fits an `i64`.
pub(super) fn integer_of(value: &DeValue<'_>) -> Option<i64> {
    match value {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

/// How a value reads in an error message: strings quoted, numbers as
/// written, other kinds named.
pub(super) fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("{s:?}"),
        DeValue::Integer(i) => i.to_string(),
        DeValue::Float(f) => format!("a float ({f})"),
        DeValue::Boolean(b) => format!("a boolean ({b})"),
        DeValue::Datetime(d) => format!("a date-time ({d})"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// A table's entries in the order they appear in the file (the parsed table
/// itself is sorted by key).
pub(super) fn in_file_order<'t, 'i>(table: &'t DeTable<'i>) -> Vec<(&'t Key<'i>, &'t Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

/// `table.key`, quoting keys that are not bare TOML keys.
pub(super) fn join(table: &str, key: &str) -> String {
    let key = display_key(key);
    if table.is_empty() {
        key.into_owned()
    } else {
        format!("{table}.{key}")
    }
}

/// A key as it would be written in TOML: bare when it can be, else quoted.
pub(super) fn display_key(key: &str) -> Cow<'_, str> {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(quote(key))
    }
}

/// A TOML basic string holding `s`.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DeTable<'_> {
        Source {
            origin: "t.toml",
            text,
        }
        .parse()
        .unwrap()
    }

    #[test]
    fn integers_in_every_radix() {
        let doc = parse("a = 0x1F\nb = 1_000\nc = -7\nd = +5\ne = 0o17\nf = 0b101\n");
        let n = |k: &str| integer_of(doc.get(k).unwrap().get_ref());
        assert_eq!(n("a"), Some(31));
        assert_eq!(n("b"), Some(1000));
        assert_eq!(n("c"), Some(-7));
        assert_eq!(n("d"), Some(5));
        assert_eq!(n("e"), Some(15));
        assert_eq!(n("f"), Some(5));
    }

    #[test]
    fn entries_come_in_file_order() {
        let doc = parse("zeta = 1\nalpha = 2\n[mid]\nx = 1\n");
        let keys: Vec<&str> = in_file_order(&doc)
            .into_iter()
            .map(|(k, _)| k.get_ref().as_ref())
            .collect();
        assert_eq!(keys, ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn keys_are_quoted_when_needed() {
        assert_eq!(join("", "bindport"), "bindport");
        assert_eq!(join("sender[0]", "linger-ms"), "sender[0].linger-ms");
        assert_eq!(
            join("receiver", "bootstrap.servers"),
            "receiver.\"bootstrap.servers\""
        );
        assert_eq!(quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
    }

    #[test]
    fn describes_values() {
        let doc =
            parse("s = \"abc\"\ni = 0x10\nf = 1.5\nb = true\na = []\nt = {}\nd = 1979-05-27\n");
        let d = |k: &str| describe(doc.get(k).unwrap().get_ref());
        assert_eq!(d("s"), "\"abc\"");
        assert_eq!(d("i"), "0x10");
        assert_eq!(d("f"), "a float (1.5)");
        assert_eq!(d("b"), "a boolean (true)");
        assert_eq!(d("a"), "an array");
        assert_eq!(d("t"), "a table");
        assert_eq!(d("d"), "a date-time (1979-05-27)");
    }
}

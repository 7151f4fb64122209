//! Kafka client properties: the keys of a sender or receiver table that are
//! not remoteback's own, passed to librdkafka.
//!
//! A key's `-` become `.` (`bootstrap-servers` → `bootstrap.servers`); keys
//! already dotted (quoted, `"bootstrap.servers"`) are kept as they are.
//! Strings, integers and booleans are rendered as the strings librdkafka
//! takes; any other kind of value is an error.

use std::ops::Range;

use toml::de::DeValue;

use super::source::{describe, display_key, integer_of, join, Key, Source, Value};
use super::suggest;
use super::ConfigError;

/// The property every client needs.
pub(super) const BOOTSTRAP_SERVERS: &str = "bootstrap.servers";

/// The producer property remoteback turns on unless told otherwise.
const IDEMPOTENCE: &str = "enable.idempotence";

/// Properties of the original system's JVM Kafka client that librdkafka does
/// not know and remoteback has no use for (records are always bytes).
/// Configurations written for it carry them; they are dropped with a warning.
const JVM_ONLY: &[&str] = &[
    "key.serializer",
    "value.serializer",
    "key.deserializer",
    "value.deserializer",
];

/// The Kafka name of a configuration key.
pub(super) fn property_name(key: &str) -> String {
    key.replace('-', ".")
}

/// Kafka properties collected from one table, in file order.
pub(super) struct Properties {
    /// The table's path (`sender[0]`, `receiver`), for messages.
    table: String,
    /// (Kafka name, value, key as written, where).
    entries: Vec<(String, String, String, Range<usize>)>,
}

impl Properties {
    pub fn new(table: &str) -> Self {
        Properties {
            table: table.to_owned(),
            entries: Vec::new(),
        }
    }

    /// Adds `key = value` as a Kafka property.
    pub fn add(
        &mut self,
        src: Source<'_>,
        key: &Key<'_>,
        value: &Value<'_>,
    ) -> Result<(), ConfigError> {
        let written = key.get_ref().as_ref();
        let path = join(&self.table, written);
        let name = property_name(written);
        let rendered = render(src, &path, &name, value)?;
        if JVM_ONLY.contains(&name.as_str()) {
            log::warn!(
                "{}:{}: {path}: ignoring `{name}`: librdkafka has no such property \
                 and remoteback always sends bytes",
                src.origin,
                src.line(&key.span()).unwrap_or(1),
            );
            return Ok(());
        }
        if let Some((_, _, first, span)) = self.entries.iter().find(|e| e.0 == name) {
            return Err(src.error(
                &key.span(),
                &path,
                format!(
                    "Kafka property `{name}` is given twice (first as `{}` on line {})",
                    display_key(first),
                    src.line(span).unwrap_or(1),
                ),
            ));
        }
        self.entries
            .push((name, rendered, written.to_owned(), key.span()));
        Ok(())
    }

    /// Fails unless `name` was given with a non-empty value. `label` names the
    /// table (`sender[0] (KafkaSender)`), located at `table_span`; `example`
    /// shows a value.
    pub fn require(
        &self,
        src: Source<'_>,
        label: &str,
        table_span: &Range<usize>,
        name: &str,
        example: &str,
    ) -> Result<(), ConfigError> {
        let dashed = name.replace('.', "-");
        match self.entries.iter().find(|e| e.0 == name) {
            Some((_, value, written, span)) if value.trim().is_empty() => Err(src.error(
                span,
                &join(&self.table, written),
                format!("expected a non-empty string, such as {dashed} = {example:?}"),
            )),
            Some(_) => Ok(()),
            None => {
                let written: Vec<&str> = self.entries.iter().map(|e| e.2.as_str()).collect();
                let hint = suggest::closest(&dashed, &written)
                    .or_else(|| suggest::closest(name, &written))
                    .map(|c| format!(" (is `{c}` a misspelling of it?)"))
                    .unwrap_or_default();
                Err(src.error(
                    table_span,
                    label,
                    format!(
                        "Kafka property `{dashed}` is required{hint}; \
                         add for example {dashed} = {example:?}"
                    ),
                ))
            }
        }
    }

    /// Checks a producer's delivery settings against the idempotent producer
    /// remoteback turns on by default. Values the idempotent producer cannot
    /// have (`acks` other than `all`, `retries = 0`, more than 5 requests in
    /// flight), as configurations written for the original system carry,
    /// turn it off with one warning saying what that gives up; the same
    /// values with `enable.idempotence = true` written out are an error.
    pub fn producer_guarantee(&mut self, src: Source<'_>, label: &str) -> Result<(), ConfigError> {
        let mut conflicts = Vec::new();
        for (name, value, written, span) in &self.entries {
            let value = value.trim();
            let conflict = match name.as_str() {
                "acks" | "request.required.acks" => {
                    !matches!(value.to_ascii_lowercase().as_str(), "all" | "-1")
                }
                "retries" | "message.send.max.retries" => value == "0",
                "max.in.flight" | "max.in.flight.requests.per.connection" => {
                    value.parse::<i64>().is_ok_and(|n| n > 5)
                }
                _ => false,
            };
            if conflict {
                conflicts.push((
                    format!("{} = {value:?}", display_key(written)),
                    span.clone(),
                ));
            }
        }
        let Some((_, span)) = conflicts.first().cloned() else {
            return Ok(());
        };
        let listed = conflicts
            .iter()
            .map(|(c, _)| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let idempotence = self.entries.iter().find(|e| e.0 == IDEMPOTENCE);
        match idempotence {
            Some((_, value, written, span)) if value.trim().eq_ignore_ascii_case("true") => {
                return Err(src.error(
                    span,
                    &join(&self.table, written),
                    format!(
                        "`{} = true` needs acks = \"all\", retries of at least 1 and at most \
                         5 requests in flight, but the table sets {listed}; remove \
                         `{}` (the replay then skips duplicated records and reports lost \
                         ones) or those values",
                        display_key(written),
                        display_key(written),
                    ),
                ));
            }
            Some(_) => {}
            None => {
                log::warn!(
                    "{}:{}: {label}: {listed}: the idempotent producer is off, so Kafka may hold \
                     a record twice or, after a failed send, lose or reorder one; the replay \
                     skips duplicates by rb-seq and reports gaps as \"resync needed\"",
                    src.origin,
                    src.line(&span).unwrap_or(1),
                );
                self.default(IDEMPOTENCE, "false");
            }
        }
        Ok(())
    }

    /// Sets `name` to `value` unless it was given.
    pub fn default(&mut self, name: &str, value: &str) {
        if !self.entries.iter().any(|e| e.0 == name) {
            let span = 0..0;
            self.entries
                .push((name.to_owned(), value.to_owned(), name.to_owned(), span));
        }
    }

    pub fn into_vec(self) -> Vec<(String, String)> {
        self.entries
            .into_iter()
            .map(|(name, value, _, _)| (name, value))
            .collect()
    }
}

/// The string librdkafka gets for a value.
fn render(
    src: Source<'_>,
    path: &str,
    name: &str,
    value: &Value<'_>,
) -> Result<String, ConfigError> {
    let hint = match value.get_ref() {
        DeValue::String(s) => return Ok(s.to_string()),
        DeValue::Boolean(b) => return Ok(b.to_string()),
        DeValue::Integer(_) => match integer_of(value.get_ref()) {
            Some(n) => return Ok(n.to_string()),
            None => " (it does not fit a 64-bit integer)".to_owned(),
        },
        DeValue::Float(f) => format!("; write it as a string (\"{f}\") if that is what you mean"),
        DeValue::Array(_) => {
            "; list several values in one comma-separated string (\"a,b\")".to_owned()
        }
        DeValue::Table(_) => format!(
            "; a dotted name must be quoted (\"{name}.…\" = …) or written with dashes \
             ({}-… = …)",
            name.replace('.', "-")
        ),
        DeValue::Datetime(_) => "; write it as a string".to_owned(),
    };
    Err(src.error(
        &value.span(),
        path,
        format!(
            "Kafka property `{name}` must be a string, integer or boolean, got {}{hint}",
            describe(value.get_ref())
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(text: &str) -> Result<Vec<(String, String)>, String> {
        let src = Source {
            origin: "k.toml",
            text,
        };
        let doc = src.parse().unwrap();
        let mut props = Properties::new("sender[0]");
        for (k, v) in super::super::source::in_file_order(&doc) {
            props.add(src, k, v).map_err(|e| e.to_string())?;
        }
        Ok(props.into_vec())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn renames_and_renders_in_file_order() {
        let got = collect(
            "bootstrap-servers = 'k1:9092,k2:9092'\n\
             acks = 'all'\n\
             linger-ms = 5\n\
             enable-idempotence = true\n\
             \"message.max.bytes\" = 0x100000\n\
             retries = -1\n\
             log_level = 6\n",
        )
        .unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("bootstrap.servers", "k1:9092,k2:9092"),
                ("acks", "all"),
                ("linger.ms", "5"),
                ("enable.idempotence", "true"),
                ("message.max.bytes", "1048576"),
                ("retries", "-1"),
                ("log_level", "6"),
            ])
        );
    }

    #[test]
    fn jvm_serializers_are_dropped() {
        let got = collect(
            "key-serializer = 'org.apache.kafka.common.serialization.ByteArraySerializer'\n\
             acks = 1\n",
        )
        .unwrap();
        assert_eq!(got, pairs(&[("acks", "1")]));
    }

    #[test]
    fn other_kinds_of_value_are_errors() {
        for (text, got, hint) in [
            ("\nlinger-ms = 0.5", "got a float (0.5)", "(\"0.5\")"),
            (
                "\nbootstrap-servers = ['a', 'b']",
                "got an array",
                "comma-separated",
            ),
            (
                "\nbootstrap.servers = 'a'",
                "got a table",
                "\"bootstrap.…\"",
            ),
            (
                "\nsession-timeout = 1979-05-27",
                "got a date-time",
                "string",
            ),
        ] {
            let e = collect(text).unwrap_err();
            assert!(e.starts_with("k.toml:2: sender[0]."), "{e}");
            assert!(e.contains("must be a string, integer or boolean"), "{e}");
            assert!(e.contains(got), "{e}");
            assert!(e.contains(hint), "{e}");
        }
    }

    #[test]
    fn the_same_property_twice_is_an_error() {
        let e = collect("bootstrap-servers = 'a'\n\"bootstrap.servers\" = 'b'\n").unwrap_err();
        assert_eq!(
            e,
            "k.toml:2: sender[0].\"bootstrap.servers\": Kafka property `bootstrap.servers` \
             is given twice (first as `bootstrap-servers` on line 1)"
        );
    }

    #[test]
    fn required_and_default_properties() {
        let src = Source {
            origin: "k.toml",
            text: "x",
        };
        let mut props = Properties::new("receiver");
        props.default("group.id", "remoteback-replay");
        let e = props
            .require(src, "receiver", &(0..1), BOOTSTRAP_SERVERS, "kafka1:9092")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "k.toml:1: receiver: Kafka property `bootstrap-servers` is required; \
             add for example bootstrap-servers = \"kafka1:9092\""
        );
        assert_eq!(
            props.into_vec(),
            pairs(&[("group.id", "remoteback-replay")])
        );
    }

    #[test]
    fn a_misspelled_required_property_is_pointed_out() {
        let text = "[t]\nbootstrap_servers = 'a'\n";
        let src = Source {
            origin: "k.toml",
            text,
        };
        let doc = src.parse().unwrap();
        let table = doc.get("t").unwrap();
        let mut props = Properties::new("t");
        if let DeValue::Table(t) = table.get_ref() {
            for (k, v) in super::super::source::in_file_order(t) {
                props.add(src, k, v).unwrap();
            }
        }
        let e = props
            .require(src, "t", &table.span(), BOOTSTRAP_SERVERS, "k:9092")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("k.toml:1: t: Kafka property `bootstrap-servers` is required (is `bootstrap_servers` a misspelling of it?)"), "{e}");
    }
}

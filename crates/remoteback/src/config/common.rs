//! Keys both files share: `message`, `worker`, and Redis addresses.

use remoteback_protocol::{Format, Worker};

use super::source::{describe, Source, Value};

pub(super) const DEFAULT_REDIS_IP: &str = "127.0.0.1";
pub(super) const DEFAULT_REDIS_PORT: u16 = 6379;

/// `message = ROW | STRING | PROTOCOL`, in any case.
pub(super) fn message(
    src: Source<'_>,
    path: &str,
    value: &Value<'_>,
) -> Result<Format, super::ConfigError> {
    const EXPECTED: &str = "one of ROW, STRING, PROTOCOL (any case)";
    src.string(path, value, EXPECTED)?
        .parse()
        .map_err(|_| src.unexpected(path, value, EXPECTED))
}

/// `worker = coroutine | thread`, in any case; the original system's `rx`
/// means `coroutine`.
pub(super) fn worker(
    src: Source<'_>,
    path: &str,
    value: &Value<'_>,
) -> Result<Worker, super::ConfigError> {
    const EXPECTED: &str = "one of coroutine, thread";
    let name = src.string(path, value, EXPECTED)?;
    match name.to_ascii_lowercase().as_str() {
        "coroutine" => Ok(Worker::Coroutine),
        "thread" => Ok(Worker::Thread),
        "rx" => {
            log::warn!(
                "{}:{}: {path} = {}: `rx` is the original system's name for the \
                 coroutine worker; using coroutine (write worker = \"coroutine\" to silence this)",
                src.origin,
                src.line(&value.span()).unwrap_or(1),
                describe(value.get_ref()),
            );
            Ok(Worker::Coroutine)
        }
        _ => Err(src.unexpected(path, value, EXPECTED)),
    }
}

/// An IP address or host name to bind or connect to.
pub(super) fn host(
    src: Source<'_>,
    path: &str,
    value: &Value<'_>,
) -> Result<String, super::ConfigError> {
    src.word(path, value, "an IP address or host name")
}

/// A TCP port.
pub(super) fn port(
    src: Source<'_>,
    path: &str,
    value: &Value<'_>,
) -> Result<u16, super::ConfigError> {
    let n = src.integer(path, value, 1..=65535, "an integer 1-65535")?;
    Ok(u16::try_from(n).expect("checked range"))
}

/// One of a few names, in any case (`on_backlog_full = "block"`).
pub(super) fn choice<T: Copy>(
    src: Source<'_>,
    path: &str,
    value: &Value<'_>,
    options: &[(&str, T)],
) -> Result<T, super::ConfigError> {
    let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
    let expected = format!("one of {}", names.join(", "));
    let given = src.string(path, value, &expected)?;
    options
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(given))
        .map(|(_, v)| *v)
        .ok_or_else(|| src.unexpected(path, value, &expected))
}

/// A size in bytes: an integer, or a string with one of Redis's units
/// (`k` = 1000, `kb` = 1024, `m`, `mb`, `g`, `gb`, any case), as in
/// `redis.conf`. At least 1.
pub(super) fn bytes(
    src: Source<'_>,
    path: &str,
    value: &Value<'_>,
) -> Result<u64, super::ConfigError> {
    const EXPECTED: &str =
        "a size in bytes >= 1: an integer, or a string such as \"64mb\" (units k, kb, m, mb, g, gb)";
    let size = match value.get_ref() {
        toml::de::DeValue::String(s) => parse_size(s),
        _ => src
            .integer(path, value, 1..=i64::MAX, EXPECTED)
            .ok()
            .map(|n| n.unsigned_abs()),
    };
    size.filter(|n| *n >= 1)
        .ok_or_else(|| src.unexpected(path, value, EXPECTED))
}

pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let unit: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(unit)
}

/// `HOST:PORT` to listen on, such as `"127.0.0.1:9121"` or `"[::1]:9121"`.
pub(super) fn listen_address(
    src: Source<'_>,
    path: &str,
    value: &Value<'_>,
) -> Result<String, super::ConfigError> {
    const EXPECTED: &str = "an address to listen on, HOST:PORT (e.g. \"127.0.0.1:9121\")";
    let text = src.word(path, value, EXPECTED)?;
    let ok = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok {
        return Err(src.unexpected(path, value, EXPECTED));
    }
    Ok(text)
}

/// A string that may be left empty: empty means not set.
pub(super) fn optional(
    src: Source<'_>,
    path: &str,
    value: &Value<'_>,
    expected: &str,
) -> Result<Option<String>, super::ConfigError> {
    let s = src.string(path, value, expected)?;
    Ok((!s.is_empty()).then(|| s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T>(
        text: &str,
        read: fn(Source<'_>, &str, &Value<'_>) -> Result<T, super::super::ConfigError>,
    ) -> Result<T, String> {
        let src = Source {
            origin: "c.toml",
            text,
        };
        let doc = src.parse().unwrap();
        read(src, "k", doc.get("k").unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn message_in_any_case() {
        assert_eq!(check("k = 'row'", message), Ok(Format::Row));
        assert_eq!(check("k = 'String'", message), Ok(Format::String));
        assert_eq!(check("k = 'PROTOCOL'", message), Ok(Format::Protocol));
        assert_eq!(
            check("\nk = 'xml'", message),
            Err(
                "c.toml:2: k: expected one of ROW, STRING, PROTOCOL (any case), got \"xml\"".into()
            )
        );
    }

    #[test]
    fn worker_names() {
        assert_eq!(check("k = 'coroutine'", worker), Ok(Worker::Coroutine));
        assert_eq!(check("k = 'THREAD'", worker), Ok(Worker::Thread));
        assert_eq!(check("k = 'rx'", worker), Ok(Worker::Coroutine));
        assert_eq!(check("k = 'Rx'", worker), Ok(Worker::Coroutine));
        assert_eq!(
            check("k = 'fiber'", worker),
            Err("c.toml:1: k: expected one of coroutine, thread, got \"fiber\"".into())
        );
    }

    #[test]
    fn ports() {
        assert_eq!(check("k = 6379", port), Ok(6379));
        assert_eq!(check("k = '6380'", port), Ok(6380));
        for bad in ["k = 0", "k = 65536", "k = -1", "k = 'abc'", "k = 1.5"] {
            let e = check(bad, port).unwrap_err();
            assert!(
                e.starts_with("c.toml:1: k: expected an integer 1-65535, got "),
                "{e}"
            );
        }
    }

    #[test]
    fn sizes_in_redis_units() {
        assert_eq!(check("k = 1024", bytes), Ok(1024));
        assert_eq!(check("k = '64mb'", bytes), Ok(64 * 1024 * 1024));
        assert_eq!(check("k = '1K'", bytes), Ok(1000));
        assert_eq!(check("k = '2 GB'", bytes), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(check("k = '512'", bytes), Ok(512));
        for bad in [
            "k = 0",
            "k = -1",
            "k = '10 parsecs'",
            "k = 'mb'",
            "k = 1.5",
            "k = '0kb'",
        ] {
            let e = check(bad, bytes).unwrap_err();
            assert!(e.contains("expected a size in bytes >= 1"), "{bad}: {e}");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            check("k = '127.0.0.1:9121'", listen_address),
            Ok("127.0.0.1:9121".to_owned())
        );
        assert!(check("k = '[::1]:9121'", listen_address).is_ok());
        for bad in [
            "k = '127.0.0.1'",
            "k = ':9121'",
            "k = 'h:0'",
            "k = 'h:99999'",
            "k = 9121",
        ] {
            assert!(check(bad, listen_address).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(check("k = '10.0.0.1'", host), Ok("10.0.0.1".to_owned()));
        assert_eq!(
            check("k = 'redis.local'", host),
            Ok("redis.local".to_owned())
        );
        assert!(check("k = ''", host).is_err());
        assert!(check("k = ' a '", host).is_err());
        assert!(check("k = 10", host).is_err());
    }
}

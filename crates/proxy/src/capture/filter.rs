//! Which captured commands a sender receives (`filter` in a `[[sender]]`).

use std::collections::HashSet;

use remoteback_protocol::commands::CommandSpec;
use remoteback_protocol::Command;

/// Longest command name looked up in a name filter; longer names match none.
const MAX_NAME: usize = 64;

/// Which commands a sender receives.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Filter {
    /// Every command Redis itself would replicate (its `write` flag, scripts,
    /// functions), decided per subcommand; and every command no table knows
    /// (`spec` is `None`), which may write: if it did not take effect,
    /// capture drops it with its error reply.
    #[default]
    Writes,
    /// Exactly these command names, upper case.
    Names(HashSet<Vec<u8>>),
}

impl Filter {
    /// Whether `command` (with its table entry, if Redis knows it) passes.
    pub fn accepts(&self, command: &Command, spec: Option<&CommandSpec>) -> bool {
        match self {
            Filter::Writes => spec.is_none_or(|s| s.replicates() || loads_scripts(s)),
            Filter::Names(names) => {
                let name = command.name();
                if name.len() > MAX_NAME {
                    return false;
                }
                let mut upper = [0u8; MAX_NAME];
                for (u, c) in upper.iter_mut().zip(name) {
                    *u = c.to_ascii_uppercase();
                }
                names.contains(&upper[..name.len()])
            }
        }
    }
}

/// `SCRIPT LOAD` and `SCRIPT FLUSH`. Redis 7 does not propagate them (its
/// replicas receive scripts as their effects), but a backup that clients
/// fail over to must hold the scripts they call with `EVALSHA`.
fn loads_scripts(spec: &CommandSpec) -> bool {
    matches!(spec.name(), "script|load" | "script|flush")
}

#[cfg(test)]
mod tests {
    use super::*;
    use remoteback_protocol::commands;

    fn accepts(f: &Filter, parts: &[&str]) -> bool {
        let c = Command::from_parts(parts.iter());
        f.accepts(&c, commands::lookup(c.args()))
    }

    #[test]
    fn default_filter_takes_writes_only() {
        let f = Filter::Writes;
        assert!(accepts(&f, &["set", "a", "a"]));
        assert!(accepts(&f, &["LPUSH", "l", "x"]));
        assert!(accepts(&f, &["FLUSHALL"]));
        assert!(!accepts(&f, &["get", "a"]));
        assert!(!accepts(&f, &["PING"]));
        // Unknown to the table: taken, in case it writes.
        assert!(accepts(&f, &["NOSUCHCOMMAND", "x"]));
        assert!(accepts(&f, &["JSON.SET", "k", "$", "1"]));
        assert!(accepts(&f, &["SCRIPT", "LOAD", "return 1"]));
        assert!(accepts(&f, &["script", "flush", "async"]));
        assert!(!accepts(&f, &["SCRIPT", "EXISTS", "abc"]));
        assert!(!accepts(&f, &["SCRIPT"]));
    }

    #[test]
    fn name_filter_is_case_insensitive() {
        let f = Filter::Names([b"SET".to_vec(), b"DEL".to_vec()].into_iter().collect());
        assert!(accepts(&f, &["set", "a", "a"]));
        assert!(accepts(&f, &["Del", "a"]));
        assert!(!accepts(&f, &["LPUSH", "l", "x"]));
        assert!(!accepts(&f, &["get", "a"]));
    }
}

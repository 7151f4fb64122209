//! A client command: its arguments as bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// One Redis command as a client sent it: the name and arguments, binary-safe.
///
/// Arguments are `Bytes` slices of the buffer the command was read from, so
/// parsing a pipelined burst copies nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    args: Vec<Bytes>,
}

impl Command {
    /// A command from its arguments; the first is the command name.
    pub fn new(args: Vec<Bytes>) -> Self {
        Command { args }
    }

    /// A command built from anything byte-like (tests, rewrites).
    pub fn from_parts<I, A>(parts: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        Command {
            args: parts
                .into_iter()
                .map(|a| Bytes::copy_from_slice(a.as_ref()))
                .collect(),
        }
    }

    pub fn args(&self) -> &[Bytes] {
        &self.args
    }

    pub fn into_args(self) -> Vec<Bytes> {
        self.args
    }

    /// The command name as sent (any case); empty for an empty command.
    pub fn name(&self) -> &[u8] {
        self.args.first().map(|a| &a[..]).unwrap_or(b"")
    }

    /// Whether the command name equals `upper` ignoring ASCII case.
    /// `upper` must be upper case.
    pub fn is(&self, upper: &str) -> bool {
        self.name().eq_ignore_ascii_case(upper.as_bytes())
    }

    /// The argument at `i` (0 is the name), if present.
    pub fn arg(&self, i: usize) -> Option<&Bytes> {
        self.args.get(i)
    }

    /// The length of this command as a RESP multi-bulk: a buffer of
    /// exactly this size freezes into `Bytes` without allocating again.
    pub fn resp_len(&self) -> usize {
        let args: usize = self
            .args
            .iter()
            .map(|a| header_len(a.len()) + a.len() + 2)
            .sum();
        header_len(self.args.len()) + args
    }

    /// Appends this command as a RESP multi-bulk (`*N\r\n$len\r\narg\r\n...`).
    pub fn write_resp(&self, out: &mut BytesMut) {
        out.reserve(self.resp_len());
        put_header(out, b'*', self.args.len());
        for a in &self.args {
            put_header(out, b'$', a.len());
            out.put_slice(a);
            out.put_slice(b"\r\n");
        }
    }

    /// This command as a RESP multi-bulk.
    pub fn to_resp(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.write_resp(&mut out);
        out.freeze()
    }
}

/// The length of a `*N\r\n` or `$N\r\n` header.
fn header_len(n: usize) -> usize {
    let digits = n.checked_ilog10().map_or(1, |d| d as usize + 1);
    1 + digits + 2
}

fn put_header(out: &mut BytesMut, kind: u8, n: usize) {
    out.put_u8(kind);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_multibulk_binary_safe() {
        let c = Command::from_parts([&b"SET"[..], b"", b"\r\n\0"]);
        assert_eq!(
            &c.to_resp()[..],
            b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$3\r\n\r\n\0\r\n"
        );
        assert!(c.is("SET"));
        assert!(!c.is("GET"));
    }

    #[test]
    fn resp_len_is_the_encoded_length() {
        let long = vec![b'v'; 12_345];
        for parts in [
            vec![&b"PING"[..]],
            vec![&b"SET"[..], b"", b"\r\n\0"],
            vec![&b"SET"[..], b"k", &long[..]],
            vec![&b"x"[..]; 10],
            vec![&b"y"[..]; 100],
        ] {
            let c = Command::from_parts(parts);
            assert_eq!(c.resp_len(), c.to_resp().len());
        }
    }
}

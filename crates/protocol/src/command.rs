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

    /// Appends this command as a RESP multi-bulk (`*N\r\n$len\r\narg\r\n...`).
    pub fn write_resp(&self, out: &mut BytesMut) {
        let size: usize = self.args.iter().map(|a| a.len() + 16).sum();
        out.reserve(size + 16);
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
}

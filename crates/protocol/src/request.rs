//! Client requests: RESP multi-bulk commands and inline commands.
//!
//! The proxy forwards the client's bytes unchanged, so parsing only has to
//! find where each command ends and what its arguments are. Arguments of
//! multi-bulk commands are returned as ranges into the buffer, so the caller
//! can slice them out of one frozen `Bytes` without copying.
//!
//! Errors mirror Redis's own (`src/networking.c`): the message after
//! `-ERR Protocol error: ` is the same text Redis would send, so a client sees
//! no difference between talking to Redis and talking to the proxy.

use std::ops::Range;

use bytes::Bytes;

use crate::Command;

/// Longest inline command or multi-bulk header line Redis accepts (64 KiB).
pub const MAX_INLINE: usize = 64 * 1024;
/// Most arguments in one multi-bulk command (Redis: 1024 * 1024).
pub const MAX_ARGS: i64 = 1024 * 1024;
/// Largest bulk argument (Redis's default `proto-max-bulk-len`, 512 MiB).
pub const MAX_BULK: i64 = 512 * 1024 * 1024;

/// A request the client got wrong. The connection is closed after replying
/// `-ERR Protocol error: <reason>`, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

/// The arguments of one parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// Multi-bulk: byte ranges of each argument, relative to the start of the
    /// buffer handed to [`parse`].
    Ranges(Vec<Range<usize>>),
    /// Inline: arguments after unquoting (they need not be contiguous bytes).
    Inline(Vec<Bytes>),
}

/// One request found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// How many bytes the request occupies.
    pub len: usize,
    /// Its arguments; empty for requests Redis ignores (`*0`, blank lines).
    pub args: Args,
}

impl Parsed {
    /// The command, with multi-bulk arguments sliced out of `frame`, which
    /// must hold the bytes `parse` saw, starting at the same offset.
    pub fn command(self, frame: &Bytes) -> Command {
        match self.args {
            Args::Ranges(ranges) => {
                Command::new(ranges.into_iter().map(|r| frame.slice(r)).collect())
            }
            Args::Inline(args) => Command::new(args),
        }
    }

    /// Whether Redis would ignore this request without replying.
    pub fn is_empty(&self) -> bool {
        match &self.args {
            Args::Ranges(r) => r.is_empty(),
            Args::Inline(a) => a.is_empty(),
        }
    }
}

/// Parses the request at the start of `buf`: `Ok(None)` if it is incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    parse_resuming(buf, &mut None)
}

/// Where the parse of an incomplete multi-bulk request stopped: its
/// argument count, the arguments complete so far and where the next one
/// starts. Kept between reads so that a large request arriving in many
/// reads (a 100 MB `MSET` in 16 KB pieces) has each argument header read
/// once, not once per read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    count: i64,
    ranges: Vec<Range<usize>>,
    pos: usize,
}

impl Partial {
    /// Arguments complete so far.
    pub fn args_done(&self) -> usize {
        self.ranges.len()
    }
}

/// [`parse`], resuming from `partial` (what an earlier call on the same
/// request, at the start of the same bytes, left there) and leaving there
/// where it stopped when the request is still incomplete.
pub fn parse_resuming(
    buf: &[u8],
    partial: &mut Option<Partial>,
) -> Result<Option<Parsed>, ProtocolError> {
    if let Some(state) = partial.take() {
        return multibulk_args(buf, state, partial);
    }
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, partial),
        Some(_) => parse_inline(buf),
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut start = from;
    loop {
        let i = start + buf.get(start..)?.iter().position(|&b| b == b'\r')?;
        if buf.get(i + 1)? == &b'\n' {
            return Some(i);
        }
        start = i + 1;
    }
}

fn parse_number(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn parse_multibulk(
    buf: &[u8],
    partial: &mut Option<Partial>,
) -> Result<Option<Parsed>, ProtocolError> {
    let Some(eol) = find_crlf(buf, 0) else {
        return if buf.len() > MAX_INLINE {
            Err(ProtocolError("too big mbulk count string".into()))
        } else {
            Ok(None)
        };
    };
    let count = parse_number(&buf[1..eol])
        .filter(|n| *n <= MAX_ARGS)
        .ok_or_else(|| ProtocolError("invalid multibulk length".into()))?;
    let pos = eol + 2;
    if count <= 0 {
        return Ok(Some(Parsed {
            len: pos,
            args: Args::Ranges(Vec::new()),
        }));
    }
    let state = Partial {
        count,
        ranges: Vec::with_capacity(count.min(1024) as usize),
        pos,
    };
    multibulk_args(buf, state, partial)
}

/// The arguments of a multi-bulk request from `state` on; an incomplete
/// request leaves its state in `partial`.
fn multibulk_args(
    buf: &[u8],
    mut state: Partial,
    partial: &mut Option<Partial>,
) -> Result<Option<Parsed>, ProtocolError> {
    while (state.ranges.len() as i64) < state.count {
        let pos = state.pos;
        let Some(&head) = buf.get(pos) else {
            *partial = Some(state);
            return Ok(None);
        };
        if head != b'$' {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                head as char
            )));
        }
        let Some(eol) = find_crlf(buf, pos) else {
            if buf.len() - pos > MAX_INLINE {
                return Err(ProtocolError("too big bulk count string".into()));
            }
            *partial = Some(state);
            return Ok(None);
        };
        let len = parse_number(&buf[pos + 1..eol])
            .filter(|n| (0..=MAX_BULK).contains(n))
            .ok_or_else(|| ProtocolError("invalid bulk length".into()))? as usize;
        let start = eol + 2;
        let end = start + len;
        if buf.len() < end + 2 {
            *partial = Some(state);
            return Ok(None);
        }
        // Redis does not check the CRLF after a bulk; it just skips two bytes.
        state.ranges.push(start..end);
        state.pos = end + 2;
    }
    Ok(Some(Parsed {
        len: state.pos,
        args: Args::Ranges(state.ranges),
    }))
}

fn parse_inline(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_INLINE {
            Err(ProtocolError("too big inline request".into()))
        } else {
            Ok(None)
        };
    };
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args =
        split_args(line).ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))?;
    Ok(Some(Parsed {
        len: nl + 1,
        args: Args::Inline(args),
    }))
}

/// Splits an inline command line into arguments the way Redis does
/// (`sdssplitargs`): spaces separate words; double quotes allow `\xHH`,
/// `\n`, `\r`, `\t`, `\b`, `\a` escapes; single quotes allow only `\'`.
/// `None` if quotes are unbalanced or a closing quote is not followed by a
/// space.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut word = Vec::new();
        match line[i] {
            b'"' => i = double_quoted(line, i + 1, &mut word)?,
            b'\'' => i = single_quoted(line, i + 1, &mut word)?,
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(word));
    }
}

/// Reads a double-quoted word after its opening quote; returns the index
/// after the closing quote.
fn double_quoted(line: &[u8], mut i: usize, word: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(i)? {
            b'\\' => {
                let c = *line.get(i + 1)?;
                if c == b'x' {
                    if let Some(v) = hex_pair(line.get(i + 2..i + 4)) {
                        word.push(v);
                        i += 4;
                        continue;
                    }
                }
                word.push(match c {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 8,
                    b'a' => 7,
                    other => other,
                });
                i += 2;
            }
            b'"' => return close_quote(line, i),
            c => {
                word.push(c);
                i += 1;
            }
        }
    }
}

fn single_quoted(line: &[u8], mut i: usize, word: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(i)? {
            b'\\' if line.get(i + 1) == Some(&b'\'') => {
                word.push(b'\'');
                i += 2;
            }
            b'\'' => return close_quote(line, i),
            c => {
                word.push(c);
                i += 1;
            }
        }
    }
}

/// A closing quote must end the line or be followed by a space.
fn close_quote(line: &[u8], quote: usize) -> Option<usize> {
    match line.get(quote + 1) {
        None => Some(quote + 1),
        Some(c) if c.is_ascii_whitespace() => Some(quote + 1),
        Some(_) => None,
    }
}

fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let pair = pair?;
    let hi = (pair[0] as char).to_digit(16)?;
    let lo = (pair[1] as char).to_digit(16)?;
    Some((hi * 16 + lo) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_arriving_in_pieces_is_read_on_from_where_it_stopped() {
        let mut whole = b"*2001\r\n$4\r\nMSET\r\n".to_vec();
        for n in 0..1000 {
            whole.extend_from_slice(format!("$6\r\nkey{n:03}\r\n$3\r\nval\r\n").as_bytes());
        }
        whole.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        let expected = parse(&whole).unwrap().unwrap();
        let mut partial = None;
        let mut done = 0;
        let mut got = None;
        for end in (16..=whole.len()).step_by(16).chain([whole.len()]) {
            match parse_resuming(&whole[..end], &mut partial).unwrap() {
                Some(p) => {
                    got = Some(p);
                    break;
                }
                None => {
                    // Never back to the start: the arguments read stay read.
                    let now = partial.as_ref().map_or(0, Partial::args_done);
                    assert!(now >= done, "{now} < {done}");
                    done = now;
                }
            }
        }
        assert!(done > 1900, "the state held the arguments read: {done}");
        assert_eq!(got, Some(expected));
        assert!(partial.is_none(), "a complete request leaves no state");
        let rest = &whole[got.unwrap().len..];
        assert_eq!(
            parse_resuming(rest, &mut partial).unwrap().unwrap().len,
            rest.len()
        );
    }

    fn command_at(buf: &[u8]) -> Option<(Command, usize)> {
        let frame = Bytes::copy_from_slice(buf);
        parse(buf).unwrap().map(|p| {
            let len = p.len;
            (p.command(&frame), len)
        })
    }

    #[test]
    fn multibulk_with_binary_arguments() {
        let raw = b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\n\r\n\0\xff\r\n";
        let (c, n) = command_at(raw).unwrap();
        assert_eq!(n, raw.len());
        assert_eq!(c, Command::from_parts([&b"SET"[..], b"", b"\r\n\0\xff"]));
    }

    #[test]
    fn multibulk_split_at_every_byte_is_incomplete_until_whole() {
        let raw = b"*2\r\n$4\r\nECHO\r\n$12\r\nhello\r\nworld\r\n";
        for cut in 0..raw.len() {
            assert_eq!(parse(&raw[..cut]).unwrap(), None, "cut {cut}");
        }
        assert_eq!(parse(raw).unwrap().unwrap().len, raw.len());
    }

    #[test]
    fn pipelined_commands_parse_one_after_another() {
        let raw = b"*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n";
        let mut pos = 0;
        let mut names = Vec::new();
        while let Some((c, n)) = command_at(&raw[pos..]) {
            names.push(c.name().to_vec());
            pos += n;
        }
        assert_eq!(pos, raw.len());
        assert_eq!(
            names,
            vec![b"PING".to_vec(), b"PING".to_vec(), b"GET".to_vec()]
        );
    }

    #[test]
    fn inline_commands() {
        let (c, n) = command_at(b"PING\r\n").unwrap();
        assert_eq!((c, n), (Command::from_parts(["PING"]), 6));
        let (c, _) = command_at(b"set \"a b\" '\\'x' \"\\x00\\xff\\n\"\n").unwrap();
        assert_eq!(
            c,
            Command::from_parts([&b"set"[..], b"a b", b"'x", b"\0\xff\n"])
        );
        let p = parse(b"\r\n").unwrap().unwrap();
        assert!(p.is_empty());
        assert_eq!(parse(b"PING").unwrap(), None);
    }

    #[test]
    fn empty_multibulk_is_ignored_like_redis() {
        let p = parse(b"*0\r\n").unwrap().unwrap();
        assert!(p.is_empty());
        assert_eq!(p.len, 4);
        assert!(parse(b"*-1\r\n").unwrap().unwrap().is_empty());
    }

    #[test]
    fn protocol_errors_match_redis_wording() {
        let err = |b: &[u8]| parse(b).unwrap_err().to_string();
        assert_eq!(err(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(
            err(b"*1\r\n:1\r\n"),
            "Protocol error: expected '$', got ':'"
        );
        assert_eq!(err(b"*1\r\n$-3\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(
            err(b"*1\r\n$abc\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(b"set \"a\n"),
            "Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            err(b"set \"a\"b\n"),
            "Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            err(&vec![b'a'; MAX_INLINE + 1]),
            "Protocol error: too big inline request"
        );
        assert_eq!(
            err(b"*99999999999\r\n"),
            "Protocol error: invalid multibulk length"
        );
    }
}

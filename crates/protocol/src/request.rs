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

/// Longest inline request, or multi-bulk count or bulk length line without
/// its `\r`, Redis reads (`PROTO_INLINE_MAX_SIZE`, 64 KiB); one byte more
/// is a protocol error.
pub const MAX_INLINE: usize = 64 * 1024;
/// Most arguments in one multi-bulk request: Redis 7.0 refuses a count
/// above `INT_MAX`.
pub const MAX_ARGS: i64 = i32::MAX as i64;
/// Redis's default `proto-max-bulk-len`: the largest bulk argument, 512 MiB.
pub const DEFAULT_MAX_BULK_LEN: u64 = 512 * 1024 * 1024;

/// The limits a request is parsed under that Redis lets the operator set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest bulk argument (`proto-max-bulk-len`): a longer declared
    /// length is `invalid bulk length`, before any of its bytes are read.
    pub max_bulk_len: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: DEFAULT_MAX_BULK_LEN,
        }
    }
}

/// A request the client got wrong. The connection is closed after replying
/// `-ERR Protocol error: <reason>`, as Redis does. The reason is bytes: it
/// can quote the client's own byte, which Redis sends back raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub Vec<u8>);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protocol error: {}", String::from_utf8_lossy(&self.0))
    }
}

impl std::error::Error for ProtocolError {}

impl ProtocolError {
    /// The reply Redis gives: `-ERR Protocol error: <reason>`, byte for byte.
    pub fn reply(&self) -> Vec<u8> {
        let mut out = b"-ERR Protocol error: ".to_vec();
        out.extend_from_slice(&self.0);
        out.extend_from_slice(b"\r\n");
        out
    }
}

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

    /// How many arguments it has, the command name included.
    pub fn arg_count(&self) -> usize {
        match &self.args {
            Args::Ranges(ranges) => ranges.len(),
            Args::Inline(args) => args.len(),
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

/// Parses the request at the start of `buf` under Redis's default limits:
/// `Ok(None)` if it is incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    parse_resuming(buf, &mut None, Limits::default())
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

/// [`parse`] under `limits`, resuming from `partial` (what an earlier call
/// on the same request, at the start of the same bytes, left there) and
/// leaving there where it stopped when the request is still incomplete.
pub fn parse_resuming(
    buf: &[u8],
    partial: &mut Option<Partial>,
    limits: Limits,
) -> Result<Option<Parsed>, ProtocolError> {
    if let Some(state) = partial.take() {
        return multibulk_args(buf, state, partial, limits);
    }
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, partial, limits),
        Some(_) => parse_inline(buf),
    }
}

/// The `\r` ending the header line at `from`, found as Redis finds it
/// (`strchr`): the search stops at a NUL byte, which leaves the line
/// unended. `None` also while the byte after the `\r` has not arrived.
/// `Err(())` when there is no `\r` at all.
fn header_end(buf: &[u8], from: usize) -> Result<Option<usize>, ()> {
    let rest = &buf[from..];
    match rest.iter().position(|&b| b == b'\r' || b == 0) {
        Some(i) if rest[i] == b'\r' => Ok((i + 2 <= rest.len()).then_some(from + i)),
        _ => Err(()),
    }
}

/// A number as Redis's `string2ll` reads it: an optional `-`, then digits
/// without leading zeros (`0` alone), nothing else, within `i64`.
fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, s),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    if negative {
        (v <= i64::MIN.unsigned_abs()).then(|| (-i128::from(v)) as i64)
    } else {
        i64::try_from(v).ok()
    }
}

fn error(reason: &str) -> ProtocolError {
    ProtocolError(reason.as_bytes().to_vec())
}

fn parse_multibulk(
    buf: &[u8],
    partial: &mut Option<Partial>,
    limits: Limits,
) -> Result<Option<Parsed>, ProtocolError> {
    let eol = match header_end(buf, 0) {
        Ok(Some(eol)) => eol,
        Ok(None) => return Ok(None),
        Err(()) if buf.len() > MAX_INLINE => return Err(error("too big mbulk count string")),
        Err(()) => return Ok(None),
    };
    let count = string2ll(&buf[1..eol])
        .filter(|n| *n <= MAX_ARGS)
        .ok_or_else(|| error("invalid multibulk length"))?;
    // Redis skips the byte after the `\r` without looking at it.
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
    multibulk_args(buf, state, partial, limits)
}

/// The arguments of a multi-bulk request from `state` on; an incomplete
/// request leaves its state in `partial`.
fn multibulk_args(
    buf: &[u8],
    mut state: Partial,
    partial: &mut Option<Partial>,
    limits: Limits,
) -> Result<Option<Parsed>, ProtocolError> {
    while (state.ranges.len() as i64) < state.count {
        let pos = state.pos;
        // As Redis: the whole length line first, then its `$`.
        let eol = match header_end(buf, pos.min(buf.len())) {
            Ok(Some(eol)) => eol,
            Err(()) if buf.len() - pos.min(buf.len()) > MAX_INLINE => {
                return Err(error("too big bulk count string"))
            }
            Ok(None) | Err(()) => {
                *partial = Some(state);
                return Ok(None);
            }
        };
        if buf[pos] != b'$' {
            let mut reason = b"expected '$', got '".to_vec();
            reason.push(reply_byte(buf[pos]));
            reason.push(b'\'');
            return Err(ProtocolError(reason));
        }
        let len = string2ll(&buf[pos + 1..eol])
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n <= limits.max_bulk_len)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| error("invalid bulk length"))?;
        let start = eol + 2;
        let Some(end) = start.checked_add(len) else {
            return Err(error("invalid bulk length"));
        };
        if buf.len().saturating_sub(2) < end {
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

/// A byte as Redis's error replies show it: `\r` and `\n` become spaces
/// (`addReplyErrorFormat`), so that the reply stays one line.
/// The client's byte as Redis quotes it: raw, but a line end shown as a
/// space so that the error stays one line.
fn reply_byte(b: u8) -> u8 {
    match b {
        b'\r' | b'\n' => b' ',
        b => b,
    }
}

fn parse_inline(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    // Redis looks for the newline with `strchr`, which stops at a NUL byte:
    // a line with a NUL before its newline never ends.
    let nl = match buf.iter().position(|&b| b == b'\n' || b == 0) {
        Some(nl) if buf[nl] == b'\n' => nl,
        _ if buf.len() > MAX_INLINE => return Err(error("too big inline request")),
        _ => return Ok(None),
    };
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_args(line).ok_or_else(|| error("unbalanced quotes in request"))?;
    Ok(Some(Parsed {
        len: nl + 1,
        args: Args::Inline(args),
    }))
}

/// C's `isspace` in the C locale.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Splits an inline command line into arguments as Redis does
/// (`sdssplitargs`): blanks separate words; a quote anywhere in a word
/// starts a quoted part of it; double quotes allow `\xHH`, `\n`, `\r`,
/// `\t`, `\b`, `\a` escapes (any other escaped byte stands for itself);
/// single quotes allow only `\'`. `None` if quotes are unbalanced or a
/// closing quote is followed by anything but a blank. The line ends at its
/// first NUL byte, as a C string does.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    // The byte at `i`, or the terminating NUL past the end.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let (mut double, mut single) = (false, false);
        let mut word = Vec::new();
        loop {
            let c = at(p);
            if double {
                if c == b'\\' && at(p + 1) == b'x' {
                    if let (Some(hi), Some(lo)) = (hex(at(p + 2)), hex(at(p + 3))) {
                        word.push(hi * 16 + lo);
                        p += 4;
                        continue;
                    }
                }
                if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    word.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    close_quote(at(p + 1))?;
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    word.push(c);
                }
            } else if single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    word.push(b'\'');
                } else if c == b'\'' {
                    close_quote(at(p + 1))?;
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    word.push(c);
                }
            } else {
                match c {
                    0 => break,
                    b' ' | b'\n' | b'\r' | b'\t' => {
                        p += 1;
                        break;
                    }
                    b'"' => double = true,
                    b'\'' => single = true,
                    c => word.push(c),
                }
            }
            p += 1;
        }
        args.push(Bytes::from(word));
    }
}

/// A closing quote must end the line or be followed by a blank.
fn close_quote(next: u8) -> Option<()> {
    (next == 0 || is_space(next)).then_some(())
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
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
            match parse_resuming(&whole[..end], &mut partial, Limits::default()).unwrap() {
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
            parse_resuming(rest, &mut partial, Limits::default())
                .unwrap()
                .unwrap()
                .len,
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

    fn err_with(b: &[u8], limits: Limits) -> String {
        parse_resuming(b, &mut None, limits)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_bulk_limit_is_the_configured_one() {
        let kb = Limits { max_bulk_len: 1024 };
        assert_eq!(
            parse_resuming(b"*1\r\n$1024\r\n", &mut None, kb).unwrap(),
            None,
            "at the limit: waits for the bytes"
        );
        assert_eq!(
            err_with(b"*1\r\n$1025\r\n", kb),
            "Protocol error: invalid bulk length"
        );
        // Redis's default: 512 MiB declared is accepted, one byte more is
        // refused, both before any of the bytes arrive.
        assert_eq!(parse(b"*1\r\n$536870912\r\n").unwrap(), None);
        assert_eq!(
            err_with(b"*1\r\n$536870913\r\n", Limits::default()),
            "Protocol error: invalid bulk length"
        );
    }

    #[test]
    fn the_argument_count_is_bounded_by_int_max_as_in_redis_7() {
        assert_eq!(parse(b"*2147483647\r\n").unwrap(), None);
        assert_eq!(parse(b"*1048577\r\n").unwrap(), None);
        assert_eq!(
            parse(b"*2147483648\r\n").unwrap_err().to_string(),
            "Protocol error: invalid multibulk length"
        );
    }

    #[test]
    fn numbers_are_read_as_redis_string2ll_reads_them() {
        let err = |b: &[u8]| parse(b).unwrap_err().to_string();
        for count in ["+1", "01", "-0", " 1", "1 ", "", "-", "1a"] {
            assert_eq!(
                err(format!("*{count}\r\n").as_bytes()),
                "Protocol error: invalid multibulk length",
                "{count:?}"
            );
        }
        for len in ["+3", "03", "-0", "-1", "", "3 "] {
            assert_eq!(
                err(format!("*1\r\n${len}\r\nabc\r\n").as_bytes()),
                "Protocol error: invalid bulk length",
                "{len:?}"
            );
        }
        assert!(parse(b"*-5\r\n").unwrap().unwrap().is_empty());
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string2ll(b"9223372036854775808"), None);
        assert_eq!(string2ll(b"-9223372036854775809"), None);
    }

    #[test]
    fn header_lines_end_at_the_first_cr_as_in_redis() {
        // Redis skips the byte after the `\r` without looking at it.
        let (c, n) = command_at(b"*1\rX$4\rYPING\r\n").unwrap();
        assert_eq!((c, n), (Command::from_parts(["PING"]), 14));
        // The byte after the `\r` must have arrived.
        assert_eq!(parse(b"*1\r").unwrap(), None);
        assert_eq!(parse(b"*1\r\n$4\r").unwrap(), None);
    }

    #[test]
    fn the_type_byte_is_checked_once_its_line_is_whole() {
        let err = |b: &[u8]| parse(b).unwrap_err().to_string();
        assert_eq!(
            parse(b"*1\r\n:1").unwrap(),
            None,
            "Redis waits for the line"
        );
        assert_eq!(
            err(b"*1\r\n:1\r\n"),
            "Protocol error: expected '$', got ':'"
        );
        // A `\r` or `\n` is shown as a space, so that the reply is one line.
        assert_eq!(err(b"*1\r\n\r\n"), "Protocol error: expected '$', got ' '");
        assert_eq!(
            err(b"*1\r\n\n\r\n"),
            "Protocol error: expected '$', got ' '"
        );
        // Any other byte goes back raw, as Redis sends it, not re-encoded.
        assert_eq!(
            parse(b"*1\r\n\xe9\r\n").unwrap_err().reply(),
            b"-ERR Protocol error: expected '$', got '\xe9'\r\n"
        );
        let mut long = b"*1\r\n:".to_vec();
        long.resize(4 + MAX_INLINE, b'1');
        assert_eq!(parse(&long).unwrap(), None, "64 KiB without a \\r: waits");
        long.push(b'1');
        assert_eq!(err(&long), "Protocol error: too big bulk count string");
    }

    #[test]
    fn header_and_inline_lengths_are_redis_64_kib() {
        let err = |b: &[u8]| parse(b).unwrap_err().to_string();
        let mut count = b"*".to_vec();
        count.resize(MAX_INLINE, b'1');
        assert_eq!(parse(&count).unwrap(), None);
        count.push(b'1');
        assert_eq!(err(&count), "Protocol error: too big mbulk count string");
        let mut bulk = b"*1\r\n$".to_vec();
        bulk.resize(4 + MAX_INLINE, b'1');
        assert_eq!(parse(&bulk).unwrap(), None);
        bulk.push(b'1');
        assert_eq!(err(&bulk), "Protocol error: too big bulk count string");
        let mut inline = vec![b'a'; MAX_INLINE];
        assert_eq!(parse(&inline).unwrap(), None);
        inline.push(b'a');
        assert_eq!(err(&inline), "Protocol error: too big inline request");
        // A line of 64 KiB and more is fine once its newline arrived.
        let mut whole = vec![b'a'; MAX_INLINE + 10];
        whole.push(b'\n');
        assert_eq!(parse(&whole).unwrap().unwrap().len, whole.len());
    }

    #[test]
    fn a_nul_byte_leaves_a_line_unended_as_in_redis() {
        // Redis finds line ends with strchr, which stops at a NUL.
        assert_eq!(parse(b"SET a \0b\r\nPING\r\n").unwrap(), None);
        assert_eq!(parse(b"*1\0\r\n$4\r\nPING\r\n").unwrap(), None);
        assert_eq!(parse(b"*1\r\n$\0\r\nPING\r\n").unwrap(), None);
        let mut inline = b"SET a \0b\r\n".to_vec();
        inline.resize(MAX_INLINE + 1, b'x');
        assert_eq!(
            parse(&inline).unwrap_err().to_string(),
            "Protocol error: too big inline request"
        );
    }

    #[test]
    fn inline_words_are_split_as_sdssplitargs_splits_them() {
        let split =
            |l: &[u8]| split_args(l).map(|a| a.iter().map(|w| w.to_vec()).collect::<Vec<_>>());
        let words = |w: &[&[u8]]| Some(w.iter().map(|w| w.to_vec()).collect::<Vec<_>>());
        // A quote inside a word starts a quoted part of it.
        assert_eq!(split(b"set a\"b c\" d"), words(&[b"set", b"ab c", b"d"]));
        assert_eq!(split(b"k'x y'"), words(&[b"kx y"]));
        assert_eq!(split(b"\"a\"b"), None);
        assert_eq!(split(b"a\"b\"c"), None);
        // Vertical tab and form feed separate words only between them.
        assert_eq!(split(b"a\x0bb \x0c c"), words(&[b"a\x0bb", b"c"]));
        assert_eq!(split(b"\"a\"\x0bb"), words(&[b"a", b"b"]));
        // Escapes: `\x` without two hex digits is an `x`.
        assert_eq!(split(b"\"\\x4g\\q\\\\\""), words(&[b"x4gq\\"]));
        assert_eq!(split(b"'it\\'s' '\\n'"), words(&[b"it's", b"\\n"]));
        assert_eq!(split(b"\"a\\"), None);
        assert_eq!(split(b"'a"), None);
        assert_eq!(split(b"  "), words(&[]));
        assert_eq!(split(b"a\0b"), words(&[b"a"]));
    }
}

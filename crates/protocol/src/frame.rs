//! RESP2 and RESP3 values as Redis sends them.
//!
//! Framing is check-then-parse: the proxy forwards replies as bytes, so on the
//! hot path it only needs to know where one reply ends ([`Scanner`]), which
//! costs one pass over the headers and never allocates. The few replies whose
//! content matters (an `EXEC` result, a pub/sub event) are then decoded into a
//! [`Frame`] with [`decode`].

use bytes::{Bytes, BytesMut};

/// A reply that is not valid RESP: the peer is not a Redis server, or the
/// stream is corrupt. The connection cannot be trusted after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RESP reply: {0}")]
pub struct FrameError(pub String);

/// Deepest nesting [`decode`] builds frames for. Redis's own replies never
/// come near it, but a Lua script's can (a table nested in itself is
/// answered level by level until Lua's stack limit, thousands deep): a value
/// nested deeper is kept whole, undecoded, as [`Frame::Deep`].
const MAX_DEPTH: usize = 512;

/// Finds where complete RESP values end in a growing buffer.
///
/// The state survives between calls so that a large reply arriving in many
/// reads is scanned once, not once per read: `pos` is how far the current
/// value's headers were checked, `pending` how many values are still owed.
#[derive(Debug, Default)]
pub struct Scanner {
    pos: usize,
    pending: usize,
}

impl Scanner {
    pub fn new() -> Self {
        Scanner::default()
    }

    /// The length of the complete value at the start of `buf`, or `None` if
    /// more bytes are needed. `buf` must start where the previous complete
    /// value ended (the caller consumes what this returned).
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if self.pending == 0 {
            self.pos = 0;
            self.pending = 1;
        }
        while self.pending > 0 {
            let Some((head, line_end)) = read_line(buf, self.pos)? else {
                return Ok(None);
            };
            let body = &buf[self.pos + 1..line_end];
            let next = line_end + 2;
            let added = match head {
                b'+' | b'-' | b':' | b',' | b'(' | b'#' | b'_' => {
                    self.pos = next;
                    0
                }
                b'$' | b'!' | b'=' => {
                    let len = parse_int(body)?;
                    if len < 0 {
                        self.pos = next;
                    } else {
                        let end = span_end(next, len)?;
                        if buf.len() < end {
                            return Ok(None);
                        }
                        if &buf[end - 2..end] != b"\r\n" {
                            return Err(FrameError("bulk string not terminated by CRLF".into()));
                        }
                        self.pos = end;
                    }
                    0
                }
                b'*' | b'~' | b'>' => {
                    self.pos = next;
                    aggregate_len(body)?
                }
                b'%' => {
                    self.pos = next;
                    pairs(aggregate_len(body)?)?
                }
                // An attribute is metadata attached to the value after it:
                // its key/value pairs plus that value form one reply.
                // A negative count is a null, as `decode` reads it.
                b'|' if parse_int(body)? < 0 => {
                    self.pos = next;
                    0
                }
                b'|' => {
                    self.pos = next;
                    pairs(aggregate_len(body)?)?
                        .checked_add(1)
                        .ok_or_else(too_long)?
                }
                other => return Err(FrameError(format!("unexpected type byte {other:#04x}"))),
            };
            self.pending = (self.pending - 1).checked_add(added).ok_or_else(too_long)?;
        }
        Ok(Some(self.pos))
    }
}

impl Scanner {
    /// Takes the next complete value off the front of `buf`, decoded, or
    /// `None` if more bytes are needed: the read loop of every small client.
    pub fn take(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(len) = self.next(buf)? else {
            return Ok(None);
        };
        let raw = buf.split_to(len).freeze();
        match decode(&raw)? {
            Some((frame, _)) => Ok(Some(frame)),
            None => Err(FrameError("a complete value did not decode".into())),
        }
    }
}

/// Finds the CRLF-terminated header line starting at `pos`.
fn read_line(buf: &[u8], pos: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if pos >= buf.len() {
        return Ok(None);
    }
    let head = buf[pos];
    if !b"+-:,(#_$!=*~>%|".contains(&head) {
        return Err(FrameError(format!("unexpected type byte {head:#04x}")));
    }
    // The line's CRLF comes after its type byte.
    match memchr_crlf(&buf[pos + 1..]) {
        Some(i) => Ok(Some((head, pos + 1 + i))),
        None => Ok(None),
    }
}

fn memchr_crlf(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(i) = buf[start..].iter().position(|&b| b == b'\r') {
        let at = start + i;
        if at + 1 >= buf.len() {
            return None;
        }
        if buf[at + 1] == b'\n' {
            return Some(at);
        }
        start = at + 1;
    }
    None
}

fn aggregate_len(body: &[u8]) -> Result<usize, FrameError> {
    if body == b"?" {
        return Err(FrameError("streamed aggregates are not supported".into()));
    }
    let n = parse_int(body)?;
    Ok(n.max(0) as usize)
}

/// Where a bulk of `len` bytes starting at `start` ends, its CRLF included.
/// Lengths come from the peer: the sum is checked, not trusted.
fn span_end(start: usize, len: i64) -> Result<usize, FrameError> {
    usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len)?.checked_add(2))
        .ok_or_else(too_long)
}

/// The values a map or attribute of `n` entries holds (a key and a value
/// each), checked.
fn pairs(n: usize) -> Result<usize, FrameError> {
    n.checked_mul(2).ok_or_else(too_long)
}

fn too_long() -> FrameError {
    FrameError("a length larger than memory".into())
}

/// Parses a decimal integer line body (`-1`, `42`).
pub(crate) fn parse_int(body: &[u8]) -> Result<i64, FrameError> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            FrameError(format!(
                "expected an integer, got {:?}",
                String::from_utf8_lossy(body)
            ))
        })
}

/// A decoded RESP2/RESP3 value.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// `+OK`
    Simple(Bytes),
    /// `-ERR ...` and RESP3 blob errors `!`.
    Error(Bytes),
    /// `:1`
    Integer(i64),
    /// `$3\r\nfoo`, RESP3 verbatim `=`.
    Bulk(Bytes),
    /// `$-1`, `*-1`, `_`.
    Null,
    /// `*`, and RESP3 sets `~`.
    Array(Vec<Frame>),
    /// RESP3 out-of-band push `>`: pub/sub messages, invalidations.
    Push(Vec<Frame>),
    /// RESP3 map `%`, as alternating keys and values.
    Map(Vec<Frame>),
    /// RESP3 `#t`/`#f`.
    Boolean(bool),
    /// RESP3 double `,` and big number `(`, as their text.
    Number(Bytes),
    /// A value nested more than `MAX_DEPTH` (512) levels deep, as its RESP
    /// bytes: framed by [`Scanner`], which needs no recursion, but not
    /// decoded.
    Deep(Bytes),
}

impl Frame {
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }

    /// The bytes of a simple or bulk string.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) | Frame::Number(b) => Some(b),
            _ => None,
        }
    }

    /// The elements of an array, set or push.
    pub fn as_array(&self) -> Option<&[Frame]> {
        match self {
            Frame::Array(v) | Frame::Push(v) => Some(v),
            _ => None,
        }
    }
}

/// Whether the complete reply in `reply` is an error (`-` or `!`), without
/// decoding it. Attributes in front of the value are not looked through.
pub fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-') | Some(b'!'))
}

/// Whether error text `error` (without its `-`) was raised inside a running
/// script (`EVAL`, `FCALL`): Redis appends `script: NAME, on
/// @user_script:LINE.` (or `@user_function:`) to those, and to nothing
/// else. Such a script ran up to the error, and its writes before it stay.
pub fn raised_in_script(error: &[u8]) -> bool {
    let contains = |needle: &[u8]| error.windows(needle.len()).any(|w| w == needle);
    contains(b" script: ") && (contains(b", on @user_script:") || contains(b", on @user_function:"))
}

/// Whether the complete reply in `reply` is a RESP3 push (`>`).
pub fn is_push(reply: &[u8]) -> bool {
    reply.first() == Some(&b'>')
}

/// Decodes one complete value from the start of `buf`, returning it and its
/// length, or `None` if `buf` holds only part of it. Bulk strings are
/// zero-copy slices of `buf`.
pub fn decode(buf: &Bytes) -> Result<Option<(Frame, usize)>, FrameError> {
    let mut pos = 0;
    match decode_at(buf, &mut pos, 0)? {
        Some(frame) => Ok(Some((frame, pos))),
        None => Ok(None),
    }
}

fn decode_at(buf: &Bytes, pos: &mut usize, depth: usize) -> Result<Option<Frame>, FrameError> {
    if depth > MAX_DEPTH {
        return Ok(Scanner::new().next(&buf[*pos..])?.map(|len| {
            let deep = buf.slice(*pos..*pos + len);
            *pos += len;
            Frame::Deep(deep)
        }));
    }
    let Some((head, line_end)) = read_line(buf, *pos)? else {
        return Ok(None);
    };
    let body = buf.slice(*pos + 1..line_end);
    *pos = line_end + 2;
    let frame = match head {
        b'+' => Frame::Simple(body),
        b'-' => Frame::Error(body),
        b':' => Frame::Integer(parse_int(&body)?),
        b',' | b'(' => Frame::Number(body),
        b'#' => Frame::Boolean(&body[..] == b"t"),
        b'_' => Frame::Null,
        b'$' | b'!' | b'=' => {
            let len = parse_int(&body)?;
            if len < 0 {
                Frame::Null
            } else {
                let end = span_end(*pos, len)?;
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(FrameError("bulk string not terminated by CRLF".into()));
                }
                let data = buf.slice(*pos..end - 2);
                *pos = end;
                match head {
                    b'!' => Frame::Error(data),
                    // Verbatim strings carry a 4-byte `txt:` format prefix.
                    b'=' if data.len() >= 4 => Frame::Bulk(data.slice(4..)),
                    _ => Frame::Bulk(data),
                }
            }
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = parse_int(&body)?;
            if n < 0 {
                return Ok(Some(Frame::Null));
            }
            let n = usize::try_from(n).map_err(|_| too_long())?;
            let count = match head {
                b'%' | b'|' => pairs(n)?,
                _ => n,
            };
            let mut items = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                match decode_at(buf, pos, depth + 1)? {
                    Some(f) => items.push(f),
                    None => return Ok(None),
                }
            }
            match head {
                b'>' => Frame::Push(items),
                b'%' => Frame::Map(items),
                b'|' => return decode_at(buf, pos, depth + 1),
                _ => Frame::Array(items),
            }
        }
        other => return Err(FrameError(format!("unexpected type byte {other:#04x}"))),
    };
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_raised_inside_scripts_are_told_from_refusals() {
        assert!(raised_in_script(
            b"ERR user_script:1: boom script: 9b1c, on @user_script:1."
        ));
        assert!(raised_in_script(
            b"ERR value is not an integer or out of range script: f, on @user_function:1."
        ));
        assert!(!raised_in_script(
            b"WRONGTYPE Operation against a key holding the wrong kind of value"
        ));
        assert!(!raised_in_script(
            b"NOSCRIPT No matching script. Please use EVAL."
        ));
        assert!(!raised_in_script(b"no"), "an error the script returned");
    }

    #[test]
    fn lengths_from_the_peer_cannot_overflow() {
        for reply in [
            &b"*9223372036854775807\r\n"[..],
            b"%9223372036854775807\r\n",
            b"|9223372036854775807\r\n",
            b"$9223372036854775807\r\nab\r\n",
            b"*2\r\n%9223372036854775807\r\n",
        ] {
            let bytes = Bytes::copy_from_slice(reply);
            // Incomplete or refused, never a panic.
            let _ = Scanner::new().next(reply);
            let _ = decode(&bytes);
        }
        let two_huge_maps = b"*2\r\n%9223372036854775807\r\n%9223372036854775807\r\n";
        assert!(Scanner::new().next(two_huge_maps).is_err());
        assert_eq!(
            decode(&Bytes::from_static(b"%9223372036854775807\r\n")),
            Ok(None)
        );
    }

    #[test]
    fn a_line_without_a_type_byte_is_refused() {
        // Found by fuzzing: an empty line read as a header of no body.
        assert!(Scanner::new().next(b"\r\n\xee\r").is_err());
        assert!(decode(&Bytes::from_static(b"\r\n")).is_err());
    }

    #[test]
    fn scanner_and_decoder_agree_on_a_negative_attribute_count() {
        // Found by fuzzing: the scanner took the value after it as the
        // attribute's, the decoder a null.
        let reply = b"|-88\r\n-88\r\n";
        assert_eq!(Scanner::new().next(reply), Ok(Some(6)));
        assert_eq!(
            decode(&Bytes::from_static(reply)).unwrap().map(|(_, n)| n),
            Some(6)
        );
    }

    #[test]
    fn values_nested_deeper_than_the_limit_are_kept_whole() {
        // What Redis answers `EVAL "local a = {}; local b = {a}; a[1] = b;
        // return a" 0` with: arrays of one array, then an error at Lua's
        // stack limit.
        let levels = 4000;
        let mut reply = b"*1\r\n".repeat(levels);
        reply.extend_from_slice(b"-ERR reached lua stack limit\r\n");
        let bytes = Bytes::from(reply.clone());
        assert_eq!(Scanner::new().next(&reply), Ok(Some(reply.len())));
        let (mut frame, len) = decode(&bytes).unwrap().unwrap();
        assert_eq!(len, reply.len());
        for _ in 0..=MAX_DEPTH {
            match frame {
                Frame::Array(mut items) if items.len() == 1 => frame = items.remove(0),
                other => panic!("expected a one-element array, got {other:?}"),
            }
        }
        let deep_start = (MAX_DEPTH + 1) * b"*1\r\n".len();
        assert_eq!(frame, Frame::Deep(bytes.slice(deep_start..)));
        // Incomplete stays incomplete.
        assert_eq!(decode(&bytes.slice(..bytes.len() - 2)), Ok(None));
        // And the decoder reads on after it.
        let mut two = reply.clone();
        two.extend_from_slice(b"+OK\r\n");
        let mut buf = BytesMut::from(&two[..]);
        let mut scanner = Scanner::new();
        assert!(scanner.take(&mut buf).unwrap().is_some());
        assert_eq!(
            scanner.take(&mut buf).unwrap(),
            Some(Frame::Simple(Bytes::from_static(b"OK")))
        );
    }

    #[test]
    fn decode_checks_the_crlf_after_a_bulk() {
        assert!(decode(&Bytes::from_static(b"$3\r\nabcXY")).is_err());
        assert_eq!(
            decode(&Bytes::from_static(b"$3\r\nabc\r\n")).unwrap(),
            Some((Frame::Bulk(Bytes::from_static(b"abc")), 9))
        );
    }

    const REPLIES: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR unknown command\r\n",
        b":42\r\n",
        b"$5\r\nhel\r\n\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n+x\r\n",
        b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n_\r\n",
        b"~2\r\n+a\r\n+b\r\n",
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\n\0\r\n\r\n",
        b",3.14\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"#t\r\n",
        b"_\r\n",
        b"!21\r\nSYNTAX invalid syntax\r\n",
        b"=15\r\ntxt:Some string\r\n",
        b"|1\r\n+ttl\r\n:3600\r\n$2\r\nok\r\n",
    ];

    /// Feeds `stream` to a scanner split at `cut`, returning every frame length.
    fn scan_split(stream: &[u8], cut: usize) -> Vec<usize> {
        let mut scanner = Scanner::new();
        let mut lens = Vec::new();
        let mut start = 0;
        for avail in [cut, stream.len()] {
            while let Some(n) = scanner.next(&stream[start..avail]).unwrap() {
                lens.push(n);
                start += n;
            }
        }
        lens
    }

    #[test]
    fn scanner_finds_every_reply_whatever_the_split() {
        let stream: Vec<u8> = REPLIES.concat();
        let expected: Vec<usize> = REPLIES.iter().map(|r| r.len()).collect();
        for cut in 0..=stream.len() {
            assert_eq!(scan_split(&stream, cut), expected, "split at {cut}");
        }
    }

    #[test]
    fn decoder_agrees_with_scanner_on_lengths() {
        for r in REPLIES {
            let buf = Bytes::copy_from_slice(r);
            let (_, n) = decode(&buf).unwrap().unwrap();
            assert_eq!(n, r.len(), "{:?}", String::from_utf8_lossy(r));
            for cut in 0..r.len() {
                assert!(decode(&buf.slice(..cut)).unwrap().is_none());
            }
        }
    }

    #[test]
    fn decodes_values() {
        let buf = Bytes::from_static(b"*3\r\n$1\r\na\r\n-ERR x\r\n*1\r\n:7\r\n");
        let (f, _) = decode(&buf).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::Array(vec![
                Frame::Bulk(Bytes::from_static(b"a")),
                Frame::Error(Bytes::from_static(b"ERR x")),
                Frame::Array(vec![Frame::Integer(7)]),
            ])
        );
        let push = Bytes::from_static(b">2\r\n+a\r\n+b\r\n");
        assert!(matches!(decode(&push).unwrap().unwrap().0, Frame::Push(_)));
        let attr = Bytes::from_static(b"|1\r\n+k\r\n+v\r\n:5\r\n");
        assert_eq!(decode(&attr).unwrap().unwrap().0, Frame::Integer(5));
    }

    #[test]
    fn classifies_without_decoding() {
        assert!(is_error(b"-ERR x\r\n"));
        assert!(is_error(b"!3\r\nERR\r\n"));
        assert!(!is_error(b"+OK\r\n"));
        assert!(is_push(b">1\r\n+a\r\n"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Scanner::new().next(b"?what\r\n").is_err());
        assert!(Scanner::new().next(b"$abc\r\n").is_err());
        assert!(Scanner::new().next(b"$1\r\nabc\r\n").is_err());
        assert!(decode(&Bytes::from_static(b"*x\r\n")).is_err());
    }
}

//! The `STRING` payload format: commands as redis-cli style quoted words, one
//! command a line.
//!
//! This is a public record format: third-party consumers read it, so the
//! rules below are the contract. Encoding is strict and canonical; decoding
//! accepts what `redis-cli` accepts on its prompt (the `sdssplitargs` rules
//! of Redis `src/sds.c`), so a payload can be written or edited by hand and
//! any line of it can be pasted into `redis-cli`.
//!
//! # Encoding (what remoteback writes)
//!
//! - Each command is one line: its words (the command name first, then the
//!   arguments, exactly as the client sent them, name case unchanged)
//!   separated by exactly one space (0x20) and terminated by one LF (0x0a).
//!   Lines carry no leading or trailing whitespace and no CR.
//! - A word is written **bare** if it is non-empty and every byte is
//!   printable ASCII 0x21..=0x7e other than `"` (0x22), `'` (0x27) and `\`
//!   (0x5c).
//! - Every other word is written **double-quoted**: `"`, then each byte of the
//!   word, then `"`. Inside the quotes a byte is written as:
//!   - `\\` for `\` (0x5c) and `\"` for `"` (0x22);
//!   - `\n` for LF (0x0a), `\r` for CR (0x0d), `\t` for HT (0x09), `\a` for
//!     BEL (0x07), `\b` for BS (0x08);
//!   - itself for every other byte in 0x20..=0x7e (so spaces and `'` are not
//!     escaped);
//!   - `\xHH`, `HH` two **lowercase** hex digits, for every other byte
//!     (0x00..=0x1f except the five above, and 0x7f..=0xff).
//! - The empty word is `""`.
//!
//! An encoded payload is therefore plain printable ASCII plus LF, one line
//! per command. A command with no words would be an empty line (the proxy
//! never produces one; decoders skip it). Example: the command `set`, `a b`,
//! `\x00\xff` (bytes 0x00 0xff) is the line `set "a b" "\x00\xff"`.
//!
//! # Decoding (what remoteback reads)
//!
//! - The payload is split into lines at LF; a CR right before the LF is
//!   dropped, and the last line may lack its LF. Lines are numbered from 1.
//! - Whitespace is SP, HT, VT, FF and CR (0x20, 0x09, 0x0b, 0x0c, 0x0d). A
//!   line that holds only whitespace, or nothing, is skipped; every other line
//!   is one command. Words are separated by one or more whitespace bytes;
//!   whitespace at the start or end of a line is ignored.
//! - A word is an optional bare part followed by at most one quoted part:
//!   - Bare bytes are every byte except whitespace, `"` and `'`. They are
//!     taken literally, including `\`, NUL and bytes 0x80..=0xff.
//!   - `"` opens a double-quoted part, also in the middle of a word
//!     (`ab"c d"` is the word `abc d`). Inside it: `\xHH` (a lowercase `x`
//!     and two hex digits of any case) is the byte 0xHH; `\n`, `\r`, `\t`,
//!     `\a`, `\b` are LF, CR, HT, BEL, BS; `\` followed by any other byte `c`
//!     is `c` (so `\\` is `\`, `\"` is `"`, `\X41` is `X41` and `\xzz` is
//!     `xzz`); every other byte, including raw whitespace, is itself. The next
//!     unescaped `"` closes the part.
//!   - `'` opens a single-quoted part: `\'` is `'`; every other byte,
//!     including `\` and raw whitespace, is itself. The next `'` not preceded
//!     by `\` closes the part.
//!   - A closing quote ends the word: the byte after it must be whitespace or
//!     the end of the line.
//! - Errors (each reported with its 1-based line and column, see
//!   [`StringError`]): a quote not closed before the end of its line; a `\` as
//!   the last byte of a line inside double quotes; a closing quote followed by
//!   anything but whitespace or the end of the line.
//!
//! Two details differ from `sdssplitargs`, only for input remoteback never
//! writes: a raw NUL byte is an ordinary byte (C strings end there), and VT
//! and FF end a bare word like the other whitespace (Redis only skips them
//! between words).

use bytes::{BufMut, Bytes, BytesMut};

use crate::command::Command;

/// Why a `STRING` payload could not be decoded. `line` and `column` are
/// 1-based; the column counts bytes from the start of the line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StringError {
    /// A quote opened at `column` is not closed before the end of the line.
    #[error("line {line}: unbalanced quotes: {quote} opened at column {column} is not closed")]
    UnbalancedQuotes {
        line: usize,
        column: usize,
        quote: char,
    },
    /// A `\` at `column` is the last byte of the line, inside double quotes.
    #[error("line {line}, column {column}: bad escape: `\\` at the end of the line")]
    BadEscape { line: usize, column: usize },
    /// The closing quote at `column` is followed by a byte that is not
    /// whitespace.
    #[error("line {line}, column {column}: closing quote not followed by a space or the end of the line")]
    TextAfterQuote { line: usize, column: usize },
}

impl StringError {
    /// The 1-based line the error is on.
    pub fn line(&self) -> usize {
        match *self {
            StringError::UnbalancedQuotes { line, .. }
            | StringError::BadEscape { line, .. }
            | StringError::TextAfterQuote { line, .. } => line,
        }
    }

    /// The 1-based byte column within the line (for unbalanced quotes: the
    /// opening quote).
    pub fn column(&self) -> usize {
        match *self {
            StringError::UnbalancedQuotes { column, .. }
            | StringError::BadEscape { column, .. }
            | StringError::TextAfterQuote { column, .. } => column,
        }
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// The byte may appear in a bare word (and as itself inside double quotes).
const BARE: u8 = 0;
/// The byte is itself inside double quotes but forces the word to be quoted.
const QUOTED: u8 = 1;
/// Any other class value is the escape letter after `\` (`x` for `\xHH`).
static ENCODE_CLASS: [u8; 256] = encode_classes();

const fn encode_classes() -> [u8; 256] {
    let mut t = [b'x'; 256];
    let mut b = 0x20;
    while b <= 0x7e {
        t[b] = BARE;
        b += 1;
    }
    t[b' ' as usize] = QUOTED;
    t[b'\'' as usize] = QUOTED;
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x07] = b'a';
    t[0x08] = b'b';
    t
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `commands`, each as one line terminated by `\n`.
pub fn encode(commands: &[Command], out: &mut BytesMut) {
    for cmd in commands {
        encode_command(cmd, out);
    }
}

/// Appends `cmd` as one line: its words separated by one space, then `\n`.
pub fn encode_command(cmd: &Command, out: &mut BytesMut) {
    let args = cmd.args();
    // Exact for bare words; quoted words grow the buffer as they need.
    let size: usize = args.iter().map(|a| a.len() + 1).sum();
    out.reserve(size.max(1));
    for (i, word) in args.iter().enumerate() {
        if i > 0 {
            out.put_u8(b' ');
        }
        encode_word(word, out);
    }
    out.put_u8(b'\n');
}

/// Appends one word, bare or double-quoted. Each byte is classified once: the
/// scan for a bare word stops at the first byte that needs quoting, and
/// quoting resumes from there.
fn encode_word(word: &[u8], out: &mut BytesMut) {
    let bare = word
        .iter()
        .position(|&b| ENCODE_CLASS[b as usize] != BARE)
        .unwrap_or(word.len());
    if bare == word.len() && !word.is_empty() {
        out.put_slice(word);
        return;
    }
    out.reserve(word.len() + 2);
    out.put_u8(b'"');
    out.put_slice(&word[..bare]);
    let mut rest = &word[bare..];
    loop {
        let run = rest
            .iter()
            .position(|&b| ENCODE_CLASS[b as usize] > QUOTED)
            .unwrap_or(rest.len());
        out.put_slice(&rest[..run]);
        let Some(&b) = rest.get(run) else { break };
        match ENCODE_CLASS[b as usize] {
            b'x' => out.put_slice(&[
                b'\\',
                b'x',
                HEX[(b >> 4) as usize],
                HEX[(b & 0x0f) as usize],
            ]),
            letter => out.put_slice(&[b'\\', letter]),
        }
        rest = &rest[run + 1..];
    }
    out.put_u8(b'"');
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// An ordinary byte: part of a bare word.
const PLAIN: u8 = 0;
/// Whitespace: ends a bare word, separates words.
const SPACE: u8 = 1;
/// `"` or `'`: opens a quoted part.
const QUOTE: u8 = 2;
static DECODE_CLASS: [u8; 256] = decode_classes();

const fn decode_classes() -> [u8; 256] {
    let mut t = [PLAIN; 256];
    t[b' ' as usize] = SPACE;
    t[b'\t' as usize] = SPACE;
    t[0x0b] = SPACE;
    t[0x0c] = SPACE;
    t[b'\r' as usize] = SPACE;
    t[b'\n' as usize] = SPACE;
    t[b'"' as usize] = QUOTE;
    t[b'\'' as usize] = QUOTE;
    t
}

fn is_space(b: u8) -> bool {
    DECODE_CLASS[b as usize] == SPACE
}

/// Parses a `STRING` payload into its commands, skipping empty lines.
///
/// The words of all commands share one buffer the size of `payload` (a
/// decoded word is never longer than its encoding), so decoding makes one
/// allocation for the data plus one `Vec` per command.
pub fn decode(payload: &[u8]) -> Result<Vec<Command>, StringError> {
    let mut buf = BytesMut::with_capacity(payload.len());
    let mut commands = Vec::new();
    for (index, line) in payload.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let args = decode_line(line, index + 1, &mut buf)?;
        if !args.is_empty() {
            commands.push(Command::new(args));
        }
    }
    Ok(commands)
}

/// The words of one line (without its line end).
fn decode_line(line: &[u8], lineno: usize, buf: &mut BytesMut) -> Result<Vec<Bytes>, StringError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(args);
        }
        let start = i;
        while i < line.len() && DECODE_CLASS[line[i] as usize] == PLAIN {
            i += 1;
        }
        buf.extend_from_slice(&line[start..i]);
        match line.get(i) {
            Some(b'"') => i = decode_double(line, i, lineno, buf)?,
            Some(b'\'') => i = decode_single(line, i, lineno, buf)?,
            _ => {} // whitespace or end of line: the bare word is complete
        }
        args.push(buf.split().freeze());
    }
}

/// Decodes the double-quoted part opened at `open`; returns the index after
/// the closing quote.
fn decode_double(
    line: &[u8],
    open: usize,
    lineno: usize,
    buf: &mut BytesMut,
) -> Result<usize, StringError> {
    let mut i = open + 1;
    loop {
        let start = i;
        while i < line.len() && line[i] != b'"' && line[i] != b'\\' {
            i += 1;
        }
        buf.extend_from_slice(&line[start..i]);
        match line.get(i) {
            None => {
                return Err(StringError::UnbalancedQuotes {
                    line: lineno,
                    column: open + 1,
                    quote: '"',
                })
            }
            Some(b'"') => return after_close(line, i, lineno),
            Some(_) => {} // backslash
        }
        let Some(&c) = line.get(i + 1) else {
            return Err(StringError::BadEscape {
                line: lineno,
                column: i + 1,
            });
        };
        if c == b'x' {
            if let (Some(hi), Some(lo)) = (
                line.get(i + 2).and_then(|&h| hex_value(h)),
                line.get(i + 3).and_then(|&l| hex_value(l)),
            ) {
                buf.put_u8(hi << 4 | lo);
                i += 4;
                continue;
            }
        }
        buf.put_u8(match c {
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'a' => 0x07,
            b'b' => 0x08,
            other => other,
        });
        i += 2;
    }
}

/// Decodes the single-quoted part opened at `open`; returns the index after
/// the closing quote.
fn decode_single(
    line: &[u8],
    open: usize,
    lineno: usize,
    buf: &mut BytesMut,
) -> Result<usize, StringError> {
    let mut i = open + 1;
    loop {
        let start = i;
        while i < line.len() && line[i] != b'\'' && line[i] != b'\\' {
            i += 1;
        }
        buf.extend_from_slice(&line[start..i]);
        match line.get(i) {
            None => {
                return Err(StringError::UnbalancedQuotes {
                    line: lineno,
                    column: open + 1,
                    quote: '\'',
                })
            }
            Some(b'\'') => return after_close(line, i, lineno),
            Some(_) if line.get(i + 1) == Some(&b'\'') => {
                buf.put_u8(b'\'');
                i += 2;
            }
            Some(_) => {
                buf.put_u8(b'\\');
                i += 1;
            }
        }
    }
}

/// Checks what follows the closing quote at `close`; returns the index after it.
fn after_close(line: &[u8], close: usize, lineno: usize) -> Result<usize, StringError> {
    match line.get(close + 1) {
        Some(&b) if !is_space(b) => Err(StringError::TextAfterQuote {
            line: lineno,
            column: close + 1,
        }),
        _ => Ok(close + 1),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(commands: &[Command]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(commands, &mut out);
        out.to_vec()
    }

    fn enc_words(words: &[&[u8]]) -> Vec<u8> {
        enc(&[Command::from_parts(words)])
    }

    fn dec(payload: &[u8]) -> Vec<Vec<Vec<u8>>> {
        decode(payload)
            .unwrap()
            .into_iter()
            .map(|c| c.args().iter().map(|a| a.to_vec()).collect())
            .collect()
    }

    /// `text` followed by a line end.
    fn nl(text: &[u8]) -> Vec<u8> {
        [text, b"\n"].concat()
    }

    fn words(ws: &[&[u8]]) -> Vec<Vec<u8>> {
        ws.iter().map(|w| w.to_vec()).collect()
    }

    fn round_trip(commands: &[Command]) {
        let payload = enc(commands);
        assert_eq!(decode(&payload).unwrap(), commands);
    }

    #[test]
    fn encodes_the_documented_example() {
        let cmd = Command::from_parts([&b"set"[..], b"a b", b"\x00\xff"]);
        assert_eq!(
            enc(std::slice::from_ref(&cmd)),
            nl(br#"set "a b" "\x00\xff""#)
        );
        round_trip(&[cmd]);
        // Words are kept as sent: the name's case is not changed.
        assert_eq!(enc_words(&[b"SET", b"Key", b"v"]), b"SET Key v\n");
    }

    #[test]
    fn empty_word_is_two_quotes() {
        assert_eq!(enc_words(&[b"set", b"", b"x"]), b"set \"\" x\n");
        assert_eq!(dec(b"set \"\" x"), vec![words(&[b"set", b"", b"x"])]);
        assert_eq!(dec(b"set '' x"), vec![words(&[b"set", b"", b"x"])]);
        round_trip(&[Command::from_parts([&b""[..]])]);
    }

    #[test]
    fn special_bytes() {
        assert_eq!(enc_words(&[b"\0"]), nl(br#""\x00""#));
        assert_eq!(enc_words(&[b"a\r\nb"]), nl(br#""a\r\nb""#));
        assert_eq!(
            enc_words(&[b"\t\x07\x08\x0b\x0c\x1b\x7f"]),
            nl(br#""\t\a\b\x0b\x0c\x1b\x7f""#)
        );
        assert_eq!(enc_words(&[br#"it's "q" \"#]), nl(br#""it's \"q\" \\""#));
        // Quotes and backslash force quoting even without spaces.
        assert_eq!(enc_words(&[b"'"]), b"\"'\"\n");
        assert_eq!(enc_words(&[b"a\\b"]), b"\"a\\\\b\"\n");
        // Invalid UTF-8 and high bytes.
        assert_eq!(enc_words(&[b"\xc3\x28\xff\xfe"]), nl(br#""\xc3(\xff\xfe""#));
        for w in [
            &b"\0"[..],
            b"\r\n",
            b"\n",
            b"\r",
            b"\xc3\x28",
            b"\xf0\x28\x8c\xbc",
            b"\\x41",
        ] {
            round_trip(&[Command::from_parts([&b"set"[..], b"k", w])]);
        }
    }

    #[test]
    fn all_byte_values_in_one_word() {
        let all: Vec<u8> = (0..=255u8).collect();
        let payload = enc_words(&[b"set", b"k", &all]);
        // Reference: the grammar written out byte by byte.
        let mut expected = b"set k \"".to_vec();
        for b in 0..=255u8 {
            match b {
                b'\\' => expected.extend_from_slice(b"\\\\"),
                b'"' => expected.extend_from_slice(b"\\\""),
                b'\n' => expected.extend_from_slice(b"\\n"),
                b'\r' => expected.extend_from_slice(b"\\r"),
                b'\t' => expected.extend_from_slice(b"\\t"),
                0x07 => expected.extend_from_slice(b"\\a"),
                0x08 => expected.extend_from_slice(b"\\b"),
                0x20..=0x7e => expected.push(b),
                _ => expected.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            }
        }
        expected.extend_from_slice(b"\"\n");
        assert_eq!(payload, expected);
        assert!(payload[..payload.len() - 1]
            .iter()
            .all(|b| (0x20..=0x7e).contains(b)));
        assert_eq!(dec(&payload), vec![words(&[b"set", b"k", &all])]);
        // Every single byte as its own word, too.
        let cmd = Command::new((0..=255u8).map(|b| Bytes::from(vec![b])).collect());
        round_trip(&[cmd]);
    }

    #[test]
    fn bare_bytes_are_exactly_the_printable_ones_without_quotes_or_backslash() {
        for b in 0..=255u8 {
            let payload = enc_words(&[&[b]]);
            let bare = (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b'\'' | b'\\');
            assert_eq!(payload == [b, b'\n'], bare, "byte {b:#04x}");
        }
    }

    #[test]
    fn one_mebibyte_values() {
        let mut x: u32 = 12345;
        let binary: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let text = vec![b'a'; 1 << 20];
        let cmd = Command::from_parts([&b"set"[..], b"big", &binary]);
        round_trip(std::slice::from_ref(&cmd));
        let cmd2 = Command::from_parts([&b"set"[..], b"text", &text]);
        let payload = enc(std::slice::from_ref(&cmd2));
        assert_eq!(payload.len(), 4 + 5 + (1 << 20) + 1);
        assert_eq!(decode(&payload).unwrap(), vec![cmd2.clone()]);
        round_trip(&[cmd, cmd2]);
    }

    #[test]
    fn several_commands_in_one_payload() {
        let cmds = vec![
            Command::from_parts([&b"MULTI"[..]]),
            Command::from_parts([&b"set"[..], b"k 1", b"v\n"]),
            Command::from_parts([&b"incr"[..], b"counter"]),
            Command::from_parts([&b"hset"[..], b"h", b"", b"\xff"]),
            Command::from_parts([&b"EXEC"[..]]),
        ];
        let payload = enc(&cmds);
        assert_eq!(
            payload,
            b"MULTI\nset \"k 1\" \"v\\n\"\nincr counter\nhset h \"\" \"\\xff\"\nEXEC\n"
        );
        assert_eq!(decode(&payload).unwrap(), cmds);
        // encode appends; encode_command writes one line.
        let mut out = BytesMut::from(&b"x\n"[..]);
        encode_command(&cmds[2], &mut out);
        assert_eq!(&out[..], b"x\nincr counter\n");
        assert_eq!(decode(b"").unwrap(), vec![]);
        assert_eq!(enc(&[]), b"");
    }

    #[test]
    fn decodes_line_ends_and_blank_lines() {
        let expected = vec![words(&[b"set", b"a", b"b"]), words(&[b"get", b"a"])];
        assert_eq!(dec(b"set a b\r\nget a\r\n"), expected);
        assert_eq!(dec(b"set a b\nget a"), expected);
        assert_eq!(dec(b"\n\r\n  \t\nset a b\n\n\r\nget a\n\n"), expected);
        assert_eq!(dec(b"  set\t a  \x0b b \r\n\tget a \t"), expected);
        assert_eq!(dec(b"set \"a\"\r\n"), vec![words(&[b"set", b"a"])]);
    }

    #[test]
    fn decodes_what_redis_cli_accepts() {
        // Single quotes: only \' is an escape.
        assert_eq!(
            dec(br#"set 'a b' 'it\'s' 'c:\dir\n' '"x"'"#),
            vec![words(&[b"set", b"a b", b"it's", b"c:\\dir\\n", b"\"x\""])]
        );
        // Double quotes: \xHH in any hex case, named escapes, other \c is c.
        assert_eq!(
            dec(br#"set "\x41\x4a\x4A\xfF" "\n\r\t\a\b" "\q\\\"\'" "x'y""#),
            vec![words(&[
                b"set",
                b"AJJ\xff",
                b"\n\r\t\x07\x08",
                b"q\\\"'",
                b"x'y"
            ])]
        );
        // Malformed \x is the letter x followed by the text; \X is not hex.
        assert_eq!(
            dec(br#"a "\xzz" "\x4" "\X41" "\x""#),
            vec![words(&[b"a", b"xzz", b"x4", b"X41", b"x"])]
        );
        // Mixed: a bare part may run into a quoted part; bare \ is literal.
        assert_eq!(
            dec(br#"set k"ey 1" v'al ue' a\nb "" ''"#),
            vec![words(&[b"set", b"key 1", b"val ue", b"a\\nb", b"", b""])]
        );
        // Raw whitespace, high and NUL bytes inside quotes and bare words.
        assert_eq!(
            dec(b"set \"a\tb\" '\r c' \xff\x00\xc3"),
            vec![words(&[b"set", b"a\tb", b"\r c", b"\xff\x00\xc3"])]
        );
        // Closing quote followed directly by whitespace or line end.
        assert_eq!(
            dec(b"\"a\"\t'b'\r\n\"c\""),
            vec![words(&[b"a", b"b"]), words(&[b"c"])]
        );
    }

    #[test]
    fn errors_carry_line_numbers() {
        let unbalanced = decode(b"set a b\nset \"abc\n").unwrap_err();
        assert_eq!(
            unbalanced,
            StringError::UnbalancedQuotes {
                line: 2,
                column: 5,
                quote: '"'
            }
        );
        assert_eq!(
            unbalanced.to_string(),
            "line 2: unbalanced quotes: \" opened at column 5 is not closed"
        );
        assert_eq!(
            decode(b"\r\n\r\nget 'x\r\nset a b\r\n").unwrap_err(),
            StringError::UnbalancedQuotes {
                line: 3,
                column: 5,
                quote: '\''
            }
        );
        // An escaped closing quote does not close.
        assert_eq!(decode(br#"set "abc\""#).unwrap_err().line(), 1);
        assert!(matches!(
            decode(br"a 'it\'").unwrap_err(),
            StringError::UnbalancedQuotes { quote: '\'', .. }
        ));
        // A newline inside quotes is not allowed: lines are split first.
        assert_eq!(decode(b"set \"a\nb\"").unwrap_err().line(), 1);
        let bad_escape = decode(b"ping\nset k \"abc\\").unwrap_err();
        assert_eq!(
            bad_escape,
            StringError::BadEscape {
                line: 2,
                column: 11
            }
        );
        assert!(bad_escape.to_string().contains("bad escape"));
        let after = decode(b"ping\n\nset \"a\"b c\n").unwrap_err();
        assert_eq!(after, StringError::TextAfterQuote { line: 3, column: 7 });
        assert_eq!(after.line(), 3);
        assert_eq!(after.column(), 7);
        assert!(after
            .to_string()
            .starts_with("line 3, column 7: closing quote"));
        assert_eq!(
            decode(b"set 'a''b'").unwrap_err(),
            StringError::TextAfterQuote { line: 1, column: 7 }
        );
        assert_eq!(
            decode(b"set \"a\"\"b\"").unwrap_err(),
            StringError::TextAfterQuote { line: 1, column: 7 }
        );
    }

    #[test]
    fn decoded_words_share_one_buffer() {
        let payload = b"set k v\nset \"k 2\" '\\x'\n";
        let cmds = decode(payload).unwrap();
        let ptrs: Vec<*const u8> = cmds
            .iter()
            .flat_map(|c| c.args().iter().map(|a| a.as_ptr()))
            .collect();
        assert!(ptrs.windows(2).all(|w| w[0] < w[1]));
        assert!((ptrs[ptrs.len() - 1] as usize) - (ptrs[0] as usize) < payload.len());
    }

    fn word_strategy() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            3 => any::<u8>(),
            2 => prop::sample::select(&b" \"'\\\n\r\t\x07\x08\x00\x7f\xffax"[..]),
        ];
        prop::collection::vec(byte, 0..24)
    }

    proptest! {
        #[test]
        fn round_trips(
            cmds in prop::collection::vec(prop::collection::vec(word_strategy(), 1..6), 0..8)
        ) {
            let commands: Vec<Command> = cmds.iter().map(Command::from_parts).collect();
            let payload = enc(&commands);
            prop_assert!(payload.iter().all(|&b| b == b'\n' || (0x20..=0x7e).contains(&b)));
            prop_assert_eq!(payload.iter().filter(|&&b| b == b'\n').count(), commands.len());
            prop_assert_eq!(decode(&payload).unwrap(), commands);
        }

        #[test]
        fn decode_never_panics(payload in prop::collection::vec(
            prop_oneof![any::<u8>(), prop::sample::select(&b" \"'\\x4\n\r"[..])],
            0..64,
        )) {
            if let Ok(commands) = decode(&payload) {
                // Whatever decodes re-encodes to something that decodes the same.
                prop_assert_eq!(decode(&enc(&commands)).unwrap(), commands);
            }
        }
    }
}

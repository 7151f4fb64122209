//! Keys and values as an operator can read them, whatever their bytes.
//!
//! Keys are bytes: a report must show any key unambiguously and still
//! read naturally when it is text. Valid UTF-8 stays as it is, control
//! characters and bytes that are not UTF-8 become `\xNN` (or `\u{NNNN}`
//! for the C1 controls), and a backslash is doubled so that an escape in
//! the output always comes from the escaping.

use std::fmt::Write;

/// `bytes` as text: UTF-8 kept, control and invalid bytes escaped.
pub fn escape(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '\n' => text.push_str("\\n"),
                '\r' => text.push_str("\\r"),
                '\t' => text.push_str("\\t"),
                c if c.is_control() && (c as u32) < 0x80 => {
                    let _ = write!(text, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(text, "\\u{{{:04x}}}", c as u32);
                }
                c => text.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(text, "\\x{b:02x}");
        }
    }
    text
}

pub use crate::admin::hex;

/// How many bytes of a value a description shows.
const PREVIEW_BYTES: usize = 64;

/// A value in a description: quoted and escaped, cut after
/// [`PREVIEW_BYTES`] with its full length said, since values can be large.
pub fn preview(bytes: &[u8]) -> String {
    if bytes.len() <= PREVIEW_BYTES {
        return format!("\"{}\"", escape(bytes));
    }
    // Cut on a character boundary where the start is valid UTF-8.
    let mut cut = PREVIEW_BYTES;
    while cut > PREVIEW_BYTES - 4 && std::str::from_utf8(&bytes[..cut]).is_err() {
        cut -= 1;
    }
    if std::str::from_utf8(&bytes[..cut]).is_err() {
        cut = PREVIEW_BYTES;
    }
    format!("\"{}\"... ({} bytes)", escape(&bytes[..cut]), bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_bytes_are_escaped() {
        assert_eq!(escape(b"user:42"), "user:42");
        assert_eq!(escape("clé".as_bytes()), "clé");
        assert_eq!(escape(b"a\xffb"), "a\\xffb");
        assert_eq!(escape(b"\x00\x1b\x7f"), "\\x00\\x1b\\x7f");
        assert_eq!(escape(b"line\r\n\t"), "line\\r\\n\\t");
        assert_eq!(escape("\u{85}".as_bytes()), "\\u{0085}");
        // A literal backslash cannot be mistaken for an escape.
        assert_eq!(escape(b"\\xff"), "\\\\xff");
        // A truncated UTF-8 sequence is invalid bytes.
        assert_eq!(escape(b"\xc3"), "\\xc3");
    }

    #[test]
    fn hex_is_two_digits_a_byte() {
        assert_eq!(hex(b"key\x00\xff"), "6b657900ff");
        assert_eq!(hex(b""), "");
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let long = vec![b'a'; 100];
        assert_eq!(
            preview(&long),
            format!("\"{}\"... (100 bytes)", "a".repeat(64))
        );
        assert_eq!(preview(b"short"), "\"short\"");
        // Not cut inside a character.
        let mut text = "a".repeat(63).into_bytes();
        text.extend_from_slice("é".as_bytes());
        text.extend_from_slice(&[b'b'; 10]);
        assert_eq!(
            preview(&text),
            format!("\"{}\"... (75 bytes)", "a".repeat(63))
        );
    }
}

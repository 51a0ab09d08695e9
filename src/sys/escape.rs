//! Text from outside (paths, names, the environment) made safe for one
//! line on a terminal or in a log, and decodable back to its bytes:
//!
//! - `\\` for a backslash; `\n`, `\r`, `\t`;
//! - `\xNN` (two lower-case hex digits) for every other byte below 0x20,
//!   DEL (0x7f), each byte of a C1 control character (U+0080..U+009F, whose
//!   UTF-8 is `\xc2\x80`..`\xc2\x9f`), and each byte that is not part of
//!   valid UTF-8;
//! - every other character as it is (valid UTF-8).
//!
//! The script decodes it (`scripts/leakprobe_tool`: `\\`, `\n`, `\r`, `\t`,
//! `\xNN` back to bytes, then the file system's encoding); docs/published.md
//! ("Escaped text") says it for readers of dumps and logs.

use core::fmt::{self, Write};

/// Bytes shown escaped (see the module comment).
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    c => control(c, f)?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Writes `c`, escaped if it is a control character (C0, DEL, C1); a
/// backslash as it is (for lines of the library's own text: `Line`).
pub fn control(c: char, out: &mut impl Write) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c if c.is_control() => {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                write!(out, "\\x{b:02x}")?;
            }
            Ok(())
        }
        c => out.write_char(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_backslashes_and_bytes_that_are_not_utf8() {
        let shown = Escaped(b"a\\b\nc\x1b[31m\x7f\xc2\x9b\xff\xfe\xc3\xa9").to_string();
        assert_eq!(shown, "a\\\\b\\nc\\x1b[31m\\x7f\\xc2\\x9b\\xff\\xfe\u{e9}");
        assert!(!shown.chars().any(char::is_control));
    }
}

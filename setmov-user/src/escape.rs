//! Names from outside made safe to print: a VM can be named anything, newlines and terminal
//! escape sequences included, and so can a host (`--host-name`, its hostname file).

use std::borrow::Cow;

/// `text` with each control character written out as an escape: `\n`, `\r`, `\t`, and `\xNN`
/// for the other C0 and C1 controls and DEL; the bidirectional overrides and isolates (which
/// reorder what a terminal shows) as `\u{NNNN}`. Everything else, backslashes included, is left
/// as it is, so that ordinary names print unchanged. Used for the table, CSV, stream, summary
/// and `top` output; JSON has its own escaping.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if is_bidi_control(c) => out.push_str(&format!("\\u{{{:04x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

/// The embeddings, overrides and isolates of Unicode's bidirectional algorithm.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_written_out() {
        assert_eq!(escape_control("desk-1"), "desk-1");
        assert!(matches!(escape_control("désk 1\\x"), Cow::Borrowed(_)));
        assert_eq!(escape_control("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escape_control("\x1b[2Jgone"), "\\x1b[2Jgone");
        assert_eq!(escape_control("nul\0del\x7f"), "nul\\x00del\\x7f");
        // C1: the 8-bit CSI some terminals obey.
        assert_eq!(escape_control("\u{9b}31m"), "\\x9b31m");
        assert_eq!(escape_control("abc\u{202e}fed"), "abc\\u{202e}fed");
    }
}

//! Text chosen by whoever made it (executable names, paths, DNS names, command lines), made safe
//! to show: what must not reach a terminal or a line-based file as itself.

/// Whether a character must not reach a terminal or a line-based file as itself: control
/// characters (C0, DEL, C1: escape sequences, line breaks), the Unicode line and paragraph
/// separators, and the bidirectional overrides that make text read otherwise than it is.
/// Executable names, paths and DNS names are chosen by whoever made them.
pub fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Bytes as text, each invalid UTF-8 sequence replaced by `U+FFFD` as
/// [`String::from_utf8_lossy`] does; valid text (nearly all of it) is checked a word at a time
/// and copied once.
pub fn lossy(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lossy_text_is_what_the_standard_library_makes_of_it() {
        for b in [
            &b"/etc/app/token"[..],
            b"",
            "caf\u{e9} \u{1f600}".as_bytes(),
            b"a\xffb\xc3",
            b"\xe2\x82",
        ] {
            assert_eq!(super::lossy(b), String::from_utf8_lossy(b));
        }
    }
}

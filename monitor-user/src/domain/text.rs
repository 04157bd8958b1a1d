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

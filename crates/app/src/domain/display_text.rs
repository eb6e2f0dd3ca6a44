//! Cleaning text that other people will see (chat lines, live titles): characters that
//! reorder or hide text are removed, and line breaks become spaces, so a message cannot
//! disguise what it says or fake a `user: ...` line of its own.

/// Bidirectional embeddings and overrides (U+202A-U+202E), isolates (U+2066-U+2069),
/// the zero-width space (U+200B) and the byte-order mark / zero-width no-break space
/// (U+FEFF). U+200C and U+200D (zero-width non-joiner and joiner) stay: emoji sequences
/// and several scripts need them.
fn hides_or_reorders(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}' | '\u{FEFF}')
}

/// `raw` with hiding and reordering characters removed and each line break (`\r\n`,
/// `\n`, `\r`, and the Unicode line and paragraph separators) or tab turned into one
/// space. Other control characters are left for the caller to refuse or drop.
pub(crate) fn clean_display_text(raw: &str) -> String {
    let mut cleaned = String::with_capacity(raw.len());
    let mut previous_was_cr = false;
    for c in raw.chars() {
        let was_cr = previous_was_cr;
        previous_was_cr = c == '\r';
        match c {
            '\n' if was_cr => {}
            '\r' | '\n' | '\t' | '\u{2028}' | '\u{2029}' | '\u{85}' => cleaned.push(' '),
            c if hides_or_reorders(c) => {}
            c => cleaned.push(c),
        }
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_reordering_and_invisible_characters_and_flattens_lines() {
        let cases = [
            ("abc\u{202E}fed", "abcfed"),
            ("\u{2066}x\u{2069}", "x"),
            ("a\u{200B}b\u{FEFF}c", "abc"),
            ("line\nalice: fake", "line alice: fake"),
            ("a\r\nb\rc", "a b c"),
            ("a\u{2028}b", "a b"),
            ("tab\there", "tab here"),
            // Joiners stay: this is one family emoji.
            ("👩\u{200D}👩\u{200D}👧", "👩\u{200D}👩\u{200D}👧"),
            ("می\u{200C}خواهم", "می\u{200C}خواهم"),
        ];
        for (raw, expected) in cases {
            assert_eq!(clean_display_text(raw), expected, "{raw:?}");
        }
    }
}

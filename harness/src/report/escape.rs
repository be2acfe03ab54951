//! Making any text safe in the report formats. A kernel under test can print anything, and what
//! it prints reaches evidence, metric names, workload names and releases; report.md is posted as
//! a PR comment and appended to `$GITHUB_STEP_SUMMARY`, junit.xml is parsed by CI systems.
//!
//! - [`xml_text`]: only characters XML 1.0 allows (`Char` production: tab, newline, carriage
//!   return, U+0020–U+D7FF, U+E000–U+FFFD, U+10000–U+10FFFF); the template engine escapes markup.
//! - [`md_cell`]: text the harness made (names from the matrix, numbers): one table cell, no line
//!   breaks, no `|`, no raw HTML.
//! - [`md_code`]: text a guest made: an inline code span whose fence is longer than any backtick
//!   run inside, so nothing in it is parsed — no links, no images, no autolinks, no HTML.

/// Whether XML 1.0 allows `c` in a document at all (even as a character reference).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r')
        || ('\u{20}'..='\u{D7FF}').contains(&c)
        || ('\u{E000}'..='\u{FFFD}').contains(&c)
        || ('\u{10000}'..='\u{10FFFF}').contains(&c)
}

/// `s` without the characters XML 1.0 forbids, and without other control characters (an escape
/// sequence from a console is noise in a report).
pub fn xml_text(s: &str) -> String {
    s.chars()
        .filter(|c| xml_char(*c) && (!c.is_control() || matches!(c, '\t' | '\n' | '\r')))
        .collect()
}

/// Escape harness-made text for a markdown table cell: no line breaks, no `|`, no raw HTML.
pub fn md_cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Guest-made text as an inline code span that fits in a table cell: control characters
/// dropped, line breaks as spaces, `|` escaped (GFM splits table cells on it even inside code
/// spans, and turns `\|` back into `|` there), fenced with one more backtick than the longest
/// run inside and padded with a space on each side (CommonMark strips exactly one from each, so
/// text that starts or ends with a backtick or a space survives). Empty text is `–`.
pub fn md_code(s: &str) -> String {
    let text: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    if text.is_empty() {
        return "–".into();
    }
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    format!("{fence} {} {fence}", text.replace('|', "\\|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_loses_exactly_what_xml_forbids() {
        assert_eq!(xml_text("a\u{1b}[0m\tb\u{0}"), "a[0m\tb");
        assert_eq!(xml_text("6.12\u{FFFF}-rc\u{FFFE}1"), "6.12-rc1");
        assert_eq!(xml_text("é ✓ 𝄞 \u{E000}"), "é ✓ 𝄞 \u{E000}");
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        assert_eq!(md_cell("a|b\n<c>"), "a\\|b &lt;c&gt;");
    }

    #[test]
    fn guest_text_is_a_code_span_whatever_it_holds() {
        assert_eq!(md_code("EINVAL"), "` EINVAL `");
        assert_eq!(md_code("a`b"), "`` a`b ``");
        assert_eq!(md_code("``x```"), "```` ``x``` ````");
        assert_eq!(
            md_code("[docs](https://evil) | ![i](x)\n"),
            "` [docs](https://evil) \\| ![i](x)  `"
        );
        assert_eq!(md_code(""), "–");
    }
}

//! The one way text from outside reaches a report. A kernel under test can print anything, and
//! what it prints reaches evidence, metric names, workload names and releases; a run.json can be
//! written by hand and handed to `mmx report`, `mmx merge` or `mmx compare`, so every string in
//! it is outside text too (cell ids, kernel names, paths). report.md and compare.md are posted as
//! PR comments and appended to `$GITHUB_STEP_SUMMARY`, junit.xml is parsed by CI systems.
//!
//! The template environment ([`super::environment`]) applies these to every value it prints:
//!
//! - HTML and XML templates: [`xml_text`], then the template engine's markup escaping.
//! - Markdown templates: [`md`] — text that cannot be read as markdown stays as it is, anything
//!   else becomes a code span ([`md_code`], also the `code` filter), so nothing from outside can
//!   become a link, an image, a mention, an autolink, HTML, a heading or a broken table row.
//!
//! Every format loses the same characters first ([`shown`]): control characters, what XML 1.0
//! forbids, and the bidi overrides that make text read differently from what it is.

/// Whether XML 1.0 allows `c` in a document at all (even as a character reference).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r')
        || ('\u{20}'..='\u{D7FF}').contains(&c)
        || ('\u{E000}'..='\u{FFFD}').contains(&c)
        || ('\u{10000}'..='\u{10FFFF}').contains(&c)
}

/// Whether a report shows `c`: a character XML allows, no control character but tab and line
/// feed (an escape sequence from a console is noise; a carriage return is folded into a line
/// feed before this), no noncharacter, no bidi embedding, override or isolate.
fn shown(c: char) -> bool {
    let noncharacter = ('\u{FDD0}'..='\u{FDEF}').contains(&c) || (c as u32 & 0xFFFE) == 0xFFFE;
    let bidi = ('\u{202A}'..='\u{202E}').contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c);
    xml_char(c) && (!c.is_control() || matches!(c, '\t' | '\n')) && !noncharacter && !bidi
}

/// `s` with line breaks as `\n` (`\r\n` and a lone `\r` alike) and only the characters a report
/// shows.
fn clean(s: &str) -> String {
    s.replace("\r\n", "\n")
        .replace('\r', "\n")
        .chars()
        .filter(|c| shown(*c))
        .collect()
}

/// Text for an XML or HTML document: only characters it may hold; the template engine escapes
/// markup after this.
pub fn xml_text(s: &str) -> String {
    clean(s)
}

/// Whether `s` (clean, one line) reads as itself wherever markdown puts it: letters, digits, a
/// few punctuation marks that are markup nowhere but at the start of a line, and symbols outside
/// ASCII; not starting like a list item or a setext underline; no `www.` (an autolink).
fn inert(s: &str) -> bool {
    let mut chars = s.chars();
    let (Some(first), Some(last)) = (chars.next(), s.chars().last()) else {
        return false;
    };
    let second = chars.next();
    let starts_ok = match first {
        '-' | '+' => second.is_some_and(|c| c.is_ascii_digit()),
        c => c.is_alphanumeric() || !c.is_ascii(),
    };
    let digits = s.chars().take_while(|c| c.is_ascii_digit()).count();
    let list_item = digits > 0
        && digits <= 9
        && s[digits..].starts_with(['.', ')'])
        && s[digits + 1..].chars().next().is_none_or(|c| c == ' ');
    starts_ok
        && !first.is_whitespace()
        && !last.is_whitespace()
        && !list_item
        && !s.to_ascii_lowercase().contains("www.")
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    ' ' | '-' | '.' | ',' | ';' | '/' | '+' | '=' | '%' | '(' | ')' | '\''
                )
                || (!c.is_ascii() && !c.is_whitespace())
        })
}

/// Any text for a markdown document, in a table cell or in running text: as it is when it
/// cannot be read as markup ([`inert`]), else a code span ([`md_code`]). Line breaks become
/// spaces, and space around the text goes.
pub fn md(s: &str) -> String {
    let text = one_line(s).trim().to_string();
    if text.is_empty() || inert(&text) {
        text
    } else {
        code_span(&text)
    }
}

/// Any text as an inline code span that fits in a table cell (empty text is `–`).
pub fn md_code(s: &str) -> String {
    let text = one_line(s);
    if text.is_empty() {
        "–".into()
    } else {
        code_span(&text)
    }
}

fn one_line(s: &str) -> String {
    clean(s).replace(['\n', '\t'], " ")
}

/// `text` (clean, one line, not empty) as a code span: fenced with one more backtick than the
/// longest run inside and padded with a space on each side (CommonMark strips exactly one from
/// each, so text that starts or ends with a backtick or a space survives). GFM splits a table
/// row on every `|` that is not escaped, code spans included, and its row scanner takes `\` and
/// the punctuation after it as a pair: so each `|` becomes `\|`, and a backslash run before it
/// is doubled, so that no backslash of the text can pair with the escape's.
fn code_span(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let mut body = String::with_capacity(text.len() + 8);
    let mut backslashes = 0;
    for c in text.chars() {
        match c {
            '\\' => backslashes += 1,
            '|' => {
                body.push_str(&"\\".repeat(backslashes * 2));
                body.push_str("\\|");
                backslashes = 0;
            }
            c => {
                body.push_str(&"\\".repeat(backslashes));
                body.push(c);
                backslashes = 0;
            }
        }
    }
    body.push_str(&"\\".repeat(backslashes));
    let fence = "`".repeat(longest + 1);
    format!("{fence} {body} {fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_loses_exactly_what_xml_forbids_and_bidi_overrides() {
        assert_eq!(xml_text("a\u{1b}[0m\tb\u{0}"), "a[0m\tb");
        assert_eq!(xml_text("6.12\u{FFFF}-rc\u{FFFE}1"), "6.12-rc1");
        assert_eq!(xml_text("é ✓ 𝄞 \u{E000}"), "é ✓ 𝄞 \u{E000}");
        assert_eq!(xml_text("a\r\nb\rc\u{202E}d\u{2066}"), "a\nb\ncd");
    }

    #[test]
    fn plain_names_stay_plain() {
        for s in [
            "debian-6.12/1s2c1t/ext4/per-layer-L50-C10-P2-J2",
            "infra-error",
            "✅",
            "–",
            "kvm, tcg",
            "9048 ±12 (5)",
            "+3266.7%",
            "latency=10%",
            "a; b",
            "each pass's peak",
            "6.12.48+deb13-amd64",
        ] {
            assert_eq!(md(s), s);
        }
    }

    #[test]
    fn anything_else_is_a_code_span() {
        assert_eq!(md("EINVAL: x"), "` EINVAL: x `");
        assert_eq!(md("1. item"), "` 1. item `");
        assert_eq!(md("- x"), "` - x `");
        assert_eq!(md("www.example.com"), "` www.example.com `");
        assert_eq!(md("@user"), "` @user `");
        assert_eq!(md("a_b"), "` a_b `");
        assert_eq!(md(" x "), "x");
        assert_eq!(md("a\nb"), "a b");
        assert_eq!(md("\u{7}"), "");
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

    #[test]
    fn no_backslash_of_the_text_can_unescape_a_pipe() {
        assert_eq!(md_code("a\\|b"), "` a\\\\\\|b `");
        assert_eq!(md_code("a\\\\|b"), "` a\\\\\\\\\\|b `");
        assert_eq!(md_code("a\\b\\"), "` a\\b\\ `");
    }
}

//! One bounded line from text that came from outside: QEMU's, ssh's or apt's stderr, a guest's
//! evidence, a kernel's console. Wherever mmx prints one line per item (a doctor check, the
//! run's start line, a boot's progress line, the terminal summary), what it embeds goes through
//! here, so a two-line error from another program can never split an item over two lines, and
//! a flood can never make one line unbounded.

/// Joins the non-empty lines of folded text, so the reader still sees where one ended.
const SEPARATOR: &str = " ⏎ ";

/// Every non-empty line of `s`, trimmed and joined with ` ⏎ `, control characters dropped,
/// cut to `max` characters (the last one `…` when cut). Nothing is lost but the cut's tail:
/// QEMU's `failed to set MSR …` and the assertion on its next line both stay on the line.
pub fn fold(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    for line in s.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(SEPARATOR);
            n += SEPARATOR.chars().count();
        }
        // Copy no more than one character past `max`: a flood costs `max` characters.
        for c in line.chars().filter(|c| !c.is_control()) {
            if n > max {
                break;
            }
            out.push(c);
            n += 1;
        }
        if n > max {
            break;
        }
    }
    cut(out, max)
}

/// The first non-empty line of `s`, trimmed, control characters dropped, cut to `max`
/// characters: for a headline where the rest of the text is shown elsewhere.
pub fn first(s: &str, max: usize) -> String {
    let line = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    cut(line.chars().filter(|c| !c.is_control()).collect(), max)
}

fn cut(s: String, max: usize) -> String {
    if s.chars().count() > max {
        let mut c: String = s.chars().take(max.saturating_sub(1)).collect();
        c.push('…');
        c
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_line_error_folds_into_one_line() {
        let qemu = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n\
                    qemu-system-x86_64: ../target/i386/kvm/kvm.c:2994: kvm_buf_set_msrs: \
                    Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n";
        let f = fold(qemu, 1000);
        assert!(!f.contains('\n'), "{f}");
        assert!(
            f.contains("0x10a to 0x69 ⏎ qemu-system-x86_64: ../target"),
            "{f}"
        );
        assert!(f.ends_with("failed."), "{f}");
    }

    #[test]
    fn control_characters_and_blank_lines_go() {
        assert_eq!(fold("\r\n  a\u{1b}[0mb \r\n\n\tc\t\n", 80), "a[0mb ⏎ c");
        assert_eq!(fold("", 10), "");
    }

    #[test]
    fn lines_are_bounded() {
        assert_eq!(fold("abcdef", 4), "abc…");
        let flood = "x".repeat(100_000) + "\n" + &"y".repeat(100_000);
        let f = fold(&flood, 200);
        assert_eq!(f.chars().count(), 200);
        assert!(f.ends_with('…'));
    }

    #[test]
    fn first_keeps_the_headline() {
        assert_eq!(first("\nfirst\nsecond", 80), "first");
        assert_eq!(first("a\u{1b}[0mb", 10), "a[0mb");
        assert_eq!(first("abcdef", 4), "abc…");
    }
}

//! Who prints, checked: only `main.rs` and the terminal (`terminal.rs`) write to stdout or
//! stderr. Every other room reports what it has to say into a sink (`events::Sink`) or returns
//! it, so a run's output has one place that knows whether a bar is drawn, and a library call
//! prints nothing behind its caller's back.
//!
//! Read from the source of every file under `harness/src`, with comments and string literals
//! blanked out: the print macros (`println!`, `eprintln!`, `print!`, `eprint!`, `dbg!`), the
//! process's own streams (`io::stdout`, `io::stderr`) and progress bars (`indicatif`). Test code
//! is exempt: `test_support.rs`, an item under `#[cfg(test)]`, and a module file declared under
//! it (`#[cfg(test)] mod tests;`). A failure names every file:line.

mod source;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use source::{code_only, line_of, repo, rust_files};

/// The files that may print, relative to `harness/src`.
const ALLOWED: [&str; 3] = ["main.rs", "terminal.rs", "test_support.rs"];

/// What prints, as it appears in code. A macro is matched with its `!`; a path on a whole word.
const PRINTING: [&str; 8] = [
    "println!",
    "eprintln!",
    "print!",
    "eprint!",
    "dbg!",
    "io::stdout",
    "io::stderr",
    "indicatif",
];

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Each print in `code` outside `skip` (test code), as `(line, what)`.
fn prints(code: &[char], skip: &[(usize, usize)]) -> Vec<(usize, &'static str)> {
    let mut out = Vec::new();
    for i in 0..code.len() {
        if i > 0 && is_ident(code[i - 1]) {
            continue;
        }
        if skip.iter().any(|&(from, to)| (from..to).contains(&i)) {
            continue;
        }
        for what in PRINTING {
            let n = what.chars().count();
            let whole_word = code.get(i + n).is_none_or(|c| !is_ident(*c));
            if code[i..].iter().take(n).copied().eq(what.chars()) && whole_word {
                out.push((line_of(code, i), what));
            }
        }
    }
    out
}

/// Test code in `code`: the spans of items under `#[cfg(test)]` (a `mod tests { … }`, a
/// test-only function), and the names of modules declared there without a body
/// (`mod tests;`), whose files are test code whole.
fn test_code(code: &[char]) -> (Vec<(usize, usize)>, Vec<String>) {
    let text: String = code.iter().collect();
    let attr = "#[cfg(test)]";
    let (mut spans, mut modules) = (Vec::new(), Vec::new());
    let mut from = 0;
    while let Some(at) = text[from..].find(attr).map(|k| from + k) {
        from = at + attr.len();
        // Byte offsets in `text` and char positions in `code` differ once a character is more
        // than one byte: count characters up to here.
        let start = text[..at].chars().count();
        let rest: Vec<char> = text[from..].chars().collect();
        let (brace, semi) = (
            rest.iter().position(|c| *c == '{'),
            rest.iter().position(|c| *c == ';'),
        );
        match (brace, semi) {
            (Some(b), Some(s)) if s < b => modules.extend(module_name(&rest[..s])),
            (None, Some(s)) => modules.extend(module_name(&rest[..s])),
            (Some(b), _) => {
                let mut depth = 0usize;
                let mut end = rest.len();
                for (k, c) in rest.iter().enumerate().skip(b) {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let item_start = start + attr.chars().count();
                spans.push((start, item_start + end));
            }
            (None, None) => {}
        }
    }
    (spans, modules)
}

/// `mod tests` (or `pub(crate) mod testing`) → its name.
fn module_name(item: &[char]) -> Option<String> {
    let item: String = item.iter().collect();
    let mut words = item.split_whitespace();
    words.find(|w| *w == "mod")?;
    words.next().map(str::to_string)
}

/// Where the files of `file`'s child modules are: beside it for `mod.rs`, `lib.rs` and
/// `main.rs`, in the folder of its name otherwise (`run.rs` → `run/`).
fn child_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new("."));
    match file.file_name().and_then(|n| n.to_str()) {
        Some("mod.rs" | "lib.rs" | "main.rs") => parent.to_path_buf(),
        _ => file.with_extension(""),
    }
}

/// Every print outside the allowed files and test code, as `file:line: what`.
fn violations(src: &Path) -> Vec<String> {
    let files = rust_files(src);
    let code: Vec<(PathBuf, Vec<char>)> = files
        .iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (f.clone(), code_only(&text))
        })
        .collect();
    // Files that are test modules whole, and everything under their folders.
    let mut test_files: BTreeSet<PathBuf> = BTreeSet::new();
    for (file, code) in &code {
        for name in test_code(code).1 {
            let dir = child_dir(file);
            test_files.insert(dir.join(format!("{name}.rs")));
            test_files.insert(dir.join(name));
        }
    }
    let mut out = Vec::new();
    for (file, code) in &code {
        let rel = file.strip_prefix(src).unwrap_or(file);
        if ALLOWED.iter().any(|a| rel == Path::new(a))
            || test_files.iter().any(|t| file.starts_with(t))
        {
            continue;
        }
        let (spans, _) = test_code(code);
        for (line, what) in prints(code, &spans) {
            out.push(format!(
                "harness/src/{}:{line}: {what}",
                rel.display().to_string().replace('\\', "/")
            ));
        }
    }
    out
}

#[test]
fn only_main_and_the_terminal_print() {
    let src = repo().join("harness/src");
    for allowed in ALLOWED {
        assert!(
            src.join(allowed).is_file(),
            "harness/src/{allowed} is allowed to print but is gone: update ALLOWED"
        );
    }
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "printing outside main.rs and terminal.rs (report into an `events::Sink`, or return \
         the text to main):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_finds_prints_in_code_and_skips_test_code_and_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("room")).expect("room/");
    let write = |rel: &str, text: &str| std::fs::write(src.join(rel), text).expect("write");
    write(
        "room/mod.rs",
        r#"//! A room that says "println!" in its doc.
pub fn loud() {
    let s = "eprintln!(\"in a string\")";
    eprintln!("oops {s}");
}
fn bar() -> indicatif::ProgressBar { todo() }
#[cfg(test)]
mod tests;
#[cfg(test)]
fn helper() { println!("test-only"); }
fn writes() { use std::io::Write; let _ = writeln!(std::io::stdout(), "x"); }
#[cfg(test)]
mod inline {
    fn t() { dbg!(1); }
}
fn fine() { my_println!("not the macro"); }
"#,
    );
    write("room/tests.rs", "fn t() { println!(\"a test\"); }\n");
    write("main.rs", "fn main() { println!(\"allowed\"); }\n");
    write("other.rs", "fn f() {\n    print!(\"x\");\n}\n");
    let found = violations(src);
    assert_eq!(
        found,
        [
            "harness/src/other.rs:2: print!",
            "harness/src/room/mod.rs:4: eprintln!",
            "harness/src/room/mod.rs:6: indicatif",
            "harness/src/room/mod.rs:11: io::stdout",
        ]
    );
}

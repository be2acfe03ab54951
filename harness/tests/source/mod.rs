//! Reading the harness's own source, shared by the tests that check it (layers.rs: the floors;
//! output.rs: who prints): the files, and their code with comments and literals blanked out.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::path::{Path, PathBuf};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness/ has a parent")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, sorted.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The source with comments, string literals and char literals blanked out (newlines kept, so
/// positions still give line numbers).
pub fn code_only(text: &str) -> Vec<char> {
    let s: Vec<char> = text.chars().collect();
    let mut out = s.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to.min(s.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < s.len() {
        let at = |k: usize| s.get(i + k).copied().unwrap_or('\0');
        if at(0) == '/' && at(1) == '/' {
            let end = (i..s.len()).find(|&j| s[j] == '\n').unwrap_or(s.len());
            blank(&mut out, i, end);
            i = end;
        } else if at(0) == '/' && at(1) == '*' {
            // Block comments nest.
            let (mut j, mut depth) = (i, 0);
            while j < s.len() {
                if s[j] == '/' && s.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if s[j] == '*' && s.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if (at(0) == 'r' || (at(0) == 'b' && at(1) == 'r'))
            && (i == 0 || !ident(s[i - 1]))
            && {
                let r = if at(0) == 'b' { 1 } else { 0 };
                let hashes = (1..).take_while(|&k| at(r + k) == '#').count();
                at(r + 1 + hashes) == '"'
            }
        {
            // Raw strings: r"…", r#"…"#, br#"…"#.
            let r = if at(0) == 'b' { 1 } else { 0 };
            let hashes = (1..).take_while(|&k| at(r + k) == '#').count();
            let body = i + r + 1 + hashes + 1;
            let mut j = body;
            while j < s.len() {
                if s[j] == '"' && (1..=hashes).all(|k| s.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            blank(&mut out, i, j);
            i = j;
        } else if at(0) == '"' {
            let mut j = i + 1;
            while j < s.len() && s[j] != '"' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if at(0) == '\'' && at(1) == '\\' {
            // An escaped char literal: '\n', '\'', '\u{1b}'.
            let end = (i + 3..s.len()).find(|&j| s[j] == '\'').unwrap_or(s.len());
            blank(&mut out, i, end + 1);
            i = end + 1;
        } else if at(0) == '\'' && at(2) == '\'' {
            blank(&mut out, i, i + 3);
            i += 3;
        } else {
            // A lifetime's quote, or code.
            i += 1;
        }
    }
    out
}

/// The line (from 1) of position `pos` in `code`.
pub fn line_of(code: &[char], pos: usize) -> usize {
    1 + code[..pos.min(code.len())]
        .iter()
        .filter(|c| **c == '\n')
        .count()
}

//! The floors of ARCHITECTURE.md, checked: a room of the harness (a top-level module of
//! `harness/src`) imports only rooms on its own floor or below, no two rooms import each other
//! and no circle of rooms closes, and every room is on a floor and in the table of rooms.
//!
//! Imports are read from the source itself, every file under `harness/src`: `use crate::…`
//! (grouped `use crate::{a, b::c}` too), `crate::room::` paths in code, and `super::` paths that
//! climb out of their room; `harness::room` in `main.rs`, which is its own crate. Comments,
//! doc links and string literals are not imports and are skipped. The floors are the fenced
//! ```` ```floors ```` block under ARCHITECTURE.md's "Floors" heading, lowest first, one floor a
//! line (`name: room room …`). There is no list of exceptions: a room that must import upward
//! is on the wrong floor, or the import is in the wrong room.

mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use source::{code_only, line_of, repo, rust_files};

/// One `crate::room…` path found in a file.
#[derive(Debug, Clone)]
struct Import {
    /// The room importing.
    from: String,
    /// Relative to the repository root: `harness/src/kernels/build.rs`.
    file: String,
    line: usize,
    /// The room it reaches.
    room: String,
    /// The path as written (a group shows the member that names the room).
    text: String,
}

/// A floor of ARCHITECTURE.md.
#[derive(Debug)]
struct Floor {
    name: String,
    rooms: Vec<String>,
}

fn architecture() -> String {
    let path = repo().join("ARCHITECTURE.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The floors, lowest first, from the ```` ```floors ```` block under `## Floors`.
fn floors(doc: &str) -> Vec<Floor> {
    let mut lines = doc.lines().skip_while(|l| l.trim() != "## Floors");
    assert!(
        lines.next().is_some(),
        "ARCHITECTURE.md has no `## Floors` heading"
    );
    let mut lines = lines.skip_while(|l| l.trim() != "```floors");
    assert!(
        lines.next().is_some(),
        "ARCHITECTURE.md's Floors section has no ```floors block"
    );
    let mut out = Vec::new();
    for line in lines.take_while(|l| l.trim() != "```") {
        if line.trim().is_empty() {
            continue;
        }
        let (name, rooms) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("ARCHITECTURE.md floors: `{line}` is not `name: rooms…`"));
        let rooms: Vec<String> = rooms.split_whitespace().map(str::to_string).collect();
        assert!(
            !rooms.is_empty(),
            "ARCHITECTURE.md floors: `{line}` names no room"
        );
        out.push(Floor {
            name: name.trim().to_string(),
            rooms,
        });
    }
    assert!(!out.is_empty(), "ARCHITECTURE.md's floors block is empty");
    out
}

/// The top-level entries of a crate's `src`: `cell` for `cell.rs`, `backend` for `backend/`.
fn rooms_of(src: &Path) -> BTreeSet<String> {
    let entries = std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    entries
        .map(|e| e.expect("directory entry").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            if p.is_dir() {
                Some(name)
            } else {
                name.strip_suffix(".rs").map(str::to_string)
            }
        })
        .collect()
}

/// How deep a file's module is below the crate root: `cell.rs` and `backend/mod.rs` are 1,
/// `backend/qemu/mod.rs` and `run/tests.rs` are 2, `lib.rs` and `main.rs` are 0.
fn file_depth(rel_to_src: &Path) -> usize {
    let parts: Vec<String> = rel_to_src
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    match parts.last().map(String::as_str) {
        Some("lib.rs" | "main.rs") if parts.len() == 1 => 0,
        Some("mod.rs") => parts.len() - 1,
        _ => parts.len(),
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier starting at `i`, if one does.
fn ident_at(code: &[char], i: usize) -> Option<String> {
    let word: String = code[i.min(code.len())..]
        .iter()
        .take_while(|c| is_ident(**c))
        .collect();
    (!word.is_empty()).then_some(word)
}

fn skip_ws(code: &[char], mut i: usize) -> usize {
    while i < code.len() && code[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The top-level members of the brace group opening at `open`, each with its position:
/// `{a, b::c, d::{e, f}}` gives `a`, `b::c`, `d::{e, f}`.
fn group_members(code: &[char], open: usize) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut j) = (0usize, open + 1, open);
    while j < code.len() {
        match code[j] {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    out.push((start, code[start..j].iter().collect::<String>()));
                    break;
                }
            }
            ',' if depth == 1 => {
                out.push((start, code[start..j].iter().collect::<String>()));
                start = j + 1;
            }
            _ => {}
        }
        j += 1;
    }
    out.into_iter()
        .map(|(p, m)| (p, m.split_whitespace().collect::<Vec<_>>().join(" ")))
        .filter(|(_, m)| !m.is_empty())
        .collect()
}

/// The rooms a path reaches at `i`, just past its `crate::` (or `harness::`, or the `super::`s
/// that climb to the root): one room, or each member of a group.
fn reached(code: &[char], i: usize, prefix: &str) -> Vec<(usize, String, String)> {
    if code.get(i) == Some(&'{') {
        return group_members(code, i)
            .into_iter()
            .filter_map(|(p, member)| {
                let p = skip_ws(code, p);
                let room = ident_at(code, p)?;
                (room != "self").then(|| (p, room, format!("{prefix}{{… {member} …}}")))
            })
            .collect();
    }
    let Some(room) = ident_at(code, i) else {
        return Vec::new();
    };
    let path: String = code[i..]
        .iter()
        .take_while(|c| is_ident(**c) || **c == ':')
        .collect();
    let path = path.trim_end_matches(':');
    vec![(i, room, format!("{prefix}{path}"))]
}

/// Every import of another room in one file.
fn imports_of(repo: &Path, src: &Path, file: &Path) -> Vec<Import> {
    let rel_src = file.strip_prefix(src).expect("file under src");
    let rel = file
        .strip_prefix(repo)
        .expect("file under the repository")
        .to_string_lossy()
        .into_owned();
    let own = room_of(rel_src);
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let code = code_only(&text);
    // `main.rs` is the binary: it reaches the library's rooms as `harness::`.
    let root_name = if rel_src == Path::new("main.rs") {
        "harness"
    } else {
        "crate"
    };
    let depth = file_depth(rel_src);
    let mut out = Vec::new();
    // Inline `mod name { … }` blocks: each makes `super` one level shorter.
    let mut inline: Vec<usize> = Vec::new();
    let mut braces = 0usize;
    let mut i = 0;
    while i < code.len() {
        let c = code[i];
        if c == '{' {
            braces += 1;
            i += 1;
            continue;
        }
        if c == '}' {
            if inline.last() == Some(&braces) {
                inline.pop();
            }
            braces = braces.saturating_sub(1);
            i += 1;
            continue;
        }
        let boundary =
            i == 0 || !(is_ident(code[i - 1]) || code[i - 1] == '$' || code[i - 1] == ':');
        if !boundary || !is_ident(c) {
            i += 1;
            continue;
        }
        let word = ident_at(&code, i).unwrap_or_default();
        let after = i + word.chars().count();
        if word == "mod" {
            let name_at = skip_ws(&code, after);
            if let Some(name) = ident_at(&code, name_at) {
                let open = skip_ws(&code, name_at + name.chars().count());
                if code.get(open) == Some(&'{') {
                    inline.push(braces + 1);
                }
            }
        }
        let path_sep = |k: usize| code.get(k) == Some(&':') && code.get(k + 1) == Some(&':');
        if word == root_name && path_sep(after) {
            for (p, room, text) in reached(&code, after + 2, &format!("{root_name}::")) {
                out.push((p, room, text));
            }
        } else if word == "super" && path_sep(after) {
            // Count the `super::`s; climbing as high as the crate root reaches a room.
            let (mut supers, mut k) = (1, after + 2);
            while ident_at(&code, k).as_deref() == Some("super") && path_sep(k + 5) {
                supers += 1;
                k += 7;
            }
            if supers == depth + inline.len() {
                let prefix = "super::".repeat(supers);
                for (p, room, text) in reached(&code, k, &prefix) {
                    out.push((p, room, text));
                }
            }
            i = k;
            continue;
        }
        i = after;
    }
    out.into_iter()
        .filter(|(_, room, _)| room != &own)
        .map(|(p, room, text)| Import {
            from: own.clone(),
            file: rel.clone(),
            line: line_of(&code, p),
            room,
            text,
        })
        .collect()
}

/// The room of a file: its first component under `src`.
fn room_of(rel_to_src: &Path) -> String {
    let first = rel_to_src
        .iter()
        .next()
        .expect("a file has a name")
        .to_string_lossy();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// A circle in the room graph, as the imports that close it (one per step), when there is one
/// through `start`.
fn circle_through(
    start: &str,
    edges: &BTreeMap<(String, String), Vec<Import>>,
) -> Option<Vec<Import>> {
    // Breadth-first from `start`, remembering how each room was reached.
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut todo = std::collections::VecDeque::from([start.to_string()]);
    while let Some(room) = todo.pop_front() {
        for (from, to) in edges.keys().filter(|(f, _)| f == &room) {
            if to == start {
                let mut path = vec![(from.clone(), to.clone())];
                let mut at = from.clone();
                while at != start {
                    let prev = came_from[&at].clone();
                    path.push((prev.clone(), at.clone()));
                    at = prev;
                }
                path.reverse();
                return Some(path.iter().map(|k| edges[k][0].clone()).collect());
            }
            if to != start && !came_from.contains_key(to) {
                came_from.insert(to.clone(), room.clone());
                todo.push_back(to.clone());
            }
        }
    }
    None
}

/// Whether ARCHITECTURE.md's table of rooms (the `## Where things live` section) names `path`.
fn table_names(doc: &str, path: &str) -> bool {
    doc.lines()
        .skip_while(|l| l.trim() != "## Where things live")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with('|'))
        .any(|l| l.contains(&format!("`{path}`")))
}

/// What does not hold of `floors` (lowest first) for `rooms` and their `imports`.
fn check(floors: &[Floor], rooms: &BTreeSet<String>, imports: &[Import]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut floor_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (n, f) in floors.iter().enumerate() {
        for r in &f.rooms {
            if let Some(prev) = floor_of.insert(r, n) {
                problems.push(format!(
                    "ARCHITECTURE.md floors: `{r}` is on two floors, `{}` and `{}`",
                    floors[prev].name, f.name
                ));
            }
        }
    }
    for r in rooms {
        if !floor_of.contains_key(r.as_str()) {
            problems.push(format!(
                "harness/src/{r}: a room on no floor; put it on one in ARCHITECTURE.md's Floors, \
                 with a line saying why"
            ));
        }
    }
    for r in floor_of.keys() {
        if !rooms.contains(*r) {
            problems.push(format!(
                "ARCHITECTURE.md floors: `{r}` is on a floor but harness/src has no such room"
            ));
        }
    }

    // Every import that does not go up. A circle needs an import that goes up (reported here)
    // or closes among rooms of one floor (reported below), so these are all a circle can use
    // that was not reported already.
    let mut edges: BTreeMap<(String, String), Vec<Import>> = BTreeMap::new();
    for imp in imports {
        if let (Some(&a), Some(&b)) = (
            floor_of.get(imp.from.as_str()),
            floor_of.get(imp.room.as_str()),
        ) {
            if b > a {
                problems.push(format!(
                    "{}:{}: `{}`: {} (floor {a}, `{}`) imports {} (floor {b}, `{}`), a higher \
                     floor",
                    imp.file,
                    imp.line,
                    imp.text,
                    imp.from,
                    floors[a].name,
                    imp.room,
                    floors[b].name
                ));
                continue;
            }
        }
        edges
            .entry((imp.from.clone(), imp.room.clone()))
            .or_default()
            .push(imp.clone());
    }

    // Circles on one floor (two rooms importing each other is the shortest), each reported
    // once.
    let floor = |r: &str| {
        floor_of
            .get(r)
            .map_or("no floor".to_string(), |&n| format!("floor {n}"))
    };
    let mut seen: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    for room in rooms {
        let Some(circle) = circle_through(room, &edges) else {
            continue;
        };
        if !seen.insert(circle.iter().map(|i| i.from.clone()).collect()) {
            continue;
        }
        let steps: Vec<String> = circle
            .iter()
            .map(|i| {
                format!(
                    "{} ({}) → {} ({}) at {}:{} `{}`",
                    i.from,
                    floor(&i.from),
                    i.room,
                    floor(&i.room),
                    i.file,
                    i.line,
                    i.text
                )
            })
            .collect();
        problems.push(format!(
            "rooms on one floor import each other in a circle: {}",
            steps.join("; ")
        ));
    }
    problems
}

#[test]
fn every_room_imports_only_its_own_floor_or_below_and_no_circle_closes() {
    let repo = repo();
    let floors = floors(&architecture());
    let src = repo.join("harness/src");
    let imports: Vec<Import> = rust_files(&src)
        .iter()
        .flat_map(|f| imports_of(&repo, &src, f))
        .collect();
    let problems = check(&floors, &rooms_of(&src), &imports);
    assert!(
        problems.is_empty(),
        "the floors of ARCHITECTURE.md do not hold ({} problems):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn the_checker_names_an_upward_import_and_a_circle() {
    let floors = vec![
        Floor {
            name: "ground".into(),
            rooms: vec!["a".into(), "b".into()],
        },
        Floor {
            name: "top".into(),
            rooms: vec!["c".into()],
        },
    ];
    let rooms: BTreeSet<String> = ["a", "b", "c", "stray"].map(String::from).into();
    let imp = |from: &str, room: &str, line: usize| Import {
        from: from.into(),
        file: format!("harness/src/{from}.rs"),
        line,
        room: room.into(),
        text: format!("crate::{room}::X"),
    };
    let problems = check(
        &floors,
        &rooms,
        &[
            imp("a", "c", 3),
            imp("a", "b", 4),
            imp("b", "a", 5),
            imp("c", "a", 6),
        ],
    );
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("harness/src/stray: a room on no floor"));
    assert_eq!(
        problems[1],
        "harness/src/a.rs:3: `crate::c::X`: a (floor 0, `ground`) imports c (floor 1, `top`), \
         a higher floor"
    );
    assert!(
        problems[2].starts_with("rooms on one floor import each other in a circle")
            && problems[2].contains("harness/src/a.rs:4 `crate::b::X`")
            && problems[2].contains("harness/src/b.rs:5 `crate::a::X`"),
        "{}",
        problems[2]
    );
    // Importing down, and one way across a floor, is what floors are for.
    let fine = check(&floors, &rooms, &[imp("c", "a", 1), imp("a", "b", 2)]);
    assert_eq!(fine.len(), 1, "only the stray room: {fine:#?}");
}

#[test]
fn the_table_of_rooms_names_every_room() {
    let repo = repo();
    let doc = architecture();
    let mut missing = Vec::new();
    for krate in ["harness", "guest-agent"] {
        let src = repo.join(krate).join("src");
        for entry in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
            let path = entry.expect("directory entry").path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let shown = if path.is_dir() {
                format!("{krate}/src/{name}/")
            } else if name.ends_with(".rs") {
                format!("{krate}/src/{name}")
            } else {
                continue;
            };
            if !table_names(&doc, &shown) {
                missing.push(shown);
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's table of rooms (`## Where things live`) has no row for: {}",
        missing.join(", ")
    );
}

#[test]
fn the_reader_sees_imports_the_way_the_compiler_does() {
    // The checker's own reader, on a file of every form it must and must not count.
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("harness/src");
    std::fs::create_dir_all(src.join("low")).expect("mkdir");
    let file = src.join("low/mod.rs");
    std::fs::write(
        &file,
        r####"//! Links in docs are not imports: [`crate::high::X`].
use crate::high::A;
use crate::{cell::CellKey, up::{B, C}};
use crate::low::Own;
// crate::comment::No
/* crate::block /* nested */ crate::block2 */
fn f<'a>(x: &'a str) -> char {
    let _ = "crate::string::No";
    let _ = r#"crate::raw::No"#;
    let _ = crate::inline::call();
    let _ = $crate::macro_path::No;
    '"'
}
mod inner {
    use super::super::outer::D;
    use super::Sibling;
}
use super::root::E;
"####,
    )
    .expect("write");
    let found: Vec<(usize, String)> = imports_of(dir.path(), &src, &file)
        .into_iter()
        .map(|i| (i.line, i.room))
        .collect();
    let want: Vec<(usize, String)> = [
        (2, "high"),
        (3, "cell"),
        (3, "up"),
        (10, "inline"),
        (15, "outer"),
        (18, "root"),
    ]
    .into_iter()
    .map(|(l, r)| (l, r.to_string()))
    .collect();
    assert_eq!(found, want);
    assert_eq!(file_depth(Path::new("backend/qemu/mod.rs")), 2);
    assert_eq!(file_depth(Path::new("run/tests.rs")), 2);
    assert_eq!(file_depth(Path::new("cell.rs")), 1);
    assert_eq!(file_depth(Path::new("lib.rs")), 0);
}

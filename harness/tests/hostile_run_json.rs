//! Every string of a run.json replaced by hostile text, through every output mmx writes from
//! it: report.md, report.html, junit.xml, compare.md (against itself and against the original)
//! and `$GITHUB_STEP_SUMMARY`. A run.json is not trusted: a guest wrote much of it, and anyone
//! can hand `mmx report`, `mmx merge` or `mmx compare` one.
//!
//! The run is the constructed fixture with every string leaf, and every object key, that can
//! hold any text (`RunRecord` still reads it and writes it back) replaced by one of
//! [`PAYLOADS`]: backticks, `](javascript:…)`, `<script>`, `@mmxuser`, `|`, newlines, U+FFFF,
//! bidi overrides. Each round gives each original string another payload, so over the rounds
//! every field carries every payload; equal strings stay equal (a boot and its cells keep their
//! key). Each output is then read by a real parser (pulldown-cmark with GFM tables, roxmltree)
//! and checked for what the text could do there; a table row is counted the way cmark-gfm, which
//! renders GitHub's comments, splits it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use harness::compare::{compare, Thresholds};
use harness::report;
use harness::results::RunRecord;
use pulldown_cmark::{Event, Options, Parser, Tag};
use serde_json::{Map, Value};

/// What a kernel, a host or a hand-edited run.json could put in any string. Each holds `PWN`, so
/// any of it outside a code span is found.
const PAYLOADS: [&str; 7] = [
    "PWN`code` [link](javascript:alert(1)) ](javascript:alert(2)) \\|",
    "<script>alert('PWN')</script><img src=x onerror=alert(1)> @mmxuser",
    "PWN | cell || split \\| \\\\| a\\\\\\|b end\\",
    "PWN\nline two\r\n## PWN heading\n| PWN | row |\n```\nfenced",
    "PWN\u{FFFF}\u{FFFE}\u{0}\u{1b}[31m\u{7}\u{202E}evil.example\u{200B}\u{2028}x",
    "```` PWN ` `` ![img](https://evil.example/x.png) www.evil.example https://evil.example/PWN @mmxuser",
    "javascript:alert('PWN')//",
];

/// Text that must never reach markdown outside a code span (a link, a mention, an autolink, HTML).
const MARKERS: [&str; 9] = [
    "PWN",
    "javascript",
    "@mmxuser",
    "evil.example",
    "<script",
    "<img",
    "onerror",
    "://",
    "www.",
];

/// The HTML report.md and compare.md use themselves: `<br>`, `<sub>`, `<details>`, `<summary>`.
const MD_TAGS: [&str; 4] = ["br", "sub", "details", "summary"];

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/constructed-mixed.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The payload `original` gets in round `round`: a function of the original, so equal strings
/// stay equal and different ones differ.
fn hostile(original: &str, round: usize) -> String {
    let h = fnv(original);
    let p = PAYLOADS[(h as usize).wrapping_add(round) % PAYLOADS.len()];
    format!("{p} {:07x}", h & 0xfff_ffff)
}

/// A place a string can be: a leaf at a path (array indices dropped), or a key of the object at
/// a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Site {
    Leaf(String),
    Key(String, String),
}

fn sites(v: &Value, path: &str, out: &mut BTreeSet<Site>) {
    match v {
        Value::String(_) => {
            out.insert(Site::Leaf(path.to_string()));
        }
        Value::Array(a) => a.iter().for_each(|x| sites(x, &format!("{path}[]"), out)),
        Value::Object(o) => {
            for (k, x) in o {
                out.insert(Site::Key(path.to_string(), k.clone()));
                sites(x, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// `v` with the strings at `at` replaced by their payloads in round `round`.
fn apply(v: &Value, at: &BTreeSet<Site>, round: usize) -> Value {
    apply_with(v, "", at, &|s| hostile(s, round))
}

fn apply_with(v: &Value, path: &str, at: &BTreeSet<Site>, to: &dyn Fn(&str) -> String) -> Value {
    match v {
        Value::String(s) if at.contains(&Site::Leaf(path.to_string())) => Value::String(to(s)),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| apply_with(x, &format!("{path}[]"), at, to))
                .collect(),
        ),
        Value::Object(o) => {
            let mut m = Map::new();
            for (k, x) in o {
                let child = apply_with(x, &format!("{path}.{k}"), at, to);
                let key = if at.contains(&Site::Key(path.to_string(), k.clone())) {
                    to(k)
                } else {
                    k.clone()
                };
                m.insert(key, child);
            }
            Value::Object(m)
        }
        _ => v.clone(),
    }
}

/// The run with only the cells and boots that bring a new place (and the first of each): every
/// place once, a fraction of the size, so trying each place alone stays quick. Each record kept
/// is whole, so what reads it reads it as in the full run.
fn skeleton(doc: &Value) -> Value {
    let mut out = doc.clone();
    let mut seen = BTreeSet::new();
    for list in ["cells", "boots"] {
        let Some(Value::Array(all)) = doc.get(list) else {
            panic!("a run.json has {list}");
        };
        let here = format!(".{list}[]");
        let mut kept = Vec::new();
        for (i, x) in all.iter().enumerate() {
            let mut mine = BTreeSet::new();
            sites(x, &here, &mut mine);
            if i == 0 || !mine.is_subset(&seen) {
                seen.extend(mine);
                kept.push(x.clone());
            }
        }
        out[list] = Value::Array(kept);
    }
    out
}

/// Whether `RunRecord` reads the document with every payload at each of `at` together, and
/// keeps them all. (Each string gets all payloads and its own suffix, so renamed keys stay apart.)
fn accepts(doc: &Value, at: &BTreeSet<Site>) -> bool {
    let made = std::cell::RefCell::new(Vec::new());
    let changed = apply_with(doc, "", at, &|s| {
        let p = format!("{} {:x}", PAYLOADS.join(" "), fnv(s));
        made.borrow_mut().push(p.clone());
        p
    });
    let Ok(run) = serde_json::from_value::<RunRecord>(changed) else {
        return false;
    };
    let back = serde_json::to_string(&run).unwrap();
    made.into_inner().iter().all(|p| {
        let want = serde_json::to_string(p).unwrap();
        back.contains(want.trim_matches('"'))
    })
}

/// The places of `doc` that take any text: each leaf path alone, and each object's keys
/// together (a struct's field renamed is refused or dropped; a map takes any key).
fn open_places(doc: &Value) -> BTreeSet<Site> {
    let mut all = BTreeSet::new();
    sites(doc, "", &mut all);
    let small = skeleton(doc);
    let mut keys: std::collections::BTreeMap<String, BTreeSet<Site>> = Default::default();
    let mut open = BTreeSet::new();
    for site in all {
        match &site {
            Site::Leaf(_) => {
                if accepts(&small, &BTreeSet::from([site.clone()])) {
                    open.insert(site);
                }
            }
            Site::Key(object, _) => {
                keys.entry(object.clone()).or_default().insert(site);
            }
        }
    }
    for group in keys.into_values() {
        if accepts(&small, &group) {
            open.extend(group);
        }
    }
    open
}

/// What the checks found: the first finding of each kind per output, so one run lists every
/// hole at once.
#[derive(Default)]
struct Findings(std::collections::BTreeMap<(String, &'static str), String>);

impl Findings {
    fn add(&mut self, what: &str, kind: &'static str, detail: String) {
        self.0.entry((what.to_string(), kind)).or_insert(detail);
    }

    fn assert_none(&self) {
        let list: Vec<String> = self
            .0
            .iter()
            .map(|((what, kind), d)| format!("{what}: {kind}: {d}"))
            .collect();
        assert!(
            list.is_empty(),
            "{} findings:\n{}",
            list.len(),
            list.join("\n")
        );
    }
}

/// Every character a report may hold: no control characters but newline (and tab), nothing XML
/// forbids, no bidi override.
fn check_chars(text: &str, what: &str, f: &mut Findings) {
    for c in text.chars() {
        let bad = (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{FFFE}' | '\u{FFFF}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if bad {
            f.add(what, "a character no report may hold", format!("{c:?}"));
        }
    }
}

/// The tag names in a piece of HTML (`<br>`, `</sub>` → `br`, `sub`).
fn tag_names(html: &str) -> Vec<String> {
    html.split('<')
        .skip(1)
        .map(|t| {
            t.trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .collect()
}

/// The `|` that split a GFM table row into cells: a backslash escapes the character after it
/// (cmark-gfm's table scanner), wherever it is, code spans included.
fn cell_pipes(line: &str) -> usize {
    let mut n = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '|' => n += 1,
            _ => {}
        }
    }
    n
}

fn is_delimiter_row(line: &str) -> bool {
    line.starts_with('|')
        && line.contains('-')
        && line.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

/// Markdown, as GitHub renders a PR comment or a step summary: no link or image, no code block,
/// no HTML but the report's own tags, no payload text outside a code span (which would be a
/// mention, an autolink or markup), and every table row whole.
fn check_markdown(md: &str, what: &str, f: &mut Findings) {
    check_chars(md, what, f);
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    for event in Parser::new_ext(md, opts) {
        match &event {
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => {
                f.add(what, "a link or an image", format!("to {dest_url:?}"))
            }
            Event::Start(Tag::CodeBlock(_)) => f.add(what, "a code block", String::new()),
            Event::Html(h) | Event::InlineHtml(h) => {
                for t in tag_names(h) {
                    if !MD_TAGS.contains(&t.as_str()) {
                        f.add(
                            what,
                            "HTML that is not the report's",
                            format!("<{t}> in {h:?}"),
                        );
                    }
                }
                for m in MARKERS.iter().filter(|m| h.contains(*m)) {
                    f.add(what, "payload in HTML", format!("{m:?} in {h:?}"));
                }
            }
            Event::Text(t) => {
                for m in MARKERS.iter().filter(|m| t.contains(*m)) {
                    f.add(
                        what,
                        "payload outside a code span",
                        format!("{m:?} in {t:?}"),
                    );
                }
            }
            _ => {}
        }
    }
    // Tables: every row after the delimiter has the header's cells, up to the blank line.
    let lines: Vec<&str> = md.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if i == 0 || !is_delimiter_row(line) {
            continue;
        }
        let want = cell_pipes(lines[i - 1]);
        if cell_pipes(line) != want {
            f.add(what, "a broken table header", format!("{line:?}"));
        }
        for row in lines[i + 1..].iter().take_while(|l| !l.is_empty()) {
            if !row.starts_with('|') || cell_pipes(row) != want {
                f.add(
                    what,
                    "a broken table row",
                    format!("want {want} pipes: {row:?}"),
                );
            }
        }
    }
}

/// An href mmx made: an anchor in the page or a file in the run directory's `logs/`.
fn mmx_href(href: &str) -> bool {
    let anchor = href
        .strip_prefix('#')
        .is_some_and(|a| !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    let log = href.strip_prefix("logs/").is_some_and(|f| {
        !f.starts_with('.')
            && (f.ends_with(".log") || f.ends_with(".json"))
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    });
    anchor || log
}

fn check_html(html: &str, what: &str, f: &mut Findings) {
    check_chars(html, what, f);
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = match roxmltree::Document::parse_with_options(html, opts) {
        Ok(d) => d,
        Err(e) => return f.add(what, "not well-formed", e.to_string()),
    };
    for n in doc.descendants().filter(|n| n.is_element()) {
        let name = n.tag_name().name();
        if matches!(
            name,
            "script" | "img" | "iframe" | "object" | "embed" | "foreignObject" | "form"
        ) {
            f.add(
                what,
                "an element the report never makes",
                format!("<{name}>"),
            );
        }
        for a in n.attributes() {
            if a.name().starts_with("on") {
                f.add(what, "an event handler", a.name().to_string());
            }
            if matches!(a.name(), "href" | "src" | "action") && !mmx_href(a.value()) {
                f.add(
                    what,
                    "an href mmx did not make",
                    format!("<{name} {}={:?}>", a.name(), a.value()),
                );
            }
        }
    }
}

fn check_junit(xml: &str, run: &RunRecord, what: &str, f: &mut Findings) {
    check_chars(xml, what, f);
    let doc = match roxmltree::Document::parse(xml) {
        Ok(d) => d,
        Err(e) => return f.add(what, "not well-formed", e.to_string()),
    };
    let cases = doc
        .descendants()
        .filter(|d| d.has_tag_name("testcase"))
        .count();
    if cases != run.cells.len() {
        f.add(
            what,
            "testcases",
            format!("{cases} for {} cells", run.cells.len()),
        );
    }
}

fn mmx(args: &[&std::ffi::OsStr], summary: &Path) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(args)
        .env("GITHUB_STEP_SUMMARY", summary)
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c == 0 || c == 1),
        "mmx {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn no_string_in_a_run_json_escapes_its_report() {
    let doc = fixture();
    let original: RunRecord = serde_json::from_value(doc.clone()).unwrap();
    let accepted = open_places(&doc);
    eprintln!("{} places in the run.json take any text", accepted.len());
    // The places the issue names, so the test cannot pass by replacing nothing.
    for must in [
        Site::Leaf(".boots[].capabilities.probed_fs".into()),
        Site::Leaf(".boots[].logs[]".into()),
        Site::Leaf(".cells[].key.target.kernel".into()),
        Site::Leaf(".cells[].evidence.detail".into()),
        Site::Key(".cells[].metrics".into(), "start_latency_us".into()),
    ] {
        assert!(accepted.contains(&must), "{must:?} does not take text");
    }

    let tmp = tempfile::tempdir().unwrap();
    let base_dir = tmp.path().join("original");
    std::fs::create_dir(&base_dir).unwrap();
    original.write(&base_dir.join("run.json")).unwrap();
    let mut f = Findings::default();
    for round in 0..PAYLOADS.len() {
        let run: RunRecord = serde_json::from_value(apply(&doc, &accepted, round))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let what = |s: &str| format!("round {round}: {s}");

        let md = report::render_markdown(&run).unwrap();
        assert!(md.contains("PWN"), "the payloads reach report.md");
        check_markdown(&md, &what("report.md"), &mut f);
        check_html(
            &report::render_html(&run).unwrap(),
            &what("report.html"),
            &mut f,
        );
        let junit = report::render_junit(&run).unwrap();
        check_junit(&junit, &run, &what("junit.xml"), &mut f);
        let th = Thresholds::default();
        for (name, base, cand) in [
            ("compare.md (itself)", &run, &run),
            ("compare.md (original → hostile)", &original, &run),
            ("compare.md (hostile → original)", &run, &original),
        ] {
            let md = compare(base, cand, &th).render_markdown().unwrap();
            check_markdown(&md, &what(name), &mut f);
        }

        // The command line: `mmx report` appends report.md to the step summary, `mmx compare`
        // writes the markdown the action appends there too.
        let dir = tmp.path().join(format!("round-{round}"));
        std::fs::create_dir(&dir).unwrap();
        run.write(&dir.join("run.json")).unwrap();
        let summary = dir.join("step-summary.md");
        mmx(&["report".as_ref(), dir.as_os_str()], &summary);
        let out: PathBuf = dir.join("compare.md");
        mmx(
            &[
                "compare".as_ref(),
                base_dir.join("run.json").as_os_str(),
                dir.join("run.json").as_os_str(),
                "--markdown-out".as_ref(),
                out.as_os_str(),
            ],
            &summary,
        );
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        check_markdown(
            &read("step-summary.md"),
            &what("$GITHUB_STEP_SUMMARY"),
            &mut f,
        );
        check_markdown(
            &read("compare.md"),
            &what("mmx compare --markdown-out"),
            &mut f,
        );
        check_markdown(&read("report.md"), &what("mmx report: report.md"), &mut f);
        check_html(
            &read("report.html"),
            &what("mmx report: report.html"),
            &mut f,
        );
        check_junit(
            &read("junit.xml"),
            &run,
            &what("mmx report: junit.xml"),
            &mut f,
        );
    }
    f.assert_none();
}

/// The checks themselves: each catches what it is for, so a green run means something.
#[test]
fn the_checks_catch_what_they_look_for() {
    let md = |text: &str| {
        let mut f = Findings::default();
        check_markdown(text, "t", &mut f);
        f.0.len()
    };
    assert_eq!(
        md("a [x](javascript:y)\n"),
        1,
        "the link (its target is no text)"
    );
    assert_eq!(md("hi @mmxuser\n"), 1);
    assert_eq!(
        md("<script>x</script>\n"),
        2,
        "the tag, and the payload in HTML"
    );
    assert_eq!(md("| a | b |\n|---|---|\n| `x\\\\|y` | z |\n"), 1);
    assert_eq!(md("| a | b |\n|---|---|\n| x\ny | z |\n"), 1);
    assert_eq!(md("a \u{FFFF}\n"), 1);
    assert_eq!(
        md("| a | b |\n|---|---|\n| `` PWN `\\|` @mmxuser \\| `` | z<br><sub>w</sub> |\n"),
        0
    );
    let html = |text: &str| {
        let mut f = Findings::default();
        check_html(text, "t", &mut f);
        f.0.len()
    };
    assert_eq!(html("<html><a href=\"javascript:x\">x</a></html>"), 1);
    assert_eq!(html("<html><a href=\"PWN\">x</a><script/></html>"), 2);
    assert_eq!(
        html("<html><a href=\"#note-1\">1</a><a href=\"logs/a_b.console.log\">c</a></html>"),
        0
    );
}

//! Reports from a `run.json`: `report.md` (PR comment / `$GITHUB_STEP_SUMMARY`), `report.html`
//! (one self-contained file with inline SVG charts) and `junit.xml` (one testcase per cell).
//!
//! Everything is computed into a view model ([`model`], [`charts`], [`junit`]) and rendered by
//! the minijinja templates in `reports/templates/`, embedded in the binary so `mmx` renders from
//! any directory. No markup is built in Rust.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::results::RunRecord;

pub mod charts;
pub mod junit;
pub mod model;
pub mod sections;
pub mod svg;

/// The report files one render wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub markdown: PathBuf,
    pub html: PathBuf,
    pub junit: PathBuf,
}

/// Rows of each long list report.md shows before pointing at report.html: a PR comment holds
/// 65,536 characters.
pub const MD_PERF_ROWS: usize = 60;
pub const MD_FOOTNOTES: usize = 40;

const TEMPLATES: [(&str, &str); 5] = [
    (
        "report.md.j2",
        include_str!("../../../reports/templates/report.md.j2"),
    ),
    (
        "report.html.j2",
        include_str!("../../../reports/templates/report.html.j2"),
    ),
    (
        "macros.html.j2",
        include_str!("../../../reports/templates/macros.html.j2"),
    ),
    (
        "junit.xml.j2",
        include_str!("../../../reports/templates/junit.xml.j2"),
    ),
    (
        "compare.md.j2",
        include_str!("../../../reports/templates/compare.md.j2"),
    ),
];

/// Characters XML 1.0 forbids even as references: a console excerpt with an escape sequence must
/// not make the HTML or JUnit file unreadable.
fn xml_clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
        .collect()
}

/// Escape for a markdown table cell: no line breaks, no `|`, no raw HTML.
fn md_cell(s: &str) -> String {
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

/// The template environment, shared by reports and `mmx compare`.
pub(crate) fn environment() -> anyhow::Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html.j2") || name.ends_with(".xml.j2") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state, value| {
        // Safe values (macro output) pass as they are; only plain strings are cleaned.
        if state.auto_escape() != AutoEscape::None && !value.is_safe() {
            if let Some(s) = value.as_str() {
                return minijinja::escape_formatter(out, state, &Value::from(xml_clean(s)));
            }
        }
        minijinja::escape_formatter(out, state, value)
    });
    env.add_filter("md", |s: String| md_cell(&s));
    for (name, src) in TEMPLATES {
        env.add_template(name, src)
            .with_context(|| format!("template {name}"))?;
    }
    Ok(env)
}

pub(crate) fn render_template(
    env: &Environment<'_>,
    name: &str,
    ctx: Value,
) -> anyhow::Result<String> {
    env.get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| anyhow::anyhow!("rendering {name}: {e:#}"))
}

/// report.md: outcome counts, the compatibility matrix with evidence footnotes, probes, and the
/// performance table with provenance.
pub fn render_markdown(run: &RunRecord) -> anyhow::Result<String> {
    let env = environment()?;
    let m = model::build(run);
    render_template(
        &env,
        "report.md.j2",
        minijinja::context! {
            m => Value::from_serialize(&m),
            perf_limit => MD_PERF_ROWS,
            note_limit => MD_FOOTNOTES,
        },
    )
}

/// report.html: the markdown's content plus charts, boots and every perf row, in one file.
pub fn render_html(run: &RunRecord) -> anyhow::Result<String> {
    let env = environment()?;
    let m = model::build(run);
    let c = charts::build(run);
    render_template(
        &env,
        "report.html.j2",
        minijinja::context! {
            m => Value::from_serialize(&m),
            charts => Value::from_serialize(&c),
        },
    )
}

/// junit.xml: one testcase per cell.
pub fn render_junit(run: &RunRecord) -> anyhow::Result<String> {
    let env = environment()?;
    let j = junit::build(run);
    render_template(
        &env,
        "junit.xml.j2",
        minijinja::context! { j => Value::from_serialize(&j) },
    )
}

/// Write `text` to `path` through a temporary file, so a reader never sees half a report.
fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Render all three reports into `run_dir`, and append report.md to `$GITHUB_STEP_SUMMARY`
/// when that variable names a file (GitHub Actions sets it).
pub fn render_all(run: &RunRecord, run_dir: &Path) -> anyhow::Result<Written> {
    let written = Written {
        markdown: run_dir.join("report.md"),
        html: run_dir.join("report.html"),
        junit: run_dir.join("junit.xml"),
    };
    let md = render_markdown(run)?;
    write_atomic(&written.markdown, &md)?;
    write_atomic(&written.html, &render_html(run)?)?;
    write_atomic(&written.junit, &render_junit(run)?)?;
    if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|s| !s.is_empty()) {
        let path = PathBuf::from(summary);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening $GITHUB_STEP_SUMMARY ({})", path.display()))?;
        f.write_all(md.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .with_context(|| format!("appending to $GITHUB_STEP_SUMMARY ({})", path.display()))?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        assert_eq!(md_cell("a|b\n<c>"), "a\\|b &lt;c&gt;");
    }

    #[test]
    fn control_characters_never_reach_xml() {
        assert_eq!(xml_clean("a\u{1b}[0m\tb\u{0}"), "a[0m\tb");
        let env = environment().unwrap();
        let t = env.template_from_named_str("t.html.j2", "{{ s }}").unwrap();
        assert_eq!(
            t.render(minijinja::context! { s => "<\u{7}&" }).unwrap(),
            "&lt;&amp;"
        );
    }
}

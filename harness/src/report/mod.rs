//! Reports from a `run.json`: `report.md` (PR comment / `$GITHUB_STEP_SUMMARY`), `report.html`
//! (one self-contained file with inline SVG charts) and `junit.xml` (one testcase per cell).
//!
//! Everything is computed into a view model ([`model`], [`charts`], [`junit`]) and rendered by
//! the minijinja templates in `reports/templates/`, embedded in the binary so `mmx` renders from
//! any directory. No markup is built in Rust.

use std::path::{Path, PathBuf};

use anyhow::Context;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::results::RunRecord;

pub mod charts;
pub mod counts;
mod escape;
pub mod junit;
pub mod model;
pub mod perf;
pub mod sections;
pub mod svg;
#[cfg(test)]
mod testing;

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
/// The agent's count notes report.md lists (report.html lists up to [`counts::MAX_COUNT_NOTES`]).
pub const MD_COUNT_NOTES: usize = 5;

const TEMPLATES: [(&str, &str); 5] = [
    (
        "report.md.j2",
        include_str!("../../carried/reports/templates/report.md.j2"),
    ),
    (
        "report.html.j2",
        include_str!("../../carried/reports/templates/report.html.j2"),
    ),
    (
        "macros.html.j2",
        include_str!("../../carried/reports/templates/macros.html.j2"),
    ),
    (
        "junit.xml.j2",
        include_str!("../../carried/reports/templates/junit.xml.j2"),
    ),
    (
        "compare.md.j2",
        include_str!("../../carried/reports/templates/compare.md.j2"),
    ),
];

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
                return minijinja::escape_formatter(out, state, &Value::from(escape::xml_text(s)));
            }
        }
        minijinja::escape_formatter(out, state, value)
    });
    env.add_filter("md", |s: String| escape::md_cell(&s));
    env.add_filter("code", |s: String| escape::md_code(&s));
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
            count_note_limit => MD_COUNT_NOTES,
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

/// Render all three reports into `run_dir`, each written atomically and never through a
/// symlink. (`$GITHUB_STEP_SUMMARY` is the `mmx` command's business, not this library's.)
pub fn render_all(run: &RunRecord, run_dir: &Path) -> anyhow::Result<Written> {
    let written = Written {
        markdown: run_dir.join("report.md"),
        html: run_dir.join("report.html"),
        junit: run_dir.join("junit.xml"),
    };
    let md = render_markdown(run)?;
    crate::rundir::write_atomic(&written.markdown, md.as_bytes())?;
    crate::rundir::write_atomic(&written.html, render_html(run)?.as_bytes())?;
    crate::rundir::write_atomic(&written.junit, render_junit(run)?.as_bytes())?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_xml() {
        let env = environment().unwrap();
        let t = env.template_from_named_str("t.html.j2", "{{ s }}").unwrap();
        assert_eq!(
            t.render(minijinja::context! { s => "<\u{7}&\u{FFFF}" })
                .unwrap(),
            "&lt;&amp;"
        );
    }
}

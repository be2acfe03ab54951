//! Reports from a `run.json`: `report.md` (PR comment / `$GITHUB_STEP_SUMMARY`), `report.html`
//! (one self-contained file with inline SVG charts) and `junit.xml` (one testcase per cell).
//!
//! Everything is computed into a view model ([`model`], [`charts`], [`junit`]) and rendered by
//! the minijinja templates in `reports/templates/`, embedded in the binary so `mmx` renders from
//! any directory. No markup is built in Rust.

use std::path::{Path, PathBuf};

use anyhow::Context;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::events::Note;
use crate::results::RunRecord;
use crate::run::{Event, Subscriber};

pub mod charts;
pub mod counts;
pub(crate) mod escape;
pub mod junit;
pub mod model;
pub mod perf;
pub mod sections;
pub mod svg;
#[cfg(test)]
mod testing;
pub mod warnings;

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

/// The auto-escape of markdown templates: [`escape::md`] on every value.
const MARKDOWN: AutoEscape = AutoEscape::Custom("markdown");

/// The template environment, shared by reports and `mmx compare`. Every value a template prints
/// goes through [`escape`], by the template's kind: HTML and XML get [`escape::xml_text`] and
/// markup escaping, markdown [`escape::md`]. Only the output of a macro or of the `code` filter
/// ([`escape::md_code`]) is printed as it is; `safe` and `escape` are gone, so a template has no
/// way around it.
pub(crate) fn environment() -> anyhow::Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html.j2") || name.ends_with(".xml.j2") {
            AutoEscape::Html
        } else if name.ends_with(".md.j2") {
            MARKDOWN
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state, value| {
        if value.is_safe() || state.auto_escape() == AutoEscape::None {
            return minijinja::escape_formatter(out, state, value);
        }
        // Anything else is text from outside until shown otherwise: its string form, cleaned.
        let text = match value.as_str() {
            Some(s) => s.to_string(),
            None => value.to_string(),
        };
        if state.auto_escape() == MARKDOWN {
            std::fmt::Write::write_str(out, &escape::md(&text))?;
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, &Value::from(escape::xml_text(&text)))
        }
    });
    for bypass in ["safe", "escape", "e"] {
        env.remove_filter(bypass);
    }
    env.add_filter(
        "code",
        |state: &minijinja::State, s: String| -> Result<Value, minijinja::Error> {
            if state.auto_escape() != MARKDOWN {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    "`code` makes a markdown code span: markdown templates only",
                ));
            }
            Ok(Value::from_safe_string(escape::md_code(&s)))
        },
    );
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
            watchers => Value::from_serialize(charts::watchers::rows(run)),
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
    let written = Written::of(run_dir);
    let md = render_markdown(run)?;
    crate::rundir::write_atomic(&written.markdown, md.as_bytes())?;
    crate::rundir::write_atomic(&written.html, render_html(run)?.as_bytes())?;
    crate::rundir::write_atomic(&written.junit, render_junit(run)?.as_bytes())?;
    Ok(written)
}

impl Written {
    /// Where [`render_all`] writes the reports of the run in `run_dir`.
    fn of(run_dir: &Path) -> Written {
        Written {
            markdown: run_dir.join("report.md"),
            html: run_dir.join("report.html"),
            junit: run_dir.join("junit.xml"),
        }
    }

    /// The reports in `run_dir` when all three are there. A run's directory is its own (made
    /// exclusively), and each report is written whole or not at all, so in a run's directory
    /// that means [`Reports`] wrote them.
    pub fn found_in(run_dir: &Path) -> Option<Written> {
        let w = Written::of(run_dir);
        [&w.markdown, &w.html, &w.junit]
            .iter()
            .all(|p| p.is_file())
            .then_some(w)
    }
}

/// The subscriber that writes report.md, report.html and junit.xml when a run ends, from its
/// final record; a rendering problem is a note, and never loses the results.
pub struct Reports;

impl Subscriber for Reports {
    fn on(&mut self, event: &Event<'_>) -> Option<Note> {
        let Event::RunEnded { run, dir } = event else {
            return None;
        };
        let e = render_all(run, &dir.root).err()?;
        Some(Note::warning(format!(
            "could not render the reports ({e:#}); run `mmx report {}` to retry",
            dir.root.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The templates keep to the one escaping path: nothing turns escaping off, no value sits
    /// inside backticks a template wrote (its own code span would not hold it), and every href
    /// is an anchor of the page or a log path mmx made (`RunDir::known_log`).
    #[test]
    fn templates_have_no_way_around_escaping() {
        for (name, src) in TEMPLATES {
            for bad in [
                "autoescape",
                "|safe",
                "| safe",
                "|e ",
                "|escape",
                "`{{",
                "}}`",
            ] {
                assert!(!src.contains(bad), "{name} holds {bad:?}");
            }
            for (i, _) in src.match_indices("href=\"") {
                let target = &src[i + 6..];
                assert!(
                    target.starts_with('#') || target.starts_with("{{ l.href }}\""),
                    "{name}: an href from a value mmx did not make: {}",
                    &target[..target.len().min(40)]
                );
            }
        }
        let env = environment().unwrap();
        for filter in ["safe", "escape", "e"] {
            let t = format!("{{{{ s|{filter} }}}}");
            let t = env.template_from_named_str("t.md.j2", &t).unwrap();
            assert!(
                t.render(minijinja::context! { s => "x" }).is_err(),
                "{filter}"
            );
        }
        let t = env
            .template_from_named_str("t.html.j2", "{{ s|code }}")
            .unwrap();
        assert!(
            t.render(minijinja::context! { s => "<b>" }).is_err(),
            "code spans are markdown's only"
        );
    }

    #[test]
    fn markdown_templates_escape_every_value() {
        let env = environment().unwrap();
        let t = env
            .template_from_named_str(
                "t.md.j2",
                "{{ a }}|{{ b }}|{{ n }}|{{ c|code }}|{{ l|join(\", \") }}",
            )
            .unwrap();
        let out = t
            .render(minijinja::context! {
                a => "debian-6.12",
                b => "[x](javascript:y) @user",
                n => 3,
                c => "6.12",
                l => vec!["a", "<b>"],
            })
            .unwrap();
        assert_eq!(
            out,
            "debian-6.12|` [x](javascript:y) @user `|3|` 6.12 `|` a, <b> `"
        );
    }

    /// A kernel that is not the one kernels.lock pins says so in both report headers, through
    /// the escaping every value takes (a package version is outside text).
    #[test]
    fn a_substituted_kernel_heads_both_reports_escaped() {
        use crate::results::{Accel, HostInfo, LockSubstitution, RUN_SCHEMA_VERSION};
        use protocol::{MountsScenario, Scenario, Strategy};
        let scenario = Scenario::Mounts(MountsScenario {
            strategy: Strategy::PerLayer.into(),
            layers: 1,
            containers: 1,
            concurrency: 1,
            passes: 2,
            watchers: Vec::new(),
        });
        let mut cell = testing::cell(scenario, None, Default::default(), Accel::Tcg);
        cell.provenance.kernel_substituted = Some(LockSubstitution {
            locked: vec!["linux-image-7.3=7.3.4-1".into()],
            used: vec!["linux-image-7.3=<b>[x](y)</b>".into()],
        });
        let run = RunRecord {
            schema_version: RUN_SCHEMA_VERSION,
            mmx_version: "0".into(),
            agent: String::new(),
            run_id: "r".into(),
            started_at: "2026-11-26T10:00:00Z".into(),
            finished_at: "2026-11-26T11:00:00Z".into(),
            matrix: "matrix.toml".into(),
            shard: None,
            host: HostInfo::default(),
            boots: Vec::new(),
            cells: vec![cell.clone(), cell],
            runtimes: Vec::new(),
        };
        let md = render_markdown(&run).unwrap();
        let header = md.split("### Compatibility").next().unwrap();
        assert_eq!(
            header.matches("Not what the lock files pin").count(),
            1,
            "{md}"
        );
        assert!(
            header.contains(
                "kernel debian-7.x: locked ` linux-image-7.3=7.3.4-1 `, ran ` linux-image-7.3=<b>[x](y)</b> `"
            ),
            "{header}"
        );
        let html = render_html(&run).unwrap();
        let header = html.split("</header>").next().unwrap();
        assert!(
            header.contains("kernel debian-7.x: locked <code>linux-image-7.3=7.3.4-1</code>, ran <code>linux-image-7.3=&lt;b&gt;[x](y)&lt;&#x2f;b&gt;</code>"),
            "{header}"
        );
        assert!(!html.contains("<b>[x]"), "escaped everywhere");
    }

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

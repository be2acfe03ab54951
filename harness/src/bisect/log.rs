//! The bisect's record: `bisect.json` (every step, its build and answers, the result), the
//! text log `bisect.log` (what was printed, then `git bisect log`), and `report.md`. All three
//! are rewritten after every step, so a Ctrl-C or a crash keeps what was learnt.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use protocol::Feature;
use serde::{Deserialize, Serialize};

use super::answers::{Answers, Entry, Expect, Subject, Verdict};
use crate::cell::BootKey;
use crate::rundir::write_atomic;

/// Bump on incompatible changes to `bisect.json`.
pub const BISECT_SCHEMA_VERSION: u32 = 1;

/// `bisect.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BisectRecord {
    pub schema_version: u32,
    pub mmx_version: String,
    pub started_at: String,
    pub finished_at: String,
    pub kernel: String,
    pub recipe: PathBuf,
    /// The user's repository (read, never written).
    pub tree: PathBuf,
    pub good: Endpoint,
    pub bad: Endpoint,
    /// Commits in `good..bad`.
    pub commits: u64,
    pub matrix: PathBuf,
    pub filter: Vec<String>,
    pub probes: Vec<Feature>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// The one build directory every step builds in.
    pub build_dir: PathBuf,
    pub steps: Vec<Step>,
    /// None while the bisect runs.
    pub result: Option<BisectResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    /// As given (`v6.12`, `HEAD~3`).
    pub rev: String,
    pub commit: String,
}

/// Why a commit was tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// `--good`: its answers are the reference.
    Good,
    /// `--bad`: must differ, or there is nothing to find.
    Bad,
    /// Chosen by `git bisect`.
    Bisect,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// 1-based; also the step's directory `steps/NN-<commit>`.
    pub n: usize,
    pub role: Role,
    pub commit: String,
    pub subject: String,
    pub build: BuildInfo,
    pub boots: Vec<BootInfo>,
    pub answers: Vec<Entry>,
    /// None: interrupted before a verdict.
    pub verdict: Option<Verdict>,
    /// Relative to the bisect's directory: the step's build log and boot logs.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildInfo {
    /// Taken from the cache: built before, nothing ran.
    pub cached: bool,
    /// Configure + make.
    pub seconds: f64,
    /// kbuild steps make ran (a full minimal 6.12 build is about 2000).
    pub kbuild_steps: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The build log, copied into the step's directory (relative to the bisect's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootInfo {
    pub key: BootKey,
    /// `completed`, or how it ended.
    pub end: String,
    pub seconds: f64,
}

/// How the bisect ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum BisectResult {
    /// The first commit whose answers differ; `before` are the answers at its parent when that
    /// was tested, else at `--good`.
    Found {
        commit: String,
        subject: String,
        before_commit: String,
        before: Vec<Entry>,
        after: Vec<Entry>,
    },
    /// `--bad` answers as `--good` does: there is no change to find.
    NoChange,
    /// `--good` does not answer as `--expect` says.
    GoodNotAsExpected,
    /// `--good` or `--bad` could not be judged (no build, or an infra error).
    Untestable { role: Role, why: String },
    /// Only commits that could not be judged are left; the change is in one of these.
    OnlySkipped { candidates: Vec<Candidate> },
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Candidate {
    pub commit: String,
    pub subject: String,
}

impl BisectResult {
    /// mmx's exit code: 0 when a commit was found, 1 otherwise.
    pub fn found(&self) -> bool {
        matches!(self, BisectResult::Found { .. })
    }

    /// One line for the end of the output.
    pub fn headline(&self) -> String {
        match self {
            BisectResult::Found {
                commit, subject, ..
            } => format!("first changed commit: {} {subject}", short(commit)),
            BisectResult::NoChange => {
                "no change: --bad answers exactly as --good does; nothing to bisect".into()
            }
            BisectResult::GoodNotAsExpected => {
                "--good does not answer as --expect says; nothing to bisect".into()
            }
            BisectResult::Untestable { role, why } => format!(
                "inconclusive: --{} cannot be judged: {why}",
                role_word(*role)
            ),
            BisectResult::OnlySkipped { candidates } => format!(
                "inconclusive: only commits that could not be judged are left; the change is in one of {}",
                candidates
                    .iter()
                    .map(|c| short(&c.commit))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            BisectResult::Interrupted => {
                "interrupted: make and QEMU were stopped; your repository is as it was".into()
            }
        }
    }
}

fn role_word(r: Role) -> &'static str {
    match r {
        Role::Good => "good",
        Role::Bad => "bad",
        Role::Bisect => "bisect",
    }
}

pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// The step's label in the output: `[good]`, `[bad]`, `[3]`.
pub fn step_label(s: &Step) -> String {
    match s.role {
        Role::Good => "[good]".into(),
        Role::Bad => "[bad]".into(),
        Role::Bisect => format!("[{}]", s.n),
    }
}

/// The build and boot part of a step line.
pub fn build_words(b: &BuildInfo) -> String {
    match (&b.error, b.cached) {
        (Some(_), _) => format!("build failed after {:.1} s", b.seconds),
        (None, true) => "cached build".into(),
        (None, false) => format!(
            "built in {:.1} s ({} kbuild steps)",
            b.seconds, b.kbuild_steps
        ),
    }
}

/// Answers side by side, `*` marking the ones that differ.
pub fn answer_table(before: &Answers, after: &Answers) -> Vec<(bool, Subject, String, String)> {
    let mut subjects: Vec<&Subject> = before.0.keys().chain(after.0.keys()).collect();
    subjects.sort();
    subjects.dedup();
    subjects
        .into_iter()
        .map(|s| {
            let b = before.0.get(s);
            let a = after.0.get(s);
            let show = |x: Option<&super::answers::Answer>| {
                x.map_or_else(|| "-".to_string(), ToString::to_string)
            };
            (b != a, s.clone(), show(b), show(a))
        })
        .collect()
}

/// Everything written into the bisect's directory.
pub struct Files<'a> {
    pub dir: &'a Path,
    pub record: &'a BisectRecord,
    /// What was printed so far.
    pub printed: &'a str,
    /// `git bisect log`, once started.
    pub git_log: &'a str,
}

impl Files<'_> {
    pub fn write(&self) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self.record)?;
        write_atomic(&self.dir.join("bisect.json"), &json)?;
        let mut text = self.printed.to_string();
        if !self.git_log.is_empty() {
            text.push_str("\n# git bisect log (replay it with `git bisect replay`)\n");
            text.push_str(self.git_log);
        }
        write_atomic(&self.dir.join("bisect.log"), text.as_bytes())?;
        write_atomic(&self.dir.join("report.md"), report(self.record).as_bytes())?;
        Ok(())
    }
}

/// Outside text (commit subjects, answers with a guest's evidence) in report.md: the reports'
/// one markdown escape, so it cannot break the table or become markup.
fn cell(s: &str) -> String {
    crate::report::escape::md(s)
}

/// `report.md`.
pub fn report(r: &BisectRecord) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# mmx bisect: `{}`\n", r.kernel);
    match &r.result {
        Some(res) => {
            let _ = writeln!(md, "**{}**\n", cell(&res.headline()));
        }
        None => md.push_str("**In progress.**\n\n"),
    }
    let judged = match &r.expect {
        Some(e) => format!("cells against `--expect {e}`, probes against `--good`"),
        None => "against the answers at `--good`".to_string(),
    };
    let probes: Vec<String> = r.probes.iter().map(|p| format!("`{p}`")).collect();
    let _ = writeln!(
        md,
        "- Range: `{}` (`--good {}`) to `{}` (`--bad {}`), {} commits, tree `{}`\n\
         - Selected: `--filter {}`{}; judged {judged}\n\
         - Build directory: `{}`; matrix `{}`\n",
        short(&r.good.commit),
        cell(&r.good.rev),
        short(&r.bad.commit),
        cell(&r.bad.rev),
        r.commits,
        r.tree.display(),
        cell(&r.filter.join(" ")),
        if probes.is_empty() {
            String::new()
        } else {
            format!(", probes {}", probes.join(", "))
        },
        r.build_dir.display(),
        r.matrix.display()
    );
    if let Some(BisectResult::Found {
        commit,
        before_commit,
        before,
        after,
        ..
    }) = &r.result
    {
        let _ = writeln!(
            md,
            "## Answers on both sides\n\n| | answer | before (`{}`) | after (`{}`) |\n|---|---|---|---|",
            short(before_commit),
            short(commit)
        );
        for (changed, s, b, a) in answer_table(
            &Answers::from_entries(before),
            &Answers::from_entries(after),
        ) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                if changed { "**changed**" } else { "" },
                crate::report::escape::md_code(&s.to_string()),
                cell(&b),
                cell(&a)
            );
        }
        md.push('\n');
    }
    if let Some(BisectResult::OnlySkipped { candidates }) = &r.result {
        md.push_str("## Candidates\n\n");
        for c in candidates {
            let _ = writeln!(md, "- `{}` {}", short(&c.commit), cell(&c.subject));
        }
        md.push('\n');
    }
    md.push_str("## Steps\n\n| step | commit | subject | build | boots | verdict |\n|---|---|---|---|---|---|\n");
    for s in &r.steps {
        let boots: f64 = s.boots.iter().map(|b| b.seconds).sum();
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} |",
            step_label(s),
            short(&s.commit),
            cell(&s.subject),
            cell(&build_words(&s.build)),
            if s.boots.is_empty() {
                "-".to_string()
            } else {
                format!("{} in {boots:.1} s", s.boots.len())
            },
            s.verdict
                .map_or_else(|| "interrupted".to_string(), |v| v.to_string())
        );
    }
    let _ = writeln!(
        md,
        "\nEach step's build log and boot logs are in `steps/NN-<commit>/`; `bisect.log` ends with \
         `git bisect log`."
    );
    md
}

//! `mmx bisect`: the first commit of a git tree whose kernel answers the selected cells (and
//! probes) differently from `--good`.
//!
//! Each step builds the `[source] tree` recipe at one commit with
//! [`crate::kernels::ensure_source_at`], always in the same build directory (so a step
//! rebuilds only what the commits between it and the last step changed), boots it through the
//! runner ([`crate::run::Runner`]: the same deadlines, retries of infra errors and supervisor
//! as `mmx run`), and judges the answers ([`answers`]); git's own bisect, in a private clone
//! ([`git`]), picks the next commit. Everything is written into `runs/bisect-<time>/` after
//! every step ([`log`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use protocol::Feature;

mod answers;
mod git;
mod log;

pub use answers::{Answer, Answers, Entry, Expect, SkipReason, Subject, Verdict};
pub use log::{BisectRecord, BisectResult, BootInfo, BuildInfo, Role, Step};

use crate::backend::qemu::AccelChoice;
use crate::debian::Cache;
use crate::events::{Note, SharedSink};
use crate::kernels::source::SourceBase;
use crate::kernels::{
    build_dir_at, ensure_source_at, BuildError, EnsureOptions, KernelError, Recipe, RecipeSource,
    ResolvedKernel,
};
use crate::matrix::Matrix;
use crate::proc::Cancel;
use crate::run::{group_boots, matches_filter, new_run_id, BootPlan, Runner};
use crate::rundir::RunDir;
use git::{Next, Session, UserRepo};
use log::{short, Candidate, Endpoint, Files, BISECT_SCHEMA_VERSION};

/// What `mmx bisect` reads and writes, for `--help`.
pub const FILES_HELP: &str =
    "Reads:  the matrix (--matrix) and kernels/NAME.toml beside it (a `[source] tree = …` recipe);
        the git tree it names (never written: mmx bisects in a private clone of it).
Writes: OUT/bisect-<time>/bisect.json, bisect.log (the steps, then `git bisect log`), report.md,
        steps/NN-<commit>/ (the step's build log, logs/ of its boots); builds in one build
        directory of the cache. Exit: 0 the first changed commit was found; 1 no change,
        inconclusive or interrupted; 2 usage errors (kernel, revisions, filter, matrix).";

/// `mmx bisect`.
#[derive(Debug, Clone, clap::Args)]
pub struct BisectArgs {
    /// The kernel recipe (kernels/NAME.toml beside the matrix) with `[source] tree = …`.
    #[arg(long)]
    pub kernel: String,
    /// A revision whose answers are the good ones (a tag, branch or commit of the tree).
    #[arg(long)]
    pub good: String,
    /// A later revision whose answers differ.
    #[arg(long)]
    pub bad: String,
    /// Judge the cells of this kernel whose id contains this (or matches this `*` glob);
    /// repeatable.
    #[arg(long, required = true)]
    pub filter: Vec<String>,
    /// Also judge this kernel probe's answer in each boot (e.g. lowerdir-plus-string);
    /// repeatable.
    #[arg(long, value_parser = parse_feature)]
    pub probe: Vec<Feature>,
    /// The matrix whose topologies, filesystems and scenarios make the cells.
    #[arg(long, default_value = "matrix.toml")]
    pub matrix: PathBuf,
    /// A step is good when every selected cell ends so (OUTCOME or OUTCOME:ERRNO, e.g.
    /// unsupported:EBADF) instead of as at --good.
    #[arg(long, value_parser = Expect::parse)]
    pub expect: Option<Expect>,
    /// Also judge the kernel splats (`WARNING:`, lockdep, KASAN, UBSAN, refcount, `BUG:`) each
    /// selected cell printed, by kind: a step whose cells print one that --good's did not is
    /// bad.
    #[arg(long)]
    pub fail_on_kernel_warning: bool,
    /// Accelerator for guests (as for `mmx run`).
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
    /// Retry a boot that ended in an infra error this many times before skipping the commit.
    #[arg(long, default_value_t = 1)]
    pub retries: u32,
    /// Where the bisect's directory goes.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
}

fn parse_feature(s: &str) -> Result<Feature, String> {
    Feature::ALL
        .into_iter()
        .find(|f| f.as_str() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = Feature::ALL.iter().map(|f| f.as_str()).collect();
            format!("`{s}` is not a probe (probes: {})", names.join(", "))
        })
}

/// Everything checked before anything is built: each failure is a usage error (exit 2).
struct Setup {
    matrix: Matrix,
    recipe: Recipe,
    repo: UserRepo,
    good: String,
    bad: String,
    boots: Vec<BootPlan>,
}

impl Setup {
    fn check(args: &BisectArgs) -> anyhow::Result<Setup> {
        let mut matrix = Matrix::load(&args.matrix)?;
        let dir = matrix.kernels_dir();
        let recipes = crate::kernels::load_recipes(&dir)
            .with_context(|| format!("reading the kernel recipes in {}", dir.display()))?;
        let Some(recipe) = recipes.iter().find(|r| r.name == args.kernel).cloned() else {
            let known: Vec<&str> = recipes.iter().map(|r| r.name.as_str()).collect();
            anyhow::bail!(
                "--kernel `{}`: no recipe {}/{}.toml (recipes: {})",
                args.kernel,
                dir.display(),
                args.kernel,
                known.join(", ")
            );
        };
        let tree = match &recipe.source {
            RecipeSource::Build(spec) => match &spec.base {
                SourceBase::Git { tree, .. } => tree.clone(),
                SourceBase::Debian { package, .. } => anyhow::bail!(
                    "--kernel `{}`: {} builds Debian's {package}, which has no history to \
                     bisect; mmx bisect needs a git tree recipe (`[source] tree = \"…\"`, \
                     `rev = \"…\"`)",
                    recipe.name,
                    recipe.file.display()
                ),
            },
            _ => anyhow::bail!(
                "--kernel `{}`: {} is not a source recipe; mmx bisect builds a git tree \
                 (`[source] tree = \"…\"`, `rev = \"…\"`)",
                recipe.name,
                recipe.file.display()
            ),
        };
        anyhow::ensure!(
            tree.value.is_dir(),
            "{}:{}: source.tree: {} is not a directory",
            recipe.file.display(),
            tree.line,
            tree.value.display()
        );
        let repo = UserRepo {
            path: tree.value.clone(),
        };
        let resolve = |flag: &str, rev: &str| {
            crate::kernels::tree::resolve_rev(&repo.path, rev)
                .map_err(|m| anyhow::anyhow!("{flag}: {}", m.trim()))
        };
        let good = resolve("--good", &args.good)?;
        let bad = resolve("--bad", &args.bad)?;
        anyhow::ensure!(
            good != bad,
            "--good `{}` and --bad `{}` are the same commit {}",
            args.good,
            args.bad,
            short(&good)
        );
        anyhow::ensure!(
            repo.is_ancestor(&good, &bad)?,
            "--good `{}` ({}) is not an ancestor of --bad `{}` ({}) in {}: bisect a range where \
             the good commit comes first",
            args.good,
            short(&good),
            args.bad,
            short(&bad),
            repo.path.display()
        );
        // The matrix's topologies, filesystems and scenarios for this kernel, listed there or not.
        matrix.kernels = vec![recipe.name.clone()];
        let all = matrix.qemu_cells();
        let example = all.first().map(|c| c.key.to_string()).unwrap_or_default();
        let cells: Vec<_> = all
            .into_iter()
            .filter(|c| matches_filter(&c.key.to_string(), &args.filter))
            .collect();
        anyhow::ensure!(
            !cells.is_empty(),
            "--filter {}: no cell of kernel `{}` in {} matches (ids look like `{example}`; \
             `mmx cells` lists them)",
            args.filter.join(" "),
            recipe.name,
            args.matrix.display()
        );
        Ok(Setup {
            matrix,
            recipe,
            repo,
            good,
            bad,
            boots: group_boots(cells),
        })
    }
}

/// Run `mmx bisect`: Ok(true) when the first changed commit was found, Ok(false) when the
/// bisect ended without one (no change, inconclusive, interrupted); Err for usage errors and
/// failures that stop it. Its steps are answered into `sink` (and its boots and builds report
/// there).
pub fn run(args: &BisectArgs, sink: SharedSink) -> anyhow::Result<bool> {
    let setup = Setup::check(args)?;
    // As root, directories others may write are refused before anything runs.
    crate::rundir::check_trusted_dir("--out", &args.out)?;
    let cancel = Cancel::new();
    cancel
        .install_signal_handlers()
        .context("installing the Ctrl-C handler")?;
    let cache = Cache::from_env()?;
    crate::backend::leftovers::reap_earlier_runs(
        Some(cache.root()),
        &crate::backend::local::scratch_base(setup.matrix.local_scratch.as_deref()),
        &*sink,
    );
    let runner = Runner::new(
        &setup.matrix,
        &setup.boots,
        args.accel,
        None,
        args.retries,
        sink.clone(),
        crate::debian::LockPolicy::from_env(),
    )?;
    let build_dir = build_dir_at(&setup.recipe, &setup.good)?;
    let commits = setup.repo.count(&setup.good, &setup.bad)?;
    let run_dir = RunDir::create(&args.out, &format!("bisect-{}", new_run_id()))?;
    // Boot logs go into each step's own directory.
    let _ = std::fs::remove_dir(run_dir.root.join("logs"));
    let now = now_rfc3339();
    let record = BisectRecord {
        schema_version: BISECT_SCHEMA_VERSION,
        mmx_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: now.clone(),
        finished_at: now,
        kernel: setup.recipe.name.clone(),
        recipe: setup.recipe.file.clone(),
        tree: setup.repo.path.clone(),
        good: Endpoint {
            rev: args.good.clone(),
            commit: setup.good.clone(),
        },
        bad: Endpoint {
            rev: args.bad.clone(),
            commit: setup.bad.clone(),
        },
        commits,
        matrix: args.matrix.clone(),
        filter: args.filter.clone(),
        probes: args.probe.clone(),
        expect: args.expect.clone(),
        build_dir: cache.root().join("builds").join(&build_dir),
        steps: Vec::new(),
        result: None,
    };
    let mut b = Bisect {
        args,
        recipe: setup.recipe,
        repo: setup.repo,
        cache,
        runner,
        repeats: setup.matrix.repeats,
        boots: setup.boots,
        cancel,
        root: run_dir.root.clone(),
        build_dir,
        record,
        printed: String::new(),
        git_log: String::new(),
        reference: Answers::default(),
        sink,
    };
    b.header();
    let result = b.bisect()?;
    b.finish(result)
}

struct Bisect<'a> {
    args: &'a BisectArgs,
    recipe: Recipe,
    repo: UserRepo,
    cache: Cache,
    runner: Runner,
    repeats: u32,
    boots: Vec<BootPlan>,
    cancel: Cancel,
    root: PathBuf,
    build_dir: String,
    record: BisectRecord,
    printed: String,
    git_log: String,
    /// The answers at `--good`.
    reference: Answers,
    /// Where its lines and notes go.
    sink: SharedSink,
}

impl Bisect<'_> {
    /// A line of the bisect's output: its answer, and the text log.
    fn say(&mut self, line: &str) {
        self.sink.answer(line);
        self.printed.push_str(line);
        self.printed.push('\n');
    }

    fn save(&mut self) {
        self.record.finished_at = now_rfc3339();
        let files = Files {
            dir: &self.root,
            record: &self.record,
            printed: &self.printed,
            git_log: &self.git_log,
        };
        if let Err(e) = files.write() {
            self.sink.note(Note::warning(format!(
                "could not write the bisect log: {e:#}"
            )));
        }
    }

    fn header(&mut self) {
        let r = &self.record;
        let cells: usize = self.boots.iter().map(|b| b.cells.len()).sum();
        let probes = if r.probes.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = r.probes.iter().map(|p| p.as_str()).collect();
            format!(" and probe {} per boot", names.join(", "))
        };
        let mut judged = match &r.expect {
            Some(e) => format!("cells against --expect {e}"),
            None => "against the answers at --good".into(),
        };
        if self.args.fail_on_kernel_warning {
            judged.push_str(", with the kernel warnings each cell printed");
        }
        let lines = [
            format!(
                "mmx bisect: kernel {}, {} commits after {} (--good {}) up to {} (--bad {})",
                r.kernel,
                r.commits,
                short(&r.good.commit),
                r.good.rev,
                short(&r.bad.commit),
                r.bad.rev
            ),
            format!(
                "  {cells} cell(s) in {} boot(s){probes}, judged {judged}",
                self.boots.len()
            ),
            format!("  build directory {}", r.build_dir.display()),
            format!("  → {}", self.root.display()),
        ];
        for l in lines {
            self.say(&l);
        }
    }

    fn bisect(&mut self) -> anyhow::Result<BisectResult> {
        let (good, bad) = (
            self.record.good.commit.clone(),
            self.record.bad.commit.clone(),
        );
        let Some((answers, verdict)) = self.evaluate(Role::Good, &good)? else {
            return Ok(BisectResult::Interrupted);
        };
        match verdict {
            Verdict::Good => self.reference = answers,
            Verdict::Bad => return Ok(BisectResult::GoodNotAsExpected),
            Verdict::Skip { why } => {
                return Ok(BisectResult::Untestable {
                    role: Role::Good,
                    why: why.as_str().into(),
                })
            }
        }
        let Some((_, verdict)) = self.evaluate(Role::Bad, &bad)? else {
            return Ok(BisectResult::Interrupted);
        };
        match verdict {
            Verdict::Bad => {}
            Verdict::Good => return Ok(BisectResult::NoChange),
            Verdict::Skip { why } => {
                return Ok(BisectResult::Untestable {
                    role: Role::Bad,
                    why: why.as_str().into(),
                })
            }
        }
        let (session, mut next) = Session::start(&self.repo, &self.root, &good, &bad)?;
        loop {
            self.git_log = session.log();
            self.save();
            match next {
                Next::Test(commit) => {
                    let Some((_, verdict)) = self.evaluate(Role::Bisect, &commit)? else {
                        return Ok(BisectResult::Interrupted);
                    };
                    next = session.mark(&commit, verdict)?;
                }
                Next::Found(commit) => {
                    self.git_log = session.log();
                    return Ok(self.found(&commit));
                }
                Next::OnlySkipped(candidates) => {
                    self.git_log = session.log();
                    let candidates = candidates
                        .into_iter()
                        .map(|commit| Candidate {
                            subject: self.repo.subject(&commit),
                            commit,
                        })
                        .collect();
                    return Ok(BisectResult::OnlySkipped { candidates });
                }
            }
        }
    }

    /// The result for git's first bad commit: its answers, and those before it (its parent's
    /// when that was tested, else --good's).
    fn found(&self, commit: &str) -> BisectResult {
        let tested = |c: &str, want: Verdict| {
            self.record
                .steps
                .iter()
                .rev()
                .find(|s| s.commit == c && s.verdict == Some(want))
        };
        let after = tested(commit, Verdict::Bad)
            .map(|s| s.answers.clone())
            .unwrap_or_default();
        let parent = self.repo.parent(commit);
        let (before_commit, before) = match parent.as_deref().and_then(|p| tested(p, Verdict::Good))
        {
            Some(s) => (s.commit.clone(), s.answers.clone()),
            None => (self.record.good.commit.clone(), self.reference.entries()),
        };
        BisectResult::Found {
            commit: commit.to_string(),
            subject: self.repo.subject(commit),
            before_commit,
            before,
            after,
        }
    }

    /// Build, boot and judge one commit. None: interrupted.
    fn evaluate(&mut self, role: Role, commit: &str) -> anyhow::Result<Option<(Answers, Verdict)>> {
        if self.cancel.is_cancelled() {
            return Ok(None);
        }
        let n = self.record.steps.len() + 1;
        let subject = self.repo.subject(commit);
        let step_dir = RunDir::create(
            &self.root.join("steps"),
            &format!("{n:02}-{}", short(commit)),
        )?;
        let mut step = Step {
            n,
            role,
            commit: commit.to_string(),
            subject,
            build: log::BuildInfo::default(),
            boots: Vec::new(),
            answers: Vec::new(),
            verdict: None,
            dir: PathBuf::from("steps").join(&step_dir.id),
        };
        self.sink.note(Note::info(format!(
            "{} {} {}: building and booting",
            log::step_label(&step),
            short(commit),
            step.subject
        )));
        let kernel = match self.build(commit, &step_dir.root, &mut step)? {
            Some(k) => k,
            None => {
                let verdict = (step.build.error.is_some() && !self.cancel.is_cancelled())
                    .then_some(Verdict::Skip {
                        why: SkipReason::BuildFailed,
                    });
                step.verdict = verdict;
                self.end_step(step, &Answers::default());
                return Ok(verdict.map(|v| (Answers::default(), v)));
            }
        };
        if self.cancel.is_cancelled() {
            self.end_step(step, &Answers::default());
            return Ok(None);
        }
        if let Some((_, kernels)) = &self.runner.qemu {
            kernels.provide(&self.recipe.name, kernel);
        }
        let mut results = Vec::new();
        for boot in &self.boots {
            let t = Instant::now();
            let (record, cells) =
                self.runner
                    .run_boot(boot, self.repeats, &step_dir, &self.cancel, None);
            step.boots.push(BootInfo {
                key: record.key.clone(),
                end: record.end.summary(),
                seconds: t.elapsed().as_secs_f64(),
            });
            results.push((record, cells));
            if self.cancel.is_cancelled() {
                self.end_step(step, &Answers::default());
                return Ok(None);
            }
        }
        let answers =
            Answers::collect(&results, &self.args.probe, self.args.fail_on_kernel_warning);
        let reference = match role {
            Role::Good => answers.clone(),
            Role::Bad | Role::Bisect => self.reference.clone(),
        };
        let verdict = answers.judge(&reference, self.args.expect.as_ref());
        step.answers = answers.entries();
        step.verdict = Some(verdict);
        self.end_step(step, &reference);
        Ok(Some((answers, verdict)))
    }

    /// Build `commit` into the bisect's build directory; the build log goes into `dir`.
    /// None: no kernel (the build failed, recorded in `step`, or was interrupted).
    fn build(
        &self,
        commit: &str,
        dir: &Path,
        step: &mut Step,
    ) -> anyhow::Result<Option<ResolvedKernel>> {
        let opts = EnsureOptions {
            cancel: Some(&self.cancel),
            ..EnsureOptions::new(&*self.sink)
        };
        let t = Instant::now();
        let built = ensure_source_at(&self.recipe, commit, &self.build_dir, &self.cache, &opts);
        let keep_log = |from: Option<&Path>| {
            let from = from?;
            let to = dir.join("build.log");
            std::fs::copy(from, &to).ok()?;
            to.strip_prefix(&self.root).ok().map(Path::to_path_buf)
        };
        match built {
            Ok(k) => {
                let log = k.vmlinuz.parent().map(|d| d.join("build.log"));
                step.build = log::BuildInfo {
                    cached: k.timings.cached,
                    seconds: k.timings.build.as_secs_f64(),
                    kbuild_steps: k.timings.kbuild_steps,
                    error: None,
                    log: keep_log(log.as_deref()),
                };
                Ok(Some(k))
            }
            Err(KernelError::Build { ref error, .. })
                if matches!(**error, BuildError::Interrupted { .. }) =>
            {
                Ok(None)
            }
            Err(e @ KernelError::Build { .. }) => {
                let log = match &e {
                    KernelError::Build { error, .. } => keep_log(error.log()),
                    _ => None,
                };
                step.build = log::BuildInfo {
                    cached: false,
                    seconds: t.elapsed().as_secs_f64(),
                    kbuild_steps: 0,
                    error: Some(e.to_string()),
                    log,
                };
                Ok(None)
            }
            Err(e) => Err(e)
                .with_context(|| format!("building {} at {}", self.recipe.name, short(commit))),
        }
    }

    /// Record a finished (or interrupted) step, print it, save everything.
    fn end_step(&mut self, step: Step, reference: &Answers) {
        let boots: f64 = step.boots.iter().map(|b| b.seconds).sum();
        let boot_words = match step.boots.as_slice() {
            [] => String::new(),
            bs => {
                let ended: Vec<String> = bs
                    .iter()
                    .filter(|b| b.end != "completed")
                    .map(|b| format!("{}: {}", b.key, b.end))
                    .collect();
                let ended = if ended.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", ended.join("; "))
                };
                format!(", {} boot(s) in {boots:.1} s{ended}", bs.len())
            }
        };
        let verdict = step
            .verdict
            .map_or_else(|| "interrupted".to_string(), |v| v.to_string());
        let mut lines = vec![format!(
            "{:<7} {} {} — {}{boot_words}: {verdict}",
            log::step_label(&step),
            short(&step.commit),
            step.subject,
            log::build_words(&step.build)
        )];
        if let Some(e) = &step.build.error {
            lines.push(format!(
                "          {}",
                e.lines().next().unwrap_or_default()
            ));
        }
        let answers = Answers::from_entries(&step.answers);
        match step.role {
            // The reference: every answer.
            Role::Good => {
                for (s, a) in &answers.0 {
                    lines.push(format!("          {s}: {a}"));
                }
            }
            Role::Bad | Role::Bisect => {
                for s in answers.departures(reference, self.args.expect.as_ref()) {
                    let now = answers
                        .0
                        .get(&s)
                        .map_or_else(|| "-".to_string(), ToString::to_string);
                    let was = match (&s, &self.args.expect) {
                        (Subject::Cell { .. }, Some(e)) => format!("expected {e}"),
                        _ => reference
                            .0
                            .get(&s)
                            .map_or_else(|| "-".to_string(), ToString::to_string),
                    };
                    lines.push(format!("          {s}: {was} → {now}"));
                }
            }
        }
        self.record.steps.push(step);
        for l in lines {
            self.say(&l);
        }
        self.save();
    }

    fn finish(mut self, result: BisectResult) -> anyhow::Result<bool> {
        let found = result.found();
        self.say(&result.headline());
        if let BisectResult::Found {
            before_commit,
            before,
            after,
            ..
        } = &result
        {
            let table = log::answer_table(
                &Answers::from_entries(before),
                &Answers::from_entries(after),
            );
            let lines: Vec<String> = std::iter::once(format!(
                "  answers before ({}) → after:",
                short(before_commit)
            ))
            .chain(table.into_iter().map(|(changed, s, b, a)| {
                format!("  {} {s}: {b} → {a}", if changed { "*" } else { " " })
            }))
            .collect();
            for l in lines {
                self.say(&l);
            }
        }
        self.record.result = Some(result);
        self.save();
        self.sink.note(Note::info(format!(
            "bisect log {}, report {}",
            self.root.join("bisect.json").display(),
            self.root.join("report.md").display()
        )));
        Ok(found)
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

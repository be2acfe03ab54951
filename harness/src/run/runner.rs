//! Running boots on their backends: the QEMU backend with its kernels (fetched once per run),
//! the local agent, and metal hosts through one SSH session per host, with the runtimes their
//! cells start (made ready once, before any boot). Retries infra errors only, and checks every
//! cell against the matrix's known answers.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::guest::Guest;
use super::{fold_boot, plan_for, BootPlan, FoldWith};
use crate::backend::qemu::{AccelChoice, Qemu, BOOT_ALLOWANCE};
use crate::backend::ssh::HostSession;
use crate::backend::{ms_between, BootOutput, BootRequest, Deadlines};
use crate::cell::BootKey;
use crate::debian::{Cache, LockDocument, LockPolicy};
use crate::events::{Note, SharedSink, Sink};
use crate::kernels::relock::complete;
use crate::kernels::{EnsureOptions, KernelError, LockFile, Recipe, ResolvedKernel};
use crate::matrix::{Cell, Expectations, Matrix, Target};
use crate::proc::Cancel;
use crate::results::{
    Accel, BootEnd, BootRecord, CellRecord, HostInfo, InfraCause, RunDir, Sizing, TcgBenchmarks,
};
use crate::runtimes::ready::RunRuntimes;

/// From the agent's start to its hello on this machine (it execs at once).
const LOCAL_START: Duration = Duration::from_secs(30);
/// Connecting to a host and copying the agent (a few MB) there, until the agent's hello.
const SSH_START: Duration = Duration::from_secs(150);

/// Kernel recipes, their lock and the cache, resolved lazily: each kernel is fetched once per
/// run, however many boots use it.
pub struct Kernels {
    recipes: Vec<Recipe>,
    lock: LockFile,
    lock_path: PathBuf,
    /// What a kernel whose locked packages the archive dropped gets ([`Kernels::complete_lock`]).
    policy: LockPolicy,
    cache: Cache,
    resolved: Mutex<HashMap<String, Result<Arc<ResolvedKernel>, String>>>,
}

impl Kernels {
    /// Load `kernels/` beside the matrix file, checking the matrix names only known recipes.
    pub fn load(matrix: &Matrix) -> anyhow::Result<Kernels> {
        let dir = matrix.kernels_dir();
        let recipes = crate::kernels::load_recipes(&dir)?;
        for name in &matrix.kernels {
            if !recipes.iter().any(|r| &r.name == name) {
                let known: Vec<&str> = recipes.iter().map(|r| r.name.as_str()).collect();
                anyhow::bail!(
                    "{}: kernels: `{name}` has no recipe {}/{name}.toml (recipes: {})",
                    matrix.path.display(),
                    dir.display(),
                    known.join(", ")
                );
            }
        }
        let lock_path = dir.join("kernels.lock");
        let lock = if lock_path.exists() {
            LockFile::load(&lock_path)?
        } else {
            LockFile::default()
        };
        Ok(Kernels {
            recipes,
            lock,
            lock_path,
            policy: LockPolicy::from_env(),
            cache: Cache::from_env()?,
            resolved: Mutex::new(HashMap::new()),
        })
    }

    pub fn cache_root(&self) -> PathBuf {
        self.cache.root().to_path_buf()
    }

    /// Give every kernel of `names` that is locked at all its kernels.lock entry before
    /// anything runs: resolved on first use and written, or, with the lock frozen (`--locked`,
    /// `CI=true`), an error naming the recipes and `mmx kernels lock`. Kernels fetched later
    /// keep to `policy` too.
    pub fn complete_lock<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a str>,
        policy: LockPolicy,
        sink: &dyn Sink,
    ) -> Result<(), KernelError> {
        let names: Vec<&str> = names.into_iter().collect();
        let used: Vec<&Recipe> = self
            .recipes
            .iter()
            .filter(|r| names.contains(&r.name.as_str()))
            .collect();
        self.lock = complete(&self.lock_path, &used, policy, &self.cache, sink)?;
        self.policy = policy;
        Ok(())
    }

    /// Boot `kernel` for `name` from now on instead of resolving its recipe: `mmx bisect`
    /// builds a recipe at each step's commit and boots that.
    pub fn provide(&self, name: &str, kernel: ResolvedKernel) {
        if let Ok(mut m) = self.resolved.lock() {
            m.insert(name.to_string(), Ok(Arc::new(kernel)));
        }
    }

    /// Fetch (or find in the cache) a kernel, telling `sink` what the user should know about it
    /// (and a source build's progress); `cancel` stops a source build. The map lock is not held
    /// while fetching, so two kernels download at once; the cache's own file locks keep one
    /// kernel from being fetched twice.
    pub fn get(
        &self,
        name: &str,
        cancel: &Cancel,
        sink: &dyn Sink,
    ) -> Result<Arc<ResolvedKernel>, String> {
        if let Some(r) = self.resolved.lock().ok().and_then(|m| m.get(name).cloned()) {
            return r;
        }
        // Ctrl-C stops a source build's make (it runs in a process group of its own).
        let opts = EnsureOptions {
            policy: self.policy,
            cancel: Some(cancel),
            ..EnsureOptions::new(sink)
        };
        let r = match self.recipes.iter().find(|r| r.name == name) {
            None => Err(format!("no kernel recipe named `{name}`")),
            Some(recipe) => crate::kernels::ensure_opts(recipe, &self.lock, &self.cache, &opts)
                .map(Arc::new)
                // The whole chain: a wrapped error's own line names only the kernel.
                .map_err(|e| format!("{:#}", anyhow::Error::from(e))),
        };
        if let Ok(mut m) = self.resolved.lock() {
            m.insert(name.to_string(), r.clone());
        }
        r
    }
}

/// Runs boots on their backends.
pub struct Runner {
    pub agent: PathBuf,
    pub host: HostInfo,
    pub local_scratch: Option<PathBuf>,
    pub retries: u32,
    /// Present when the run has QEMU boots.
    pub qemu: Option<(Qemu, Kernels)>,
    /// The matrix's known answers, checked on every cell.
    pub expectations: Expectations,
    /// The runtimes the boots' cells start, ready or with the reason they are not.
    pub runtimes: RunRuntimes,
    /// This machine's cores, shared by the pool's guests ([`host_threads`]).
    pub cores: super::cores::Cores,
    /// Where the backends, kernels and runtimes report what the user should know.
    pub sink: SharedSink,
    /// A kernel splat during a cell's items fails the cell (`--fail-on-kernel-warning`).
    pub fail_on_kernel_warning: bool,
    /// `[run] tcg_benchmarks` and `--full-bench`: what [`Sizing::decide`] weighs beside a
    /// boot's accelerator.
    pub tcg_benchmarks: TcgBenchmarks,
    pub full_bench: bool,
}

impl Runner {
    /// A runner for `boots`: builds what their backends need (the QEMU backend and kernels only
    /// when some boot is a guest). `sink` hears what they say, setting up and in every boot;
    /// `policy`: what a kernel or runtime without a lock entry, or one whose locked packages
    /// the archive dropped, gets (`--locked`, `CI=true`: an error).
    pub fn new(
        matrix: &Matrix,
        boots: &[BootPlan],
        accel: AccelChoice,
        local_scratch: Option<PathBuf>,
        retries: u32,
        sink: SharedSink,
        policy: LockPolicy,
    ) -> anyhow::Result<Runner> {
        let guest_kernels: BTreeSet<&str> = boots
            .iter()
            .filter_map(|b| match &b.target {
                Target::Qemu { kernel, .. } => Some(kernel.as_str()),
                Target::Local | Target::Ssh { .. } => None,
            })
            .collect();
        // Configuration errors first, before a build that can take a minute: a missing lock
        // entry is one when the lock is frozen.
        let kernels = if guest_kernels.is_empty() {
            None
        } else {
            let mut kernels = Kernels::load(matrix)?;
            kernels.complete_lock(guest_kernels.iter().copied(), policy, &*sink)?;
            Some(kernels)
        };
        let used: BTreeSet<_> = boots
            .iter()
            .flat_map(|b| &b.cells)
            .filter_map(|c| c.scenario.runtime().cloned())
            .collect();
        let runtimes_lock = matrix.runtimes_lock();
        crate::runtimes::relock::complete(
            &runtimes_lock,
            &matrix.runtimes,
            &used,
            &matrix.path,
            policy,
            &*sink,
        )?;
        let agent = crate::agent::build_static().context("building mmx-agent")?;
        let qemu = if let Some(kernels) = kernels {
            let qemu = Qemu::new(accel, agent.clone(), kernels.cache_root(), &*sink)
                .context("setting up the QEMU backend")?;
            Some((qemu, kernels))
        } else {
            None
        };
        // Every runtime the selected cells start, once, before any boot (a build can take a
        // minute; a failed one costs its cells only).
        let runtimes =
            RunRuntimes::prepare(&matrix.runtimes, &used, &runtimes_lock, policy, &*sink);
        Ok(Runner {
            agent,
            host: HostInfo::detect(),
            local_scratch,
            retries,
            qemu,
            expectations: matrix.expectations.clone(),
            runtimes,
            cores: super::cores::Cores::of_this_machine(),
            sink,
            fail_on_kernel_warning: false,
            tcg_benchmarks: matrix.tcg_benchmarks,
            full_bench: false,
        })
    }

    /// What every fold of this run needs.
    fn fold_with(&self) -> FoldWith<'_> {
        FoldWith {
            host_cpu: &self.host.cpu_model,
            runtimes: &self.runtimes,
            expectations: &self.expectations,
            fail_on_kernel_warning: self.fail_on_kernel_warning,
        }
    }

    /// The plan for `boot` with the run's runtimes ([`plan_for`]).
    fn plan(&self, boot: &BootPlan, repeats: u32, scratch: &Path) -> protocol::Plan {
        plan_for(boot, repeats, scratch, &self.runtimes)
    }

    /// Run one job: one boot, or all visits of one metal host through one SSH session (its
    /// provision hook before the first, teardown after the last). `on_start` hears each boot
    /// start, `on_boot` gets it folded.
    pub fn run_job(
        &self,
        job: &[BootPlan],
        repeats: u32,
        run_dir: &RunDir,
        cancel: &Cancel,
        on_start: impl Fn(&BootKey),
        mut on_boot: impl FnMut(BootRecord, Vec<CellRecord>, Duration),
    ) {
        let (guests, job) = super::guest::guests_of(job.to_vec());
        for guest in guests {
            for p in &guest.parts {
                on_start(&p.key);
            }
            let t = Instant::now();
            let folded = self.run_guest(&guest, repeats, run_dir, cancel);
            let took = t.elapsed();
            for (b, c) in folded {
                on_boot(b, c, took);
            }
        }
        let mut session = match job.first().map(|b| &b.target) {
            Some(Target::Ssh { host, .. }) => {
                Some(HostSession::open(host, cancel, self.sink.clone()))
            }
            _ => None,
        };
        for boot in &job {
            on_start(&boot.key);
            let t = Instant::now();
            let (b, c) = if cancel.is_cancelled() {
                let out = BootOutput::infra(
                    &self.plan(boot, repeats, Path::new("/")),
                    Accel::Unmeasured,
                    InfraCause::Cancelled,
                    "not started: the run was interrupted (Ctrl-C)",
                    vec![],
                );
                fold_boot(boot, &out, 0, &self.fold_with())
            } else {
                self.run_boot(boot, repeats, run_dir, cancel, session.as_mut())
            };
            on_boot(b, c, t.elapsed());
        }
        if let Some(s) = session {
            if let Err(e) = s.close() {
                self.sink.note(Note::warning(e));
            }
        }
    }

    /// Run one boot with retries for infra errors only, and fold it into records. Cells whose
    /// runtime is not ready do not run: they end `infra-error` with the reason, and the boot
    /// runs the others.
    pub fn run_boot(
        &self,
        boot: &BootPlan,
        repeats: u32,
        run_dir: &RunDir,
        cancel: &Cancel,
        mut session: Option<&mut HostSession>,
    ) -> (BootRecord, Vec<CellRecord>) {
        let with = self.fold_with();
        let (runnable, unready) = self.split_unready(boot);
        let (b, mut cells) = if runnable.cells.is_empty() {
            // Nothing to boot for: the boot's record says why.
            let out = BootOutput::infra(
                &self.plan(boot, repeats, Path::new("/")),
                Accel::Unmeasured,
                InfraCause::Runtime,
                "every cell of this boot starts a runtime that is not ready",
                vec![],
            );
            let (b, _) = fold_boot(boot, &out, 0, &with);
            (b, Vec::new())
        } else {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let out = self.attempt(&runnable, repeats, run_dir, cancel, session.as_deref_mut());
                let retry = matches!(out.end, BootEnd::Infra { cause, .. } if cause.is_retryable())
                    && attempts <= self.retries
                    && !cancel.is_cancelled();
                if !retry {
                    break fold_boot(&runnable, &out, attempts, &with);
                }
            }
        };
        // The cells that never ran belong to the boot that did: folded under its key (a host's
        // measured filesystem labels them too), each ending with why its runtime is not ready.
        for (why, unready) in unready {
            let part = BootPlan {
                key: b.key.clone(),
                cells: unready,
                ..boot.clone()
            };
            let out = BootOutput::infra(
                &self.plan(&part, repeats, Path::new("/")),
                Accel::Unmeasured,
                InfraCause::Runtime,
                why,
                vec![],
            );
            cells.extend(fold_boot(&part, &out, 0, &with).1);
        }
        (b, cells)
    }

    /// Run one guest serving the boots of several filesystems ([`super::guest`]), retrying infra
    /// errors as [`Runner::run_boot`] does, then once more in a fresh guest for the cells it did
    /// not reach; one record per boot (and one more for a boot the rerun guest served too).
    /// Cells whose runtime is not ready do not run, as in [`Runner::run_boot`].
    pub fn run_guest(
        &self,
        guest: &Guest,
        repeats: u32,
        run_dir: &RunDir,
        cancel: &Cancel,
    ) -> Vec<(BootRecord, Vec<CellRecord>)> {
        let with = self.fold_with();
        let mut runnable = Vec::new();
        let mut unready_of = Vec::new();
        for p in &guest.parts {
            let (r, unready) = self.split_unready(p);
            if !r.cells.is_empty() {
                runnable.push(r);
            }
            unready_of.push((p.clone(), unready));
        }
        let mut records: Vec<(BootRecord, Vec<CellRecord>)> = Vec::new();
        let mut next = Some(Guest {
            parts: runnable,
            rerun: guest.rerun,
        });
        while let Some(g) = next.take() {
            if g.parts.is_empty() {
                break;
            }
            let mut attempts = 0;
            let out = loop {
                attempts += 1;
                let out = self.attempt_guest(&g, repeats, run_dir, cancel);
                let retry = matches!(out.end, BootEnd::Infra { cause, .. } if cause.is_retryable())
                    && attempts <= self.retries
                    && !cancel.is_cancelled();
                if !retry {
                    break out;
                }
            };
            let (parts, rest) = g.split(repeats, &out, &self.runtimes);
            for part in parts {
                let (mut b, c) = fold_boot(&part.boot, &part.out, attempts, &with);
                b.guest = g.record();
                records.push((b, c));
            }
            if let Some(rest) = &rest {
                let cells: usize = rest.parts.iter().map(|p| p.cells.len()).sum();
                self.sink.note(Note::warning(format!(
                    "{}: the guest ended ({}) before {cells} cell(s); running them in a fresh guest",
                    g.log_stem().map(|s| s.to_string()).unwrap_or_default(),
                    out.end.summary()
                )));
            }
            next = rest.filter(|_| !cancel.is_cancelled());
        }
        // Cells that never ran belong to their boot's record, each ending with why its runtime
        // is not ready; a boot with no runnable cell gets a record saying so.
        for (part, unready) in unready_of {
            if unready.is_empty() {
                continue;
            }
            let at = records.iter().position(|(b, _)| b.key == part.key);
            let at = match at {
                Some(i) => i,
                None => {
                    let out = BootOutput::infra(
                        &self.plan(&part, repeats, Path::new("/")),
                        Accel::Unmeasured,
                        InfraCause::Runtime,
                        "every cell of this boot starts a runtime that is not ready",
                        vec![],
                    );
                    let (b, _) = fold_boot(&part, &out, 0, &with);
                    records.push((b, Vec::new()));
                    records.len() - 1
                }
            };
            for (why, cells) in unready {
                let sub = BootPlan {
                    cells,
                    ..part.clone()
                };
                let out = BootOutput::infra(
                    &self.plan(&sub, repeats, Path::new("/")),
                    Accel::Unmeasured,
                    InfraCause::Runtime,
                    why,
                    vec![],
                );
                let (_, c) = fold_boot(&sub, &out, 0, &with);
                if let Some((b, cs)) = records.get_mut(at) {
                    b.cells.extend(c.iter().map(|r| r.key.clone()));
                    cs.extend(c);
                }
            }
        }
        records
    }

    /// One try of a guest: its kernel, the cores it holds, and the boot.
    fn attempt_guest(
        &self,
        guest: &Guest,
        repeats: u32,
        run_dir: &RunDir,
        cancel: &Cancel,
    ) -> BootOutput {
        let scratch = Path::new(crate::backend::qemu::SCRATCH_DIR);
        let plan = guest.plan(repeats, scratch, &self.runtimes);
        let (Some(key), Some(stem), Some(first)) =
            (guest.key(), guest.log_stem(), guest.parts.first())
        else {
            return BootOutput::infra(
                &plan,
                Accel::Tcg,
                InfraCause::Internal,
                "an empty guest",
                vec![],
            );
        };
        let mut req = BootRequest {
            key: key.clone(),
            deadlines: Deadlines::for_plan(&plan, BOOT_ALLOWANCE),
            plan,
            run_dir: run_dir.clone(),
            cancel: cancel.clone(),
            sink: self.sink.clone(),
        };
        let Target::Qemu { kernel, topology } = &first.target else {
            return BootOutput::infra(
                &req.plan,
                Accel::Tcg,
                InfraCause::Internal,
                "a guest for a target that is not QEMU",
                vec![],
            );
        };
        let Some((qemu, kernels)) = &self.qemu else {
            return BootOutput::infra(
                &req.plan,
                Accel::Tcg,
                InfraCause::Internal,
                "QEMU backend not set up",
                vec![],
            );
        };
        let t = Instant::now();
        let resolved = match kernels.get(kernel, cancel, &*self.sink) {
            Ok(k) => k,
            Err(e) => {
                return BootOutput::infra(
                    &req.plan,
                    qemu.accel().unwrap_or(Accel::Tcg),
                    InfraCause::Kernel,
                    e,
                    vec![],
                )
            }
        };
        let fetch_ms = ms_between(t, Instant::now());
        let accel = qemu.decide_now(&resolved, &*self.sink);
        let all = BootPlan {
            cells: guest.parts.iter().flat_map(|p| p.cells.clone()).collect(),
            ..first.clone()
        };
        let Some(_held) = self.cores.take(host_threads(&all, accel, topology), cancel) else {
            return BootOutput::infra(
                &req.plan,
                accel,
                InfraCause::Cancelled,
                "not started: the run was interrupted (Ctrl-C)",
                vec![],
            );
        };
        // Sized once, here, where the guest's accelerator is known (as for a boot of its own).
        let sizing = Sizing::decide(accel, self.tcg_benchmarks, self.full_bench);
        super::sizing::apply(&mut req.plan, sizing);
        let mut out = qemu.boot_serving(&req, &resolved, topology, &guest.filesystems(), &stem);
        out.timings_ms.insert("kernel-fetch".into(), fetch_ms);
        out.sizing = Some(sizing);
        out
    }

    /// The boot without its cells whose runtime is not ready, and those cells grouped by why.
    fn split_unready(&self, boot: &BootPlan) -> (BootPlan, Vec<(String, Vec<Cell>)>) {
        let mut runnable = Vec::new();
        let mut unready: Vec<(String, Vec<Cell>)> = Vec::new();
        for c in &boot.cells {
            let why = match c.scenario.runtime().map(|n| (n, self.runtimes.get(n))) {
                None | Some((_, Some(Ok(_)))) => None,
                Some((n, Some(Err(e)))) => Some(format!("runtime `{n}` is not ready: {e}")),
                Some((n, None)) => Some(format!("runtime `{n}` was not prepared for this run")),
            };
            match why {
                None => runnable.push(c.clone()),
                Some(w) => match unready.iter_mut().find(|(x, _)| *x == w) {
                    Some((_, cells)) => cells.push(c.clone()),
                    None => unready.push((w, vec![c.clone()])),
                },
            }
        }
        (
            BootPlan {
                cells: runnable,
                ..boot.clone()
            },
            unready,
        )
    }

    fn attempt(
        &self,
        boot: &BootPlan,
        repeats: u32,
        run_dir: &RunDir,
        cancel: &Cancel,
        session: Option<&mut HostSession>,
    ) -> BootOutput {
        // The deadlines of every backend come from here: the plan's items and what it takes
        // the backend to get the agent going.
        let request = |scratch: &Path, start: Duration| {
            let plan = self.plan(boot, repeats, scratch);
            BootRequest {
                key: boot.key.clone(),
                deadlines: Deadlines::for_plan(&plan, start),
                plan,
                run_dir: run_dir.clone(),
                cancel: cancel.clone(),
                sink: self.sink.clone(),
            }
        };
        match &boot.target {
            Target::Local => {
                let req = request(
                    self.local_scratch.as_deref().unwrap_or(Path::new("/")),
                    LOCAL_START,
                );
                if self.local_scratch.is_none() {
                    return BootOutput::infra(
                        &req.plan,
                        Accel::Metal,
                        InfraCause::Internal,
                        "local cell without a scratch dir",
                        vec![],
                    );
                }
                let mut out = crate::backend::local::run_boot(&self.agent, &req);
                out.sizing = Some(Sizing::decide(
                    out.accel,
                    self.tcg_benchmarks,
                    self.full_bench,
                ));
                out
            }
            Target::Qemu { kernel, topology } => {
                let mut req = request(Path::new(crate::backend::qemu::SCRATCH_DIR), BOOT_ALLOWANCE);
                let Some((qemu, kernels)) = &self.qemu else {
                    return BootOutput::infra(
                        &req.plan,
                        Accel::Tcg,
                        InfraCause::Internal,
                        "QEMU backend not set up",
                        vec![],
                    );
                };
                let t = Instant::now();
                let resolved = match kernels.get(kernel, cancel, &*self.sink) {
                    Ok(k) => k,
                    Err(e) => {
                        return BootOutput::infra(
                            &req.plan,
                            qemu.accel().unwrap_or(Accel::Tcg),
                            InfraCause::Kernel,
                            e,
                            vec![],
                        )
                    }
                };
                let fetch_ms = ms_between(t, Instant::now());
                // Guests' filesystems come from the matrix's list, never from a measurement.
                let Some(fs) = boot.key.filesystem.known() else {
                    return BootOutput::infra(
                        &req.plan,
                        Accel::Tcg,
                        InfraCause::Internal,
                        "a guest boot without a layers filesystem",
                        vec![],
                    );
                };
                let accel = qemu.decide_now(&resolved, &*self.sink);
                let Some(_held) = self.cores.take(host_threads(boot, accel, topology), cancel)
                else {
                    return BootOutput::infra(
                        &req.plan,
                        accel,
                        InfraCause::Cancelled,
                        "not started: the run was interrupted (Ctrl-C)",
                        vec![],
                    );
                };
                // Sized once, here, where the guest's accelerator is known.
                let sizing = Sizing::decide(accel, self.tcg_benchmarks, self.full_bench);
                super::sizing::apply(&mut req.plan, sizing);
                let mut out = qemu.boot(&req, &resolved, topology, fs);
                out.timings_ms.insert("kernel-fetch".into(), fetch_ms);
                out.sizing = Some(sizing);
                out
            }
            Target::Ssh { host, smt } => {
                let req = request(
                    &host
                        .scratch_dir
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("scratch")),
                    SSH_START,
                );
                let mut out = match session {
                    Some(s) => s.run(&self.agent, *smt, &req),
                    None => crate::backend::ssh::run_host(&self.agent, host, *smt, &req),
                };
                out.sizing = Some(Sizing::decide(
                    out.accel,
                    self.tcg_benchmarks,
                    self.full_bench,
                ));
                out
            }
        }
    }
}

/// The host cores a guest keeps busy: one per vCPU when its vCPUs run at once (KVM, tcg-mt) and
/// it measures contention, so that no other guest takes turns with them; else one (a TCG guest
/// is one host thread, and a boot that measures no contention may share).
pub fn host_threads(boot: &BootPlan, accel: Accel, topology: &crate::matrix::Topology) -> usize {
    let lockbench = boot
        .cells
        .iter()
        .any(|c| matches!(c.scenario, protocol::Scenario::Lockbench(_)));
    match accel {
        Accel::Kvm | Accel::TcgMt if lockbench => topology.vcpus() as usize,
        _ => 1,
    }
}

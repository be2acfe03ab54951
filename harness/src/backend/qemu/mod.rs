//! The `qemu` backend: one guest per boot, booted from `-kernel`/`-initrd` (no root disk, no
//! 9p, no virtiofs), console on ttyS0, results on ttyS1, the layers on a raw scratch disk.
//!
//! Phases, one file each: [`accel`] (KVM or TCG), [`disk`] (the scratch image), [`args`] (the
//! command line from pure functions), [`process`] (spawn, watch, kill), [`console`] (what the
//! kernel log says). This file puts them together for one [`BootRequest`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use protocol::{Filesystem, Plan, ScratchDisk};

use crate::backend::{
    leftovers, ms_between, BootOutput, BootRequest, Deadlines, Placement, ResultStream,
};
use crate::debian::Cache;
use crate::events::{Note, Sink};
use crate::kernels::{ModuleFeature, ResolvedKernel};
use crate::matrix::Topology;
use crate::proc::{Cancel, Run};
use crate::results::{Accel, BootEnd, InfraCause};
use crate::rundir::LogStem;

pub mod accel;
pub mod args;
pub mod console;
pub mod disk;
pub mod process;

pub use accel::AccelChoice;

/// Where the guest mounts the layers' filesystem.
pub const SCRATCH_DIR: &str = "/scratch";

/// Boot allowance under KVM (QEMU start → agent running as PID 1); `Deadlines::under` scales it
/// for TCG with every other deadline.
pub const BOOT_ALLOWANCE: Duration = Duration::from_secs(40);

/// The QEMU backend. Cheap to share between worker threads: the accelerator is decided once.
#[derive(Debug)]
pub struct Qemu {
    choice: AccelChoice,
    agent: PathBuf,
    cache_dir: PathBuf,
    qemu: PathBuf,
    /// Decided in [`Qemu::new`], or by the probe on the first boot (`auto` with a /dev/kvm).
    accel: Mutex<Option<Accel>>,
    deadlines: Option<Deadlines>,
    extra_cmdline: String,
}

impl Qemu {
    /// `agent` is the static agent (`crate::agent::path()`), `cache_dir` the mmx cache
    /// (pristine disk images, initramfs bases, the KVM verdict). The QEMU binary is
    /// [`qemu_binary`]. `sink` hears how the accelerator was decided, when it was.
    pub fn new(
        choice: AccelChoice,
        agent: PathBuf,
        cache_dir: PathBuf,
        sink: &dyn Sink,
    ) -> anyhow::Result<Qemu> {
        let qemu = qemu_binary();
        let decided = match choice {
            AccelChoice::Tcg => Some(Accel::Tcg),
            AccelChoice::TcgMt => Some(Accel::TcgMt),
            AccelChoice::Kvm => {
                accel::kvm_openable().map_err(|e| anyhow::anyhow!("--accel kvm: {e}"))?;
                Some(Accel::Kvm)
            }
            AccelChoice::Auto => match accel::kvm_openable() {
                Err(e) => {
                    sink.note(Note::warning(format!(
                        "KVM is not usable here ({e}); guests run under TCG"
                    )));
                    Some(Accel::Tcg)
                }
                Ok(()) => cached_verdict(&qemu, &cache_dir, sink),
            },
        };
        let agent = guest_agent(&agent, &cache_dir);
        Ok(Qemu {
            choice,
            agent,
            cache_dir,
            qemu,
            accel: Mutex::new(decided),
            deadlines: None,
            extra_cmdline: String::new(),
        })
    }

    /// Use this QEMU binary instead.
    pub fn with_qemu_binary(mut self, qemu: PathBuf) -> Qemu {
        self.qemu = qemu;
        self
    }

    /// Fixed deadlines, unscaled, instead of each request's (tests that need a short one).
    pub fn with_deadlines(mut self, deadlines: Deadlines) -> Qemu {
        self.deadlines = Some(deadlines);
        self
    }

    /// Appended to every guest's kernel command line.
    pub fn with_extra_cmdline(mut self, extra: &str) -> Qemu {
        self.extra_cmdline = extra.to_string();
        self
    }

    /// The accelerator, once decided (None before the first `auto` boot has probed).
    pub fn accel(&self) -> Option<Accel> {
        *self.accel.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decide the accelerator now, booting the probe guest with `kernel` if `auto` has no
    /// verdict yet (and caching it), exactly as the first boot of a run would (`mmx doctor`).
    pub fn decide_now(&self, kernel: &ResolvedKernel, sink: &dyn Sink) -> Accel {
        self.decide_accel(kernel, sink)
    }

    /// Boot one guest for `req` with the layers on `fs` and collect what its agent said. Never
    /// fails: problems on our side come back as `BootEnd::Infra`, the guest's as
    /// `Panic`/`Timeout`. Its logs are named after `req.key`.
    pub fn boot(
        &self,
        req: &BootRequest,
        kernel: &ResolvedKernel,
        topology: &Topology,
        fs: Filesystem,
    ) -> BootOutput {
        self.boot_serving(
            req,
            kernel,
            topology,
            &[fs],
            &LogStem::Boot(req.key.clone()),
        )
    }

    /// Boot one guest that serves every filesystem of `filesystems`: one scratch disk each
    /// (tmpfs needs none), attached at once, each plan item on its own filesystem's disk. Its
    /// logs are named after `logs`.
    pub fn boot_serving(
        &self,
        req: &BootRequest,
        kernel: &ResolvedKernel,
        topology: &Topology,
        filesystems: &[Filesystem],
        logs: &LogStem,
    ) -> BootOutput {
        let start = Instant::now();
        let accel = self.decide_accel(kernel, &*req.sink);
        let mut out = self.boot_with(req, kernel, topology, filesystems, logs, accel, start);
        // A kernel KVM cannot run even though the probe guest could: fall back for this boot.
        let kvm_failed = matches!(
            out.end,
            BootEnd::Infra {
                cause: InfraCause::KvmUnusable,
                ..
            }
        );
        if accel == Accel::Kvm
            && self.choice == AccelChoice::Auto
            && kvm_failed
            && out.stream.hello.is_none()
        {
            req.sink.note(Note::warning(format!(
                "{}: KVM failed on this kernel; retrying under TCG",
                req.key
            )));
            out = self.boot_with(
                req,
                kernel,
                topology,
                filesystems,
                logs,
                Accel::Tcg,
                Instant::now(),
            );
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn boot_with(
        &self,
        req: &BootRequest,
        kernel: &ResolvedKernel,
        topology: &Topology,
        filesystems: &[Filesystem],
        stem: &LogStem,
        accel: Accel,
        start: Instant,
    ) -> BootOutput {
        let console_rel = stem.rel("console");
        let results_rel = stem.rel("results");
        let qemu_rel = stem.rel("qemu");
        let plan_rel = stem.rel("plan").with_extension("json");
        let logs = vec![console_rel.clone(), results_rel.clone(), qemu_rel.clone()];
        let plan = guest_placement(kernel, filesystems, accel).plan(&req.plan);
        let infra = |msg: String| {
            let mut o =
                BootOutput::infra(&req.plan, accel, InfraCause::BootSetup, msg, logs.clone());
            o.kernel_source = Some(kernel.provenance.describe());
            o.kernel_substituted = kernel.substituted.clone();
            o
        };

        let mut timings = BTreeMap::new();
        let work = match self.work_dir() {
            Ok(w) => w,
            Err(e) => return infra(format!("{e:#}")),
        };
        let initrd = work.path().join("initrd.cpio");
        let cache = Cache::at(&self.cache_dir);
        let made = crate::initramfs::base_archive(
            &self.agent,
            kernel,
            &wanted_features(filesystems),
            &cache,
        )
        .and_then(|base| {
            // The plan as sent still names this machine's copies of the runtimes.
            let runtimes = crate::initramfs::runtimes_archive(&req.plan.runtimes, &cache)?;
            crate::initramfs::write_initrd(&base, runtimes.as_deref(), &plan, &initrd)
        });
        if let Err(e) = made {
            let mut o = infra(format!("building the initramfs for {}: {e}", kernel.name));
            if let crate::initramfs::InitramfsError::Runtime { .. } = e {
                o.end = BootEnd::infra(InfraCause::Runtime, e.to_string());
            }
            return o;
        }
        timings.insert("initramfs".to_string(), ms_between(start, Instant::now()));
        // One image per disk, in the plan's order: that is the order of their devices.
        let mut images = Vec::new();
        for disk in &plan.scratch_disks {
            let fs = disk.filesystem;
            let image = work.path().join(format!("scratch-{fs}.img"));
            match disk::scratch_image(fs, &self.cache_dir, &self.agent, &image) {
                Ok(Some(i)) => images.push(i),
                Ok(None) => {}
                Err(e) => return infra(format!("scratch disk ({fs}): {e}")),
            }
        }
        timings.insert("disk".to_string(), ms_between(start, Instant::now()));
        if let Ok(json) = serde_json::to_string_pretty(&plan) {
            let _ = crate::rundir::write_atomic(&req.run_dir.abs(&plan_rel), json.as_bytes());
        }

        let launch = process::Launch {
            qemu: self.qemu.clone(),
            args: self.command_line(stem, accel, kernel, topology, &initrd, &images),
            console_log: req.run_dir.abs(&console_rel),
            results_log: req.run_dir.abs(&results_rel),
            qemu_log: req.run_dir.abs(&qemu_rel),
            deadlines: self.deadlines.unwrap_or(req.deadlines).under(accel),
        };
        let w = process::run_guest(&launch, &req.plan, &req.cancel);
        drop(work);

        if let Some(t) = w.qemu_started {
            timings.insert("qemu-start".into(), ms_between(start, t));
        }
        if let Some(ks) = kernel_start(&w.stream) {
            timings.insert("kernel-start".into(), ms_between(start, ks));
        }
        if let Some(t) = w.ready_at.or(w.stream.hello_at) {
            timings.insert("agent-ready".into(), ms_between(start, t));
        }
        if let Some(t) = w.stream.done_at {
            timings.insert("plan-done".into(), ms_between(start, t));
        }
        timings.insert("exit".into(), ms_between(start, w.exited_at));
        let mut logs = logs;
        logs.push(plan_rel);
        BootOutput {
            stream: w.stream,
            end: w.end,
            accel,
            started: start,
            sizing: None,
            logs,
            timings_ms: timings,
            kernel_source: Some(kernel.provenance.describe()),
            kernel_substituted: kernel.substituted.clone(),
            channels: w.channels,
            kernel_warnings: w.kernel_warnings,
            kernel_warnings_dropped: w.kernel_warnings_dropped,
        }
    }

    /// Everything but the serial ports (`process::run_guest` adds those: they are sockets).
    fn command_line(
        &self,
        id: &LogStem,
        accel: Accel,
        kernel: &ResolvedKernel,
        topology: &Topology,
        initrd: &Path,
        images: &[PathBuf],
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["-name".into(), format!("mmx-{id}").into()];
        a.extend(args::machine_args(accel));
        a.extend(args::cpu_args(topology));
        a.extend(args::kernel_args(
            &kernel.vmlinuz,
            initrd,
            &self.extra_cmdline,
        ));
        for (i, image) in images.iter().enumerate() {
            a.extend(args::disk_args(image, i));
        }
        a
    }

    /// A private directory for one boot's initrd and disk image, removed when dropped. Under the
    /// cache dir, on a real disk, where sparse images cost nothing. Claimed for this process:
    /// if mmx is killed, the next run removes it ([`leftovers`]).
    fn work_dir(&self) -> anyhow::Result<tempfile::TempDir> {
        let base = boots_dir(&self.cache_dir);
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(BOOT_DIR_PREFIX)
            .tempdir_in(&base)
            .with_context(|| format!("creating a boot directory in {}", base.display()))?;
        leftovers::claim(dir.path())?;
        Ok(dir)
    }

    /// The accelerator for this boot; the first `auto` boot with an unjudged /dev/kvm probes
    /// (other workers wait on the lock rather than probing too).
    fn decide_accel(&self, kernel: &ResolvedKernel, sink: &dyn Sink) -> Accel {
        let mut slot = self.accel.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = *slot {
            return a;
        }
        let verdict = self.probe(kernel);
        let (accel, notice) = accel::accel_of(&verdict);
        if let Some(n) = notice {
            sink.note(Note::warning(format!(
                "{n} (probe took {} ms)",
                verdict.probe_ms
            )));
        }
        *slot = Some(accel);
        accel
    }

    /// Boot `kernel` under KVM with an empty plan and a short limit; cache the verdict.
    fn probe(&self, kernel: &ResolvedKernel) -> accel::Verdict {
        let start = Instant::now();
        let host = accel::host_kernel();
        let qemu_version = accel::qemu_version(&self.qemu).unwrap_or_default();
        let (usable, reason) = match self.probe_boot(kernel) {
            Ok((usable, reason)) => (usable, reason),
            Err(e) => (false, format!("the probe could not run: {e:#}")),
        };
        let verdict = accel::Verdict {
            usable,
            reason,
            host_kernel: host.clone(),
            qemu_version: qemu_version.clone(),
            probe_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        // Only a probe that ran is worth remembering.
        if !verdict.reason.starts_with("the probe could not run") {
            accel::write_cached(
                &accel::cache_path(&self.cache_dir, &host, &qemu_version),
                &verdict,
            );
        }
        verdict
    }

    fn probe_boot(&self, kernel: &ResolvedKernel) -> anyhow::Result<(bool, String)> {
        let work = self.work_dir()?;
        let plan = Plan {
            schema_version: protocol::SCHEMA_VERSION,
            boot_id: "kvm-probe".into(),
            scratch_dir: SCRATCH_DIR.into(),
            scratch_disks: Vec::new(),
            modules: Vec::new(),
            probe: false,
            items: Vec::new(),
            runtimes: Vec::new(),
        };
        let initrd = work.path().join("initrd.cpio");
        let base = crate::initramfs::base_archive(
            &self.agent,
            kernel,
            &wanted_features(&[Filesystem::Tmpfs]),
            &Cache::at(&self.cache_dir),
        )?;
        crate::initramfs::write_initrd(&base, None, &plan, &initrd)?;
        let topology = Topology {
            name: "probe".into(),
            sockets: 1,
            cores: 1,
            threads: 1,
            memory_mib: 256,
            numa: Vec::new(),
        };
        let log = |n: &str| work.path().join(format!("probe.{n}.log"));
        let mut a: Vec<OsString> = args::machine_args(Accel::Kvm);
        a.extend(args::cpu_args(&topology));
        a.extend(args::kernel_args(&kernel.vmlinuz, &initrd, ""));
        let launch = process::Launch {
            qemu: self.qemu.clone(),
            args: a,
            console_log: log("console"),
            results_log: log("results"),
            qemu_log: log("qemu"),
            deadlines: Deadlines {
                boot: accel::PROBE_LIMIT,
                silence: accel::PROBE_LIMIT,
                plan: accel::PROBE_LIMIT,
            },
        };
        let w = process::run_guest(&launch, &plan, &Cancel::new());
        Ok(accel::judge_probe(
            w.kvm_failed,
            w.ready_at.is_some(),
            &w.end,
        ))
    }
}

/// Where boots' work dirs live in the cache, each `boot-*`.
pub fn boots_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("boots")
}

/// The name every boot's work dir starts with.
pub const BOOT_DIR_PREFIX: &str = "boot-";

/// `objcopy --strip-debug` of the agent (a few MB): under a second; a minute covers a loaded
/// machine, and past it the agent is used unstripped.
const OBJCOPY_LIMIT: Duration = Duration::from_secs(60);

/// The QEMU binary: `$MMX_QEMU`, else `qemu-system-x86_64` on PATH.
pub fn qemu_binary() -> PathBuf {
    std::env::var_os("MMX_QEMU").map_or_else(|| PathBuf::from("qemu-system-x86_64"), PathBuf::from)
}

/// The agent as guests get it: without debug info (`objcopy --strip-debug`, symbols kept for
/// backtraces), cached by content. The release agent carries line tables that quadruple its
/// size, and under TCG every MiB of initramfs the kernel unpacks shows in boot time. Falls back
/// to the agent as built when objcopy is missing or fails.
pub fn guest_agent(agent: &Path, cache_dir: &Path) -> PathBuf {
    let stripped = || -> Option<PathBuf> {
        let bytes = std::fs::read(agent).ok()?;
        let hash = blake3::hash(&bytes);
        let dir = cache_dir.join("agent");
        let out = dir.join(format!("mmx-agent-{}", &hash.to_hex()[..16]));
        if out.is_file() {
            return Some(out);
        }
        std::fs::create_dir_all(&dir).ok()?;
        let tmp = tempfile::Builder::new()
            .prefix(".mmx-agent-")
            .tempfile_in(&dir)
            .ok()?;
        let mut objcopy = std::process::Command::new("objcopy");
        objcopy.arg("--strip-debug").arg(agent).arg(tmp.path());
        let ok = Run::new(objcopy, OBJCOPY_LIMIT).run().ok()?.success();
        if !ok {
            return None;
        }
        tmp.persist(&out).ok()?;
        Some(out)
    };
    stripped().unwrap_or_else(|| agent.to_path_buf())
}

/// A cached KVM verdict for this host kernel and QEMU, announced once; None: probe later.
fn cached_verdict(qemu: &Path, cache_dir: &Path, sink: &dyn Sink) -> Option<Accel> {
    let version = accel::qemu_version(qemu).ok()?;
    let path = accel::cache_path(cache_dir, &accel::host_kernel(), &version);
    let verdict = accel::read_cached(&path)?;
    let (accel, notice) = accel::accel_of(&verdict);
    if let Some(n) = notice {
        sink.note(Note::warning(format!(
            "{n} (cached verdict: {})",
            path.display()
        )));
    }
    Some(accel)
}

/// Where a guest runs its plan: the layers on a scratch disk per filesystem it serves (a tmpfs
/// for tmpfs), the modules its kernel needs for them, the runtimes in the initramfs
/// (`initramfs::runtimes_archive`), and limits stretched by the same factor as the host's
/// watchdogs under TCG (the agent enforces its own per-item and per-job limits, and a slow
/// emulator is not a hung kernel or runtime). Disks that need a device get `/dev/vda`,
/// `/dev/vdb`, … in this order, which is the order of their images on the command line.
pub fn guest_placement(
    kernel: &ResolvedKernel,
    filesystems: &[Filesystem],
    accel: Accel,
) -> Placement {
    let wanted = wanted_features(filesystems);
    let mut devices = 0;
    let mut scratch_disks = Vec::new();
    for &fs in filesystems {
        // tmpfs has no device; the agent mounts a fresh tmpfs named after it.
        let device = if fs.needs_disk() {
            let d = args::scratch_device(devices);
            devices += 1;
            d.unwrap_or_default()
        } else {
            "tmpfs".into()
        };
        scratch_disks.push(ScratchDisk {
            device: device.into(),
            filesystem: fs,
        });
    }
    Placement {
        scratch_dir: SCRATCH_DIR.into(),
        scratch_disks,
        // Soft dependencies travel too (`initramfs::module_table`), but the kernel asks for
        // those.
        modules: kernel
            .modules
            .iter()
            .filter(|m| m.loaded_at_boot_for(&wanted))
            .map(|m| m.initramfs_path.clone())
            .collect(),
        runtimes_dir: crate::initramfs::runtimes_dir(),
        limit_scale: if accel.is_emulated() {
            u64::from(crate::backend::TCG_SCALE)
        } else {
            1
        },
    }
}

/// Module features a boot serving `filesystems` needs. Loading only these keeps boots short
/// (btrfs pulls in raid6, whose load-time benchmark is slow under TCG).
pub fn wanted_features(filesystems: &[Filesystem]) -> Vec<ModuleFeature> {
    let mut f = vec![ModuleFeature::Overlay, ModuleFeature::Extra];
    for fs in filesystems {
        let more: &[ModuleFeature] = match fs {
            Filesystem::Ext4 => &[ModuleFeature::VirtioBlk, ModuleFeature::Ext4],
            Filesystem::Xfs => &[ModuleFeature::VirtioBlk, ModuleFeature::Xfs],
            Filesystem::Btrfs => &[ModuleFeature::VirtioBlk, ModuleFeature::Btrfs],
            Filesystem::Erofs => &[
                ModuleFeature::VirtioBlk,
                ModuleFeature::Ext4,
                ModuleFeature::Erofs,
            ],
            Filesystem::Tmpfs => &[],
        };
        for m in more {
            if !f.contains(m) {
                f.push(*m);
            }
        }
    }
    f
}

/// When the kernel started, from the agent's hello: its arrival minus the guest's uptime then.
fn kernel_start(s: &ResultStream) -> Option<Instant> {
    let at = s.hello_at?;
    let uptime = s.hello.as_ref()?.uptime_ms;
    at.checked_sub(Duration::from_millis(uptime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_follow_the_filesystem() {
        assert!(!wanted_features(&[Filesystem::Tmpfs]).contains(&ModuleFeature::VirtioBlk));
        let xfs = wanted_features(&[Filesystem::Xfs]);
        assert!(xfs.contains(&ModuleFeature::VirtioBlk) && xfs.contains(&ModuleFeature::Xfs));
        assert!(!xfs.contains(&ModuleFeature::Btrfs));
        // A guest serving several filesystems loads each one's modules, each once.
        let all = wanted_features(&Filesystem::ALL);
        for m in [
            ModuleFeature::Ext4,
            ModuleFeature::Xfs,
            ModuleFeature::Btrfs,
        ] {
            assert!(all.contains(&m), "{m:?}");
        }
        let blk = all
            .iter()
            .filter(|m| **m == ModuleFeature::VirtioBlk)
            .count();
        assert_eq!(blk, 1);
    }
}

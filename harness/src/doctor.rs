//! `mmx doctor`: what this machine can run and what is missing, one line per check with the fix
//! when it fails, judged against a matrix (`--matrix`, else `./matrix.toml`, else the matrix
//! `mmx init` writes). Exit 0 when the matrix can run here — under TCG if KVM is not usable,
//! which is slower but gives the same answers.
//!
//! Every check calls what a run calls (the QEMU backend's KVM probe and its cached verdict, the
//! disk module's mkfs table, the SSH backend's options), so doctor and run cannot disagree.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use protocol::Filesystem;

use crate::backend::qemu::{self, accel, disk, AccelChoice, Qemu};
use crate::backend::ssh::args as ssh_args;
use crate::debian::Cache;
use crate::events::Sink;
use crate::kernels::RecipeSource;
use crate::matrix::{Host, Matrix};
use crate::oneline;
use crate::proc::{Cancel, Run, RunError};
use crate::results::Accel;
use crate::run::Kernels;

/// `mmx doctor`'s files, for `--help`.
pub const FILES_HELP: &str =
    "Reads:  the matrix (--matrix, else ./matrix.toml, else the one `mmx init` writes); kernels/
        beside it; the cache ($MMX_CACHE_DIR, else $XDG_CACHE_HOME/mmx, else ~/.cache/mmx);
        ~/.ssh (ssh_config, known_hosts) for [[hosts]].
Writes: into the cache only: the agent, and when KVM opens but has no verdict yet, the kernel
        the probe guest boots and the verdict. Contacts each [[hosts]] entry up to its host-key
        check; it never logs in or runs anything there.";

/// Below this much free space in the cache, a run cannot fetch its kernels and make its disks
/// (three kernels and the pristine images take about 0.4 GiB; every running boot adds its own
/// initramfs and the blocks its scratch disk writes).
pub const MIN_FREE_BYTES: u64 = 2 << 30;

/// The longest a check's detail (or fix) prints, in characters.
const LINE_CHARS: usize = 1000;
/// The longest reason from outside (QEMU's stderr, ssh's) embedded in a check's detail: short
/// enough that the verdict after it is never cut.
const REASON_CHARS: usize = 300;

/// How long the host-key check of one host may take (ssh's own ConnectTimeout is 10 s).
const HOST_CHECK_LIMIT: Duration = Duration::from_secs(20);
/// `ssh -V` answers at once; half a minute covers a loaded machine.
const SSH_VERSION_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// The matrix to check for (default: ./matrix.toml, else the matrix `mmx init` writes).
    #[arg(long)]
    pub matrix: Option<PathBuf>,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// The matrix runs, with less (TCG instead of KVM; no `--backend local`).
    Warn,
    /// The matrix cannot run until this is fixed.
    Fail,
    /// Not needed by this matrix.
    Skip,
    /// Not a verdict: what doctor is doing (a probe boot that takes a while).
    Info,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
            Status::Info => "..",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub what: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it (for Warn and Fail).
    pub fix: Option<String>,
}

impl Check {
    fn new(what: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
        Check {
            what: what.into(),
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    /// `ok   qemu        QEMU emulator version 7.2.22` (+ `  fix: …`). A check is one line
    /// (and its fix one more), whatever QEMU, ssh or apt said inside it.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{:<4}  {:<14} {}",
            self.status.label(),
            self.what,
            oneline::fold(&self.detail, LINE_CHARS)
        );
        if let Some(f) = &self.fix {
            let f = oneline::fold(f, LINE_CHARS);
            s.push_str(&format!("\n{:<20} fix: {f}", ""));
        }
        s
    }
}

/// `mmx doctor`: every check into `sink` as it completes (and what the kernels and the KVM
/// probe say on the way, as notes); Ok(false) when one failed.
pub fn run(args: &DoctorArgs, sink: &dyn Sink) -> anyhow::Result<bool> {
    let mut failed = false;
    let mut report = |c: Check| {
        failed |= c.status == Status::Fail;
        sink.answer(&c.line());
    };
    // The default matrix, materialised where Matrix and Kernels can load it like any other.
    let (matrix_path, init_dir) = match &args.matrix {
        Some(p) => (p.clone(), None),
        None if Path::new("matrix.toml").is_file() => (PathBuf::from("matrix.toml"), None),
        None => {
            let dir = tempfile::tempdir()?;
            let action = crate::init::default_action();
            crate::init::write(dir.path(), &crate::init::templates(&action), false)?;
            sink.answer(
                &Check::new(
                    "matrix",
                    Status::Info,
                    "no matrix.toml here: checking the default matrix (`mmx init` writes it)",
                )
                .line(),
            );
            (dir.path().join("matrix.toml"), Some(dir))
        }
    };
    let label = match &init_dir {
        Some(_) => "the default matrix".to_string(),
        None => matrix_path.display().to_string(),
    };
    for c in machine_checks(&matrix_path, &label, &mut report, sink) {
        report(c);
    }
    sink.answer(if failed {
        "mmx: this machine cannot run the matrix yet: fix the FAIL lines above"
    } else {
        "mmx: this machine can run the matrix"
    });
    Ok(!failed)
}

/// Every check for `matrix_path`. Slow checks are passed to `now` as they finish so the user
/// sees progress; the rest come back in order.
fn machine_checks(
    matrix_path: &Path,
    label: &str,
    now: &mut dyn FnMut(Check),
    sink: &dyn Sink,
) -> Vec<Check> {
    let mut out = Vec::new();
    let cache = Cache::from_env();
    out.push(match crate::agent::source() {
        Ok(s) => Check::new("agent", Status::Ok, s.describe()),
        Err(e) => Check::new("agent", Status::Fail, format!("{e:#}"))
            .fix("make the cache writable, or set MMX_CACHE_DIR to a writable directory"),
    });
    out.push(root_check());
    out.push(match &cache {
        Ok(c) => space_check(c.root()),
        Err(e) => Check::new("cache", Status::Fail, e.to_string())
            .fix("set MMX_CACHE_DIR (or HOME) to a directory on a disk with space"),
    });
    let matrix = match Matrix::load(matrix_path) {
        Ok(m) => m,
        Err(e) => {
            out.push(
                Check::new("matrix", Status::Fail, e.to_string())
                    .fix("correct the matrix (`mmx run --help`; `mmx init` writes a working one)"),
            );
            return out;
        }
    };
    let qemu_cells = matrix.qemu_cells().len();
    out.push(Check::new(
        "matrix",
        Status::Ok,
        format!(
            "{label}: {qemu_cells} QEMU cells ({} kernels), {} host(s)",
            matrix.kernels.len(),
            matrix.hosts.len()
        ),
    ));
    if qemu_cells > 0 {
        for c in out.drain(..) {
            now(c);
        }
        out.extend(qemu_checks(&matrix, &cache, now, sink));
    }
    out.extend(ssh_checks(&matrix.hosts));
    out
}

fn root_check() -> Check {
    if rustix::process::geteuid().is_root() {
        Check::new("root", Status::Ok, "root: `--backend local` can run")
    } else {
        Check::new(
            "root",
            Status::Warn,
            "not root: `--backend local` is unavailable (it makes mount and user namespaces and \
             idmapped mounts); the QEMU and SSH backends do not need root",
        )
        .fix("run `sudo mmx run --backend local` for this machine's own kernel")
    }
}

/// Free space where the cache is (or would be created).
fn space_check(root: &Path) -> Check {
    let Some(existing) = root.ancestors().find(|p| p.exists()) else {
        return Check::new(
            "cache",
            Status::Fail,
            format!("{}: no such path", root.display()),
        );
    };
    match rustix::fs::statvfs(existing) {
        Err(e) => Check::new(
            "cache",
            Status::Fail,
            format!("statvfs({}): {e}", existing.display()),
        ),
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let detail = format!(
                "{}: {:.1} GiB free",
                root.display(),
                free as f64 / f64::from(1u32 << 30)
            );
            if free >= MIN_FREE_BYTES {
                Check::new("cache", Status::Ok, detail)
            } else {
                Check::new(
                    "cache",
                    Status::Fail,
                    format!("{detail}, need {} GiB", MIN_FREE_BYTES >> 30),
                )
                .fix("free space there, or set MMX_CACHE_DIR to a directory on a larger disk")
            }
        }
    }
}

/// QEMU, the Debian archive, the layer filesystems' tools, and KVM.
fn qemu_checks(
    matrix: &Matrix,
    cache: &Result<Cache, crate::debian::DebianError>,
    now: &mut dyn FnMut(Check),
    sink: &dyn Sink,
) -> Vec<Check> {
    let mut out = Vec::new();
    let kernels = match Kernels::load(matrix) {
        Ok(k) => Some(k),
        Err(e) => {
            out.push(
                Check::new("kernels", Status::Fail, format!("{e:#}"))
                    .fix("add the missing recipe to kernels/ (`mmx init` writes the default ones)"),
            );
            None
        }
    };
    if let Some(recipes) = kernels.as_ref().map(|_| matrix_recipes(matrix)) {
        out.push(Check::new(
            "kernels",
            Status::Ok,
            format!(
                "{} recipes in {}",
                recipes.len(),
                matrix.kernels_dir().display()
            ),
        ));
        if recipes
            .iter()
            .any(|r| matches!(r.source, RecipeSource::Debian { .. }))
        {
            out.extend(debian_checks());
        }
    }
    let qemu_bin = qemu::qemu_binary();
    let qemu_ok =
        match accel::qemu_version(&qemu_bin) {
            Ok(v) => {
                out.push(Check::new("qemu", Status::Ok, v));
                true
            }
            Err(e) => {
                out.push(Check::new("qemu", Status::Fail, e).fix(
                    "apt-get install qemu-system-x86 (or set MMX_QEMU to a qemu-system-x86_64)",
                ));
                false
            }
        };
    for fs in &matrix.filesystems {
        out.extend(mkfs_checks(*fs));
    }
    for c in out.drain(..) {
        now(c);
    }
    if qemu_ok {
        out.push(kvm_check(
            matrix,
            kernels.as_ref(),
            cache,
            &qemu_bin,
            now,
            sink,
        ));
    }
    out
}

/// The recipes the matrix names (already checked by `Kernels::load`).
fn matrix_recipes(matrix: &Matrix) -> Vec<crate::kernels::Recipe> {
    crate::kernels::load_recipes(&matrix.kernels_dir())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| matrix.kernels.contains(&r.name))
        .collect()
}

/// What the private apt needs to fetch Debian kernels.
fn debian_checks() -> Vec<Check> {
    let keyring = Path::new(crate::debian::apt::KEYRING);
    let mut out = vec![if keyring.is_file() {
        Check::new("keyring", Status::Ok, keyring.display().to_string())
    } else {
        Check::new(
            "keyring",
            Status::Fail,
            format!(
                "{} is missing: Debian kernels cannot be verified",
                keyring.display()
            ),
        )
        .fix("apt-get install debian-archive-keyring")
    }];
    out.push(match disk::find_tool("apt-get") {
        Some(p) => Check::new("apt-get", Status::Ok, p.display().to_string()),
        None => Check::new(
            "apt-get",
            Status::Fail,
            "apt-get is not installed: mmx fetches Debian kernels with a private apt",
        )
        .fix("run on a Debian or Ubuntu machine, or use [path] recipes (kernels/README.md)"),
    });
    out
}

/// The tools the QEMU backend makes `fs` scratch disks with: its mkfs, and for erofs also
/// `mkfs.erofs` for the layer images (tmpfs needs none).
fn mkfs_checks(fs: Filesystem) -> Vec<Check> {
    disk::tools(fs)
        .into_iter()
        .map(|(tool, package)| match disk::find_tool(tool) {
            Some(p) => Check::new(tool, Status::Ok, format!("{} ({fs} layers)", p.display())),
            None => Check::new(
                tool,
                Status::Fail,
                format!("{tool} is missing: the {fs} cells cannot make their disk"),
            )
            .fix(format!(
                "apt-get install {package} (or drop \"{fs}\" from the matrix's filesystems)"
            )),
        })
        .collect()
}

/// KVM as the runner decides it: /dev/kvm must open, then the cached verdict of the probe guest,
/// or a probe now (booting the matrix's first kernel under KVM, as the first boot of a run would).
fn kvm_check(
    matrix: &Matrix,
    kernels: Option<&Kernels>,
    cache: &Result<Cache, crate::debian::DebianError>,
    qemu_bin: &Path,
    now: &mut dyn FnMut(Check),
    sink: &dyn Sink,
) -> Check {
    const TCG: &str = "guests run under TCG (software emulation: slower, same answers)";
    let unusable =
        |why: String| {
            Check::new("kvm", Status::Warn, format!("KVM not usable ({why}); {TCG}")).fix(
            "for KVM: a CPU with virtualisation enabled (nested virtualisation in a VM), the kvm \
             module loaded, and read-write access to /dev/kvm (the kvm group)",
        )
        };
    if let Err(e) = accel::kvm_openable() {
        return unusable(e);
    }
    let Ok(cache) = cache else {
        return unusable("no cache for the probe verdict".into());
    };
    let version = accel::qemu_version(qemu_bin).unwrap_or_default();
    let verdict_path = accel::cache_path(cache.root(), &accel::host_kernel(), &version);
    let verdict = match accel::read_cached(&verdict_path) {
        Some(v) => v,
        None => {
            let (Some(kernels), Some(first)) = (kernels, matrix.kernels.first()) else {
                return unusable("no kernel to probe with".into());
            };
            now(Check::new(
                "kvm",
                Status::Info,
                format!(
                    "/dev/kvm opens; booting a {first} probe guest under KVM (up to {} s, once: \
                     the verdict is cached)",
                    accel::PROBE_LIMIT.as_secs()
                ),
            ));
            // No Ctrl-C handler here: Ctrl-C ends mmx, and a kernel build's make with it.
            let decided = kernels
                .get(first, &Cancel::new(), sink)
                .map_err(|e| e.to_string())
                .and_then(|k| {
                    let agent = crate::agent::path().map_err(|e| format!("{e:#}"))?;
                    let q = Qemu::new(AccelChoice::Auto, agent, cache.root().to_path_buf(), sink)
                        .map_err(|e| format!("{e:#}"))?;
                    Ok(q.decide_now(&k, sink))
                });
            match (decided, accel::read_cached(&verdict_path)) {
                (Err(e), _) => {
                    return Check::new("kvm", Status::Fail, format!("cannot probe: {e}"))
                        .fix("the matrix's kernels must be fetchable: see the kernels lines")
                }
                (Ok(_), Some(v)) => v,
                (Ok(Accel::Kvm), None) => {
                    return Check::new("kvm", Status::Ok, "KVM: the probe guest booted")
                }
                (Ok(_), None) => return unusable("the probe guest could not run".into()),
            }
        }
    };
    if verdict.usable {
        Check::new("kvm", Status::Ok, format!("KVM: {}", verdict.reason))
    } else {
        // QEMU's error is folded and cut before the path and verdict are appended, so both
        // stay on the line however long it was.
        unusable(format!(
            "{}; verdict cached in {}",
            oneline::fold(&verdict.reason, REASON_CHARS),
            verdict_path.display()
        ))
    }
}

/// The ssh client and each host, when the matrix has hosts.
fn ssh_checks(hosts: &[Host]) -> Vec<Check> {
    if hosts.is_empty() {
        return vec![Check::new(
            "ssh",
            Status::Skip,
            "no [[hosts]] in the matrix",
        )];
    }
    let mut ssh = Command::new("ssh");
    ssh.arg("-V");
    let version = Run::new(ssh, SSH_VERSION_LIMIT).merge_stderr().run();
    let mut out = vec![match version {
        Ok(o) if o.success() => Check::new("ssh", Status::Ok, o.stdout.trim().to_string()),
        _ => {
            return vec![Check::new("ssh", Status::Fail, "no ssh client on PATH")
                .fix("apt-get install openssh-client")]
        }
    }];
    out.extend(hosts.iter().map(host_check));
    out
}

/// Whether ssh could start a session with `host` — reachable, and its host key known — without
/// logging in or running anything there.
///
/// How: the mmx run's own ssh options (batch mode, strict host key checking, the host's port,
/// identity and `ssh_options`), with `PreferredAuthentications=none` placed first so nothing can
/// override it, and `-N` (no command). ssh verifies the host key during key exchange, before any
/// authentication; the server then refuses the `none` method, so the connection ends at
/// "Permission denied" without a login. That refusal proves exactly "reachable, key known" through
/// the same client path a run takes (ssh_config, ProxyJump, UserKnownHostsFile). `ssh-keyscan`
/// compared with known_hosts would bypass ssh_config and need known_hosts parsing (hashed names,
/// @cert-authority, @revoked); `ssh -G` with `ssh-keygen -F` never contacts the host at all.
fn host_check(host: &Host) -> Check {
    // Its ssh options were checked against the host-key trust policy when the matrix was read.
    let what = format!("host {}", host.name);
    let control = match tempfile::Builder::new()
        .prefix("mmx-ssh-")
        .tempdir_in("/tmp")
    {
        Ok(d) => d,
        Err(e) => return Check::new(what, Status::Fail, format!("a control dir in /tmp: {e}")),
    };
    let mut argv: Vec<OsString> = vec!["-o".into(), "PreferredAuthentications=none".into()];
    argv.extend(ssh_args::base_args(host, control.path()));
    argv.push("-N".into());
    argv.push(host.destination.clone().into());
    let (status, stderr) = match run_limited("ssh", argv, HOST_CHECK_LIMIT) {
        Ok(r) => r,
        Err(e) => return Check::new(what, Status::Fail, format!("running ssh: {e}")),
    };
    let fix = "see the message; `ssh -v` to the host shows the same conversation";
    match host_key_verdict(status, &stderr) {
        HostVerdict::KeyKnown => Check::new(
            what,
            Status::Ok,
            format!(
                "{}: reachable, host key known (no login tried)",
                ssh_args::describe(host)
            ),
        ),
        HostVerdict::NoAnswer => Check::new(
            what,
            Status::Fail,
            format!(
                "{}: no verdict within {} s",
                ssh_args::describe(host),
                HOST_CHECK_LIMIT.as_secs()
            ),
        )
        .fix(fix),
        HostVerdict::Failed => Check::new(
            what,
            Status::Fail,
            ssh_args::classify_failure(host, &stderr),
        )
        .fix(fix),
    }
}

/// What ssh's exit says about a host-key check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostVerdict {
    /// The server refused the `none` method: the key exchange (and host key check) passed.
    KeyKnown,
    /// ssh did not finish in time.
    NoAnswer,
    /// Anything else (unknown or changed key, unreachable, bad config): classify_failure says.
    Failed,
}

fn host_key_verdict(status: Option<i32>, stderr: &str) -> HostVerdict {
    match status {
        None => HostVerdict::NoAnswer,
        Some(255)
            if stderr.contains("Permission denied")
                && !stderr.contains("Host key verification failed") =>
        {
            HostVerdict::KeyKnown
        }
        Some(_) => HostVerdict::Failed,
    }
}

/// Run a program with stdin closed, its output captured, stopped (its whole group) after
/// `limit`. `Ok((None, _))`: it ran past the limit.
fn run_limited(
    program: &str,
    argv: Vec<OsString>,
    limit: Duration,
) -> Result<(Option<i32>, String), RunError> {
    let mut cmd = Command::new(program);
    cmd.args(argv);
    match Run::new(cmd, limit).run() {
        Ok(out) => Ok((out.status.code(), out.stderr)),
        Err(RunError::TimedOut { .. }) => Ok((None, String::new())),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_is_one_line_whatever_qemu_said() {
        // QEMU's KVM error on a paravirtual nested KVM: two lines on stderr.
        let qemu = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n\
                    qemu-system-x86_64: ../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: \
                    Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n";
        let c = Check::new("kvm", Status::Warn, format!("KVM not usable ({qemu}); TCG"))
            .fix("line one\nline two");
        let line = c.line();
        let lines: Vec<&str> = line.lines().collect();
        assert_eq!(lines.len(), 2, "the check and its fix: {line}");
        assert!(lines[0].starts_with("warn  kvm"), "{line}");
        assert!(
            lines[0].contains("0x69 ⏎ qemu") && lines[0].ends_with("); TCG"),
            "{line}"
        );
        assert!(lines[1].ends_with("fix: line one ⏎ line two"), "{line}");
    }

    #[test]
    fn a_refused_none_login_means_the_key_is_known() {
        let denied = "root@lab1: Permission denied (publickey).\r\n";
        assert_eq!(host_key_verdict(Some(255), denied), HostVerdict::KeyKnown);
        let unknown = "No ED25519 host key is known for lab1 and you have requested strict \
                       checking.\r\nHost key verification failed.\r\n";
        assert_eq!(host_key_verdict(Some(255), unknown), HostVerdict::Failed);
        let refused = "ssh: connect to host lab1 port 22: Connection refused\r\n";
        assert_eq!(host_key_verdict(Some(255), refused), HostVerdict::Failed);
        assert_eq!(host_key_verdict(None, ""), HostVerdict::NoAnswer);
    }

    #[test]
    fn a_failed_check_prints_its_fix_under_it() {
        let c = Check::new("mkfs.xfs", Status::Fail, "missing").fix("apt-get install xfsprogs");
        let line = c.line();
        assert!(line.starts_with("FAIL  mkfs.xfs"), "{line}");
        assert!(
            line.contains("\n") && line.ends_with("fix: apt-get install xfsprogs"),
            "{line}"
        );
    }

    #[test]
    fn every_disk_filesystem_names_its_tool_and_package() {
        for fs in [
            Filesystem::Ext4,
            Filesystem::Xfs,
            Filesystem::Btrfs,
            Filesystem::Erofs,
        ] {
            let checks = mkfs_checks(fs);
            assert!(!checks.is_empty(), "a disk filesystem has a check");
            for c in checks.iter().filter(|c| c.status == Status::Fail) {
                assert!(c
                    .fix
                    .as_deref()
                    .is_some_and(|f| f.contains("apt-get install")));
            }
        }
        let erofs: Vec<String> = mkfs_checks(Filesystem::Erofs)
            .iter()
            .map(|c| c.what.clone())
            .collect();
        assert_eq!(erofs, ["mkfs.ext4", "mkfs.erofs"]);
        assert!(mkfs_checks(Filesystem::Tmpfs).is_empty());
    }

    #[test]
    fn free_space_is_judged_on_the_nearest_existing_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = space_check(&dir.path().join("not/yet/made"));
        assert_ne!(c.status, Status::Skip);
        assert!(c.detail.contains("GiB free"), "{}", c.detail);
    }
}

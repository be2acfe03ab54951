//! Building a kernel from a prepared tree: configure ([`super::config`]), then `make` out of
//! tree (`O=`), with every line in a log that is kept, progress counted from
//! kbuild's `  CC      path` lines and reported as build events (the terminal shows a bar or a
//! line a minute), cancellation (make's
//! whole process group is stopped and the error says so), and a failure that names the failing
//! file. make runs under [`crate::proc`]: its own process group, the death signal and a warden,
//! so a killed mmx leaves no compiler running; and it inherits the build directory's lock, so
//! the directory stays locked until the last process of the build is gone.
//!
//! [`build_tree`] takes any prepared source tree and a persistent output directory and knows
//! nothing of recipes or the cache: a caller that keeps the output directory between builds
//! (one per recipe, or one per bisect) gets incremental builds from make itself.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{self, Dropped, FragmentError, Missing};
use super::source::{ConfigSpec, Located};
use crate::events::{BuildPhase, KernelBuild, Sink};
use crate::proc::{Cancel, Line, Output, Run, RunError, Stop, Stream};
use crate::rundir::IoError;

/// A quick make target: `tinyconfig` and `olddefconfig` take seconds, `modules_install`
/// (thousands of modules stripped, for a distribution config) minutes on a loaded machine;
/// past half an hour make is stuck.
const MAKE_STEP_LIMIT: Duration = Duration::from_secs(30 * 60);
/// A stopped build: make gets SIGTERM (as from a terminal's Ctrl-C, it passes it on, waits for
/// its compilers and deletes their half-written targets), then SIGKILL this much later.
const MAKE_STOP_GRACE: Duration = Duration::from_secs(20);
/// `gcc --version` answers at once; a minute covers a loaded machine.
const COMPILER_VERSION_LIMIT: Duration = Duration::from_secs(60);
/// What one make may print: a kernel build prints a line per object and its warnings, 5–20
/// MiB; 256 MiB is a build gone wrong, stopped (the log holds what came, bounded the same).
const MAKE_OUTPUT_MAX: u64 = 256 << 20;

/// Everything that stops a build. Each message names the file at fault (patch, fragment,
/// source file) and the log; the caller prefixes "kernel build failed".
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Patch(Box<Rejected>),
    #[error("{0}")]
    Fragment(#[from] FragmentError),
    #[error("the kernel dropped options the config asked for: {list} (config: {config}; log: {log})",
        list = config::list(dropped), config = config.display(), log = log.display())]
    Dropped {
        dropped: Vec<Dropped>,
        config: PathBuf,
        log: PathBuf,
    },
    #[error("{config} lacks what every mmx guest needs: {list}; `mmx kernels config-fragment` prints all mmx needs (log: {log})",
        list = config::list(missing), config = config.display(), log = log.display())]
    Missing {
        missing: Vec<Missing>,
        config: PathBuf,
        log: PathBuf,
    },
    #[error("{location}: {message} (log: {log})\n--- last lines of the log ---\n{tail}", log = log.display())]
    Compile {
        /// `fs/overlayfs/params.c:575` (tree-relative), or the make target that failed.
        location: String,
        message: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} failed: {detail} (log: {log})", log = log.display())]
    Step {
        what: String,
        detail: String,
        log: PathBuf,
    },
    #[error("interrupted: make was stopped; nothing was cached (log: {log})", log = log.display())]
    Interrupted { log: PathBuf },
    #[error(transparent)]
    Io(#[from] IoError),
}

/// A patch that does not apply.
#[derive(Debug, thiserror::Error)]
#[error("patch {n}/{total} {patch} (\"{subject}\") does not apply: {detail}\n(log: {log})", log = log.display())]
pub struct Rejected {
    pub patch: String,
    pub subject: String,
    pub n: usize,
    pub total: usize,
    /// The file the rejected hunk changes (empty when the tool said nothing more precise).
    pub file: String,
    /// The rejected hunk, or the tool's output.
    pub detail: String,
    pub log: PathBuf,
}

impl BuildError {
    /// The build log the error refers to, when it has one.
    pub fn log(&self) -> Option<&Path> {
        match self {
            BuildError::Patch(r) => Some(&r.log),
            BuildError::Dropped { log, .. }
            | BuildError::Missing { log, .. }
            | BuildError::Compile { log, .. }
            | BuildError::Step { log, .. }
            | BuildError::Interrupted { log } => Some(log),
            BuildError::Fragment(_) | BuildError::Io(_) => None,
        }
    }

    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| BuildError::Io(IoError::new(op, path, source))
    }
}

/// The build's log file: every command, and everything it printed.
#[derive(Debug)]
pub struct BuildLog {
    path: PathBuf,
    file: File,
}

impl BuildLog {
    /// Start a log (an existing one is replaced).
    pub fn create(path: &Path) -> Result<BuildLog, BuildError> {
        let file = File::create(path).map_err(BuildError::io("create", path))?;
        Ok(BuildLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Continue an existing log (several steps write one log).
    pub fn append(path: &Path) -> Result<BuildLog, BuildError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(BuildError::io("open", path))?;
        Ok(BuildLog {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A line of mmx's own, marked so it stands out among make's.
    pub fn note(&mut self, line: &str) {
        let _ = writeln!(self.file, "### mmx: {line}");
    }

    pub fn text(&mut self, text: &str) {
        let _ = self.file.write_all(text.as_bytes());
        if !text.ends_with('\n') && !text.is_empty() {
            let _ = self.file.write_all(b"\n");
        }
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Run a short command to completion (at most `limit`), its output into the log.
/// Ok((success, output)); Err when it cannot run at all or was stopped.
pub(crate) fn run_captured(
    mut cmd: Command,
    limit: Duration,
    stdin: Option<&[u8]>,
    log: &mut BuildLog,
    what: &str,
) -> Result<(bool, String), BuildError> {
    cmd.env("LC_ALL", "C");
    let mut run = Run::new(cmd, limit);
    if let Some(bytes) = stdin {
        run = run.stdin(bytes);
    }
    logged(run.run(), log, what)
}

/// A finished short command's output into the log: Ok((success, output)); Err when it could
/// not run or was stopped (what it said until then is logged too).
pub(crate) fn logged(
    result: Result<Output, RunError>,
    log: &mut BuildLog,
    what: &str,
) -> Result<(bool, String), BuildError> {
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            if let Some(p) = e.partial() {
                log.text(&format!("{}{}", p.stdout, p.stderr));
            }
            let detail = match &e {
                RunError::Spawn { source, .. } => {
                    format!("cannot run it: {source} (is it installed?)")
                }
                _ => e.to_string(),
            };
            return Err(BuildError::Step {
                what: what.to_string(),
                detail,
                log: log.path().to_path_buf(),
            });
        }
    };
    let text = out.text();
    log.text(&text);
    if !out.success() {
        log.note(&format!("{what}: {}", out.status));
    }
    Ok((out.success(), text))
}

/// `make` for one tree and output directory, x86-64.
#[derive(Debug, Clone)]
pub struct Make {
    pub src: PathBuf,
    pub out: PathBuf,
    pub jobs: usize,
    /// `CC="ccache gcc"` (when ccache is on PATH).
    pub ccache: bool,
    /// The build directory's lock, inherited by every make (and so by every compiler it
    /// starts): the lock is held while any of them runs, even after mmx is gone.
    lock: Arc<OwnedFd>,
}

impl Make {
    pub fn new(src: &Path, out: &Path, lock: BorrowedFd<'_>) -> std::io::Result<Make> {
        Ok(Make {
            src: src.to_path_buf(),
            out: out.to_path_buf(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ccache: on_path("ccache"),
            lock: Arc::new(lock.try_clone_to_owned()?),
        })
    }

    /// A copy of the lock's descriptor for one make (the same open file, so the same lock).
    fn lock_for_child(&self, log: &BuildLog, what: &str) -> Result<OwnedFd, BuildError> {
        self.lock.try_clone().map_err(|e| BuildError::Step {
            what: what.to_string(),
            detail: format!("duplicating the build directory's lock: {e}"),
            log: log.path().to_path_buf(),
        })
    }

    fn command(&self, targets: &[&str]) -> Command {
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg(&self.src)
            .arg(format!("O={}", self.out.display()))
            .arg("ARCH=x86_64")
            .arg(format!("-j{}", self.jobs))
            // A build's identity must not depend on who built it where.
            .arg("KBUILD_BUILD_USER=mmx")
            .arg("KBUILD_BUILD_HOST=mmx");
        if self.ccache {
            cmd.arg("CC=ccache gcc");
        }
        cmd.args(targets);
        // Inherited settings would change what is built or where.
        for var in [
            "MAKEFLAGS",
            "MFLAGS",
            "MAKELEVEL",
            "KBUILD_OUTPUT",
            "ARCH",
            "CROSS_COMPILE",
            "KCONFIG_CONFIG",
            "LOCALVERSION",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// A quick target (`tinyconfig`, `olddefconfig`): output into the log, failure as an error.
    pub fn quick(&self, targets: &[&str], log: &mut BuildLog) -> Result<(), BuildError> {
        let what = format!("make {}", targets.join(" "));
        log.note(&what);
        let mut cmd = self.command(targets);
        cmd.env("LC_ALL", "C");
        let run = Run::new(cmd, MAKE_STEP_LIMIT).inherit(self.lock_for_child(log, &what)?);
        let (ok, out) = logged(run.run(), log, &what)?;
        if ok {
            return Ok(());
        }
        Err(BuildError::Step {
            what,
            detail: last_lines(&out, 15),
            log: log.path().to_path_buf(),
        })
    }

    /// The long build: progress from kbuild's output into `sink`; `cancel` stops make's whole process
    /// group. No deadline: a cold build takes ten minutes here and hours on a slow machine; the
    /// user stops it. Returns the number of kbuild steps seen (the next build's progress total).
    pub fn build(
        &self,
        targets: &[&str],
        label: &str,
        log: &mut BuildLog,
        sink: &dyn Sink,
        expected_steps: Option<u64>,
        cancel: &Cancel,
    ) -> Result<u64, BuildError> {
        let what = format!("make {}", targets.join(" "));
        log.note(&format!(
            "{what} (-j{}{})",
            self.jobs,
            if self.ccache { ", ccache" } else { "" }
        ));
        let mut cmd = self.command(targets);
        cmd.env("LC_ALL", "C");
        let lock = self.lock_for_child(log, &what)?;
        let mut shown = Shown::new(sink, label, expected_steps);
        let mut errors: Vec<String> = Vec::new();
        let result = {
            let mut each = |_: Stream, line: &Line| {
                log.text(&line.text);
                if let Some(target) = kbuild_step(&line.text) {
                    shown.step(target);
                } else if (line.text.contains("error:") || line.text.contains("*** ["))
                    && errors.len() < 200
                {
                    errors.push(line.text.clone());
                }
            };
            Run::cancellable(cmd, cancel)
                .stop(Stop::Term {
                    grace: MAKE_STOP_GRACE,
                })
                .bounds(crate::proc::Bounds {
                    max_bytes: MAKE_OUTPUT_MAX,
                    ..crate::proc::run::OUTPUT
                })
                .inherit(lock)
                .on_line(&mut each)
                .run()
        };
        let steps = shown.finish();
        let status = match result {
            Ok(out) => out.status,
            Err(RunError::Cancelled { .. }) => {
                log.note(&format!("{what}: stopped (interrupted), {steps} steps"));
                return Err(BuildError::Interrupted {
                    log: log.path().to_path_buf(),
                });
            }
            Err(RunError::Spawn { source, .. }) => {
                return Err(BuildError::Step {
                    what,
                    detail: format!(
                        "cannot run make: {source} (install make, gcc, flex, bison, bc, libelf-dev)"
                    ),
                    log: log.path().to_path_buf(),
                })
            }
            Err(e) => {
                return Err(BuildError::Step {
                    what,
                    detail: e.to_string(),
                    log: log.path().to_path_buf(),
                })
            }
        };
        log.note(&format!("{what}: {status}, {steps} steps"));
        if status.success() {
            return Ok(steps);
        }
        let (location, message) = failure(&errors, &self.src, &self.out);
        Err(BuildError::Compile {
            location,
            message,
            log: log.path().to_path_buf(),
            tail: log.tail(25),
        })
    }
}

/// `  CC      fs/overlayfs/params.o` → `fs/overlayfs/params.o`.
fn kbuild_step(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("  ")?;
    let (tag, target) = rest.split_once(' ')?;
    let tag_ok = (2..=8).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let target = target.trim();
    (tag_ok && !target.is_empty() && !target.contains(' ')).then_some(target)
}

/// The failing file and message from make's output: the first compiler `error:`, else the
/// first target make gave up on.
fn failure(errors: &[String], src: &Path, out: &Path) -> (String, String) {
    let rel = |s: &str| -> String {
        let mut s = s.to_string();
        for base in [src, out] {
            let prefix = format!("{}/", base.display());
            s = s.replace(&prefix, "");
        }
        s.trim_start_matches("./").to_string()
    };
    for e in errors {
        // gcc: "fs/overlayfs/params.c:575:17: error: expected ';' before 'break'"
        if let Some((loc, msg)) = e
            .split_once(": error: ")
            .or_else(|| e.split_once(": fatal error: "))
        {
            let mut parts = loc.split(':');
            let file = parts.next().unwrap_or(loc);
            let line = parts
                .next()
                .filter(|l| l.bytes().all(|b| b.is_ascii_digit()));
            let location = match line {
                Some(l) => format!("{}:{l}", rel(file)),
                None => rel(file),
            };
            return (location, format!("error: {}", msg.trim()));
        }
    }
    for e in errors {
        // make: "make[4]: *** [scripts/Makefile.build:229: fs/x.o] Error 1"
        if let Some(inner) = e.split_once("*** [").and_then(|(_, r)| r.split_once(']')) {
            let target = inner.0.rsplit(": ").next().unwrap_or(inner.0);
            return (rel(target), format!("make failed to build it{}", inner.1));
        }
    }
    (
        "(unknown file)".into(),
        "make failed without a compiler error; see the log".into(),
    )
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What make's progress is told as: one build event per kbuild step, between a start and a
/// finish (the terminal decides whether that is a bar or a line a minute).
struct Shown<'a> {
    sink: &'a dyn Sink,
    label: String,
    steps: u64,
}

impl<'a> Shown<'a> {
    fn new(sink: &'a dyn Sink, label: &str, expected_steps: Option<u64>) -> Shown<'a> {
        let shown = Shown {
            sink,
            label: label.to_string(),
            steps: 0,
        };
        shown.report(BuildPhase::Started { expected_steps });
        shown
    }

    fn report(&self, phase: BuildPhase) {
        self.sink.build(KernelBuild {
            kernel: self.label.clone(),
            phase,
        });
    }

    fn step(&mut self, target: &str) {
        self.steps += 1;
        self.report(BuildPhase::Step {
            steps: self.steps,
            target: target.to_string(),
        });
    }

    fn finish(self) -> u64 {
        self.report(BuildPhase::Finished { steps: self.steps });
        self.steps
    }
}

/// Whether `program` is an executable file on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            fs::metadata(d.join(program)).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

/// The compiler's identity (`gcc --version`'s first line): part of every build's cache key.
pub fn compiler_version() -> String {
    let mut cmd = Command::new("gcc");
    cmd.arg("--version").env("LC_ALL", "C");
    Run::new(cmd, COMPILER_VERSION_LIMIT)
        .run()
        .ok()
        .filter(Output::success)
        .and_then(|o| o.stdout.lines().next().map(str::to_string))
        .unwrap_or_else(|| "gcc: not found".to_string())
}

/// What to build.
pub struct BuildRequest<'a> {
    /// For messages: the recipe name.
    pub label: &'a str,
    /// A prepared tree, never written to (everything goes to `out`).
    pub src: &'a Path,
    /// make's output directory; keep it between builds for incremental ones.
    pub out: &'a Path,
    pub config: &'a ConfigSpec,
    pub fragments: &'a [Located<PathBuf>],
    /// Hears the build's progress.
    pub sink: &'a dyn Sink,
    /// The previous build's step count, for the bar's length.
    pub expected_steps: Option<u64>,
    /// Stops make (its whole process group).
    pub cancel: &'a Cancel,
    /// The build directory's lock, inherited by make (see [`Make`]).
    pub lock: BorrowedFd<'a>,
}

/// A finished build, everything inside `out`.
#[derive(Debug, Clone)]
pub struct Built {
    pub bzimage: PathBuf,
    pub config: PathBuf,
    /// `make kernelrelease`.
    pub release: String,
    /// `lib/modules/<release>` from `make modules_install` when the config has modules.
    pub modules: Option<PathBuf>,
    /// Always written by kbuild: which wanted modules are built in.
    pub modules_builtin: PathBuf,
    pub steps: u64,
    pub took: Duration,
    /// Feature needs the config lacks (some cells will be unsupported).
    pub warnings: Vec<Missing>,
}

/// Configure and build `src` into `out`.
pub fn build_tree(req: &BuildRequest<'_>, log: &mut BuildLog) -> Result<Built, BuildError> {
    let start = Instant::now();
    fs::create_dir_all(req.out).map_err(BuildError::io("create_dir_all", req.out))?;
    let make = Make::new(req.src, req.out, req.lock).map_err(|e| BuildError::Step {
        what: "make".into(),
        detail: format!("duplicating the build directory's lock: {e}"),
        log: log.path().to_path_buf(),
    })?;
    let configured = config::configure(&make, req.config, req.fragments, log)?;
    let modules = configured.config.is_on("MODULES");
    let targets: &[&str] = if modules {
        &["bzImage", "modules"]
    } else {
        &["bzImage"]
    };
    let steps = make.build(
        targets,
        req.label,
        log,
        req.sink,
        req.expected_steps,
        req.cancel,
    )?;
    let release_file = req.out.join("include/config/kernel.release");
    let release = fs::read_to_string(&release_file)
        .map_err(BuildError::io("read", &release_file))?
        .trim()
        .to_string();
    let modules = if modules {
        let root = req.out.join("mmx-modules");
        if root.exists() {
            fs::remove_dir_all(&root).map_err(BuildError::io("remove_dir_all", &root))?;
        }
        make.quick(
            &[
                "modules_install",
                &format!("INSTALL_MOD_PATH={}", root.display()),
                "INSTALL_MOD_STRIP=1",
            ],
            log,
        )?;
        Some(root.join("lib/modules").join(&release))
    } else {
        None
    };
    Ok(Built {
        bzimage: req.out.join("arch/x86/boot/bzImage"),
        config: req.out.join(".config"),
        release,
        modules,
        modules_builtin: req.out.join("modules.builtin"),
        steps,
        took: start.elapsed(),
        warnings: configured.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kbuild_steps_are_recognised() {
        assert_eq!(
            kbuild_step("  CC      fs/overlayfs/params.o"),
            Some("fs/overlayfs/params.o")
        );
        assert_eq!(
            kbuild_step("  HOSTCC  scripts/basic/fixdep"),
            Some("scripts/basic/fixdep")
        );
        assert_eq!(kbuild_step("  LD      vmlinux.o"), Some("vmlinux.o"));
        assert_eq!(kbuild_step("make[1]: Entering directory '/x'"), None);
        assert_eq!(kbuild_step("  575 |   break"), None);
        assert_eq!(kbuild_step("In file included from x.c:1:"), None);
    }

    #[test]
    fn failure_names_the_file_relative_to_the_tree() {
        let errors = vec![
            "/b/src/fs/overlayfs/params.c:575:17: error: expected ';' before 'break'".to_string(),
            "make[4]: *** [/b/src/scripts/Makefile.build:229: fs/overlayfs/params.o] Error 1"
                .to_string(),
        ];
        let (loc, msg) = failure(&errors, Path::new("/b/src"), Path::new("/b/out"));
        assert_eq!(loc, "fs/overlayfs/params.c:575");
        assert_eq!(msg, "error: expected ';' before 'break'");
        let (loc, msg) = failure(&errors[1..], Path::new("/b/src"), Path::new("/b/out"));
        assert_eq!(loc, "fs/overlayfs/params.o");
        assert!(msg.contains("Error 1"), "{msg}");
        let (loc, _) = failure(
            &["../src/init/main.c:1: fatal error: x.h: No such file".to_string()],
            Path::new("/s"),
            Path::new("/o"),
        );
        assert_eq!(loc, "../src/init/main.c:1");
    }

    #[test]
    fn log_keeps_everything_and_gives_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = BuildLog::create(&dir.path().join("build.log")).unwrap();
        log.note("start");
        let mut sh = Command::new("sh");
        sh.args(["-c", "echo out; echo err >&2; exit 3"]);
        let (ok, out) = run_captured(sh, Duration::from_secs(60), None, &mut log, "sh").unwrap();
        assert!(!ok);
        assert!(out.contains("out") && out.contains("err"));
        let tail = log.tail(2);
        assert!(
            tail.contains("err") && tail.contains("exit status: 3"),
            "{tail}"
        );
        let e = run_captured(
            Command::new("/nonexistent/tool"),
            Duration::from_secs(60),
            None,
            &mut log,
            "tool",
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot run it"), "{e}");
    }
}

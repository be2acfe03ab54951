//! Which accelerator guests run under: KVM when it can really run a guest, TCG otherwise.
//!
//! An openable `/dev/kvm` proves little: nested or paravirtual KVM can fail on the first
//! instruction it cannot emulate ("KVM internal error. Suberror: 1 … emulation failure") and
//! QEMU then waits forever, or a guest hangs silently. So `auto` boots one real guest under KVM
//! with a short limit and only trusts KVM if the agent comes up. The verdict is cached per host
//! kernel release and QEMU version (the two things that change it), so later runs skip the probe.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proc::Run;
use crate::results::Accel;

/// `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM if a probe guest boots under it, else TCG (said once).
    Auto,
    /// KVM, or an error if /dev/kvm cannot be opened.
    Kvm,
    /// QEMU's software emulation, every vCPU on one host thread.
    Tcg,
    /// QEMU's software emulation, one host thread per vCPU (`thread=multi`).
    TcgMt,
}

/// The probe guest's limit: a working KVM reaches the agent in 1–3 s.
pub const PROBE_LIMIT: Duration = Duration::from_secs(30);

/// `qemu --version` answers at once; a minute covers a loaded machine.
const VERSION_LIMIT: Duration = Duration::from_secs(60);

/// A cached probe verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub usable: bool,
    /// Why not (or how it was decided), for the one-line notice.
    pub reason: String,
    /// What the verdict holds for.
    pub host_kernel: String,
    pub qemu_version: String,
    /// How long the probe took, ms.
    pub probe_ms: u64,
}

/// Open /dev/kvm read-write, as QEMU will: a missing device or a missing `kvm` group
/// membership ends here without any boot.
pub fn kvm_openable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("cannot open /dev/kvm: {e}"))
}

/// First line of `qemu --version`, e.g. `QEMU emulator version 7.2.22 (Debian …)`.
pub fn qemu_version(qemu: &Path) -> Result<String, String> {
    let mut cmd = Command::new(qemu);
    cmd.arg("--version");
    let out = Run::new(cmd, VERSION_LIMIT)
        .merge_stderr()
        .run()
        .map_err(|e| format!("running {} --version: {e}", qemu.display()))?;
    out.stdout
        .lines()
        .next()
        .filter(|l| out.success() && !l.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("{} --version said: {}", qemu.display(), out.stdout.trim()))
}

pub fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Where the verdict for this host kernel and QEMU lives.
pub fn cache_path(cache_dir: &Path, host_kernel: &str, qemu_version: &str) -> PathBuf {
    let key = blake3::hash(format!("{host_kernel}\n{qemu_version}").as_bytes());
    cache_dir
        .join("accel")
        .join(format!("kvm-{}.json", &key.to_hex()[..16]))
}

pub fn read_cached(path: &Path) -> Option<Verdict> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Best effort: a verdict that cannot be cached is probed again next time, nothing worse.
pub fn write_cached(path: &Path, verdict: &Verdict) {
    if let (Some(dir), Ok(text)) = (path.parent(), serde_json::to_string_pretty(verdict)) {
        let _ = std::fs::create_dir_all(dir);
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

/// Judge a probe boot: KVM is usable only if the agent came up, whatever else happened.
pub fn judge_probe(
    kvm_failed: bool,
    agent_ready: bool,
    end: &crate::results::BootEnd,
) -> (bool, String) {
    use crate::results::BootEnd;
    if kvm_failed {
        return (
            false,
            "KVM internal error (emulation failure) in the probe guest".into(),
        );
    }
    if agent_ready {
        return (true, "a probe guest booted to the agent under KVM".into());
    }
    let why = match end {
        BootEnd::Completed => "the probe guest finished without the agent coming up".to_string(),
        BootEnd::Timeout { seconds, .. } => {
            format!("the probe guest did not reach the agent within {seconds:.0} s")
        }
        BootEnd::Panic { line, .. } => format!("the probe guest died: {line}"),
        BootEnd::Infra { message, .. } => format!("the probe guest failed: {message}"),
    };
    (false, why)
}

/// The accelerator for the rest of the run, and the note to give once (after `mmx: `).
pub fn accel_of(verdict: &Verdict) -> (Accel, Option<String>) {
    if verdict.usable {
        (Accel::Kvm, None)
    } else {
        (
            Accel::Tcg,
            Some(format!(
                "KVM is not usable here ({}); guests run under TCG (software emulation) and \
                 every result says so",
                crate::oneline::fold(&verdict.reason, crate::results::SUMMARY_CHARS)
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::BootEnd;

    #[test]
    fn probe_judgement() {
        assert!(!judge_probe(true, true, &BootEnd::Completed).0);
        assert!(judge_probe(false, true, &BootEnd::Completed).0);
        let (ok, why) = judge_probe(
            false,
            false,
            &BootEnd::Timeout {
                deadline: crate::results::Deadline::Boot,
                seconds: 30.0,
                excerpt: String::new(),
            },
        );
        assert!(!ok);
        assert!(why.contains("30 s"), "{why}");
    }

    #[test]
    fn verdict_cache_round_trips_and_is_keyed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = cache_path(dir.path(), "6.18.0", "QEMU emulator version 7.2.22");
        let b = cache_path(dir.path(), "6.18.1", "QEMU emulator version 7.2.22");
        assert_ne!(a, b);
        assert!(read_cached(&a).is_none());
        let v = Verdict {
            usable: false,
            reason: "KVM internal error".into(),
            host_kernel: "6.18.0".into(),
            qemu_version: "7.2.22".into(),
            probe_ms: 812,
        };
        write_cached(&a, &v);
        assert_eq!(read_cached(&a), Some(v.clone()));
        let (accel, notice) = accel_of(&v);
        assert_eq!(accel, Accel::Tcg);
        assert!(notice.expect("notice").contains("KVM internal error"));
    }
}

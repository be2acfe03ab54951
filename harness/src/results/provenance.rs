//! Where a number came from: the backend and accelerator that ran it, the CPU, the kernel and its
//! source, the topology asked for and seen, and for a runtime's cell the runtime's build
//! ([`RuntimeProvenance`]) and what it said it is.

use std::path::PathBuf;

use protocol::ObservedTopology;
use serde::{Deserialize, Serialize};

/// Which backend ran a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The agent on the machine running mmx, in a private mount namespace.
    Local,
    /// A guest kernel in QEMU.
    Qemu,
    /// A metal host over SSH.
    Ssh,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Qemu => "qemu",
            BackendKind::Ssh => "ssh",
        }
    }
}

/// How the machine under test executed instructions: every number carries it. Guests get theirs
/// from the QEMU backend; local and SSH cells from what the agent measured there (`metal` only
/// when no hypervisor was seen, else `vm:<vendor>`).
///
/// In `run.json` it is one string (`kvm`, `tcg`, `tcg-mt`, `metal`, `vm:kvm`, …): the three
/// words older runs wrote still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Accel {
    /// Hardware virtualization of a guest mmx booted.
    Kvm,
    /// QEMU's software emulation on one host thread (`-accel tcg,thread=single`): functional
    /// answers are real, speeds are not the hardware's, and the vCPUs never run at the same time.
    Tcg,
    /// QEMU's software emulation with one host thread per vCPU (`-accel tcg,thread=multi`): the
    /// vCPUs run at once, so contention is real contention (on emulated instructions).
    TcgMt,
    /// No hypervisor under the kernel: the agent saw none on the local host or metal host.
    Metal,
    /// The local host or "metal" host is itself a virtual machine of this hypervisor.
    Vm(protocol::Hypervisor),
    /// A local or SSH visit that ended before its agent reported (no connection, interrupted):
    /// nothing was measured, so nothing is claimed.
    Unmeasured,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        use protocol::Hypervisor as H;
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::TcgMt => "tcg-mt",
            Accel::Metal => "metal",
            Accel::Unmeasured => "unmeasured",
            Accel::Vm(h) => match h {
                H::Kvm => "vm:kvm",
                H::Firecracker => "vm:firecracker",
                H::QemuTcg => "vm:qemu-tcg",
                H::Xen => "vm:xen",
                H::HyperV => "vm:hyper-v",
                H::Vmware => "vm:vmware",
                H::VirtualBox => "vm:virtualbox",
                H::Bhyve => "vm:bhyve",
                H::Parallels => "vm:parallels",
                H::Acrn => "vm:acrn",
                H::Unknown => "vm:unknown",
            },
        }
    }

    /// Whether the vCPUs ran one at a time: then numbers from more than one thread measure
    /// QEMU's time slicing, not contention.
    pub fn vcpus_serialized(self) -> bool {
        matches!(self, Accel::Tcg)
    }

    /// QEMU emulates every instruction: slow, so watchdogs and item limits stretch.
    pub fn is_emulated(self) -> bool {
        matches!(self, Accel::Tcg | Accel::TcgMt)
    }

    /// The label of a machine the agent looked at: `metal` when it saw no hypervisor.
    pub fn measured(v: &protocol::Virtualization) -> Accel {
        v.hypervisor.map_or(Accel::Metal, Accel::Vm)
    }

    fn all() -> impl Iterator<Item = Accel> {
        [
            Accel::Kvm,
            Accel::Tcg,
            Accel::TcgMt,
            Accel::Metal,
            Accel::Unmeasured,
        ]
        .into_iter()
        .chain(protocol::Hypervisor::ALL.into_iter().map(Accel::Vm))
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Accel, String> {
        Accel::all()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown accelerator `{s}`"))
    }
}

impl Serialize for Accel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Accel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Accel, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a number came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub backend: BackendKind,
    pub accel: Accel,
    /// CPU model of the machine that executed the guest or agent.
    pub host_cpu: String,
    /// `uname -r` of the kernel under test, as the agent reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// Package and version (or path) the kernel came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_source: Option<String>,
    /// The archive no longer carried the kernel kernels.lock pins, and another ran in its place
    /// (never under `--locked` or `CI=true`): both, so no one reads these numbers as the
    /// locked kernel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_substituted: Option<LockSubstitution>,
    /// The topology the matrix asked for (None for hosts: they are what they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_topology: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_topology: Option<ObservedTopology>,
    /// Set when observed differs from requested: said on the cell, never hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_mismatch: Option<String>,
    /// A runtime's cell: which runtime, built from what, and what it said it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<CellRuntime>,
    /// How the boot's benchmarks were sized for its accelerator, and why (absent in a run.json
    /// written before mmx sized them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing: Option<super::Sizing>,
}

/// What a lock file pinned and what ran instead, because Debian's archive no longer carried the
/// pinned packages: each package as `name=version`, in the lock's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockSubstitution {
    pub locked: Vec<String>,
    pub used: Vec<String>,
}

impl LockSubstitution {
    /// `locked a=1, b=1; used a=2, b=2`: for terminals and report headers.
    pub fn describe(&self) -> String {
        format!(
            "locked {}; used {}",
            self.locked.join(", "),
            self.used.join(", ")
        )
    }
}

/// The runtime a cell ran: its build and what it said it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellRuntime {
    pub name: protocol::RuntimeName,
    /// Where it came from: [`RuntimeProvenance::describe`].
    pub source: String,
    /// Its hello: `containerd 2.1.9+ds1-5 go1.27.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub said: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// Where a runtime came from: what a report cell and the matrix header show. The runtime build
/// (`runtimes::build`) makes it, and its cache entry keeps it. Records written before
/// containers/storage runtimes existed say `containerd-debian`/`containerd-tree` and no program:
/// they still read, as containerd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum RuntimeProvenance {
    /// A project's sources from Debian packages.
    #[serde(rename = "debian", alias = "containerd-debian")]
    Debian {
        #[serde(default)]
        program: GoProgram,
        suite: String,
        /// The project's package version (`2.1.9+ds1-5`).
        version: String,
        /// `go version`'s answer (`go1.27.3`).
        go: String,
        patches: Vec<PatchId>,
        /// Every source package, the project's first.
        packages: Vec<PackageId>,
    },
    /// A user's checkout of the project at one commit.
    #[serde(rename = "tree", alias = "containerd-tree")]
    Tree {
        #[serde(default)]
        program: GoProgram,
        tree: PathBuf,
        rev: String,
        commit: String,
        go: String,
        patches: Vec<PatchId>,
    },
    /// A program the user built.
    Binary { path: PathBuf, sha256: String },
}

/// Whose mount code a Go runtime is built against (`runtimes::program` has what each needs).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum GoProgram {
    /// containerd's `core/mount`.
    #[default]
    Containerd,
    /// containers/storage's overlay driver (CRI-O, Podman).
    Storage,
}

impl GoProgram {
    /// The project, as messages and reports name it.
    pub fn project(self) -> &'static str {
        match self {
            GoProgram::Containerd => "containerd",
            GoProgram::Storage => "containers/storage",
        }
    }
}

/// A patch applied to a Go runtime's sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchId {
    pub file: PathBuf,
    pub sha256: String,
}

/// A Debian package a runtime was built from, exactly as the lock file pinned it (the same
/// fields as a lock's entry, so a record and a lock read alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageId {
    pub name: String,
    pub version: String,
    /// SHA-256 of the .deb.
    pub sha256: String,
    /// Path in the archive's pool.
    pub filename: String,
    pub size: u64,
}

impl RuntimeProvenance {
    /// One line for logs and reports: `containerd 2.1.9+ds1-5 (debian sid, go1.27.3)`.
    pub fn describe(&self) -> String {
        let patched = |patches: &[PatchId]| {
            let names: Vec<String> = patches
                .iter()
                .map(|p| {
                    p.file.file_name().map_or_else(
                        || p.file.display().to_string(),
                        |n| n.to_string_lossy().into(),
                    )
                })
                .collect();
            if names.is_empty() {
                String::new()
            } else {
                format!(" + {}", names.join(", "))
            }
        };
        match self {
            RuntimeProvenance::Debian {
                program,
                suite,
                version,
                go,
                patches,
                ..
            } => format!(
                "{} {version}{} (debian {suite}, {go})",
                program.project(),
                patched(patches)
            ),
            RuntimeProvenance::Tree {
                program,
                tree,
                rev,
                commit,
                go,
                patches,
            } => format!(
                "{} {} ({rev} in {}){} ({go})",
                program.project(),
                commit.get(..12).unwrap_or(commit),
                tree.display(),
                patched(patches)
            ),
            RuntimeProvenance::Binary { path, sha256 } => format!(
                "binary {} (sha256 {})",
                path.display(),
                sha256.get(..12).unwrap_or(sha256)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accelerators_are_one_word_and_old_words_still_read() {
        for a in Accel::all() {
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<Accel>(&json).unwrap(), a, "{json}");
        }
        assert_eq!(
            serde_json::from_str::<Accel>("\"metal\"").unwrap(),
            Accel::Metal
        );
        assert_eq!(
            serde_json::to_string(&Accel::Vm(protocol::Hypervisor::HyperV)).unwrap(),
            "\"vm:hyper-v\""
        );
        assert!(serde_json::from_str::<Accel>("\"vm:nope\"").is_err());
        assert!(Accel::Tcg.vcpus_serialized() && !Accel::TcgMt.vcpus_serialized());
    }

    #[test]
    fn runtime_records_from_before_containers_storage_read_as_containerd() {
        let old = r#"{"source":"containerd-debian","suite":"sid","version":"2.1.9+ds1-5","go":"go1.27.3","patches":[],"packages":[]}"#;
        let p: RuntimeProvenance = serde_json::from_str(old).unwrap();
        assert!(matches!(
            p,
            RuntimeProvenance::Debian {
                program: GoProgram::Containerd,
                ..
            }
        ));
        assert!(
            p.describe().starts_with("containerd 2.1.9+ds1-5"),
            "{}",
            p.describe()
        );
        let new = serde_json::to_string(&RuntimeProvenance::Tree {
            program: GoProgram::Storage,
            tree: "/s".into(),
            rev: "main".into(),
            commit: "0123456789abcdef".into(),
            go: "go1.27.3".into(),
            patches: vec![],
        })
        .unwrap();
        assert!(
            new.contains(r#""source":"tree""#) && new.contains(r#""program":"storage""#),
            "{new}"
        );
        let back: RuntimeProvenance = serde_json::from_str(&new).unwrap();
        assert!(
            back.describe()
                .starts_with("containers/storage 0123456789ab"),
            "{}",
            back.describe()
        );
    }
}

//! The CPU topology as the agent observes it, and the one way topologies are named.

use serde::{Deserialize, Serialize};

/// A topology's short name in the matrix's notation: `2s2c2t`, `2s1c2t-numa2`.
pub fn topology_name(
    sockets: u32,
    cores_per_socket: u32,
    threads_per_core: u32,
    numa_nodes: usize,
) -> String {
    let mut s = format!("{sockets}s{cores_per_socket}c{threads_per_core}t");
    if numa_nodes > 1 {
        s.push_str(&format!("-numa{numa_nodes}"));
    }
    s
}

/// The CPU topology as the agent observes it (never as requested).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObservedTopology {
    pub cpu_model: String,
    /// Online logical CPUs, from /sys/devices/system/cpu/online.
    pub cpus_online: Vec<u32>,
    /// Distinct physical packages.
    pub sockets: u32,
    /// Distinct cores per socket.
    pub cores_per_socket: u32,
    /// Logical CPUs per core.
    pub threads_per_core: u32,
    /// Sibling groups (thread_siblings_list), one per core.
    pub core_siblings: Vec<Vec<u32>>,
    pub smt: SmtState,
    pub numa_nodes: Vec<NumaNode>,
    /// Whether a hypervisor runs this machine, and whose (None: an agent that did not look).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtualization: Option<Virtualization>,
}

impl ObservedTopology {
    /// Short id in the matrix's notation: `2s2c2t-numa2`.
    pub fn short(&self) -> String {
        topology_name(
            self.sockets,
            self.cores_per_socket,
            self.threads_per_core,
            self.numa_nodes.len(),
        )
    }
}

/// Where the kernel shows SMT's state and takes `on` / `off` (x86 and a few others; absent
/// elsewhere).
pub const SMT_CONTROL: &str = "/sys/devices/system/cpu/smt/control";

/// /sys/devices/system/cpu/smt/control, or what can be inferred without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SmtState {
    On,
    Off,
    ForceOff,
    NotSupported,
    NotImplemented,
    #[default]
    Unknown,
}

impl SmtState {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtState::On => "on",
            SmtState::Off => "off",
            SmtState::ForceOff => "forceoff",
            SmtState::NotSupported => "notsupported",
            SmtState::NotImplemented => "notimplemented",
            SmtState::Unknown => "unknown",
        }
    }

    /// Parse the contents of /sys/devices/system/cpu/smt/control.
    pub fn from_control(s: &str) -> SmtState {
        match s.trim() {
            "on" => SmtState::On,
            "off" => SmtState::Off,
            "forceoff" => SmtState::ForceOff,
            "notsupported" => SmtState::NotSupported,
            "notimplemented" => SmtState::NotImplemented,
            _ => SmtState::Unknown,
        }
    }
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNode {
    pub id: u32,
    pub cpus: Vec<u32>,
    pub memory_mib: u64,
    /// Distances to every node, in node order (from /sys/devices/system/node/nodeN/distance).
    pub distances: Vec<u32>,
}

/// What the agent found about the layer below the kernel it runs on: nothing (bare metal) or a
/// hypervisor. Labels the accelerator of local and SSH cells (`metal` or `vm:<vendor>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Virtualization {
    /// None: no source saw a hypervisor.
    pub hypervisor: Option<Hypervisor>,
    /// What each source said (`cpuid 0x40000000: KVMKVMKVM`, `dmi sys_vendor: QEMU`), for the
    /// record; sources that said nothing are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

/// A hypervisor, by who made it. A closed set so labels stay comparable across runs; a
/// signature mmx does not know is [`Hypervisor::Unknown`] (its text stays in the evidence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hypervisor {
    /// Linux KVM (also under QEMU, crosvm, cloud-hypervisor).
    Kvm,
    /// Firecracker (KVM underneath; told apart by its DMI or command line).
    Firecracker,
    /// QEMU's software emulation (TCG).
    QemuTcg,
    Xen,
    HyperV,
    Vmware,
    VirtualBox,
    Bhyve,
    Parallels,
    Acrn,
    /// A hypervisor bit or vendor mmx does not know.
    Unknown,
}

impl Hypervisor {
    pub const ALL: [Hypervisor; 11] = [
        Hypervisor::Kvm,
        Hypervisor::Firecracker,
        Hypervisor::QemuTcg,
        Hypervisor::Xen,
        Hypervisor::HyperV,
        Hypervisor::Vmware,
        Hypervisor::VirtualBox,
        Hypervisor::Bhyve,
        Hypervisor::Parallels,
        Hypervisor::Acrn,
        Hypervisor::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hypervisor::Kvm => "kvm",
            Hypervisor::Firecracker => "firecracker",
            Hypervisor::QemuTcg => "qemu-tcg",
            Hypervisor::Xen => "xen",
            Hypervisor::HyperV => "hyper-v",
            Hypervisor::Vmware => "vmware",
            Hypervisor::VirtualBox => "virtualbox",
            Hypervisor::Bhyve => "bhyve",
            Hypervisor::Parallels => "parallels",
            Hypervisor::Acrn => "acrn",
            Hypervisor::Unknown => "unknown",
        }
    }
}

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

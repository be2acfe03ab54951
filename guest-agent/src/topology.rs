//! The CPU topology as this machine shows it: model, online CPUs, sockets, cores, SMT siblings,
//! SMT control state and NUMA nodes. Every perf number carries it (ARCHITECTURE.md, "provenance"), and
//! the lock benchmark pins threads from it.
//!
//! The parsers are pure functions over the text of the kernel's files; [`observe_at`] reads them
//! under a root so tests can hand it a fake sysfs. Missing files are normal (no NUMA sysfs in a
//! small guest, no `smt/control` on some architectures): the topology is then inferred.

use std::collections::BTreeSet;
use std::path::Path;

use protocol::{NumaNode, ObservedTopology, SmtState};

/// The topology of the machine the agent runs on.
pub fn observe() -> ObservedTopology {
    let virtualization = Some(crate::hypervisor::detect());
    ObservedTopology {
        virtualization,
        ..observe_at(Path::new("/"))
    }
}

/// The topology as seen under `root` (normally `/`): reads `proc/cpuinfo`, `proc/meminfo` and
/// `sys/devices/system/{cpu,node}` below it.
pub fn observe_at(root: &Path) -> ObservedTopology {
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).ok();
    let cpu_dir = "sys/devices/system/cpu";

    let cpus_online = read(&format!("{cpu_dir}/online"))
        .and_then(|s| parse_cpu_list(&s).ok())
        .filter(|v| !v.is_empty())
        // No sysfs at all: count the processors /proc/cpuinfo lists.
        .unwrap_or_else(|| {
            let n = read("proc/cpuinfo")
                .map_or(1, |s| count_processors(&s))
                .max(1);
            (0..n).collect()
        });

    let cpus: Vec<CpuTopology> = cpus_online
        .iter()
        .map(|&cpu| {
            let t = |f: &str| read(&format!("{cpu_dir}/cpu{cpu}/topology/{f}"));
            CpuTopology {
                cpu,
                package: t("physical_package_id").and_then(|s| s.trim().parse().ok()),
                core: t("core_id").and_then(|s| s.trim().parse().ok()),
                siblings: t("thread_siblings_list").and_then(|s| parse_cpu_list(&s).ok()),
            }
        })
        .collect();

    let nodes = read_nodes(root);
    let mem_total_kib = read("proc/meminfo").and_then(|s| parse_meminfo_total_kib(&s));
    build(Inputs {
        cpu_model: read("proc/cpuinfo")
            .and_then(|s| parse_model_name(&s))
            .unwrap_or_default(),
        cpus,
        smt_control: read(&format!("{cpu_dir}/smt/control")),
        nodes,
        mem_total_kib,
    })
}

/// Raw per-node text, as read from `/sys/devices/system/node/nodeN/`.
#[derive(Debug, Clone, Default)]
pub struct RawNode {
    pub id: u32,
    pub cpulist: String,
    pub meminfo: String,
    pub distance: String,
}

fn read_nodes(root: &Path) -> Vec<RawNode> {
    let dir = root.join("sys/devices/system/node");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<RawNode> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let id: u32 = e.file_name().to_str()?.strip_prefix("node")?.parse().ok()?;
            let read = |f: &str| std::fs::read_to_string(e.path().join(f)).unwrap_or_default();
            Some(RawNode {
                id,
                cpulist: read("cpulist"),
                meminfo: read("meminfo"),
                distance: read("distance"),
            })
        })
        .collect();
    nodes.sort_by_key(|n| n.id);
    nodes
}

/// One online CPU's topology files (each may be missing).
#[derive(Debug, Clone, Default)]
pub struct CpuTopology {
    pub cpu: u32,
    pub package: Option<u32>,
    pub core: Option<u32>,
    pub siblings: Option<Vec<u32>>,
}

/// Everything [`build`] needs, already read.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub cpu_model: String,
    pub cpus: Vec<CpuTopology>,
    pub smt_control: Option<String>,
    pub nodes: Vec<RawNode>,
    /// /proc/meminfo MemTotal, for the one node assumed when there is no NUMA sysfs.
    pub mem_total_kib: Option<u64>,
}

/// Assemble the topology from what was read. Pure.
pub fn build(inputs: Inputs) -> ObservedTopology {
    let online: BTreeSet<u32> = inputs.cpus.iter().map(|c| c.cpu).collect();

    // Sibling groups: thread_siblings_list where present (restricted to online CPUs, since an
    // offlined sibling still appears in some kernels' lists), else grouped by (package, core_id),
    // else every CPU its own core.
    let mut groups: BTreeSet<Vec<u32>> = BTreeSet::new();
    for c in &inputs.cpus {
        let group: Vec<u32> = match (&c.siblings, c.core) {
            (Some(s), _) => s.iter().copied().filter(|x| online.contains(x)).collect(),
            (None, Some(core)) => inputs
                .cpus
                .iter()
                .filter(|o| o.core == Some(core) && o.package == c.package)
                .map(|o| o.cpu)
                .collect(),
            (None, None) => vec![c.cpu],
        };
        groups.insert(if group.is_empty() { vec![c.cpu] } else { group });
    }
    let mut core_siblings: Vec<Vec<u32>> = groups.into_iter().collect();
    core_siblings.sort_by_key(|g| g.first().copied());

    let packages: BTreeSet<u32> = inputs.cpus.iter().map(|c| c.package.unwrap_or(0)).collect();
    let sockets = u32::try_from(packages.len()).unwrap_or(u32::MAX).max(1);
    let cores = u32::try_from(core_siblings.len()).unwrap_or(u32::MAX);
    let threads_per_core = core_siblings
        .iter()
        .map(|g| u32::try_from(g.len()).unwrap_or(u32::MAX))
        .max()
        .unwrap_or(1)
        .max(1);

    let smt = match &inputs.smt_control {
        Some(s) => SmtState::from_control(s),
        // No control file: siblings on line means SMT is on; one thread per core tells nothing
        // (SMT could be absent or turned off at boot).
        None if threads_per_core > 1 => SmtState::On,
        None => SmtState::Unknown,
    };

    let cpus_online: Vec<u32> = online.iter().copied().collect();
    let mut numa_nodes: Vec<NumaNode> = inputs
        .nodes
        .iter()
        .map(|n| NumaNode {
            id: n.id,
            cpus: parse_cpu_list(&n.cpulist).unwrap_or_default(),
            memory_mib: parse_meminfo_total_kib(&n.meminfo).unwrap_or(0) / 1024,
            distances: parse_distance(&n.distance),
        })
        .collect();
    if numa_nodes.is_empty() {
        numa_nodes.push(NumaNode {
            id: 0,
            cpus: cpus_online.clone(),
            memory_mib: inputs.mem_total_kib.unwrap_or(0) / 1024,
            distances: vec![10],
        });
    }

    ObservedTopology {
        cpu_model: inputs.cpu_model,
        cpus_online,
        sockets,
        cores_per_socket: cores.div_ceil(sockets).max(1),
        threads_per_core,
        core_siblings,
        smt,
        numa_nodes,
        virtualization: None,
    }
}

/// Parse the kernel's CPU list syntax (`0-3,8,10-11`, with an optional stride `0-7:2`), as in
/// /sys/devices/system/cpu/online. Empty text is an empty list. Sorted, without duplicates.
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, String> {
    let mut out = BTreeSet::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|e| format!("bad CPU number `{t}` in `{}`: {e}", s.trim()))
        };
        let (range, stride) = match part.split_once(':') {
            Some((r, st)) => {
                // `a-b:used/group` is the full bitmap-list form; only a plain stride is read.
                let step = num(st.split('/').next().unwrap_or(st))?;
                (r, step.max(1))
            }
            None => (part, 1),
        };
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("reversed CPU range `{part}`"));
                }
                out.extend((a..=b).step_by(stride as usize));
            }
            None => {
                out.insert(num(range)?);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The first `model name` in /proc/cpuinfo (x86), else the first of the fields other
/// architectures use.
pub fn parse_model_name(cpuinfo: &str) -> Option<String> {
    for key in ["model name", "cpu model", "Model", "uarch", "cpu"] {
        let found = cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().to_string())
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

fn count_processors(cpuinfo: &str) -> u32 {
    let n = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `MemTotal` in KiB from /proc/meminfo (`MemTotal: 16384 kB`) or a node's meminfo
/// (`Node 0 MemTotal: 16384 kB`).
pub fn parse_meminfo_total_kib(s: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.trim_end().ends_with("MemTotal") {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// A node's `distance` file: one number per node.
pub fn parse_distance(s: &str) -> Vec<u32> {
    s.split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_cpu_list("\n").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_cpu_list("3,1,1-2").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_cpu_list("0-7:2").unwrap(), vec![0, 2, 4, 6]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a-b").is_err());
    }

    #[test]
    fn model_and_meminfo() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\n";
        assert_eq!(
            parse_model_name(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(count_processors(cpuinfo), 2);
        assert_eq!(parse_model_name("foo: bar\n"), None);
        assert_eq!(
            parse_meminfo_total_kib("MemTotal:       16384 kB\nMemFree: 1 kB"),
            Some(16384)
        );
        assert_eq!(
            parse_meminfo_total_kib("Node 1 MemTotal:  2048 kB\n"),
            Some(2048)
        );
        assert_eq!(parse_distance("10 21\n"), vec![10, 21]);
    }

    fn cpu(cpu: u32, package: u32, core: u32, siblings: &str) -> CpuTopology {
        CpuTopology {
            cpu,
            package: Some(package),
            core: Some(core),
            siblings: Some(parse_cpu_list(siblings).unwrap()),
        }
    }

    #[test]
    fn two_sockets_smt_numa() {
        // 2 sockets × 2 cores × 2 threads, Linux numbering: siblings are n and n+4.
        let cpus = vec![
            cpu(0, 0, 0, "0,4"),
            cpu(1, 0, 1, "1,5"),
            cpu(2, 1, 0, "2,6"),
            cpu(3, 1, 1, "3,7"),
            cpu(4, 0, 0, "0,4"),
            cpu(5, 0, 1, "1,5"),
            cpu(6, 1, 0, "2,6"),
            cpu(7, 1, 1, "3,7"),
        ];
        let node = |id: u32, list: &str, dist: &str| RawNode {
            id,
            cpulist: list.into(),
            meminfo: format!("Node {id} MemTotal: 1048576 kB\n"),
            distance: dist.into(),
        };
        let t = build(Inputs {
            cpu_model: "X".into(),
            cpus,
            smt_control: Some("on\n".into()),
            nodes: vec![node(0, "0-1,4-5", "10 21"), node(1, "2-3,6-7", "21 10")],
            mem_total_kib: None,
        });
        assert_eq!(
            (t.sockets, t.cores_per_socket, t.threads_per_core),
            (2, 2, 2)
        );
        assert_eq!(
            t.core_siblings,
            vec![vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]]
        );
        assert_eq!(t.smt, SmtState::On);
        assert_eq!(t.numa_nodes.len(), 2);
        assert_eq!(t.numa_nodes[1].cpus, vec![2, 3, 6, 7]);
        assert_eq!(t.numa_nodes[1].memory_mib, 1024);
        assert_eq!(t.numa_nodes[0].distances, vec![10, 21]);
        assert_eq!(t.short(), "2s2c2t-numa2");
    }

    #[test]
    fn missing_files_are_inferred() {
        // No topology files, no NUMA sysfs, no smt/control.
        let cpus = (0..4)
            .map(|c| CpuTopology {
                cpu: c,
                ..Default::default()
            })
            .collect();
        let t = build(Inputs {
            cpus,
            mem_total_kib: Some(4 * 1024 * 1024),
            ..Default::default()
        });
        assert_eq!(
            (t.sockets, t.cores_per_socket, t.threads_per_core),
            (1, 4, 1)
        );
        assert_eq!(t.smt, SmtState::Unknown);
        assert_eq!(t.numa_nodes.len(), 1);
        assert_eq!(t.numa_nodes[0].cpus, vec![0, 1, 2, 3]);
        assert_eq!(t.numa_nodes[0].memory_mib, 4096);

        // Siblings without a control file: SMT is on.
        let cpus = vec![cpu(0, 0, 0, "0-1"), cpu(1, 0, 0, "0-1")];
        let t = build(Inputs {
            cpus,
            ..Default::default()
        });
        assert_eq!(t.smt, SmtState::On);
        assert_eq!(t.threads_per_core, 2);
    }

    #[test]
    fn offline_siblings_are_dropped() {
        // CPU 1 (the sibling of 0) is offline but still listed.
        let t = build(Inputs {
            cpus: vec![
                cpu(0, 0, 0, "0-1"),
                cpu(2, 0, 1, "2-3"),
                cpu(3, 0, 1, "2-3"),
            ],
            smt_control: Some("on".into()),
            ..Default::default()
        });
        assert_eq!(t.core_siblings, vec![vec![0], vec![2, 3]]);
        assert_eq!(t.cpus_online, vec![0, 2, 3]);
    }

    #[test]
    fn fake_sysfs_tree_and_empty_root() {
        let dir = std::env::temp_dir().join(format!("mmx-topo-test-{}", std::process::id()));
        let w = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w(
            "proc/cpuinfo",
            "processor : 0\nmodel name : Fake CPU\nprocessor : 1\n",
        );
        w("sys/devices/system/cpu/online", "0-1\n");
        for c in 0..2 {
            let base = format!("sys/devices/system/cpu/cpu{c}/topology");
            w(&format!("{base}/physical_package_id"), "0\n");
            w(&format!("{base}/core_id"), &format!("{c}\n"));
            w(&format!("{base}/thread_siblings_list"), &format!("{c}\n"));
        }
        w("sys/devices/system/cpu/smt/control", "notsupported\n");
        let t = observe_at(&dir);
        assert_eq!(t.cpu_model, "Fake CPU");
        assert_eq!(t.cpus_online, vec![0, 1]);
        assert_eq!(t.smt, SmtState::NotSupported);
        assert_eq!(t.short(), "1s2c1t");
        assert_eq!(t.numa_nodes[0].cpus, vec![0, 1]);

        // Nothing at all under the root: one CPU, one node, no panic.
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let t = observe_at(&empty);
        assert_eq!(t.cpus_online, vec![0]);
        assert_eq!(t.numa_nodes.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

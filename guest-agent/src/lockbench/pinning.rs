//! Where each benchmark thread runs, chosen from the observed topology. The same thread count
//! means different things on different machines: two threads on two cores of one socket, on two
//! SMT siblings of one core, or on two NUMA nodes contend very differently (Netflix saw the
//! difference between SMT on and off, one socket and two). Plans are pure functions of the
//! topology; [`pin_current_thread`] applies one entry.

use protocol::lockbench::Pinning;
use protocol::ObservedTopology;

/// The CPU for each of `n` threads (`None`: let the scheduler place it), or `None` when the
/// pinning cannot host `n` threads without putting two on one CPU (such points are skipped:
/// oversubscribing a pinned spinlock benchmark measures the scheduler, not the lock).
pub fn plan(p: Pinning, topo: &ObservedTopology, n: usize) -> Option<Vec<Option<u32>>> {
    let Some(order) = cpus(p, topo) else {
        return Some(vec![None; n]);
    };
    (n <= order.len()).then(|| order.into_iter().take(n).map(Some).collect())
}

/// The online CPUs a pinning places threads on, in placement order; `None` for
/// [`Pinning::None`] (the scheduler's choice, any CPU).
pub fn cpus(p: Pinning, topo: &ObservedTopology) -> Option<Vec<u32>> {
    let order: Vec<u32> = match p {
        Pinning::None => return None,
        Pinning::PerCore => per_core_order(&topo.core_siblings, |_| true),
        Pinning::SmtSiblings => topo.core_siblings.iter().flatten().copied().collect(),
        Pinning::OneNode => {
            let node0 = topo.numa_nodes.first().map(|n| n.cpus.clone());
            let node0 = node0.unwrap_or_else(|| topo.cpus_online.clone());
            per_core_order(&topo.core_siblings, |c| node0.contains(&c))
        }
        Pinning::SpreadNodes => {
            let per_node: Vec<Vec<u32>> = if topo.numa_nodes.is_empty() {
                vec![per_core_order(&topo.core_siblings, |_| true)]
            } else {
                topo.numa_nodes
                    .iter()
                    .map(|node| per_core_order(&topo.core_siblings, |c| node.cpus.contains(&c)))
                    .collect()
            };
            round_robin(&per_node)
        }
    };
    // CPUs named by the topology but offline now (after an SMT toggle) cannot be used.
    Some(
        order
            .into_iter()
            .filter(|c| topo.cpus_online.contains(c))
            .collect(),
    )
}

/// Like [`plan`], but never refuses: when the pinning has fewer CPUs than threads, threads wrap
/// around its CPUs (for mixes of writers and readers that must all run somewhere).
pub fn plan_cycled(p: Pinning, topo: &ObservedTopology, n: usize) -> Vec<Option<u32>> {
    if let Some(v) = plan(p, topo, n) {
        return v;
    }
    let fit = (1..n)
        .rev()
        .find_map(|m| plan(p, topo, m))
        .unwrap_or_default();
    if fit.is_empty() {
        return vec![None; n];
    }
    (0..n).map(|i| fit[i % fit.len()]).collect()
}

/// First thread of every core, then the second thread of every core, …, restricted to `keep`.
fn per_core_order(siblings: &[Vec<u32>], keep: impl Fn(u32) -> bool) -> Vec<u32> {
    let groups: Vec<Vec<u32>> = siblings
        .iter()
        .map(|g| g.iter().copied().filter(|&c| keep(c)).collect::<Vec<_>>())
        .filter(|g| !g.is_empty())
        .collect();
    round_robin(&groups)
}

fn round_robin(lists: &[Vec<u32>]) -> Vec<u32> {
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| lists.iter().filter_map(move |l| l.get(i).copied()))
        .collect()
}

/// Pin the calling thread to `cpu`.
pub fn pin_current_thread(cpu: u32) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu as usize);
    rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{NumaNode, SmtState};

    /// 2 nodes × 2 cores × 2 threads; siblings are n and n+4; node 0 has cores 0 and 1.
    fn topo() -> ObservedTopology {
        ObservedTopology {
            cpu_model: "X".into(),
            cpus_online: (0..8).collect(),
            sockets: 2,
            cores_per_socket: 2,
            threads_per_core: 2,
            core_siblings: vec![vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]],
            smt: SmtState::On,
            virtualization: None,
            numa_nodes: vec![
                NumaNode {
                    id: 0,
                    cpus: vec![0, 1, 4, 5],
                    memory_mib: 1,
                    distances: vec![10, 21],
                },
                NumaNode {
                    id: 1,
                    cpus: vec![2, 3, 6, 7],
                    memory_mib: 1,
                    distances: vec![21, 10],
                },
            ],
        }
    }

    fn cpus(p: Pinning, n: usize) -> Option<Vec<u32>> {
        plan(p, &topo(), n).map(|v| v.into_iter().map(|c| c.unwrap()).collect())
    }

    #[test]
    fn plans_follow_the_topology() {
        assert_eq!(plan(Pinning::None, &topo(), 3), Some(vec![None; 3]));
        assert_eq!(cpus(Pinning::PerCore, 6), Some(vec![0, 1, 2, 3, 4, 5]));
        assert_eq!(cpus(Pinning::SmtSiblings, 3), Some(vec![0, 4, 1]));
        assert_eq!(cpus(Pinning::OneNode, 4), Some(vec![0, 1, 4, 5]));
        assert_eq!(cpus(Pinning::OneNode, 5), None);
        assert_eq!(cpus(Pinning::SpreadNodes, 4), Some(vec![0, 2, 1, 3]));
        assert_eq!(cpus(Pinning::PerCore, 9), None);
        assert_eq!(
            super::cpus(Pinning::OneNode, &topo()),
            Some(vec![0, 1, 4, 5])
        );
        assert_eq!(super::cpus(Pinning::None, &topo()), None);
        let cycled = plan_cycled(Pinning::OneNode, &topo(), 6);
        assert_eq!(cycled, [0, 1, 4, 5, 0, 1].map(Some).to_vec());
    }

    #[test]
    fn offline_cpus_are_skipped() {
        let mut t = topo();
        t.cpus_online = (0..4).collect();
        let p = plan(Pinning::SmtSiblings, &t, 4).unwrap();
        assert_eq!(p, vec![Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(plan(Pinning::SmtSiblings, &t, 5), None);
    }

    #[test]
    fn bare_topology_still_plans() {
        let t = ObservedTopology {
            cpus_online: vec![0, 1],
            core_siblings: vec![vec![0], vec![1]],
            ..Default::default()
        };
        assert_eq!(
            plan(Pinning::SpreadNodes, &t, 2),
            Some(vec![Some(0), Some(1)])
        );
        assert_eq!(plan(Pinning::OneNode, &t, 2), Some(vec![Some(0), Some(1)]));
    }
}

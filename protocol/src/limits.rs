//! The one set of limits on every number a matrix (or an agent's command line) can ask for.
//!
//! The matrix parser checks them with the file, line and key in the error (exit 2 before anything
//! runs); the agent checks the same values again before it runs a plan item, so a plan written by
//! hand, or by a newer harness, gets the same answer. Each limit says why it is where it is.

use std::fmt;

/// An inclusive range a number must lie in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The key as a user writes it (`layers`, `memory_mib`).
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    /// Why the range is what it is, for the error message.
    pub why: &'static str,
}

/// A number outside its limit, or two numbers that do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{key} = {value}: must be {min}..={max} ({why})")]
    Range {
        key: &'static str,
        value: u64,
        min: u64,
        max: u64,
        why: &'static str,
    },
    #[error("{key} = {value} with {other_key} = {other}: {why}")]
    Relation {
        key: &'static str,
        value: u64,
        other_key: &'static str,
        other: u64,
        why: &'static str,
    },
    #[error("{key}: {len} values, at most {max} ({why})")]
    TooMany {
        key: &'static str,
        len: usize,
        max: usize,
        why: &'static str,
    },
    #[error("{key}: needs at least one value")]
    Empty { key: &'static str },
}

impl Limit {
    /// `Ok(value)` when `min <= value <= max`.
    pub fn check<T: Copy + Into<u64>>(&self, value: T) -> Result<T, LimitError> {
        let v: u64 = value.into();
        if (self.min..=self.max).contains(&v) {
            Ok(value)
        } else {
            Err(LimitError::Range {
                key: self.key,
                value: v,
                min: self.min,
                max: self.max,
                why: self.why,
            })
        }
    }

    /// Check every value of a list, and the list's length against `max_len`.
    pub fn check_all<T: Copy + Into<u64>>(
        &self,
        values: &[T],
        max_len: usize,
    ) -> Result<(), LimitError> {
        if values.len() > max_len {
            return Err(LimitError::TooMany {
                key: self.key,
                len: values.len(),
                max: max_len,
                why: "each value multiplies the cells or points of a run",
            });
        }
        values.iter().try_for_each(|v| self.check(*v).map(|_| ()))
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}..={}", self.key, self.min, self.max)
    }
}

/// Image layers per container. overlayfs stacks up to 500, but mount(2) copies one page of
/// options and every lowerdir must fit in it (docker caps images at 128 layers for the same
/// reason); the agent's layer paths fit 256 in a page.
pub const LAYERS: Limit = Limit {
    key: "layers",
    min: 1,
    max: 256,
    why: "every lowerdir must fit in mount(2)'s one-page option string",
};

/// Containers per run: each gets 65536 host ids of its own, and they must fit in 32 bits.
pub const CONTAINERS: Limit = Limit {
    key: "containers",
    min: 1,
    max: 4096,
    why: "each container gets its own range of 65536 host ids",
};

/// Worker threads starting containers at once (also at most the containers).
pub const CONCURRENCY: Limit = Limit {
    key: "concurrency",
    min: 1,
    max: 4096,
    why: "one worker thread each",
};

/// Passes per container (containerd does 2).
pub const PASSES: Limit = Limit {
    key: "passes",
    min: 1,
    max: 8,
    why: "containerd does 2; more only repeats the same start",
};

/// Repeats of every cell.
pub const REPEATS: Limit = Limit {
    key: "repeats",
    min: 1,
    max: 100,
    why: "every repeat reruns the whole matrix",
};

/// Sockets, cores per socket and threads per core of a guest, each.
pub const TOPOLOGY_PART: Limit = Limit {
    key: "sockets/cores/threads",
    min: 1,
    max: 256,
    why: "QEMU's x86 machines stop far below that",
};

/// vCPUs of a guest (sockets × cores × threads).
pub const VCPUS: Limit = Limit {
    key: "vCPUs",
    min: 1,
    max: 256,
    why: "the most mmx starts; TCG runs each vCPU as a host thread",
};

/// Guest memory, and the memory of each NUMA node.
pub const MEMORY_MIB: Limit = Limit {
    key: "memory_mib",
    min: 128,
    max: 1 << 20,
    why: "a guest needs 128 MiB to unpack its initramfs; 1 TiB is past any test machine",
};

/// A NUMA node's memory (a node may be small, never empty).
pub const NODE_MEMORY_MIB: Limit = Limit {
    key: "numa memory_mib",
    min: 1,
    max: 1 << 20,
    why: "a node holds some memory; 1 TiB is past any test machine",
};

/// NUMA nodes of a guest.
pub const NUMA_NODES: Limit = Limit {
    key: "numa",
    min: 1,
    max: 64,
    why: "QEMU's limit is 128; more than 64 is a typo",
};

/// A NUMA distance (ACPI SLIT: 10 is local, 255 unreachable, below 10 is invalid).
pub const NUMA_DISTANCE: Limit = Limit {
    key: "distances",
    min: 10,
    max: 255,
    why: "ACPI SLIT distances are 10 (local) to 255",
};

/// Threads of one lock-benchmark point.
pub const BENCH_THREADS: Limit = Limit {
    key: "threads",
    min: 1,
    max: 1024,
    why: "one pinned thread per CPU at most makes sense",
};

/// Warm-up before a lock-benchmark window.
pub const WARMUP_MS: Limit = Limit {
    key: "warmup_ms",
    min: 0,
    max: 60_000,
    why: "a minute of warm-up per point is plenty",
};

/// One lock-benchmark window.
pub const DURATION_MS: Limit = Limit {
    key: "duration_ms",
    min: 1,
    max: 600_000,
    why: "ten minutes per point is past any useful window",
};

/// Bystander reader threads of mount-lock and storm.
pub const READERS: Limit = Limit {
    key: "readers",
    min: 0,
    max: 256,
    why: "one thread each",
};

/// Mounts in the table before (or while) a benchmark reads it.
pub const TABLE_SIZE: Limit = Limit {
    key: "table_sizes",
    min: 0,
    max: 100_000,
    why: "every mount costs kernel memory; 100k already takes minutes to build under TCG",
};

/// Values in one sweep list (thread counts, table sizes, layers of a mounts scenario …).
pub const MAX_SWEEP: usize = 64;

/// The longest result line, in bytes: [`LINE_PREFIX`](crate::LINE_PREFIX) and JSON, without
/// its newline. The largest result the agent sends is a mounts result with one latency per
/// container (at most 4,096) and its metrics, tens of KiB; a MiB leaves room and still bounds
/// what one line costs the harness. The agent never writes a longer one; the harness reads a
/// longer one as a protocol violation, never as a result.
pub const RESULT_LINE_MAX: usize = 1 << 20;

/// Cells one matrix may expand to.
pub const MAX_CELLS: usize = 100_000;

/// A TCP port.
pub const PORT: Limit = Limit {
    key: "port",
    min: 1,
    max: 65_535,
    why: "a TCP port",
};

/// Seconds a plan item may take before the agent stops it.
pub const ITEM_TIMEOUT_S: Limit = Limit {
    key: "timeout_s",
    min: 1,
    max: 7 * 24 * 3600,
    why: "a week",
};

/// Seconds a runtime may take to answer one job before the agent kills it.
pub const RUNTIME_JOB_TIMEOUT_S: Limit = Limit {
    key: "job_timeout_s",
    min: 1,
    max: 3600,
    why: "a mount job that takes an hour is a hang",
};

/// `a <= b` for two keyed values, or a [`LimitError::Relation`] with `why`.
pub fn at_most(
    (key, value): (&'static str, u64),
    (other_key, other): (&'static str, u64),
    why: &'static str,
) -> Result<(), LimitError> {
    if value <= other {
        Ok(())
    } else {
        Err(LimitError::Relation {
            key,
            value,
            other_key,
            other,
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_name_the_key_the_bounds_and_why() {
        assert_eq!(LAYERS.check(1u32), Ok(1));
        assert_eq!(LAYERS.check(256u32), Ok(256));
        let e = LAYERS.check(257u32).unwrap_err().to_string();
        assert_eq!(
            e,
            "layers = 257: must be 1..=256 (every lowerdir must fit in mount(2)'s one-page option string)"
        );
        assert!(LAYERS.check(0u32).is_err());
        assert!(MEMORY_MIB.check(u64::MAX).is_err());
    }

    #[test]
    fn lists_are_checked_value_by_value_and_by_length() {
        assert!(BENCH_THREADS.check_all(&[1u32, 2, 4], MAX_SWEEP).is_ok());
        assert!(BENCH_THREADS.check_all(&[1u32, 0], MAX_SWEEP).is_err());
        let long: Vec<u32> = (1..=65).collect();
        assert!(matches!(
            BENCH_THREADS.check_all(&long, MAX_SWEEP),
            Err(LimitError::TooMany { len: 65, .. })
        ));
    }

    #[test]
    fn relations_name_both_keys() {
        let e = at_most(
            ("concurrency", 30),
            ("containers", 20),
            "a worker per container at most",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "concurrency = 30 with containers = 20: a worker per container at most"
        );
    }
}

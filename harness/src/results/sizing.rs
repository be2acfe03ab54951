//! How a boot's benchmarks were sized, and why: decided once per boot ([`Sizing::decide`]),
//! recorded on the boot and on every cell's provenance, shown by the reports.
//!
//! Under single-threaded TCG the guest's vCPUs take turns, so a contention number measures
//! QEMU's time slicing (the reports grey them as serialized). There the benchmarks are *sized*
//! by default: what stays real runs (a single reader's mountinfo read time against the table's
//! size), and the contention code runs as a short smoke (every lock and strategy, minimal
//! windows) so it is still exercised. KVM, tcg-mt, the local machine and hosts run the full
//! sweeps, and so does TCG when asked (`--full-bench`, `[run] tcg_benchmarks = "full"`).

use serde::{Deserialize, Serialize};

use super::Accel;

/// `[run] tcg_benchmarks` in the matrix: what a single-threaded TCG guest runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcgBenchmarks {
    /// The parts that mean something there, and a smoke of the rest (the default).
    #[default]
    Sized,
    /// The full sweeps, as under KVM.
    Full,
}

/// What ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchSize {
    /// Sized for single-threaded TCG.
    Sized,
    /// The matrix's sweeps as written.
    Full,
}

/// Why, one reason per way the decision can go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SizingReason {
    /// Single-threaded TCG: the vCPUs take turns.
    SerializedVcpus,
    /// KVM, tcg-mt, the local machine or a host: the CPUs run at once.
    ParallelCpus,
    /// `--full-bench` on the command line.
    FullBenchFlag,
    /// `[run] tcg_benchmarks = "full"` in the matrix.
    MatrixFull,
}

/// A boot's sizing and its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sizing {
    pub size: BenchSize,
    pub reason: SizingReason,
}

impl Sizing {
    /// The one decision: full wherever the CPUs run at once; under single-threaded TCG,
    /// sized unless the command line (`full_bench`) or the matrix asks for the full sweeps.
    pub fn decide(accel: Accel, matrix: TcgBenchmarks, full_bench: bool) -> Sizing {
        let (size, reason) = if !accel.vcpus_serialized() {
            (BenchSize::Full, SizingReason::ParallelCpus)
        } else if full_bench {
            (BenchSize::Full, SizingReason::FullBenchFlag)
        } else if matrix == TcgBenchmarks::Full {
            (BenchSize::Full, SizingReason::MatrixFull)
        } else {
            (BenchSize::Sized, SizingReason::SerializedVcpus)
        };
        Sizing { size, reason }
    }

    pub fn is_sized(self) -> bool {
        self.size == BenchSize::Sized
    }

    /// One line for the reports: `sized for TCG: …` or `full: …`.
    pub fn describe(self) -> &'static str {
        match self.reason {
            SizingReason::SerializedVcpus => {
                "sized for TCG: vCPUs take turns, so the contention sweeps ran as a short smoke \
                 (minimal windows, one storm container per thread, one reader) and the mount \
                 table's read time against its size is the real curve; --full-bench or \
                 [run] tcg_benchmarks = \"full\" runs them in full"
            }
            SizingReason::ParallelCpus => "full: the CPUs run at once",
            SizingReason::FullBenchFlag => "full: asked with --full-bench",
            SizingReason::MatrixFull => "full: asked with [run] tcg_benchmarks = \"full\"",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_serialized_vcpus_are_sized_and_asking_runs_the_full_sweeps() {
        let d = Sizing::decide;
        assert_eq!(
            d(Accel::Tcg, TcgBenchmarks::Sized, false),
            Sizing {
                size: BenchSize::Sized,
                reason: SizingReason::SerializedVcpus
            }
        );
        for accel in [
            Accel::Kvm,
            Accel::TcgMt,
            Accel::Metal,
            Accel::Vm(protocol::Hypervisor::Kvm),
        ] {
            let s = d(accel, TcgBenchmarks::Sized, false);
            assert_eq!(s.reason, SizingReason::ParallelCpus, "{accel:?}");
            assert!(!s.is_sized());
        }
        assert_eq!(
            d(Accel::Tcg, TcgBenchmarks::Sized, true).reason,
            SizingReason::FullBenchFlag
        );
        assert_eq!(
            d(Accel::Tcg, TcgBenchmarks::Full, false).reason,
            SizingReason::MatrixFull
        );
        // The flag wins over the matrix: it is what the user asked for last.
        assert_eq!(
            d(Accel::Tcg, TcgBenchmarks::Full, true).reason,
            SizingReason::FullBenchFlag
        );
        assert!(d(Accel::Tcg, TcgBenchmarks::Sized, false)
            .describe()
            .starts_with("sized for TCG: "));
        assert!(d(Accel::Kvm, TcgBenchmarks::Sized, false)
            .describe()
            .starts_with("full: "));
    }
}

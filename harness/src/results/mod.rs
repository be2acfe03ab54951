//! `run.json`: everything one `mmx run` learned, in one document that reports, `mmx compare` and
//! `mmx merge` read back without the run directory's other files.
//!
//! A run ([`run`]) has cells ([`cell`]: one per matrix cell: outcome, evidence, metrics, the
//! known answer it was judged by, caveats) and boots ([`boot`]: one per guest boot or host visit:
//! how it ended, its logs, timings, probes and observed topology); every number carries where it
//! came from ([`provenance`]: backend, accelerator, kernel, runtime).
//!
//! This is the ground floor (ARCHITECTURE.md, "Floors"): it imports only `protocol`, `cell`,
//! `rundir` and `oneline`. The matrix, the runtime builds and the runner convert what they
//! parse or measure into these types; nothing here knows how a run is made.

pub mod boot;
pub mod cell;
pub mod kernel_warning;
pub mod provenance;
pub mod run;
pub mod sizing;

pub use boot::{
    BootEnd, BootRecord, BootTimeline, ChannelStats, Deadline, GuestRun, InfraCause, ItemSpan,
    TimeKind, Violation, ViolationKind, SUMMARY_CHARS,
};
pub use cell::{Caveats, CellRecord, Expectation, ExpectationCheck, UnsupportedPoints, SERIALIZED};
pub use kernel_warning::{CellFailure, KernelWarning};
pub use provenance::{
    Accel, BackendKind, CellRuntime, GoProgram, LockSubstitution, PackageId, PatchId, Provenance,
    RuntimeProvenance,
};
pub use run::{
    run_json_path, HostInfo, RunRecord, RuntimeBuild, RuntimeRecord, RUN_SCHEMA_VERSION,
};
pub use sizing::{BenchSize, Sizing, SizingReason, TcgBenchmarks};

pub use crate::rundir::RunDir;

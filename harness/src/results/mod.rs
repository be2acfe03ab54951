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
pub mod provenance;
pub mod run;

pub use boot::{
    BootEnd, BootRecord, ChannelStats, Deadline, GuestRun, InfraCause, Violation, ViolationKind,
    SUMMARY_CHARS,
};
pub use cell::{Caveats, CellRecord, Expectation, ExpectationCheck, UnsupportedPoints, SERIALIZED};
pub use provenance::{
    Accel, BackendKind, CellRuntime, LockSubstitution, PackageId, PatchId, Provenance,
    RuntimeProvenance,
};
pub use run::{
    run_json_path, HostInfo, RunRecord, RuntimeBuild, RuntimeRecord, RUN_SCHEMA_VERSION,
};

pub use crate::rundir::RunDir;

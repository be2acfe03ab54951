//! The one way mmx starts a child process — QEMU, the local agent, ssh, hooks, make, git, go,
//! tar, mkfs, objcopy, the probes of QEMU and KVM — and the one way it stops one.
//!
//! - [`spawn`]: the child leads a process group of its own, gets the death signal (with the
//!   `getppid` check) and a warden that kills its group if mmx is killed, so nothing it starts
//!   outlives mmx;
//! - [`lines`]: its output read as bounded lines, whatever it sends;
//! - [`Stop`]: graceful, then forceful, always applied to the whole group;
//! - [`watch`]: the one `poll` loop that feeds a child, reads it and stops it, under the owner's
//!   verdicts ([`Watch`]); the boot supervisor is this loop with the results stream;
//! - [`Run`]: a command to its end under a deadline or a [`Cancel`].
//!
//! A ground-floor room: it knows nothing of boots, kernels or runs.

pub mod cancel;
pub mod lines;
pub mod run;
pub mod spawn;
pub mod stop;
pub mod watch;

pub use cancel::Cancel;
pub use lines::{Bounds, Line, LineReader};
pub use run::{Output, Run, RunError, Stream};
pub use spawn::{spawn, Child};
pub use stop::Stop;
pub use watch::{watch, Input, Pipe, SpawnError, Watch, Watched};

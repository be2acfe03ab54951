//! mmx: which way of building an idmapped overlay rootfs works on this kernel, filesystem and
//! CPU topology, and how fast is it under contention.
//!
//! Data flows one way: [`matrix`] → cells ([`cell`]) → boots ([`backend`]) → results
//! ([`results`]) → report. ARCHITECTURE.md at the repository root tells the whole story.

pub mod agent;
pub mod backend;
pub mod bisect;
pub mod cell;
pub mod compare;
pub mod debian;
pub mod doctor;
pub mod events;
pub mod git;
pub mod init;
pub mod initramfs;
pub mod kernels;
pub mod matrix;
pub mod merge;
pub mod oneline;
pub mod proc;
pub mod report;
pub mod results;
pub mod run;
pub mod rundir;
pub mod runtimes;
pub mod summary;
pub mod terminal;
#[cfg(test)]
mod test_support;
pub mod timing;

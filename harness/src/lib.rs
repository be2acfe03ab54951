//! mmx: which way of building an idmapped overlay rootfs works on this kernel, filesystem and
//! CPU topology, and how fast is it under contention.
//!
//! Data flows one way: [`matrix`] → cells → boots ([`backend`]) → results ([`results`]) → report.

pub mod agent;
pub mod backend;
pub mod compare;
pub mod initramfs;
pub mod kernels;
pub mod matrix;
pub mod merge;
pub mod report;
pub mod results;
pub mod run;
pub mod runtimes;
pub mod summary;

//! The lock benchmark's C reference loop (src/lockbench/c/spin.c, built by build.rs), behind a
//! safe wrapper: the one foreign call of the agent, and like every other `unsafe` it lives in
//! `sys`.

extern "C" {
    /// `iters` × (exchange, increment, release) on the C file's own static lock and counter.
    fn mmx_spin_c(iters: u64) -> u64;
}

/// Run the C loop `iters` times; returns its counter (so the work cannot be optimised away).
pub fn spin(iters: u64) -> u64 {
    // SAFETY: a plain C function over its own static data; no pointers cross, and the loop is
    // safe to run from any thread (its lock is the one it measures).
    unsafe { mmx_spin_c(iters) }
}

//! Compiles the lock benchmark's C reference loop (src/lockbench/c/spin.c) into the agent, so
//! `mmx-agent lockbench --compare-c` times Rust and C in one run. Always at -O2, whatever the
//! profile: it is a yardstick, and a -O0 yardstick measures nothing.

fn main() {
    println!("cargo:rerun-if-changed=src/lockbench/c/spin.c");
    cc::Build::new()
        .file("src/lockbench/c/spin.c")
        .opt_level(2)
        .flag_if_supported("-std=c11")
        .warnings(true)
        .compile("mmx_spin");
}

//! Drive the kernels module without the `mmx` binary, and time the per-guest path.
//!
//! ```text
//! cargo run -p harness --example kernels -- lock|fetch [NAMES]|list
//! cargo run -p harness --release --example kernels -- initrd debian-6.1 AGENT OUT [--repeat N]
//! ```
//! `initrd` runs what a backend does before each boot: `ensure` + `base_archive` +
//! `write_initrd`, and prints how long each took.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use harness::debian::{Cache, LockDocument};
use harness::initramfs::{base_archive, write_initrd};
use harness::kernels::ModuleFeature;
use harness::kernels::{ensure, load_recipes, run_cmd, KernelsCmd, LockFile};

#[derive(Parser)]
enum Args {
    #[command(flatten)]
    Kernels(KernelsCmd),
    /// Build one boot's initrd with an empty plan, timing each step.
    Initrd {
        name: String,
        agent: PathBuf,
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        repeat: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // What `mmx` shows: notes and answers through the terminal subscriber.
    let terminal = harness::run::Bus::new(vec![Box::new(harness::terminal::Terminal::new())]);
    match Args::parse() {
        Args::Kernels(cmd) => {
            let failed = run_cmd(cmd, &root, &terminal)?;
            for e in &failed {
                eprintln!("mmx: {e}");
            }
            if !failed.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Args::Initrd {
            name,
            agent,
            out,
            repeat,
        } => {
            let cache = Cache::from_env()?;
            for i in 0..repeat {
                let t0 = Instant::now();
                let recipes = load_recipes(&root.join("kernels"))?;
                let lock = LockFile::load(&root.join("kernels/kernels.lock"))?;
                let recipe = recipes
                    .iter()
                    .find(|r| r.name == name)
                    .ok_or_else(|| anyhow::anyhow!("no recipe {name}"))?;
                let t1 = Instant::now();
                let kernel = ensure(recipe, &lock, &cache, &terminal)?;
                let t2 = Instant::now();
                let base = base_archive(&agent, &kernel, &ModuleFeature::ALL, &cache)?;
                let t3 = Instant::now();
                let plan = protocol::Plan {
                    schema_version: protocol::SCHEMA_VERSION,
                    boot_id: format!("{name}/example"),
                    scratch_dir: "/scratch".into(),
                    scratch_disks: Vec::new(),
                    modules: kernel
                        .modules
                        .iter()
                        .map(|m| m.initramfs_path.clone())
                        .collect(),
                    probe: true,
                    items: vec![],
                    runtimes: vec![],
                };
                write_initrd(&base, None, &plan, &out)?;
                let t4 = Instant::now();
                let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
                println!(
                    "#{i} {name} {}: recipes+lock {:.1} ms, ensure {:.1} ms ({}), base {:.1} ms ({} bytes), write_initrd {:.1} ms, total {:.1} ms",
                    kernel.release,
                    ms(t0, t1),
                    ms(t1, t2),
                    if kernel.timings.cached { "cached" } else { "fetched" },
                    ms(t2, t3),
                    std::fs::metadata(&base).map_or(0, |m| m.len()),
                    ms(t3, t4),
                    ms(t0, t4),
                );
                if i == 0 {
                    println!("  vmlinuz {}", kernel.vmlinuz.display());
                    for m in &kernel.modules {
                        println!(
                            "  {} {:?} compressed={} for {:?}",
                            m.name, m.initramfs_path, m.compressed, m.needed_for
                        );
                    }
                    println!(
                        "  builtin: {:?}; unavailable: {:?}",
                        kernel.builtin, kernel.unavailable
                    );
                }
            }
            Ok(())
        }
    }
}

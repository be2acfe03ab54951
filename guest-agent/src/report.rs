//! Human-readable tables for the CLI (`probe`, `mounts` without `--json`). Pure functions over
//! protocol types.

use std::fmt::Write;

use protocol::{Capabilities, CellDetail, CellResult};

/// One line per probe: feature, verdict, evidence.
pub fn capabilities_table(c: &Capabilities) -> String {
    let mut s = format!("kernel {} · probed on {}\n", c.kernel_release, c.probed_fs);
    for p in &c.probes {
        let verdict = if p.supported { "yes" } else { "no" };
        let ev = p
            .evidence
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let _ = writeln!(s, "  {:<24} {:<4} {ev}", p.feature.as_str(), verdict);
    }
    s
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// The outcome, latency, counts, time split and checks of one mounts run.
pub fn mounts_table(r: &CellResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<12} {} {}", "cell", r.cell_id, r.outcome.symbol());
    let _ = writeln!(s, "{:<12} {}", "outcome", r.outcome);
    if let Some(e) = &r.evidence {
        let _ = writeln!(s, "{:<12} {e}", "evidence");
    }
    let Some(CellDetail::Mounts(m)) = &r.detail else {
        return s;
    };
    let sc = &m.scenario;
    let _ = writeln!(
        s,
        "{:<12} {} L={} C={} P={} J={} on {}",
        "scenario", sc.strategy, sc.layers, sc.containers, sc.passes, sc.concurrency, m.layers_fs
    );
    if let Some(l) = &m.latency {
        let _ = writeln!(
            s,
            "{:<12} p50 {}  p99 {}  max {}  (per container, {} passes, n={})",
            "latency",
            ms(l.p50 as u64),
            ms(l.p99 as u64),
            ms(l.max as u64),
            sc.passes,
            l.n
        );
    }
    let o = &m.mount_ops;
    let formula = o.expected_ops.map_or_else(
        || "no formula: a runtime".to_owned(),
        |e| format!("formula {e}"),
    );
    let _ = writeln!(
        s,
        "{:<12} {} ({} attach + {} detach; {formula}), teardown {}, peak {} per container ({}), leaked {}",
        "mount ops", o.ops, o.attachments, o.detachments, o.teardown_detachments,
        o.peak_extra_mounts, o.cross_check_method, o.leaked
    );
    if let Some(h) = &m.runtime {
        let _ = writeln!(s, "{:<12} {} {}", "runtime", h.runtime, h.version);
    }
    let busy = m.syscall_us + m.overhead_us;
    let pct = |v: u64| {
        if busy == 0 {
            0.0
        } else {
            100.0 * v as f64 / busy as f64
        }
    };
    let _ = writeln!(
        s,
        "{:<12} wall {}; worker time {}: mount syscalls {} ({:.1}%), agent overhead {} ({:.1}%)",
        "time",
        ms(m.wall_us),
        ms(busy),
        ms(m.syscall_us),
        pct(m.syscall_us),
        ms(m.overhead_us),
        pct(m.overhead_us)
    );
    for c in &m.checks {
        let _ = writeln!(
            s,
            "{:<12} {} {:<24} {}",
            "check",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    s
}

//! QEMU's command line, from small pure functions, one per concern, each returning the
//! arguments it owns. Flags that only make sense together are produced (and explained) together.

use std::ffi::OsString;
use std::path::Path;

use crate::matrix::Topology;
use crate::results::Accel;

/// Kernel command line every guest gets. `console=ttyS0` puts the kernel log on the first serial
/// port (the console log); `panic=-1` is explained in [`kernel_args`]. `no_timer_check`: the
/// IO-APIC timer check (arch/x86/kernel/apic/io_apic.c, `timer_irq_works`) busy-waits for ticks
/// and panics with "IO-APIC + timer doesn't work!" when a loaded TCG host starves the vCPU; the
/// parameter makes `timer_irq_works` trust the timer, as cloud and VM images do.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 no_timer_check";

/// Device node the guest sees the `index`-th scratch disk as: `/dev/vda`, `/dev/vdb`, … The
/// disks are the only virtio-blk devices, given in order on the command line, so QEMU puts
/// them in PCI slots in that order and the kernel probes and names them in it (a mix-up would
/// not go unseen: mounting an image as another filesystem fails, and the agent measures each
/// directory's filesystem with statfs). None past `/dev/vdz`.
pub fn scratch_device(index: usize) -> Option<String> {
    let letter = u8::try_from(index).ok().filter(|i| *i < 26)?;
    Some(format!("/dev/vd{}", char::from(b'a' + letter)))
}

fn os(parts: &[&str]) -> Vec<OsString> {
    parts.iter().map(OsString::from).collect()
}

/// Escape a value for QEMU's `key=value,key=value` option syntax: a comma is written twice.
pub fn opt_escape(value: &Path) -> OsString {
    let s = value.to_string_lossy();
    OsString::from(s.replace(',', ",,"))
}

/// Machine, accelerator and CPU model, plus the flags every mmx guest shares:
/// `-nodefaults` (no default NIC, VGA, monitor or serial: every device is ours), no display,
/// and no user config files that could change the machine behind our back.
///
/// KVM runs the host's CPU model; TCG runs `max`, every feature TCG can emulate, so feature
/// probes see as much as the emulator offers, with Intel's vendor string: TCG's `max` is an AMD
/// family-15 CPU without TOPOEXT (TCG cannot emulate it), so a Linux before the 6.9 topology
/// rewrite reads its SMT siblings from the legacy AMD leaves and sees every thread as a core
/// (QEMU itself warns "This family of AMD CPU doesn't support hyperthreading"); as GenuineIntel
/// the same kernel reads CPUID leaf 0xB, which QEMU fills from `-smp`, and a 6.1 guest asked for
/// `threads=2` sees two threads per core.
///
/// `tcg` runs all vCPUs on one host thread (`thread=single`): on a small CI machine one thread
/// boots no slower than several, but the vCPUs take turns, so nothing measured there is
/// contention. `tcg-mt` (`thread=multi`) gives each vCPU a host thread, only when asked
/// (`--accel tcg-mt`): 120 boots of the three default kernels under it were clean on an idle
/// machine (`benches/boot.rs tcg-mt`), but under load (a CI run's parallel tests) a 7.x guest
/// oopsed in boot (`Oops: int3`, a vCPU running code another had just patched; seen once on 6.12
/// before) and another stalled at 2 s of boot until its deadline (QEMU 7.2). The console alarms
/// end such a boot as `panic` with the line.
pub fn machine_args(accel: Accel) -> Vec<OsString> {
    let (accel, cpu) = match accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::TcgMt => ("tcg,thread=multi", "max,vendor=GenuineIntel"),
        // Metal and VMs never reach QEMU; asking TCG for them is the safe reading.
        Accel::Tcg | Accel::Metal | Accel::Vm(_) | Accel::Unmeasured => {
            ("tcg,thread=single", "max,vendor=GenuineIntel")
        }
    };
    os(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        "q35",
        "-accel",
        accel,
        "-cpu",
        cpu,
    ])
}

/// vCPUs, their sockets/cores/threads, memory, and NUMA nodes.
///
/// Each NUMA node gets its own RAM backend (`memory-backend-ram`, `memdev=`): the legacy
/// `mem=` form is refused by newer machine types. Distances are given for every ordered pair
/// of distinct nodes (local distance is always 10 and QEMU rejects anything else).
pub fn cpu_args(topology: &Topology) -> Vec<OsString> {
    let Topology {
        name: _,
        sockets,
        cores,
        threads,
        memory_mib,
        numa,
    } = topology;
    let vcpus = sockets * cores * threads;
    let mut args = os(&[
        "-m",
        &format!("{memory_mib}M"),
        "-smp",
        &format!("cpus={vcpus},sockets={sockets},cores={cores},threads={threads}"),
    ]);
    for (i, node) in numa.iter().enumerate() {
        args.extend(os(&[
            "-object",
            &format!("memory-backend-ram,id=mem{i},size={}M", node.memory_mib),
        ]));
        let mut spec = format!("node,nodeid={i}");
        for range in cpu_ranges(&node.cpus) {
            spec.push_str(&format!(",cpus={range}"));
        }
        spec.push_str(&format!(",memdev=mem{i}"));
        args.extend(os(&["-numa", &spec]));
    }
    for (src, node) in numa.iter().enumerate() {
        let Some(distances) = &node.distances else {
            continue;
        };
        for (dst, val) in distances.iter().enumerate() {
            if dst != src {
                args.extend(os(&[
                    "-numa",
                    &format!("dist,src={src},dst={dst},val={val}"),
                ]));
            }
        }
    }
    args
}

/// `[0,1,2,5]` → `["0-2", "5"]`: QEMU's `cpus=` takes one range per occurrence.
pub fn cpu_ranges(cpus: &[u32]) -> Vec<String> {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut iter = sorted.into_iter();
    let Some(mut start) = iter.next() else {
        return out;
    };
    let mut end = start;
    let mut push = |s: u32, e: u32| {
        out.push(if s == e {
            s.to_string()
        } else {
            format!("{s}-{e}")
        })
    };
    for c in iter {
        if c == end + 1 {
            end = c;
        } else {
            push(start, end);
            start = c;
            end = c;
        }
    }
    push(start, end);
    out
}

/// Kernel, initrd and command line.
///
/// `panic=-1` (in [`BASE_CMDLINE`]) makes a panicking kernel reboot at once instead of sitting
/// in its panic loop, and `-no-reboot` turns that reboot into QEMU exiting: a panic ends the
/// guest within milliseconds, with the panic on the console. Either flag alone leaves a hung or
/// rebooting guest for the watchdogs to find.
pub fn kernel_args(vmlinuz: &Path, initrd: &Path, extra_cmdline: &str) -> Vec<OsString> {
    let mut cmdline = BASE_CMDLINE.to_string();
    if !extra_cmdline.trim().is_empty() {
        cmdline.push(' ');
        cmdline.push_str(extra_cmdline.trim());
    }
    vec![
        "-kernel".into(),
        vmlinuz.into(),
        "-initrd".into(),
        initrd.into(),
        "-append".into(),
        cmdline.into(),
        "-no-reboot".into(),
    ]
}

/// Two serial ports, each a socket the harness reads (`backend::supervise`): ttyS0 is the
/// console (kernel log and the agent's diagnostics), ttyS1 carries result lines only. ttyS1 is
/// a plain ISA 8250, which every kernel mmx boots has built in, so results flow before (and
/// without) any module load.
///
/// Why an inherited socket (`socket,fd=N`, one end of a `socketpair` QEMU inherits as `N`):
/// a `file` chardev lets a flooding guest make QEMU write gigabytes to disk before anyone
/// reads them; a `pipe` chardev needs FIFOs on disk that QEMU opens read-write (so the reader
/// never sees EOF) and a path per boot; a unix socket with `server=on,wait=on` needs a path
/// (at most 108 bytes, and cache dirs can be deep), a connect-retry loop and a socket file to
/// clean up. The socket pair has no name, no race and no leftover, and a reader that stops
/// reading stalls the guest's UART instead of growing anything: QEMU 7.2+ takes an already
/// connected socket as `fd=`.
pub fn serial_args(console_fd: i32, results_fd: i32) -> Vec<OsString> {
    vec![
        "-chardev".into(),
        format!("socket,id=console,fd={console_fd}").into(),
        "-serial".into(),
        "chardev:console".into(),
        "-chardev".into(),
        format!("socket,id=results,fd={results_fd}").into(),
        "-device".into(),
        "isa-serial,chardev=results".into(),
    ]
}

/// The `index`-th scratch disk as a virtio-blk device ([`scratch_device`] in the guest). The
/// image is a throwaway copy, so `cache=unsafe` (host page cache, flushes ignored) costs nothing
/// and keeps the guest's fsyncs from reaching the host disk.
pub fn disk_args(image: &Path, index: usize) -> Vec<OsString> {
    let mut drive = OsString::from("file=");
    drive.push(opt_escape(image));
    drive.push(format!(
        ",format=raw,if=none,id=scratch{index},cache=unsafe"
    ));
    vec![
        "-drive".into(),
        drive,
        "-device".into(),
        format!("virtio-blk-pci,drive=scratch{index}").into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::NumaSpec;

    fn strs(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    fn topo(sockets: u32, cores: u32, threads: u32, numa: Vec<NumaSpec>) -> Topology {
        Topology {
            name: "t".into(),
            sockets,
            cores,
            threads,
            memory_mib: 1024,
            numa,
        }
    }

    #[test]
    fn machine_picks_cpu_model_with_accelerator() {
        let kvm = strs(&machine_args(Accel::Kvm));
        assert!(kvm.windows(2).any(|w| w == ["-accel", "kvm"]));
        assert!(kvm.windows(2).any(|w| w == ["-cpu", "host"]));
        let mt = strs(&machine_args(Accel::TcgMt));
        assert!(mt.windows(2).any(|w| w == ["-accel", "tcg,thread=multi"]));
        let tcg = strs(&machine_args(Accel::Tcg));
        assert!(tcg.windows(2).any(|w| w == ["-accel", "tcg,thread=single"]));
        assert!(tcg
            .windows(2)
            .any(|w| w == ["-cpu", "max,vendor=GenuineIntel"]));
        assert_eq!(tcg[0], "-nodefaults");
    }

    #[test]
    fn smp_without_numa() {
        assert_eq!(
            strs(&cpu_args(&topo(2, 2, 2, vec![]))),
            ["-m", "1024M", "-smp", "cpus=8,sockets=2,cores=2,threads=2"]
        );
    }

    #[test]
    fn two_numa_nodes_with_memory_and_distances() {
        let nodes = vec![
            NumaSpec {
                cpus: vec![0, 1],
                memory_mib: 512,
                distances: Some(vec![10, 21]),
            },
            NumaSpec {
                cpus: vec![2, 3],
                memory_mib: 512,
                distances: Some(vec![21, 10]),
            },
        ];
        let a = strs(&cpu_args(&topo(2, 2, 1, nodes)));
        assert_eq!(
            a,
            [
                "-m",
                "1024M",
                "-smp",
                "cpus=4,sockets=2,cores=2,threads=1",
                "-object",
                "memory-backend-ram,id=mem0,size=512M",
                "-numa",
                "node,nodeid=0,cpus=0-1,memdev=mem0",
                "-object",
                "memory-backend-ram,id=mem1,size=512M",
                "-numa",
                "node,nodeid=1,cpus=2-3,memdev=mem1",
                "-numa",
                "dist,src=0,dst=1,val=21",
                "-numa",
                "dist,src=1,dst=0,val=21",
            ]
        );
    }

    #[test]
    fn numa_without_distances_leaves_qemu_defaults() {
        let nodes = vec![NumaSpec {
            cpus: vec![0, 2, 3, 5],
            memory_mib: 1024,
            distances: None,
        }];
        let a = strs(&cpu_args(&topo(1, 6, 1, nodes)));
        assert!(a.contains(&"node,nodeid=0,cpus=0,cpus=2-3,cpus=5,memdev=mem0".to_string()));
        assert!(!a.iter().any(|s| s.starts_with("dist,")));
    }

    #[test]
    fn cpu_ranges_merge_runs() {
        assert_eq!(cpu_ranges(&[3, 0, 1, 2, 7, 9, 8]), ["0-3", "7-9"]);
        assert_eq!(cpu_ranges(&[4]), ["4"]);
        assert!(cpu_ranges(&[]).is_empty());
    }

    #[test]
    fn kernel_args_couple_panic_and_no_reboot() {
        let a = strs(&kernel_args(
            Path::new("/k/vmlinuz"),
            Path::new("/i.cpio"),
            " rdinit=/nonexistent ",
        ));
        assert_eq!(
            a,
            [
                "-kernel",
                "/k/vmlinuz",
                "-initrd",
                "/i.cpio",
                "-append",
                "console=ttyS0 panic=-1 no_timer_check rdinit=/nonexistent",
                "-no-reboot"
            ]
        );
        let plain = strs(&kernel_args(Path::new("k"), Path::new("i"), ""));
        assert_eq!(plain[5], BASE_CMDLINE);
    }

    #[test]
    fn serial_ports_console_first_results_second() {
        let a = strs(&serial_args(5, 7));
        assert_eq!(
            a,
            [
                "-chardev",
                "socket,id=console,fd=5",
                "-serial",
                "chardev:console",
                "-chardev",
                "socket,id=results,fd=7",
                "-device",
                "isa-serial,chardev=results",
            ]
        );
    }

    #[test]
    fn disk_is_raw_virtio_blk() {
        let a = strs(&disk_args(Path::new("/tmp/a,b.img"), 1));
        assert_eq!(
            a,
            [
                "-drive",
                "file=/tmp/a,,b.img,format=raw,if=none,id=scratch1,cache=unsafe",
                "-device",
                "virtio-blk-pci,drive=scratch1"
            ]
        );
    }

    #[test]
    fn disks_are_named_in_order() {
        assert_eq!(scratch_device(0).as_deref(), Some("/dev/vda"));
        assert_eq!(scratch_device(2).as_deref(), Some("/dev/vdc"));
        assert_eq!(scratch_device(26), None);
    }
}

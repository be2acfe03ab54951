//! What a kernel must have for mmx: one table ([`NEEDS`]) that is both mmx's kconfig fragment
//! (`config = "minimal"` builds merge it; `mmx kernels config-fragment` prints it) and the list
//! every other kernel's config is checked against before it boots.
//!
//! Each option has a [`Role`]: *boot* options are needed by every guest (a kernel without one is
//! refused, naming the options), *feature* options by some cells only (a filesystem, NUMA
//! topologies, the SMT toggle: a kernel without one is warned about and those cells come out
//! unsupported), *minimal* options are choices for the minimal build alone (speed, comparable
//! numbers) and are never asked of other kernels.
//!
//! The initramfs mmx writes is an uncompressed cpio (see `initramfs.rs`), so no `RD_*`
//! decompressor is needed.

use std::fmt::Write as _;

/// Why an option is in the table, and so what happens to a kernel without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every guest needs it: a kernel without it is refused before booting.
    Boot,
    /// Some cells need it: a kernel without it is reported, those cells are unsupported.
    Feature,
    /// Only the minimal build gets it (never checked on other kernels).
    Minimal,
}

/// One option of the fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Without the `CONFIG_` prefix.
    pub option: &'static str,
    /// The value the fragment sets: `y`, `n`, or a literal (`64`).
    pub value: &'static str,
    pub role: Role,
    /// The module that provides it, when `=m` is enough for a kernel that ships that module
    /// (the initramfs loads it before the agent needs it).
    pub module: Option<&'static str>,
    pub why: &'static str,
}

const fn boot(option: &'static str, why: &'static str) -> Need {
    Need {
        option,
        value: "y",
        role: Role::Boot,
        module: None,
        why,
    }
}

const fn boot_mod(option: &'static str, module: &'static str, why: &'static str) -> Need {
    Need {
        option,
        value: "y",
        role: Role::Boot,
        module: Some(module),
        why,
    }
}

const fn feature(option: &'static str, why: &'static str) -> Need {
    Need {
        option,
        value: "y",
        role: Role::Feature,
        module: None,
        why,
    }
}

const fn feature_mod(option: &'static str, module: &'static str, why: &'static str) -> Need {
    Need {
        option,
        value: "y",
        role: Role::Feature,
        module: Some(module),
        why,
    }
}

const fn minimal(option: &'static str, value: &'static str, why: &'static str) -> Need {
    Need {
        option,
        value,
        role: Role::Minimal,
        module: None,
        why,
    }
}

/// The table. Order is the fragment's order (kconfig does not care; readers do).
pub const NEEDS: &[Need] = &[
    // The machine and the agent's process model.
    boot("64BIT", "the agent is a static x86-64 binary"),
    boot("SMP", "topologies have more than one CPU"),
    boot("BINFMT_ELF", "/init is the agent, an ELF binary"),
    boot("MULTIUSER", "layers are chowned to per-layer ids"),
    boot("FUTEX", "the agent's threads (Rust std) wait on futexes"),
    boot(
        "PRINTK",
        "panics and oopses are detected on the console log",
    ),
    boot("BLK_DEV_INITRD", "the guest's root is mmx's initramfs"),
    boot("DEVTMPFS", "the agent mounts devtmpfs on /dev"),
    boot("PROC_FS", "the agent mounts /proc (mountinfo, thread-self)"),
    boot("SYSFS", "the agent mounts /sys (topology, SMT control)"),
    boot("SHMEM", "tmpfs layers and the initramfs root"),
    boot("TMPFS", "tmpfs layers and the initramfs root"),
    // Console (ttyS0) and results (ttyS1): two ISA 8250 ports.
    boot("TTY", "the serial console"),
    boot(
        "SERIAL_8250",
        "ttyS0 carries the console, ttyS1 the results",
    ),
    boot(
        "SERIAL_8250_CONSOLE",
        "console=ttyS0: the kernel log goes to the console file",
    ),
    // The scratch disk: virtio-blk on virtio-pci.
    boot("PCI", "virtio devices sit on PCI"),
    boot("BLOCK", "the scratch disk"),
    boot_mod("VIRTIO", "virtio", "the scratch disk is virtio-blk"),
    boot_mod("VIRTIO_PCI", "virtio_pci", "the scratch disk is virtio-blk"),
    boot_mod("VIRTIO_BLK", "virtio_blk", "the scratch disk is virtio-blk"),
    // What every cell does.
    boot_mod(
        "OVERLAY_FS",
        "overlay",
        "every mounts cell assembles an overlay rootfs",
    ),
    boot(
        "NAMESPACES",
        "idmapped mounts take their mapping from a user namespace",
    ),
    boot(
        "USER_NS",
        "idmapped mounts take their mapping from a user namespace",
    ),
    // Features some cells need.
    feature("FSNOTIFY", "fanotify"),
    feature("FANOTIFY", "the fanotify mount-events probe"),
    feature(
        "TMPFS_XATTR",
        "overlay's trusted.* xattrs on tmpfs layers (opaque dirs)",
    ),
    feature(
        "TMPFS_POSIX_ACL",
        "ACLs on tmpfs layers, mapped by idmapped mounts",
    ),
    feature("FS_POSIX_ACL", "ACLs on the layers' filesystems"),
    feature_mod("EXT4_FS", "ext4", "ext4 layers"),
    feature("EXT4_FS_POSIX_ACL", "ACLs on ext4 layers"),
    feature_mod("XFS_FS", "xfs", "xfs layers"),
    feature("XFS_POSIX_ACL", "ACLs on xfs layers"),
    feature_mod("BTRFS_FS", "btrfs", "btrfs layers"),
    feature("BTRFS_FS_POSIX_ACL", "ACLs on btrfs layers"),
    feature(
        "ACPI",
        "NUMA topologies: QEMU describes nodes in ACPI SRAT/SLIT",
    ),
    feature("NUMA", "NUMA topologies"),
    feature("X86_64_ACPI_NUMA", "NUMA topologies: nodes from ACPI SRAT"),
    feature("ACPI_NUMA", "NUMA topologies: nodes from ACPI SRAT"),
    feature("SCHED_SMT", "SMT topologies: sibling-aware scheduling"),
    feature("SCHED_MC", "multi-core topologies: core-aware scheduling"),
    feature("HOTPLUG_CPU", "the SMT toggle takes sibling CPUs offline"),
    feature(
        "HOTPLUG_SMT",
        "the SMT toggle (/sys/devices/system/cpu/smt/control)",
    ),
    // The minimal build's own choices (tinyconfig leaves these off or picks otherwise).
    minimal(
        "MODULES",
        "n",
        "everything built in: no modules to ship, load or get wrong",
    ),
    minimal(
        "VIRTIO_MENU",
        "y",
        "the menu VIRTIO_PCI sits in (tinyconfig turns it off)",
    ),
    minimal(
        "BLK_DEV",
        "y",
        "the menu VIRTIO_BLK sits in (tinyconfig turns it off)",
    ),
    minimal(
        "POSIX_TIMERS",
        "y",
        "clock and timer syscalls, as on any distribution kernel",
    ),
    minimal(
        "PRINTK_TIME",
        "y",
        "timestamps on the console log, as distribution kernels have",
    ),
    minimal(
        "PANIC_ON_OOPS",
        "y",
        "an oops ends the guest at once instead of leaving it limping",
    ),
    minimal(
        "CC_OPTIMIZE_FOR_PERFORMANCE",
        "y",
        "-O2 like distribution kernels, so timings compare (tinyconfig optimizes for size)",
    ),
    minimal(
        "SLUB_TINY",
        "n",
        "per-CPU slab caches like distribution kernels (SLUB_TINY serializes allocations)",
    ),
    minimal(
        "KERNEL_GZIP",
        "y",
        "quick to decompress under TCG, and gzip is on every build host (tinyconfig picks xz)",
    ),
    minimal(
        "NO_HZ_IDLE",
        "y",
        "idle vCPUs stop their tick: idle TCG guests cost the host little",
    ),
    minimal(
        "HYPERVISOR_GUEST",
        "y",
        "under KVM: kvmclock and paravirt spinlocks, as distribution kernels have",
    ),
    minimal("PARAVIRT", "y", "under KVM: paravirt operations"),
    minimal("KVM_GUEST", "y", "under KVM: kvmclock, paravirt features"),
    minimal(
        "PARAVIRT_SPINLOCKS",
        "y",
        "under KVM: lock holders preempted by the host do not stall waiters",
    ),
];

/// The fragment as a kconfig file, each option under a comment saying why.
pub fn fragment_text() -> String {
    let mut out = String::from(
        "# mmx's kernel config fragment (`mmx kernels config-fragment`).\n\
         # `config = \"minimal\"` merges it onto tinyconfig; kernels from elsewhere are checked\n\
         # against the boot and feature options (=m is enough where a module is named).\n",
    );
    for (role, title) in [
        (Role::Boot, "Boot: every guest needs these; a kernel without one is refused."),
        (
            Role::Feature,
            "Features: some cells need these; a kernel without one is reported and those cells are unsupported.",
        ),
        (
            Role::Minimal,
            "Minimal build only: choices for speed and comparable numbers; never asked of other kernels.",
        ),
    ] {
        let _ = write!(out, "\n# --- {title}\n");
        for n in NEEDS.iter().filter(|n| n.role == role) {
            let module = n
                .module
                .map(|m| format!(" [=m is enough: module {m}]"))
                .unwrap_or_default();
            let _ = writeln!(out, "# {}{module}", n.why);
            let _ = writeln!(out, "{}", line(n.option, n.value));
        }
    }
    out
}

/// One kconfig line: `CONFIG_X=y`, or `# CONFIG_X is not set` for `n`.
pub fn line(option: &str, value: &str) -> String {
    if value == "n" {
        format!("# CONFIG_{option} is not set")
    } else {
        format!("CONFIG_{option}={value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_option_once_and_upper_case() {
        let mut seen = BTreeSet::new();
        for n in NEEDS {
            assert!(seen.insert(n.option), "{} twice", n.option);
            assert!(
                n.option
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                n.option
            );
            assert!(!n.option.starts_with("CONFIG_"), "{}", n.option);
            assert!(
                n.module.is_none() || n.role != Role::Minimal,
                "{}",
                n.option
            );
        }
    }

    #[test]
    fn modules_named_are_the_ones_the_initramfs_ships() {
        use crate::kernels::ModuleFeature;
        let shipped: BTreeSet<&str> = ModuleFeature::BUILT_IN_SET
            .iter()
            .flat_map(|f| f.modules().iter().copied())
            .collect();
        // virtio_ring is a dependency the module loader finds on its own.
        for n in NEEDS.iter().filter_map(|n| n.module) {
            assert!(shipped.contains(n), "{n} is not in ModuleFeature's set");
        }
    }

    #[test]
    fn the_text_parses_as_a_fragment_with_every_option() {
        let text = fragment_text();
        let parsed = crate::kernels::config::Kconfig::parse_fragment("mmx", &text).unwrap();
        assert_eq!(parsed.len(), NEEDS.len());
        assert!(text.contains("CONFIG_OVERLAY_FS=y"));
        assert!(text.contains("# CONFIG_MODULES is not set"));
    }
}

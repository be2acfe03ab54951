//! Is there a hypervisor under this kernel, and whose? The harness labels local and SSH cells
//! with the answer (`metal` only when no source sees one, else `vm:<vendor>`): numbers from a
//! cloud VM are not numbers from bare metal, and the label must say so without anyone
//! configuring it.
//!
//! Sources, as systemd-detect-virt reads them: the CPUID hypervisor bit (leaf 1, ECX bit 31) and
//! the vendor signature at leaf 0x4000_0000 (0x4000_0100 too, where KVM hides behind Hyper-V
//! enlightenments); DMI `sys_vendor` and `product_name`; `/sys/hypervisor/type` (Xen PV guests
//! need not set the CPUID bit). The reading is a pure function ([`classify`]) of what was read,
//! so tests can hand it any machine.

use std::path::Path;

use protocol::{Hypervisor, Virtualization};

/// What the sources said, read but not judged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// CPUID leaf 1, ECX bit 31.
    pub cpuid_bit: bool,
    /// The 12-byte signatures at leaf 0x4000_0000 and 0x4000_0100 (when the bit is set).
    pub cpuid_vendors: Vec<[u8; 12]>,
    pub dmi_sys_vendor: Option<String>,
    pub dmi_product_name: Option<String>,
    pub sys_hypervisor_type: Option<String>,
}

/// Look at this machine.
pub fn detect() -> Virtualization {
    classify(&read_sources(Path::new("/")))
}

/// Read every source; files below `root` (normally `/`).
pub fn read_sources(root: &Path) -> Sources {
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let (cpuid_bit, cpuid_vendors) = cpuid();
    Sources {
        cpuid_bit,
        cpuid_vendors,
        dmi_sys_vendor: read("sys/class/dmi/id/sys_vendor"),
        dmi_product_name: read("sys/class/dmi/id/product_name"),
        sys_hypervisor_type: read("sys/hypervisor/type"),
    }
}

#[cfg(target_arch = "x86_64")]
fn cpuid() -> (bool, Vec<[u8; 12]>) {
    use core::arch::x86_64::__cpuid;
    let bit = __cpuid(1).ecx & (1 << 31) != 0;
    if !bit {
        return (false, Vec::new());
    }
    let signature = |leaf: u32| {
        let r = __cpuid(leaf);
        let mut sig = [0u8; 12];
        for (i, reg) in [r.ebx, r.ecx, r.edx].into_iter().enumerate() {
            sig[i * 4..i * 4 + 4].copy_from_slice(&reg.to_le_bytes());
        }
        (r.eax, sig)
    };
    let (max_leaf, first) = signature(0x4000_0000);
    let mut sigs = vec![first];
    // Hyper-V enlightenments put "Microsoft Hv" first and the real vendor at 0x4000_0100.
    if max_leaf >= 0x4000_0100 || first == *b"Microsoft Hv" {
        sigs.push(signature(0x4000_0100).1);
    }
    (true, sigs)
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid() -> (bool, Vec<[u8; 12]>) {
    (false, Vec::new())
}

/// The vendor a CPUID signature names.
fn by_signature(sig: &[u8; 12]) -> Option<Hypervisor> {
    Some(match sig {
        b"KVMKVMKVM\0\0\0" | b"Linux KVM Hv" => Hypervisor::Kvm,
        b"TCGTCGTCGTCG" => Hypervisor::QemuTcg,
        b"XenVMMXenVMM" => Hypervisor::Xen,
        b"Microsoft Hv" => Hypervisor::HyperV,
        b"VMwareVMware" => Hypervisor::Vmware,
        b"VBoxVBoxVBox" => Hypervisor::VirtualBox,
        b"bhyve bhyve " => Hypervisor::Bhyve,
        b" lrpepyh  vr" | b"prl hyperv  " => Hypervisor::Parallels,
        b"ACRNACRNACRN" => Hypervisor::Acrn,
        _ => return None,
    })
}

/// The vendor a DMI string names (a prefix, as systemd matches them).
fn by_dmi(s: &str) -> Option<Hypervisor> {
    const TABLE: [(&str, Hypervisor); 11] = [
        ("Firecracker", Hypervisor::Firecracker),
        ("KVM", Hypervisor::Kvm),
        ("QEMU", Hypervisor::QemuTcg),
        ("VMware", Hypervisor::Vmware),
        ("VMW", Hypervisor::Vmware),
        ("innotek GmbH", Hypervisor::VirtualBox),
        ("VirtualBox", Hypervisor::VirtualBox),
        ("Xen", Hypervisor::Xen),
        ("Parallels", Hypervisor::Parallels),
        ("BHYVE", Hypervisor::Bhyve),
        ("Microsoft Corporation", Hypervisor::HyperV),
    ];
    TABLE
        .iter()
        .find(|(prefix, _)| s.starts_with(prefix))
        .map(|(_, h)| *h)
}

fn printable(sig: &[u8; 12]) -> String {
    sig.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect()
}

/// Judge the sources. CPUID names the hypervisor that executes our instructions, so it wins;
/// DMI only refines KVM into Firecracker (both say `KVMKVMKVM`), or answers when CPUID has no
/// bit (Xen PV, some VMware set-ups). DMI `QEMU` without a KVM signature is QEMU emulating (a
/// KVM guest's CPUID says `KVMKVMKVM` and wins).
pub fn classify(s: &Sources) -> Virtualization {
    let mut evidence = Vec::new();
    if s.cpuid_bit {
        evidence.push("cpuid leaf 1: hypervisor bit set".to_string());
    }
    for (i, sig) in s.cpuid_vendors.iter().enumerate() {
        let leaf = if i == 0 { "0x40000000" } else { "0x40000100" };
        evidence.push(format!("cpuid {leaf}: {}", printable(sig)));
    }
    let dmi = [
        ("dmi product_name", &s.dmi_product_name),
        ("dmi sys_vendor", &s.dmi_sys_vendor),
    ];
    for (name, v) in &dmi {
        if let Some(v) = v {
            evidence.push(format!("{name}: {v}"));
        }
    }
    if let Some(t) = &s.sys_hypervisor_type {
        evidence.push(format!("/sys/hypervisor/type: {t}"));
    }

    let cpuid = s
        .cpuid_vendors
        .iter()
        .rev()
        .find_map(by_signature)
        // KVM behind Hyper-V enlightenments: the second leaf is the real one.
        .or_else(|| s.cpuid_vendors.first().and_then(by_signature));
    let from_dmi = dmi.iter().find_map(|(_, v)| v.as_deref().and_then(by_dmi));
    let xen = s.sys_hypervisor_type.as_deref() == Some("xen");
    let hypervisor = match (s.cpuid_bit, cpuid, from_dmi) {
        (true, Some(Hypervisor::Kvm), Some(Hypervisor::Firecracker)) => {
            Some(Hypervisor::Firecracker)
        }
        (true, Some(h), _) => Some(h),
        (true, None, dmi) => Some(dmi.unwrap_or(Hypervisor::Unknown)),
        (false, _, _) if xen => Some(Hypervisor::Xen),
        // DMI `Microsoft Corporation` is also Surface laptops: only with a CPUID bit.
        (false, _, Some(Hypervisor::HyperV)) => None,
        (false, _, dmi) => dmi,
    };
    Virtualization {
        hypervisor,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(s: &[u8]) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..s.len()].copy_from_slice(s);
        out
    }

    #[test]
    fn cpuid_names_the_hypervisor() {
        let kvm = Sources {
            cpuid_bit: true,
            cpuid_vendors: vec![sig(b"KVMKVMKVM")],
            ..Default::default()
        };
        let v = classify(&kvm);
        assert_eq!(v.hypervisor, Some(Hypervisor::Kvm));
        assert!(v
            .evidence
            .iter()
            .any(|e| e == "cpuid 0x40000000: KVMKVMKVM..."));
        let tcg = Sources {
            cpuid_bit: true,
            cpuid_vendors: vec![sig(b"TCGTCGTCGTCG")],
            dmi_sys_vendor: Some("QEMU".into()),
            ..Default::default()
        };
        assert_eq!(classify(&tcg).hypervisor, Some(Hypervisor::QemuTcg));
    }

    #[test]
    fn kvm_behind_hyper_v_enlightenments_is_kvm() {
        let s = Sources {
            cpuid_bit: true,
            cpuid_vendors: vec![sig(b"Microsoft Hv"), sig(b"KVMKVMKVM")],
            ..Default::default()
        };
        assert_eq!(classify(&s).hypervisor, Some(Hypervisor::Kvm));
        let hv = Sources {
            cpuid_bit: true,
            cpuid_vendors: vec![sig(b"Microsoft Hv"), [0; 12]],
            ..Default::default()
        };
        assert_eq!(classify(&hv).hypervisor, Some(Hypervisor::HyperV));
    }

    #[test]
    fn dmi_refines_and_fills_in() {
        let fc = Sources {
            cpuid_bit: true,
            cpuid_vendors: vec![sig(b"KVMKVMKVM")],
            dmi_product_name: Some("Firecracker".into()),
            ..Default::default()
        };
        assert_eq!(classify(&fc).hypervisor, Some(Hypervisor::Firecracker));
        let odd = Sources {
            cpuid_bit: true,
            cpuid_vendors: vec![sig(b"NotAVendor")],
            ..Default::default()
        };
        assert_eq!(classify(&odd).hypervisor, Some(Hypervisor::Unknown));
        let xen_pv = Sources {
            sys_hypervisor_type: Some("xen".into()),
            ..Default::default()
        };
        assert_eq!(classify(&xen_pv).hypervisor, Some(Hypervisor::Xen));
    }

    #[test]
    fn metal_is_no_source_at_all() {
        let metal = Sources {
            dmi_sys_vendor: Some("Dell Inc.".into()),
            dmi_product_name: Some("PowerEdge R650".into()),
            ..Default::default()
        };
        let v = classify(&metal);
        assert_eq!(v.hypervisor, None);
        assert_eq!(v.evidence.len(), 2);
        let surface = Sources {
            dmi_sys_vendor: Some("Microsoft Corporation".into()),
            ..Default::default()
        };
        assert_eq!(classify(&surface).hypervisor, None);
    }

    #[test]
    fn files_are_read_below_a_root() {
        let dir = std::env::temp_dir().join(format!("mmx-hv-{}", std::process::id()));
        let dmi = dir.join("sys/class/dmi/id");
        std::fs::create_dir_all(&dmi).unwrap();
        std::fs::write(dmi.join("sys_vendor"), "QEMU\n").unwrap();
        let s = read_sources(&dir);
        assert_eq!(s.dmi_sys_vendor.as_deref(), Some("QEMU"));
        assert_eq!(s.dmi_product_name, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Which kernel modules a guest needs, and in which order to load them.
//!
//! Debian's packages ship no `modules.dep` (depmod writes it at install time), so dependencies
//! come from where depmod's input comes from: each module's `.modinfo` ELF section
//! (`depends=a,b`, `softdep=pre: c`). A `modules.builtin` list tells which names need no module.
//! The wanted set is fixed per feature ([`ModuleFeature`]); the closure is ordered dependencies
//! first, so the agent can load the list front to back.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::KernelError;
use crate::debian::deb::xz_decompress;

/// Why a module is in the initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModuleFeature {
    /// The scratch disk: virtio_blk over the virtio PCI transport.
    VirtioBlk,
    Ext4,
    Xfs,
    Btrfs,
    Overlay,
    /// Named in a recipe's `extra_modules`.
    Extra,
}

impl ModuleFeature {
    /// Every feature: an initramfs that can boot any filesystem.
    pub const ALL: [ModuleFeature; 6] = [
        ModuleFeature::VirtioBlk,
        ModuleFeature::Ext4,
        ModuleFeature::Xfs,
        ModuleFeature::Btrfs,
        ModuleFeature::Overlay,
        ModuleFeature::Extra,
    ];

    pub const BUILT_IN_SET: [ModuleFeature; 5] = [
        ModuleFeature::VirtioBlk,
        ModuleFeature::Ext4,
        ModuleFeature::Xfs,
        ModuleFeature::Btrfs,
        ModuleFeature::Overlay,
    ];

    /// The modules the feature needs directly (their dependencies come from `.modinfo`).
    /// virtio_pci is no dependency of virtio_blk (it is the bus it sits on), so it is named.
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            ModuleFeature::VirtioBlk => &["virtio", "virtio_ring", "virtio_pci", "virtio_blk"],
            ModuleFeature::Ext4 => &["ext4"],
            ModuleFeature::Xfs => &["xfs"],
            ModuleFeature::Btrfs => &["btrfs"],
            ModuleFeature::Overlay => &["overlay"],
            ModuleFeature::Extra => &[],
        }
    }
}

/// The bytes of one module file while choosing.
#[derive(Debug, Clone)]
pub(crate) enum ModuleBytes {
    Memory(Vec<u8>),
    File(PathBuf),
}

/// Every module of one kernel tree, by name (`-` normalised to `_`, as the kernel does).
#[derive(Debug, Default)]
pub(crate) struct ModuleIndex {
    modules: BTreeMap<String, (String, ModuleBytes)>,
    builtin: BTreeSet<String>,
}

/// A module chosen for the initramfs.
#[derive(Debug, Clone)]
pub(crate) struct Chosen {
    pub name: String,
    /// The file as shipped (maybe xz) and the plain ELF.
    pub raw: Vec<u8>,
    pub plain: Vec<u8>,
    pub xz: bool,
    pub needed_for: BTreeSet<ModuleFeature>,
}

/// The outcome of choosing.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    /// Load order: every module after its dependencies.
    pub chosen: Vec<Chosen>,
    /// Wanted names the kernel has built in.
    pub builtin: Vec<String>,
    /// Wanted names the kernel has neither as a module nor built in (the feature is absent).
    pub unavailable: Vec<String>,
}

/// `overlay` from `.../overlay.ko.xz`; None for files that are no modules.
pub(crate) fn module_name(file_name: &str) -> Option<String> {
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file_name.strip_suffix(ext))?;
    Some(normalize(stem))
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

impl ModuleIndex {
    /// Record a module file found at `tree_path` (relative to `lib/modules/<release>`).
    pub fn insert(&mut self, tree_path: &str, bytes: ModuleBytes) {
        let file = tree_path.rsplit('/').next().unwrap_or(tree_path);
        if let Some(name) = module_name(file) {
            self.modules.insert(name, (tree_path.to_string(), bytes));
        }
    }

    /// Read `modules.builtin` (one `kernel/…/name.ko` per line).
    pub fn set_builtin(&mut self, text: &str) {
        self.builtin = text
            .lines()
            .filter_map(|l| module_name(l.trim().rsplit('/').next()?))
            .collect();
    }

    /// Index a module tree on disk (a `make modules_install` result, `lib/modules/<release>`).
    pub fn from_dir(root: &Path) -> Result<ModuleIndex, KernelError> {
        let mut index = ModuleIndex::default();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = fs::read_dir(&dir).map_err(|e| KernelError::io("read_dir", &dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| KernelError::io("read_dir", &dir, e))?;
                let path = entry.path();
                let ty = entry
                    .file_type()
                    .map_err(|e| KernelError::io("stat", &path, e))?;
                // `build` and `source` are symlinks into kernel sources: never follow them.
                if ty.is_dir() {
                    stack.push(path);
                } else if ty.is_file() {
                    let rel = path.strip_prefix(root).unwrap_or(&path);
                    index.insert(&rel.to_string_lossy(), ModuleBytes::File(path.clone()));
                }
            }
        }
        let builtin = root.join("modules.builtin");
        if let Ok(text) = fs::read_to_string(&builtin) {
            index.set_builtin(&text);
        }
        Ok(index)
    }

    /// Choose `wants` and everything they depend on, in load order.
    pub fn select(&self, wants: &[(String, ModuleFeature)]) -> Result<Selection, KernelError> {
        let mut sel = Selection::default();
        let mut visiting = BTreeSet::new();
        for (name, feature) in wants {
            let name = normalize(name);
            if self.builtin.contains(&name) {
                if !sel.builtin.contains(&name) {
                    sel.builtin.push(name);
                }
            } else if !self.modules.contains_key(&name) {
                if !sel.unavailable.contains(&name) {
                    sel.unavailable.push(name);
                }
            } else {
                self.visit(&name, *feature, None, &mut visiting, &mut sel)?;
            }
        }
        Ok(sel)
    }

    fn visit(
        &self,
        name: &str,
        feature: ModuleFeature,
        wanted_by: Option<&str>,
        visiting: &mut BTreeSet<String>,
        sel: &mut Selection,
    ) -> Result<(), KernelError> {
        if let Some(c) = sel.chosen.iter_mut().find(|c| c.name == name) {
            c.needed_for.insert(feature);
            return Ok(());
        }
        if self.builtin.contains(name) || !visiting.insert(name.to_string()) {
            return Ok(());
        }
        let Some((tree_path, bytes)) = self.modules.get(name) else {
            return Err(KernelError::Modules {
                detail: format!(
                    "{} depends on `{name}`, which is neither a module nor built in",
                    wanted_by.unwrap_or("(wanted)")
                ),
            });
        };
        let raw = match bytes {
            ModuleBytes::Memory(b) => b.clone(),
            ModuleBytes::File(p) => fs::read(p).map_err(|e| KernelError::io("read", p, e))?,
        };
        let xz = tree_path.ends_with(".xz");
        let plain = if xz {
            xz_decompress(&raw).map_err(|e| KernelError::Modules {
                detail: format!("{tree_path}: xz: {e}"),
            })?
        } else if tree_path.ends_with(".ko") {
            raw.clone()
        } else {
            return Err(KernelError::Modules {
                detail: format!("{tree_path}: only .ko and .ko.xz modules are supported"),
            });
        };
        let info = modinfo(&plain).ok_or_else(|| KernelError::Modules {
            detail: format!("{tree_path}: no readable .modinfo section (not an ELF64 module?)"),
        })?;
        for dep in info.depends {
            self.visit(&dep, feature, Some(name), visiting, sel)?;
        }
        // Soft dependencies name what the module asks the crypto API for (btrfs: crc32c);
        // without modprobe in the guest nobody loads them on demand. Best effort: ship those
        // that exist as modules, by name or as the `_generic` implementation.
        for soft in info.softdep_pre {
            let found = [soft.clone(), format!("{soft}_generic")]
                .into_iter()
                .find(|n| self.modules.contains_key(n) && !self.builtin.contains(n));
            if let Some(n) = found {
                self.visit(&n, feature, Some(name), visiting, sel)?;
            }
        }
        sel.chosen.push(Chosen {
            name: name.to_string(),
            raw,
            plain,
            xz,
            needed_for: BTreeSet::from([feature]),
        });
        Ok(())
    }
}

/// What `.modinfo` says about loading order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ModInfo {
    pub depends: Vec<String>,
    pub softdep_pre: Vec<String>,
}

/// Parse the `.modinfo` section of an ELF64 little-endian module: NUL-separated `key=value`.
pub(crate) fn modinfo(elf: &[u8]) -> Option<ModInfo> {
    let section = elf_section(elf, ".modinfo")?;
    let mut info = ModInfo::default();
    for item in section.split(|&b| b == 0) {
        let item = String::from_utf8_lossy(item);
        if let Some(deps) = item.strip_prefix("depends=") {
            info.depends
                .extend(deps.split(',').filter(|d| !d.is_empty()).map(normalize));
        } else if let Some(soft) = item.strip_prefix("softdep=") {
            // "pre: a b post: c"
            let mut pre = false;
            for word in soft.split_whitespace() {
                match word {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    w if pre => info.softdep_pre.push(normalize(w)),
                    _ => {}
                }
            }
        }
    }
    Some(info)
}

/// The bytes of the named section. Every offset is checked: module files come from the network.
fn elf_section<'a>(elf: &'a [u8], want: &str) -> Option<&'a [u8]> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    // Section header: sh_name u32 @0, sh_offset u64 @24, sh_size u64 @32.
    let section = |i: usize| -> Option<(u32, &'a [u8])> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let off = usize::try_from(u64_at(h + 24)?).ok()?;
        let size = usize::try_from(u64_at(h + 32)?).ok()?;
        Some((u32_at(h)?, elf.get(off..off.checked_add(size)?)?))
    };
    let (_, names) = section(shstrndx)?;
    (0..shnum).find_map(|i| {
        let (name_off, data) = section(i)?;
        let name = names.get(usize::try_from(name_off).ok()?..)?;
        let end = name.iter().position(|&b| b == 0)?;
        (&name[..end] == want.as_bytes()).then_some(data)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 with a section-name table and a `.modinfo` section.
    pub(crate) fn fake_module(modinfo: &str) -> Vec<u8> {
        let names = b"\0.shstrtab\0.modinfo\0";
        let info = modinfo.replace(';', "\0");
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let names_off = elf.len();
        elf.extend_from_slice(names);
        let info_off = elf.len();
        elf.extend_from_slice(info.as_bytes());
        let shoff = elf.len();
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        for (name, off, size) in [
            (0u32, 0usize, 0usize),
            (1, names_off, names.len()),
            (11, info_off, info.len()),
        ] {
            let mut sh = [0u8; 64];
            sh[..4].copy_from_slice(&name.to_le_bytes());
            sh[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            sh[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&sh);
        }
        elf
    }

    #[test]
    fn modinfo_reads_depends_and_softdeps() {
        let m = fake_module(
            "license=GPL;depends=libcrc32c,zstd-compress;softdep=pre: crc32c post: x;name=btrfs;",
        );
        let info = modinfo(&m).unwrap();
        assert_eq!(info.depends, vec!["libcrc32c", "zstd_compress"]);
        assert_eq!(info.softdep_pre, vec!["crc32c"]);
        assert_eq!(modinfo(b"not an elf"), None);
        assert_eq!(
            modinfo(&m[..70]),
            None,
            "truncated input is refused, not a panic"
        );
    }

    #[test]
    fn closure_is_in_load_order_and_skips_builtins() {
        let mut idx = ModuleIndex::default();
        let m = |s: &str| ModuleBytes::Memory(fake_module(s));
        idx.insert(
            "kernel/fs/btrfs/btrfs.ko",
            m("depends=libcrc32c,raid6_pq;softdep=pre: crc32c"),
        );
        idx.insert("kernel/lib/libcrc32c.ko", m("depends=crc32c_generic"));
        idx.insert("kernel/lib/raid6/raid6_pq.ko", m("depends="));
        idx.insert("kernel/fs/xfs/xfs.ko", m("depends=libcrc32c"));
        idx.insert("kernel/crypto/crc32c_generic.ko", m("depends="));
        idx.set_builtin("kernel/crypto/crc32c_generic.ko\nkernel/fs/ext4/ext4.ko\n");
        let wants = vec![
            ("ext4".to_string(), ModuleFeature::Ext4),
            ("xfs".to_string(), ModuleFeature::Xfs),
            ("btrfs".to_string(), ModuleFeature::Btrfs),
            ("overlay".to_string(), ModuleFeature::Overlay),
        ];
        let sel = idx.select(&wants).unwrap();
        let names: Vec<_> = sel.chosen.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["libcrc32c", "xfs", "raid6_pq", "btrfs"]);
        assert_eq!(
            sel.chosen[0].needed_for,
            BTreeSet::from([ModuleFeature::Xfs, ModuleFeature::Btrfs])
        );
        assert_eq!(sel.builtin, vec!["ext4"]);
        assert_eq!(sel.unavailable, vec!["overlay"]);
    }

    #[test]
    fn a_missing_hard_dependency_is_an_error() {
        let mut idx = ModuleIndex::default();
        idx.insert("a.ko", ModuleBytes::Memory(fake_module("depends=b")));
        let err = idx
            .select(&[("a".into(), ModuleFeature::Extra)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`b`"), "{err}");
    }

    #[test]
    fn module_names_normalise() {
        assert_eq!(
            module_name("virtio-rng.ko.xz").as_deref(),
            Some("virtio_rng")
        );
        assert_eq!(module_name("modules.dep"), None);
    }
}

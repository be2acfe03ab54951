//! Which kernel modules a guest needs, and in which order to load them.
//!
//! Debian's packages ship no `modules.dep` or `modules.alias` (depmod writes them at install
//! time), so both come from where depmod's input comes from: each module's `.modinfo` ELF
//! section (`depends=a,b`, `softdep=pre: c`, `alias=crypto-c`), and `modules.builtin` /
//! `modules.builtin.modinfo` for what is built in. A tree depmod has run on (a `[path]`
//! recipe's `make modules_install`) gives its `modules.alias` instead.
//!
//! A name a module depends on (hard or soft) is resolved the way kmod's modprobe resolves it:
//! a module of that name; a built-in of that name; every module one of whose aliases matches
//! it (`crypto-crc32c`: `crc32c_generic` *and* `crc32c_intel`); a built-in alias. The wanted
//! set is fixed per feature ([`ModuleFeature`]). Hard dependencies are loaded at boot, in the
//! closure's order (dependencies first). Soft dependencies are shipped but not loaded: the
//! kernel asks for them when it needs them (`request_module("crypto-crc32c")` when ext4 mounts)
//! and the agent, as the guest's modprobe, loads them from the initramfs's module table.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use protocol::modules::{alias_matches, normalize};

use super::aliases::AliasTable;
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
    /// erofs layer images: erofs, and loop for kernels that mount erofs from block devices
    /// only (before 6.12).
    Erofs,
    Overlay,
    /// Named in a recipe's `extra_modules`.
    Extra,
}

impl ModuleFeature {
    /// Every feature: an initramfs that can boot any filesystem.
    pub const ALL: [ModuleFeature; 7] = [
        ModuleFeature::VirtioBlk,
        ModuleFeature::Ext4,
        ModuleFeature::Xfs,
        ModuleFeature::Btrfs,
        ModuleFeature::Erofs,
        ModuleFeature::Overlay,
        ModuleFeature::Extra,
    ];

    pub const BUILT_IN_SET: [ModuleFeature; 6] = [
        ModuleFeature::VirtioBlk,
        ModuleFeature::Ext4,
        ModuleFeature::Xfs,
        ModuleFeature::Btrfs,
        ModuleFeature::Erofs,
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
            ModuleFeature::Erofs => &["erofs", "loop"],
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
    /// What built-in modules answer to (`modules.builtin.modinfo`'s `name.alias=` lines).
    builtin_aliases: Vec<String>,
    /// The tree's `modules.alias`, when depmod wrote one; else derived on first need.
    aliases: OnceCell<AliasTable>,
}

/// What a name a module depends on stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Provider {
    /// These modules (one by name, or every one whose alias matches).
    Modules(Vec<String>),
    /// The kernel has it built in: nothing to load.
    BuiltIn,
    /// Nothing in this kernel answers to it.
    Missing,
}

/// How a module is loaded in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// At boot, by the agent, before the plan: what the wanted modules need to load.
    Boot,
    /// When the kernel asks for it: a soft dependency, shipped for the guest's modprobe.
    Request,
}

/// A module chosen for the initramfs.
#[derive(Debug, Clone)]
pub(crate) struct Chosen {
    pub name: String,
    /// The file as shipped (maybe xz) and the plain ELF.
    pub raw: Vec<u8>,
    pub plain: Vec<u8>,
    pub xz: bool,
    /// Features that load it at boot.
    pub needed_for: BTreeSet<ModuleFeature>,
    /// Features that ship it for the kernel to ask for (and do not load it at boot).
    pub on_request_for: BTreeSet<ModuleFeature>,
    /// The chosen modules its `depends=` resolved to (built-ins left out).
    pub depends: Vec<String>,
    /// The chosen modules its soft dependencies resolved to.
    pub softdeps: Vec<String>,
    /// Its `alias=` lines.
    pub aliases: Vec<String>,
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

    /// Read `modules.builtin.modinfo`: NUL-separated `name.key=value`; keeps the aliases.
    pub fn set_builtin_modinfo(&mut self, bytes: &[u8]) {
        self.builtin_aliases = bytes
            .split(|&b| b == 0)
            .filter_map(|item| {
                let item = std::str::from_utf8(item).ok()?;
                let (_, rest) = item.split_once('.')?;
                Some(rest.strip_prefix("alias=")?.to_string())
            })
            .collect();
    }

    /// Take depmod's `modules.alias` instead of reading every module's `.modinfo`.
    pub fn set_modules_alias(&mut self, text: &str) {
        self.aliases = OnceCell::from(AliasTable::parse_modules_alias(text));
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
        if let Ok(text) = fs::read_to_string(root.join("modules.builtin")) {
            index.set_builtin(&text);
        }
        if let Ok(bytes) = fs::read(root.join("modules.builtin.modinfo")) {
            index.set_builtin_modinfo(&bytes);
        }
        if let Ok(text) = fs::read_to_string(root.join("modules.alias")) {
            index.set_modules_alias(&text);
        }
        Ok(index)
    }

    /// Choose `wants` and everything they depend on, in load order.
    pub fn select(&self, wants: &[(String, ModuleFeature)]) -> Result<Selection, KernelError> {
        let mut sel = Selection::default();
        let mut visiting = BTreeSet::new();
        for (name, feature) in wants {
            let name = normalize(name);
            match self.provider(&name)? {
                Provider::BuiltIn => {
                    if !sel.builtin.contains(&name) {
                        sel.builtin.push(name);
                    }
                }
                Provider::Missing => {
                    if !sel.unavailable.contains(&name) {
                        sel.unavailable.push(name);
                    }
                }
                Provider::Modules(found) => {
                    for m in found {
                        self.visit(&m, *feature, Via::Boot, None, &mut visiting, &mut sel)?;
                    }
                }
            }
        }
        Ok(sel)
    }

    /// What `name` stands for, in kmod's order: a module, a built-in, modules whose alias
    /// matches, a built-in's alias.
    fn provider(&self, name: &str) -> Result<Provider, KernelError> {
        let name = normalize(name);
        if self.modules.contains_key(&name) {
            return Ok(Provider::Modules(vec![name]));
        }
        if self.builtin.contains(&name) {
            return Ok(Provider::BuiltIn);
        }
        let found = self.alias_table()?.lookup(&name);
        if !found.is_empty() {
            return Ok(Provider::Modules(found));
        }
        if self.builtin_aliases.iter().any(|a| alias_matches(a, &name)) {
            return Ok(Provider::BuiltIn);
        }
        Ok(Provider::Missing)
    }

    /// The loadable modules' aliases: `modules.alias` when the tree had one, else every
    /// module's `.modinfo`, as depmod reads them. Debian's generic 6.12 has 4,230 modules,
    /// 516 MB once decompressed: some 13 s of CPU, once per cache entry, spread over the cores
    /// (each thread holds one decompressed module at a time).
    fn alias_table(&self) -> Result<&AliasTable, KernelError> {
        if let Some(t) = self.aliases.get() {
            return Ok(t);
        }
        let all: Vec<(&String, &(String, ModuleBytes))> = self.modules.iter().collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let per_thread = all.len().div_ceil(threads).max(1);
        let parts: Vec<Result<Vec<(String, String)>, KernelError>> = std::thread::scope(|s| {
            let workers: Vec<_> = all
                .chunks(per_thread)
                .map(|part| {
                    s.spawn(move || {
                        let mut found = Vec::new();
                        for (name, (tree_path, bytes)) in part {
                            if let Some(info) = modinfo_of(tree_path, bytes)? {
                                found
                                    .extend(info.aliases.into_iter().map(|a| (a, (*name).clone())));
                            }
                        }
                        Ok(found)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(KernelError::Modules {
                            detail: "a thread reading module aliases panicked".into(),
                        })
                    })
                })
                .collect()
        });
        let mut entries = Vec::new();
        for part in parts {
            entries.extend(part?);
        }
        Ok(self.aliases.get_or_init(|| AliasTable { entries }))
    }

    fn visit(
        &self,
        name: &str,
        feature: ModuleFeature,
        via: Via,
        wanted_by: Option<&str>,
        visiting: &mut BTreeSet<String>,
        sel: &mut Selection,
    ) -> Result<(), KernelError> {
        if let Some(c) = sel.chosen.iter_mut().find(|c| c.name == name) {
            // Chosen before, maybe for another feature or only on request: what it needs is
            // now needed the same way for this feature too.
            let added = match via {
                Via::Boot => c.needed_for.insert(feature),
                Via::Request => {
                    !c.needed_for.contains(&feature) && c.on_request_for.insert(feature)
                }
            };
            if added {
                let (depends, softdeps) = (c.depends.clone(), c.softdeps.clone());
                for d in &depends {
                    self.visit(d, feature, via, Some(name), visiting, sel)?;
                }
                for s in &softdeps {
                    self.visit(s, feature, Via::Request, Some(name), visiting, sel)?;
                }
            }
            return Ok(());
        }
        // A cycle (which depmod would refuse) ends here rather than recursing forever.
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
        let raw = read_module(bytes)?;
        let xz = tree_path.ends_with(".xz");
        let plain = decompress(tree_path, &raw)?
            .ok_or_else(|| KernelError::Modules {
                detail: format!("{tree_path}: only .ko and .ko.xz modules are supported"),
            })?
            .into_owned();
        let info = modinfo(&plain).ok_or_else(|| KernelError::Modules {
            detail: format!("{tree_path}: no readable .modinfo section (not an ELF64 module?)"),
        })?;
        let mut depends = Vec::new();
        for dep in &info.depends {
            match self.provider(dep)? {
                Provider::Modules(found) => {
                    for m in found {
                        self.visit(&m, feature, via, Some(name), visiting, sel)?;
                        depends.push(m);
                    }
                }
                Provider::BuiltIn => {}
                Provider::Missing => {
                    return Err(KernelError::Modules {
                        detail: format!(
                            "{name} depends on `{dep}`, which is neither a module nor built in"
                        ),
                    })
                }
            }
        }
        // Soft dependencies name what the module asks the kernel for by itself (ext4 and btrfs:
        // `crypto-crc32c`); one nothing answers is left to the kernel, as modprobe does.
        let mut softdeps = Vec::new();
        for soft in info.softdep_pre.iter().chain(&info.softdep_post) {
            if let Provider::Modules(found) = self.provider(soft)? {
                for m in found {
                    self.visit(&m, feature, Via::Request, Some(name), visiting, sel)?;
                    softdeps.push(m);
                }
            }
        }
        let (needed_for, on_request_for) = match via {
            Via::Boot => (BTreeSet::from([feature]), BTreeSet::new()),
            Via::Request => (BTreeSet::new(), BTreeSet::from([feature])),
        };
        sel.chosen.push(Chosen {
            name: name.to_string(),
            raw,
            plain,
            xz,
            needed_for,
            on_request_for,
            depends,
            softdeps,
            aliases: info.aliases,
        });
        Ok(())
    }
}

fn read_module(bytes: &ModuleBytes) -> Result<Vec<u8>, KernelError> {
    match bytes {
        ModuleBytes::Memory(b) => Ok(b.clone()),
        ModuleBytes::File(p) => fs::read(p).map_err(|e| KernelError::io("read", p, e)),
    }
}

/// The plain ELF of a module file as shipped; None for a compression mmx does not read (zstd,
/// gzip).
fn decompress<'a>(tree_path: &str, raw: &'a [u8]) -> Result<Option<Cow<'a, [u8]>>, KernelError> {
    if tree_path.ends_with(".ko.xz") {
        xz_decompress(raw)
            .map(|plain| Some(Cow::Owned(plain)))
            .map_err(|e| KernelError::Modules {
                detail: format!("{tree_path}: xz: {e}"),
            })
    } else if tree_path.ends_with(".ko") {
        Ok(Some(Cow::Borrowed(raw)))
    } else {
        Ok(None)
    }
}

/// The `.modinfo` of a module file, read without keeping it; None for files mmx cannot read.
fn modinfo_of(tree_path: &str, bytes: &ModuleBytes) -> Result<Option<ModInfo>, KernelError> {
    let owned;
    let raw: &[u8] = match bytes {
        ModuleBytes::Memory(b) => b,
        ModuleBytes::File(p) => {
            owned = fs::read(p).map_err(|e| KernelError::io("read", p, e))?;
            &owned
        }
    };
    Ok(decompress(tree_path, raw)?.and_then(|plain| modinfo(&plain)))
}

/// What `.modinfo` says about loading order and names.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ModInfo {
    pub depends: Vec<String>,
    pub softdep_pre: Vec<String>,
    pub softdep_post: Vec<String>,
    /// `alias=` values as written (patterns keep their `-`: matching normalises both sides).
    pub aliases: Vec<String>,
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
        } else if let Some(alias) = item.strip_prefix("alias=") {
            info.aliases.push(alias.to_string());
        } else if let Some(soft) = item.strip_prefix("softdep=") {
            // "pre: a b post: c"; a module may have several softdep= lines.
            let mut into = None;
            for word in soft.split_whitespace() {
                match word {
                    "pre:" => into = Some(&mut info.softdep_pre),
                    "post:" => into = Some(&mut info.softdep_post),
                    w => {
                        if let Some(list) = into.as_mut() {
                            list.push(normalize(w));
                        }
                    }
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
            "license=GPL;depends=libcrc32c,zstd-compress;softdep=pre: crc32c post: x;\
             softdep=pre: crypto-crc32c;alias=fs-btrfs;name=btrfs;",
        );
        let info = modinfo(&m).unwrap();
        assert_eq!(info.depends, vec!["libcrc32c", "zstd_compress"]);
        assert_eq!(info.softdep_pre, vec!["crc32c", "crypto_crc32c"]);
        assert_eq!(info.softdep_post, vec!["x"]);
        assert_eq!(info.aliases, vec!["fs-btrfs"]);
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

    /// Debian's generic 6.12, as far as the filesystems go: crc32c is a module, and ext4, jbd2
    /// and libcrc32c name it only by alias.
    fn generic_index() -> ModuleIndex {
        let mut idx = ModuleIndex::default();
        let m = |s: &str| ModuleBytes::Memory(fake_module(s));
        idx.insert(
            "kernel/fs/ext4/ext4.ko",
            m("depends=jbd2,crc16;softdep=pre: crypto-crc32c;alias=fs-ext4"),
        );
        idx.insert(
            "kernel/fs/jbd2/jbd2.ko",
            m("depends=;softdep=pre: crypto-crc32c"),
        );
        idx.insert("kernel/lib/crc16.ko", m("depends="));
        idx.insert("kernel/lib/libcrc32c.ko", m("depends=;softdep=pre: crc32c"));
        idx.insert("kernel/fs/xfs/xfs.ko", m("depends=libcrc32c;alias=fs-xfs"));
        idx.insert(
            "kernel/fs/btrfs/btrfs.ko",
            m(
                "depends=libcrc32c;softdep=pre: crypto-crc32c;softdep=pre: sha256;\
               softdep=pre: nothing-answers",
            ),
        );
        idx.insert(
            "kernel/crypto/crc32c_generic.ko",
            m("alias=crypto-crc32c-generic;alias=crc32c-generic;alias=crypto-crc32c;alias=crc32c;depends="),
        );
        idx.insert(
            "kernel/arch/x86/crypto/crc32c-intel.ko",
            m(
                "alias=crypto-crc32c-intel;alias=crypto-crc32c;alias=crc32c;\
               alias=cpu:type:x86,ven*fam*mod*:feature:*0094*;depends=",
            ),
        );
        idx.set_builtin("kernel/crypto/sha256_generic.ko\n");
        idx.set_builtin_modinfo(
            b"sha256_generic.alias=crypto-sha256\0sha256_generic.alias=sha256\0",
        );
        idx
    }

    fn wants(features: &[ModuleFeature]) -> Vec<(String, ModuleFeature)> {
        features
            .iter()
            .flat_map(|f| f.modules().iter().map(|m| (m.to_string(), *f)))
            .collect()
    }

    #[test]
    fn softdeps_named_by_alias_ship_on_request() {
        use ModuleFeature::{Btrfs, Ext4, Xfs};
        let sel = generic_index().select(&wants(&[Ext4, Xfs, Btrfs])).unwrap();
        let of = |n: &str| {
            let c = sel
                .chosen
                .iter()
                .find(|c| c.name == n)
                .unwrap_or_else(|| panic!("{n} chosen"));
            (c.needed_for.clone(), c.on_request_for.clone())
        };
        for crc in ["crc32c_generic", "crc32c_intel"] {
            assert_eq!(
                of(crc),
                (BTreeSet::new(), BTreeSet::from([Ext4, Xfs, Btrfs])),
                "{crc}"
            );
        }
        assert_eq!(of("libcrc32c").0, BTreeSet::from([Xfs, Btrfs]));
        assert_eq!(of("jbd2").0, BTreeSet::from([Ext4]));
        // sha256 is built in (by alias); nothing answers the last softdep: neither is shipped.
        let names: Vec<_> = sel.chosen.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "crc32c_generic",
                "crc32c_intel",
                "jbd2",
                "crc16",
                "ext4",
                "libcrc32c",
                "xfs",
                "btrfs"
            ]
        );
        let ext4 = sel.chosen.iter().find(|c| c.name == "ext4").unwrap();
        assert_eq!(ext4.depends, ["jbd2", "crc16"]);
        assert_eq!(ext4.softdeps, ["crc32c_generic", "crc32c_intel"]);
        assert_eq!(ext4.aliases, ["fs-ext4"]);
    }

    #[test]
    fn a_module_chosen_for_one_feature_brings_its_needs_to_the_next() {
        // libcrc32c is chosen for xfs first; btrfs, which needs it too, must get crc32c with it
        // (the generic kernel's btrfs boots once shipped libcrc32c without it).
        let sel = generic_index()
            .select(&wants(&[ModuleFeature::Xfs, ModuleFeature::Btrfs]))
            .unwrap();
        let crc = sel
            .chosen
            .iter()
            .find(|c| c.name == "crc32c_generic")
            .unwrap();
        assert!(
            crc.on_request_for.contains(&ModuleFeature::Btrfs),
            "{crc:?}"
        );
    }

    #[test]
    fn a_loadable_alias_wins_over_a_builtin_one_as_in_kmod() {
        // The cloud kernels: crc32c_generic built in, crc32c_intel a module.
        let mut idx = generic_index();
        idx.modules.remove("crc32c_generic");
        idx.set_builtin("kernel/crypto/crc32c_generic.ko\n");
        idx.set_builtin_modinfo(b"crc32c_generic.alias=crypto-crc32c\0");
        assert_eq!(
            idx.provider("crypto-crc32c").unwrap(),
            Provider::Modules(vec!["crc32c_intel".into()])
        );
        idx.modules.remove("crc32c_intel");
        idx.aliases = OnceCell::new();
        assert_eq!(idx.provider("crypto-crc32c").unwrap(), Provider::BuiltIn);
        assert_eq!(idx.provider("crc32c_generic").unwrap(), Provider::BuiltIn);
        assert_eq!(idx.provider("crypto-md5").unwrap(), Provider::Missing);
    }

    #[test]
    fn depmods_modules_alias_is_taken_when_the_tree_has_one() {
        let mut idx = generic_index();
        idx.set_modules_alias("alias crypto-crc32c crc32c_generic\n");
        assert_eq!(
            idx.provider("crypto-crc32c").unwrap(),
            Provider::Modules(vec!["crc32c_generic".into()])
        );
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

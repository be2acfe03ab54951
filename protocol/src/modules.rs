//! The guest's module table: which kernel modules a guest's initramfs carries, the names and
//! aliases each answers to, and what each needs loaded first — what `modules.dep` and
//! `modules.alias` are to kmod's modprobe, for the agent's own.
//!
//! Kernels that build a feature as a module load its helpers on request: ext4 and btrfs on
//! Debian's generic kernels ask the crypto API for `crc32c`, and the crypto API calls
//! `request_module("crypto-crc32c")`, which runs the program named in
//! `/proc/sys/kernel/modprobe` as `modprobe -q -- crypto-crc32c`. In a guest that program is the
//! agent; it answers from this table. The harness writes the table at [`TABLE_PATH`] in every
//! base initramfs, listing exactly the modules that archive carries.
//!
//! # Format
//!
//! One JSON document, a [`ModuleTable`]: `{"modules": [{"name", "path", "depends",
//! "aliases"}, …]}`, in load order (every module after the modules its `depends` names).
//! `aliases` are the module's `alias=` lines as `.modinfo` carries them (and depmod copies them
//! into `modules.alias`): plain names (`crypto-crc32c`) or `fnmatch(3)` patterns
//! (`virtio:d00000002v*`, `cpu:type:x86,ven*fam*mod*:feature:*0094*`).
//!
//! # Resolution, as kmod does it
//!
//! A request (a module name or an alias, `-` and `_` alike outside brackets) names the module
//! of that name if there is one, else *every* module one of whose aliases matches it
//! (`crypto-crc32c` loads both `crc32c_generic` and `crc32c_intel`; the crypto API then picks
//! the implementation of highest priority). Each is loaded after its dependencies.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the table is in a guest's initramfs.
pub const TABLE_PATH: &str = "/lib/modules/mmx-modules.json";

/// The name the kernel runs the agent by to load a module it wants: a link to `/init` in the
/// initramfs, which the agent writes into `/proc/sys/kernel/modprobe` once it has set the guest
/// up. Not the kernels' default `/sbin/modprobe`: the kernel would run that during its own
/// initcalls, before `/dev` and `/proc` exist. The agent acts as modprobe when started by a
/// name whose last component is `modprobe`.
pub const MODPROBE_PATH: &str = "/mmx/modprobe";

/// The most bytes of table the agent reads: a few hundred modules with their aliases fit in a
/// tenth of it; a larger file is not one the harness wrote.
pub const TABLE_MAX_BYTES: u64 = 4 << 20;

/// The modules one initramfs carries, in load order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleTable {
    pub modules: Vec<ModuleEntry>,
}

/// One module file in the initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleEntry {
    /// The module's name, normalised (`crc32c_intel`, never `crc32c-intel`).
    pub name: String,
    /// The file in the initramfs (`/lib/modules/crc32c_intel.ko.xz`).
    pub path: PathBuf,
    /// Modules that must be loaded first (`.modinfo`'s `depends=`), each earlier in the table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
    /// What else the module answers to, as `.modinfo` writes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A table that is not one the harness could have written.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("malformed module table: {0}")]
    Json(#[from] serde_json::Error),
    #[error("module table: `{module}` depends on `{dep}`, which no earlier entry is")]
    Order { module: String, dep: String },
    #[error("module table: `{0}` is listed twice")]
    Duplicate(String),
    #[error("module table: `{module}`: path {path} is not absolute", path = path.display())]
    RelativePath { module: String, path: PathBuf },
}

impl ModuleTable {
    /// Parse and check the table: names unique and normalised, paths absolute, every
    /// dependency an earlier entry (so [`ModuleTable::resolve`] can load in table order).
    pub fn parse(text: &str) -> Result<ModuleTable, TableError> {
        let mut table: ModuleTable = serde_json::from_str(text)?;
        let mut seen = BTreeSet::new();
        for m in &mut table.modules {
            m.name = normalize(&m.name);
            for d in &mut m.depends {
                *d = normalize(d);
            }
            if let Some(dep) = m.depends.iter().find(|d| !seen.contains(d.as_str())) {
                return Err(TableError::Order {
                    module: m.name.clone(),
                    dep: dep.clone(),
                });
            }
            if !m.path.is_absolute() {
                return Err(TableError::RelativePath {
                    module: m.name.clone(),
                    path: m.path.clone(),
                });
            }
            if !seen.insert(m.name.clone()) {
                return Err(TableError::Duplicate(m.name.clone()));
            }
        }
        Ok(table)
    }

    /// The modules that answer `request` (by name, else every alias match), preceded by
    /// everything they depend on, in load order; empty when nothing answers.
    pub fn resolve(&self, request: &str) -> Vec<&ModuleEntry> {
        let request = normalize(request);
        let mut wanted: Vec<&str> = match self.modules.iter().find(|m| m.name == request) {
            Some(m) => vec![m.name.as_str()],
            None => self
                .modules
                .iter()
                .filter(|m| m.aliases.iter().any(|a| alias_matches(a, &request)))
                .map(|m| m.name.as_str())
                .collect(),
        };
        // The dependency closure; the table's order is a load order, so keep that.
        let mut closure: BTreeSet<&str> = BTreeSet::new();
        while let Some(name) = wanted.pop() {
            if !closure.insert(name) {
                continue;
            }
            if let Some(m) = self.modules.iter().find(|m| m.name == name) {
                wanted.extend(m.depends.iter().map(String::as_str));
            }
        }
        self.modules
            .iter()
            .filter(|m| closure.contains(m.name.as_str()))
            .collect()
    }

    /// The entry for a file in the initramfs.
    pub fn by_path(&self, path: &Path) -> Option<&ModuleEntry> {
        self.modules.iter().find(|m| m.path == path)
    }
}

/// A module name or alias as kmod compares them: `-` becomes `_`, except inside a bracket
/// expression of a pattern (`[-_]` must stay a set of two).
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_brackets = false;
    for c in name.chars() {
        match c {
            '[' if !in_brackets => in_brackets = true,
            ']' if in_brackets => in_brackets = false,
            '-' if !in_brackets => {
                out.push('_');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Whether `name` matches the alias `pattern`, both normalised ([`normalize`]) first: the
/// `fnmatch(3)` subset aliases use — `*`, `?`, bracket expressions with ranges and `!`/`^`
/// negation, `\` escaping the next character. Linear in the lengths with one backtrack point,
/// no allocation beyond the two normalised strings.
pub fn alias_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (normalize(pattern), normalize(name));
    glob(p.as_bytes(), n.as_bytes())
}

fn glob(p: &[u8], n: &[u8]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    // After the last `*`: where the pattern resumes, and where in the name that try began.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ni));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => match bracket(&p[pi..], n[ni]) {
                Some((true, len)) => Some(pi + len),
                Some((false, _)) => None,
                // An unclosed `[` is a literal, as in fnmatch.
                None => (n[ni] == b'[').then_some(pi + 1),
            },
            Some(b'\\') if pi + 1 < p.len() => (p[pi + 1] == n[ni]).then_some(pi + 2),
            Some(&c) => (c == n[ni]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ni += 1;
            }
            // Let the last `*` swallow one more character and try again from there.
            (None, Some((after, tried))) => {
                pi = after;
                ni = tried + 1;
                star = Some((after, tried + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Match `c` against the bracket expression at the start of `p` (`p[0] == b'['`): whether it
/// matched, and the expression's length; None when there is no closing `]`.
fn bracket(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        // `]` right after `[` or `[!` is a member, not the end.
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&hi| hi != b']') {
            let hi = p[i + 2];
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, depends: &[&str], aliases: &[&str]) -> ModuleEntry {
        ModuleEntry {
            name: name.into(),
            path: format!("/lib/modules/{name}.ko.xz").into(),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Aliases as Debian's 6.12.117+deb13-amd64 modules carry them (`.modinfo`).
    fn generic_612() -> ModuleTable {
        ModuleTable {
            modules: vec![
                entry(
                    "crc32c_generic",
                    &[],
                    &[
                        "crypto-crc32c-generic",
                        "crc32c-generic",
                        "crypto-crc32c",
                        "crc32c",
                    ],
                ),
                entry(
                    "crc32c_intel",
                    &[],
                    &[
                        "crypto-crc32c-intel",
                        "crc32c-intel",
                        "crypto-crc32c",
                        "crc32c",
                        "cpu:type:x86,ven*fam*mod*:feature:*0094*",
                    ],
                ),
                entry("libcrc32c", &[], &[]),
                entry("xfs", &["libcrc32c"], &["fs-xfs"]),
                entry("virtio_blk", &[], &["virtio:d00000002v*"]),
            ],
        }
    }

    #[test]
    fn an_alias_loads_every_module_that_answers_it() {
        let t = generic_612();
        let names =
            |r: &str| -> Vec<String> { t.resolve(r).iter().map(|m| m.name.clone()).collect() };
        assert_eq!(names("crypto-crc32c"), ["crc32c_generic", "crc32c_intel"]);
        assert_eq!(names("crc32c"), ["crc32c_generic", "crc32c_intel"]);
        assert_eq!(names("crypto-crc32c-intel"), ["crc32c_intel"]);
        // A name wins over aliases, and `-`/`_` are one.
        assert_eq!(names("crc32c-generic"), ["crc32c_generic"]);
        assert_eq!(names("fs-xfs"), ["libcrc32c", "xfs"]);
        assert_eq!(names("virtio:d00000002v00001AF4"), ["virtio_blk"]);
        assert_eq!(
            names("cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0094,00B0"),
            ["crc32c_intel"]
        );
        assert!(names("crypto-crc32c-all").is_empty());
        assert!(names("fs-btrfs").is_empty());
    }

    #[test]
    fn globs_follow_fnmatch() {
        let m = alias_matches;
        assert!(m(
            "pci:v00008086d*sv*sd*bc*sc*i*",
            "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00"
        ));
        assert!(!m("pci:v00008086d*", "pci:v000010ECd00008139"));
        assert!(m("a?c", "abc") && !m("a?c", "ac"));
        assert!(m("x[0-9]y", "x7y") && !m("x[0-9]y", "xay"));
        assert!(m("x[!0-9]y", "xay") && !m("x[^0-9]y", "x7y"));
        assert!(m("x[]]y", "x]y"), "a leading ] is a member");
        assert!(m("x[-_]y", "x-y") && m("x[-_]y", "x_y"));
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb"));
        assert!(m("x[y", "x[y"), "an unclosed [ is a literal");
        assert!(m("*", "") && m("**a**", "a") && !m("*a", "b"));
        assert!(m("*ab*ab*", "xabyabz") && !m("*ab*ab", "xabyab_z"));
        assert!(m("crypto-crc32c", "crypto_crc32c"));
    }

    #[test]
    fn normalize_keeps_bracket_contents() {
        assert_eq!(normalize("crc32c-intel"), "crc32c_intel");
        assert_eq!(normalize("a-[-x]-b"), "a_[-x]_b");
    }

    #[test]
    fn parse_checks_order_names_and_paths() {
        let t = generic_612();
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(ModuleTable::parse(&text).unwrap(), t);

        let mut bad = t.clone();
        bad.modules.swap(2, 3);
        let e = ModuleTable::parse(&serde_json::to_string(&bad).unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("`xfs` depends on `libcrc32c`"),
            "{e}"
        );

        let mut bad = t.clone();
        bad.modules.push(entry("xfs", &[], &[]));
        let e = ModuleTable::parse(&serde_json::to_string(&bad).unwrap()).unwrap_err();
        assert!(matches!(e, TableError::Duplicate(n) if n == "xfs"));

        let mut bad = t;
        bad.modules[0].path = "lib/x.ko".into();
        assert!(matches!(
            ModuleTable::parse(&serde_json::to_string(&bad).unwrap()),
            Err(TableError::RelativePath { .. })
        ));
        assert!(ModuleTable::parse("{\"modules\": 3}").is_err());
    }
}

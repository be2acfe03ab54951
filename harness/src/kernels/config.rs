//! Kernel configs: reading `.config` files and fragments, merging fragments with
//! `scripts/kconfig/merge_config.sh` semantics, checking that `make olddefconfig` kept what was
//! asked, and checking any kernel's config against what mmx needs ([`super::fragment::NEEDS`]).
//!
//! Merging as merge_config.sh does it: a fragment's line for a symbol replaces every earlier line
//! for that symbol (a later fragment wins), then `make olddefconfig` resolves dependencies. That
//! step drops, silently, any option whose dependencies are unmet or that this tree does not
//! know; merge_config.sh warns ("Value requested for CONFIG_X not in final .config"), mmx stops
//! and names the options, since a kernel missing a requested option is not the kernel asked for.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::build::{BuildError, BuildLog, Make};
use super::fragment::{self, Need, Role, NEEDS};
use super::source::{ConfigSpec, Located};

/// One `CONFIG_X=value` (or `# CONFIG_X is not set`, value `n`) from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Without the `CONFIG_` prefix.
    pub option: String,
    pub value: String,
    pub line: usize,
}

/// A parsed `.config`: option → value (`y`, `m`, `n` for "is not set", or a literal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kconfig {
    values: BTreeMap<String, String>,
}

/// A line of a fragment that is none of a setting, a comment or blank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: `{text}` is not `CONFIG_X=value` or `# CONFIG_X is not set`")]
pub struct FragmentError {
    pub file: String,
    pub line: usize,
    pub text: String,
}

impl Kconfig {
    /// A whole `.config`; anything that is not a setting is ignored (kconfig writes comments).
    pub fn parse(text: &str) -> Kconfig {
        let values = text
            .lines()
            .enumerate()
            .filter_map(|(i, l)| setting(l, i + 1))
            .map(|s| (s.option, s.value))
            .collect();
        Kconfig { values }
    }

    /// A fragment, strictly: a line that looks like neither a setting nor a comment is an error
    /// (a typo must not vanish). `file` names it in errors.
    pub fn parse_fragment(file: &str, text: &str) -> Result<Vec<Setting>, FragmentError> {
        let mut out = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let l = raw.trim();
            if let Some(s) = setting(l, i + 1) {
                out.push(s);
            } else if !(l.is_empty() || l.starts_with('#')) {
                return Err(FragmentError {
                    file: file.to_string(),
                    line: i + 1,
                    text: l.to_string(),
                });
            }
        }
        Ok(out)
    }

    /// The value of `option` (no `CONFIG_` prefix); None when the file does not mention it.
    pub fn get(&self, option: &str) -> Option<&str> {
        self.values.get(option).map(String::as_str)
    }

    /// Whether the option is on (`y` or `m`).
    pub fn is_on(&self, option: &str) -> bool {
        matches!(self.get(option), Some("y" | "m"))
    }
}

/// `CONFIG_X=v` → (X, v); `# CONFIG_X is not set` → (X, n). Quotes stay (`"str"`).
fn setting(line: &str, no: usize) -> Option<Setting> {
    let line = line.trim();
    let (option, value) = if let Some(rest) = line.strip_prefix("# CONFIG_") {
        (rest.strip_suffix(" is not set")?, "n")
    } else {
        let (k, v) = line.strip_prefix("CONFIG_")?.split_once('=')?;
        (k, v)
    };
    let ok = !option.is_empty()
        && option
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then(|| Setting {
        option: option.to_string(),
        value: value.trim().to_string(),
        line: no,
    })
}

/// Where a requested value came from: a fragment file (or mmx's own) and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The result of merging fragments onto a base config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The text to write as `.config` before `make olddefconfig`.
    pub text: String,
    /// The last value asked for each option, and where.
    pub requested: BTreeMap<String, (String, Origin)>,
    /// Human lines about fragments that redefine an option another fragment set differently.
    pub overrides: Vec<String>,
}

/// The label mmx's own fragment carries in messages.
pub const MMX_FRAGMENT: &str = "mmx's fragment (`mmx kernels config-fragment`)";

/// Merge `fragments` (label, settings) onto `base` as merge_config.sh does.
pub fn merge(base: &str, fragments: &[(String, Vec<Setting>)]) -> Merged {
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    let mut requested: BTreeMap<String, (String, Origin)> = BTreeMap::new();
    let mut overrides = Vec::new();
    for (file, settings) in fragments {
        for s in settings {
            lines.retain(|l| setting(l, 0).is_none_or(|o| o.option != s.option));
            lines.push(fragment::line(&s.option, &s.value));
            let origin = Origin {
                file: file.clone(),
                line: s.line,
            };
            if let Some((old, was)) = requested.get(&s.option) {
                if *old != s.value {
                    overrides.push(format!(
                        "CONFIG_{}: {} sets {}, overriding {} from {was}",
                        s.option, origin, s.value, old
                    ));
                }
            }
            requested.insert(s.option.clone(), (s.value.clone(), origin));
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Merged {
        text,
        requested,
        overrides,
    }
}

/// An option the final config does not have as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub option: String,
    pub wanted: String,
    /// None: the final config does not mention it (an unknown symbol, or unmet dependencies).
    pub got: Option<String>,
    pub origin: Origin,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let got = match self.got.as_deref() {
            None => "absent (unknown to this tree, or its dependencies are unmet)".to_string(),
            Some("n") => "not set".to_string(),
            Some(v) => v.to_string(),
        };
        write!(
            f,
            "{} (asked by {}; final: {got})",
            fragment::line(&self.option, &self.wanted),
            self.origin
        )
    }
}

/// Every requested option whose final value differs. Asking for `n` is satisfied by an absent
/// option too (olddefconfig omits symbols whose dependencies are off).
pub fn dropped(requested: &BTreeMap<String, (String, Origin)>, fin: &Kconfig) -> Vec<Dropped> {
    requested
        .iter()
        .filter_map(|(option, (wanted, origin))| {
            let got = fin.get(option);
            let ok = match (wanted.as_str(), got) {
                ("n", None | Some("n")) => true,
                (w, Some(g)) => w == g,
                _ => false,
            };
            (!ok).then(|| Dropped {
                option: option.clone(),
                wanted: wanted.clone(),
                got: got.map(str::to_string),
                origin: origin.clone(),
            })
        })
        .collect()
}

/// A need the kernel does not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub need: Need,
    /// The value the config has (`m` without the module shipped, `n`), None when absent.
    pub found: Option<String>,
}

impl Missing {
    pub fn role(&self) -> Role {
        self.need.role
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let found = match (self.found.as_deref(), self.need.module) {
            (Some("m"), Some(m)) => format!("=m but no {m} module is shipped"),
            (Some("n") | None, _) => "not set".to_string(),
            (Some(v), _) => format!("={v}"),
        };
        write!(
            f,
            "CONFIG_{} ({found}; {})",
            self.need.option, self.need.why
        )
    }
}

/// The boot and feature needs `config` does not meet. `=m` meets a need that names a module
/// when `has_module(name)` says the kernel ships it to the guest.
pub fn missing(config: &Kconfig, has_module: &dyn Fn(&str) -> bool) -> Vec<Missing> {
    NEEDS
        .iter()
        .filter(|n| n.role != Role::Minimal)
        .filter_map(|n| {
            let got = config.get(n.option);
            let ok = match got {
                Some("y") => true,
                Some("m") => n.module.is_some_and(has_module),
                _ => false,
            };
            (!ok).then(|| Missing {
                need: *n,
                found: got.map(str::to_string),
            })
        })
        .collect()
}

/// Comma-separated descriptions, for messages.
pub fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a config came from, for provenance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "base", rename_all = "kebab-case")]
pub enum ConfigOrigin {
    /// tinyconfig + mmx's fragment.
    Minimal { fragments: Vec<PathBuf> },
    File {
        path: PathBuf,
        fragments: Vec<PathBuf>,
    },
}

impl ConfigOrigin {
    pub fn describe(&self) -> String {
        let (mut s, fragments) = match self {
            ConfigOrigin::Minimal { fragments } => ("minimal".to_string(), fragments),
            ConfigOrigin::File { path, fragments } => (path.display().to_string(), fragments),
        };
        for f in fragments {
            s.push_str(" + ");
            s.push_str(&f.file_name().map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ));
        }
        s
    }
}

/// Read a config file into a [`Kconfig`].
pub fn read(path: &Path) -> std::io::Result<Kconfig> {
    std::fs::read_to_string(path).map(|t| Kconfig::parse(&t))
}

/// The base `minimal` starts from. tinyconfig over x86_64_defconfig: see kernels/README.md
/// ("Why tinyconfig") for the measurements.
pub const MINIMAL_BASE: &str = "tinyconfig";

/// A configured output directory.
#[derive(Debug, Clone)]
pub struct Configured {
    pub config: Kconfig,
    /// Feature needs it lacks (only possible with a user's config or fragments).
    pub warnings: Vec<Missing>,
}

/// Write `make.out/.config`: the base (tinyconfig or the given file), mmx's fragment for
/// `minimal`, the recipe's fragments, `make olddefconfig`; then check nothing asked for was
/// dropped and, for a user's config, that it has what every guest needs.
pub fn configure(
    make: &Make,
    spec: &ConfigSpec,
    fragments: &[Located<PathBuf>],
    log: &mut BuildLog,
) -> Result<Configured, BuildError> {
    let dot = make.out.join(".config");
    let mut parts: Vec<(String, Vec<Setting>)> = Vec::new();
    let base = match spec {
        ConfigSpec::Minimal => {
            // Into a file of its own: .config is only rewritten when the result changes.
            let base = make.out.join(".config.mmx-base");
            make.quick(&["KCONFIG_CONFIG=.config.mmx-base", MINIMAL_BASE], log)?;
            parts.push((
                MMX_FRAGMENT.to_string(),
                Kconfig::parse_fragment(MMX_FRAGMENT, &fragment::fragment_text())?,
            ));
            std::fs::read_to_string(&base).map_err(BuildError::io("read", &base))?
        }
        ConfigSpec::File(Located { value, line: _ }) => {
            log.note(&format!("base config {}", value.display()));
            std::fs::read_to_string(value).map_err(BuildError::io("read", value))?
        }
    };
    for Located { value, .. } in fragments {
        let text = std::fs::read_to_string(value).map_err(BuildError::io("read", value))?;
        let label = value.display().to_string();
        parts.push((label.clone(), Kconfig::parse_fragment(&label, &text)?));
    }
    let merged = merge(&base, &parts);
    for o in &merged.overrides {
        log.note(o);
    }
    // The same input as last time: leave .config (olddefconfig's result) and its mtime alone,
    // so an incremental build has nothing to redo for the config.
    let stamp = make.out.join(".config.mmx-merged");
    let same =
        dot.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&merged.text);
    if !same {
        std::fs::write(&dot, &merged.text).map_err(BuildError::io("write", &dot))?;
        std::fs::write(&stamp, &merged.text).map_err(BuildError::io("write", &stamp))?;
    }
    make.quick(&["olddefconfig"], log)?;
    let fin = read(&dot).map_err(BuildError::io("read", &dot))?;
    let lost = dropped(&merged.requested, &fin);
    if !lost.is_empty() {
        return Err(BuildError::Dropped {
            dropped: lost,
            config: dot,
            log: log.path().to_path_buf(),
        });
    }
    // Modules a config builds are installed into the guest's initramfs by mmx.
    let modular = fin.is_on("MODULES");
    let (boot, warnings): (Vec<Missing>, Vec<Missing>) = missing(&fin, &|_| modular)
        .into_iter()
        .partition(|m| m.role() == Role::Boot);
    if !boot.is_empty() {
        return Err(BuildError::Missing {
            missing: boot,
            config: dot,
            log: log.path().to_path_buf(),
        });
    }
    for w in &warnings {
        log.note(&format!("missing feature: {w}"));
    }
    Ok(Configured {
        config: fin,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(file: &str, text: &str) -> (String, Vec<Setting>) {
        (
            file.to_string(),
            Kconfig::parse_fragment(file, text).unwrap(),
        )
    }

    #[test]
    fn parses_settings_and_not_set() {
        let k = Kconfig::parse(
            "#\n# Automatically generated\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_N=64\n",
        );
        assert_eq!(k.get("A"), Some("y"));
        assert_eq!(k.get("B"), Some("n"));
        assert_eq!(k.get("C"), Some("\"x y\""));
        assert_eq!(k.get("N"), Some("64"));
        assert_eq!(k.get("D"), None);
        assert!(k.is_on("A") && !k.is_on("B"));
    }

    #[test]
    fn a_bad_fragment_line_names_file_and_line() {
        let e =
            Kconfig::parse_fragment("extra.config", "CONFIG_A=y\n\nOVERLAY_FS=y\n").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("extra.config", 3));
        assert!(e.to_string().starts_with("extra.config:3:"), "{e}");
    }

    #[test]
    fn later_fragments_win_and_overrides_are_noted() {
        let base = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n";
        let m = merge(
            base,
            &[
                frag("one", "CONFIG_B=y\nCONFIG_D=y\n"),
                frag("two", "# CONFIG_D is not set\n"),
            ],
        );
        let k = Kconfig::parse(&m.text);
        assert_eq!(k.get("A"), Some("y"));
        assert_eq!(k.get("B"), Some("y"));
        assert_eq!(k.get("C"), Some("m"));
        assert_eq!(k.get("D"), Some("n"));
        assert_eq!(m.text.matches("CONFIG_D").count(), 1, "{}", m.text);
        assert_eq!(m.requested["D"].1.to_string(), "two:1");
        assert_eq!(m.overrides.len(), 1);
        assert!(m.overrides[0].contains("CONFIG_D"), "{:?}", m.overrides);
    }

    #[test]
    fn dropped_names_what_olddefconfig_lost() {
        let m = merge(
            "",
            &[frag(
                "x.config",
                "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n# CONFIG_E is not set\n",
            )],
        );
        let fin = Kconfig::parse("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_E=y\n");
        let d = dropped(&m.requested, &fin);
        let names: Vec<_> = d.iter().map(|d| d.option.as_str()).collect();
        assert_eq!(names, ["B", "E"]);
        let text = d[0].to_string();
        assert!(
            text.contains("CONFIG_B=y") && text.contains("x.config:2") && text.contains("not set"),
            "{text}"
        );
    }

    #[test]
    fn missing_accepts_modules_only_when_shipped() {
        let mut text = String::new();
        for n in NEEDS.iter().filter(|n| n.role != Role::Minimal) {
            text.push_str(&format!(
                "CONFIG_{}={}\n",
                n.option,
                if n.module.is_some() { "m" } else { "y" }
            ));
        }
        let k = Kconfig::parse(&text);
        assert!(missing(&k, &|_| true).is_empty());
        let without_overlay = missing(&k, &|m| m != "overlay");
        assert_eq!(without_overlay.len(), 1);
        assert_eq!(without_overlay[0].need.option, "OVERLAY_FS");
        assert!(
            without_overlay[0].to_string().contains("no overlay module"),
            "{}",
            without_overlay[0]
        );
        let k = Kconfig::parse(&text.replace("CONFIG_USER_NS=y", "# CONFIG_USER_NS is not set"));
        let m = missing(&k, &|_| true);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].role(), Role::Boot);
        assert!(
            m[0].to_string().starts_with("CONFIG_USER_NS (not set;"),
            "{}",
            m[0]
        );
    }

    #[test]
    fn the_cached_debian_configs_meet_every_need() {
        // Real configs when a test on this machine fetched them; nothing to check otherwise.
        let Ok(cache) = crate::debian::Cache::from_env() else {
            return;
        };
        let Ok(dirs) = std::fs::read_dir(cache.root().join("kernels")) else {
            return;
        };
        for d in dirs.flatten() {
            // Debian's kernels only: a user's own entries may lack anything.
            let debian = std::fs::read_to_string(d.path().join("kernel.json"))
                .is_ok_and(|j| j.contains("\"source\": \"debian\""));
            let Ok(text) = std::fs::read_to_string(d.path().join("config")) else {
                continue;
            };
            if !debian {
                continue;
            }
            let k = Kconfig::parse(&text);
            // Debian ships every module mmx asks for.
            let m = missing(&k, &|_| true);
            assert!(m.is_empty(), "{}: {}", d.path().display(), list(&m));
        }
    }
}

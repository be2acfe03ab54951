//! Kernel recipes: `kernels/<name>.toml`, one kernel each.
//!
//! Two stages, as everywhere in mmx: serde types that mirror the file (every value [`Spanned`],
//! so an error can point at its line), then [`Recipe`], checked, with an enum where the file has
//! a choice. A recipe says *what* kernel to use; `kernels.lock` says *which exact* packages.
//!
//! ```toml
//! description = "Debian 12 (bookworm) cloud kernel"
//! [debian]
//! suite = "bookworm"                  # one of apt::SUITES
//! package = "linux-image-cloud-amd64" # a meta-package (resolved at lock time) or an exact image
//! extra_modules = ["virtio_console"]  # optional, beyond the built-in set
//! ```
//! or, for a kernel built by hand:
//! ```toml
//! [path]
//! vmlinuz = "/home/me/linux/arch/x86/boot/bzImage"
//! modules = "/home/me/mods/lib/modules/7.3.0"   # optional: a `make modules_install` tree
//! config = "/home/me/linux/.config"             # optional
//! ```
//! or a kernel mmx builds (see [`super::source`]):
//! ```toml
//! [source]
//! debian = "linux-source-6.12"
//! patches = ["patches/*.patch"]
//! config = "minimal"
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::source::{self, RawSource, SourceSpec};
use super::KernelError;
use crate::debian::apt::SUITES;
use crate::debian::lock::line_of;

/// A checked kernel recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The file stem: `debian-6.1` for `kernels/debian-6.1.toml`.
    pub name: String,
    /// The file the recipe came from, for error messages.
    pub file: PathBuf,
    pub description: String,
    pub source: RecipeSource,
    /// Modules to ship beyond the built-in set (overlay, virtio_blk, ext4, xfs, btrfs).
    pub extra_modules: Vec<String>,
}

/// Where the kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipeSource {
    /// A Debian package, fetched with apt.
    Debian {
        suite: String,
        /// A meta-package such as `linux-image-cloud-amd64` or an exact `linux-image-<release>`.
        package: String,
    },
    /// A kernel on the local disk.
    Path {
        vmlinuz: PathBuf,
        /// A modules tree (`lib/modules/<release>`); None: the kernel has what it needs built in.
        modules: Option<PathBuf>,
        config: Option<PathBuf>,
    },
    /// Built from source by mmx.
    Build(SourceSpec),
}

impl Recipe {
    /// A short human label of the source: `bookworm/linux-image-cloud-amd64` or the vmlinuz path.
    pub fn source_label(&self) -> String {
        match &self.source {
            RecipeSource::Debian { suite, package } => format!("{suite}/{package}"),
            RecipeSource::Path { vmlinuz, .. } => vmlinuz.display().to_string(),
            RecipeSource::Build(spec) => spec.label(),
        }
    }
}

// Raw serde mirror of the file. Every field optional so that a missing key gets our own message
// with the table's line, not serde's bare "missing field".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    description: Option<Spanned<String>>,
    debian: Option<Spanned<RawDebian>>,
    path: Option<Spanned<RawPath>>,
    source: Option<Spanned<RawSource>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDebian {
    suite: Option<Spanned<String>>,
    package: Option<Spanned<String>>,
    extra_modules: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPath {
    vmlinuz: Option<Spanned<PathBuf>>,
    modules: Option<Spanned<PathBuf>>,
    config: Option<Spanned<PathBuf>>,
    extra_modules: Option<Spanned<Vec<String>>>,
}

/// Load every `*.toml` in `dir`, sorted by name. Any bad recipe fails the whole load: a matrix
/// run must not silently lose a kernel.
pub fn load_recipes(dir: &Path) -> Result<Vec<Recipe>, KernelError> {
    let entries = fs::read_dir(dir).map_err(|e| KernelError::io("read_dir", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| KernelError::io("read_dir", dir, e))?
            .path();
        if path.extension().is_some_and(|x| x == "toml") {
            files.push(path);
        }
    }
    files.sort();
    files.iter().map(|f| load_recipe(f)).collect()
}

/// Load and check one recipe file.
pub fn load_recipe(file: &Path) -> Result<Recipe, KernelError> {
    let text = fs::read_to_string(file).map_err(|e| KernelError::io("read", file, e))?;
    parse_recipe(file, &text)
}

/// Parse recipe text; `file` names it in errors and gives the recipe its name.
pub fn parse_recipe(file: &Path, text: &str) -> Result<Recipe, KernelError> {
    let bad = |span: Range<usize>, key: &str, message: String| KernelError::Recipe {
        file: file.to_path_buf(),
        line: line_of(text, span.start),
        key: key.to_string(),
        message,
    };
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(0..0, "(file name)", "recipe file name is not UTF-8".into()))?
        .to_string();
    let raw: RawRecipe = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        bad(
            span,
            &key_in_message(e.message()),
            e.message().trim().to_string(),
        )
    })?;
    let RawRecipe {
        description,
        debian,
        path,
        source,
    } = raw;
    let description = description.map(Spanned::into_inner).unwrap_or_default();
    // The second table in file order is the one to point at.
    let mut spans: Vec<(&str, Range<usize>)> = [
        ("debian", debian.as_ref().map(Spanned::span)),
        ("path", path.as_ref().map(Spanned::span)),
        ("source", source.as_ref().map(Spanned::span)),
    ]
    .into_iter()
    .filter_map(|(k, s)| Some((k, s?)))
    .collect();
    spans.sort_by_key(|(_, s)| s.start);
    if let [_, (second, span), ..] = spans.as_slice() {
        return Err(bad(
            span.clone(),
            second,
            "a recipe has one of a [debian], [path] or [source] table".into(),
        ));
    }
    let (source, extra) = match (debian, path, source) {
        (None, None, None) => {
            return Err(bad(
                0..0,
                "debian",
                "missing table: a recipe needs a [debian], [path] or [source] table".into(),
            ))
        }
        (None, None, Some(s)) => {
            let span = s.span();
            let mut raw = s.into_inner();
            let extra = raw.extra_modules.take();
            let base_dir = file.parent().unwrap_or(Path::new("."));
            let line = |offset: usize| line_of(text, offset);
            let cx = source::Ctx {
                base_dir,
                line_of: &line,
                bad: &bad,
            };
            (RecipeSource::Build(source::check(raw, span, &cx)?), extra)
        }
        (Some(d), _, _) => {
            let span = d.span();
            let RawDebian {
                suite,
                package,
                extra_modules,
            } = d.into_inner();
            let suite = suite
                .ok_or_else(|| bad(span.clone(), "debian.suite", "missing key `suite`".into()))?;
            if !SUITES.contains(&suite.get_ref().as_str()) {
                return Err(bad(
                    suite.span(),
                    "debian.suite",
                    format!(
                        "unknown suite `{}` (known: {})",
                        suite.get_ref(),
                        SUITES.join(", ")
                    ),
                ));
            }
            let package = package.ok_or_else(|| {
                bad(
                    span.clone(),
                    "debian.package",
                    "missing key `package`".into(),
                )
            })?;
            if !package.get_ref().starts_with("linux-image-") {
                return Err(bad(
                    package.span(),
                    "debian.package",
                    format!(
                        "`{}` is not a kernel image package (expected linux-image-…)",
                        package.get_ref()
                    ),
                ));
            }
            let source = RecipeSource::Debian {
                suite: suite.into_inner(),
                package: package.into_inner(),
            };
            (source, extra_modules)
        }
        (None, Some(p), _) => {
            let span = p.span();
            let RawPath {
                vmlinuz,
                modules,
                config,
                extra_modules,
            } = p.into_inner();
            let vmlinuz =
                vmlinuz.ok_or_else(|| bad(span, "path.vmlinuz", "missing key `vmlinuz`".into()))?;
            // Relative paths are relative to the recipe's directory, so a checkout can carry
            // its own test kernel.
            let base = file.parent().unwrap_or(Path::new("."));
            let source = RecipeSource::Path {
                vmlinuz: base.join(vmlinuz.into_inner()),
                modules: modules.map(|m| base.join(m.into_inner())),
                config: config.map(|c| base.join(c.into_inner())),
            };
            (source, extra_modules)
        }
    };
    let extra_modules = match extra {
        None => Vec::new(),
        Some(list) => {
            let span = list.span();
            let list = list.into_inner();
            if let Some(m) = list.iter().find(|m| !is_module_name(m)) {
                return Err(bad(
                    span,
                    "extra_modules",
                    format!("`{m}` is not a module name (letters, digits, `_` and `-`)"),
                ));
            }
            list
        }
    };
    Ok(Recipe {
        name,
        file: file.to_path_buf(),
        description,
        source,
        extra_modules,
    })
}

fn is_module_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// toml names the offending key in backquotes (`unknown field `sute``); pull it out so the error
/// has a key even when the parser found it.
fn key_in_message(message: &str) -> String {
    // Syntax errors quote punctuation (expected `.`, `]`): only a word counts as a key.
    match message.split('`').nth(1) {
        Some(key) if is_module_name(key) => key.to_string(),
        _ => "(syntax)".to_string(),
    }
}

/// Recipes by name, for lookups from the command line.
pub fn by_name(recipes: &[Recipe]) -> BTreeMap<&str, &Recipe> {
    recipes.iter().map(|r| (r.name.as_str(), r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Recipe, KernelError> {
        parse_recipe(Path::new("kernels/debian-x.toml"), text)
    }

    fn err(text: &str) -> (usize, String, String) {
        match parse(text) {
            Err(KernelError::Recipe {
                file,
                line,
                key,
                message,
            }) => {
                assert_eq!(file, Path::new("kernels/debian-x.toml"));
                (line, key, message)
            }
            other => panic!("expected a recipe error, got {other:?}"),
        }
    }

    #[test]
    fn debian_recipe_parses() {
        let r = parse(
            "description = \"d\"\n[debian]\nsuite = \"trixie\"\npackage = \"linux-image-cloud-amd64\"\nextra_modules = [\"virtio_console\"]\n",
        )
        .unwrap();
        assert_eq!(r.name, "debian-x");
        assert_eq!(
            r.source,
            RecipeSource::Debian {
                suite: "trixie".into(),
                package: "linux-image-cloud-amd64".into()
            }
        );
        assert_eq!(r.extra_modules, vec!["virtio_console".to_string()]);
    }

    #[test]
    fn path_recipe_resolves_relative_paths() {
        let r = parse("[path]\nvmlinuz = \"bzImage\"\nmodules = \"/m\"\n").unwrap();
        assert_eq!(
            r.source,
            RecipeSource::Path {
                vmlinuz: "kernels/bzImage".into(),
                modules: Some("/m".into()),
                config: None
            }
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let (line, key, msg) = err("[debian]\npackage = \"linux-image-cloud-amd64\"\n");
        assert_eq!((line, key.as_str()), (1, "debian.suite"), "{msg}");

        let (line, key, msg) = err("[debian]\nsuite = \"buster\"\npackage = \"linux-image-x\"\n");
        assert_eq!((line, key.as_str()), (2, "debian.suite"));
        assert!(msg.contains("buster") && msg.contains("bookworm"), "{msg}");

        let (line, key, _) = err("[debian]\nsute = \"bookworm\"\n");
        assert_eq!((line, key.as_str()), (2, "sute"));

        let (line, key, _) = err("\n\n[debian\nsuite = 1\n");
        assert_eq!(line, 3);
        assert_eq!(key, "(syntax)");

        let (_, key, _) = err("description = \"x\"\n");
        assert_eq!(key, "debian");

        let (line, key, _) = err("[debian]\nsuite = \"sid\"\npackage = \"linux-headers-amd64\"\n");
        assert_eq!((line, key.as_str()), (3, "debian.package"));

        let (_, key, _) = err("[path]\nvmlinuz = \"v\"\nextra_modules = [\"a b\"]\n");
        assert_eq!(key, "extra_modules");

        let full = KernelError::Recipe {
            file: "kernels/a.toml".into(),
            line: 4,
            key: "debian.suite".into(),
            message: "m".into(),
        }
        .to_string();
        assert!(
            full.starts_with("kernels/a.toml:4: key `debian.suite`"),
            "{full}"
        );
    }

    #[test]
    fn source_recipes_parse() {
        use crate::kernels::source::{ConfigSpec, PatchSpec, SourceBase};
        let r = parse(
            "description = \"d\"\n[source]\ndebian = \"linux-source-6.12\"\npatches = [\"p/*.patch\", \"x.diff\"]\nconfig = \"minimal\"\nfragments = [\"extra.config\"]\n",
        )
        .unwrap();
        let RecipeSource::Build(spec) = &r.source else {
            panic!("{:?}", r.source)
        };
        assert_eq!(
            spec.base,
            SourceBase::Debian {
                package: "linux-source-6.12".into(),
                suite: None
            }
        );
        let PatchSpec::Files(globs) = &spec.patches else {
            panic!("{:?}", spec.patches)
        };
        assert_eq!((globs[0].value.as_str(), globs[0].line), ("p/*.patch", 4));
        assert_eq!(spec.config, ConfigSpec::Minimal);
        assert_eq!(spec.fragments[0].value, Path::new("kernels/extra.config"));
        assert_eq!(spec.fragments[0].line, 6);

        let r = parse("[source]\ntree = \"../linux\"\nrev = \"v6.15\"\nmbox = \"s.mbx\"\nconfig = \"configs/my.config\"\n").unwrap();
        let RecipeSource::Build(spec) = &r.source else {
            panic!()
        };
        let SourceBase::Git { tree, rev } = &spec.base else {
            panic!()
        };
        assert_eq!(
            (tree.value.as_path(), rev.as_str()),
            (Path::new("kernels/../linux"), "v6.15")
        );
        assert!(
            matches!(&spec.patches, PatchSpec::Mbox(m) if m.value == Path::new("kernels/s.mbx"))
        );
        assert!(
            matches!(&spec.config, ConfigSpec::File(c) if c.value == Path::new("kernels/configs/my.config"))
        );
    }

    #[test]
    fn source_recipe_errors_name_line_and_key() {
        let cases = [
            ("[source]\npatches = []\n", 1, "source.debian"),
            (
                "[source]\ndebian = \"linux-image-amd64\"\n",
                2,
                "source.debian",
            ),
            (
                "[source]\ndebian = \"linux-source-6.12\"\nrev = \"x\"\n",
                3,
                "source.rev",
            ),
            ("[source]\ntree = \"/l\"\n", 2, "source.rev"),
            (
                "[source]\ntree = \"/l\"\nrev = \"v1\"\ndebian = \"linux-source-6.12\"\n",
                2,
                "source.tree",
            ),
            (
                "[source]\ndebian = \"linux-source-6.12\"\npatches = [\"a\"]\nmbox = \"m\"\n",
                4,
                "source.mbox",
            ),
            (
                "[source]\ndebian = \"linux-source-6.12\"\nconfig = \"minimall\"\n",
                3,
                "source.config",
            ),
            (
                "[source]\ndebian = \"linux-source-6.12\"\nsuite = \"buster\"\n",
                3,
                "source.suite",
            ),
            (
                "[source]\ndebian = \"linux-source-6.12\"\nconfg = \"minimal\"\n",
                3,
                "confg",
            ),
            (
                "[source]\ndebian = \"linux-source-6.12\"\n[path]\nvmlinuz = \"v\"\n",
                3,
                "path",
            ),
        ];
        for (text, want_line, want_key) in cases {
            let (line, key, msg) = err(text);
            assert_eq!((line, key.as_str()), (want_line, want_key), "{text}: {msg}");
        }
    }

    #[test]
    fn the_repository_recipes_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels");
        let recipes = load_recipes(&dir).unwrap();
        let names: Vec<_> = recipes.iter().map(|r| r.name.as_str()).collect();
        for want in ["debian-6.1", "debian-6.12", "debian-7.x"] {
            assert!(names.contains(&want), "{names:?}");
        }
    }
}

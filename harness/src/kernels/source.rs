//! `[source]` recipes: a kernel mmx builds itself, from Debian's `linux-source-X` package or a
//! git tree at a revision, with a patch series, configured with mmx's minimal config or a given
//! `.config`.
//!
//! ```toml
//! [source]
//! debian = "linux-source-6.12"     # or: tree = "~/src/linux", rev = "v6.15-rc1"
//! suite = "trixie"                 # optional, debian only: where to look (default: first suite carrying it)
//! patches = ["patches/*.patch"]    # applied in order; or mbox = "series.mbx"
//! config = "minimal"               # (the default) or a path to a .config
//! fragments = ["extra.config"]     # optional, merged on top
//! ```
//! Paths are relative to the recipe's directory; `tree` may start with `~/`.
//!
//! This file is the recipe side (parse and check); [`super::tree`] prepares trees,
//! [`super::patches`] reads and applies series, [`super::build`] runs make.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::KernelError;
use crate::debian::apt::SUITES;

/// A checked `[source]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub base: SourceBase,
    pub patches: PatchSpec,
    pub config: ConfigSpec,
    /// Fragments merged after the base config (and after mmx's fragment for `minimal`).
    pub fragments: Vec<Located<PathBuf>>,
}

/// Where the tree comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceBase {
    /// Debian's `linux-source-X` package (Debian's patches already applied), locked in
    /// kernels.lock like a binary kernel.
    Debian {
        package: String,
        /// None: the first of [`SUITES`] that carries the package, at lock time.
        suite: Option<String>,
    },
    /// A git repository at a revision; mmx builds from its own clone of it, never the checkout.
    Git { tree: Located<PathBuf>, rev: String },
}

/// The patch series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchSpec {
    None,
    /// Globs, each expanded in name order, applied in the order given.
    Files(Vec<Located<String>>),
    /// One mbox of mails (`git format-patch --stdout`, `b4 am`), applied in order.
    Mbox(Located<PathBuf>),
}

/// The base configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSpec {
    /// tinyconfig + mmx's fragment: everything the guest needs, built in.
    Minimal,
    /// A full `.config` (e.g. a distribution's), made current with `make olddefconfig`.
    File(Located<PathBuf>),
}

/// A value with the recipe line it came from, for errors found after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub line: usize,
}

// Raw serde mirror of the table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    debian: Option<Spanned<String>>,
    suite: Option<Spanned<String>>,
    tree: Option<Spanned<PathBuf>>,
    rev: Option<Spanned<String>>,
    patches: Option<Spanned<Vec<Spanned<String>>>>,
    mbox: Option<Spanned<PathBuf>>,
    config: Option<Spanned<String>>,
    fragments: Option<Spanned<Vec<Spanned<PathBuf>>>>,
    pub(crate) extra_modules: Option<Spanned<Vec<String>>>,
}

/// What [`check`] needs from the recipe parser: where relative paths start, and how to turn
/// a span into an error with the recipe's file and line.
pub(crate) struct Ctx<'a> {
    pub base_dir: &'a Path,
    pub line_of: &'a dyn Fn(usize) -> usize,
    pub bad: &'a dyn Fn(Range<usize>, &str, String) -> KernelError,
}

/// Check a `[source]` table.
pub(crate) fn check(
    raw: RawSource,
    table: Range<usize>,
    cx: &Ctx<'_>,
) -> Result<SourceSpec, KernelError> {
    let at = |span: Range<usize>| (cx.line_of)(span.start);
    let RawSource {
        debian,
        suite,
        tree,
        rev,
        patches,
        mbox,
        config,
        fragments,
        extra_modules: _,
    } = raw;
    let base = match (debian, tree) {
        (Some(_), Some(t)) => {
            return Err((cx.bad)(
                t.span(),
                "source.tree",
                "a source has either `debian` or `tree`, not both".into(),
            ))
        }
        (None, None) => return Err((cx.bad)(
            table,
            "source.debian",
            "missing key: a [source] table needs `debian = \"linux-source-X\"` or `tree` and `rev`"
                .into(),
        )),
        (Some(d), None) => {
            if let Some(r) = rev {
                return Err((cx.bad)(
                    r.span(),
                    "source.rev",
                    "`rev` goes with `tree`; a Debian source package has one version, pinned in kernels.lock".into(),
                ));
            }
            if !d.get_ref().starts_with("linux-source-") {
                return Err((cx.bad)(
                    d.span(),
                    "source.debian",
                    format!(
                        "`{}` is not a kernel source package (expected linux-source-…)",
                        d.get_ref()
                    ),
                ));
            }
            if let Some(s) = &suite {
                if !SUITES.contains(&s.get_ref().as_str()) {
                    return Err((cx.bad)(
                        s.span(),
                        "source.suite",
                        format!(
                            "unknown suite `{}` (known: {})",
                            s.get_ref(),
                            SUITES.join(", ")
                        ),
                    ));
                }
            }
            SourceBase::Debian {
                package: d.into_inner(),
                suite: suite.map(Spanned::into_inner),
            }
        }
        (None, Some(t)) => {
            if let Some(s) = suite {
                return Err((cx.bad)(
                    s.span(),
                    "source.suite",
                    "`suite` goes with `debian`".into(),
                ));
            }
            let rev = rev.ok_or_else(|| {
                (cx.bad)(
                    t.span(),
                    "source.rev",
                    "missing key `rev` (a branch, tag or commit of the tree; `HEAD` for its current commit)".into(),
                )
            })?;
            if rev.get_ref().trim().is_empty() || rev.get_ref().starts_with('-') {
                return Err((cx.bad)(
                    rev.span(),
                    "source.rev",
                    format!("`{}` is not a revision", rev.get_ref()),
                ));
            }
            let line = at(t.span());
            SourceBase::Git {
                tree: Located {
                    value: expand_path(cx.base_dir, t.get_ref()),
                    line,
                },
                rev: rev.into_inner(),
            }
        }
    };
    let patches = match (patches, mbox) {
        (Some(_), Some(m)) => {
            return Err((cx.bad)(
                m.span(),
                "source.mbox",
                "a source has either `patches` or `mbox`, not both".into(),
            ))
        }
        (Some(list), None) => {
            let items = list.into_inner();
            if let Some(bad) = items
                .iter()
                .find(|g| g.get_ref().trim().is_empty() || g.get_ref().ends_with('/'))
            {
                return Err((cx.bad)(
                    bad.span(),
                    "source.patches",
                    format!("`{}` names no files", bad.get_ref()),
                ));
            }
            PatchSpec::Files(
                items
                    .into_iter()
                    .map(|g| Located {
                        line: at(g.span()),
                        value: g.into_inner(),
                    })
                    .collect(),
            )
        }
        (None, Some(m)) => PatchSpec::Mbox(Located {
            line: at(m.span()),
            value: cx.base_dir.join(m.into_inner()),
        }),
        (None, None) => PatchSpec::None,
    };
    let config = match config {
        None => ConfigSpec::Minimal,
        Some(c) if c.get_ref() == "minimal" => ConfigSpec::Minimal,
        Some(c) => {
            let v = c.get_ref();
            // A bare word is a misspelt keyword far more often than a file name.
            if !v.contains('/') && !v.contains('.') {
                return Err((cx.bad)(
                    c.span(),
                    "source.config",
                    format!("`{v}`: expected \"minimal\" or a path to a .config file"),
                ));
            }
            ConfigSpec::File(Located {
                line: at(c.span()),
                value: expand_path(cx.base_dir, Path::new(v)),
            })
        }
    };
    let fragments = fragments
        .map(|f| {
            f.into_inner()
                .into_iter()
                .map(|p| Located {
                    line: at(p.span()),
                    value: expand_path(cx.base_dir, p.get_ref()),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(SourceSpec {
        base,
        patches,
        config,
        fragments,
    })
}

/// `~/x` → `$HOME/x`; relative → under the recipe's directory.
fn expand_path(base: &Path, p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            return PathBuf::from(home).join(rest);
        }
    }
    base.join(p)
}

impl SourceSpec {
    /// A short label: `debian linux-source-6.12 + 2 patches` or `~/src/linux@v6.15`.
    pub fn label(&self) -> String {
        let base = match &self.base {
            SourceBase::Debian { package, .. } => format!("debian {package}"),
            SourceBase::Git { tree, rev } => format!("{}@{rev}", tree.value.display()),
        };
        match &self.patches {
            PatchSpec::None => base,
            PatchSpec::Files(g) => format!(
                "{base} + {}",
                g.iter()
                    .map(|g| g.value.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            PatchSpec::Mbox(m) => format!("{base} + {}", m.value.display()),
        }
    }
}

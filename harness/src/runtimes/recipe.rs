//! Runtime recipes: the `[[runtimes]]` tables of a matrix file.
//!
//! ```toml
//! [[runtimes]]
//! name = "containerd-2.1"
//! containerd = { debian = "golang-github-containerd-containerd-dev" }   # suite = "sid" by default
//! # containerd = { tree = "~/src/containerd", rev = "my-branch" }        # a checkout, one commit
//! # storage = { debian = "golang-github-containers-storage-dev" }        # containers/storage
//! # binary = "./my-runtime-mounter"                                      # any static program
//! patches = ["per-layer.patch"]   # Go sources only: applied to them (`-p1`, module root)
//! args = ["--fault", "leak"]      # optional: the runtime's command line (a binary's, mostly)
//! job_timeout_s = 5               # optional: the per-job limit (default 30 s)
//! ```
//!
//! [`RuntimeRecipe`] deserializes from such a table (so the matrix parser can embed it); paths
//! are then made absolute against the file's directory with [`RuntimeRecipe::resolve_paths`].

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use protocol::runtime::DEFAULT_JOB_TIMEOUT_S;
use protocol::RuntimeName;

use super::RuntimeError;
use crate::debian::apt::SUITES;
use crate::results::GoProgram;

/// The suite Debian sources come from unless a recipe says otherwise: the only one whose
/// containerd has idmapped overlays (trixie's 1.7.24 has none) and whose containers/storage is
/// 1.64.
pub const DEFAULT_SUITE: &str = "sid";

/// One runtime of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRecipe", into = "RawRecipe")]
pub struct RuntimeRecipe {
    /// Column id: `runtime:<name>`.
    pub name: RuntimeName,
    pub source: RuntimeSource,
    /// Patches to the Go sources, applied in order (empty for `binary`).
    pub patches: Vec<PathBuf>,
    /// The runtime's arguments when the agent starts it (a test's fault injection, a runtime's
    /// own options). Part of what a cell ran: in its provenance.
    pub args: Vec<String>,
    /// Longest one job may take from request to answer (`protocol::limits`).
    pub job_timeout_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeSource {
    /// A job program built against a project's own sources.
    Go {
        program: GoProgram,
        source: GoSource,
    },
    /// A static executable that speaks the runtime contract.
    Binary(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoSource {
    /// A Debian package of the project's sources (`golang-github-containerd-containerd-dev`,
    /// `golang-github-containers-storage-dev`), pinned in `runtimes.lock`.
    Debian { package: String, suite: String },
    /// A git checkout of the project, built at `rev` with its own go.mod (see the README on what
    /// must be available offline).
    Tree { tree: PathBuf, rev: String },
}

/// The table as written, before the checks that give clear messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    containerd: Option<RawGoSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    storage: Option<RawGoSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    binary: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    patches: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job_timeout_s: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGoSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    debian: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    suite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tree: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rev: Option<String>,
}

impl TryFrom<RawRecipe> for RuntimeRecipe {
    type Error = String;

    fn try_from(raw: RawRecipe) -> Result<RuntimeRecipe, String> {
        let name: RuntimeName = raw.name.parse().map_err(|e| format!("runtimes: {e}"))?;
        let at = |msg: String| format!("runtime `{name}`: {msg}");
        let job_timeout_s = protocol::limits::RUNTIME_JOB_TIMEOUT_S
            .check(raw.job_timeout_s.unwrap_or(DEFAULT_JOB_TIMEOUT_S))
            .map_err(|e| at(e.to_string()))?;
        let mut given: Vec<&str> = Vec::new();
        given.extend(raw.containerd.as_ref().map(|_| "containerd"));
        given.extend(raw.storage.as_ref().map(|_| "storage"));
        given.extend(raw.binary.as_ref().map(|_| "binary"));
        if given.len() > 1 {
            return Err(at(format!(
                "give one of `containerd`, `storage` or `binary`, not {}",
                given.join(" and ")
            )));
        }
        let source = match (raw.containerd, raw.storage, raw.binary) {
            (Some(c), _, _) => RuntimeSource::Go {
                program: GoProgram::Containerd,
                source: go_source(GoProgram::Containerd, c).map_err(at)?,
            },
            (None, Some(c), _) => RuntimeSource::Go {
                program: GoProgram::Storage,
                source: go_source(GoProgram::Storage, c).map_err(at)?,
            },
            (None, None, Some(binary)) => {
                if !raw.patches.is_empty() {
                    return Err(at(
                        "`patches` apply to Go sources (containerd, storage); a `binary` is used as built".into(),
                    ));
                }
                RuntimeSource::Binary(binary)
            }
            (None, None, None) => {
                return Err(at(
                    "give `containerd = { debian = \"PACKAGE\" }`, `containerd = { tree = \"PATH\", rev = \"REV\" }`, the same for `storage` (containers/storage), or `binary = \"PATH\"`".into(),
                ))
            }
        };
        Ok(RuntimeRecipe {
            name,
            source,
            patches: raw.patches,
            args: raw.args,
            job_timeout_s,
        })
    }
}

fn go_source(program: GoProgram, c: RawGoSource) -> Result<GoSource, String> {
    let key = program.key();
    match c {
        RawGoSource {
            debian: Some(package),
            suite,
            tree: None,
            rev: None,
        } => {
            let suite = suite.unwrap_or_else(|| DEFAULT_SUITE.to_string());
            if !SUITES.contains(&suite.as_str()) {
                return Err(format!(
                    "{key}.suite = \"{suite}\": not one of {}",
                    SUITES.join(", ")
                ));
            }
            if package.is_empty() {
                return Err(format!("{key}.debian: empty package name"));
            }
            Ok(GoSource::Debian { package, suite })
        }
        RawGoSource {
            debian: None,
            suite: None,
            tree: Some(tree),
            rev: Some(rev),
        } if !rev.is_empty() => Ok(GoSource::Tree { tree, rev }),
        RawGoSource {
            tree: Some(_),
            rev: None,
            ..
        } => Err(format!(
            "{key}.tree needs `rev` (a branch, tag or commit to build)"
        )),
        _ => Err(format!(
            "{key} takes either `debian` (and optionally `suite`) or `tree` and `rev`"
        )),
    }
}

impl From<RuntimeRecipe> for RawRecipe {
    fn from(r: RuntimeRecipe) -> RawRecipe {
        let mut raw = RawRecipe {
            name: r.name.to_string(),
            containerd: None,
            storage: None,
            binary: None,
            patches: r.patches,
            args: r.args,
            job_timeout_s: (r.job_timeout_s != DEFAULT_JOB_TIMEOUT_S).then_some(r.job_timeout_s),
        };
        match r.source {
            RuntimeSource::Binary(b) => raw.binary = Some(b),
            RuntimeSource::Go { program, source } => {
                let g = match source {
                    GoSource::Debian { package, suite } => RawGoSource {
                        debian: Some(package),
                        suite: Some(suite),
                        ..RawGoSource::default()
                    },
                    GoSource::Tree { tree, rev } => RawGoSource {
                        tree: Some(tree),
                        rev: Some(rev),
                        ..RawGoSource::default()
                    },
                };
                match program {
                    GoProgram::Containerd => raw.containerd = Some(g),
                    GoProgram::Storage => raw.storage = Some(g),
                }
            }
        }
        raw
    }
}

impl RuntimeRecipe {
    /// Make `binary`, `tree` and `patches` absolute: `~/` is `$HOME`, anything else relative is
    /// relative to `base` (the directory of the file the recipe came from).
    pub fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
            if let (Ok(rest), Some(home)) = (p.strip_prefix("~"), home) {
                *p = PathBuf::from(home).join(rest);
            } else if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match &mut self.source {
            RuntimeSource::Binary(b) => abs(b),
            RuntimeSource::Go {
                source: GoSource::Tree { tree, .. },
                ..
            } => abs(tree),
            RuntimeSource::Go {
                source: GoSource::Debian { .. },
                ..
            } => {}
        }
        self.patches.iter_mut().for_each(abs);
    }

    /// One short label: `debian sid golang-github-containerd-containerd-dev`.
    pub fn source_label(&self) -> String {
        let base = match &self.source {
            RuntimeSource::Binary(b) => format!("binary {}", b.display()),
            RuntimeSource::Go {
                source: GoSource::Debian { package, suite },
                ..
            } => format!("debian {suite} {package}"),
            RuntimeSource::Go {
                program,
                source: GoSource::Tree { tree, rev },
            } => format!("{} tree {} @ {rev}", program.key(), tree.display()),
        };
        let base = if self.patches.is_empty() {
            base
        } else {
            format!("{base} + {} patch(es)", self.patches.len())
        };
        if self.args.is_empty() {
            base
        } else {
            format!("{base} with args {}", self.args.join(" "))
        }
    }
}

/// The `[[runtimes]]` of a TOML file (a matrix; every other key is left to its own parser),
/// with paths resolved against the file's directory. Names must be unique.
pub fn load_recipes(file: &Path) -> Result<Vec<RuntimeRecipe>, RuntimeError> {
    let text = fs::read_to_string(file).map_err(|e| RuntimeError::io("read", file, e))?;
    parse_recipes(file, &text)
}

pub fn parse_recipes(file: &Path, text: &str) -> Result<Vec<RuntimeRecipe>, RuntimeError> {
    #[derive(Deserialize)]
    struct Only {
        #[serde(default)]
        runtimes: Vec<RuntimeRecipe>,
    }
    let bad = |line: usize, message: String| RuntimeError::Recipe {
        file: file.to_path_buf(),
        line,
        message,
    };
    let only: Only = toml::from_str(text).map_err(|e| {
        bad(
            crate::debian::lock::line_of(text, e.span().map_or(0, |s| s.start)),
            e.message().trim().to_string(),
        )
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut recipes = only.runtimes;
    for (i, r) in recipes.iter().enumerate() {
        if recipes[..i].iter().any(|o| o.name == r.name) {
            return Err(bad(1, format!("runtimes: `{}` is defined twice", r.name)));
        }
    }
    recipes.iter_mut().for_each(|r| r.resolve_paths(base));
    Ok(recipes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<RuntimeRecipe>, String> {
        parse_recipes(Path::new("/m/matrix.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_three_sources_parse() {
        let r = parse(
            r#"
kernels = ["ignored by this parser"]
[[runtimes]]
name = "containerd-2.1"
containerd = { debian = "golang-github-containerd-containerd-dev" }

[[runtimes]]
name = "pr"
containerd = { tree = "src/containerd", rev = "my-branch" }
patches = ["p/one.patch"]

[[runtimes]]
name = "mine"
binary = "/opt/mounter"
args = ["--fault", "leak"]
job_timeout_s = 5

[[runtimes]]
name = "crio"
storage = { debian = "golang-github-containers-storage-dev" }
patches = ["group.patch"]
"#,
        )
        .unwrap();
        assert_eq!(
            r[3].source,
            RuntimeSource::Go {
                program: GoProgram::Storage,
                source: GoSource::Debian {
                    package: "golang-github-containers-storage-dev".into(),
                    suite: "sid".into()
                }
            }
        );
        let back: RuntimeRecipe = toml::from_str(&toml::to_string(&r[3]).unwrap()).unwrap();
        assert_eq!(back, r[3]);
        assert_eq!((r[2].args.len(), r[2].job_timeout_s), (2, 5));
        assert_eq!(r[0].job_timeout_s, DEFAULT_JOB_TIMEOUT_S);
        assert_eq!(
            r[0].source,
            RuntimeSource::Go {
                program: GoProgram::Containerd,
                source: GoSource::Debian {
                    package: "golang-github-containerd-containerd-dev".into(),
                    suite: "sid".into()
                }
            }
        );
        assert_eq!(
            r[1].source,
            RuntimeSource::Go {
                program: GoProgram::Containerd,
                source: GoSource::Tree {
                    tree: "/m/src/containerd".into(),
                    rev: "my-branch".into()
                }
            }
        );
        assert_eq!(r[1].patches, vec![PathBuf::from("/m/p/one.patch")]);
        assert_eq!(r[2].source, RuntimeSource::Binary("/opt/mounter".into()));
        // Round trip through the table form (what a run record may store).
        let back: RuntimeRecipe = toml::from_str(&toml::to_string(&r[1]).unwrap()).unwrap();
        assert_eq!(back, r[1]);
    }

    #[test]
    fn bad_recipes_name_the_line_and_the_fix() {
        let e = parse("[[runtimes]]\nname = \"x\"\n").unwrap_err();
        assert!(
            e.contains("matrix.toml:1") && e.contains("binary = "),
            "{e}"
        );
        let e =
            parse("[[runtimes]]\nname = \"x\"\nbinary = \"b\"\ncontainerd = { debian = \"p\" }\n")
                .unwrap_err();
        assert!(e.contains("not containerd and binary"), "{e}");
        let e = parse("[[runtimes]]\nname = \"x\"\nstorage = { tree = \"t\" }\n").unwrap_err();
        assert!(e.contains("storage.tree needs `rev`"), "{e}");
        let e = parse("[[runtimes]]\nname = \"x\"\ncontainerd = { tree = \"t\" }\n").unwrap_err();
        assert!(e.contains("needs `rev`"), "{e}");
        let e = parse(
            "[[runtimes]]\nname = \"x\"\ncontainerd = { debian = \"p\", suite = \"jessie\" }\n",
        )
        .unwrap_err();
        assert!(e.contains("jessie") && e.contains("sid"), "{e}");
        let e =
            parse("[[runtimes]]\nname = \"x\"\nbinary = \"b\"\npatches = [\"p\"]\n").unwrap_err();
        assert!(e.contains("used as built"), "{e}");
        let e = parse("\n[[runtimes]]\nname = \"a b\"\nbinary = \"b\"\n").unwrap_err();
        assert!(e.contains("runtime:a b"), "{e}");
        let e =
            parse("[[runtimes]]\nname = \"x\"\nbinary = \"b\"\njob_timeout_s = 0\n").unwrap_err();
        assert!(e.contains("job_timeout_s = 0"), "{e}");
        let e = parse("[[runtimes]]\nname = \"x\"\nbinray = \"b\"\n").unwrap_err();
        assert!(e.contains("matrix.toml:3") && e.contains("binray"), "{e}");
        let e = parse("[[runtimes]]\nname = \"x\"\nbinary = \"b\"\n[[runtimes]]\nname = \"x\"\nbinary = \"c\"\n")
            .unwrap_err();
        assert!(e.contains("defined twice"), "{e}");
    }

    #[test]
    fn home_is_expanded() {
        let mut r = RuntimeRecipe {
            name: "t".parse().unwrap(),
            source: RuntimeSource::Go {
                program: GoProgram::Containerd,
                source: GoSource::Tree {
                    tree: "~/src/containerd".into(),
                    rev: "main".into(),
                },
            },
            patches: vec![],
            args: vec![],
            job_timeout_s: DEFAULT_JOB_TIMEOUT_S,
        };
        r.resolve_paths(Path::new("/m"));
        let RuntimeSource::Go {
            source: GoSource::Tree { tree, .. },
            ..
        } = &r.source
        else {
            unreachable!()
        };
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            assert_eq!(*tree, PathBuf::from(home).join("src/containerd"));
        }
    }
}

//! A run's runtimes: every runtime a selected cell names, made ready ([`super::ensure`]: from the
//! cache, or downloaded and built) once, before any boot, as a run fetches its kernels once.
//! A runtime that cannot be made ready is not an error of the run: its cells end `infra-error`
//! with the reason, and every other cell runs.
//!
//! Each ready runtime is identified by the SHA-256 of its executable: the backends copy it into
//! guests (the initramfs), beside the plan (local) or onto hosts (ssh) and check every copy
//! against it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::{PlanRuntime, RuntimeName};

use super::{ensure_with, RuntimeRecipe, RuntimesLock};
use crate::debian::deb::sha256_file;
use crate::debian::{Cache, LockDocument, LockPolicy};
use crate::events::{Note, Sink};
use crate::results::{CellRuntime, RuntimeBuild, RuntimeRecord};

/// One runtime, ready to be copied where its cells run.
#[derive(Debug, Clone)]
pub struct ReadyRuntime {
    pub resolved: super::ResolvedRuntime,
    /// SHA-256 of the executable.
    pub sha256: String,
    pub args: Vec<String>,
    pub job_timeout_s: u64,
}

impl ReadyRuntime {
    /// The plan's entry, with the executable where it is on this machine (each backend points
    /// `path` at its own copy).
    pub fn plan_entry(&self) -> PlanRuntime {
        PlanRuntime {
            name: self.resolved.name.clone(),
            path: self.resolved.binary.clone(),
            args: self.args.clone(),
            job_timeout_s: self.job_timeout_s,
            sha256: self.sha256.clone(),
        }
    }
}

/// The runtimes of one run, each ready or with the reason it is not.
#[derive(Debug, Default)]
pub struct RunRuntimes {
    ready: BTreeMap<RuntimeName, Result<Arc<ReadyRuntime>, String>>,
    records: Vec<RuntimeRecord>,
}

impl RunRuntimes {
    /// Make ready every runtime in `used` (each must have a recipe: the matrix checked that),
    /// telling `sink` what happened; `policy` says what a runtime whose locked packages the
    /// archive dropped gets.
    pub fn prepare(
        recipes: &[RuntimeRecipe],
        used: &BTreeSet<RuntimeName>,
        lock_path: &Path,
        policy: LockPolicy,
        sink: &dyn Sink,
    ) -> RunRuntimes {
        let mut out = RunRuntimes::default();
        if used.is_empty() {
            return out;
        }
        let setup = Cache::from_env()
            .map_err(|e| e.to_string())
            .and_then(|cache| {
                RuntimesLock::load(lock_path)
                    .map(|lock| (cache, lock))
                    .map_err(|e| e.to_string())
            });
        for name in used {
            let Some(recipe) = recipes.iter().find(|r| &r.name == name) else {
                out.fail(name, None, format!("no [[runtimes]] entry named `{name}`"));
                continue;
            };
            let (cache, lock) = match &setup {
                Ok(s) => s,
                Err(e) => {
                    out.fail(name, Some(recipe), e.clone());
                    continue;
                }
            };
            let made = ensure_with(recipe, lock, lock_path, cache, policy, sink)
                .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
                .and_then(|resolved| {
                    let sha256 = sha256_file(&resolved.binary).map_err(|e| e.to_string())?;
                    Ok(ReadyRuntime {
                        resolved,
                        sha256,
                        args: recipe.args.clone(),
                        job_timeout_s: recipe.job_timeout_s,
                    })
                });
            match made {
                Ok(rt) => {
                    let t = rt.resolved.timings;
                    sink.note(Note::info(format!(
                        "runtime {name}: {} ({})",
                        rt.resolved.provenance.describe(),
                        if t.cached {
                            "cached".to_string()
                        } else {
                            format!("built in {:.1} s", t.total.as_secs_f64())
                        }
                    )));
                    out.records.push(RuntimeRecord {
                        name: name.clone(),
                        describe: rt.resolved.provenance.describe(),
                        provenance: Some(rt.resolved.provenance.clone()),
                        args: rt.args.clone(),
                        sha256: Some(rt.sha256.clone()),
                        build: Some(RuntimeBuild {
                            cached: t.cached,
                            seconds: t.total.as_secs_f64(),
                        }),
                        substituted: rt.resolved.substituted.clone(),
                        error: None,
                    });
                    out.ready.insert(name.clone(), Ok(Arc::new(rt)));
                }
                Err(e) => {
                    sink.note(Note::warning(format!(
                        "runtime {name}: not ready, its cells end infra-error: {e}"
                    )));
                    out.fail(name, Some(recipe), e);
                }
            }
        }
        out
    }

    fn fail(&mut self, name: &RuntimeName, recipe: Option<&RuntimeRecipe>, why: String) {
        self.records.push(RuntimeRecord {
            name: name.clone(),
            describe: recipe.map_or_else(String::new, RuntimeRecipe::source_label),
            provenance: None,
            args: recipe.map(|r| r.args.clone()).unwrap_or_default(),
            sha256: None,
            build: None,
            substituted: None,
            error: Some(why.clone()),
        });
        self.ready.insert(name.clone(), Err(why));
    }

    /// The runtime, or why it is not ready (None: not one of this run's).
    pub fn get(&self, name: &RuntimeName) -> Option<&Result<Arc<ReadyRuntime>, String>> {
        self.ready.get(name)
    }

    /// What run.json records of each runtime.
    pub fn records(&self) -> Vec<RuntimeRecord> {
        self.records.clone()
    }

    /// Every ready runtime among `names`, as plan entries pointing at this machine's files.
    pub fn plan_entries<'a>(
        &self,
        names: impl IntoIterator<Item = &'a RuntimeName>,
    ) -> Vec<PlanRuntime> {
        let wanted: BTreeSet<&RuntimeName> = names.into_iter().collect();
        wanted
            .into_iter()
            .filter_map(|n| self.ready.get(n)?.as_ref().ok())
            .map(|r| r.plan_entry())
            .collect()
    }

    /// A runtime cell's record of its runtime: the build (or why it is not ready) and what the
    /// runtime said it is in its hello (`said`, from the cell's result).
    pub fn cell_runtime(&self, name: &RuntimeName, said: Option<String>) -> CellRuntime {
        let (source, args) = match self.ready.get(name) {
            Some(Ok(r)) => (r.resolved.provenance.describe(), r.args.clone()),
            Some(Err(e)) => (format!("not ready: {e}"), Vec::new()),
            None => (String::new(), Vec::new()),
        };
        CellRuntime {
            name: name.clone(),
            source,
            said,
            args,
        }
    }
}

#[cfg(test)]
impl RunRuntimes {
    /// A run whose one runtime is `recipe`'s, taken as ready with an executable of `sha256`:
    /// for tests of what a run makes of a ready runtime (nothing is built or read).
    pub(crate) fn ready_for_test(recipe: &RuntimeRecipe, sha256: String) -> RunRuntimes {
        let binary = std::path::PathBuf::from("/nonexistent/runtime");
        let rt = ReadyRuntime {
            resolved: super::ResolvedRuntime {
                name: recipe.name.clone(),
                provenance: crate::results::RuntimeProvenance::Binary {
                    path: binary.clone(),
                    sha256: sha256.clone(),
                },
                binary,
                cache_key: String::new(),
                timings: super::BuildTimings::default(),
                substituted: None,
            },
            sha256,
            args: recipe.args.clone(),
            job_timeout_s: recipe.job_timeout_s,
        };
        let mut out = RunRuntimes::default();
        out.ready.insert(recipe.name.clone(), Ok(Arc::new(rt)));
        out
    }
}

/// Copy every runtime of a plan into `dir` (created, 0700) as `<dir>/<name>` (0755) and check
/// each copy's SHA-256 against the plan's. Returns the absolute directory holding the copies,
/// for the placed plan to point at; the message says which runtime did not arrive intact.
pub fn copy_into(runtimes: &[PlanRuntime], dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    // The agent starts each runtime in a directory of its own: the path must not be relative.
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if runtimes.is_empty() {
        return Ok(dir);
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for rt in runtimes {
        let to = dir.join(rt.name.as_str());
        let copied = std::fs::copy(&rt.path, &to)
            .and_then(|_| std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)));
        if let Err(e) = copied {
            return Err(format!(
                "runtime `{}`: copying {} to {}: {e}",
                rt.name,
                rt.path.display(),
                to.display()
            ));
        }
        let got = sha256_file(&to).map_err(|e| format!("runtime `{}`: {e}", rt.name))?;
        if got != rt.sha256 {
            return Err(format!(
                "runtime `{}`: the copy {} has sha256 {got}, the run recorded {}",
                rt.name,
                to.display(),
                rt.sha256
            ));
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_checked_and_named_after_their_runtime() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("built");
        std::fs::write(&exe, b"runtime bytes").unwrap();
        let rt = PlanRuntime {
            name: "mine".parse().unwrap(),
            path: exe,
            args: vec![],
            job_timeout_s: 30,
            sha256: hex::encode(Sha256::digest(b"runtime bytes")),
        };
        let plan = vec![rt.clone()];
        let copies = copy_into(&plan, &dir.path().join("copies")).unwrap();
        assert_eq!(copies.join("mine"), dir.path().join("copies/mine"));
        assert_eq!(
            std::fs::read(copies.join("mine")).unwrap(),
            b"runtime bytes"
        );
        let bad = vec![PlanRuntime {
            sha256: "00".repeat(32),
            ..rt
        }];
        let e = copy_into(&bad, &dir.path().join("again")).unwrap_err();
        assert!(e.contains("runtime `mine`") && e.contains("sha256"), "{e}");
    }
}

//! Debian packages through a private apt: our own sources list, state, cache and configuration
//! under `<cache>/apt`, so signatures are checked against the system's Debian archive keyring and
//! the host's apt state is never touched.
//!
//! `APT_CONFIG` points apt at our `apt.conf`, which apt reads *before* anything else; it sets
//! `Dir::Etc::main` and `Dir::Etc::parts` away from /etc/apt, so no host configuration leaks in
//! (proxies: use `http_proxy`, which apt honours).
//!
//! Signatures are checked; `Valid-Until` is not: mirrors and caching proxies serve sid's index
//! past its one-week validity, and the exact packages are pinned by SHA-256 in a lock file
//! anyway, so a stale index can at worst lock an older package, never a different file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::cache::{trusted_dir, Cache};
use super::DebianError;
use crate::proc::{Run, RunError};
use crate::rundir::write_atomic;

/// Suites the private sources list carries; recipes may name only these.
pub const SUITES: &[&str] = &["bookworm", "trixie", "trixie-backports", "sid"];

const MIRROR: &str = "http://deb.debian.org/debian";
/// The keyring the private apt checks Debian's signatures with (package debian-archive-keyring).
/// `apt-get update` and `apt-get download` fetch from the archive: seconds on a good line, a
/// few minutes on a slow one (a kernel image is ~100 MB); past half an hour apt is stuck.
const APT_NETWORK_LIMIT: Duration = Duration::from_secs(30 * 60);
/// `apt-cache madison` and `show` read the local lists: under a second, two minutes on a
/// loaded machine.
const APT_QUERY_LIMIT: Duration = Duration::from_secs(2 * 60);
/// apt's error, in one line of an error message.
const APT_ERROR_CHARS: usize = 600;

pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One package record, as `apt-cache show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRecord {
    pub package: String,
    pub version: String,
    pub depends: String,
    pub sha256: String,
    pub filename: String,
    pub size: u64,
}

/// The private apt installation.
#[derive(Debug, Clone)]
pub struct Apt {
    dir: PathBuf,
}

impl Apt {
    /// Create (or refresh) the private configuration under `<cache>/apt`. As root, every
    /// directory of it must be trusted: apt reads its configuration (`apt.conf.d`), keys and
    /// lists from there, with its sandbox off.
    pub fn new(cache: &Cache) -> Result<Apt, DebianError> {
        let dir = cache.root().join("apt");
        trusted_dir("apt's directory", &dir)?;
        for sub in [
            "etc",
            "etc/apt.conf.d",
            "etc/sources.list.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
            "state",
            "state/lists",
            "state/lists/partial",
            "cache",
            "cache/archives",
            "cache/archives/partial",
            "log",
        ] {
            trusted_dir("apt's directory", &dir.join(sub))?;
        }
        if !Path::new(KEYRING).exists() {
            return Err(DebianError::Apt {
                op: "check keyring".into(),
                detail: format!("{KEYRING} is missing; install the debian-archive-keyring package"),
            });
        }
        let status = dir.join("state/status");
        if !status.exists() {
            write_atomic(&status, b"")?;
        }
        let apt = Apt { dir };
        apt.write_if_changed("etc/sources.list", &sources_list())?;
        apt.write_if_changed("apt.conf", &apt.conf())?;
        Ok(apt)
    }

    fn write_if_changed(&self, rel: &str, text: &str) -> Result<(), DebianError> {
        let path = self.dir.join(rel);
        if fs::read_to_string(&path).ok().as_deref() != Some(text) {
            write_atomic(&path, text.as_bytes())?;
        }
        Ok(())
    }

    /// Lists stay gzip-compressed and no source-package cache is kept: the indices of four
    /// suites are otherwise ~350 MB on disk for a handful of lookups.
    fn conf(&self) -> String {
        let d = self.dir.display();
        let mut c = format!(
            "Dir::Etc::main \"/dev/null\";\n\
             Dir::Etc::parts \"{d}/etc/apt.conf.d\";\n\
             Dir::Etc::sourcelist \"{d}/etc/sources.list\";\n\
             Dir::Etc::sourceparts \"{d}/etc/sources.list.d\";\n\
             Dir::Etc::preferences \"{d}/etc/preferences\";\n\
             Dir::Etc::preferencesparts \"{d}/etc/preferences.d\";\n\
             Dir::Etc::trusted \"{d}/etc/trusted.gpg\";\n\
             Dir::Etc::trustedparts \"{d}/etc/trusted.gpg.d\";\n\
             Dir::State \"{d}/state\";\n\
             Dir::State::status \"{d}/state/status\";\n\
             Dir::Cache \"{d}/cache\";\n\
             Dir::Log \"{d}/log\";\n\
             APT::Architecture \"amd64\";\n\
             APT::Architectures {{ \"amd64\"; }};\n\
             Acquire::Languages \"none\";\n\
             Acquire::Retries \"3\";\n\
             Acquire::Check-Valid-Until \"false\";\n\
             Acquire::GzipIndexes \"true\";\n\
             Acquire::CompressionTypes::Order {{ \"gz\"; }};\n\
             Dir::Cache::srcpkgcache \"\";\n"
        );
        // As root, apt drops to `_apt` for downloads and warns when `_apt` cannot write the
        // target directory (a private cache under /root). Downloads are verified either way.
        if rustix::process::geteuid().is_root() {
            c.push_str("APT::Sandbox::User \"root\";\n");
        }
        c
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", self.dir.join("apt.conf"))
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Run one apt command on `proc`, for at most `limit`: stdout, or an error naming `op` with
    /// apt's own words folded into one line.
    fn run(&self, cmd: Command, op: String, limit: Duration) -> Result<String, DebianError> {
        let apt_err = |detail: String| DebianError::Apt {
            op: op.clone(),
            detail,
        };
        let out = Run::new(cmd, limit).run().map_err(|e| match e {
            RunError::Spawn { source, .. } => {
                apt_err(format!("cannot run: {source} (is apt installed?)"))
            }
            e => apt_err(e.to_string()),
        })?;
        if !out.success() {
            return Err(apt_err(format!(
                "{}: {}",
                out.status,
                crate::oneline::fold(&out.stderr, APT_ERROR_CHARS)
            )));
        }
        Ok(out.stdout)
    }

    /// Whether `apt-get update` ever ran here.
    pub fn has_lists(&self) -> bool {
        fs::read_dir(self.dir.join("state/lists")).is_ok_and(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        })
    }

    /// `apt-get update`: fetch and verify the suites' indices.
    pub fn update(&self) -> Result<(), DebianError> {
        let mut cmd = self.command("apt-get");
        cmd.args(["-q", "update"]);
        self.run(cmd, "apt-get update".into(), APT_NETWORK_LIMIT)?;
        Ok(())
    }

    /// The version of `package` in `suite`, if the suite carries it.
    pub fn version_in_suite(
        &self,
        package: &str,
        suite: &str,
    ) -> Result<Option<String>, DebianError> {
        let mut cmd = self.command("apt-cache");
        cmd.args(["madison", package]);
        let out = self.run(cmd, format!("apt-cache madison {package}"), APT_QUERY_LIMIT)?;
        Ok(parse_madison(&out, suite))
    }

    /// The record of `package` at exactly `version`.
    pub fn show(&self, package: &str, version: &str) -> Result<PackageRecord, DebianError> {
        let spec = format!("{package}={version}");
        let mut cmd = self.command("apt-cache");
        cmd.args(["show", &spec]);
        let out = self.run(cmd, format!("apt-cache show {spec}"), APT_QUERY_LIMIT)?;
        parse_record(&out).ok_or_else(|| DebianError::Apt {
            op: format!("apt-cache show {spec}"),
            detail: "no complete record (Package, Version, SHA256, Filename)".into(),
        })
    }

    /// A source package (`linux-source-6.12`, architecture `all`): the record in `suite`, or in
    /// the first of [`SUITES`] that carries it. Returns the suite too.
    pub fn resolve_source(
        &self,
        package: &str,
        suite: Option<&str>,
    ) -> Result<(String, PackageRecord), DebianError> {
        let suites: Vec<&str> = match suite {
            Some(s) => vec![s],
            None => SUITES.to_vec(),
        };
        for s in &suites {
            if let Some(version) = self.version_in_suite(package, s)? {
                return Ok((s.to_string(), self.show(package, &version)?));
            }
        }
        Err(DebianError::Apt {
            op: format!("resolve {package}"),
            detail: format!("no suite of {} carries it", suites.join(", ")),
        })
    }

    /// `apt-get download name=version…` into `dir`; apt checks each file against the signed
    /// index. Returns the downloaded paths in the order asked.
    pub fn download(
        &self,
        packages: &[(&str, &str)],
        dir: &Path,
    ) -> Result<Vec<PathBuf>, DebianError> {
        let specs: Vec<String> = packages.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let mut cmd = self.command("apt-get");
        cmd.current_dir(dir).args(["-q", "download"]).args(&specs);
        self.run(
            cmd,
            format!("apt-get download {}", specs.join(" ")),
            APT_NETWORK_LIMIT,
        )?;
        packages
            .iter()
            .map(|(name, version)| {
                // apt names the file <name>_<version with ':' as %3a>_<arch>.deb; source
                // packages are architecture `all`.
                let stem = format!("{name}_{}", version.replace(':', "%3a"));
                ["amd64", "all"]
                    .iter()
                    .map(|arch| dir.join(format!("{stem}_{arch}.deb")))
                    .find(|p| p.exists())
                    .ok_or_else(|| DebianError::Apt {
                        op: format!("apt-get download {name}={version}"),
                        detail: format!(
                            "expected {stem}_amd64.deb or _all.deb in {}",
                            dir.display()
                        ),
                    })
            })
            .collect()
    }
}

fn sources_list() -> String {
    SUITES
        .iter()
        .map(|s| format!("deb [signed-by={KEYRING}] {MIRROR} {s} main\n"))
        .collect()
}

/// Pick the version `suite` carries from `apt-cache madison` output:
/// ` pkg | 6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages`.
fn parse_madison(out: &str, suite: &str) -> Option<String> {
    out.lines().find_map(|line| {
        let mut cols = line.split('|').map(str::trim);
        let (_pkg, version, source) = (cols.next()?, cols.next()?, cols.next()?);
        let dist = source.split_whitespace().nth(1)?;
        (dist.split('/').next() == Some(suite) && source.ends_with("Packages"))
            .then(|| version.to_string())
    })
}

/// The first record in `apt-cache show` output.
fn parse_record(out: &str) -> Option<PackageRecord> {
    let block = out.split("\n\n").next()?;
    let field = |name: &str| {
        block.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        })
    };
    Some(PackageRecord {
        package: field("Package")?,
        version: field("Version")?,
        depends: field("Depends").unwrap_or_default(),
        sha256: field("SHA256")?,
        filename: field("Filename")?,
        size: field("Size")?.parse().ok()?,
    })
}

/// `(name, version)` of every dependency pinned with `(= version)`; alternatives are skipped
/// (a kernel's own packages are never alternatives).
pub fn pinned_deps(depends: &str) -> Vec<(String, String)> {
    depends
        .split(',')
        .map(str::trim)
        .filter(|d| !d.contains('|'))
        .filter_map(|d| {
            let (name, rest) = d.split_once(" (= ")?;
            Some((
                name.trim().to_string(),
                rest.strip_suffix(')')?.trim().to_string(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madison_picks_the_suite() {
        let out = " linux-image-cloud-amd64 | 7.3.4-1~bpo13+1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages\n linux-image-cloud-amd64 |   7.2.13-1 | http://deb.debian.org/debian sid/main amd64 Packages\n linux-image-cloud-amd64 | 6.12.117-1 | http://deb.debian.org/debian trixie/main amd64 Packages\n";
        assert_eq!(parse_madison(out, "trixie").as_deref(), Some("6.12.117-1"));
        assert_eq!(
            parse_madison(out, "trixie-backports").as_deref(),
            Some("7.3.4-1~bpo13+1")
        );
        assert_eq!(parse_madison(out, "bookworm"), None);
    }

    #[test]
    fn pinned_deps_follow_the_kernel_split() {
        let d = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-base-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), linux-binary-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), kmod";
        let deps = pinned_deps(d);
        assert_eq!(deps.len(), 2);
        assert_eq!(
            deps[1],
            (
                "linux-binary-7.3.4+deb13-cloud-amd64".into(),
                "7.3.4-1~bpo13+1".into()
            )
        );
    }

    #[test]
    fn record_parses() {
        let out = "Package: linux-image-6.1.0-50-cloud-amd64\nSource: linux-signed-amd64 (6.1.176+1)\nVersion: 6.1.176-1\nDepends: kmod, linux-base (>= 4.3~)\nFilename: pool/main/l/x.deb\nSize: 26484304\nSHA256: efe1\nDescription: x\n\nPackage: other\n";
        let r = parse_record(out).unwrap();
        assert_eq!(r.version, "6.1.176-1");
        assert_eq!(r.size, 26484304);
        assert_eq!(r.sha256, "efe1");
    }
}

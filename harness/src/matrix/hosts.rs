//! `[[hosts]]` of `matrix.toml`: metal hosts reached over SSH, checked like every other table
//! (the ssh options that change host-key trust need a reason; paths resolve against the
//! matrix's directory).

use std::path::{Path, PathBuf};

use protocol::limits;
use serde::Deserialize;

use super::raw::is_name;
use super::Host;
use crate::cell::SmtSetting;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub(super) name: String,
    destination: String,
    port: Option<u32>,
    identity_file: Option<PathBuf>,
    #[serde(default)]
    sudo: bool,
    #[serde(default = "default_smt")]
    smt: Vec<String>,
    provision: Option<String>,
    teardown: Option<String>,
    scratch_dir: Option<PathBuf>,
    /// Filesystem `scratch_dir` must be on (an assertion); without it, whatever is measured.
    filesystem: Option<String>,
    /// Extra `-o Key=Value` options for ssh.
    #[serde(default)]
    ssh_options: Vec<String>,
    /// Options that change host-key trust, allowed for this host with a reason.
    #[serde(default)]
    allow_ssh_options: Vec<RawAllowedOption>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllowedOption {
    option: String,
    reason: String,
}

fn default_smt() -> Vec<String> {
    vec!["as-is".into()]
}

/// ssh options that decide which host keys are trusted, or how the connection is made. A host
/// entry may use one only when it says why in `allow_ssh_options` (a jump host needs
/// `ProxyCommand`); mmx's own `BatchMode` and connection sharing are never the user's.
const TRUST_OPTIONS: [&str; 7] = [
    "knownhostscommand",
    "globalknownhostsfile",
    "userknownhostsfile",
    "stricthostkeychecking",
    "updatehostkeys",
    "checkhostip",
    "proxycommand",
];
const FIXED_OPTIONS: [&str; 4] = [
    "batchmode",
    "controlmaster",
    "controlpath",
    "controlpersist",
];

fn check_ssh_options(name: &str, h: &RawHost) -> Result<(), String> {
    let mut allowed = Vec::new();
    for a in &h.allow_ssh_options {
        let key = a.option.to_ascii_lowercase();
        if !TRUST_OPTIONS.contains(&key.as_str()) {
            return Err(format!(
                "host `{name}`: allow_ssh_options: `{}` is not an option that needs allowing",
                a.option
            ));
        }
        if a.reason.trim().is_empty() {
            return Err(format!(
                "host `{name}`: allow_ssh_options: `{}` needs a reason",
                a.option
            ));
        }
        allowed.push(key);
    }
    for opt in &h.ssh_options {
        let (key, _) = opt
            .split_once(['=', ' '])
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| format!("host `{name}`: ssh option `{opt}` is not `Key=Value`"))?;
        let lower = key.to_ascii_lowercase();
        if FIXED_OPTIONS.contains(&lower.as_str()) {
            return Err(format!(
                "host `{name}`: ssh option `{opt}` is not allowed: mmx always runs ssh with \
                 BatchMode=yes and its own connection sharing"
            ));
        }
        if TRUST_OPTIONS.contains(&lower.as_str()) && !allowed.contains(&lower) {
            return Err(format!(
                "host `{name}`: ssh option `{opt}` changes which host keys are trusted or how \
                 the host is reached; mmx checks host keys strictly against your known_hosts. \
                 If you mean it, add `allow_ssh_options = [{{ option = \"{key}\", reason = \"…\" }}]`"
            ));
        }
    }
    Ok(())
}

/// A path a user wrote in the matrix, for this machine: `~…` is left to ssh, which expands it,
/// absolute stays, relative is joined to the matrix's directory.
fn local_path(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() || p.starts_with("~") {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// ssh options whose value is a file on this machine: a relative one is the matrix's.
const PATH_OPTIONS: [&str; 4] = [
    "identityfile",
    "certificatefile",
    "userknownhostsfile",
    "globalknownhostsfile",
];

fn resolve_ssh_option(base: &Path, opt: &str) -> String {
    let Some((key, value)) = opt.split_once(['=', ' ']) else {
        return opt.to_string();
    };
    let (key, value) = (key.trim(), value.trim());
    let relative = !value.starts_with(['/', '~', '%']) && value != "none" && !value.is_empty();
    if PATH_OPTIONS.contains(&key.to_ascii_lowercase().as_str()) && relative {
        format!("{key}={}", base.join(value).display())
    } else {
        opt.to_string()
    }
}

pub(super) fn resolve_host(h: &RawHost, base: &Path) -> Result<Host, String> {
    if !is_name(&h.name) {
        return Err(format!(
            "name `{}` must be non-empty, without `/` or spaces",
            h.name
        ));
    }
    let name = &h.name;
    if h.destination.is_empty() || h.destination.starts_with('-') {
        return Err(format!(
            "host `{name}`: destination `{}` is not an ssh destination",
            h.destination
        ));
    }
    let port = match h.port {
        None => None,
        Some(p) => Some(
            u16::try_from(
                limits::PORT
                    .check(p)
                    .map_err(|e| format!("host `{name}`: {e}"))?,
            )
            .map_err(|_| format!("host `{name}`: port = {p}: not a TCP port"))?,
        ),
    };
    if h.smt.is_empty() {
        return Err(format!(
            "host `{name}`: smt = []: name at least one of on, off, as-is (each is a visit)"
        ));
    }
    let mut smt = Vec::new();
    for s in &h.smt {
        let v = match s.as_str() {
            "on" => SmtSetting::On,
            "off" => SmtSetting::Off,
            "as-is" => SmtSetting::AsIs,
            o => {
                return Err(format!(
                    "host `{name}`: smt `{o}` (expected on, off or as-is)"
                ))
            }
        };
        if smt.contains(&v) {
            return Err(format!("host `{name}`: smt `{s}` listed twice"));
        }
        smt.push(v);
    }
    check_ssh_options(name, h)?;
    if let Some(d) = h.scratch_dir.as_deref().filter(|d| !d.is_absolute()) {
        return Err(format!(
            "host `{name}`: scratch_dir `{}` is a directory on that host: give an absolute path",
            d.display()
        ));
    }
    let filesystem = match &h.filesystem {
        None => None,
        Some(f) => Some(f.parse().map_err(|e| format!("host `{name}`: {e}"))?),
    };
    Ok(Host {
        filesystem,
        name: name.clone(),
        destination: h.destination.clone(),
        port,
        identity_file: h.identity_file.as_deref().map(|p| local_path(base, p)),
        sudo: h.sudo,
        smt,
        provision: h.provision.clone(),
        teardown: h.teardown.clone(),
        scratch_dir: h.scratch_dir.clone(),
        ssh_options: h
            .ssh_options
            .iter()
            .map(|o| resolve_ssh_option(base, o))
            .collect(),
        base_dir: base.to_path_buf(),
    })
}

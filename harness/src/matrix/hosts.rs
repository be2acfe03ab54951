//! `[[hosts]]` of `matrix.toml`: metal hosts reached over SSH, checked like every other table
//! (ssh options as `ssh_options` reads and checks them; paths resolve against the matrix's
//! directory).

use std::path::{Path, PathBuf};

use protocol::limits;
use serde::Deserialize;

use super::raw::is_name;
use super::{ssh_options, Host};
use crate::cell::{SmtSetting, SMT_CONTROL};

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
    /// Options that need a reason (`ssh_options::POLICY`), allowed for this host with one.
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

/// A path a user wrote in the matrix, for this machine: `~…` is left to ssh, which expands it,
/// absolute stays, relative is joined to the matrix's directory.
fn local_path(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() || p.starts_with("~") {
        p.to_path_buf()
    } else {
        base.join(p)
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
    let allowed: Vec<(&str, &str)> = h
        .allow_ssh_options
        .iter()
        .map(|a| (a.option.as_str(), a.reason.as_str()))
        .collect();
    let ssh_options = ssh_options::resolve(name, &h.ssh_options, &allowed, base)?;
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
        ssh_options,
        smt_control: PathBuf::from(SMT_CONTROL),
        base_dir: base.to_path_buf(),
    })
}

//! Labels from measurements: the layers' filesystem and the accelerator of a cell are what the
//! agent measured where it ran, never what the configuration says.
//!
//! - Filesystem: the agent reports the statfs type of the layers' directory (the probes'
//!   `Capabilities::probed_fs`, else a mounts result's `layers_fs`). A cell labelled with a
//!   filesystem (a guest's disk, the local scratch dir, a host's declared `filesystem`) whose
//!   measurement differs ends `infra-error` ([`InfraCause::Filesystem`]) naming both: its numbers
//!   are about another filesystem than its id says. A host without a declared filesystem is
//!   planned as `unmeasured` and its records are keyed with the measurement here; a visit that
//!   never measured (no connection) keeps `unmeasured`.
//! - Accelerator: guests carry the QEMU backend's (kvm, tcg, tcg-mt); local and SSH cells carry
//!   what the agent's hypervisor detection saw: `metal` only when it saw none, else
//!   `vm:<vendor>`.

use protocol::{CellDetail, Filesystem};

use crate::backend::BootOutput;
use crate::cell::{BootKey, LayerFs};
use crate::matrix::Target;
use crate::results::{Accel, BootEnd, InfraCause};

/// What the agent said the layers' filesystem is, when it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measured {
    Known(Filesystem),
    /// A filesystem mmx does not label (`zfs`, `overlay`, `unknown (magic 0x…)`).
    Other(String),
    /// The agent never got to say (the visit failed first).
    Nothing,
}

/// The agent's measurement from a boot's stream: the probes' answer, else any mounts result's.
pub fn measured_fs(out: &BootOutput) -> Measured {
    let probed = out.stream.capabilities.first().map(|c| c.probed_fs.clone());
    let from_mounts = || {
        out.stream
            .results()
            .iter()
            .flatten()
            .find_map(|r| match &r.detail {
                Some(CellDetail::Mounts(m)) => Some(m.layers_fs.clone()),
                _ => None,
            })
    };
    match probed.or_else(from_mounts) {
        None => Measured::Nothing,
        Some(name) => match name.parse::<Filesystem>() {
            Ok(fs) => Measured::Known(fs),
            Err(_) => Measured::Other(name),
        },
    }
}

/// The filesystem the boot's records are keyed with, or the end that replaces the boot's when
/// the label cannot stand.
pub fn layer_fs(key: &BootKey, target: &Target, measured: &Measured) -> Result<LayerFs, BootEnd> {
    let whose = || match target {
        Target::Qemu { .. } => "the guest's scratch disk".to_string(),
        Target::Local => "the local scratch dir".to_string(),
        Target::Ssh { host, .. } => format!("host `{}` declares its scratch dir", host.name),
    };
    match (key.filesystem, measured) {
        (label, Measured::Nothing) => Ok(label),
        (LayerFs::Known(want), Measured::Known(got)) if want == *got => Ok(label_of(*got)),
        // erofs layer images are files on an ext4 disk: the probes measure the disk.
        (LayerFs::Known(want), Measured::Known(got)) if want.carrier() == *got => {
            Ok(label_of(want))
        }
        (LayerFs::Known(want), Measured::Known(got)) => Err(mismatch(&whose(), want, got.as_str())),
        (LayerFs::Known(want), Measured::Other(got)) => Err(mismatch(&whose(), want, got)),
        (LayerFs::Unmeasured, Measured::Known(got)) => Ok(label_of(*got)),
        (LayerFs::Unmeasured, Measured::Other(got)) => Err(BootEnd::infra(
            InfraCause::Filesystem,
            format!(
                "the agent measured the layers' directory on `{got}`; mmx labels cells on ext4, \
                 xfs, btrfs or tmpfs: put the host's scratch_dir on one of them"
            ),
        )),
    }
}

fn label_of(fs: Filesystem) -> LayerFs {
    LayerFs::Known(fs)
}

fn mismatch(whose: &str, want: Filesystem, got: &str) -> BootEnd {
    BootEnd::infra(
        InfraCause::Filesystem,
        format!(
            "{whose} is on {want}, the agent measured the layers' directory on {got}: the cells \
             would carry the wrong filesystem"
        ),
    )
}

/// The accelerator to record: the backend's for guests; for local and SSH cells the agent's
/// hypervisor detection (`metal` when it saw none, `vm:<vendor>` otherwise), or `unmeasured`
/// when the agent never reported (the visit failed first): never the backend's assumption.
pub fn accel(target: &Target, out: &BootOutput) -> Accel {
    match target {
        Target::Qemu { .. } => out.accel,
        Target::Local | Target::Ssh { .. } => out
            .stream
            .topology
            .as_ref()
            .and_then(|t| t.virtualization.as_ref())
            .map_or(Accel::Unmeasured, Accel::measured),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::{SmtSetting, TargetKey};

    fn host(fs: Option<Filesystem>) -> (BootKey, Target) {
        let host = crate::matrix::Host {
            name: "lab1".into(),
            destination: "root@lab1".into(),
            port: None,
            identity_file: None,
            sudo: false,
            smt: vec![SmtSetting::AsIs],
            provision: None,
            teardown: None,
            scratch_dir: None,
            filesystem: fs,
            ssh_options: vec![],
            smt_control: crate::cell::SMT_CONTROL.into(),
            base_dir: "/".into(),
        };
        let key = BootKey {
            target: TargetKey::Ssh {
                host: "lab1".into(),
                smt: SmtSetting::AsIs,
            },
            filesystem: fs.map_or(LayerFs::Unmeasured, LayerFs::Known),
        };
        (
            key,
            Target::Ssh {
                host,
                smt: SmtSetting::AsIs,
            },
        )
    }

    #[test]
    fn an_undeclared_host_takes_the_measurement() {
        let (key, target) = host(None);
        let got = layer_fs(&key, &target, &Measured::Known(Filesystem::Tmpfs));
        assert_eq!(got, Ok(LayerFs::Known(Filesystem::Tmpfs)));
        assert_eq!(
            layer_fs(&key, &target, &Measured::Nothing),
            Ok(LayerFs::Unmeasured),
            "a visit that never measured says so"
        );
        let Err(BootEnd::Infra { cause, message }) =
            layer_fs(&key, &target, &Measured::Other("zfs".into()))
        else {
            panic!("zfs has no label");
        };
        assert_eq!(cause, InfraCause::Filesystem);
        assert!(message.contains("`zfs`"), "{message}");
    }

    #[test]
    fn a_declared_filesystem_is_an_assertion_naming_both() {
        let (key, target) = host(Some(Filesystem::Xfs));
        assert_eq!(
            layer_fs(&key, &target, &Measured::Known(Filesystem::Xfs)),
            Ok(LayerFs::Known(Filesystem::Xfs))
        );
        let Err(BootEnd::Infra { cause, message }) =
            layer_fs(&key, &target, &Measured::Known(Filesystem::Tmpfs))
        else {
            panic!("xfs declared, tmpfs measured");
        };
        assert_eq!(cause, InfraCause::Filesystem);
        assert!(
            message.contains("host `lab1`") && message.contains("xfs") && message.contains("tmpfs"),
            "{message}"
        );
    }
}

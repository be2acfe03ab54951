//! What a cell *is*: one typed key from the matrix to the report.
//!
//! A [`CellKey`] is where a cell ran ([`TargetKey`]: a kernel and topology in QEMU, this
//! machine, or a metal host under an SMT setting), on which layer filesystem, doing what
//! ([`ScenarioKey`]). `run.json` stores it, reports sort and group by it, `mmx compare` and
//! `mmx merge` match on it; its `Display` is the id users read and type in `--filter` and
//! `[[expect]]` globs (`debian-6.12/1s2c1t/ext4/per-layer-L50-C10-P2-J2`). Nothing parses an id
//! string back into parts.

use std::cmp::Ordering;
use std::fmt;

use protocol::{Filesystem, ScenarioKey};
use serde::{Deserialize, Serialize};

/// SMT state a metal host's cells run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtSetting {
    /// Leave the host as it is.
    AsIs,
    On,
    Off,
}

/// The kernel's SMT switch on a host: what a visit reads, writes and restores.
pub const SMT_CONTROL: &str = "/sys/devices/system/cpu/smt/control";

impl SmtSetting {
    /// The setting as it appears in cell ids.
    pub fn as_str(self) -> &'static str {
        match self {
            SmtSetting::AsIs => "smt-as-is",
            SmtSetting::On => "smt-on",
            SmtSetting::Off => "smt-off",
        }
    }

    /// The setting as `matrix.toml` and the host's run script spell it.
    pub fn word(self) -> &'static str {
        match self {
            SmtSetting::AsIs => "as-is",
            SmtSetting::On => "on",
            SmtSetting::Off => "off",
        }
    }
}

/// The layers' filesystem of a cell. Guests' is the disk mmx made; local and SSH cells' is what
/// the agent measured with statfs on the layers' directory. A host without a declared
/// `filesystem` is planned as [`LayerFs::Unmeasured`] and its records are keyed with the
/// measurement when the visit folds (`run::labels`); a visit that never got to measure stays
/// `unmeasured`.
///
/// In ids and `run.json` it is one word: `ext4`, `xfs`, `btrfs`, `tmpfs` or `unmeasured`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayerFs {
    Known(Filesystem),
    Unmeasured,
}

impl LayerFs {
    pub const UNMEASURED: &'static str = "unmeasured";

    pub fn as_str(self) -> &'static str {
        match self {
            LayerFs::Known(fs) => fs.as_str(),
            LayerFs::Unmeasured => LayerFs::UNMEASURED,
        }
    }

    /// The filesystem, when known.
    pub fn known(self) -> Option<Filesystem> {
        match self {
            LayerFs::Known(fs) => Some(fs),
            LayerFs::Unmeasured => None,
        }
    }
}

impl From<Filesystem> for LayerFs {
    fn from(fs: Filesystem) -> LayerFs {
        LayerFs::Known(fs)
    }
}

impl PartialEq<Filesystem> for LayerFs {
    fn eq(&self, other: &Filesystem) -> bool {
        *self == LayerFs::Known(*other)
    }
}

impl fmt::Display for LayerFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LayerFs {
    type Err = String;
    fn from_str(s: &str) -> Result<LayerFs, String> {
        if s == LayerFs::UNMEASURED {
            return Ok(LayerFs::Unmeasured);
        }
        s.parse().map(LayerFs::Known)
    }
}

impl Serialize for LayerFs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LayerFs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LayerFs, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a cell runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TargetKey {
    /// A kernel recipe booted in QEMU with a topology of the matrix.
    Qemu { kernel: String, topology: String },
    /// This machine's own kernel. Its id reads `local/host`, not the hostname: CI runners get
    /// a new hostname every time, and a baseline must still match its candidate.
    Local,
    /// A metal host of the matrix under an SMT setting.
    Ssh { host: String, smt: SmtSetting },
}

impl TargetKey {
    /// The report's row: (kernel or host, topology or SMT setting).
    pub fn row(&self) -> (&str, &str) {
        match self {
            TargetKey::Qemu { kernel, topology } => (kernel, topology),
            TargetKey::Local => ("local", "host"),
            TargetKey::Ssh { host, smt } => (host, smt.as_str()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            TargetKey::Qemu { .. } => 0,
            TargetKey::Local => 1,
            TargetKey::Ssh { .. } => 2,
        }
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = self.row();
        write!(f, "{a}/{b}")
    }
}

impl Ord for TargetKey {
    /// Guests, then this machine, then hosts; names in natural order (`debian-6.9` before
    /// `debian-6.12`), SMT settings as declared.
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank()
            .cmp(&other.rank())
            .then_with(|| match (self, other) {
                (
                    TargetKey::Qemu { kernel, topology },
                    TargetKey::Qemu {
                        kernel: k2,
                        topology: t2,
                    },
                ) => natural_cmp(kernel, k2).then_with(|| natural_cmp(topology, t2)),
                (TargetKey::Ssh { host, smt }, TargetKey::Ssh { host: h2, smt: s2 }) => {
                    natural_cmp(host, h2).then_with(|| smt.cmp(s2))
                }
                _ => Ordering::Equal,
            })
    }
}

impl PartialOrd for TargetKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One boot (a guest, a local agent run, a host visit): the cells that share a target and a
/// layer filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BootKey {
    pub target: TargetKey,
    pub filesystem: LayerFs,
}

impl fmt::Display for BootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.target, self.filesystem)
    }
}

/// One cell: where, on which layer filesystem, doing what.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellKey {
    pub target: TargetKey,
    pub filesystem: LayerFs,
    pub scenario: ScenarioKey,
}

impl CellKey {
    pub fn new(
        target: TargetKey,
        filesystem: impl Into<LayerFs>,
        scenario: ScenarioKey,
    ) -> CellKey {
        CellKey {
            target,
            filesystem: filesystem.into(),
            scenario,
        }
    }

    /// The boot this cell runs in.
    pub fn boot(&self) -> BootKey {
        BootKey {
            target: self.target.clone(),
            filesystem: self.filesystem,
        }
    }
}

impl fmt::Display for CellKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.target, self.filesystem, self.scenario)
    }
}

impl Ord for CellKey {
    /// Target, then filesystem (ext4, xfs, btrfs, tmpfs, unmeasured), then scenario (mounts by strategy,
    /// layers, containers, concurrency and passes; then lock benchmarks).
    fn cmp(&self, other: &Self) -> Ordering {
        self.target
            .cmp(&other.target)
            .then_with(|| self.filesystem.cmp(&other.filesystem))
            .then_with(|| self.scenario.cmp(&other.scenario))
    }
}

impl PartialOrd for CellKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compare strings with digit runs as numbers, so `debian-6.9` sorts before `debian-6.12`.
/// Strings equal as numbers (`L01`, `L1`) fall back to byte order, so the order is total and
/// agrees with `==` (keys live in ordered maps).
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    natural_only(a, b).then_with(|| a.cmp(b))
}

fn natural_only(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (ta, tb) = (trim_zeros(&a[..na]), trim_zeros(&b[..nb]));
                let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|c| **c == b'0').count();
    &d[n.min(d.len().saturating_sub(1))..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{lockbench::Bench, MountsScenario, Strategy};

    fn mounts(layers: u32) -> ScenarioKey {
        ScenarioKey::Mounts(MountsScenario {
            strategy: Strategy::PerLayer.into(),
            layers,
            containers: 10,
            concurrency: 2,
            passes: 2,
            watchers: Vec::new(),
        })
    }

    fn qemu(kernel: &str) -> TargetKey {
        TargetKey::Qemu {
            kernel: kernel.into(),
            topology: "1s2c1t".into(),
        }
    }

    #[test]
    fn ids_read_as_users_type_them() {
        let k = CellKey::new(qemu("debian-6.12"), Filesystem::Ext4, mounts(50));
        assert_eq!(
            k.to_string(),
            "debian-6.12/1s2c1t/ext4/per-layer-L50-C10-P2-J2"
        );
        assert_eq!(k.boot().to_string(), "debian-6.12/1s2c1t/ext4");
        let local = CellKey::new(
            TargetKey::Local,
            Filesystem::Tmpfs,
            ScenarioKey::Lockbench {
                bench: Bench::Storm,
                name: Some("big".into()),
            },
        );
        assert_eq!(local.to_string(), "local/host/tmpfs/lockbench-storm-big");
        let ssh = TargetKey::Ssh {
            host: "lab1".into(),
            smt: SmtSetting::Off,
        };
        assert_eq!(ssh.to_string(), "lab1/smt-off");
    }

    #[test]
    fn keys_sort_naturally_and_round_trip() {
        let mut keys = vec![
            CellKey::new(qemu("debian-6.12"), Filesystem::Ext4, mounts(1)),
            CellKey::new(qemu("debian-6.1"), Filesystem::Tmpfs, mounts(50)),
            CellKey::new(qemu("debian-6.1"), Filesystem::Ext4, mounts(10)),
            CellKey::new(qemu("debian-6.1"), Filesystem::Ext4, mounts(2)),
        ];
        keys.sort();
        let ids: Vec<String> = keys.iter().map(ToString::to_string).collect();
        assert_eq!(
            ids,
            [
                "debian-6.1/1s2c1t/ext4/per-layer-L2-C10-P2-J2",
                "debian-6.1/1s2c1t/ext4/per-layer-L10-C10-P2-J2",
                "debian-6.1/1s2c1t/tmpfs/per-layer-L50-C10-P2-J2",
                "debian-6.12/1s2c1t/ext4/per-layer-L1-C10-P2-J2",
            ]
        );
        for k in &keys {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(
                &serde_json::from_str::<CellKey>(&json).unwrap(),
                k,
                "{json}"
            );
        }
    }

    #[test]
    fn filesystems_read_as_one_word_and_old_runs_still_parse() {
        let k: CellKey = serde_json::from_str(
            r#"{"target":{"backend":"local"},"filesystem":"xfs","scenario":{"kind":"lockbench","bench":"storm"}}"#,
        )
        .unwrap();
        assert_eq!(k.filesystem, Filesystem::Xfs);
        let ssh = TargetKey::Ssh {
            host: "lab1".into(),
            smt: SmtSetting::AsIs,
        };
        let planned = CellKey::new(ssh, LayerFs::Unmeasured, mounts(1));
        assert_eq!(
            planned.to_string(),
            "lab1/smt-as-is/unmeasured/per-layer-L1-C10-P2-J2"
        );
        let json = serde_json::to_string(&planned).unwrap();
        assert_eq!(serde_json::from_str::<CellKey>(&json).unwrap(), planned);
        assert!(LayerFs::Known(Filesystem::Tmpfs) < LayerFs::Unmeasured);
        assert!("zfs".parse::<LayerFs>().is_err());
    }

    #[test]
    fn natural_order_reads_versions() {
        let mut v = vec!["debian-6.12", "debian-7.x", "debian-6.1", "debian-6.9"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["debian-6.1", "debian-6.9", "debian-6.12", "debian-7.x"]);
        assert_eq!(natural_only("L01", "L1"), Ordering::Equal);
        assert_ne!(natural_cmp("L01", "L1"), Ordering::Equal, "a total order");
    }
}

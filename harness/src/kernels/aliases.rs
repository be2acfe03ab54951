//! What loadable modules answer to besides their names: kmod's `modules.alias`, or the same
//! table derived from every module's `.modinfo` ([`super::modules`] does that for Debian's
//! packages, which ship none). Matching is [`protocol::modules::alias_matches`], the one the
//! guest's modprobe uses.

use std::collections::BTreeSet;

use protocol::modules::{alias_matches, normalize};

/// Aliases of loadable modules: `modules.alias`, or what it would say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct AliasTable {
    /// (pattern as written, module name normalised), in the order found.
    pub(super) entries: Vec<(String, String)>,
}

impl AliasTable {
    /// kmod's `modules.alias`: `alias <pattern> <module>` lines, `#` comments.
    pub fn parse_modules_alias(text: &str) -> AliasTable {
        let entries = text
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("alias"), Some(pattern), Some(module)) => {
                        Some((pattern.to_string(), normalize(module)))
                    }
                    _ => None,
                }
            })
            .collect();
        AliasTable { entries }
    }

    /// Every module an alias of which matches `name`, sorted, once each.
    pub fn lookup(&self, name: &str) -> Vec<String> {
        let found: BTreeSet<&str> = self
            .entries
            .iter()
            .filter(|(pattern, _)| alias_matches(pattern, name))
            .map(|(_, module)| module.as_str())
            .collect();
        found.into_iter().map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What depmod (kmod 30) wrote into `modules.alias` for Debian's generic
    /// `6.12.117+deb13-amd64`, the lines for crc32c, a glob or two, and their neighbours.
    const GENERIC_612_MODULES_ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias sha256 sha256_ssse3
alias crypto-crc32c-intel crc32c_intel
alias crc32c-intel crc32c_intel
alias crypto-crc32c crc32c_intel
alias crc32c crc32c_intel
alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel
alias crypto-crc32c-generic crc32c_generic
alias crc32c-generic crc32c_generic
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias crypto-xxhash64 xxhash_generic
alias virtio:d00000002v* virtio_blk
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
";

    #[test]
    fn crypto_crc32c_resolves_through_a_real_modules_alias() {
        let t = AliasTable::parse_modules_alias(GENERIC_612_MODULES_ALIAS);
        // kmod's modprobe loads both (`modprobe --show-depends crypto-crc32c` on that tree).
        assert_eq!(
            t.lookup("crypto-crc32c"),
            ["crc32c_generic", "crc32c_intel"]
        );
        assert_eq!(
            t.lookup("crypto_crc32c"),
            ["crc32c_generic", "crc32c_intel"]
        );
        assert_eq!(t.lookup("crc32c-intel"), ["crc32c_intel"]);
        assert_eq!(t.lookup("crypto-crc32c-all"), Vec::<String>::new());
        assert_eq!(t.lookup("virtio:d00000002v00001AF4"), ["virtio_blk"]);
        assert_eq!(
            t.lookup("pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00"),
            ["e1000e"]
        );
        assert_eq!(
            t.lookup("pci:v00008086d000010D4sv0sd0bc02sc00i00"),
            Vec::<String>::new()
        );
    }
}

//! Known answers (`[[expect]]`): which outcome, errno and failing step a set of cells must show,
//! and for a runtime the kernel's count of its mount operations per container (a runtime has no
//! formula; `mount_ops_per_container = 6` on every layer count is how a matrix says "maps the
//! layers' common parent"). First match wins; a changed answer fails the run.
//!
//! Each answer is a [`crate::results::Expectation`], the record run.json keeps beside the cell it
//! judged; this file holds the matrix's list of them and the cell-id globs that pick one.

use crate::cell::CellKey;
use crate::results::Expectation;

/// The matrix's known answers, first match wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations(pub Vec<Expectation>);

impl Expectations {
    /// The first expectation whose pattern matches the cell.
    pub fn find(&self, key: &CellKey) -> Option<&Expectation> {
        let id = key.to_string();
        self.0.iter().find(|e| glob_matches(&e.pattern, &id))
    }
}

/// Anchored glob match: `*` matches any run of characters (including `/`).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.len() >= part.len() && rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
}

/// Whether a cell id matches a `--filter`: a `*` glob, or else a substring.
pub fn filter_matches(filter: &str, id: &str) -> bool {
    if filter.contains('*') {
        glob_matches(filter, id)
    } else {
        id.contains(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_anchored() {
        assert!(glob_matches("*", "a/b"));
        assert!(glob_matches("a/*/c", "a/b/x/c"));
        assert!(!glob_matches("a/*/c", "a/b/cd"));
        assert!(glob_matches("debian-6.1/*", "debian-6.1/t/ext4/x"));
        assert!(!glob_matches("debian-6.1/*", "debian-6.12/t/ext4/x"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(glob_matches("a*a", "aa"));
        assert!(!glob_matches("a*a", "a"));
    }
}

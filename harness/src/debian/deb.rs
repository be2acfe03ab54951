//! Reading `.deb` files without dpkg: a `.deb` is an `ar` archive whose `data.tar.xz` member
//! holds the files (Debian's kernel packages use xz; zstd is rejected by name so a change in the
//! archive reads as what it is). Only a [`Deb`] is read: a package checked against the SHA-256
//! its lock pins, read from the very file that was checked.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{DebianError, LockedPackage};

/// A `.deb`, open, whose bytes had the SHA-256 its lock entry pins when it was opened. Readers
/// read this open file, not the path again, so a file replaced after the check is never what
/// they read.
#[derive(Debug)]
pub struct Deb {
    path: PathBuf,
    file: File,
}

impl Deb {
    /// Open `path` and check its bytes against `package`'s SHA-256: every use of a `.deb`
    /// starts here, whether it was downloaded a moment ago or sits in the store.
    pub fn open_verified(path: &Path, package: &LockedPackage) -> Result<Deb, DebianError> {
        let file = File::open(path).map_err(|e| DebianError::io("open", path, e))?;
        let mut h = Sha256::new();
        io::copy(&mut &file, &mut h).map_err(|e| DebianError::io("read", path, e))?;
        let found = hex::encode(h.finalize());
        if !found.eq_ignore_ascii_case(&package.sha256) {
            return Err(DebianError::Checksum {
                package: package.spec(),
                expected: package.sha256.clone(),
                found,
            });
        }
        Ok(Deb {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Where it was opened (or moved to): for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The same open file, now known by another name (renamed into the store).
    pub(super) fn moved_to(self, path: PathBuf) -> Deb {
        Deb { path, ..self }
    }

    /// The file from its first byte.
    fn rewound(&self) -> Result<&File, DebianError> {
        (&self.file)
            .seek(SeekFrom::Start(0))
            .map_err(|e| DebianError::io("seek", &self.path, e))?;
        Ok(&self.file)
    }
}

/// What a tar entry is, as far as we care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Other,
}

/// Call `visit(path, kind, reader)` for every entry of the package's data archive, in order.
/// `path` has no leading `./` or `/` (`boot/vmlinuz-6.1.0-50-cloud-amd64`). The visitor's
/// errors are the caller's own.
pub fn for_each_data_entry<E: From<DebianError>>(
    deb: &Deb,
    mut visit: impl FnMut(&str, EntryKind, &mut dyn Read) -> Result<(), E>,
) -> Result<(), E> {
    with_data_tar(deb, |tar| {
        let bad = |detail: String| DebianError::Deb {
            deb: deb.path().to_path_buf(),
            detail,
        };
        let entries = tar.entries().map_err(|e| bad(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(e.to_string()))?;
            let path = entry_path(deb.path(), &entry)?;
            let kind = if entry.header().entry_type().is_file() {
                EntryKind::File
            } else {
                EntryKind::Other
            };
            visit(&path, kind, &mut entry)?;
        }
        Ok(())
    })
}

/// Hand the package's data archive (`data.tar.xz` or `data.tar`) to `f`, for callers that need
/// whole tar entries (modes, links).
pub fn with_data_tar<T, E: From<DebianError>>(
    deb: &Deb,
    f: impl FnOnce(&mut tar::Archive<Box<dyn Read + '_>>) -> Result<T, E>,
) -> Result<T, E> {
    let bad = |detail: String| DebianError::Deb {
        deb: deb.path().to_path_buf(),
        detail,
    };
    let mut archive = ar::Archive::new(BufReader::new(deb.rewound()?));
    while let Some(member) = archive.next_entry() {
        let member = member.map_err(|e| bad(format!("reading ar member: {e}")))?;
        let name = String::from_utf8_lossy(member.header().identifier()).into_owned();
        let reader: Box<dyn Read + '_> = match name.as_str() {
            "data.tar.xz" => Box::new(lzma_rust2::XzReader::new(member, false)),
            "data.tar" => Box::new(member),
            n if n.starts_with("data.tar") => {
                return Err(bad(format!("{n}: only data.tar.xz and data.tar are supported")).into())
            }
            _ => continue,
        };
        return f(&mut tar::Archive::new(reader));
    }
    Err(bad("no data.tar member".into()).into())
}

/// An entry's path without a leading `./` or `/`.
pub fn entry_path<R: Read>(deb: &Path, entry: &tar::Entry<'_, R>) -> Result<String, DebianError> {
    let path = entry
        .path()
        .map_err(|e| DebianError::Deb {
            deb: deb.to_path_buf(),
            detail: format!("entry path: {e}"),
        })?
        .to_string_lossy()
        .into_owned();
    Ok(path
        .trim_start_matches("./")
        .trim_start_matches('/')
        .to_string())
}

/// The SHA-256 of a file, in lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, DebianError> {
    let mut f = File::open(path).map_err(|e| DebianError::io("open", path, e))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(|e| DebianError::io("read", path, e))?;
    Ok(hex::encode(h.finalize()))
}

/// Decompress a whole `.xz` stream (a compressed kernel module).
pub fn xz_decompress(bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() * 4);
    lzma_rust2::XzReader::new(bytes, true).read_to_end(&mut out)?;
    Ok(out)
}

/// A .deb (ar + data.tar.xz, as dpkg-deb lays it out) holding `tar`, written to `dir/t.deb`
/// and opened as its own lock entry would have it: what the tests of everything that reads
/// Debian packages build theirs from.
#[cfg(test)]
pub(crate) fn deb_of_tar(dir: &Path, tar: Vec<u8>) -> Deb {
    use std::io::Write;
    let mut xz = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1))
        .expect("xz writer");
    xz.write_all(&tar).expect("xz");
    let xz = xz.finish().expect("xz finish");
    let path = dir.join("t.deb");
    let mut ar = ar::Builder::new(std::fs::File::create(&path).expect("create t.deb"));
    ar.append(
        &ar::Header::new(b"debian-binary".to_vec(), 4),
        &b"2.0\n"[..],
    )
    .expect("ar");
    ar.append(
        &ar::Header::new(b"data.tar.xz".to_vec(), xz.len() as u64),
        &xz[..],
    )
    .expect("ar");
    drop(ar);
    let package = LockedPackage {
        name: "t".into(),
        version: "1".into(),
        sha256: sha256_file(&path).expect("sha256"),
        filename: "t.deb".into(),
        size: 0,
    };
    Deb::open_verified(&path, &package).expect("t.deb")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Build a tiny .deb (ar + data.tar.xz) the way dpkg-deb lays it out.
    fn tiny_deb(dir: &Path) -> Deb {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "./boot/vmlinuz-x", &b"hello"[..])
            .unwrap();
        deb_of_tar(dir, tar.into_inner().unwrap())
    }

    #[test]
    fn reads_data_tar_xz() {
        let dir = tempfile::tempdir().unwrap();
        let deb = tiny_deb(dir.path());
        let mut seen = Vec::new();
        for_each_data_entry::<DebianError>(&deb, |p, k, r| {
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            seen.push((p.to_string(), k, s));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![(
                "boot/vmlinuz-x".to_string(),
                EntryKind::File,
                "hello".to_string()
            )]
        );
    }

    #[test]
    fn xz_round_trip() {
        let mut xz =
            lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
        xz.write_all(b"module bytes").unwrap();
        let xz = xz.finish().unwrap();
        assert_eq!(xz_decompress(&xz).unwrap(), b"module bytes");
    }

    #[test]
    fn a_deb_is_read_only_when_it_has_its_pinned_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("p.deb");
        std::fs::write(&deb, b"abc").unwrap();
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let pinned = |sha256: &str| LockedPackage {
            name: "p".into(),
            version: "1-1".into(),
            sha256: sha256.into(),
            filename: "pool/main/p/p_1-1_amd64.deb".into(),
            size: 3,
        };
        let opened = Deb::open_verified(&deb, &pinned(&sha.to_uppercase())).unwrap();
        assert_eq!(opened.path(), deb);
        let err = Deb::open_verified(&deb, &pinned("ab"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(sha) && err.contains("p=1-1") && err.contains("pins ab"),
            "{err}"
        );
    }
}

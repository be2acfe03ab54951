//! The guest's modprobe, and the one way the agent loads a kernel module.
//!
//! A kernel that builds a helper as a module asks for it by name or alias when it needs it:
//! `request_module("crypto-crc32c")` runs the program in `/proc/sys/kernel/modprobe` as
//! `modprobe -q -- crypto-crc32c` and waits for it (`kernel/module/kmod.c`). In a guest that
//! program is this binary, by the link [`protocol::modules::MODPROBE_PATH`] the init wrote there.
//! It answers from the initramfs's module table ([`protocol::modules::ModuleTable`]): every module
//! the request names, by name or alias, after its dependencies, each with `finit_module`.
//!
//! Started by the kernel it has no terminal: what it did goes to the kernel log (`/dev/kmsg`),
//! one line per request, which the console carries to the host's console log.
//!
//! Exit status, as kmod's: 0 when the request is answered (each module it names is loaded now,
//! or was), 1 when nothing answers it or a load failed, 2 for a command line it does not take.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use protocol::modules::{ModuleEntry, ModuleTable, TABLE_MAX_BYTES, TABLE_PATH};

/// `MODULE_INIT_COMPRESSED_FILE` from `linux/module.h`: the kernel decompresses the file itself
/// (the kernels that ship `.ko.xz` are built with `CONFIG_MODULE_DECOMPRESS`).
const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

/// The longest line this writes to the kernel log (printk keeps about 1 KiB of a record).
const KMSG_LINE_MAX: usize = 512;

/// What loading one module file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Inserted,
    /// Loaded before (by us, the init, or another request): nothing to do.
    AlreadyThere,
}

/// A failed load, reading like the call.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("open({path}) failed: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("finit_module({path}, \"\", {flags}) failed: {errno}")]
    FinitModule {
        path: String,
        flags: i32,
        errno: rustix::io::Errno,
    },
}

/// Load one module file; `EEXIST` (another loader was first, or it is built in) is success.
/// A module whose `/sys/module/<name>/initstate` already says `live` is not read again: the
/// kernel would decompress it only to answer `EEXIST`.
pub fn load_file(name: Option<&str>, path: &Path) -> Result<Loaded, LoadError> {
    if name.is_some_and(is_live) {
        return Ok(Loaded::AlreadyThere);
    }
    let shown = || path.display().to_string();
    let file = File::open(path).map_err(|source| LoadError::Open {
        path: shown(),
        source,
    })?;
    let flags = module_flags(path);
    match rustix::system::finit_module(&file, c"", flags) {
        Ok(()) => Ok(Loaded::Inserted),
        Err(rustix::io::Errno::EXIST) => Ok(Loaded::AlreadyThere),
        Err(errno) => Err(LoadError::FinitModule {
            path: shown(),
            flags,
            errno,
        }),
    }
}

/// `finit_module` flags for a module file: compressed ones need the kernel to decompress them.
pub fn module_flags(path: &Path) -> i32 {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".ko.xz") || name.ends_with(".ko.zst") || name.ends_with(".ko.gz") {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    }
}

fn is_live(name: &str) -> bool {
    std::fs::read(format!("/sys/module/{name}/initstate")).is_ok_and(|s| s.trim_ascii() == b"live")
}

/// Whether the agent was started as modprobe: its name's last component is `modprobe`.
pub fn invoked_as_modprobe(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "modprobe")
}

/// The command line the kernel gives: `modprobe -q -- NAME`; `-q` and `--` optional.
fn parse_args(args: &[OsString]) -> Result<String, String> {
    let mut name = None;
    let mut options_done = false;
    for a in args {
        let a = a
            .to_str()
            .ok_or_else(|| format!("argument {a:?} is not UTF-8"))?;
        match a {
            "--" if !options_done => options_done = true,
            "-q" | "--quiet" if !options_done => {}
            o if o.starts_with('-') && !options_done => {
                return Err(format!("option {o} is not supported (only -q)"))
            }
            n if name.is_none() && !n.is_empty() => name = Some(n.to_string()),
            n => return Err(format!("one module name only (also got `{n}`)")),
        }
    }
    name.ok_or_else(|| "no module name".to_string())
}

/// Run as modprobe with `args` (after the program name); the exit status.
pub fn main(args: &[OsString]) -> ExitCode {
    let request = match parse_args(args) {
        Ok(r) => r,
        Err(e) => {
            kmsg(4, &format!("usage: {e}"));
            return ExitCode::from(2);
        }
    };
    let table = match read_table(Path::new(TABLE_PATH)) {
        Ok(t) => t,
        Err(e) => {
            kmsg(3, &format!("{request}: {e}"));
            return ExitCode::from(1);
        }
    };
    let (status, line) = answer(&table, &request, load_file);
    kmsg(if status == 0 { 5 } else { 4 }, &line);
    ExitCode::from(status)
}

/// Answer one request from `table` with `load`: the exit status and the line for the log.
fn answer(
    table: &ModuleTable,
    request: &str,
    mut load: impl FnMut(Option<&str>, &Path) -> Result<Loaded, LoadError>,
) -> (u8, String) {
    let modules: Vec<&ModuleEntry> = table.resolve(request);
    if modules.is_empty() {
        return (
            1,
            format!("{request}: no module in the initramfs answers it"),
        );
    }
    let mut done = Vec::new();
    for m in modules {
        match load(Some(&m.name), &m.path) {
            Ok(Loaded::Inserted) => done.push(m.name.clone()),
            Ok(Loaded::AlreadyThere) => done.push(format!("{} (already loaded)", m.name)),
            // Its dependents would fail too: stop here, as kmod does.
            Err(e) => return (1, format!("{request}: {e}")),
        }
    }
    (0, format!("{request}: loaded {}", done.join(", ")))
}

/// Read the module table, bounded by [`TABLE_MAX_BYTES`].
fn read_table(path: &Path) -> Result<ModuleTable, String> {
    let file = File::open(path).map_err(|e| format!("open({}) failed: {e}", path.display()))?;
    let mut text = String::new();
    file.take(TABLE_MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading {} failed: {e}", path.display()))?;
    if text.len() as u64 > TABLE_MAX_BYTES {
        return Err(format!(
            "{} is larger than {TABLE_MAX_BYTES} bytes",
            path.display()
        ));
    }
    ModuleTable::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// One line in the kernel log at `level` (`<N>` prefix, as `printk` levels), cut to
/// [`KMSG_LINE_MAX`]. Best effort: with no /dev/kmsg the line is lost, not the answer.
fn kmsg(level: u8, line: &str) {
    let mut text = format!("<{level}>mmx-agent modprobe: {line}");
    if text.len() > KMSG_LINE_MAX {
        let mut cut = KMSG_LINE_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text.push('\n');
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = f.write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn takes_the_kernels_command_line() {
        assert_eq!(
            parse_args(&args(&["-q", "--", "crypto-crc32c"])).unwrap(),
            "crypto-crc32c"
        );
        assert_eq!(parse_args(&args(&["fs-xfs"])).unwrap(), "fs-xfs");
        // After `--` a name may start with a dash.
        assert_eq!(parse_args(&args(&["-q", "--", "-odd"])).unwrap(), "-odd");
        assert!(parse_args(&args(&["-q", "--"])).is_err());
        assert!(parse_args(&args(&["-r", "x"])).is_err());
        assert!(parse_args(&args(&["a", "b"])).is_err());
    }

    #[test]
    fn the_name_decides_the_role() {
        use std::ffi::OsStr;
        assert!(invoked_as_modprobe(Some(OsStr::new("/mmx/modprobe"))));
        assert!(invoked_as_modprobe(Some(OsStr::new("modprobe"))));
        assert!(!invoked_as_modprobe(Some(OsStr::new("/init"))));
        assert!(!invoked_as_modprobe(Some(OsStr::new("./mmx-agent"))));
        assert!(!invoked_as_modprobe(None));
    }

    fn table() -> ModuleTable {
        let text = r#"{"modules": [
            {"name": "crc32c_generic", "path": "/lib/modules/crc32c_generic.ko.xz",
             "aliases": ["crypto-crc32c", "crc32c"]},
            {"name": "crc32c_intel", "path": "/lib/modules/crc32c_intel.ko.xz",
             "aliases": ["crypto-crc32c", "crc32c"]},
            {"name": "libcrc32c", "path": "/lib/modules/libcrc32c.ko.xz"},
            {"name": "xfs", "path": "/lib/modules/xfs.ko.xz", "depends": ["libcrc32c"],
             "aliases": ["fs-xfs"]}
        ]}"#;
        ModuleTable::parse(text).unwrap()
    }

    #[test]
    fn a_request_loads_every_answer_in_order_and_says_so() {
        let mut calls = Vec::new();
        let (status, line) = answer(&table(), "crypto-crc32c", |n, p| {
            calls.push((n.map(str::to_string), p.to_path_buf()));
            Ok(if n == Some("crc32c_intel") {
                Loaded::AlreadyThere
            } else {
                Loaded::Inserted
            })
        });
        assert_eq!(status, 0);
        assert_eq!(
            line,
            "crypto-crc32c: loaded crc32c_generic, crc32c_intel (already loaded)"
        );
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].1, Path::new("/lib/modules/crc32c_generic.ko.xz"));

        let mut order = Vec::new();
        let (status, _) = answer(&table(), "fs-xfs", |n, _| {
            order.push(n.unwrap_or("").to_string());
            Ok(Loaded::Inserted)
        });
        assert_eq!((status, order), (0, vec!["libcrc32c".into(), "xfs".into()]));
    }

    #[test]
    fn nothing_answering_or_a_failed_load_is_status_1() {
        let (status, line) = answer(&table(), "crypto-crc32c-all", |_, _| {
            panic!("nothing to load")
        });
        assert_eq!(status, 1);
        assert!(
            line.contains("no module in the initramfs answers it"),
            "{line}"
        );

        let (status, line) = answer(&table(), "fs-xfs", |n, p| {
            if n == Some("libcrc32c") {
                Err(LoadError::FinitModule {
                    path: p.display().to_string(),
                    flags: 4,
                    errno: rustix::io::Errno::NOENT,
                })
            } else {
                panic!("xfs must not be tried after its dependency failed")
            }
        });
        assert_eq!(status, 1);
        assert!(
            line.starts_with("fs-xfs: finit_module(/lib/modules/libcrc32c.ko.xz, \"\", 4) failed"),
            "{line}"
        );
    }

    #[test]
    fn the_table_is_read_bounded() {
        let dir = tempfile_dir();
        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; (TABLE_MAX_BYTES + 1) as usize]).unwrap();
        assert!(read_table(&big).unwrap_err().contains("larger than"));
        let ok = dir.join("ok.json");
        std::fs::write(&ok, serde_json::to_string(&table()).unwrap()).unwrap();
        assert_eq!(read_table(&ok).unwrap(), table());
        assert!(read_table(&dir.join("none"))
            .unwrap_err()
            .starts_with("open("));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mmx-modprobe-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn compressed_modules_ask_the_kernel_to_decompress() {
        assert_eq!(module_flags(Path::new("/lib/modules/x/overlay.ko.xz")), 4);
        assert_eq!(module_flags(Path::new("/lib/modules/x/overlay.ko")), 0);
        assert_eq!(module_flags(Path::new("virtio_blk.ko")), 0);
    }
}

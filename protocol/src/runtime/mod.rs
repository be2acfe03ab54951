//! The runtime contract: how mmx drives a container runtime's own mount code.
//!
//! A *runtime* is a static executable that builds idmapped overlay rootfses the way a real
//! container runtime does (containerd's `core/mount`, or any program speaking this contract).
//! mmx starts one runtime process per worker and feeds it jobs; the agent lays out the layers,
//! times each job from request to answer, counts the mount operations the kernel saw, verifies
//! the result and checks for leaks, exactly as it does for its built-in strategies.
//!
//! # Process
//!
//! * Started with the arguments its recipe gives (`args`, none by default), stdin and stdout as
//!   pipes, stderr free-form (kept, bounded, as evidence). The working directory is an empty
//!   directory the agent made for this process: a runtime may create temporary files and mounts
//!   below it (containerd keeps its `tmpmounts` there) and nowhere else except the targets it is
//!   asked to mount on. The agent checks that directory for leaked mounts like the targets.
//! * Runs as root in the initial user namespace, in a private mount namespace the agent made for
//!   its worker (a copy of the run's, which nothing outside the run sees): every mount event in
//!   it is the runtime's, so the kernel's count of a job is exact. It dies with its worker
//!   (parent-death signal).
//! * Each job gets at most the recipe's `job_timeout_s` (30 s unless it says; stretched like
//!   every limit under TCG) from request to answer; a runtime past it is killed and its cell is
//!   `timeout`.
//! * First writes one [`Hello`] line, then reads one [`Job`] per line on stdin and answers each
//!   with exactly one [`Answer`] line on stdout, in order, before reading the next job. Every
//!   line is one JSON object terminated by `\n`, at most [`MAX_LINE`] bytes with the newline.
//! * Exits with status 0 on EOF on stdin. Anything else (a crash, a signal, a line that does not
//!   parse, an answer with the wrong id, silence past the agent's per-job limit) is the
//!   runtime's failure and is reported with the runtime's stderr as evidence.
//!
//! # Versioning
//!
//! [`Hello::contract`] carries [`CONTRACT_VERSION`]. The agent reads that field alone first
//! ([`parse_hello`]), so a runtime built for another contract is refused with a message naming
//! both versions rather than a confusing parse error. Bump the version on any incompatible change
//! to the job or answer shapes.
//!
//! # Jobs
//!
//! ```json
//! {"job":"mount","id":1,"layers":["/s/l/3/fs","/s/l/2/fs","/s/l/1/fs"],
//!  "pass":{"kind":"rootfs","upper":"/s/c/0/u","work":"/s/c/0/w"},
//!  "target":"/s/c/0/m","uidmap":"0:1000000:65536","gidmap":"0:1000000:65536"}
//! {"job":"unmount","id":2,"target":"/s/c/0/m"}
//! ```
//!
//! * `mount`: build an overlay at `target` (an existing empty directory) from `layers` (absolute
//!   paths, **top layer first**, as containerd orders `lowerdir=`), each layer seen through an
//!   idmapped mount of the user namespace that `uidmap`/`gidmap` describe, so that a file owned
//!   by uid `k` in a layer appears owned by `HOSTID + k`. The mappings use containerd's option
//!   syntax (the value of its `uidmap=`/`gidmap=` mount options, [`IdMap`]).
//!   [`Pass::View`] is a read-only view of the layers alone (an overlay without upper; for a
//!   single layer, where overlay refuses one lower dir without an upper, containerd's snapshotter
//!   uses a read-only rbind instead); [`Pass::Rootfs`] is the container's writable rootfs with
//!   `upper` and `work` (both existing directories; the upper is owned by the container's root
//!   and not idmapped). When the answer is `ok`, the result is mounted at `target` (one mount,
//!   or a stack of them on that one mount point: containerd's idmapped rbind is two) and nothing
//!   else the job made is still attached.
//! * `unmount`: remove what `mount` put at `target` (containerd: `UnmountAll`). Unmounting a
//!   target with nothing mounted is `ok`.
//!
//! # Answers
//!
//! ```json
//! {"answer":"ok","id":1}
//! {"answer":"error","id":1,"step":"mount_setattr(MOUNT_ATTR_IDMAP) /s/l","errno":22,"message":"…"}
//! ```
//!
//! `error` names the `step` that failed in the runtime's own words and, when a system call
//! failed, its `errno` (the kernel's number: an `error` with an errno is read like a built-in
//! strategy's failing syscall, i.e. the kernel or filesystem may not support what was asked).
//! After an `error` the runtime must have undone whatever the job attached.
//!
//! This module is plain data plus a bounded line reader ([`LineReader`]) — a runtime's output is
//! untrusted, so no line is ever read past [`MAX_LINE`] — and [`driver`], the process side.

use std::fmt;
use std::io::{self, BufRead};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod driver;

/// Version of the runtime contract. Bump on any incompatible change to [`Job`] or [`Answer`].
pub const CONTRACT_VERSION: u32 = 1;

/// Longest line either side may write, newline included. A mount job of 256 layers with long
/// paths fits in well under this; anything longer from a runtime is garbage.
pub const MAX_LINE: usize = 64 * 1024;

/// Longest `step` or `message` an answer may carry, so evidence stays readable.
pub const MAX_TEXT: usize = 4096;

/// Per-job limit when a recipe does not set `job_timeout_s` (checked against
/// [`crate::limits::RUNTIME_JOB_TIMEOUT_S`]).
pub const DEFAULT_JOB_TIMEOUT_S: u64 = 30;

/// A runtime's name in a matrix: its column is `runtime:<name>`, and cell ids carry it. Letters,
/// digits, `.`, `_` and `-`, at most [`RuntimeName::MAX_LEN`] of them, so an id stays one word
/// and a name is a safe file name (`/runtimes/<name>` in a guest).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RuntimeName(String);

impl RuntimeName {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RuntimeName {
    type Err = String;
    fn from_str(s: &str) -> Result<RuntimeName, String> {
        let ok = !s.is_empty()
            && s.len() <= RuntimeName::MAX_LEN
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(RuntimeName(s.to_owned()))
        } else {
            Err(format!(
                "runtime name `{s}`: use 1 to {} letters, digits, `.`, `_` and `-` (it becomes \
                 the column `runtime:{s}`)",
                RuntimeName::MAX_LEN
            ))
        }
    }
}

impl TryFrom<String> for RuntimeName {
    type Error = String;
    fn try_from(s: String) -> Result<RuntimeName, String> {
        s.parse()
    }
}

impl From<RuntimeName> for String {
    fn from(n: RuntimeName) -> String {
        n.0
    }
}

impl fmt::Display for RuntimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The runtime's first line: who it is and which contract it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The contract version the runtime was built for ([`CONTRACT_VERSION`]).
    pub contract: u32,
    /// Short name: `containerd`, `mmx-example`.
    pub runtime: String,
    /// The runtime's identity for provenance: a version, a commit, the toolchain
    /// (`2.1.9+ds1-5 go1.27.3`).
    pub version: String,
}

/// One request on the runtime's stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Job {
    Mount {
        /// Echoed in the answer.
        id: u64,
        /// Absolute layer directories, top layer first.
        layers: Vec<PathBuf>,
        pass: Pass,
        /// Existing empty directory to mount the overlay on.
        target: PathBuf,
        uidmap: IdMap,
        gidmap: IdMap,
    },
    Unmount {
        id: u64,
        target: PathBuf,
    },
}

impl Job {
    pub fn id(&self) -> u64 {
        match self {
            Job::Mount { id, .. } | Job::Unmount { id, .. } => *id,
        }
    }

    /// The job as one line (JSON and `\n`).
    pub fn to_line(&self) -> String {
        to_line(self)
    }
}

/// Which of a container start's overlays a mount job builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Pass {
    /// A read-only overlay of the layers alone (containerd's view of an image).
    View,
    /// The container's rootfs: the layers under a writable upper dir.
    Rootfs { upper: PathBuf, work: PathBuf },
}

/// A runtime's answer to one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Answer {
    Ok {
        id: u64,
    },
    Error {
        id: u64,
        /// What failed, in the runtime's words (bounded by [`MAX_TEXT`]).
        step: String,
        /// The kernel's errno when a system call failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        errno: Option<i32>,
        /// The runtime's full error text (bounded by [`MAX_TEXT`]).
        message: String,
    },
}

impl Answer {
    pub fn id(&self) -> u64 {
        match self {
            Answer::Ok { id } | Answer::Error { id, .. } => *id,
        }
    }

    /// The answer as one line (JSON and `\n`).
    pub fn to_line(&self) -> String {
        to_line(self)
    }
}

fn to_line<T: Serialize>(v: &T) -> String {
    // Plain data with string keys: serializing cannot fail.
    let mut s = serde_json::to_string(v).unwrap_or_default();
    s.push('\n');
    s
}

/// One range of an id mapping: container ids `container..container+size` are host ids
/// `host..host+size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// A uid or gid mapping in containerd's syntax: `container:host:size[,container:host:size…]`
/// (`core/mount`'s `parseIDMappingList`; the value of the `uidmap=`/`gidmap=` options). On the
/// wire it is that string, so a containerd-based runtime can pass it through untouched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdMap(Vec<IdRange>);

impl IdMap {
    /// The one-range mapping a container gets: its root is `host`, `size` ids in all.
    pub fn single(host: u32, size: u32) -> IdMap {
        IdMap(vec![IdRange {
            container: 0,
            host,
            size,
        }])
    }

    pub fn ranges(&self) -> &[IdRange] {
        &self.0
    }

    /// The host id of container id `id`, if the mapping covers it.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        self.0.iter().find_map(|r| {
            let off = id.checked_sub(r.container)?;
            (off < r.size).then(|| r.host.checked_add(off)).flatten()
        })
    }

    /// The lines to write to `/proc/PID/uid_map` (or `gid_map`): `container host size` each.
    pub fn proc_map(&self) -> String {
        self.0
            .iter()
            .map(|r| format!("{} {} {}\n", r.container, r.host, r.size))
            .collect()
    }
}

/// Why an id mapping string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("id mapping `{text}`: {reason} (expected container:host:size[,container:host:size…])")]
pub struct IdMapError {
    pub text: String,
    pub reason: String,
}

impl FromStr for IdMap {
    type Err = IdMapError;

    fn from_str(text: &str) -> Result<IdMap, IdMapError> {
        let bad = |reason: String| IdMapError {
            text: text.to_owned(),
            reason,
        };
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let fields: Vec<&str> = part.split(':').collect();
            let [c, h, s] = fields[..] else {
                return Err(bad(format!("`{part}` has {} fields, not 3", fields.len())));
            };
            let num = |f: &str, what: &str| {
                f.parse::<u32>()
                    .map_err(|e| bad(format!("{what} `{f}` in `{part}`: {e}")))
            };
            let r = IdRange {
                container: num(c, "container id")?,
                host: num(h, "host id")?,
                size: num(s, "size")?,
            };
            if r.size == 0 {
                return Err(bad(format!("`{part}` maps no ids")));
            }
            if r.container.checked_add(r.size - 1).is_none()
                || r.host.checked_add(r.size - 1).is_none()
            {
                return Err(bad(format!("`{part}` runs past the 32-bit id space")));
            }
            ranges.push(r);
        }
        Ok(IdMap(ranges))
    }
}

impl TryFrom<String> for IdMap {
    type Error = IdMapError;
    fn try_from(s: String) -> Result<IdMap, IdMapError> {
        s.parse()
    }
}

impl From<IdMap> for String {
    fn from(m: IdMap) -> String {
        m.to_string()
    }
}

impl fmt::Display for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}:{}", r.container, r.host, r.size)?;
        }
        Ok(())
    }
}

/// What went wrong reading a runtime's output.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeLineError {
    #[error("reading the runtime's output: {0}")]
    Io(#[from] io::Error),
    #[error("the runtime closed its output")]
    Eof,
    #[error("the runtime wrote a line longer than {max} bytes (starts {start:?})")]
    TooLong { max: usize, start: String },
    #[error("the runtime wrote a line that is not UTF-8 (starts {start:?})")]
    NotUtf8 { start: String },
    #[error("the runtime speaks contract version {found}, mmx speaks version {expected}; rebuild the runtime against this mmx's contract")]
    ContractVersion { found: u32, expected: u32 },
    #[error("malformed {what} from the runtime: {source} (line {line:?})")]
    Garbage {
        what: &'static str,
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the runtime answered job {found} while job {expected} was outstanding")]
    WrongId { expected: u64, found: u64 },
    #[error("the runtime's answer carries a {field} of {len} bytes (at most {MAX_TEXT})")]
    TextTooLong { field: &'static str, len: usize },
}

/// The first bytes of a bad line, for evidence.
fn start_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned()
}

/// Reads newline-terminated lines of at most [`MAX_LINE`] bytes (or a smaller `max`). A longer
/// line is an error, never buffered whole: a runaway runtime cannot make its reader allocate
/// without bound.
pub struct LineReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_max(inner, MAX_LINE)
    }

    pub fn with_max(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            max,
            buf: Vec::new(),
        }
    }

    /// The next line without its `\n`. EOF before any byte is [`RuntimeLineError::Eof`]; a last
    /// line without a newline is returned as is.
    pub fn read_line(&mut self) -> Result<String, RuntimeLineError> {
        self.buf.clear();
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if chunk.is_empty() {
                if self.buf.is_empty() {
                    return Err(RuntimeLineError::Eof);
                }
                break;
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if self.buf.len() + take > self.max {
                let mut start = std::mem::take(&mut self.buf);
                start.extend_from_slice(&chunk[..take.min(120)]);
                return Err(RuntimeLineError::TooLong {
                    max: self.max,
                    start: start_of(&start),
                });
            }
            self.buf.extend_from_slice(&chunk[..take]);
            self.inner.consume(take);
            if done {
                self.buf.pop();
                break;
            }
        }
        String::from_utf8(std::mem::take(&mut self.buf)).map_err(|e| RuntimeLineError::NotUtf8 {
            start: start_of(e.as_bytes()),
        })
    }

    /// Read and check the runtime's first line.
    pub fn read_hello(&mut self) -> Result<Hello, RuntimeLineError> {
        parse_hello(&self.read_line()?)
    }

    /// Read the answer to job `expected`.
    pub fn read_answer(&mut self, expected: u64) -> Result<Answer, RuntimeLineError> {
        parse_answer(&self.read_line()?, expected)
    }

    /// The underlying reader (e.g. to drain it).
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Parse a hello line, reading the contract version first so a mismatch reads as one.
pub fn parse_hello(line: &str) -> Result<Hello, RuntimeLineError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        contract: u32,
    }
    let garbage = |source| RuntimeLineError::Garbage {
        what: "hello",
        line: start_of(line.as_bytes()),
        source,
    };
    let v: VersionOnly = serde_json::from_str(line).map_err(garbage)?;
    if v.contract != CONTRACT_VERSION {
        return Err(RuntimeLineError::ContractVersion {
            found: v.contract,
            expected: CONTRACT_VERSION,
        });
    }
    serde_json::from_str(line).map_err(garbage)
}

/// Parse an answer line and check it answers job `expected`.
pub fn parse_answer(line: &str, expected: u64) -> Result<Answer, RuntimeLineError> {
    let answer: Answer =
        serde_json::from_str(line).map_err(|source| RuntimeLineError::Garbage {
            what: "answer",
            line: start_of(line.as_bytes()),
            source,
        })?;
    if answer.id() != expected {
        return Err(RuntimeLineError::WrongId {
            expected,
            found: answer.id(),
        });
    }
    if let Answer::Error { step, message, .. } = &answer {
        for (field, text) in [("step", step), ("message", message)] {
            if text.len() > MAX_TEXT {
                return Err(RuntimeLineError::TextTooLong {
                    field,
                    len: text.len(),
                });
            }
        }
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount_job() -> Job {
        Job::Mount {
            id: 1,
            layers: vec!["/s/l/2/fs".into(), "/s/l/1/fs".into()],
            pass: Pass::Rootfs {
                upper: "/s/c/0/u".into(),
                work: "/s/c/0/w".into(),
            },
            target: "/s/c/0/m".into(),
            uidmap: IdMap::single(1_000_000, 65536),
            gidmap: IdMap::single(1_000_000, 65536),
        }
    }

    #[test]
    fn jobs_round_trip_in_the_documented_shape() {
        let line = mount_job().to_line();
        assert_eq!(
            line,
            "{\"job\":\"mount\",\"id\":1,\"layers\":[\"/s/l/2/fs\",\"/s/l/1/fs\"],\"pass\":{\"kind\":\"rootfs\",\"upper\":\"/s/c/0/u\",\"work\":\"/s/c/0/w\"},\"target\":\"/s/c/0/m\",\"uidmap\":\"0:1000000:65536\",\"gidmap\":\"0:1000000:65536\"}\n"
        );
        assert_eq!(serde_json::from_str::<Job>(&line).unwrap(), mount_job());
        let view = r#"{"job":"mount","id":3,"layers":["/l"],"pass":{"kind":"view"},"target":"/t","uidmap":"0:5:10","gidmap":"0:5:10"}"#;
        let j: Job = serde_json::from_str(view).unwrap();
        assert!(matches!(
            j,
            Job::Mount {
                pass: Pass::View,
                ..
            }
        ));
        let un = Job::Unmount {
            id: 2,
            target: "/t".into(),
        };
        assert_eq!(
            un.to_line(),
            "{\"job\":\"unmount\",\"id\":2,\"target\":\"/t\"}\n"
        );
        assert_eq!(serde_json::from_str::<Job>(&un.to_line()).unwrap(), un);
        // Unknown fields are refused, so a typo never silently means a default.
        assert!(
            serde_json::from_str::<Job>(r#"{"job":"unmount","id":2,"target":"/t","x":1}"#).is_err()
        );
    }

    #[test]
    fn answers_round_trip_and_are_checked() {
        let ok = Answer::Ok { id: 4 };
        assert_eq!(ok.to_line(), "{\"answer\":\"ok\",\"id\":4}\n");
        assert_eq!(parse_answer(ok.to_line().trim_end(), 4).unwrap(), ok);
        let err = Answer::Error {
            id: 5,
            step: "mount_setattr".into(),
            errno: Some(22),
            message: "invalid argument".into(),
        };
        assert_eq!(parse_answer(err.to_line().trim_end(), 5).unwrap(), err);
        let no_errno = r#"{"answer":"error","id":5,"step":"parse","message":"bad"}"#;
        assert!(matches!(
            parse_answer(no_errno, 5).unwrap(),
            Answer::Error { errno: None, .. }
        ));
        assert!(matches!(
            parse_answer(r#"{"answer":"ok","id":9}"#, 5),
            Err(RuntimeLineError::WrongId {
                expected: 5,
                found: 9
            })
        ));
        assert!(matches!(
            parse_answer("mounted!", 5),
            Err(RuntimeLineError::Garbage { what: "answer", .. })
        ));
        let long = format!(
            r#"{{"answer":"error","id":5,"step":"{}","message":"m"}}"#,
            "s".repeat(MAX_TEXT + 1)
        );
        assert!(matches!(
            parse_answer(&long, 5),
            Err(RuntimeLineError::TextTooLong { field: "step", .. })
        ));
    }

    #[test]
    fn hello_checks_the_contract_version_first() {
        let h = Hello {
            contract: CONTRACT_VERSION,
            runtime: "containerd".into(),
            version: "2.1.9 go1.27.3".into(),
        };
        let line = serde_json::to_string(&h).unwrap();
        assert_eq!(parse_hello(&line).unwrap(), h);
        // A future runtime with fields we do not know still gets the version message.
        let err = parse_hello(r#"{"contract":2,"runtime":"x","version":"y","new":true}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("version 2") && err.contains("version 1"),
            "{err}"
        );
        assert!(matches!(
            parse_hello("hello"),
            Err(RuntimeLineError::Garbage { what: "hello", .. })
        ));
    }

    #[test]
    fn id_maps_use_containerd_syntax() {
        let m: IdMap = "0:1000000:65536,65536:2000000:10".parse().unwrap();
        assert_eq!(m.ranges().len(), 2);
        assert_eq!(m.to_string(), "0:1000000:65536,65536:2000000:10");
        assert_eq!(m.to_host(0), Some(1_000_000));
        assert_eq!(m.to_host(65535), Some(1_065_535));
        assert_eq!(m.to_host(65537), Some(2_000_001));
        assert_eq!(m.to_host(70000), None);
        assert_eq!(m.proc_map(), "0 1000000 65536\n65536 2000000 10\n");
        for bad in [
            "",
            "0:1",
            "0:1:2:3",
            "a:1:2",
            "0:-1:2",
            "0:1:0",
            "0:4294967295:2",
        ] {
            let e = bad.parse::<IdMap>().unwrap_err().to_string();
            assert!(e.contains("container:host:size"), "{bad}: {e}");
        }
        let e = serde_json::from_str::<Job>(
            r#"{"job":"mount","id":1,"layers":[],"pass":{"kind":"view"},"target":"/t","uidmap":"0:x:1","gidmap":"0:1:1"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("host id `x`"), "{e}");
    }

    #[test]
    fn line_reader_bounds_lines() {
        let text = b"one\ntwo\nlast";
        let mut r = LineReader::new(&text[..]);
        assert_eq!(r.read_line().unwrap(), "one");
        assert_eq!(r.read_line().unwrap(), "two");
        assert_eq!(r.read_line().unwrap(), "last");
        assert!(matches!(r.read_line(), Err(RuntimeLineError::Eof)));

        // A line over the bound is refused without reading it whole, and a short one after a
        // long one is not reachable (the stream is out of step; the caller kills the runtime).
        let long = format!("{}\nok\n", "x".repeat(100));
        let small = std::io::BufReader::with_capacity(16, long.as_bytes());
        let mut r = LineReader::with_max(small, 64);
        assert!(matches!(
            r.read_line(),
            Err(RuntimeLineError::TooLong { max: 64, .. })
        ));
        // Exactly at the bound (newline included) is fine.
        let exact = format!("{}\n", "y".repeat(63));
        let mut r = LineReader::with_max(exact.as_bytes(), 64);
        assert_eq!(r.read_line().unwrap().len(), 63);

        let mut r = LineReader::new(&b"\xff\xfe\n"[..]);
        assert!(matches!(
            r.read_line(),
            Err(RuntimeLineError::NotUtf8 { .. })
        ));
    }

    #[test]
    fn reader_reads_a_conversation() {
        let out = format!(
            "{}\n{}{}",
            serde_json::to_string(&Hello {
                contract: CONTRACT_VERSION,
                runtime: "r".into(),
                version: "v".into()
            })
            .unwrap(),
            Answer::Ok { id: 1 }.to_line(),
            Answer::Ok { id: 2 }.to_line()
        );
        let mut r = LineReader::new(out.as_bytes());
        assert_eq!(r.read_hello().unwrap().runtime, "r");
        assert_eq!(r.read_answer(1).unwrap(), Answer::Ok { id: 1 });
        assert_eq!(r.read_answer(2).unwrap(), Answer::Ok { id: 2 });
        assert!(matches!(r.read_answer(3), Err(RuntimeLineError::Eof)));
    }
}

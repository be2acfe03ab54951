//! Patch series: finding them (globs, or one mbox split into mails), reading what provenance
//! records (subject, SHA-256), and applying them (`git am` for mails on git trees, `patch -p1`
//! otherwise). A patch that does not apply stops the build with the patch's name and the hunk
//! that was rejected, cut out of the patch itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::build::{logged, run_captured, BuildError, BuildLog, Rejected};
use super::source::{Located, PatchSpec};
use super::{KernelError, PatchInfo};
use crate::git::Git;

/// One `patch -p1`: a kernel patch touches a few files, applied in a second; past five minutes
/// patch is stuck (it never asks anything: `--batch`).
const PATCH_LIMIT: Duration = Duration::from_secs(5 * 60);

/// One patch of a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// The file it came from (an mbox holds several).
    pub file: PathBuf,
    /// 1-based position in its mbox; None for a file of its own.
    pub mail: Option<usize>,
    pub subject: String,
    pub sha256: String,
    pub text: String,
}

impl Patch {
    fn new(file: PathBuf, mail: Option<usize>, text: String) -> Patch {
        let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
        let fallback = file
            .file_name()
            .map_or_else(|| "patch".into(), |n| n.to_string_lossy().into_owned());
        let subject = subject(&text).unwrap_or(fallback);
        Patch {
            file,
            mail,
            subject,
            sha256,
            text,
        }
    }

    /// `0001-x.patch`, or `series.mbx (mail 3)`, for messages.
    pub fn name(&self) -> String {
        let base = self.file.display().to_string();
        match self.mail {
            Some(n) => format!("{base} (mail {n})"),
            None => base,
        }
    }

    /// A mail (`From:` and `Subject:` headers), which `git am` can commit with its author.
    pub fn is_mail(&self) -> bool {
        let head = headers(&self.text);
        head.iter().any(|(k, _)| k.eq_ignore_ascii_case("from"))
            && head.iter().any(|(k, _)| k.eq_ignore_ascii_case("subject"))
    }

    pub fn info(&self) -> PatchInfo {
        PatchInfo {
            file: self.file.clone(),
            mail: self.mail,
            subject: self.subject.clone(),
            sha256: self.sha256.clone(),
        }
    }
}

/// Read the series a recipe names. `recipe` is the recipe file (paths are relative to its
/// directory; errors name it and the line).
pub fn load(spec: &PatchSpec, recipe: &Path) -> Result<Vec<Patch>, KernelError> {
    let base = recipe.parent().unwrap_or(Path::new("."));
    let bad = |line: usize, key: &str, message: String| KernelError::Recipe {
        file: recipe.to_path_buf(),
        line,
        key: key.to_string(),
        message,
    };
    let read = |p: &Path, line: usize, key: &str| {
        fs::read_to_string(p).map_err(|e| bad(line, key, format!("{}: {e}", p.display())))
    };
    match spec {
        PatchSpec::None => Ok(Vec::new()),
        PatchSpec::Mbox(Located { value, line }) => {
            let text = read(value, *line, "source.mbox")?;
            let mails = split_mbox(&text);
            if mails.is_empty() {
                return Err(bad(
                    *line,
                    "source.mbox",
                    format!("{}: no patches in it", value.display()),
                ));
            }
            Ok(mails
                .into_iter()
                .enumerate()
                .map(|(i, m)| Patch::new(value.clone(), Some(i + 1), m))
                .collect())
        }
        PatchSpec::Files(globs) => {
            let mut out = Vec::new();
            for Located { value, line } in globs {
                let files = expand_glob(base, value)
                    .map_err(|m| bad(*line, "source.patches", format!("`{value}`: {m}")))?;
                for f in files {
                    let text = read(&f, *line, "source.patches")?;
                    out.push(Patch::new(f, None, text));
                }
            }
            Ok(out)
        }
    }
}

/// Expand a glob whose wildcards (`*`, `?`) are in the file name only, in name order.
pub(crate) fn expand_glob(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = base.join(pattern);
    let (dir, name) = match (full.parent(), full.file_name()) {
        (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => return Err("not a file pattern".into()),
    };
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err("wildcards are allowed in the file name only".into());
    }
    if !name.contains(['*', '?']) {
        return if full.is_file() {
            Ok(vec![full])
        } else {
            Err(format!("{} does not exist", full.display()))
        };
    }
    let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(format!("matches no file in {}", dir.display()));
    }
    Ok(found)
}

/// `*` matches any run of characters, `?` one character.
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// Split an mbox into mails: a mail starts at a `From ` line at the top or after a blank line
/// (mboxrd quotes such lines inside bodies as `>From `).
pub(crate) fn split_mbox(text: &str) -> Vec<String> {
    let mut mails: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut prev_blank = true;
    for line in text.split_inclusive('\n') {
        if line.starts_with("From ") && prev_blank && !current.trim().is_empty() {
            mails.push(std::mem::take(&mut current));
        }
        prev_blank = line.trim().is_empty();
        current.push_str(line);
    }
    if current.contains("\n---") || current.contains("diff --git") || current.contains("\n@@ ") {
        mails.push(current);
    }
    mails.retain(|m| m.contains("\n@@ ") || m.contains("diff --git"));
    mails
}

/// The mail headers at the top of `text` (after an mbox `From ` line), unfolded.
fn headers(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut lines = text.lines().peekable();
    if lines.peek().is_some_and(|l| l.starts_with("From ")) {
        lines.next();
    }
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        match line.split_once(':') {
            Some((k, v)) if !k.contains(' ') => out.push((k.to_string(), v.trim().to_string())),
            // Not a header block at all (a plain diff with a description).
            _ => return Vec::new(),
        }
    }
    out
}

/// The subject as `git am` would commit it: the `Subject:` header without leading `[PATCH …]`
/// tags; for a plain diff, its first line of prose.
fn subject(text: &str) -> Option<String> {
    if let Some((_, s)) = headers(text)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("subject"))
    {
        let mut s = s.trim();
        while s.starts_with('[') {
            match s.find(']') {
                Some(end) => s = s[end + 1..].trim_start(),
                None => break,
            }
        }
        return (!s.is_empty()).then(|| s.to_string());
    }
    text.lines()
        .take_while(|l| {
            !(l.starts_with("diff ") || l.starts_with("--- ") || l.starts_with("Index:"))
        })
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// The files a patch touches, relative to the tree (`-p1`): old and new names.
pub(crate) fn touched_files(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |p: &str| {
        let p = p.split('\t').next().unwrap_or(p).trim();
        if p == "/dev/null" {
            return;
        }
        let rel = p.split_once('/').map_or(p, |(_, r)| r).to_string();
        if !rel.is_empty() && !out.contains(&rel) {
            out.push(rel);
        }
    };
    for line in text.lines() {
        if let Some(p) = line
            .strip_prefix("--- ")
            .or_else(|| line.strip_prefix("+++ "))
        {
            add(p);
        } else if let Some(p) = line
            .strip_prefix("rename from ")
            .or_else(|| line.strip_prefix("rename to "))
            .or_else(|| line.strip_prefix("copy to "))
        {
            // git's rename headers carry no a/ b/ prefix.
            add(&format!("x/{p}"));
        }
    }
    out
}

/// One hunk of a unified diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hunk {
    /// The file it changes (new name, `-p1`).
    pub file: String,
    /// 1-based among the file's hunks (GNU patch's "Hunk #N").
    pub number: usize,
    /// The first line of the old side (git's "patch failed: FILE:LINE").
    pub old_start: usize,
    pub text: String,
}

pub(crate) fn hunks(text: &str) -> Vec<Hunk> {
    let mut out: Vec<Hunk> = Vec::new();
    let (mut old_file, mut file) = (String::new(), String::new());
    let mut number = 0;
    let mut open = false;
    let strip = |p: &str| {
        let p = p.split('\t').next().unwrap_or(p).trim();
        p.split_once('/').map_or(p, |(_, r)| r).to_string()
    };
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("--- ") {
            old_file = strip(p);
            open = false;
        } else if let Some(p) = line.strip_prefix("+++ ") {
            file = if p.trim() == "/dev/null" {
                old_file.clone()
            } else {
                strip(p)
            };
            number = 0;
            open = false;
        } else if let Some(rest) = line.strip_prefix("@@ -") {
            number += 1;
            let old_start = rest
                .split([',', ' '])
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            out.push(Hunk {
                file: file.clone(),
                number,
                old_start,
                text: format!("{line}\n"),
            });
            open = true;
        } else if open && line.starts_with([' ', '+', '-', '\\']) {
            if let Some(h) = out.last_mut() {
                h.text.push_str(line);
                h.text.push('\n');
            }
        } else {
            open = false;
        }
    }
    out
}

/// Apply with `patch -p1` (no backups, no reject files: the error carries the hunk).
pub(crate) fn apply_plain(
    src: &Path,
    patch: &Patch,
    position: (usize, usize),
    log: &mut BuildLog,
) -> Result<(), BuildError> {
    let mut cmd = Command::new("patch");
    cmd.args([
        "-p1",
        "--batch",
        "--forward",
        "--no-backup-if-mismatch",
        "--reject-file=-",
        "-d",
    ])
    .arg(src);
    log.note(&format!("patch -p1 < {}", patch.name()));
    let (ok, output) = run_captured(cmd, PATCH_LIMIT, Some(patch.text.as_bytes()), log, "patch")?;
    if ok {
        return Ok(());
    }
    // "patching file X" … "Hunk #N FAILED at L."
    let mut file = None;
    let mut failed = None;
    for line in output.lines() {
        if let Some(f) = line.strip_prefix("patching file ") {
            file = Some(f.trim().trim_matches('\'').to_string());
        } else if let Some(rest) = line.strip_prefix("Hunk #") {
            if rest.contains("FAILED") {
                let n = rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<usize>().ok());
                if let (Some(f), Some(n)) = (&file, n) {
                    failed = Some((f.clone(), n));
                    break;
                }
            }
        }
    }
    let hunk = failed.and_then(|(f, n)| {
        hunks(&patch.text)
            .into_iter()
            .find(|h| h.file == f && h.number == n)
    });
    Err(rejected(patch, position, hunk, &output, log))
}

/// Apply a mail with `git am` (the commit keeps its author; the committer is mmx).
pub(crate) fn apply_mail(
    src: &Path,
    patch: &Patch,
    position: (usize, usize),
    log: &mut BuildLog,
) -> Result<(), BuildError> {
    let am = Git::in_repo(src)
        .args(["-c", "commit.gpgsign=false", "am", "--no-3way", "--keep-cr"])
        .env("GIT_COMMITTER_NAME", "mmx")
        .env("GIT_COMMITTER_EMAIL", "mmx@localhost")
        .stdin(patch.text.as_bytes());
    log.note(&format!("git am < {}", patch.name()));
    let (ok, output) = logged(am.into_run().run(), log, "git am")?;
    if ok {
        return Ok(());
    }
    let abort = Git::in_repo(src).args(["am", "--abort"]);
    let _ = logged(abort.into_run().run(), log, "git am --abort");
    // "error: patch failed: fs/x.c:570"
    let hunk = output.lines().find_map(|l| {
        let rest = l.strip_prefix("error: patch failed: ")?;
        let (file, line) = rest.rsplit_once(':')?;
        let line: usize = line.trim().parse().ok()?;
        hunks(&patch.text)
            .into_iter()
            .find(|h| h.file == file && h.old_start == line)
    });
    Err(rejected(patch, position, hunk, &output, log))
}

fn rejected(
    patch: &Patch,
    (n, total): (usize, usize),
    hunk: Option<Hunk>,
    output: &str,
    log: &BuildLog,
) -> BuildError {
    let (file, hunk) = match hunk {
        Some(h) => (
            h.file.clone(),
            format!(
                "hunk #{} of {} rejected:\n{}",
                h.number,
                h.file,
                h.text.trim_end()
            ),
        ),
        None => (String::new(), output.trim().to_string()),
    };
    BuildError::Patch(Box::new(Rejected {
        patch: patch.name(),
        subject: patch.subject.clone(),
        n,
        total,
        file,
        detail: hunk,
        log: log.path().to_path_buf(),
    }))
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// A patch from text, for tests elsewhere in the module.
    pub(crate) fn patch(text: &str) -> super::Patch {
        super::Patch::new("test.patch".into(), None, text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL: &str = "From 1234abcd Mon Sep 17 00:00:00 2001\nFrom: A Dev <a@example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: [PATCH v2 1/2] ovl: refuse\n the lowerdir+ key\n\nBody.\n---\n fs/overlayfs/params.c | 3 +++\n\ndiff --git a/fs/overlayfs/params.c b/fs/overlayfs/params.c\n--- a/fs/overlayfs/params.c\n+++ b/fs/overlayfs/params.c\n@@ -570,6 +570,9 @@ static int ovl_parse_param(struct fs_context *fc, struct fs_parameter *param)\n \tswitch (opt) {\n \tcase Opt_lowerdir:\n \t\terr = ovl_parse_param_lowerdir(param->string, fc);\n \t\tbreak;\n+\tcase Opt_lowerdir_add:\n+\t\terr = -EINVAL;\n+\t\tbreak;\n \tcase Opt_lowerdir_add:\n \tcase Opt_datadir_add:\n \tcase Opt_upperdir:\n@@ -600,2 +603,2 @@\n-a\n+b\n-- \n2.39.2\n\n";

    #[test]
    fn mail_subject_is_unfolded_without_tags() {
        let p = Patch::new("x.patch".into(), None, MAIL.to_string());
        assert_eq!(p.subject, "ovl: refuse the lowerdir+ key");
        assert!(p.is_mail());
        assert_eq!(p.sha256.len(), 64);
    }

    #[test]
    fn plain_diff_subject_is_its_first_prose_line_or_the_file_name() {
        let p = Patch::new(
            "p/fix.diff".into(),
            None,
            "Make it faster\n\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n".into(),
        );
        assert_eq!(p.subject, "Make it faster");
        assert!(!p.is_mail());
        let p = Patch::new(
            "p/fix.diff".into(),
            None,
            "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n".into(),
        );
        assert_eq!(p.subject, "fix.diff");
    }

    #[test]
    fn mbox_splits_at_from_lines_after_blank_lines() {
        let two = format!(
            "{MAIL}{}",
            MAIL.replace("1/2] ovl: refuse", "2/2] ovl: second")
        );
        let mails = split_mbox(&two);
        assert_eq!(mails.len(), 2);
        assert!(mails[1].contains("2/2"));
        // A body line starting with "From " that does not follow a blank line stays.
        let one = MAIL.replace("Body.\n", "Body.\nFrom here on\n");
        assert_eq!(split_mbox(&one).len(), 1);
    }

    #[test]
    fn hunks_and_touched_files() {
        let h = hunks(MAIL);
        assert_eq!(h.len(), 2);
        assert_eq!(
            (h[0].file.as_str(), h[0].number, h[0].old_start),
            ("fs/overlayfs/params.c", 1, 570)
        );
        assert!(h[0].text.contains("+\t\terr = -EINVAL;"));
        assert!(!h[0].text.contains("@@ -600"));
        assert_eq!(h[1].old_start, 600);
        assert!(!h[1].text.contains("2.39.2"), "{}", h[1].text);
        assert_eq!(touched_files(MAIL), ["fs/overlayfs/params.c"]);
        let rename =
            "diff --git a/a.c b/b.c\nrename from a.c\nrename to b.c\n--- /dev/null\n+++ b/new.c\n";
        assert_eq!(touched_files(rename), ["a.c", "b.c", "new.c"]);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*.patch", "0001-x.patch"));
        assert!(wildcard("000?-*.patch", "0001-x.patch"));
        assert!(!wildcard("*.patch", "0001-x.diff"));
        assert!(wildcard("*", ""));
        assert!(!wildcard("a*b", "acbx"));
        assert!(wildcard("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn globs_expand_in_name_order_and_empty_ones_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("patches");
        fs::create_dir(&p).unwrap();
        for n in ["0002-b.patch", "0001-a.patch", "notes.txt"] {
            fs::write(p.join(n), "x").unwrap();
        }
        let got = expand_glob(dir.path(), "patches/*.patch").unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["0001-a.patch", "0002-b.patch"]);
        assert!(expand_glob(dir.path(), "patches/*.mbx")
            .unwrap_err()
            .contains("matches no file"));
        assert!(expand_glob(dir.path(), "p*/x.patch")
            .unwrap_err()
            .contains("file name only"));
        assert!(expand_glob(dir.path(), "patches/none.patch")
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn load_names_the_recipe_line_of_a_glob_that_matches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let recipe = dir.path().join("k.toml");
        let spec = PatchSpec::Files(vec![Located {
            value: "nothing/*.patch".into(),
            line: 4,
        }]);
        match load(&spec, &recipe) {
            Err(KernelError::Recipe { line, key, .. }) => {
                assert_eq!((line, key.as_str()), (4, "source.patches"));
            }
            other => panic!("{other:?}"),
        }
    }
}

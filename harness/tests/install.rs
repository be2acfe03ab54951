//! mmx as someone else's repository meets it: installed with `cargo install --locked --path
//! harness` into a temporary root, then used in an empty git repository outside the checkout,
//! with a PATH that holds neither the checkout nor cargo and no MMX_AGENT, so nothing could reach
//! the mmx sources: `mmx init`, `mmx doctor`, a local run and a QEMU run. Also: `init` refuses
//! to overwrite, `doctor` checks a real sshd's host key without logging in, and the GitHub action
//! and example workflow call only commands and inputs that exist.
//!
//! Slow: the install shares the workspace's target directory and dev profile (`--debug`), so it
//! reuses what `cargo nextest` already compiled; tests that need it take a file lock so parallel
//! test processes install once at a time.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A precondition: fail under CI=true, else say SKIPPED loudly and let the test return.
fn require(ok: bool, reason: &str) -> bool {
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and a precondition is missing: {reason}"
        );
        eprintln!("SKIPPED ({reason})");
    }
    ok
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn output_text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `cargo install --locked --debug --path harness --root <target tmp>/mmx-install`, once at a time.
fn installed_mmx() -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let root = base.join("mmx-install");
    let lock = std::fs::File::create(base.join("mmx-install.lock")).expect("lock file");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let o = Command::new(cargo)
        .args(["install", "--locked", "--debug", "--force", "--path"])
        .arg(workspace().join("harness"))
        .arg("--root")
        .arg(&root)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("running cargo install");
    assert!(
        o.status.success(),
        "cargo install failed: {}",
        output_text(&o)
    );
    root.join("bin").join("mmx")
}

/// A command for the installed mmx as a user would run it: in `dir`, an environment with
/// nothing of the build in it (no CARGO, no MMX_AGENT, no cargo or checkout on PATH).
fn user_mmx(mmx: &Path, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(mmx);
    cmd.args(args).current_dir(dir).env_clear().env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    // The cache stays the user's (kernels are shared between tests and runs).
    for keep in [
        "HOME",
        "MMX_CACHE_DIR",
        "XDG_CACHE_HOME",
        "TMPDIR",
        "CI",
        "LANG",
    ] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.output().expect("running the installed mmx")
}

/// An empty git repository outside the checkout.
fn user_repository() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mmx-user-repo-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    assert!(!dir.path().starts_with(workspace()));
    let git = Command::new("git")
        .args(["init", "-q"])
        .current_dir(dir.path())
        .status();
    if !git.is_ok_and(|s| s.success()) {
        eprintln!("(no git here: an empty directory stands in for the repository)");
    }
    dir
}

fn run_json(dir: &Path) -> serde_json::Value {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("run.json parses")
}

/// The run directory has run.json and every report, and every cell passed.
fn assert_passing_run(dir: &Path, min_cells: usize) {
    for f in ["run.json", "report.md", "report.html", "junit.xml"] {
        assert!(dir.join(f).is_file(), "{} missing", dir.join(f).display());
    }
    let run = run_json(dir);
    let cells = run["cells"].as_array().expect("cells");
    assert!(cells.len() >= min_cells, "{} cells: {cells:?}", cells.len());
    for c in cells {
        assert_eq!(c["outcome"], "pass", "{}", c["key"]);
    }
}

#[test]
fn an_installed_mmx_sets_up_checks_and_runs_a_repository_of_its_own() {
    let mmx = installed_mmx();
    let repo = user_repository();
    let dir = repo.path();

    let version = user_mmx(&mmx, dir, &["--version"]);
    assert!(version.status.success(), "{}", output_text(&version));
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let hash = version
        .trim()
        .strip_suffix(')')
        .and_then(|v| v.rsplit_once("(agent "))
        .map(|(_, h)| h.to_string())
        .unwrap_or_else(|| panic!("`mmx --version` names no agent: {version}"));
    assert_eq!(hash, harness::agent::embedded_hash(), "{version}");

    let init = user_mmx(&mmx, dir, &["init"]);
    assert!(init.status.success(), "{}", output_text(&init));
    for f in [
        "matrix.toml",
        "kernels/kernels.lock",
        ".github/workflows/mmx.yml",
    ] {
        assert!(dir.join(f).is_file(), "init did not write {f}");
    }

    let doctor = user_mmx(&mmx, dir, &["doctor"]);
    let out = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(doctor.status.success(), "{}", output_text(&doctor));
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok    agent") && l.contains(&hash)),
        "doctor names the carried agent: {out}"
    );
    let kvm = out
        .lines()
        .find(|l| {
            l.contains(" kvm ")
                && (l.starts_with("ok") || l.starts_with("warn") || l.starts_with("FAIL"))
        })
        .unwrap_or_else(|| panic!("no KVM verdict: {out}"));
    eprintln!("doctor: {kvm}");
    assert!(
        kvm.starts_with("ok") || (kvm.starts_with("warn") && kvm.contains("TCG")),
        "KVM is either usable or TCG is the fallback: {kvm}"
    );

    if require(
        rustix::process::geteuid().is_root(),
        "not root: `mmx run --backend local` needs root",
    ) {
        let o = user_mmx(
            &mmx,
            dir,
            &[
                "run",
                "--backend",
                "local",
                "--filter",
                "*/per-layer-L1-*",
                "--filter",
                "*/common-parent-L1-*",
                "--run-id",
                "local",
            ],
        );
        assert!(o.status.success(), "{}", output_text(&o));
        assert_passing_run(&dir.join("runs/local"), 2);
    }

    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if require(
        qemu,
        "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)",
    ) {
        let o = user_mmx(
            &mmx,
            dir,
            &[
                "run",
                "--backend",
                "qemu",
                "--filter",
                "debian-6.12/1s2c1t/tmpfs/per-layer-L1*",
                "--run-id",
                "qemu",
            ],
        );
        assert!(o.status.success(), "{}", output_text(&o));
        assert_passing_run(&dir.join("runs/qemu"), 1);
        let run = run_json(&dir.join("runs/qemu"));
        assert!(run["cells"]
            .as_array()
            .expect("cells")
            .iter()
            .all(|c| c["key"]["target"]["kernel"] == "debian-6.12"));
    }
}

#[test]
fn init_twice_refuses_and_names_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mmx = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mmx"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("mmx")
    };
    let first = mmx(&["init"]);
    assert!(first.status.success(), "{}", output_text(&first));
    let matrix = std::fs::read_to_string(dir.path().join("matrix.toml")).expect("matrix");
    std::fs::write(dir.path().join("matrix.toml"), "# mine\n").expect("edit");

    let second = mmx(&["init"]);
    assert_eq!(second.status.code(), Some(2), "{}", output_text(&second));
    let err = String::from_utf8_lossy(&second.stderr);
    for f in [
        "matrix.toml",
        "kernels/debian-6.1.toml",
        "kernels/debian-6.12.toml",
        "kernels/debian-7.x.toml",
        "kernels/kernels.lock",
        "kernels/README.md",
        "runtimes/runtimes.lock",
        ".github/workflows/mmx.yml",
    ] {
        assert!(err.contains(f), "the refusal names {f}: {err}");
    }
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("matrix.toml")).expect("read"),
        "# mine\n",
        "nothing was overwritten"
    );

    let forced = mmx(&["init", "--force", "--action", "me/mmx@v1"]);
    assert!(forced.status.success(), "{}", output_text(&forced));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("matrix.toml")).expect("read"),
        matrix
    );
}

/// Every file under `dir` with its bytes (symlinks as their targets): what a test compares to
/// show nothing there changed.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let meta = std::fs::symlink_metadata(&p).expect("lstat");
            if meta.is_symlink() {
                let target = std::fs::read_link(&p).expect("readlink");
                out.push((p, target.into_os_string().into_encoded_bytes()));
            } else if meta.is_dir() {
                out.push((p.clone(), Vec::new()));
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

/// `mmx init` in a directory where someone planted symlinks (a shared checkout, a directory
/// another user can write): a file's link is never followed (refused, or with --force replaced
/// by the file), a link where init makes a directory is refused with its path, and nothing
/// outside the target directory is written.
#[test]
fn init_never_writes_through_a_symlink() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().expect("tempdir");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "victim\n").expect("victim");
    let victim_dir = outside.path().join("victim-dir");
    std::fs::create_dir(&victim_dir).expect("victim-dir");
    let before = tree(outside.path());
    let init = |dir: &Path, force: bool| {
        let mut args = vec!["init", "--action", "me/mmx@v1"];
        if force {
            args.push("--force");
        }
        Command::new(env!("CARGO_BIN_EXE_mmx"))
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("mmx")
    };

    // A file that is a symlink.
    let dir = tempfile::tempdir().expect("tempdir");
    symlink(&victim, dir.path().join("matrix.toml")).expect("symlink");
    let refused = init(dir.path(), false);
    assert_eq!(refused.status.code(), Some(2), "{}", output_text(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("matrix.toml"),
        "the refusal names the link: {err}"
    );
    assert!(!dir.path().join("kernels").exists(), "nothing written");
    let forced = init(dir.path(), true);
    assert!(forced.status.success(), "{}", output_text(&forced));
    let meta = std::fs::symlink_metadata(dir.path().join("matrix.toml")).expect("lstat");
    assert!(meta.is_file(), "--force replaced the link with the file");
    assert_eq!(tree(outside.path()), before, "nothing outside was written");

    // A directory init makes that is a symlink (to a directory, or to nothing yet), with and
    // without --force.
    for (name, target) in [
        ("kernels", victim_dir.clone()),
        (".github", victim_dir.clone()),
        ("runtimes", outside.path().join("not-yet")),
    ] {
        for force in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            symlink(&target, dir.path().join(name)).expect("symlink");
            let out = init(dir.path(), force);
            assert_eq!(out.status.code(), Some(2), "{name}: {}", output_text(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            // `mmx init` without DIR: the target is `.`, and the link is named below it.
            assert!(
                err.contains(&format!("./{name}")) && err.contains("symlink"),
                "{name} (force {force}): the error names the link: {err}"
            );
            assert_eq!(
                tree(outside.path()),
                before,
                "{name}: nothing outside was written"
            );
            if !force {
                assert!(
                    !dir.path().join("matrix.toml").exists(),
                    "{name}: nothing written"
                );
            }
        }
    }
}

fn yaml(path: &Path) -> serde_norway::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The mmx subcommands a shell script calls: `mmx SUB` and `args=(SUB …)` arrays passed to mmx.
fn mmx_subcommands(script: &str) -> BTreeSet<String> {
    let mut subs = BTreeSet::new();
    for line in script.lines() {
        // Comments talk about mmx; they call nothing.
        let line = line.split_once('#').map_or(line, |(code, _)| code);
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let next = words.get(i + 1).copied().unwrap_or("");
            let called = w.trim_matches('"').ends_with("mmx") && !w.contains('=');
            let word = next.trim_matches('"');
            if called && word.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                subs.insert(word.to_string());
            }
            if let Some(sub) = w.strip_prefix("args=(") {
                subs.insert(sub.to_string());
            }
        }
    }
    subs
}

#[test]
fn the_action_parses_and_calls_only_commands_and_inputs_that_exist() {
    let action = yaml(&workspace().join("action.yml"));
    assert_eq!(action["runs"]["using"], "composite");
    let inputs: BTreeSet<String> = action["inputs"]
        .as_mapping()
        .expect("inputs")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    let steps = action["runs"]["steps"].as_sequence().expect("steps");
    let mut subs = BTreeSet::new();
    for step in steps {
        if let Some(run) = step["run"].as_str() {
            assert_eq!(
                step["shell"], "bash",
                "composite run steps need a shell: {run}"
            );
            subs.extend(mmx_subcommands(run));
        }
    }
    let source = std::fs::read_to_string(workspace().join("action.yml")).expect("action.yml");
    for used in source.split("inputs.").skip(1) {
        let name: String = used
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        assert!(
            inputs.contains(&name),
            "action.yml uses undeclared input `{name}`"
        );
    }
    // The extraction found what the action is for; a change that hides them fails here.
    for want in ["doctor", "run", "merge", "compare"] {
        assert!(subs.contains(want), "`mmx {want}` not found among {subs:?}");
    }
    for sub in &subs {
        let o = Command::new(env!("CARGO_BIN_EXE_mmx"))
            .args([sub.as_str(), "--help"])
            .output()
            .expect("mmx");
        assert!(
            o.status.success(),
            "`mmx {sub} --help`: {}",
            output_text(&o)
        );
    }

    // The example workflow (what `mmx init` writes) passes only inputs the action declares.
    let example = yaml(&workspace().join("examples/github-actions.yml"));
    let mut uses = 0;
    for job in example["jobs"].as_mapping().expect("jobs").values() {
        for step in job["steps"].as_sequence().expect("steps") {
            if step["uses"].as_str() != Some(harness::init::ACTION_PLACEHOLDER) {
                continue;
            }
            uses += 1;
            for key in step["with"].as_mapping().into_iter().flat_map(|m| m.keys()) {
                let key = key.as_str().expect("input name");
                assert!(
                    inputs.contains(key),
                    "the example passes unknown input `{key}`"
                );
            }
        }
    }
    assert_eq!(
        uses, 2,
        "the example runs the action in a shard job and a merge job"
    );
}

/// Every `run:` script in `value` (any depth), with where it is.
fn run_scripts<'a>(value: &'a serde_norway::Value, at: &str, out: &mut Vec<(String, &'a str)>) {
    match value {
        serde_norway::Value::Mapping(m) => {
            for (k, v) in m {
                let key = k.as_str().unwrap_or("?");
                let here = format!("{at}.{key}");
                match (key, v.as_str()) {
                    ("run", Some(script)) => out.push((here, script)),
                    _ => run_scripts(v, &here, out),
                }
            }
        }
        serde_norway::Value::Sequence(s) => {
            for (i, v) in s.iter().enumerate() {
                run_scripts(v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// An expression expanded inside a script is text pasted into shell code before bash reads
/// it: a branch name or an input becomes a command. Values go through `env:`.
#[test]
fn no_run_script_of_the_action_or_the_example_expands_an_expression() {
    for file in ["action.yml", "examples/github-actions.yml"] {
        let doc = yaml(&workspace().join(file));
        let mut scripts = Vec::new();
        run_scripts(&doc, "", &mut scripts);
        assert!(scripts.len() >= 2, "{file}: found only {scripts:?}");
        for (at, script) in scripts {
            assert!(
                !script.contains("${{"),
                "{file}{at}: an expression inside a run: script; pass it through env:\n{script}"
            );
        }
    }
}

/// The example's gate reads its baseline from the base branch, so a pull request cannot move
/// its own gate: the action's `baseline` is a file outside the checkout that an earlier step
/// wrote from the base ref.
#[test]
fn the_examples_baseline_comes_from_the_base_branch() {
    let example = yaml(&workspace().join("examples/github-actions.yml"));
    let steps = example["jobs"]["merge"]["steps"]
        .as_sequence()
        .expect("merge steps");
    let gate = steps
        .iter()
        .position(|s| s["with"]["mode"].as_str() == Some("merge"))
        .expect("the merge step");
    let baseline = steps[gate]["with"]["baseline"]
        .as_str()
        .expect("a baseline");
    assert!(
        baseline.starts_with("${{ runner.temp }}/"),
        "the baseline must not be read from the pull request's checkout: {baseline}"
    );
    let file = baseline.trim_start_matches("${{ runner.temp }}/");
    let writer = steps[..gate]
        .iter()
        .find(|s| s["run"].as_str().is_some_and(|r| r.contains(file)))
        .unwrap_or_else(|| panic!("no step before the gate writes {file}"));
    assert_eq!(
        writer["env"]["BASE_REF"].as_str(),
        Some("${{ github.base_ref || github.event.repository.default_branch }}")
    );
    let script = writer["run"].as_str().expect("script");
    assert!(
        script.contains("git fetch") && script.contains("$BASE_REF"),
        "{script}"
    );
}

/// The action's cache key for the mmx binary changes with every file compiled into mmx — the
/// files `mmx init` carries, the templates, the agent, the lock — and not with others. Runs the
/// action's own key script on a copy of the repository.
#[test]
fn the_actions_mmx_cache_key_follows_every_file_compiled_into_mmx() {
    let action = yaml(&workspace().join("action.yml"));
    let script = action["runs"]["steps"]
        .as_sequence()
        .expect("steps")
        .iter()
        .find(|s| s["id"].as_str() == Some("keys"))
        .and_then(|s| s["run"].as_str())
        .expect("the keys step");
    let copy = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(workspace()).expect("workspace") {
        let name = e.expect("entry").file_name();
        if [".git", "target", "runs"].iter().any(|n| name == *n) {
            continue;
        }
        let o = Command::new("cp")
            .arg("-a")
            .arg(workspace().join(&name))
            .arg(copy.path())
            .output()
            .expect("cp");
        assert!(o.status.success(), "{}", output_text(&o));
    }
    let key = || {
        let out = copy.path().join("github-output");
        std::fs::write(&out, "").expect("output");
        let o = Command::new("bash")
            .args(["-eo", "pipefail", "-c", script])
            .env("GITHUB_ACTION_PATH", copy.path())
            .env("GITHUB_OUTPUT", &out)
            .env("RUNNER_OS", "Linux")
            .env("MATRIX", "matrix.toml")
            .current_dir(copy.path())
            .output()
            .expect("bash");
        assert!(o.status.success(), "{}", output_text(&o));
        let text = std::fs::read_to_string(&out).expect("output");
        text.lines()
            .find_map(|l| l.strip_prefix("mmx="))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no mmx= key in {text:?}"))
    };
    let before = key();
    let touched = |rel: &str| {
        let p = copy.path().join(rel);
        let text = std::fs::read(&p).unwrap_or_else(|e| panic!("{rel}: {e}"));
        std::fs::write(&p, [text.as_slice(), b"\n"].concat()).expect("write");
        let after = key();
        std::fs::write(&p, text).expect("restore");
        after
    };
    for compiled in [
        "matrix.toml",
        "kernels/debian-6.12.toml",
        "kernels/kernels.lock",
        "runtimes/runtimes.lock",
        "runtimes/containerd/main.go",
        "examples/github-actions.yml",
        "reports/templates/report.md.j2",
        "guest-agent/src/main.rs",
        "protocol/src/lib.rs",
        "Cargo.toml",
        "Cargo.lock",
        "harness/src/main.rs",
    ] {
        assert_ne!(touched(compiled), before, "{compiled} is compiled into mmx");
    }
    assert_eq!(
        touched("README.md"),
        before,
        "README.md is not compiled into mmx"
    );
    assert_eq!(key(), before, "restored");
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line() {
    let mmx = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mmx"))
            .args(args)
            .output()
            .expect("mmx")
    };
    let bash = mmx(&["completions", "bash"]);
    assert!(bash.status.success(), "{}", output_text(&bash));
    let script = String::from_utf8_lossy(&bash.stdout);
    for sub in ["doctor", "init", "merge"] {
        assert!(script.contains(sub), "bash completion lacks {sub}");
    }
    let man = mmx(&["man"]);
    assert!(man.status.success(), "{}", output_text(&man));
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH mmx"),
        "{page}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8 path");
    let pages = mmx(&["man", "--out", out]);
    assert!(pages.status.success(), "{}", output_text(&pages));
    assert!(dir.path().join("mmx-doctor.1").is_file());
    // `--help` names the files a command reads and writes.
    let help = mmx(&["run", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Reads:") && help.contains("kernels.lock") && help.contains("run.json"));
}

/// A throwaway sshd on loopback that would let the key in: doctor must check its host key and
/// still not log in.
#[test]
fn doctor_checks_a_hosts_key_without_logging_in() {
    const SSHD: &str = "/usr/sbin/sshd";
    if !require(
        rustix::process::geteuid().is_root() && Path::new(SSHD).is_file(),
        "needs root and /usr/sbin/sshd (apt-get install openssh-server)",
    ) {
        return;
    }
    let d = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| d.path().join(n);
    for key in ["host", "user"] {
        let o = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(p(key))
            .output()
            .expect("ssh-keygen");
        assert!(o.status.success(), "{}", output_text(&o));
    }
    std::fs::copy(p("user.pub"), p("authorized_keys")).expect("authorized_keys");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    std::fs::write(
        p("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nLogLevel VERBOSE\n",
            p("host").display(),
            p("authorized_keys").display()
        ),
    )
    .expect("sshd_config");
    let mut sshd = Command::new(SSHD)
        .args(["-D", "-f"])
        .arg(p("sshd_config"))
        .arg("-E")
        .arg(p("sshd.log"))
        .spawn()
        .expect("sshd");
    // Wait until it listens.
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "sshd did not start");
    std::fs::write(
        p("matrix.toml"),
        format!(
            "kernels = []\n[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n\
             [[hosts]]\nname = \"lo\"\ndestination = \"root@127.0.0.1\"\nport = {port}\n\
             identity_file = \"{}\"\nssh_options = [\"UserKnownHostsFile={}\"]\nallow_ssh_options = [{{ option = \"UserKnownHostsFile\", reason = \"the test sshd's throwaway key\" }}]\n",
            p("user").display(),
            p("known_hosts").display()
        ),
    )
    .expect("matrix");
    std::fs::write(p("known_hosts"), "").expect("known_hosts");
    let doctor = || {
        Command::new(env!("CARGO_BIN_EXE_mmx"))
            .args(["doctor", "--matrix"])
            .arg(p("matrix.toml"))
            .output()
            .expect("mmx doctor")
    };
    let unknown = doctor();
    let out = String::from_utf8_lossy(&unknown.stdout).into_owned();
    assert_eq!(unknown.status.code(), Some(1), "{}", output_text(&unknown));
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL  host lo") && l.contains("unknown")),
        "{out}"
    );

    let host_pub = std::fs::read_to_string(p("host.pub")).expect("host.pub");
    let key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    std::fs::write(
        p("known_hosts"),
        format!("[127.0.0.1]:{port} {}\n", key.join(" ")),
    )
    .expect("known_hosts");
    let known = doctor();
    let out = String::from_utf8_lossy(&known.stdout).into_owned();
    let _ = sshd.kill();
    let _ = sshd.wait();
    assert!(known.status.success(), "{}", output_text(&known));
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok    host lo") && l.contains("host key known")),
        "{out}"
    );
    let log = std::fs::read_to_string(p("sshd.log")).expect("sshd.log");
    assert!(
        !log.contains("Accepted"),
        "doctor logged in, which it must never do:\n{log}"
    );
}

//! The shell scripts mmx runs on a metal host, and the status lines they print.
//!
//! They are POSIX `sh` (dash, bash, busybox) so any Linux host runs them, and they are sent as
//! `sh -c '<script>' mmx-ssh ARGS…` so the login shell only has to parse one quoted word.
//!
//! Status lines of the prepare and cleanup steps start with [`STATUS_PREFIX`]; no agent runs
//! while they do, and each has an ssh channel of its own. The run step's stdout is shared with
//! the agent, which can print anything: its status lines carry a [`RunToken`], fresh for each
//! visit, that the script reads from stdin (never an argument or an exported variable, so it is
//! in neither the agent's environment nor the script's command line), and the harness believes
//! only lines with it. A root agent could still read the script's memory; so nothing that
//! matters is taken from the run's output even then: the SMT value restored is the one mmx read
//! in the prepare step (`smt.rs`), the dir removed is the one mmx named. Result lines (`MMX1 …`)
//! pass through untouched.

use std::fmt;

/// Prefix of the prepare and cleanup scripts' status lines on stdout (`mmx-ssh: KEY VALUE`).
pub const STATUS_PREFIX: &str = "mmx-ssh: ";

/// Checks root or sudo, says what the SMT control file `$3` reads (`smt-control`, before the
/// agent is on the host: the value a visit restores), makes the private temp dir `$2` (a fresh
/// name: `mkdir` fails rather than reuse anything), and stores what stdin carries: the plan as
/// one JSON line, then each runtime `$4…` names as `NAME:SIZE` (exactly SIZE bytes each, into
/// `$2/runtimes/NAME`), then the agent; it prints the sha256 of every file it stored. `$1`:
/// `sudo` when the harness may use `sudo -n`, else `root`. Nothing is created when the checks
/// fail, and the dir goes again if anything after `mkdir` fails or is interrupted. (`head -c`
/// reads no further than it must; runtime names are letters, digits, `.`, `_` and `-`.)
pub const PREPARE: &str = r#"set -eu
echo "mmx-ssh: uid $(id -u)"
smt=$(head -n 1 -- "$3" 2>/dev/null) || smt=missing
echo "mmx-ssh: smt-control $smt"
if [ "$(id -u)" != 0 ]; then
  [ "$1" = sudo ] || exit 0
  if err=$(sudo -n true 2>&1 </dev/null); then echo "mmx-ssh: sudo ok"
  else echo "mmx-ssh: sudo-failed $(printf '%s' "$err" | tr '\n' ' ')"; exit 0; fi
fi
umask 077
d=$2
mkdir -m 700 -- "$d"
trap 'rm -rf -- "$d"' EXIT
trap 'exit 1' HUP INT TERM PIPE
echo "mmx-ssh: dir $d"
IFS= read -r plan
printf '%s\n' "$plan" > "$d/plan.json"
shift 3
[ $# -eq 0 ] || mkdir -m 700 -- "$d/runtimes"
for spec in "$@"; do
  name=${spec%%:*} size=${spec#*:}
  head -c "$size" > "$d/runtimes/$name"
  chmod 700 "$d/runtimes/$name"
  sum=$(sha256sum "$d/runtimes/$name")
  echo "mmx-ssh: runtime-sha256 $name ${sum%% *}"
done
cat > "$d/mmx-agent"
chmod 700 "$d/mmx-agent"
sum=$(sha256sum "$d/mmx-agent")
echo "mmx-ssh: sha256 ${sum%% *}"
trap - EXIT
"#;

/// Runs the agent. First line of stdin: the visit's [`RunToken`], which every status line
/// carries (`mmx-ssh TOKEN: KEY VALUE`). `$1` temp dir (the scratch dir is `$1/scratch`), `$2`
/// the SMT value to write before the agent starts (`on`, `off`; empty: none), `$3` the value to
/// restore after it (what mmx read in the prepare step: the script checks the file still reads
/// it before writing), `$4` seconds after which the host gives up on its own, `$5` the SMT
/// control file (a plain file in tests).
///
/// The agent reads stdin (the SSH channel) and stops at EOF; a watcher on the same stdin sends it
/// SIGTERM too, and SIGKILL 12 s later, so a lost connection stops even an agent that does not
/// watch or is slow to stop (its mounts live in its own mount namespace and go with it).
/// `timeout -k 10` (when there) turns a TERM into a KILL 10 s later on its own, so the watcher's
/// KILL, aimed at `timeout`, comes after it. Without a pty
/// sshd sends no SIGHUP when a connection dies; the channel's EOF is the signal. Whatever ends
/// the script (agent exit, HUP/INT/TERM, a broken stdout), one trap stops the agent, restores
/// the SMT control file and removes the temp dir, then says `cleaned` (or what it left) if
/// stdout is still there: the harness then has nothing to clean. It starts that line on a line
/// of its own, whatever the agent left unfinished.
pub const RUN: &str = r#"IFS= read -r tok || exit 2
case $tok in ''|*[!0-9a-f]*) exit 2 ;; esac
d=$1 to=$2 restore=$3 limit=$4 ctl=$5
scratch=$d/scratch
old= pid= wpid= cleaned=
say() { printf 'mmx-ssh %s: %s\n' "$tok" "$*"; }
cleanup() {
  [ -z "$cleaned" ] || return 0
  cleaned=1
  trap '' HUP INT TERM PIPE
  rm -f "$d/agent.running" 2>/dev/null
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null
    n=0
    while kill -0 "$pid" 2>/dev/null && [ $n -lt 120 ]; do sleep 0.1; n=$((n+1)); done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  [ -z "$wpid" ] || kill "$wpid" 2>/dev/null
  note=
  if [ -n "$old" ]; then
    printf '%s\n' "$old" > "$ctl" 2>/dev/null || note="smt-not-restored $old"
  fi
  # Never reach into a mount: leave a tree that still has one.
  if grep -qF -e " $d/" -e " $d " /proc/self/mountinfo 2>/dev/null; then note="left-mounted $d"
  else rm -rf -- "$d" 2>/dev/null; [ ! -e "$d" ] || note="left $d"; fi
  { echo; if [ -n "$note" ]; then say "$note"; else say cleaned; fi; } 2>/dev/null
}
trap cleanup EXIT
trap 'cleanup; exit 129' HUP
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 141' PIPE
echo $$ > "$d/wrapper.pid"
if [ -n "$to" ]; then
  cur=$(cat "$ctl" 2>/dev/null) || cur=missing
  if [ "$cur" != "$restore" ]; then
    say "error $ctl reads \`$cur\`, not \`$restore\` as when the visit began"; exit 3
  fi
  old=$restore
  say "smt-switch $to restore $restore"
  if ! err=$( { printf '%s\n' "$to" > "$ctl"; } 2>&1 ); then
    say "error writing \`$to\` to $ctl failed: $err"; exit 3
  fi
fi
say "smt $(cat "$ctl" 2>/dev/null || echo missing)"
if ! err=$(mkdir -m 700 -- "$scratch" 2>&1); then
  say "error creating the scratch dir $scratch failed: $err"; exit 3
fi
exec 3<&0
: > "$d/agent.running"
if command -v timeout >/dev/null 2>&1; then set -- timeout -k 10 "$limit"; else set --; fi
"$@" "$d/mmx-agent" run-plan "$d/plan.json" --exit-on-stdin-eof <&3 &
pid=$!
{
  cat >/dev/null
  [ ! -e "$d/agent.running" ] || kill -TERM "$pid"
  sleep 12
  [ ! -e "$d/agent.running" ] || kill -KILL "$pid"
} <&3 >/dev/null 2>&1 &
wpid=$!
exec 3<&-
wait "$pid"
rc=$?
rm -f "$d/agent.running"
pid=
echo
say "agent-exit $rc"
exit $rc
"#;

/// The harness's own cleanup when the run script could not confirm its own (a lost
/// connection, Ctrl-C, a failed step). `$1` temp dir, `$2` SMT value to restore (empty: none),
/// `$3` the SMT control file.
/// Waits for a run script that is still stopping the agent (it takes at most ~12 s after a lost
/// connection; asked to stop after 15 s, it takes ~12 s more), then removes whatever is left and
/// says what it did.
pub const CLEANUP: &str = r#"d=$1 old=$2 ctl=$3
say() { printf 'mmx-ssh: %s\n' "$*"; }
wpid=$(cat "$d/wrapper.pid" 2>/dev/null) || wpid=
n=0
while [ -n "$wpid" ] && kill -0 "$wpid" 2>/dev/null && [ $n -lt 300 ]; do
  [ $n -ne 150 ] || kill -TERM "$wpid" 2>/dev/null
  sleep 0.1; n=$((n+1))
done
if [ -n "$old" ] && cur=$(cat "$ctl" 2>/dev/null) && [ "$cur" != "$old" ]; then
  if printf '%s\n' "$old" > "$ctl" 2>/dev/null; then say "smt-restored $old"; else say "smt-not-restored $old"; fi
fi
if [ ! -e "$d" ]; then say cleaned
elif grep -qF -e " $d/" -e " $d " /proc/self/mountinfo 2>/dev/null; then say "left-mounted $d"
else
  rm -rf -- "$d" 2>/dev/null
  if [ -e "$d" ]; then say "left $d"; else say "removed $d"; fi
fi
"#;

/// Quote one word for a POSIX shell.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The remote command line: `[sudo -n] sh -c '<script>' mmx-ssh 'arg'…`.
pub fn command_line(sudo: bool, script: &str, args: &[&str]) -> String {
    let mut s = String::new();
    if sudo {
        // -n: never ask for a password (there is no one to type it).
        s.push_str("sudo -n ");
    }
    s.push_str("sh -c ");
    s.push_str(&sh_quote(script));
    s.push_str(" mmx-ssh");
    for a in args {
        s.push(' ');
        s.push_str(&sh_quote(a));
    }
    s
}

/// The run step's secret: 128 bits from the kernel's random pool, as 32 hex digits, made for one
/// visit and given to the run script on its stdin.
#[derive(Clone, PartialEq, Eq)]
pub struct RunToken(String);

/// A line of the run step's stdout, as the harness reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunLine<'a> {
    /// The run script's status line, with this visit's token: `(KEY, VALUE)`.
    Status(&'a str, &'a str),
    /// Looks like a status line but lacks the token: someone else printed it.
    Forged,
    /// Anything else (result lines, noise).
    Other,
}

impl RunToken {
    pub fn new() -> std::io::Result<RunToken> {
        let mut b = [0u8; 16];
        let n = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())?;
        if n != b.len() {
            return Err(std::io::Error::other("getrandom returned fewer bytes"));
        }
        Ok(RunToken(hex::encode(b)))
    }

    /// What the run script reads first from its stdin.
    pub fn stdin_line(&self) -> Vec<u8> {
        format!("{}\n", self.0).into_bytes()
    }

    /// Read one line of the run step's stdout.
    pub fn read<'a>(&self, line: &'a str) -> RunLine<'a> {
        let Some(rest) = line.strip_prefix("mmx-ssh") else {
            return RunLine::Other;
        };
        let status = rest
            .strip_prefix(' ')
            .and_then(|r| r.strip_prefix(self.0.as_str()))
            .and_then(|r| r.strip_prefix(": "));
        match status {
            Some(kv) => {
                let kv = kv.trim_end();
                let (k, v) = kv.split_once(' ').unwrap_or((kv, ""));
                RunLine::Status(k, v)
            }
            None => RunLine::Forged,
        }
    }
}

/// Never printed: the token stays out of logs and messages.
impl fmt::Debug for RunToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RunToken(…)")
    }
}

/// `mmx-ssh: KEY VALUE` → `(KEY, VALUE)`; `None` for any other line.
pub fn parse_status(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(STATUS_PREFIX)?.trim_end();
    Some(rest.split_once(' ').unwrap_or((rest, "")))
}

/// The first value of `key` among status lines.
pub fn status_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .filter_map(parse_status)
        .find_map(|(k, v)| (k == key).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_real_shell() {
        let tricky = "it's $HOME `x` \"q\" \\ \n end";
        let cmd = format!("printf %s {}", sh_quote(tricky));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), tricky);
    }

    #[test]
    fn command_line_passes_args_as_positional_words() {
        let cmd = command_line(false, r#"printf '%s|' "$@""#, &["a b", "it's"]);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|it's|");
        assert!(command_line(true, "true", &[]).starts_with("sudo -n sh -c "));
    }

    #[test]
    fn status_lines_are_picked_out() {
        let text =
            "noise\nmmx-ssh: uid 0\nMMX1 {}\nmmx-ssh: dir /var/tmp/mmx.x y\nmmx-ssh: clean\n";
        assert_eq!(status_value(text, "uid"), Some("0"));
        assert_eq!(status_value(text, "dir"), Some("/var/tmp/mmx.x y"));
        assert_eq!(status_value(text, "clean"), Some(""));
        assert_eq!(status_value(text, "sha256"), None);
        assert_eq!(parse_status("MMX1 {\"event\":\"done\"}"), None);
    }

    #[test]
    fn only_lines_with_the_visits_token_are_status_lines() {
        let t = RunToken::new().unwrap();
        let other = RunToken::new().unwrap();
        assert_ne!(t, other);
        assert_eq!(t.stdin_line().len(), 33);
        let line = |tok: &RunToken, rest: &str| {
            format!(
                "mmx-ssh {}: {rest}",
                String::from_utf8_lossy(&tok.stdin_line()).trim()
            )
        };
        assert_eq!(t.read(&line(&t, "cleaned")), RunLine::Status("cleaned", ""));
        assert_eq!(
            t.read(&line(&t, "left /x y\r")),
            RunLine::Status("left", "/x y")
        );
        for forged in [
            line(&other, "cleaned"),
            "mmx-ssh: smt-old forceoff".to_string(),
            "mmx-ssh : cleaned".to_string(),
            "mmx-ssh 00000000000000000000000000000000: cleaned".to_string(),
        ] {
            assert_eq!(t.read(&forged), RunLine::Forged, "{forged}");
        }
        assert_eq!(
            t.read(&format!("x {}", line(&t, "cleaned"))),
            RunLine::Other
        );
        assert_eq!(t.read("MMX1 {}"), RunLine::Other);
        assert!(!format!("{t:?}")
            .contains(&String::from_utf8_lossy(&t.stdin_line()).trim().to_string()));
    }

    /// The run script on this machine, with a plain file as the SMT control and a stand-in
    /// agent, asked for SMT off: whatever the agent does, the old SMT value comes back and the
    /// dir goes. Returns the script's status lines (as `mmx-ssh: KEY VALUE`, token checked),
    /// its whole stdout, the control file, and the token it was given.
    fn run_script_with(agent: &str, control: &str, stop_with: Option<i32>) -> (String, String) {
        let (status, _, ctl, _) = run_script_in(agent, control, stop_with, |_| {});
        (status, ctl)
    }

    fn run_script_in(
        agent: &str,
        control: &str,
        stop_with: Option<i32>,
        check_tmp: impl FnOnce(&std::path::Path),
    ) -> (String, String, String, RunToken) {
        use super::super::smt::{decide, SmtPlan};
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("mmx.test");
        std::fs::create_dir(&d).unwrap();
        let ctl = tmp.path().join("control");
        std::fs::write(&ctl, control).unwrap();
        let a = d.join("mmx-agent");
        std::fs::write(&a, agent).unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("plan.json"), "{}").unwrap();
        let (d_s, ctl_s) = (d.display().to_string(), ctl.display().to_string());
        let (to, restore) = match decide(crate::cell::SmtSetting::Off, control.trim()) {
            SmtPlan::Switch { set, restore } => (set.word(), restore.word()),
            SmtPlan::Leave => ("", ""),
            SmtPlan::Unsupported { current } => panic!("no run for SMT `{current}`"),
        };
        let token = RunToken::new().unwrap();
        let mut child = std::process::Command::new("sh")
            .args(["-c", RUN, "mmx-ssh", &d_s, to, restore, "60", &ctl_s])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Held open like the SSH channel: EOF here would stop the agent (the watcher).
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&token.stdin_line()).unwrap();
        if let Some(sig) = stop_with {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
            let sig = rustix::process::Signal::from_named_raw(sig).unwrap();
            rustix::process::kill_process(pid, sig).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert!(!d.exists(), "temp dir left behind");
        check_tmp(tmp.path());
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = stdout
            .lines()
            .filter_map(|l| match token.read(l) {
                RunLine::Status(k, v) => Some(format!("mmx-ssh: {k} {v}\n")),
                RunLine::Forged | RunLine::Other => None,
            })
            .collect();
        (
            status,
            stdout,
            std::fs::read_to_string(&ctl).unwrap(),
            token,
        )
    }

    #[test]
    fn smt_is_restored_after_a_failing_agent() {
        let (out, ctl) = run_script_with("#!/bin/sh\nexit 3\n", "on\n", None);
        assert_eq!(ctl, "on\n", "{out}");
        assert!(out.contains("mmx-ssh: smt-switch off restore on"), "{out}");
        assert!(out.contains("mmx-ssh: agent-exit 3"), "{out}");
        assert!(out.contains("mmx-ssh: cleaned"), "{out}");
    }

    #[test]
    fn smt_is_restored_when_the_script_is_hung_up_on() {
        for sig in [libc::SIGHUP, libc::SIGTERM] {
            let (out, ctl) = run_script_with("#!/bin/sh\nexec sleep 30\n", "on\n", Some(sig));
            assert_eq!(ctl, "on\n", "{out}");
            assert!(
                out.contains("mmx-ssh: smt off"),
                "the agent ran with SMT off: {out}"
            );
        }
    }

    #[test]
    fn smt_that_cannot_switch_is_reported_not_written() {
        let (out, ctl) = run_script_with("#!/bin/sh\nexit 0\n", "notsupported\n", None);
        // `off` on a machine without SMT is already true: the agent runs.
        assert!(out.contains("agent-exit 0"), "{out}");
        assert_eq!(ctl, "notsupported\n");
        let (out, _) = run_script_with("#!/bin/sh\nexit 0\n", "forceoff\n", None);
        assert!(out.contains("agent-exit 0"), "{out}");
    }

    /// The agent and everything it can list (its arguments and environment, and those of every
    /// process above it) never hold the token; the script's own last words start a line of
    /// their own after an agent that left one unfinished.
    #[test]
    fn the_token_is_not_where_the_agent_can_list_it() {
        let agent = r#"#!/bin/sh
out=$(dirname "$0")/../seen
{ env; echo "$@"; p=$$
  while [ "$p" -gt 1 ]; do
    tr '\0' ' ' < /proc/$p/cmdline; echo; tr '\0' '\n' < /proc/$p/environ; echo
    p=$(sed 's/.*) [A-Za-z] //; s/ .*//' /proc/$p/stat)
  done; } > "$out" 2>/dev/null
printf 'mmx-ssh: cleaned, no newline'
exit 1
"#;
        let mut seen = String::new();
        let (status, stdout, _, token) = run_script_in(agent, "on\n", None, |tmp| {
            seen = std::fs::read_to_string(tmp.join("seen")).unwrap();
        });
        let hex = String::from_utf8_lossy(&token.stdin_line())
            .trim()
            .to_string();
        assert!(
            seen.contains("mmx-agent"),
            "the agent saw its own command line: {seen}"
        );
        assert!(
            !seen.contains(&hex),
            "the token leaked to the agent:\n{seen}"
        );
        assert!(stdout.contains("mmx-ssh: cleaned, no newline"), "{stdout}");
        assert!(
            status.contains("mmx-ssh: agent-exit 1"),
            "{status}\n{stdout}"
        );
        assert!(status.contains("mmx-ssh: cleaned \n"), "{status}\n{stdout}");
    }

    #[test]
    fn prepare_stores_the_plan_each_runtime_and_the_agent_from_one_stream() {
        use sha2::{Digest, Sha256};
        use std::io::Write;
        if !crate::test_support::require(
            rustix::process::geteuid().is_root(),
            "the prepare script stores files as root only",
        ) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("mmx.visit");
        let d_s = d.display().to_string();
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                PREPARE,
                "mmx-ssh",
                "root",
                &d_s,
                "/nonexistent/smt/control",
                "one:5",
                "two:3",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // Bytes that look like lines must not confuse the split: sizes decide.
        stdin
            .write_all(b"{\"plan\":1}\nAB\nCDxy\nagent\nbytes")
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let read = |rel: &str| std::fs::read(d.join(rel)).unwrap();
        assert_eq!(read("plan.json"), b"{\"plan\":1}\n");
        assert_eq!(read("runtimes/one"), b"AB\nCD");
        assert_eq!(read("runtimes/two"), b"xy\n");
        assert_eq!(read("mmx-agent"), b"agent\nbytes");
        let sum = |b: &[u8]| hex::encode(Sha256::digest(b));
        let sums: Vec<(&str, &str)> = text
            .lines()
            .filter_map(parse_status)
            .filter(|(k, _)| *k == "runtime-sha256")
            .collect();
        assert_eq!(
            sums,
            [
                ("runtime-sha256", format!("one {}", sum(b"AB\nCD")).as_str()),
                ("runtime-sha256", format!("two {}", sum(b"xy\n")).as_str()),
            ]
        );
        assert_eq!(
            status_value(&text, "sha256"),
            Some(sum(b"agent\nbytes").as_str())
        );
        assert_eq!(status_value(&text, "smt-control"), Some("missing"));
    }

    #[test]
    fn scripts_parse_in_sh() {
        for script in [PREPARE, RUN, CLEANUP] {
            let out = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(script)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

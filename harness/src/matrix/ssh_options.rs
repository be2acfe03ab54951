//! The `ssh_options` of a `[[hosts]]` entry: each read the way OpenSSH reads a `-o` option, and
//! checked against one table of the options mmx keeps for itself or that need a reason.
//!
//! A check that finds the key differently from ssh is a check ssh walks around:
//! `" ProxyCommand=…"` (leading whitespace), `"ProxyCommand<TAB>…"`, `"\"Proxy\"Command …"`
//! and `"= ProxyCommand …"` all reach ssh as ProxyCommand. So the key is found by a port of
//! ssh's own tokenizer ([`strdelim`], OpenSSH's `misc.c`, as `process_config_line_depth` in
//! `readconf.c` calls it for a `-o` option), and ssh is handed the option rebuilt from what was
//! checked (`Key=value`, the key a plain word), so it reads back exactly that key. mmx passes
//! every option with `-o` (never in a config file), which is the path this parse follows.

use std::fmt;
use std::path::Path;

/// One `-o` option of a host entry, parsed as ssh parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOption {
    /// The keyword as the user spelled it (without quotes): ASCII letters and digits.
    name: String,
    /// Everything after the keyword and its separator, as ssh takes it (leading whitespace and
    /// trailing whitespace dropped); ssh splits it into words itself.
    value: String,
}

impl SshOption {
    /// Parse `text` the way `ssh -o text` does. Refused here although ssh would take it: a
    /// keyword that is not a plain word (ssh would refuse it as unknown anyway) and control
    /// characters. Refused here because ssh would silently ignore it: a comment or an empty line.
    pub fn parse(text: &str) -> Result<SshOption, String> {
        if let Some(c) = text.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(format!(
                "ssh option `{}` contains the control character {c:?}",
                text.escape_debug()
            ));
        }
        let (name, value) = match keyword_and_rest(text) {
            Ok(kv) => kv,
            Err(Unusable::Ignored) => {
                return Err(format!(
                    "ssh option `{text}` has no keyword: ssh would ignore it (a comment, a blank \
                     or an unmatched quote)"
                ))
            }
            Err(Unusable::NoValue(k)) => {
                return Err(format!("ssh option `{text}` has no value after `{k}`"))
            }
        };
        if !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "ssh option `{text}`: `{name}` is not an ssh option name (letters and digits)"
            ));
        }
        Ok(SshOption { name, value })
    }

    /// The keyword as ssh matches it: lowercase.
    pub fn key(&self) -> String {
        self.name.to_ascii_lowercase()
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// What ssh is given after `-o`: `Key=value`, which ssh reads back as the same key and
    /// value.
    pub fn arg(&self) -> String {
        format!("{}={}", self.name, self.value)
    }

    /// A file on this machine named by a relative path is the matrix's: joined to `base`. Only a
    /// value that is one plain word (no quotes, escapes or spaces for ssh to take apart) is
    /// rewritten; `~`, `%` tokens and `none` stay for ssh.
    fn resolve_paths(self, base: &Path) -> SshOption {
        let v = &self.value;
        let plain = !v.contains(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'));
        let relative = !v.starts_with(['/', '~', '%']) && v != "none";
        if PATH_OPTIONS.contains(&self.key().as_str()) && plain && relative {
            let value = base.join(v).display().to_string();
            SshOption { value, ..self }
        } else {
            self
        }
    }
}

impl fmt::Display for SshOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arg())
    }
}

/// What mmx does with a keyword in a host's `ssh_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// mmx sets it itself, or its supervision depends on ssh's default: never the user's.
    Mmx,
    /// Decides which host keys are trusted, where the connection goes through, or makes ssh run
    /// a program or load a library on this machine: only with `allow_ssh_options` and a reason.
    NeedsReason,
    /// ssh refuses it after `-o`: it belongs in an ssh_config file.
    ConfigFileOnly,
}

/// The one table of keywords mmx does not take from a host entry as they are (lowercase, as
/// ssh matches them), each with why. Not listed, on purpose: `ForwardAgent`, `ForwardX11`
/// (mmx's `-a` and `-x` override them), `LocalForward`, `RemoteForward`, `DynamicForward` and
/// `Tunnel` (mmx's `ClearAllForwardings=yes` comes first and clears them), `RequestTTY` and
/// `EscapeChar` (`-T`: no tty, no escapes), `IdentityAgent` (a socket that signs: it names no
/// code to run and no key to trust), `HostName` (where to connect: the host key is still checked
/// strictly for that name, and the alias that would change that, `HostKeyAlias`, is listed).
// One line per keyword: the table reads down its columns.
#[rustfmt::skip]
const POLICY: &[Rule] = &[
    mmx("batchmode", "mmx never lets ssh prompt (BatchMode=yes)"),
    mmx("controlmaster", "mmx shares one connection per host through its own socket"),
    mmx("controlpath", "mmx shares one connection per host through its own socket"),
    mmx("controlpersist", "mmx shares one connection per host through its own socket"),
    mmx("clearallforwardings", "mmx forwards nothing to a machine under test"),
    mmx("forkafterauthentication", "ssh would go to the background, out of mmx's supervision"),
    mmx("stdinnull", "mmx stops a run by closing ssh's stdin"),
    mmx("sessiontype", "mmx runs its own command on the host"),
    mmx("remotecommand", "mmx runs its own command on the host"),
    // mmx's own `StrictHostKeyChecking=yes` comes first and wins even so.
    reason("stricthostkeychecking", "may accept unknown or changed host keys"),
    reason("userknownhostsfile", "names the host keys that are trusted"),
    reason("globalknownhostsfile", "names the host keys that are trusted"),
    reason("knownhostscommand", "runs a command on this machine that names the trusted keys"),
    reason("updatehostkeys", "lets the host add keys to known_hosts"),
    reason("checkhostip", "checks the host's address in known_hosts too"),
    reason("hostkeyalias", "looks the host key up under another name"),
    reason("verifyhostkeydns", "trusts host keys published in DNS (SSHFP)"),
    reason("revokedhostkeys", "names the revoked host keys: another file un-revokes them"),
    reason("nohostauthenticationforlocalhost", "skips the host key check for localhost"),
    reason("proxycommand", "runs a command on this machine to reach the host"),
    reason("proxyjump", "reaches the host through another one, with a second ssh"),
    reason("localcommand", "runs a command on this machine after connecting"),
    reason("permitlocalcommand", "lets LocalCommand run a command on this machine"),
    reason("pkcs11provider", "loads a library into ssh: code that runs on this machine"),
    reason("smartcarddevice", "loads a library into ssh: code that runs on this machine"),
    reason("securitykeyprovider", "loads a library into ssh: code that runs on this machine"),
    reason("xauthlocation", "names a program ssh runs on this machine"),
    config_only("include", "reads another config file"),
    config_only("match", "starts a conditional block (`Match exec` runs a command)"),
    config_only("host", "starts a block for other hosts"),
];

/// One keyword of [`POLICY`].
struct Rule {
    key: &'static str,
    policy: Policy,
    why: &'static str,
}

const fn mmx(key: &'static str, why: &'static str) -> Rule {
    Rule {
        key,
        policy: Policy::Mmx,
        why,
    }
}

const fn reason(key: &'static str, why: &'static str) -> Rule {
    Rule {
        key,
        policy: Policy::NeedsReason,
        why,
    }
}

const fn config_only(key: &'static str, why: &'static str) -> Rule {
    Rule {
        key,
        policy: Policy::ConfigFileOnly,
        why,
    }
}

/// ssh options whose value is a file on this machine: a relative one is the matrix's.
const PATH_OPTIONS: [&str; 4] = [
    "identityfile",
    "certificatefile",
    "userknownhostsfile",
    "globalknownhostsfile",
];

fn policy(key: &str) -> Option<(Policy, &'static str)> {
    POLICY
        .iter()
        .find(|r| r.key == key)
        .map(|r| (r.policy, r.why))
}

/// Parse and check host `host`'s `options` against the policy, `allowed` being its
/// `allow_ssh_options` (option, reason); relative file paths are joined to `base`.
pub(super) fn resolve(
    host: &str,
    options: &[String],
    allowed: &[(&str, &str)],
    base: &Path,
) -> Result<Vec<SshOption>, String> {
    let mut allowed_keys = Vec::new();
    for (option, reason) in allowed {
        let key = option.to_ascii_lowercase();
        if !matches!(policy(&key), Some((Policy::NeedsReason, _))) {
            return Err(format!(
                "host `{host}`: allow_ssh_options: `{option}` is not an option that needs allowing"
            ));
        }
        if reason.trim().is_empty() {
            return Err(format!(
                "host `{host}`: allow_ssh_options: `{option}` needs a reason"
            ));
        }
        allowed_keys.push(key);
    }
    let mut out = Vec::new();
    for text in options {
        let opt = SshOption::parse(text).map_err(|e| format!("host `{host}`: {e}"))?;
        let key = opt.key();
        match policy(&key) {
            None => {}
            Some((Policy::Mmx, why)) => {
                return Err(format!(
                    "host `{host}`: ssh option `{text}` is not allowed: {why}; mmx always runs \
                     ssh with BatchMode=yes, its own connection sharing and no forwarding"
                ))
            }
            Some((Policy::ConfigFileOnly, why)) => {
                return Err(format!(
                    "host `{host}`: ssh option `{text}` {why}; ssh takes `{}` only in an \
                     ssh_config file, never after -o",
                    opt.name
                ))
            }
            Some((Policy::NeedsReason, _)) if allowed_keys.contains(&key) => {}
            Some((Policy::NeedsReason, why)) => {
                return Err(format!(
                    "host `{host}`: ssh option `{text}` {why}: it changes which host keys are \
                     trusted, how the host is reached or what runs on this machine; mmx checks \
                     host keys strictly against your known_hosts. If you mean it, add \
                     `allow_ssh_options = [{{ option = \"{}\", reason = \"…\" }}]`",
                    opt.name
                ))
            }
        }
        out.push(opt.resolve_paths(base));
    }
    Ok(out)
}

/// Why a line gives ssh no option.
#[derive(Debug, PartialEq, Eq)]
enum Unusable {
    /// ssh skips it without a word: empty, a comment, an unmatched quote.
    Ignored,
    /// A keyword without a value: ssh refuses it (`no argument after keyword`).
    NoValue(String),
}

/// The keyword (quotes removed, spelling kept) and the rest of `line`, exactly as OpenSSH's
/// `process_config_line_depth` finds them: trailing whitespace dropped, the keyword taken with
/// [`strdelim`], and taken again when the first one is empty (leading whitespace, a leading
/// `=` or `""`), the rest's leading whitespace skipped.
fn keyword_and_rest(line: &str) -> Result<(String, String), Unusable> {
    // A C string: strdelim writes NULs into it and moves bytes over removed quotes.
    let mut b: Vec<u8> = line.as_bytes().to_vec();
    b.push(0);
    // "Strip trailing whitespace. Allow \f (form feed) at EOL only": never index 0.
    let mut len = cstr(&b, 0).len();
    if len == 0 {
        return Err(Unusable::Ignored);
    }
    len -= 1;
    while len > 0 && b" \t\r\n\x0c".contains(&b[len]) {
        b[len] = 0;
        len -= 1;
    }
    let mut s = Some(0);
    let mut keyword = strdelim(&mut b, &mut s).ok_or(Unusable::Ignored)?;
    if b[keyword] == 0 {
        // "Ignore leading whitespace."
        keyword = strdelim(&mut b, &mut s).ok_or(Unusable::Ignored)?;
    }
    let k = cstr(&b, keyword);
    if k.is_empty() || k[0] == b'\n' || k[0] == b'#' {
        return Err(Unusable::Ignored);
    }
    let name = String::from_utf8_lossy(k).into_owned();
    let rest = match s {
        Some(p) => {
            let p = p + strspn(&b, p, WHITESPACE);
            cstr(&b, p)
        }
        None => &[],
    };
    if rest.is_empty() {
        return Err(Unusable::NoValue(name));
    }
    Ok((name, String::from_utf8_lossy(rest).into_owned()))
}

/// OpenSSH's `WHITESPACE` (misc.h).
const WHITESPACE: &[u8] = b" \t\r\n";

/// OpenSSH's `strdelim` (misc.c, `strdelim_internal` with `split_equals`), over a NUL-terminated
/// buffer: the next token starting at `*s`, ended by whitespace, a quote or one `=`; a quoted
/// part loses its quotes. Moves `*s` past the separator (`None`: the line is used up) and
/// returns where the token starts, or `None` for an unmatched quote.
fn strdelim(b: &mut Vec<u8>, s: &mut Option<usize>) -> Option<usize> {
    let old = (*s)?;
    let Some(p) = strpbrk(b, old, b" \t\r\n\"=") else {
        *s = None;
        return Some(old);
    };
    if b[p] == b'"' {
        // memmove(*s, *s + 1, strlen(*s)): drop the quote.
        b.remove(p);
        return match strpbrk(b, p, b"\"") {
            None => {
                *s = None;
                None
            }
            Some(q) => {
                b[q] = 0;
                *s = Some(q + 1 + strspn(b, q + 1, WHITESPACE));
                Some(old)
            }
        };
    }
    // "Allow only one '=' to be skipped."
    let equals = b[p] == b'=';
    b[p] = 0;
    let mut next = p + 1 + strspn(b, p + 1, WHITESPACE);
    if b[next] == b'=' && !equals {
        next += 1 + strspn(b, next + 1, WHITESPACE);
    }
    *s = Some(next);
    Some(old)
}

/// C's `strpbrk` from `from`: the first byte of `set` before the NUL.
fn strpbrk(b: &[u8], from: usize, set: &[u8]) -> Option<usize> {
    cstr(b, from)
        .iter()
        .position(|c| set.contains(c))
        .map(|i| from + i)
}

/// C's `strspn` from `from`.
fn strspn(b: &[u8], from: usize, set: &[u8]) -> usize {
    cstr(b, from).iter().take_while(|c| set.contains(c)).count()
}

/// The C string at `from`: up to the next NUL.
fn cstr(b: &[u8], from: usize) -> &[u8] {
    let tail = b.get(from..).unwrap_or(&[]);
    &tail[..tail.iter().position(|c| *c == 0).unwrap_or(tail.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling that reaches ssh as ProxyCommand, the ones the old check missed first.
    const PROXY_COMMAND_FORMS: &[&str] = &[
        " ProxyCommand=sh -c x",
        "  ProxyCommand sh -c x",
        "ProxyCommand\tsh -c x",
        "\tProxyCommand\tsh -c x",
        "\"ProxyCommand\" sh -c x",
        "Proxy\"Command\" sh -c x",
        "\"\"ProxyCommand sh -c x",
        "= ProxyCommand sh -c x",
        "PROXYCOMMAND =  = sh -c x",
        "proxycommand=sh -c x",
        "ProxyCommand = sh -c x",
        "ProxyCommand sh -c x \t ",
    ];

    #[test]
    fn the_keyword_is_found_the_way_ssh_finds_it() {
        for form in PROXY_COMMAND_FORMS {
            let o = SshOption::parse(form).unwrap_or_else(|e| panic!("{form:?}: {e}"));
            assert_eq!(o.key(), "proxycommand", "{form:?}");
            assert!(o.value().contains("sh"), "{form:?}: {o:?}");
        }
        let o = SshOption::parse("ConnectTimeout=5").unwrap();
        assert_eq!((o.key().as_str(), o.value()), ("connecttimeout", "5"));
        assert_eq!(o.arg(), "ConnectTimeout=5");
        // Only one `=` is a separator: the second belongs to the value, as in ssh.
        let o = SshOption::parse("SetEnv==x").unwrap();
        assert_eq!(o.value(), "=x");
        for ignored in ["", "   ", "#ProxyCommand=x", "\"ProxyCommand sh", "=#x y"] {
            let e = SshOption::parse(ignored).unwrap_err();
            assert!(e.contains("ssh would ignore it"), "{ignored:?}: {e}");
        }
        assert!(SshOption::parse("ProxyCommand")
            .unwrap_err()
            .contains("no value"));
        assert!(SshOption::parse("Proxy-Command=x")
            .unwrap_err()
            .contains("not an ssh option name"));
        assert!(SshOption::parse("LocalForward 1\nProxyCommand=x")
            .unwrap_err()
            .contains("control character"));
    }

    /// What ssh itself makes of each form (`ssh -G` prints the effective configuration without
    /// connecting): the key the parser found, and the same configuration from the rebuilt
    /// option mmx hands to ssh.
    #[test]
    fn ssh_reads_each_form_and_its_rebuilt_option_alike() {
        let ssh_g = |opt: &str| -> Option<String> {
            let out = std::process::Command::new("ssh")
                .args(["-G", "-F", "/dev/null", "-o", opt, "mmx-test-host"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        };
        if !crate::test_support::require(
            ssh_g("ConnectTimeout=5").is_some(),
            "the OpenSSH client (`ssh -G`) is needed: apt-get install openssh-client",
        ) {
            return;
        }
        let forms = PROXY_COMMAND_FORMS.iter().copied().chain([
            "\tLocalCommand=touch /tmp/x",
            " HostKeyAlias=other",
            "ProxyJump\tbastion",
            "\"VerifyHostKeyDNS\" yes",
            "= KnownHostsCommand /bin/true",
        ]);
        for form in forms {
            let o = SshOption::parse(form).unwrap_or_else(|e| panic!("{form:?}: {e}"));
            let raw = ssh_g(form).unwrap_or_else(|| panic!("ssh -G refused {form:?}"));
            let rebuilt = ssh_g(&o.arg()).unwrap_or_else(|| panic!("ssh -G refused {o}"));
            assert_eq!(raw, rebuilt, "{form:?} and {o}");
            assert!(
                raw.lines()
                    .any(|l| l.split_once(' ').is_some_and(|(k, _)| k == o.key())),
                "ssh did not take {form:?} as {}:\n{raw}",
                o.key()
            );
        }
    }

    #[test]
    fn every_listed_keyword_is_lowercase_and_listed_once() {
        for (i, r) in POLICY.iter().enumerate() {
            assert_eq!(r.key, r.key.to_ascii_lowercase());
            assert!(!r.why.is_empty());
            assert!(
                POLICY[i + 1..].iter().all(|o| o.key != r.key),
                "{} twice",
                r.key
            );
        }
    }
}

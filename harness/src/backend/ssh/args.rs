//! ssh command lines, as pure functions, and reading ssh's complaints into messages a user can
//! act on.
//!
//! The system OpenSSH client does the work: its config, agent and known_hosts are what users
//! already trust. mmx adds only what it must: batch mode, strict host key checking, no
//! forwarding and one multiplexed connection per host. The matrix parser has already refused
//! user options that would change any of that (`matrix::ssh_options`), unless a host entry
//! allows one with a reason; and ssh keeps the first value it sees, so mmx's own come first.

use std::ffi::OsString;
use std::path::Path;

use crate::matrix::Host;

/// How long a connection master lingers unused, so that if mmx dies the master goes on its own.
pub const CONTROL_PERSIST_S: u32 = 60;

/// Arguments before the destination for every ssh call to `host`. `control_dir` is a private
/// (0700) dir for the multiplexing socket.
///
/// ssh keeps the first value it sees for an option (`-o` options before any config file), so
/// the fixed options come before the user's and the tunable ones after (a user's
/// `ConnectTimeout` wins over ours, a user's `ClearAllForwardings=no` does not).
pub fn base_args(host: &Host, control_dir: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut opt = |s: String| {
        a.push("-o".into());
        a.push(s.into());
    };
    // Never prompt (no password, no passphrase, no "accept this key?"): fail instead.
    opt("BatchMode=yes".into());
    // An unknown host key is an error, never an automatic accept.
    opt("StrictHostKeyChecking=yes".into());
    // One handshake per host: later calls ride the master's connection.
    opt("ControlMaster=auto".into());
    opt(format!("ControlPath={}/%C", control_dir.display()));
    opt(format!("ControlPersist={CONTROL_PERSIST_S}"));
    // Forward nothing to a machine under test: no ports, no sockets, no tunnel (agent and X11
    // are `-a` and `-x` below).
    opt("ClearAllForwardings=yes".into());
    for o in &host.ssh_options {
        opt(o.arg());
    }
    opt("ConnectTimeout=10".into());
    // A silent dead link is noticed in 15 s instead of the TCP timeout's minutes.
    opt("ServerAliveInterval=5".into());
    opt("ServerAliveCountMax=3".into());
    a.extend(["-a", "-x", "-T"].map(OsString::from));
    if let Some(port) = host.port {
        a.push("-p".into());
        a.push(port.to_string().into());
    }
    if let Some(id) = &host.identity_file {
        a.push("-i".into());
        a.push(id.clone().into_os_string());
    }
    a
}

/// The full argument list of one remote command.
pub fn command_args(host: &Host, control_dir: &Path, remote_command: &str) -> Vec<OsString> {
    let mut a = base_args(host, control_dir);
    a.push(host.destination.clone().into());
    a.push(remote_command.into());
    a
}

/// `ssh -O exit`: stop the host's connection master.
pub fn exit_master_args(host: &Host, control_dir: &Path) -> Vec<OsString> {
    let mut a = base_args(host, control_dir);
    a.extend(["-O", "exit"].map(OsString::from));
    a.push(host.destination.clone().into());
    a
}

/// `dest` or `dest port N`, for messages.
pub fn describe(host: &Host) -> String {
    match host.port {
        Some(p) => format!("`{}` ({} port {p})", host.name, host.destination),
        None => format!("`{}` ({})", host.name, host.destination),
    }
}

/// A message for ssh's own failure (exit status 255), from its stderr.
pub fn classify_failure(host: &Host, stderr: &str) -> String {
    let who = describe(host);
    let err = stderr.trim();
    let has = |s: &str| err.contains(s);
    let hostname = host
        .destination
        .rsplit_once('@')
        .map_or(host.destination.as_str(), |(_, h)| h);
    let port = host.port.unwrap_or(22);
    let why = if has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        format!(
            "the host key of {who} has CHANGED since it was recorded in known_hosts; mmx will \
             not connect. If the host was reinstalled, check the new key's fingerprint out of \
             band, then `ssh-keygen -R '[{hostname}]:{port}'` and add the new key"
        )
    } else if has("Host key verification failed") || has("host key is known for") {
        format!(
            "the host key of {who} is unknown (not in known_hosts) and mmx never accepts an \
             unknown key. Check the key's fingerprint out of band, then add it, e.g. \
             `ssh-keyscan -p {port} {hostname} >> ~/.ssh/known_hosts` (or a file named by \
             `UserKnownHostsFile=` in the host's ssh_options)"
        )
    } else if has("Permission denied") {
        format!(
            "{who} refused the login (key not accepted); check `identity_file`, the ssh agent \
             and the user's authorized_keys"
        )
    } else if has("Connection refused")
        || has("timed out")
        || has("No route to host")
        || has("Could not resolve hostname")
        || has("Network is unreachable")
        || has("Connection closed")
        || has("Connection reset")
    {
        format!("cannot reach {who}")
    } else {
        format!("ssh to {who} failed")
    };
    if err.is_empty() {
        format!("{why} (ssh exited 255 and said nothing)")
    } else {
        format!("{why}; ssh said: {err}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::SmtSetting;
    use std::path::PathBuf;

    fn host(opts: &[&str]) -> Host {
        Host {
            name: "box".into(),
            destination: "root@box.example".into(),
            port: Some(2222),
            identity_file: Some(PathBuf::from("/k/id")),
            sudo: false,
            smt: vec![SmtSetting::AsIs],
            provision: None,
            teardown: None,
            scratch_dir: None,
            filesystem: None,
            ssh_options: opts
                .iter()
                .map(|s| crate::matrix::SshOption::parse(s).unwrap())
                .collect(),
            smt_control: crate::cell::SMT_CONTROL.into(),
            base_dir: "/".into(),
        }
    }

    fn strs(a: &[OsString]) -> Vec<String> {
        a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn fixed_options_come_before_the_users_and_tunables_after() {
        let h = host(&["UserKnownHostsFile=/kh", "ConnectTimeout=3"]);
        let a = strs(&command_args(&h, Path::new("/c"), "true"));
        let pos = |s: &str| a.iter().position(|x| x == s).unwrap();
        assert!(pos("StrictHostKeyChecking=yes") < pos("UserKnownHostsFile=/kh"));
        assert!(pos("ConnectTimeout=3") < pos("ConnectTimeout=10"));
        assert!(a.contains(&"ControlPath=/c/%C".to_string()));
        assert_eq!(&a[a.len() - 2..], ["root@box.example", "true"]);
        assert_eq!(a[pos("-p") + 1], "2222");
        assert_eq!(a[pos("-i") + 1], "/k/id");
        let x = strs(&exit_master_args(&h, Path::new("/c")));
        assert_eq!(&x[x.len() - 3..], ["-O", "exit", "root@box.example"]);
    }

    /// What ssh makes of mmx's arguments (`ssh -G` prints the effective configuration without
    /// connecting): a user's options cannot undo mmx's own, whatever order ssh reads them in.
    #[test]
    fn the_effective_config_keeps_mmxs_options_over_the_users() {
        let h = host(&[
            "ClearAllForwardings=no",
            "LocalForward=8080 localhost:80",
            "ForwardAgent=yes",
            "ForwardX11=yes",
            "RequestTTY=force",
            "Tunnel=yes",
            "ConnectTimeout=3",
        ]);
        let mut args: Vec<OsString> = vec!["-G".into(), "-F".into(), "/dev/null".into()];
        args.extend(command_args(&h, Path::new("/c"), "true"));
        let out = std::process::Command::new("ssh").args(&args).output();
        let ok = out.as_ref().is_ok_and(|o| o.status.success());
        if !crate::test_support::require(
            ok,
            &format!("the OpenSSH client (`ssh -G`) is needed: {out:?}"),
        ) {
            return;
        }
        let text = String::from_utf8_lossy(&out.unwrap().stdout).into_owned();
        let has = |line: &str| text.lines().any(|l| l == line);
        for want in [
            "clearallforwardings yes",
            "forwardagent no",
            "forwardx11 no",
            "requesttty false",
            "tunnel false",
            "batchmode yes",
            "stricthostkeychecking true",
            "controlmaster auto",
            // A tunable stays the user's.
            "connecttimeout 3",
        ] {
            assert!(has(want), "no `{want}` in ssh -G:\n{text}");
        }
        // ssh prints the path with %C expanded: still in mmx's control dir.
        assert!(
            text.lines().any(|l| l.starts_with("controlpath /c/")),
            "{text}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("localforward")),
            "{text}"
        );
    }

    #[test]
    fn ssh_errors_become_advice() {
        let h = host(&[]);
        let m = classify_failure(
            &h,
            "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict \
             checking.\nHost key verification failed.\n",
        );
        assert!(m.contains("host key") && m.contains("unknown"), "{m}");
        assert!(m.contains("ssh-keyscan -p 2222 box.example"), "{m}");
        let m = classify_failure(
            &h,
            "ssh: connect to host box.example port 2222: Connection refused",
        );
        assert!(m.starts_with("cannot reach"), "{m}");
        assert!(m.contains("Connection refused"), "{m}");
        let m = classify_failure(&h, "root@box.example: Permission denied (publickey).");
        assert!(m.contains("refused the login"), "{m}");
        assert!(classify_failure(&h, "").contains("said nothing"));
    }
}

//! A private `sshd` on loopback for the tests of the ssh backend (ssh.rs, hostile.rs): a
//! throwaway host key and user key, the "remote" host being this machine. Needs root (sshd's
//! privilege separation; the real agent mounts) and /usr/sbin/sshd.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::cell::SmtSetting;
use harness::matrix::{Host, SshOption};

pub const SSHD: &str = "/usr/sbin/sshd";

pub fn skip_reason() -> Option<String> {
    if !Path::new(SSHD).exists() {
        return Some(format!("{SSHD} missing: install openssh-server"));
    }
    if !rustix::process::geteuid().is_root() {
        return Some("not root (the agent mounts; sshd needs root)".into());
    }
    None
}

/// A private sshd on 127.0.0.1 and everything a host entry needs to reach it.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

pub fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "mmx-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("mmx-sshd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).expect("copy");
        std::fs::create_dir(d.join("remote-tmp")).expect("remote-tmp");
        // Privilege separation directory; sshd refuses to start without it.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let port = free_port();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {d}/host_key\nAuthorizedKeysFile \
             {d}/authorized_keys\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM \
             no\nPidFile none\nLogLevel VERBOSE\nSetEnv SHLVL=1\n",
            d = d.display()
        );
        // SHLVL=1: bash skips ~/.bashrc for ssh commands when it is not the top-level shell, so
        // this machine's rc files (a pyenv init here costs ~240 ms per command) stay out of the
        // timings; a real host's rc files are its own cost.
        std::fs::write(d.join("sshd_config"), config).expect("config");
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_pub}"),
        )
        .expect("known_hosts");
        let log = std::fs::File::create(d.join("sshd.log")).expect("log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        let s = Sshd { dir, port, child };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "sshd did not listen: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    pub fn host(&self) -> Host {
        Host {
            name: "loopback".into(),
            destination: "root@127.0.0.1".into(),
            port: Some(self.port),
            identity_file: Some(self.path("user_key")),
            sudo: false,
            smt: vec![SmtSetting::AsIs],
            provision: None,
            teardown: None,
            // The visit's temp dir goes here, so the test can see that nothing stays.
            scratch_dir: Some(self.path("remote-tmp")),
            filesystem: None,
            ssh_options: [
                format!("UserKnownHostsFile={}", self.path("known_hosts").display()),
                "GlobalKnownHostsFile=/dev/null".into(),
                "IdentitiesOnly=yes".into(),
                "IdentityAgent=none".into(),
            ]
            .iter()
            .map(|o| SshOption::parse(o).expect("a valid ssh option"))
            .collect(),
            // The real one on this machine; a test that switches SMT on purpose uses a plain file.
            smt_control: harness::cell::SMT_CONTROL.into(),
            base_dir: self.dir.path().to_path_buf(),
        }
    }

    /// What the visits left in the "remote" temp dir (must be nothing).
    pub fn remote_leftovers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.path("remote-tmp"))
            .expect("remote-tmp")
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    /// Nothing a visit made may stay on the "remote" side.
    pub fn assert_no_leftovers(&self) {
        let left = self.remote_leftovers();
        assert!(left.is_empty(), "{left:?}");
    }

    /// Mount points under this fixture's dir, as the host's mount table shows them.
    pub fn mounts(&self) -> Vec<String> {
        let needle = format!(" {}", self.dir.path().display());
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// Drop every live connection the way a network failure would: SIGKILL the per-connection
    /// sshd processes (the listener stays, so the harness can reconnect to clean up).
    pub fn kill_connections(&self) -> usize {
        let listener = self.child.id();
        let mut killed = 0;
        for pid in descendants(listener) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim().starts_with("sshd") {
                if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                    killed += 1;
                }
            }
        }
        killed
    }

    /// Connections sshd accepted so far (one per handshake).
    pub fn logins(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.kill_connections();
    }
}

/// All processes below `root`, from /proc's parent links.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid …`; comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.push((pid, ppid));
        }
    }
    let mut out = vec![];
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent {
            if pp == p {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

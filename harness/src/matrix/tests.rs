//! The matrix parser against good files and every kind of bad one.

use std::collections::BTreeSet;

use super::*;
use protocol::Outcome;

fn parse(text: &str) -> Result<Matrix, MatrixError> {
    Matrix::parse(Path::new("matrix.toml"), text)
}

const GOOD: &str = r#"
kernels = ["debian-6.1", "debian-6.12"]
filesystems = ["ext4", "tmpfs"]

[run]
repeats = 2

[[topologies]]
sockets = 2
cores = 1
threads = 2
memory_mib = 1024
numa = [{ cpus = "0-1", memory_mib = 512 }, { cpus = "2-3", memory_mib = 512 }]

[[scenarios]]
kind = "mounts"
strategies = ["per-layer", "fsconfig-fd"]
layers = [1, 10]
containers = [4]
concurrency = [1, 2]
"#;

#[test]
fn good_matrix_expands_to_stable_cells() {
    let m = parse(GOOD).unwrap();
    assert_eq!(m.repeats, 2);
    assert_eq!(m.topologies[0].name, "2s1c2t-numa2");
    assert_eq!(m.topologies[0].vcpus(), 4);
    assert_eq!(m.scenarios.len(), 2 * 2 * 2);
    let cells = m.qemu_cells();
    assert_eq!(cells.len(), 2 * 2 * 8);
    assert_eq!(
        cells[0].key.to_string(),
        "debian-6.1/2s1c2t-numa2/ext4/per-layer-L1-C4-P2-J1"
    );
    assert_eq!(
        cells[0].key.boot().to_string(),
        "debian-6.1/2s1c2t-numa2/ext4"
    );
    let ids: BTreeSet<_> = cells.iter().map(|c| c.key.clone()).collect();
    assert_eq!(ids.len(), cells.len(), "cell ids are unique");
}

#[test]
fn errors_name_file_line_and_key() {
    let e =
        parse("kernels = [\"a\"]\n[[scenarios]]\nkind = \"mounts\"\nlayers = [0]\n").unwrap_err();
    let s = e.to_string();
    assert!(s.starts_with("matrix.toml:2:"), "{s}");
    assert!(s.contains("layers = 0"), "{s}");

    let e =
        parse("[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\nconcurrency = [30]\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("concurrency = 30 with containers = 20"),
        "{e}"
    );

    let e = parse("filesystems = [\"zfs\"]\n").unwrap_err();
    assert_eq!((e.line, e.file.as_path()), (1, Path::new("matrix.toml")));
    assert!(e.to_string().contains("unknown filesystem `zfs`"), "{e}");

    let e = parse("kernels = [\"a\"]\nbogus = 1\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(e.to_string().contains("bogus"), "{e}");

    let e = parse("[[scenarios]]\nkind = \"mounts\"\nlayers = [100000]\n").unwrap_err();
    assert!(
        e.to_string().contains("layers = 100000: must be 1..=256"),
        "{e}"
    );

    let e =
        parse("[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n[run]\nrepeats = 0\n").unwrap_err();
    assert_eq!(e.line, 5, "{e}");
}

#[test]
fn tcg_benchmarks_is_sized_unless_the_matrix_says_full() {
    let base = "[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n";
    let m = parse(base).unwrap();
    assert_eq!(m.tcg_benchmarks, crate::results::TcgBenchmarks::Sized);
    let m = parse(&format!("{base}[run]\ntcg_benchmarks = \"full\"\n")).unwrap();
    assert_eq!(m.tcg_benchmarks, crate::results::TcgBenchmarks::Full);
    let e = parse(&format!(
        "{base}[run]\nrepeats = 1\ntcg_benchmarks = \"fast\"\n"
    ))
    .unwrap_err();
    assert_eq!(
        (e.line, e.file.as_path()),
        (6, Path::new("matrix.toml")),
        "{e}"
    );
    assert!(e.to_string().contains("tcg_benchmarks = \"fast\""), "{e}");
}

#[test]
fn numa_must_cover_every_cpu_and_all_memory() {
    let base = "[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n[[topologies]]\nsockets = 2\nmemory_mib = 1024\n";
    let e = parse(&format!(
        "{base}numa = [{{ cpus = \"0\", memory_mib = 1024 }}]\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("cover 1 of 2"), "{e}");
    let e = parse(&format!(
        "{base}numa = [{{ cpus = \"0\", memory_mib = 100 }}, {{ cpus = \"1\", memory_mib = 100 }}]\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("adds up to 200"), "{e}");
    let e = parse(&format!(
        "{base}numa = [{{ cpus = \"0-5\", memory_mib = 1024 }}]\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("cpu 2 does not exist"), "{e}");
}

#[test]
fn expectations_match_first_and_check_errno() {
    let m = parse(
        r#"
kernels = ["k1"]
filesystems = ["ext4", "tmpfs"]
[[scenarios]]
kind = "mounts"
layers = [1]

[[expect]]
cells = "k1/*/tmpfs/*"
outcome = "unsupported"
errno = "EINVAL"
step = "mount_setattr"

[[expect]]
cells = "*"
outcome = "pass"
"#,
    )
    .unwrap();
    let cells = m.qemu_cells();
    let tmpfs = cells
        .iter()
        .find(|c| c.key.filesystem == Filesystem::Tmpfs)
        .unwrap();
    let e = m.expectations.find(&tmpfs.key).unwrap();
    assert_eq!((e.outcome, e.errno), (Outcome::Unsupported, Some(22)));
    let einval = protocol::Evidence::new("mount_setattr").with_errno(22);
    let ebadf = protocol::Evidence::new("mount_setattr").with_errno(9);
    assert!(e.is_met(Outcome::Unsupported, Some(&einval)));
    assert!(!e.is_met(Outcome::Unsupported, Some(&ebadf)));
    assert!(!e.is_met(Outcome::Pass, None));
    let ext4 = cells
        .iter()
        .find(|c| c.key.filesystem == Filesystem::Ext4)
        .unwrap();
    assert!(m
        .expectations
        .find(&ext4.key)
        .unwrap()
        .is_met(Outcome::Pass, None));

    let bad = parse("[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n[[expect]]\ncells = \"*\"\noutcome = \"fine\"\n")
        .unwrap_err();
    assert_eq!(bad.line, 4, "{bad}");
    assert!(bad.to_string().contains("outcome `fine`"), "{bad}");
    let bad = parse("[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n[[expect]]\ncells = \"*\"\noutcome = \"unsupported\"\nerrno = \"EWHATEVER\"\n")
        .unwrap_err();
    assert!(bad.to_string().contains("errno `EWHATEVER`"), "{bad}");
}

#[test]
fn cpu_lists_parse() {
    assert_eq!(
        parse_cpu_list("0-3,8,10-11").unwrap(),
        vec![0, 1, 2, 3, 8, 10, 11]
    );
    assert!(parse_cpu_list("3-1").is_err());
    assert!(parse_cpu_list("x").is_err());
    assert!(parse_cpu_list("").is_err());
}

#[test]
fn hosts_and_lockbench_resolve() {
    let m = parse(
        r#"
[[scenarios]]
kind = "lockbench"
bench = "user-spin"
threads = [1, 2]
locks = ["tas", "mutex"]

[[hosts]]
name = "lab1"
destination = "root@lab1"
smt = ["on", "off"]
"#,
    )
    .unwrap();
    let cells = m.ssh_cells();
    assert_eq!(cells.len(), 2);
    assert_eq!(
        cells[1].key.to_string(),
        "lab1/smt-off/unmeasured/lockbench-user-spin",
        "no declared filesystem: the visit measures it"
    );
    let declared = parse(
        "[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n[[hosts]]\nname = \"h\"\n\
         destination = \"h\"\nfilesystem = \"xfs\"\n",
    )
    .unwrap();
    assert_eq!(
        declared.ssh_cells()[0].key.to_string(),
        "h/smt-as-is/xfs/per-layer-L1-C20-P2-J1"
    );
    let e = parse("[[scenarios]]\nkind = \"lockbench\"\nbench = \"nope\"\n").unwrap_err();
    assert!(e.to_string().contains("`nope`"), "{e}");
    assert!(
        e.to_string().contains("user-spin"),
        "names the choices: {e}"
    );
    let e =
        parse("[[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\npinning = [\"all\"]\n")
            .unwrap_err();
    assert!(e.to_string().contains("`all`"), "{e}");
}

#[test]
fn default_matrix_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../matrix.toml");
    let m = Matrix::load(&path).unwrap();
    assert!(
        m.kernels.len() >= 3,
        "the default matrix covers at least three kernels"
    );
    assert!(!m.qemu_cells().is_empty());
}

/// A matrix with `extra` after one mounts scenario.
fn with(extra: &str) -> Result<Matrix, MatrixError> {
    parse(&format!(
        "kernels = [\"k\"]\n[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n{extra}"
    ))
}

fn err_of(extra: &str) -> String {
    match with(extra) {
        Ok(_) => panic!("accepted: {extra}"),
        Err(e) => {
            assert!(e.line > 0, "no line in {e}");
            e.to_string()
        }
    }
}

#[test]
fn hostile_numbers_are_refused_with_line_and_key() {
    // sockets × cores = 2^32 wrapped to 0 once and passed the vCPU check.
    let e = err_of("[[topologies]]\nsockets = 65536\ncores = 65536\n");
    assert!(e.starts_with("matrix.toml:5:"), "{e}");
    assert!(e.contains("sockets = 65536: must be 1..=256"), "{e}");
    let e = err_of("[[topologies]]\nsockets = 16\ncores = 16\nthreads = 2\n");
    assert!(e.contains("vCPUs = 512: must be 1..=256"), "{e}");
    let e = err_of("[[topologies]]\nmemory_mib = 9223372036854775807\n");
    assert!(e.contains("memory_mib = 9223372036854775807"), "{e}");
    let e = err_of("[run]\nmemory_mib = 1\n");
    assert!(e.contains("run: memory_mib = 1: must be 128"), "{e}");
    let e = err_of(
        "[[topologies]]\nsockets = 2\nmemory_mib = 1024\nnuma = [{ cpus = \"0\", memory_mib = 9223372036854775807 }, { cpus = \"1\", memory_mib = 1 }]\n",
    );
    assert!(e.contains("numa memory_mib"), "{e}");
    let e = err_of(
        "[[topologies]]\nsockets = 2\nmemory_mib = 1024\nnuma = [{ cpus = \"0\", memory_mib = 512, distances = [10, 5] }, { cpus = \"1\", memory_mib = 512 }]\n",
    );
    assert!(e.contains("distances = 5"), "{e}");
    let e = err_of("[[hosts]]\nname = \"h\"\ndestination = \"root@h\"\nport = 0\n");
    assert!(e.contains("port = 0: must be 1..=65535"), "{e}");
    let e = err_of("[[hosts]]\nname = \"h\"\ndestination = \"root@h\"\nport = 70000\n");
    assert!(e.contains("port = 70000"), "{e}");
    let e = err_of("[[hosts]]\nname = \"h\"\ndestination = \"root@h\"\nsmt = []\n");
    assert!(e.contains("smt = []"), "{e}");
    let e = err_of("[[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\nduration_ms = 18446744073709551615\n");
    assert!(e.contains("duration_ms"), "{e}");
    let e = err_of(
        "[[scenarios]]\nkind = \"lockbench\"\nbench = \"mountinfo\"\ntable_sizes = [4000000000]\n",
    );
    assert!(e.contains("table_sizes = 4000000000"), "{e}");
    let e = err_of("[[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\nthreads = [0]\n");
    assert!(e.contains("threads = 0"), "{e}");
}

#[test]
fn numbers_the_agent_refuses_are_refused_at_parse_time() {
    for (key, value) in [
        ("layers = [300]", "layers"),
        ("layers = [1]\ncontainers = [5000]", "containers"),
    ] {
        let e = parse(&format!("[[scenarios]]\nkind = \"mounts\"\n{key}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{value} = ")), "{e}");
        assert!(e.starts_with("matrix.toml:1:"), "{e}");
    }
    let e = parse("[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\npasses = 10\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("passes = 10: must be 1..=8"), "{e}");
}

#[test]
fn duplicate_cell_ids_are_refused() {
    let e = err_of(
        "[[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\n[[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\nthreads = [1]\n",
    );
    assert!(
        e.contains("`lockbench-user-spin` is also made by the entry on line 5"),
        "{e}"
    );
    let m = with(
        "[[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\n[[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\nname = \"wide\"\nthreads = [1]\n",
    )
    .unwrap();
    let ids: Vec<String> = m.qemu_cells().iter().map(|c| c.key.to_string()).collect();
    assert!(
        ids.contains(&"k/1s2c1t/ext4/lockbench-user-spin-wide".to_string()),
        "{ids:?}"
    );
    let e = err_of("[[scenarios]]\nkind = \"mounts\"\nlayers = [1, 10]\n");
    assert!(e.contains("per-layer-L1-C20-P2-J1"), "{e}");
    let e = err_of("[[hosts]]\nname = \"k\"\ndestination = \"root@k\"\n");
    assert!(e.contains("already the name"), "{e}");
}

#[test]
fn trust_changing_ssh_options_need_an_allowance_with_a_reason() {
    let host = |opts: &str| {
        format!("[[hosts]]\nname = \"h\"\ndestination = \"root@h\"\nssh_options = [{opts}]\n")
    };
    for opt in [
        "KnownHostsCommand=/bin/echo",
        "GlobalKnownHostsFile=/dev/null",
        "UserKnownHostsFile=/tmp/k",
        "StrictHostKeyChecking=no",
        "UpdateHostKeys=yes",
        "CheckHostIP=no",
        "ProxyCommand=nc %h %p",
    ] {
        let e = err_of(&host(&format!("\"{opt}\"")));
        assert!(e.contains("host keys are trusted"), "{opt}: {e}");
    }
    let e = err_of(&host("\"ControlPath=/tmp/x\""));
    assert!(e.contains("not allowed"), "{e}");
    let ok = with(&format!(
        "{}allow_ssh_options = [{{ option = \"ProxyCommand\", reason = \"through the bastion\" }}]\n",
        host("\"ProxyCommand=ssh -W %h:%p bastion\"")
    ));
    assert!(ok.is_ok(), "{:?}", ok.err());
    let e = err_of(&format!(
        "{}allow_ssh_options = [{{ option = \"ProxyCommand\", reason = \"\" }}]\n",
        host("\"ProxyCommand=x\"")
    ));
    assert!(e.contains("needs a reason"), "{e}");
    assert!(with(&host("\"ConnectTimeout=30\"")).is_ok());
}

/// The old check took the key with `split_once(['=', ' '])`: each of these passed it, and ssh
/// read every one as an option that runs a command here or changes trust.
#[test]
fn every_spelling_of_a_refused_option_is_refused() {
    let host = |opt: &str| {
        format!(
            "[[hosts]]\nname = \"h\"\ndestination = \"root@h\"\nssh_options = [{:?}]\n",
            opt
        )
    };
    for opt in [
        " ProxyCommand=sh -c x",
        "ProxyCommand\tsh -c x",
        "\tProxyCommand sh -c x",
        "\"ProxyCommand\" sh -c x",
        "Proxy\"Command\" sh -c x",
        "= ProxyCommand sh -c x",
        "\"\"ProxyCommand sh -c x",
        "PROXYCOMMAND =  = sh -c x",
        "LocalCommand=touch /tmp/pwned",
        " PermitLocalCommand=yes",
        "HostKeyAlias\tother",
        "ProxyJump=bastion",
        "VerifyHostKeyDNS=yes",
        "RevokedHostKeys=/dev/null",
        "NoHostAuthenticationForLocalhost=yes",
        "PKCS11Provider=/tmp/evil.so",
        "SecurityKeyProvider=/tmp/evil.so",
    ] {
        let e = err_of(&host(opt));
        assert!(e.contains("allow_ssh_options"), "{opt:?}: {e}");
    }
    for (opt, says) in [
        (" ClearAllForwardings=no", "not allowed"),
        ("\tControlPath=/tmp/x", "not allowed"),
        ("ForkAfterAuthentication=yes", "not allowed"),
        ("StdinNull=yes", "not allowed"),
        ("Include=/tmp/more", "ssh_config file"),
        ("Match=exec true", "ssh_config file"),
        ("#ProxyCommand=x", "ssh would ignore it"),
        ("LocalForward 1\nProxyCommand=x", "control character"),
    ] {
        let e = err_of(&host(opt));
        assert!(e.contains(says), "{opt:?}: {e}");
    }
    let ok = with(&format!(
        "{}allow_ssh_options = [{{ option = \"LocalCommand\", reason = \"log each visit\" }}]\n",
        host("\tLocalCommand=logger mmx")
    ));
    let m = ok.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.hosts[0].ssh_options[0].arg(), "LocalCommand=logger mmx");
}

#[test]
fn a_matrix_of_a_million_cells_is_refused() {
    let kernels: Vec<String> = (0..200).map(|i| format!("\"k{i}\"")).collect();
    let layers: Vec<String> = (1..=64).map(|i| i.to_string()).collect();
    let text = format!(
        "kernels = [{}]\nfilesystems = [\"ext4\", \"xfs\", \"btrfs\", \"tmpfs\"]\n[[scenarios]]\nkind = \"mounts\"\nlayers = [{}]\ncontainers = [10]\n",
        kernels.join(", "),
        layers.join(", ")
    );
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("more than 100000 cells"), "{e}");
}

#[test]
fn relative_paths_are_the_matrix_files() {
    let text = r#"
[[scenarios]]
kind = "mounts"
layers = [1]

[local]
scratch_dir = "scratch"

[[hosts]]
name = "lab"
destination = "root@lab"
identity_file = "keys/lab"
ssh_options = ["UserKnownHostsFile=keys/known_hosts", "IdentityAgent=none", "ConnectTimeout=5"]
allow_ssh_options = [{ option = "UserKnownHostsFile", reason = "the lab's own keys" }]
"#;
    let m = Matrix::parse(Path::new("ci/mmx/matrix.toml"), text).unwrap();
    let dir = std::path::absolute("ci/mmx").unwrap();
    assert_eq!(m.dir, dir);
    assert_eq!(m.kernels_dir(), dir.join("kernels"));
    assert_eq!(m.local_scratch, Some(dir.join("scratch")));
    let h = &m.hosts[0];
    assert_eq!(h.identity_file, Some(dir.join("keys/lab")));
    assert_eq!(
        h.ssh_options.iter().map(SshOption::arg).collect::<Vec<_>>(),
        [
            format!(
                "UserKnownHostsFile={}",
                dir.join("keys/known_hosts").display()
            ),
            "IdentityAgent=none".to_string(),
            "ConnectTimeout=5".to_string(),
        ]
    );
    assert_eq!(h.base_dir, dir);
    let e = Matrix::parse(
        Path::new("m.toml"),
        &format!("{text}scratch_dir = \"tmp\"\n"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("give an absolute path"), "{e}");
}

#[test]
fn filesystem_independent_benchmarks_run_once_per_kernel_and_topology() {
    let text = |fss: &str| {
        format!(
            "kernels = [\"k\"]\nfilesystems = [{fss}]\n[[scenarios]]\nkind = \"mounts\"\n\
             layers = [1]\n[[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\n\
             [[scenarios]]\nkind = \"lockbench\"\nbench = \"mountinfo\"\n"
        )
    };
    let m = parse(&text("\"ext4\", \"xfs\", \"tmpfs\"")).unwrap();
    let spin: Vec<String> = m
        .qemu_cells()
        .iter()
        .map(|c| c.key.to_string())
        .filter(|id| id.contains("user-spin"))
        .collect();
    assert_eq!(
        spin,
        ["k/1s2c1t/tmpfs/lockbench-user-spin"],
        "tmpfs when listed"
    );
    let mountinfo = m
        .qemu_cells()
        .iter()
        .filter(|c| c.key.to_string().contains("mountinfo"))
        .count();
    assert_eq!(
        mountinfo, 3,
        "benchmarks that mount run on every filesystem"
    );
    let m = parse(&text("\"xfs\", \"ext4\"")).unwrap();
    assert_eq!(m.independent_fs(), Some(Filesystem::Xfs), "else the first");
}

#[test]
fn a_scenario_can_name_its_filesystems() {
    let text = |only: &str| {
        format!(
            "kernels = [\"k\"]\nfilesystems = [\"ext4\", \"xfs\", \"tmpfs\"]\n\
             [[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n\
             [[scenarios]]\nkind = \"lockbench\"\nbench = \"storm\"\nfilesystems = [{only}]\n"
        )
    };
    let m = parse(&text("\"ext4\"")).unwrap();
    let storms: Vec<String> = m
        .qemu_cells()
        .iter()
        .map(|c| c.key.to_string())
        .filter(|id| id.contains("storm"))
        .collect();
    assert_eq!(storms, ["k/1s2c1t/ext4/lockbench-storm"]);
    let mounts = m
        .qemu_cells()
        .iter()
        .filter(|c| c.key.to_string().contains("per-layer"))
        .count();
    assert_eq!(
        mounts, 3,
        "a scenario without the key runs on every filesystem"
    );

    let m = parse(&text("\"tmpfs\", \"xfs\"")).unwrap();
    let on: Vec<String> = m
        .qemu_cells()
        .iter()
        .filter(|c| c.key.to_string().contains("storm"))
        .map(|c| c.key.filesystem.to_string())
        .collect();
    assert_eq!(on, ["xfs", "tmpfs"], "in the matrix's filesystem order");

    for (only, says) in [
        (
            "\"btrfs\"",
            "`btrfs` is not one of the matrix's filesystems (ext4, xfs, tmpfs)",
        ),
        ("\"ext4\", \"ext4\"", "`ext4` listed twice"),
        ("", "needs at least one value"),
        ("\"zfs\"", "zfs"),
    ] {
        let e = parse(&text(only)).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("matrix.toml:6:"), "line of the table: {s}");
        assert!(
            s.contains("scenarios: filesystems: ") && s.contains(says),
            "{s}"
        );
    }
}

#[test]
fn runtimes_are_columns_beside_the_strategies() {
    let text = r#"
kernels = ["debian-7.x"]
filesystems = ["tmpfs"]

[[runtimes]]
name = "containerd-2.1"
containerd = { debian = "golang-github-containerd-containerd-dev" }

[[runtimes]]
name = "leaky"
binary = "bin/mmx-example-runtime"
args = ["--fault", "leak"]
job_timeout_s = 5

[[scenarios]]
kind = "mounts"
strategies = ["common-parent", "runtime:containerd-2.1", "runtime:leaky"]
layers = [1, 10]
containers = [4]

[[expect]]
cells = "*/runtime:containerd-2.1-L10-*"
outcome = "pass"
mount_ops_per_container = 6
"#;
    let m = Matrix::parse(Path::new("/work/ci/matrix.toml"), text).unwrap();
    let ids: Vec<String> = m.qemu_cells().iter().map(|c| c.key.to_string()).collect();
    assert!(
        ids.contains(&"debian-7.x/1s2c1t/tmpfs/runtime:containerd-2.1-L10-C4-P2-J1".to_string()),
        "{ids:?}"
    );
    assert_eq!(m.scenarios.len(), 3 * 2);
    // The recipes are the matrix's, paths resolved against its directory.
    assert_eq!(m.runtimes.len(), 2);
    assert_eq!(
        m.runtimes[1].source,
        crate::runtimes::RuntimeSource::Binary("/work/ci/bin/mmx-example-runtime".into())
    );
    assert_eq!(
        (m.runtimes[1].args.len(), m.runtimes[1].job_timeout_s),
        (2, 5)
    );
    let used: Vec<String> = m.used_runtimes().iter().map(|n| n.to_string()).collect();
    assert_eq!(used, ["containerd-2.1", "leaky"]);
    assert_eq!(
        m.runtimes_lock(),
        Path::new("/work/ci/runtimes/runtimes.lock")
    );
    assert_eq!(m.expectations.0[0].mount_ops_per_container, Some(6));
    // Cells sort built-ins first, then runtimes by name.
    let mut keys: Vec<_> = m.qemu_cells().into_iter().map(|c| c.key).collect();
    keys.sort();
    assert!(keys[0].to_string().contains("/common-parent-"), "{keys:?}");
    assert!(keys.last().unwrap().to_string().contains("/runtime:leaky-"));
}

#[test]
fn a_runtime_no_table_declares_is_refused_at_its_line() {
    let text = "kernels = [\"k\"]\n\n[[runtimes]]\nname = \"containerd-2.1\"\nbinary = \"/bin/x\"\n\n[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"per-layer\",\n  \"runtime:containerd-21\"]\nlayers = [1]\n";
    let e = parse(text).unwrap_err().to_string();
    assert!(e.starts_with("matrix.toml:10:"), "{e}");
    assert!(
        e.contains("strategies")
            && e.contains("runtime:containerd-21")
            && e.contains("declared: containerd-2.1"),
        "{e}"
    );
    let e = parse("kernels = [\"k\"]\n[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"runtime:x\"]\nlayers = [1]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("none is declared"), "{e}");
    let e = parse("kernels = [\"k\"]\n[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"runtime:a/b\"]\nlayers = [1]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("runtime name `a/b`"), "{e}");
    let e = parse("kernels = [\"k\"]\n[[runtimes]]\nname = \"x\"\nbinary = \"/b\"\n[[runtimes]]\nname = \"x\"\nbinary = \"/c\"\n[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("matrix.toml:5:") && e.contains("defined twice"),
        "{e}"
    );
    let e = parse("kernels = [\"k\"]\n[[runtimes]]\nname = \"x\"\nbinray = \"/b\"\n[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("matrix.toml:4:") && e.contains("binray"),
        "{e}"
    );
}

#[test]
fn watchers_are_typed_and_end_the_cell_id() {
    let m = parse("kernels = [\"k\"]\n[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"per-layer\"]\nlayers = [10]\nwatchers = [\"poll-mountinfo\", \"fanotify\"]\n[[scenarios]]\nkind = \"lockbench\"\nbench = \"storm\"\nwatchers = [\"fanotify\"]\n").unwrap();
    let labels: Vec<String> = m.scenarios.iter().map(|s| s.label()).collect();
    assert!(
        labels.contains(&"per-layer-L10-C20-P2-J1+poll-mountinfo+fanotify".to_string()),
        "{labels:?}"
    );
    let storm = m.scenarios.iter().find_map(|s| match s {
        Scenario::Lockbench(l) => Some(l),
        _ => None,
    });
    assert_eq!(
        storm.map(|l| l.watchers.clone()),
        Some(vec![protocol::Watcher::Fanotify])
    );
}

#[test]
fn a_bad_watcher_is_refused_at_its_line_naming_the_key() {
    let e = parse("kernels = [\"k\"]\n[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\nwatchers = [\"fanotify\",\n  \"inotify\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("matrix.toml:6:"), "{e}");
    assert!(
        e.contains("mounts: watchers: unknown watcher `inotify`") && e.contains("poll-mountinfo"),
        "{e}"
    );
    let e = parse("kernels = [\"k\"]\n[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\nwatchers = [\"fanotify\", \"fanotify\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("matrix.toml:5:") && e.contains("listed twice"),
        "{e}"
    );
    let e = parse("kernels = [\"k\"]\n[[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\nwatchers = [\"fanotify\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("matrix.toml:5:") && e.contains("lockbench: watchers: only mounts"),
        "{e}"
    );
}

//! What mmx needs to build each Go runtime ([`GoProgram`]) against its project's own sources: the
//! recipe key, the Debian package of the sources, the packages holding what its mount code
//! imports, where the module lives in Debian's GOPATH tree, and the job program. One table, read
//! by the recipe parser, the lock and the build.

use crate::results::GoProgram;

/// The programs mmx builds, in the order messages list them.
pub const ALL: [GoProgram; 2] = [GoProgram::Containerd, GoProgram::Storage];

/// The Debian packages holding what containerd's `core/mount` imports from outside containerd,
/// found by `go list -deps` over Debian's gocode tree (GOPATH mode) until nothing was missing.
/// The containerd package's own Depends pull in ~60 more (kubernetes, grpc, …) that `core/mount`
/// never imports; a build against a patched `core/mount` that imports more names the missing
/// import path.
pub const CORE_MOUNT_PACKAGES: &[(&str, &str)] = &[
    (
        "golang-github-containerd-containerd-api-dev",
        "github.com/containerd/containerd/api/types",
    ),
    (
        "golang-github-containerd-continuity-dev",
        "github.com/containerd/continuity/fs",
    ),
    (
        "golang-github-containerd-log-dev",
        "github.com/containerd/log",
    ),
    (
        "golang-github-moby-sys-dev",
        "github.com/moby/sys/mountinfo, github.com/moby/sys/userns",
    ),
    ("golang-golang-x-sys-dev", "golang.org/x/sys/unix"),
    (
        "golang-golang-x-sync-dev",
        "golang.org/x/sync/errgroup (continuity)",
    ),
    (
        "golang-google-protobuf-dev",
        "google.golang.org/protobuf (api/types)",
    ),
    (
        "golang-github-opencontainers-image-spec-dev",
        "github.com/opencontainers/image-spec (api/types)",
    ),
    (
        "golang-github-opencontainers-go-digest-dev",
        "github.com/opencontainers/go-digest (image-spec)",
    ),
    (
        "golang-github-sirupsen-logrus-dev",
        "github.com/sirupsen/logrus (containerd/log)",
    ),
];

/// The Debian packages holding what containers/storage's `drivers/overlay` imports (its whole
/// graph: archive, chrootarchive, the layer-diff code, selinux labels), found the same way. Of
/// the storage package's Depends, stargz-snapshotter, btrfs, devmapper, zfs, gotest.tools,
/// testify, go-intervals, go-multierror, go-shellwords, runc, tar-split's siblings, patricia,
/// gocapability, x/net and pkg/errors are never imported by the overlay driver.
pub const OVERLAY_DRIVER_PACKAGES: &[(&str, &str)] = &[
    (
        "golang-github-sirupsen-logrus-dev",
        "github.com/sirupsen/logrus",
    ),
    ("golang-golang-x-sys-dev", "golang.org/x/sys/unix"),
    (
        "golang-github-moby-sys-dev",
        "github.com/moby/sys/{mountinfo,user,capability}",
    ),
    (
        "golang-github-docker-go-units-dev",
        "github.com/docker/go-units",
    ),
    (
        "golang-github-opencontainers-go-digest-dev",
        "github.com/opencontainers/go-digest",
    ),
    (
        "golang-github-opencontainers-selinux-dev",
        "github.com/opencontainers/selinux/go-selinux",
    ),
    (
        "golang-github-cyphar-filepath-securejoin-dev",
        "github.com/cyphar/filepath-securejoin (selinux)",
    ),
    (
        "golang-github-opencontainers-specs-dev",
        "github.com/opencontainers/runtime-spec (pkg/unshare)",
    ),
    (
        "golang-github-vbatts-tar-split-dev",
        "github.com/vbatts/tar-split (drivers, pkg/archive)",
    ),
    (
        "golang-github-klauspost-compress-dev",
        "github.com/klauspost/compress/zstd (pkg/archive)",
    ),
    (
        "golang-github-klauspost-pgzip-dev",
        "github.com/klauspost/pgzip (pkg/archive)",
    ),
    (
        "golang-github-ulikunitz-xz-dev",
        "github.com/ulikunitz/xz (pkg/archive)",
    ),
    (
        "golang-github-cespare-xxhash-v2-dev",
        "github.com/cespare/xxhash/v2 (zstd)",
    ),
    (
        "golang-github-json-iterator-go-dev",
        "github.com/json-iterator/go (drivers/overlay)",
    ),
    (
        "golang-github-modern-go-concurrent-dev",
        "github.com/modern-go/concurrent (json-iterator)",
    ),
    (
        "golang-github-modern-go-reflect2-dev",
        "github.com/modern-go/reflect2 (json-iterator)",
    ),
];

impl GoProgram {
    /// The recipe key and the lock's table: `containerd = { … }`, `[[storage]]`.
    pub fn key(self) -> &'static str {
        match self {
            GoProgram::Containerd => "containerd",
            GoProgram::Storage => "storage",
        }
    }

    /// The Debian package of the project's sources that `mmx runtimes lock` locks even when no
    /// recipe names it.
    pub fn default_package(self) -> &'static str {
        match self {
            GoProgram::Containerd => "golang-github-containerd-containerd-dev",
            GoProgram::Storage => "golang-github-containers-storage-dev",
        }
    }

    /// The packages beside the sources that the mount code's imports need.
    pub fn packages(self) -> &'static [(&'static str, &'static str)] {
        match self {
            GoProgram::Containerd => CORE_MOUNT_PACKAGES,
            GoProgram::Storage => OVERLAY_DRIVER_PACKAGES,
        }
    }

    /// The job program (kept in the repository, compiled into mmx so a moved binary still
    /// builds the same runtime).
    pub fn main_go(self) -> &'static str {
        match self {
            GoProgram::Containerd => {
                include_str!("../../carried/runtimes/containerd/main.go")
            }
            GoProgram::Storage => {
                include_str!("../../carried/runtimes/containers-storage/main.go")
            }
        }
    }

    /// The module's directory in Debian's GOPATH tree (`usr/share/gocode/src/…`).
    pub fn gopath_module(self) -> &'static str {
        match self {
            GoProgram::Containerd => "github.com/containerd/containerd/v2",
            GoProgram::Storage => "go.podman.io/storage",
        }
    }

    /// The package of the module the job program is built on; its absence means the package
    /// is not the project's sources.
    pub fn mount_code(self) -> &'static str {
        match self {
            GoProgram::Containerd => "core/mount",
            GoProgram::Storage => "drivers/overlay",
        }
    }

    /// The job program's directory: in the GOPATH (Debian) and inside a checkout (`cmd/…`).
    pub fn main_dir(self) -> &'static str {
        match self {
            GoProgram::Containerd => "mmx-runtime-containerd",
            GoProgram::Storage => "mmx-runtime-containers-storage",
        }
    }

    /// The job program's variable that hello's version comes from (`-ldflags -X`).
    pub fn version_var(self) -> &'static str {
        match self {
            GoProgram::Containerd => "main.containerdVersion",
            GoProgram::Storage => "main.storageVersion",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_has_its_own_key_main_and_packages() {
        for (i, p) in ALL.iter().enumerate() {
            assert!(ALL[..i].iter().all(|o| o.key() != p.key()));
            assert!(p.main_go().contains("package main"), "{p:?}");
            assert!(p
                .main_go()
                .contains(p.version_var().trim_start_matches("main.")));
            assert!(!p.packages().iter().any(|(n, _)| *n == p.default_package()));
        }
    }
}

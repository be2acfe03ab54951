// Command mmx-runtime-containers-storage speaks mmx's runtime contract (protocol/src/runtime) with
// the overlay driver of containers/storage (go.podman.io/storage, what CRI-O and Podman mount
// layers with). Every mount job is one Driver.Get of a container layer whose MountOpts carry the
// job's uid/gid maps — the driver forks its user-namespace process, idmaps the lower layers
// (grouped by getMappedMountRoot), mounts the overlay and detaches the idmapped helpers itself —
// and every unmount job is one Driver.Put. Nothing here re-implements the driver: a change to
// drivers/overlay or pkg/idmap is a change to what mmx measures.
//
// The driver only mounts layers of its own store, so each job is laid out as one, without a
// copy and without a mount of our own:
//
//   - the driver's home is <cwd>/overlay (overlay.Init, with skip_mount_home so it does not
//     bind-mount its home; its feature probes run there before the hello);
//   - a lower layer's ID is the path from home to the layer's parent directory
//     (../../snapshots/3 for /s/snapshots/3/fs): the driver's path.Join(home, id) lands on
//     /s/snapshots/3, and its <layer>/diff is a relative symlink diff -> fs made there once, so
//     the idmapped mount of /s/snapshots/3 (or of any directory above it) still resolves it;
//   - a container layer <home>/j<job>/ lists those IDs in lower-layers; for a rootfs its diff,
//     work and merged are symlinks to the job's upper, work and target; for a view its diff is
//     an empty directory of its own and the mount is "ro" (lowerdir=<empty>:<layers>).
//
// mmx builds it offline and static (CGO_ENABLED=0) against Debian's
// golang-github-containers-storage-dev in GOPATH mode (see harness/src/runtimes/).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	graphdriver "go.podman.io/storage/drivers"
	"go.podman.io/storage/drivers/overlay"
	"go.podman.io/storage/pkg/idtools"
	"go.podman.io/storage/pkg/reexec"
)

// The contract this program speaks (protocol::runtime::CONTRACT_VERSION) and its line bounds.
const (
	contractVersion = 1
	maxLine         = 64 * 1024
	maxText         = 4096
)

// storageVersion is set by mmx at build time (-ldflags -X main.storageVersion=…): the Debian
// package version or the checkout's commit, plus any patches.
var storageVersion = "unknown"

type hello struct {
	Contract int    `json:"contract"`
	Runtime  string `json:"runtime"`
	Version  string `json:"version"`
}

type pass struct {
	Kind  string `json:"kind"`
	Upper string `json:"upper"`
	Work  string `json:"work"`
}

type job struct {
	Job    string   `json:"job"`
	ID     uint64   `json:"id"`
	Layers []string `json:"layers"`
	Pass   *pass    `json:"pass"`
	Target string   `json:"target"`
	UIDMap string   `json:"uidmap"`
	GIDMap string   `json:"gidmap"`
}

type okAnswer struct {
	Answer string `json:"answer"`
	ID     uint64 `json:"id"`
}

type errorAnswer struct {
	Answer  string `json:"answer"`
	ID      uint64 `json:"id"`
	Step    string `json:"step"`
	Errno   *int   `json:"errno,omitempty"`
	Message string `json:"message"`
}

// shifter is the overlay driver's answer to "can you idmap lower layers here?" (exported by
// *overlay.Driver, not by the graphdriver.Driver interface).
type shifter interface {
	SupportsShifting(uidmap, gidmap []idtools.IDMap) bool
}

type state struct {
	home string
	drv  graphdriver.Driver
	// Whether the driver idmaps lower layers on this kernel and filesystem (its own probe).
	shifts bool
	// Mounted container layers by target.
	mounted map[string]string
}

func main() {
	// The driver mounts an overlay whose options pass the page size from a re-executed copy of
	// this program (storage-mountfrom, with relative paths); that copy must stop here.
	if reexec.Init() {
		return
	}
	cwd, err := os.Getwd()
	if err != nil {
		fatal("getcwd: %v", err)
	}
	home := filepath.Join(cwd, "overlay")
	drv, err := overlay.Init(home, graphdriver.Options{
		RunRoot:       filepath.Join(cwd, "run"),
		DriverOptions: []string{"overlay.skip_mount_home=true"},
	})
	if err != nil {
		fatal("overlay.Init(%s): %v", home, err)
	}
	s := &state{home: home, drv: drv, mounted: map[string]string{}}
	// The driver probes idmapped lower layers once and caches the answer in its run root; ask
	// now so that the probe's mounts are the start's, not the first container's.
	if sh, ok := drv.(shifter); ok {
		one := []idtools.IDMap{{ContainerID: 0, HostID: 0, Size: 1}}
		s.shifts = sh.SupportsShifting(one, one)
	}
	out := bufio.NewWriter(os.Stdout)
	write(out, hello{
		Contract: contractVersion,
		Runtime:  "containers-storage",
		Version:  storageVersion + " " + runtime.Version(),
	})
	in := bufio.NewReaderSize(os.Stdin, maxLine)
	for {
		line, err := in.ReadSlice('\n')
		if err == io.EOF && len(line) == 0 {
			return
		}
		if err != nil && err != io.EOF {
			fatal("reading a job: %v (jobs are at most %d bytes)", err, maxLine)
		}
		var j job
		dec := json.NewDecoder(strings.NewReader(string(line)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&j); err != nil {
			fatal("malformed job %q: %v", clip(string(line)), err)
		}
		write(out, s.do(&j))
	}
}

// do runs one job and returns its answer.
func (s *state) do(j *job) any {
	switch j.Job {
	case "mount":
		if !s.shifts {
			// The driver would mount without idmapping (and leave the layers' ids to a chown
			// copy made elsewhere in the store): not the path this column measures.
			n := int(syscall.EOPNOTSUPP)
			return errorAnswer{Answer: "error", ID: j.ID, Errno: &n,
				Step:    "overlay: SupportsShifting (idmapped lower layers)",
				Message: "the overlay driver's probe found no idmapped lower layers on this kernel and filesystem"}
		}
		id, opts, err := s.layout(j)
		if err != nil {
			return failure(j.ID, "layout", err)
		}
		if _, err := s.drv.Get(id, opts); err != nil {
			return failure(j.ID, "overlay.Driver.Get", err)
		}
		s.mounted[j.Target] = id
	case "unmount":
		id, ok := s.mounted[j.Target]
		if !ok {
			return failure(j.ID, "job", fmt.Errorf("unmount of %q, which no mount job mounted", j.Target))
		}
		// Put renames <dir>/merged.1 over <dir>/merged once unmounted (its way of never
		// removing the mount point); ours is a symlink to the job's target, so merged.1 is one too.
		dir := filepath.Join(s.home, id)
		if err := os.Symlink(j.Target, filepath.Join(dir, "merged.1")); err != nil {
			return failure(j.ID, "layout", err)
		}
		if err := s.drv.Put(id); err != nil {
			return failure(j.ID, "overlay.Driver.Put", err)
		}
		delete(s.mounted, j.Target)
		if err := os.RemoveAll(dir); err != nil {
			return failure(j.ID, "layout", err)
		}
	default:
		fatal("unknown job %q", j.Job)
	}
	return okAnswer{Answer: "ok", ID: j.ID}
}

// layout makes the container layer of a mount job in the driver's home (see the package doc)
// and returns its ID and the MountOpts a container with these id maps is mounted with.
func (s *state) layout(j *job) (string, graphdriver.MountOpts, error) {
	var opts graphdriver.MountOpts
	if len(j.Layers) == 0 || j.Target == "" || j.Pass == nil || j.UIDMap == "" || j.GIDMap == "" {
		return "", opts, errors.New("mount job needs layers, pass, target, uidmap and gidmap")
	}
	var err error
	if opts.UidMaps, err = parseMaps(j.UIDMap); err != nil {
		return "", opts, fmt.Errorf("uidmap: %w", err)
	}
	if opts.GidMaps, err = parseMaps(j.GIDMap); err != nil {
		return "", opts, fmt.Errorf("gidmap: %w", err)
	}
	ids := make([]string, 0, len(j.Layers))
	for _, l := range j.Layers {
		parent := filepath.Dir(l)
		diff := filepath.Join(parent, "diff")
		if err := os.Symlink(filepath.Base(l), diff); err != nil && !errors.Is(err, os.ErrExist) {
			return "", opts, err
		}
		if t, err := os.Readlink(diff); err != nil || t != filepath.Base(l) {
			return "", opts, fmt.Errorf("%s is not the symlink diff -> %s", diff, filepath.Base(l))
		}
		id, err := filepath.Rel(s.home, parent)
		if err != nil {
			return "", opts, err
		}
		if strings.Contains(id, ":") {
			return "", opts, fmt.Errorf("layer %q: the driver's lower-layers list cannot hold a ':'", l)
		}
		ids = append(ids, id)
	}
	id := "j" + strconv.FormatUint(j.ID, 10)
	dir := filepath.Join(s.home, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", opts, err
	}
	if err := os.WriteFile(filepath.Join(dir, "lower-layers"), []byte(strings.Join(ids, ":")), 0o644); err != nil {
		return "", opts, err
	}
	link := func(name, to string) error { return os.Symlink(to, filepath.Join(dir, name)) }
	switch j.Pass.Kind {
	case "rootfs":
		if j.Pass.Upper == "" || j.Pass.Work == "" {
			return "", opts, errors.New("rootfs pass needs upper and work")
		}
		for _, l := range [][2]string{{"diff", j.Pass.Upper}, {"work", j.Pass.Work}, {"merged", j.Target}} {
			if err := link(l[0], l[1]); err != nil {
				return "", opts, err
			}
		}
	case "view":
		if err := os.Mkdir(filepath.Join(dir, "diff"), 0o755); err != nil {
			return "", opts, err
		}
		if err := link("merged", j.Target); err != nil {
			return "", opts, err
		}
		opts.Options = []string{"ro"}
	default:
		return "", opts, fmt.Errorf("unknown pass %q", j.Pass.Kind)
	}
	return id, opts, nil
}

// parseMaps reads containerd's uidmap=/gidmap= syntax: container:host:size, comma-separated.
func parseMaps(s string) ([]idtools.IDMap, error) {
	var m []idtools.IDMap
	for _, r := range strings.Split(s, ",") {
		f := strings.Split(r, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("%q is not container:host:size", r)
		}
		var n [3]int
		for i, x := range f {
			v, err := strconv.ParseUint(x, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", r, err)
			}
			n[i] = int(v)
		}
		m = append(m, idtools.IDMap{ContainerID: n[0], HostID: n[1], Size: n[2]})
	}
	return m, nil
}

// failure turns the driver's error into the contract's answer: the errno at the bottom of the
// error chain, and as the step the syscall and path when pkg/idmap failed (open_tree,
// mount_setattr, move_mount: an *os.PathError), else the innermost message that wraps the
// errno ("creating overlay mount to …").
func failure(id uint64, op string, err error) errorAnswer {
	a := errorAnswer{Answer: "error", ID: id, Step: op, Message: clip(err.Error())}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return a
	}
	n := int(errno)
	a.Errno = &n
	var pe *os.PathError
	if errors.As(err, &pe) {
		a.Step = clip(op + ": " + pe.Op + " " + pe.Path)
		return a
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if inner, ok := errors.Unwrap(e).(syscall.Errno); ok {
			what := strings.TrimSuffix(e.Error(), inner.Error())
			a.Step = clip(op + ": " + strings.TrimRight(what, ":, "))
			break
		}
	}
	return a
}

// clip keeps text within the contract's bound; a rune cut in half is dropped.
func clip(s string) string {
	if len(s) <= maxText-16 {
		return s
	}
	return strings.ToValidUTF8(s[:maxText-16], "") + "…"
}

func write(out *bufio.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fatal("encoding %T: %v", v, err)
	}
	out.Write(b)
	out.WriteByte('\n')
	if err := out.Flush(); err != nil {
		fatal("writing an answer: %v", err)
	}
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mmx-runtime-containers-storage: "+format+"\n", args...)
	os.Exit(2)
}

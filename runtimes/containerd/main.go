// Command mmx-runtime-containerd speaks mmx's runtime contract (protocol/src/runtime.rs) with
// containerd's own mount code: every mount job is one mount.All of an overlay mount.Mount
// carrying uidmap=/gidmap= options, which is the path containerd's overlay snapshotter and CRI
// take for a user-namespaced pod (core/mount makes the user namespace, idmaps the lower
// layers, mounts the overlay and drops the idmapped helpers again); every unmount job is one
// mount.UnmountAll. Nothing here re-implements containerd: a change to core/mount is a change
// to what mmx measures.
//
// mmx builds it offline and static (CGO_ENABLED=0) against containerd's sources: Debian's
// golang-github-containerd-containerd-dev in GOPATH mode, or a user's checkout in module mode
// (see harness/src/runtimes/).
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
	"strings"
	"syscall"

	"github.com/containerd/containerd/v2/core/mount"
)

// The contract this program speaks (protocol::runtime::CONTRACT_VERSION) and its line bounds.
const (
	contractVersion = 1
	maxLine         = 64 * 1024
	maxText         = 4096
)

// containerdVersion is set by mmx at build time (-ldflags -X main.containerdVersion=…): the
// Debian package version or the checkout's commit, plus any patches.
var containerdVersion = "unknown"

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

func main() {
	// containerd keeps its temporary idmapped mounts in <root>/tmpmounts; ours live below the
	// working directory the agent made for this process, where its leak check looks.
	cwd, err := os.Getwd()
	if err != nil {
		fatal("getcwd: %v", err)
	}
	if err := mount.SetTempMountLocation(filepath.Join(cwd, "tmpmounts")); err != nil {
		fatal("SetTempMountLocation: %v", err)
	}
	out := bufio.NewWriter(os.Stdout)
	write(out, hello{
		Contract: contractVersion,
		Runtime:  "containerd",
		Version:  containerdVersion + " " + runtime.Version(),
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
		write(out, do(&j))
	}
}

// do runs one job and returns its answer.
func do(j *job) any {
	switch j.Job {
	case "mount":
		m, err := snapshotMounts(j)
		if err != nil {
			return failure(j.ID, "job", err)
		}
		if err := mount.All(m, j.Target); err != nil {
			return failure(j.ID, "mount.All", err)
		}
	case "unmount":
		if j.Target == "" {
			return failure(j.ID, "job", errors.New("unmount job without a target"))
		}
		if err := mount.UnmountAll(j.Target, 0); err != nil {
			return failure(j.ID, "mount.UnmountAll", err)
		}
	default:
		fatal("unknown job %q", j.Job)
	}
	return okAnswer{Answer: "ok", ID: j.ID}
}

// snapshotMounts are the mounts containerd's overlay snapshotter hands core/mount for a
// remapped snapshot (plugins/snapshots/overlay: mounts()): the id mappings first; a rootfs is an
// overlay with work, upper and lower dirs (top first); a view of several layers is an overlay of
// the lower dirs alone, and a view of one layer a read-only rbind of it (overlay refuses a
// single lower dir without an upper).
func snapshotMounts(j *job) ([]mount.Mount, error) {
	if len(j.Layers) == 0 || j.Target == "" || j.Pass == nil || j.UIDMap == "" || j.GIDMap == "" {
		return nil, errors.New("mount job needs layers, pass, target, uidmap and gidmap")
	}
	opts := []string{"uidmap=" + j.UIDMap, "gidmap=" + j.GIDMap}
	lowerdir := "lowerdir=" + strings.Join(j.Layers, ":")
	switch j.Pass.Kind {
	case "view":
		if len(j.Layers) == 1 {
			return []mount.Mount{{Type: "bind", Source: j.Layers[0], Options: append(opts, "ro", "rbind")}}, nil
		}
		opts = append(opts, lowerdir)
	case "rootfs":
		if j.Pass.Upper == "" || j.Pass.Work == "" {
			return nil, errors.New("rootfs pass needs upper and work")
		}
		opts = append(opts, "workdir="+j.Pass.Work, "upperdir="+j.Pass.Upper, lowerdir)
	default:
		return nil, fmt.Errorf("unknown pass %q", j.Pass.Kind)
	}
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: opts}}, nil
}

// failure turns containerd's error into the contract's answer. The errno is the
// syscall.Errno at the bottom of the error chain (golang.org/x/sys/unix.Errno is the same
// type); the step is the innermost message that wraps it — the one that says which call
// failed on what ("unable to shift GID/UID or set mount attrs for …", "mount source: …").
func failure(id uint64, op string, err error) errorAnswer {
	a := errorAnswer{Answer: "error", ID: id, Step: op, Message: clip(err.Error())}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		n := int(errno)
		a.Errno = &n
		for e := err; e != nil; e = errors.Unwrap(e) {
			if inner, ok := errors.Unwrap(e).(syscall.Errno); ok {
				what := strings.TrimSuffix(e.Error(), inner.Error())
				what = strings.TrimRight(what, ":, ")
				what = strings.TrimSuffix(what, ", err")
				a.Step = clip(op + ": " + what)
				break
			}
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
	fmt.Fprintf(os.Stderr, "mmx-runtime-containerd: "+format+"\n", args...)
	os.Exit(2)
}
